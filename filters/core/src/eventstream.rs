//! Sans-I/O decoder (and a small encoder) for AWS event-stream framing,
//! `application/vnd.amazon.eventstream`, as Bedrock's `ConverseStream` answers.
//!
//! A message is: prelude (`total_len: u32 BE`, `headers_len: u32 BE`, `prelude_crc: u32 BE` =
//! CRC32 of the first 8 bytes), headers, payload, `message_crc: u32 BE` = CRC32 of everything
//! before it. A header is `name_len: u8`, name, `type: u8`, value (AWS "Event stream encoding").
//!
//! Push bytes with [`EventStreamDecoder::push`]; take complete, checked messages with
//! [`EventStreamDecoder::next_message`]. Both CRCs are verified; a bad CRC, an impossible length
//! or a message over the bound fails the decoder for good (framing is lost after such an error).

/// Smallest possible message: prelude (12) + message CRC (4).
const MIN_MESSAGE: usize = 16;
/// Default bound on one message. Bedrock's events are a few KiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// AWS limits the headers section to 128 KiB.
const MAX_HEADERS_BYTES: usize = 128 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventStreamError {
    PreludeCrc,
    MessageCrc,
    BadLength { total: u32, headers: u32 },
    TooLarge { limit: usize },
    BadHeader,
    Truncated,
}

impl std::fmt::Display for EventStreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventStreamError::PreludeCrc => f.write_str("event-stream prelude CRC mismatch"),
            EventStreamError::MessageCrc => f.write_str("event-stream message CRC mismatch"),
            EventStreamError::BadLength { total, headers } => {
                write!(f, "event-stream lengths impossible (total {total}, headers {headers})")
            }
            EventStreamError::TooLarge { limit } => {
                write!(f, "event-stream message larger than {limit} bytes")
            }
            EventStreamError::BadHeader => f.write_str("event-stream header malformed"),
            EventStreamError::Truncated => f.write_str("event-stream ended inside a message"),
        }
    }
}

/// A header value. Only strings and byte arrays borrow; the rest are small scalars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(&'a [u8]),
    String(&'a [u8]),
    Timestamp(i64),
    Uuid(&'a [u8]),
}

/// One complete, CRC-checked message borrowed from the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The whole frame, prelude to message CRC.
    pub raw: &'a [u8],
    headers: &'a [u8],
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// Headers in wire order. Validated when the message was framed, so this never fails.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], HeaderValue<'a>)> + 'a {
        let mut rest = self.headers;
        std::iter::from_fn(move || {
            let (name, value, next) = parse_header(rest)?;
            rest = next;
            Some((name, value))
        })
    }

    /// The same message (its headers byte for byte) with another payload, framed anew.
    pub fn with_payload(&self, payload: &[u8]) -> Vec<u8> {
        frame(self.headers, payload)
    }

    /// A string header by name (`:event-type`, `:message-type`, `:exception-type`, …).
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.headers().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name.as_bytes() => std::str::from_utf8(s).ok(),
            _ => None,
        })
    }
}

#[derive(Debug, Default)]
pub struct EventStreamDecoder {
    buf: Vec<u8>,
    consumed: usize,
    max_message_bytes: usize,
    failed: Option<EventStreamError>,
}

impl EventStreamDecoder {
    pub fn new(max_message_bytes: usize) -> Self {
        EventStreamDecoder {
            buf: Vec::new(),
            consumed: 0,
            max_message_bytes: max_message_bytes.max(MIN_MESSAGE),
            failed: None,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Result<(), EventStreamError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.extend_from_slice(bytes);
        // Check the prelude of the pending message early so a corrupt length cannot make us
        // wait (and buffer) for gigabytes.
        match self.pending_len() {
            Err(error) => self.fail(error),
            Ok(_) => Ok(()),
        }
    }

    /// The next complete message, or an error if the next frame is corrupt.
    pub fn next_message(&mut self) -> Option<Result<Message<'_>, EventStreamError>> {
        if let Some(error) = &self.failed {
            return Some(Err(error.clone()));
        }
        let start = self.consumed;
        let checked = match self.pending_len() {
            Ok(None) => return None,
            Ok(Some(total)) => self.buf.get(start..start + total).map(|frame| check_frame(frame).map(|()| total)),
            Err(error) => Some(Err(error)),
        };
        match checked? {
            Ok(total) => {
                self.consumed += total;
                self.buf.get(start..start + total).map(|frame| Ok(split_frame(frame)))
            }
            Err(error) => {
                self.failed = Some(error.clone());
                Some(Err(error))
            }
        }
    }

