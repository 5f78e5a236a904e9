//! Sans-I/O decoder for `text/event-stream` (WHATWG HTML §9.2 "Server-sent events").
//!
//! Feed bytes as they arrive with [`SseDecoder::push`]; iterate the events that became complete
//! with [`SseDecoder::next_event`]; call [`SseDecoder::finish`] at end of stream.
//!
//! Properties the filters rely on:
//! - Line ends are CRLF, LF or CR. A CR at the very end of the input is held until the next byte
//!   shows whether an LF follows, so an event's raw bytes always include its whole terminator.
//! - Every byte pushed belongs to exactly one event's [`Event::raw`] or to the unfinished tail
//!   returned by `finish`, in order: a filter that rewrites some events can forward all others
//!   byte for byte. Blocks that dispatch nothing (comments, stray blank lines) are still yielded,
//!   with `data == None`.
//! - Splits are invisible: events are cut only at line ends, which are ASCII, so a chunk boundary
//!   inside a multi-byte UTF-8 character never reaches a parser.
//! - Memory is bounded: the unfinished event may hold at most `max_event_bytes`; past that
//!   `push` fails with [`SseError::EventTooLarge`] and the decoder stays failed.
//!
//! Known leniency: at end of stream, a last event whose final line is terminated but that lacks
//! the blank line is dispatched (the spec discards it). Usage sits in the last event and the
//! provider billed it whether or not its server wrote the final blank line.

use std::borrow::Cow;

/// Default bound on one event (1 MiB): far above any provider's largest event.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// One event grew past the bound without ending.
    EventTooLarge { limit: usize },
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::EventTooLarge { limit } => write!(f, "SSE event larger than {limit} bytes"),
        }
    }
}

/// One event block, borrowed from the decoder's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The exact bytes of this block, terminator included.
    pub raw: &'a [u8],
    /// Value of the last `event:` field.
    pub event: Option<&'a [u8]>,
    /// The `data:` lines joined with `\n`; `None` when the block had no `data` field.
    pub data: Option<Cow<'a, [u8]>>,
    /// Value of the last `id:` field.
    pub id: Option<&'a [u8]>,
    /// Value of the last valid `retry:` field.
    pub retry: Option<u64>,
}

impl Event<'_> {
    /// The event type, `message` when none was given (as the spec dispatches it).
    pub fn event_type(&self) -> &[u8] {
        self.event.unwrap_or(b"message")
    }
}

