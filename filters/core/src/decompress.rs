//! Streaming decompression of response bodies, for observation only.
//!
//! When an upstream answers `content-encoding: gzip` (or `deflate`), the client must still get
//! the bytes the upstream sent, but the usage inside is only readable decompressed. An
//! [`Inflater`] takes the compressed chunks and hands the decompressed bytes to a sink, in
//! bounded slices: input is fed [`INPUT_SLICE`] bytes at a time and the output drained after
//! each, so a compression bomb cannot make one step allocate much more than
//! `INPUT_SLICE × 1032` bytes (deflate's maximum ratio; the decoder carries a little input
//! between steps, measured ≤ 1.05× that), about a megabyte, whatever the total.
//!
//! `deflate` is zlib-wrapped per RFC 9110, but some servers send raw deflate: the first byte
//! decides. Brotli and zstd are not supported (see [`Encoding::parse`]).

use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use std::io::Write;

/// Compressed bytes fed per step.
pub const INPUT_SLICE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

impl Encoding {
    /// Parses a `content-encoding` value. `Err` carries the unsupported encoding's name.
    pub fn parse(value: Option<&str>) -> Result<Encoding, String> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Encoding::Identity);
        };
        match value.to_ascii_lowercase().as_str() {
            "identity" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "deflate" => Ok(Encoding::Deflate),
            other => Err(other.chars().take(32).collect()),
        }
    }
}

enum State {
    Gzip(MultiGzDecoder<Vec<u8>>),
    Zlib(ZlibDecoder<Vec<u8>>),
    Raw(DeflateDecoder<Vec<u8>>),
    /// `deflate` before its first byte.
    Deflate,
    Failed,
}

pub struct Inflater {
    state: State,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inflater")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflateError(pub String);

impl Inflater {
    /// `None` for identity.
    pub fn new(encoding: Encoding) -> Option<Inflater> {
        let state = match encoding {
            Encoding::Identity => return None,
            Encoding::Gzip => State::Gzip(MultiGzDecoder::new(Vec::new())),
            Encoding::Deflate => State::Deflate,
        };
        Some(Inflater { state })
    }

    /// Decompresses `input`, calling `sink` with each piece of output.
    pub fn push(&mut self, input: &[u8], mut sink: impl FnMut(&[u8])) -> Result<(), InflateError> {
        if let (State::Deflate, Some(&first)) = (&self.state, input.first()) {
            // A zlib header's low nibble is 8 (deflate) and the 16-bit header is a multiple of 31.
            let zlib = first & 0x0F == 8
                && input.get(1).is_none_or(|&second| (u16::from(first) << 8 | u16::from(second)) % 31 == 0);
            self.state = if zlib {
                State::Zlib(ZlibDecoder::new(Vec::new()))
            } else {
                State::Raw(DeflateDecoder::new(Vec::new()))
            };
        }
        for slice in input.chunks(INPUT_SLICE) {
            let result = match &mut self.state {
                State::Gzip(d) => d.write_all(slice).map(|()| std::mem::take(d.get_mut())),
                State::Zlib(d) => d.write_all(slice).map(|()| std::mem::take(d.get_mut())),
                State::Raw(d) => d.write_all(slice).map(|()| std::mem::take(d.get_mut())),
                State::Deflate => Ok(Vec::new()),
                State::Failed => return Err(InflateError("decompression already failed".into())),
            };
            match result {
                Ok(out) => {
                    if !out.is_empty() {
                        sink(&out);
                    }
                }
                Err(e) => {
                    self.state = State::Failed;
                    return Err(InflateError(e.to_string()));
                }
            }
        }
        Ok(())
    }

    /// End of input: flushes what is left.
    pub fn finish(&mut self, mut sink: impl FnMut(&[u8])) -> Result<(), InflateError> {
        let result = match &mut self.state {
            State::Gzip(d) => d.try_finish().map(|()| std::mem::take(d.get_mut())),
            State::Zlib(d) => d.try_finish().map(|()| std::mem::take(d.get_mut())),
            State::Raw(d) => d.try_finish().map(|()| std::mem::take(d.get_mut())),
            State::Deflate => Ok(Vec::new()),
            State::Failed => return Err(InflateError("decompression already failed".into())),
        };
        match result {
            Ok(out) => {
                if !out.is_empty() {
                    sink(&out);
                }
                Ok(())
            }
            Err(e) => {
                self.state = State::Failed;
                Err(InflateError(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;

    fn inflate_chunks(encoding: Encoding, data: &[u8], chunk: usize) -> Result<Vec<u8>, InflateError> {
        let mut inflater = Inflater::new(encoding).unwrap();
        let mut out = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            inflater.push(piece, |b| out.extend_from_slice(b))?;
        }
        inflater.finish(|b| out.extend_from_slice(b))?;
        Ok(out)
    }

    fn sample() -> Vec<u8> {
        b"data: {\"usage\":{\"prompt_tokens\":9}}\n\n".repeat(200)
    }

    #[test]
    fn gzip_zlib_and_raw_deflate_round_trip_at_any_chunking() {
        let plain = sample();
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(&plain).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw = DeflateEncoder::new(Vec::new(), Compression::default());
        raw.write_all(&plain).unwrap();
        let raw = raw.finish().unwrap();
        for chunk in [1, 7, 100, 5000] {
            assert_eq!(inflate_chunks(Encoding::Gzip, &gz, chunk).unwrap(), plain);
            assert_eq!(inflate_chunks(Encoding::Deflate, &zlib, chunk).unwrap(), plain);
            assert_eq!(inflate_chunks(Encoding::Deflate, &raw, chunk).unwrap(), plain);
        }
    }

    #[test]
    fn parses_content_encoding_values() {
        assert_eq!(Encoding::parse(None), Ok(Encoding::Identity));
        assert_eq!(Encoding::parse(Some(" GZIP ")), Ok(Encoding::Gzip));
        assert_eq!(Encoding::parse(Some("deflate")), Ok(Encoding::Deflate));
        assert_eq!(Encoding::parse(Some("br")), Err("br".to_string()));
    }

    #[test]
    fn garbage_is_an_error_and_stays_one() {
        let mut inflater = Inflater::new(Encoding::Gzip).unwrap();
        assert!(inflater.push(b"this is not gzip at all", |_| {}).is_err());
        assert!(inflater.push(b"more", |_| {}).is_err());
    }

    #[test]
    fn output_per_step_is_bounded() {
        let zeros = vec![0u8; 8 << 20];
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&zeros).unwrap();
        let gz = gz.finish().unwrap();
        let mut inflater = Inflater::new(Encoding::Gzip).unwrap();
        let mut largest = 0;
        let mut total = 0;
        inflater
            .push(&gz, |b| {
                largest = largest.max(b.len());
                total += b.len();
            })
            .unwrap();
        inflater.finish(|b| total += b.len()).unwrap();
        assert_eq!(total, zeros.len());
        assert!(largest <= INPUT_SLICE * 1032 * 21 / 20, "{largest}");
    }
}