    /// End of stream: bytes left over mean the last message was cut.
    pub fn finish(&self) -> Result<(), EventStreamError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.buf.len() > self.consumed {
            return Err(EventStreamError::Truncated);
        }
        Ok(())
    }

    fn fail(&mut self, error: EventStreamError) -> Result<(), EventStreamError> {
        self.failed = Some(error.clone());
        Err(error)
    }

    /// Length of the pending message when all of it has arrived.
    fn pending_len(&self) -> Result<Option<usize>, EventStreamError> {
        let pending = self.buf.get(self.consumed..).unwrap_or(&[]);
        let Some(prelude) = pending.get(..12) else {
            return Ok(None);
        };
        let total = be32(prelude, 0);
        let headers = be32(prelude, 4);
        if crc32(prelude.get(..8).unwrap_or(&[])) != be32(prelude, 8) {
            return Err(EventStreamError::PreludeCrc);
        }
        let (total_len, headers_len) = (total as usize, headers as usize);
        if total_len < MIN_MESSAGE || headers_len > MAX_HEADERS_BYTES || headers_len + MIN_MESSAGE > total_len {
            return Err(EventStreamError::BadLength { total, headers });
        }
        if total_len > self.max_message_bytes {
            return Err(EventStreamError::TooLarge { limit: self.max_message_bytes });
        }
        Ok((pending.len() >= total_len).then_some(total_len))
    }
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        word.copy_from_slice(src);
    }
    u32::from_be_bytes(word)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(bytes);
    hasher.finalize()
}

fn check_frame(frame: &[u8]) -> Result<(), EventStreamError> {
    let body_end = frame.len().saturating_sub(4);
    if crc32(frame.get(..body_end).unwrap_or(&[])) != be32(frame, body_end) {
        return Err(EventStreamError::MessageCrc);
    }
    let headers_len = be32(frame, 4) as usize;
    let mut rest = frame.get(12..12 + headers_len).ok_or(EventStreamError::BadHeader)?;
    while !rest.is_empty() {
        let (_, _, next) = parse_header(rest).ok_or(EventStreamError::BadHeader)?;
        rest = next;
    }
    Ok(())
}

fn split_frame(frame: &[u8]) -> Message<'_> {
    let headers_len = be32(frame, 4) as usize;
    let headers_end = 12 + headers_len;
    Message {
        raw: frame,
        headers: frame.get(12..headers_end).unwrap_or(&[]),
        payload: frame.get(headers_end..frame.len().saturating_sub(4)).unwrap_or(&[]),
    }
}

fn parse_header(bytes: &[u8]) -> Option<(&[u8], HeaderValue<'_>, &[u8])> {
    let name_len = usize::from(*bytes.first()?);
    if name_len == 0 {
        return None;
    }
    let name = bytes.get(1..1 + name_len)?;
    let kind = *bytes.get(1 + name_len)?;
    let rest = bytes.get(2 + name_len..)?;
    let fixed = |n: usize| -> Option<(&[u8], &[u8])> { Some((rest.get(..n)?, rest.get(n..)?)) };
    let int = |b: &[u8]| b.iter().fold(0i64, |acc, x| (acc << 8) | i64::from(*x));
    let sized = || -> Option<(&[u8], &[u8])> {
        let len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
        Some((rest.get(2..2 + len)?, rest.get(2 + len..)?))
    };
    let (value, next) = match kind {
        0 => (HeaderValue::Bool(true), rest),
        1 => (HeaderValue::Bool(false), rest),
        2 => fixed(1).map(|(v, n)| (HeaderValue::Byte(int(v) as i8), n))?,
        3 => fixed(2).map(|(v, n)| (HeaderValue::Short(int(v) as i16), n))?,
        4 => fixed(4).map(|(v, n)| (HeaderValue::Int(int(v) as i32), n))?,
        5 => fixed(8).map(|(v, n)| (HeaderValue::Long(int(v)), n))?,
        6 => sized().map(|(v, n)| (HeaderValue::Bytes(v), n))?,
        7 => sized().map(|(v, n)| (HeaderValue::String(v), n))?,
        8 => fixed(8).map(|(v, n)| (HeaderValue::Timestamp(int(v)), n))?,
        9 => fixed(16).map(|(v, n)| (HeaderValue::Uuid(v), n))?,
        _ => return None,
    };
    Some((name, value, next))
}