#[derive(Debug)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as events.
    consumed: usize,
    /// Bytes of `buf` already scanned for line ends.
    scanned: usize,
    /// End offsets (in `buf`) of complete events not yet handed out, in order.
    ends: Vec<usize>,
    /// Next event start offset among `ends` (index into `ends`).
    next_end: usize,
    /// Whether `scanned` sits at the start of a line.
    line_start: bool,
    /// Whether the next event handed out is the stream's first (for the BOM).
    first_event: bool,
    max_event_bytes: usize,
    failed: Option<SseError>,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    pub fn new(max_event_bytes: usize) -> Self {
        SseDecoder {
            buf: Vec::new(),
            consumed: 0,
            scanned: 0,
            ends: Vec::new(),
            next_end: 0,
            line_start: true,
            first_event: true,
            max_event_bytes: max_event_bytes.max(1),
            failed: None,
        }
    }

    /// Appends `bytes` and finds the events they complete. Fails once an unfinished event
    /// exceeds the bound; the decoder then stays failed and the caller should stop decoding.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
        self.scan();
        let pending_from = self.ends.last().copied().unwrap_or(self.consumed);
        if self.buf.len() - pending_from > self.max_event_bytes {
            let error = SseError::EventTooLarge { limit: self.max_event_bytes };
            self.failed = Some(error.clone());
            return Err(error);
        }
        Ok(())
    }

    /// The next complete event, if any. Borrowed from the decoder until the next `push`.
    pub fn next_event(&mut self) -> Option<Event<'_>> {
        let end = *self.ends.get(self.next_end)?;
        self.next_end += 1;
        let start = self.consumed;
        self.consumed = end;
        let skip_bom = std::mem::replace(&mut self.first_event, false);
        self.buf.get(start..end).map(|raw| parse_block(raw, skip_bom))
    }

    /// Ends the stream: returns the final event if its last line was terminated (see the
    /// module note) and the raw bytes that never formed an event. Call after draining
    /// `next_event`.
    pub fn finish(&mut self) -> (Option<Event<'_>>, &[u8]) {
        if self.failed.is_some() {
            return (None, &[]);
        }
        // A trailing CR is a line end once we know nothing follows it.
        let tail_start = self.ends.last().copied().unwrap_or(self.consumed).max(self.consumed);
        let tail = self.buf.get(tail_start..).unwrap_or(&[]);
        let ends_with_newline = matches!(tail.last(), Some(b'\n' | b'\r'));
        let skip_bom = self.first_event;
        self.first_event = false;
        self.consumed = self.buf.len();
        if ends_with_newline {
            let event = parse_block(tail, skip_bom);
            if event.data.is_some() {
                return (Some(event), &[]);
            }
        }
        (None, tail)
    }

    /// Hands back every byte not yet returned as an event (complete or not) and resets the
    /// decoder to empty. For a rewriting caller that stops decoding: forwarding these bytes
    /// keeps the output byte-exact. Works on a failed decoder too.
    pub fn take_unconsumed(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.consumed.min(self.buf.len()));
        self.buf.clear();
        self.consumed = 0;
        self.scanned = 0;
        self.ends.clear();
        self.next_end = 0;
        rest
    }

    /// Whether unconsumed bytes are waiting for the rest of their event.
    pub fn has_pending(&self) -> bool {
        self.buf.len() > self.consumed
    }

    fn compact(&mut self) {
        if self.consumed == 0 {
            return;
        }
        self.buf.drain(..self.consumed);
        self.scanned -= self.consumed;
        let consumed = self.consumed;
        self.ends.drain(..self.next_end);
        for end in &mut self.ends {
            *end -= consumed;
        }
        self.next_end = 0;
        self.consumed = 0;
    }

    fn scan(&mut self) {
        let mut i = self.scanned;
        while let Some(offset) = self.buf.get(i..).and_then(|rest| memchr::memchr2(b'\n', b'\r', rest)) {
            let at = i + offset;
            if at > i {
                self.line_start = false;
            }
            let terminator = match self.buf.get(at) {
                Some(b'\n') => 1,
                _ => match self.buf.get(at + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    None => {
                        // Lone CR at the end: wait for the next byte.
                        self.scanned = at;
                        return;
                    }
                },
            };
            let next = at + terminator;
            if self.line_start {
                self.ends.push(next);
            }
            self.line_start = true;
            i = next;
        }
        if self.buf.len() > i {
            self.line_start = false;
        }
        self.scanned = self.buf.len();
    }
}

/// Splits a block into lines (CRLF, LF or CR) and interprets its fields.
fn parse_block(raw: &[u8], skip_bom: bool) -> Event<'_> {
    let mut event = Event { raw, event: None, data: None, id: None, retry: None };
    let mut rest = raw;
    if skip_bom {
        rest = rest.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(rest);
    }
    let mut data: Option<Cow<'_, [u8]>> = None;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr2(b'\n', b'\r', rest) {
            Some(at) => {
                let terminator = if rest.get(at) == Some(&b'\r') && rest.get(at + 1) == Some(&b'\n') { 2 } else { 1 };
                (rest.get(..at).unwrap_or(&[]), rest.get(at + terminator..).unwrap_or(&[]))
            }
            None => (rest, &[][..]),
        };
        rest = next;
        if line.is_empty() || line.first() == Some(&b':') {
            continue;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = line.get(colon + 1..).unwrap_or(&[]);
                (line.get(..colon).unwrap_or(&[]), value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"event" => event.event = Some(value),
            b"data" => {
                data = Some(match data {
                    None => Cow::Borrowed(value),
                    Some(previous) => {
                        let mut joined = previous.into_owned();
                        joined.push(b'\n');
                        joined.extend_from_slice(value);
                        Cow::Owned(joined)
                    }
                })
            }
            b"id" if !value.contains(&0) => event.id = Some(value),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                event.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
    }
    event.data = data;
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owned copy of an event for comparisons across decoders.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Owned {
        pub raw: Vec<u8>,
        pub event: Option<Vec<u8>>,
        pub data: Option<Vec<u8>>,
        pub id: Option<Vec<u8>>,
        pub retry: Option<u64>,
    }

    fn own(e: Event<'_>) -> Owned {
        Owned {
            raw: e.raw.to_vec(),
            event: e.event.map(<[u8]>::to_vec),
            data: e.data.map(|d| d.into_owned()),
            id: e.id.map(<[u8]>::to_vec),
            retry: e.retry,
        }
    }

    /// Decodes `input` pushed in the given chunks; returns events plus the leftover tail.
    pub(crate) fn decode_chunks(chunks: &[&[u8]]) -> (Vec<Owned>, Vec<u8>) {
        let mut decoder = SseDecoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk).unwrap();
            while let Some(e) = decoder.next_event() {
                out.push(own(e));
            }
        }
        let (last, tail) = decoder.finish();
        let tail = tail.to_vec();
        if let Some(e) = last {
            out.push(own(e));
        }
        (out, tail)
    }

    fn data_of(events: &[Owned]) -> Vec<String> {
        events.iter().filter_map(|e| e.data.clone()).map(|d| String::from_utf8(d).unwrap()).collect()
    }

    #[test]
    fn decodes_lf_crlf_and_cr_line_ends_alike() {
        for sep in ["\n", "\r\n", "\r"] {
            let input = format!("event: a{sep}data: 1{sep}{sep}data: 2{sep}{sep}");
            let (events, tail) = decode_chunks(&[input.as_bytes()]);
            assert_eq!(data_of(&events), ["1", "2"], "separator {sep:?}");
            assert_eq!(events[0].event.as_deref(), Some(&b"a"[..]));
            assert!(tail.is_empty());
        }
    }

    #[test]
    fn joins_multi_line_data_and_ignores_comments() {
        let (events, _) = decode_chunks(&[b": keep-alive\n\ndata: line one\ndata:line two\n: note\ndata\n\n"]);
        let data = data_of(&events);
        assert_eq!(data, ["line one\nline two\n"]);
        assert_eq!(events.len(), 2, "the comment-only block is yielded without data");
        assert_eq!(events[0].data, None);
    }

    #[test]
    fn reads_id_retry_and_strips_only_one_space() {
        let (events, _) = decode_chunks(&[b"id: 7\nretry: 3000\nretry: x\ndata:  two spaces\n\n"]);
        assert_eq!(events[0].id.as_deref(), Some(&b"7"[..]));
        assert_eq!(events[0].retry, Some(3000));
        assert_eq!(data_of(&events), [" two spaces"]);
    }

    #[test]
    fn strips_a_leading_bom_even_split() {
        let (events, _) = decode_chunks(&[b"\xEF", b"\xBB\xBFdata: x\n\n"]);
        assert_eq!(data_of(&events), ["x"]);
        assert!(events[0].raw.starts_with(b"\xEF\xBB\xBF"));
    }

    #[test]
    fn cr_at_chunk_end_waits_for_the_next_byte() {
        let mut decoder = SseDecoder::default();
        decoder.push(b"data: a\r\n\r").unwrap();
        assert!(decoder.next_event().is_none(), "the final CR may still be followed by LF");
        decoder.push(b"\ndata: b\r\n\r\n").unwrap();
        let first = decoder.next_event().unwrap();
        assert_eq!(first.raw, b"data: a\r\n\r\n");
        assert_eq!(decoder.next_event().unwrap().data.as_deref(), Some(&b"b"[..]));
    }

    #[test]
    fn raw_bytes_cover_the_whole_input_in_order() {
        let input: &[u8] = b":c\n\nevent: x\r\ndata: 1\r\n\r\n\n\ndata: 2\rdata: 3\r\rdata: unterminated";
        let (events, tail) = decode_chunks(&[input]);
        let mut joined: Vec<u8> = events.iter().flat_map(|e| e.raw.clone()).collect();
        joined.extend_from_slice(&tail);
        assert_eq!(joined, input);
        assert_eq!(data_of(&events), ["1", "2\n3"]);
        assert_eq!(tail, b"data: unterminated");
    }

    #[test]
    fn final_terminated_event_without_blank_line_is_dispatched() {
        let (events, tail) = decode_chunks(&[b"data: 1\n\ndata: {\"usage\":1}\n"]);
        assert_eq!(data_of(&events), ["1", "{\"usage\":1}"]);
        assert!(tail.is_empty());
    }

    #[test]
    fn oversized_event_is_an_error_and_the_decoder_stays_failed() {
        let mut decoder = SseDecoder::new(16);
        decoder.push(b"data: 0123456789\n\n").unwrap(); // complete events do not count
        assert!(decoder.next_event().is_some());
        assert_eq!(decoder.push(b"data: 0123456789abcdef"), Err(SseError::EventTooLarge { limit: 16 }));
        assert!(decoder.push(b"\n\n").is_err());
        assert_eq!(decoder.finish().0, None);
    }

    #[test]
    fn take_unconsumed_returns_exactly_the_held_bytes_even_after_failure() {
        let mut decoder = SseDecoder::new(16);
        decoder.push(b"data: a\n\ndata: b\n\ndata: par").unwrap();
        assert_eq!(decoder.next_event().unwrap().raw, b"data: a\n\n");
        assert!(decoder.push(b"tial event that is too long").is_err());
        assert_eq!(decoder.take_unconsumed(), b"data: b\n\ndata: partial event that is too long");
    }

    #[test]
    fn buffer_is_compacted_so_memory_stays_bounded() {
        let mut decoder = SseDecoder::new(64);
        for _ in 0..10_000 {
            decoder.push(b"data: {\"x\":1}\n\n").unwrap();
            while decoder.next_event().is_some() {}
        }
        assert!(decoder.buf.capacity() < 1024, "capacity {}", decoder.buf.capacity());
    }

    #[test]
    fn every_split_of_a_tricky_stream_decodes_identically() {
        let input = "\u{FEFF}event: message_start\r\ndata: {\"t\":\"olá 世界 🎉\"}\r\n\r\n: ping\n\n\
                     data: a\rdata: b\r\r\ndata: [DONE]\n\n"
            .as_bytes();
        let whole = decode_chunks(&[input]);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let split = decode_chunks(&[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(split, whole, "split at {i}/{j}");
            }
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn chunked(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            points.sort_unstable();
            let mut out = Vec::new();
            let mut last = 0;
            for p in points {
                out.push(input[last..p].to_vec());
                last = p;
            }
            out.push(input[last..].to_vec());
            out
        }

        proptest! {
            #[test]
            fn any_chunking_gives_the_same_events(
                lines in proptest::collection::vec(
                    prop_oneof![
                        Just("data: x".to_string()), Just("data:".to_string()), Just(": c".to_string()),
                        Just("event: e".to_string()), Just(String::new()), Just("id: 1".to_string()),
                        "[a-zé世:]{0,6}".prop_map(|s| format!("data: {s}")),
                    ],
                    0..24,
                ),
                seps in proptest::collection::vec(prop_oneof![Just("\n"), Just("\r\n"), Just("\r")], 24),
                cuts in proptest::collection::vec(0usize..4096, 0..8),
            ) {
                let mut input = String::new();
                for (line, sep) in lines.iter().zip(seps.iter().cycle()) {
                    input.push_str(line);
                    input.push_str(sep);
                }
                let bytes = input.as_bytes();
                let whole = decode_chunks(&[bytes]);
                let pieces = chunked(bytes, &cuts);
                let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
                prop_assert_eq!(&decode_chunks(&refs), &whole);
                let mut joined: Vec<u8> = whole.0.iter().flat_map(|e| e.raw.clone()).collect();
                joined.extend_from_slice(&whole.1);
                prop_assert_eq!(joined, bytes, "raw bytes must cover the input exactly");
            }

            #[test]
            fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
                let cut = cut.min(data.len());
                let mut decoder = SseDecoder::new(128);
                let _ = decoder.push(&data[..cut]);
                while decoder.next_event().is_some() {}
                let _ = decoder.push(&data[cut..]);
                while decoder.next_event().is_some() {}
                let _ = decoder.finish();
            }
        }
    }
}