/// Encodes one message with string headers (what Bedrock sends): for tests, fuzzing and mocks,
/// and the events a guarded stream adds.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut header_bytes = Vec::new();
    for (name, value) in headers {
        header_bytes.push(name.len() as u8);
        header_bytes.extend_from_slice(name.as_bytes());
        header_bytes.push(7);
        header_bytes.extend_from_slice(&(value.len() as u16).to_be_bytes());
        header_bytes.extend_from_slice(value.as_bytes());
    }
    frame(&header_bytes, payload)
}

/// One message from its encoded headers and its payload: prelude, CRCs.
fn frame(header_bytes: &[u8], payload: &[u8]) -> Vec<u8> {
    let total = 12 + header_bytes.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(header_bytes);
    out.extend_from_slice(payload);
    let message_crc = crc32(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // AWS's published vectors (awslabs/aws-c-event-stream, tests/message_deserializer_test.c).
    const NO_OP: [u8; 16] = [0, 0, 0, 0x10, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff];
    const PAYLOAD_ONLY: [u8; 29] = [
        0, 0, 0, 0x1D, 0, 0, 0, 0, 0xfd, 0x52, 0x8c, 0x5a, 0x7b, 0x27, 0x66, 0x6f, 0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61,
        0x72, 0x27, 0x7d, 0xc3, 0x65, 0x39, 0x36,
    ];

    fn one_header_vector() -> Vec<u8> {
        let mut v = vec![0, 0, 0, 0x3D, 0, 0, 0, 0x20, 0x07, 0xFD, 0x83, 0x96, 0x0C];
        v.extend_from_slice(b"content-type");
        v.extend_from_slice(&[0x07, 0x00, 0x10]);
        v.extend_from_slice(b"application/json");
        v.extend_from_slice(b"{'foo':'bar'}");
        v.extend_from_slice(&[0x8D, 0x9C, 0x08, 0xB1]);
        v
    }

    type Decoded = Vec<(Vec<(String, String)>, Vec<u8>)>;

    fn decode_all(chunks: &[&[u8]]) -> Result<Decoded, EventStreamError> {
        let mut decoder = EventStreamDecoder::new(DEFAULT_MAX_MESSAGE_BYTES);
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk)?;
            while let Some(message) = decoder.next_message() {
                let message = message?;
                let headers = message
                    .headers()
                    .map(|(n, v)| {
                        let value = match v {
                            HeaderValue::String(s) => String::from_utf8_lossy(s).into_owned(),
                            other => format!("{other:?}"),
                        };
                        (String::from_utf8_lossy(n).into_owned(), value)
                    })
                    .collect();
                out.push((headers, message.payload.to_vec()));
            }
        }
        decoder.finish()?;
        Ok(out)
    }

    #[test]
    fn decodes_the_aws_published_vectors() {
        assert_eq!(decode_all(&[&NO_OP]).unwrap(), [(vec![], vec![])]);
        assert_eq!(decode_all(&[&PAYLOAD_ONLY]).unwrap(), [(vec![], b"{'foo':'bar'}".to_vec())]);
        let decoded = decode_all(&[&one_header_vector()]).unwrap();
        assert_eq!(decoded[0].0, [("content-type".to_string(), "application/json".to_string())]);
        assert_eq!(decoded[0].1, b"{'foo':'bar'}");
    }

    #[test]
    fn our_encoder_reproduces_the_aws_vector_byte_for_byte() {
        assert_eq!(encode(&[("content-type", "application/json")], b"{'foo':'bar'}"), one_header_vector());
        assert_eq!(encode(&[], b""), NO_OP);
    }

    #[test]
    fn reads_bedrock_style_headers() {
        let frame = encode(
            &[(":event-type", "metadata"), (":content-type", "application/json"), (":message-type", "event")],
            br#"{"usage":{"inputTokens":5,"outputTokens":7,"totalTokens":12}}"#,
        );
        let mut decoder = EventStreamDecoder::new(1024);
        decoder.push(&frame).unwrap();
        let message = decoder.next_message().unwrap().unwrap();
        assert_eq!(message.header_str(":event-type"), Some("metadata"));
        assert_eq!(message.header_str(":message-type"), Some("event"));
        assert_eq!(message.header_str(":missing"), None);
        assert_eq!(message.raw, frame.as_slice());
    }

    #[test]
    fn bad_crcs_are_detected() {
        let mut bad_prelude = PAYLOAD_ONLY;
        bad_prelude[9] ^= 1;
        assert_eq!(decode_all(&[&bad_prelude]), Err(EventStreamError::PreludeCrc));
        let mut bad_payload = PAYLOAD_ONLY;
        bad_payload[14] ^= 1;
        assert_eq!(decode_all(&[&bad_payload]), Err(EventStreamError::MessageCrc));
    }

    #[test]
    fn impossible_or_huge_lengths_fail_before_buffering() {
        let mut huge = encode(&[], b"");
        huge[..4].copy_from_slice(&(64u32 << 20).to_be_bytes());
        let crc = crc32(&huge[..8]);
        huge[8..12].copy_from_slice(&crc.to_be_bytes());
        let mut decoder = EventStreamDecoder::new(1 << 20);
        assert_eq!(decoder.push(&huge[..12]), Err(EventStreamError::TooLarge { limit: 1 << 20 }));

        let mut short = [0u8; 12];
        short[..4].copy_from_slice(&8u32.to_be_bytes());
        let crc = crc32(&short[..8]);
        short[8..12].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(EventStreamDecoder::new(1024).push(&short), Err(EventStreamError::BadLength { .. })));
    }

    #[test]
    fn truncated_stream_is_reported_at_finish() {
        assert_eq!(decode_all(&[&PAYLOAD_ONLY[..20]]), Err(EventStreamError::Truncated));
    }

    #[test]
    fn every_split_of_several_messages_decodes_identically() {
        let mut stream = Vec::new();
        for (event, payload) in [
            ("messageStart", r#"{"role":"assistant"}"#),
            ("contentBlockDelta", r#"{"delta":{"text":"olá 世界"}}"#),
            ("metadata", r#"{"usage":{"inputTokens":1}}"#),
        ] {
            stream.extend(encode(&[(":event-type", event), (":message-type", "event")], payload.as_bytes()));
        }
        let whole = decode_all(&[&stream]).unwrap();
        assert_eq!(whole.len(), 3);
        for i in 0..=stream.len() {
            assert_eq!(decode_all(&[&stream[..i], &stream[i..]]).unwrap(), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode_all(&bytes).unwrap(), whole);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
                let mut decoder = EventStreamDecoder::new(4096);
                let _ = decoder.push(&data);
                while let Some(Ok(_)) = decoder.next_message() {}
                let _ = decoder.finish();
            }

            #[test]
            fn valid_frames_with_corrupted_bytes_never_panic(flip in 0usize..64, bit in 0u8..8) {
                let mut frame = encode(&[(":event-type", "metadata")], b"{}");
                let at = flip % frame.len();
                frame[at] ^= 1 << bit;
                let _ = decode_all(&[&frame]);
            }
        }
    }
}
