//! Incremental JSON scanner that captures the values at a few paths, without a DOM.
//!
//! Used where a filter must observe a JSON document that flows through it in chunks (a
//! non-streaming completion, Gemini's JSON-array stream) without buffering it: push bytes as they
//! arrive; the scanner keeps only its lexer state, the keys of the outer levels and the bytes of
//! the values being captured. Captured values are then parsed with serde.
//!
//! Paths are lists of object keys from the root; arrays are transparent, so a root array of
//! objects (`[{"usageMetadata":…},{…}]`) matches `["usageMetadata"]` once per element.
//!
//! Bounds: nesting depth [`MAX_DEPTH`], captured value [`MAX_CAPTURE_BYTES`], keys are compared
//! only up to [`MAX_KEY_BYTES`] and only when they contain no escape (no provider escapes the
//! ASCII key names we look for). Anything malformed stops the scan with a [`ScanError`]; the
//! caller passes the bytes through untouched and counts it.

/// Deepest nesting the scanner follows.
pub const MAX_DEPTH: usize = 256;
/// Largest value the scanner copies out.
pub const MAX_CAPTURE_BYTES: usize = 64 * 1024;
/// Longest key compared against the paths.
pub const MAX_KEY_BYTES: usize = 32;
/// Deepest path a target may name.
pub const MAX_PATH: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    Syntax { offset: u64 },
    TooDeep,
    CaptureTooLarge,
    Truncated,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::Syntax { offset } => write!(f, "invalid JSON at byte {offset}"),
            ScanError::TooDeep => write!(f, "JSON nested deeper than {MAX_DEPTH}"),
            ScanError::CaptureTooLarge => write!(f, "captured JSON value larger than {MAX_CAPTURE_BYTES} bytes"),
            ScanError::Truncated => write!(f, "JSON document ended early"),
        }
    }
}

/// One captured value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Index of the matched path in the scanner's targets.
    pub target: usize,
    /// The value's raw JSON bytes.
    pub bytes: Vec<u8>,
    /// Absolute offset of the member's key (its opening quote).
    pub member_start: u64,
    /// Absolute offset of the comma before the member, if it was not the first one.
    pub comma_before: Option<u64>,
    /// Absolute offsets of the value: `value_start..value_end`.
    pub value_start: u64,
    pub value_end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Expecting a value (root, after `:` or after `,` in an array).
    Value,
    /// Right after `[`: a value or `]`.
    ValueOrClose,
    /// After `{`: a key or `}`.
    KeyOrClose,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the closer.
    AfterValue,
    /// Inside a string.
    Str { key: bool, escape: bool },
    /// Inside a number or literal.
    Scalar,
    /// The root value is complete.
    Done,
}

#[derive(Debug, Clone, Copy, Default)]
struct Key {
    bytes: [u8; MAX_KEY_BYTES],
    len: u8,
    /// Too long or escaped: never matches.
    opaque: bool,
    start: u64,
    comma_before: Option<u64>,
}

impl Key {
    fn as_bytes(&self) -> Option<&[u8]> {
        if self.opaque {
            None
        } else {
            self.bytes.get(..usize::from(self.len))
        }
    }
}

#[derive(Debug)]
struct Capture {
    target: usize,
    /// Number of open containers when the value started.
    depth: usize,
    bytes: Vec<u8>,
    member_start: u64,
    comma_before: Option<u64>,
    value_start: u64,
}

#[derive(Debug)]
pub struct JsonScanner {
    targets: &'static [&'static [&'static str]],
    lex: Lex,
    /// Kind of each open container: `true` = object.
    objects: Vec<bool>,
    /// `keys[d]`: the key currently open in the object at container depth `d` (1-based), for
    /// the outer `MAX_PATH` levels; deeper keys are not tracked (no target reaches them).
    keys: [Key; MAX_PATH + 1],
    /// `commas[d]`: offset of the last comma seen in the object at depth `d`.
    commas: [Option<u64>; MAX_PATH + 1],
    /// Absolute offset of the first byte of the chunk being scanned.
    offset: u64,
    capture: Option<Capture>,
    done: Vec<Captured>,
    error: Option<ScanError>,
}

/// Per-chunk cursor: where the bytes of an active capture start in the current chunk.
struct Cursor<'a> {
    chunk: &'a [u8],
    capture_from: usize,
}

impl JsonScanner {
    pub fn new(targets: &'static [&'static [&'static str]]) -> Self {
        JsonScanner {
            targets,
            lex: Lex::Value,
            objects: Vec::new(),
            keys: [Key::default(); MAX_PATH + 1],
            commas: [None; MAX_PATH + 1],
            offset: 0,
            capture: None,
            done: Vec::new(),
            error: None,
        }
    }

    /// Whether the root value has been read completely.
    pub fn is_complete(&self) -> bool {
        self.lex == Lex::Done
    }

    pub fn error(&self) -> Option<&ScanError> {
        self.error.as_ref()
    }

    /// Values captured so far, oldest first; drains them.
    pub fn take_captured(&mut self) -> Vec<Captured> {
        std::mem::take(&mut self.done)
    }

    /// Scans the next chunk. After an error the scanner ignores further input.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ScanError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let result = self.scan(chunk);
        if let Err(error) = &result {
            self.fail(error.clone());
        }
        result
    }

    /// Scans a chunk that is known to be the last one. When it is also the first (the whole
    /// document in one chunk, as most non-streamed answers arrive), the fast path of
    /// [`scan_document`] reads it; otherwise it is [`JsonScanner::push`].
    pub fn push_last(&mut self, chunk: &[u8]) -> Result<(), ScanError> {
        let fresh = self.offset == 0 && self.lex == Lex::Value && self.error.is_none();
        if let Some(captured) = fresh.then(|| fast::scan(self.targets, chunk)).flatten() {
            self.done.extend(captured);
            self.offset = chunk.len() as u64;
            self.lex = Lex::Done;
            return Ok(());
        }
        self.push(chunk)
    }

    /// Declares the end of input: an incomplete root value is an error.
    pub fn finish(&mut self) -> Result<(), ScanError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if self.lex == Lex::Scalar && self.objects.is_empty() {
            // A bare root scalar ends at end of input.
            let mut cursor = Cursor { chunk: &[], capture_from: 0 };
            if let Err(error) = self.end_value(&mut cursor, 0) {
                self.fail(error.clone());
                return Err(error);
            }
            self.lex = Lex::Done;
        }
        if self.lex == Lex::Done {
            Ok(())
        } else {
            self.fail(ScanError::Truncated);
            Err(ScanError::Truncated)
        }
    }

    fn fail(&mut self, error: ScanError) {
        self.error = Some(error);
        self.capture = None;
    }

    fn scan(&mut self, chunk: &[u8]) -> Result<(), ScanError> {
        let mut cursor = Cursor { chunk, capture_from: 0 };
        let mut i = 0usize;
        while let Some(&b) = chunk.get(i) {
            let at = self.offset + i as u64;
            match self.lex {
                Lex::Str { key, escape: true } => {
                    if key {
                        if let Some(k) = self.open_key_mut() {
                            k.opaque = true;
                        }
                    }
                    self.lex = Lex::Str { key, escape: false };
                    i += 1;
                }
                Lex::Str { key, escape: false } => {
                    let rest = chunk.get(i..).unwrap_or(&[]);
                    let stop = memchr::memchr2(b'"', b'\\', rest);
                    if key {
                        self.push_key_bytes(rest.get(..stop.unwrap_or(rest.len())).unwrap_or(&[]));
                    }
                    let Some(stop) = stop else {
                        i = chunk.len();
                        continue;
                    };
                    i += stop + 1;
                    if rest.get(stop) == Some(&b'\\') {
                        self.lex = Lex::Str { key, escape: true };
                    } else if key {
                        self.lex = Lex::Colon;
                    } else {
                        self.lex = self.after_value();
                        self.end_value(&mut cursor, i)?;
                    }
                }
                Lex::Scalar => {
                    if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-') {
                        // The whole run at once (numbers, literals).
                        i += 1;
                        while chunk.get(i).is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
                        {
                            i += 1;
                        }
                    } else {
                        // The delimiter is examined again in the next state.
                        self.lex = self.after_value();
                        self.end_value(&mut cursor, i)?;
                    }
                }
                _ if matches!(b, b' ' | b'\t' | b'\n' | b'\r') => {
                    // The whole run at once (indented JSON is a third whitespace).
                    i += 1;
                    while chunk.get(i).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
                        i += 1;
                    }
                }
                Lex::Value | Lex::ValueOrClose => {
                    match b {
                        b']' if self.lex == Lex::ValueOrClose => self.close(&mut cursor, i)?,
                        b'{' | b'[' => {
                            self.maybe_start_capture(at, &mut cursor, i);
                            if self.objects.len() >= MAX_DEPTH {
                                return Err(ScanError::TooDeep);
                            }
                            self.objects.push(b == b'{');
                            if let Some(comma) = self.commas.get_mut(self.objects.len()) {
                                *comma = None;
                            }
                            self.lex = if b == b'{' { Lex::KeyOrClose } else { Lex::ValueOrClose };
                        }
                        b'"' => {
                            self.maybe_start_capture(at, &mut cursor, i);
                            self.lex = Lex::Str { key: false, escape: false };
                        }
                        b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                            self.maybe_start_capture(at, &mut cursor, i);
                            self.lex = Lex::Scalar;
                        }
                        _ => return Err(ScanError::Syntax { offset: at }),
                    }
                    i += 1;
                }
                Lex::KeyOrClose | Lex::Key => {
                    match b {
                        b'"' => {
                            let depth = self.objects.len();
                            let comma_before = self.commas.get(depth).copied().flatten();
                            if let Some(key) = self.open_key_mut() {
                                *key = Key { start: at, comma_before, ..Key::default() };
                            }
                            self.lex = Lex::Str { key: true, escape: false };
                        }
                        b'}' if self.lex == Lex::KeyOrClose => self.close(&mut cursor, i)?,
                        _ => return Err(ScanError::Syntax { offset: at }),
                    }
                    i += 1;
                }
                Lex::Colon => {
                    if b != b':' {
                        return Err(ScanError::Syntax { offset: at });
                    }
                    self.lex = Lex::Value;
                    i += 1;
                }
                Lex::AfterValue => {
                    match (b, self.objects.last()) {
                        (b',', Some(true)) => {
                            if let Some(comma) = self.commas.get_mut(self.objects.len()) {
                                *comma = Some(at);
                            }
                            self.lex = Lex::Key;
                        }
                        (b',', Some(false)) => self.lex = Lex::Value,
                        (b'}', Some(true)) | (b']', Some(false)) => self.close(&mut cursor, i)?,
                        _ => return Err(ScanError::Syntax { offset: at }),
                    }
                    i += 1;
                }
                Lex::Done => return Err(ScanError::Syntax { offset: at }),
            }
        }
        if let Some(capture) = &mut self.capture {
            append_bounded(&mut capture.bytes, chunk.get(cursor.capture_from..).unwrap_or(&[]))?;
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }

    fn after_value(&self) -> Lex {
        if self.objects.is_empty() {
            Lex::Done
        } else {
            Lex::AfterValue
        }
    }

    /// The key slot of the innermost object, if it is within the tracked levels.
    fn open_key_mut(&mut self) -> Option<&mut Key> {
        let depth = self.objects.len();
        self.keys.get_mut(depth)
    }

    fn push_key_bytes(&mut self, bytes: &[u8]) {
        let Some(key) = self.open_key_mut() else {
            return;
        };
        if key.opaque {
            return;
        }
        let len = usize::from(key.len);
        match key.bytes.get_mut(len..len + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                key.len += bytes.len() as u8;
            }
            None => key.opaque = true,
        }
    }

    /// Index of the target naming the value about to start, if any.
    fn matching_target(&self) -> Option<usize> {
        if self.capture.is_some() || self.objects.len() > MAX_PATH {
            return None;
        }
        let object_levels = self.objects.iter().filter(|o| **o).count();
        'targets: for (index, target) in self.targets.iter().enumerate() {
            if target.len() != object_levels || object_levels == 0 {
                continue;
            }
            let mut wanted = target.iter();
            for (level, is_object) in self.objects.iter().enumerate() {
                if !is_object {
                    continue;
                }
                let key = self.keys.get(level + 1).and_then(Key::as_bytes);
                if key.is_none() || wanted.next().map(|w| w.as_bytes()) != key {
                    continue 'targets;
                }
            }
            return Some(index);
        }
        None
    }

    fn maybe_start_capture(&mut self, at: u64, cursor: &mut Cursor<'_>, i: usize) {
        if let Some(target) = self.matching_target() {
            let depth = self.objects.len();
            let key = self.keys.get(depth).copied().unwrap_or_default();
            self.capture = Some(Capture {
                target,
                depth,
                bytes: Vec::new(),
                member_start: key.start,
                comma_before: key.comma_before,
                value_start: at,
            });
            cursor.capture_from = i;
        }
    }

    /// A value ended just before chunk index `end`: finish the capture if it was this value.
    fn end_value(&mut self, cursor: &mut Cursor<'_>, end: usize) -> Result<(), ScanError> {
        if self.capture.as_ref().is_none_or(|c| c.depth != self.objects.len()) {
            return Ok(());
        }
        if let Some(mut capture) = self.capture.take() {
            append_bounded(&mut capture.bytes, cursor.chunk.get(cursor.capture_from..end).unwrap_or(&[]))?;
            cursor.capture_from = end;
            self.done.push(Captured {
                target: capture.target,
                bytes: capture.bytes,
                member_start: capture.member_start,
                comma_before: capture.comma_before,
                value_start: capture.value_start,
                value_end: self.offset + end as u64,
            });
        }
        Ok(())
    }

    fn close(&mut self, cursor: &mut Cursor<'_>, i: usize) -> Result<(), ScanError> {
        self.objects.pop();
        self.lex = self.after_value();
        self.end_value(cursor, i + 1)
    }
}

fn append_bounded(dst: &mut Vec<u8>, bytes: &[u8]) -> Result<(), ScanError> {
    if dst.len() + bytes.len() > MAX_CAPTURE_BYTES {
        return Err(ScanError::CaptureTooLarge);
    }
    dst.extend_from_slice(bytes);
    Ok(())
}

/// Scans one complete document.
pub fn scan_document(targets: &'static [&'static [&'static str]], doc: &[u8]) -> Result<Vec<Captured>, ScanError> {
    let mut scanner = JsonScanner::new(targets);
    scanner.push_last(doc)?;
    scanner.finish()?;
    Ok(scanner.take_captured())
}

/// The same captures for a document that is complete in memory, through serde_json: its
/// parser skips what no target names several times faster than the byte-at-a-time lexer
/// (numbers, strings and whitespace in bulk), which matters because every response and stream
/// event is scanned. `None` whenever serde_json refuses the document (malformed, invalid UTF-8
/// in a string, nested deeper than its recursion limit) or a capture exceeds the bound: the
/// lexer then decides, so results and errors are the lexer's in every case where the two
/// could differ. Equal to the lexer's output whenever it returns (property-tested).
mod fast {
    use super::{Captured, MAX_CAPTURE_BYTES, MAX_PATH};
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::value::RawValue;
    use std::cell::RefCell;
    use std::fmt;

    pub fn scan(targets: &'static [&'static [&'static str]], doc: &[u8]) -> Option<Vec<Captured>> {
        let found = RefCell::new(Vec::new());
        let walk = Walk { targets, doc, prefix: [""; MAX_PATH], len: 0, depth: 0, found: &found };
        let mut de = serde_json::Deserializer::from_slice(doc);
        walk.deserialize(&mut de).ok()?;
        de.end().ok()?;
        found.into_inner().into_iter().collect()
    }

    /// A value reached through `prefix[..len]` (object keys; arrays are transparent), inside
    /// `depth` containers.
    #[derive(Clone, Copy)]
    struct Walk<'t, 'd, 'f> {
        targets: &'static [&'static [&'static str]],
        doc: &'d [u8],
        prefix: [&'t str; MAX_PATH],
        len: usize,
        depth: usize,
        /// Captures in document order; `None` marks one the lexer would refuse (too large).
        found: &'f RefCell<Vec<Option<Captured>>>,
    }

    impl<'t, 'd, 'f> Walk<'t, 'd, 'f> {
        /// The target `prefix + key` names, and whether some longer target goes through it.
        fn lookup(&self, key: &str) -> (Option<usize>, bool) {
            let mut exact = None;
            let mut deeper = false;
            for (index, target) in self.targets.iter().enumerate() {
                let matches = target.len() > self.len
                    && target.iter().zip(self.prefix.iter().take(self.len)).all(|(a, b)| a == b)
                    && target.get(self.len) == Some(&key);
                if matches {
                    if target.len() == self.len + 1 {
                        exact = exact.or(Some(index));
                    } else {
                        deeper = true;
                    }
                }
            }
            (exact, deeper)
        }

        fn capture(&self, target: usize, raw: &RawValue) {
            let bytes = raw.get().as_bytes();
            let captured = offsets(self.doc, bytes).filter(|_| bytes.len() <= MAX_CAPTURE_BYTES).map(
                |(member_start, comma_before, value_start)| Captured {
                    target,
                    bytes: bytes.to_vec(),
                    member_start,
                    comma_before,
                    value_start,
                    value_end: value_start + bytes.len() as u64,
                },
            );
            self.found.borrow_mut().push(captured);
        }
    }

    /// Where the member holding `value` starts, the comma before it, and where the value starts,
    /// found by walking back from the value over `"key" :` (a key we matched has no escapes).
    fn offsets(doc: &[u8], value: &[u8]) -> Option<(u64, Option<u64>, u64)> {
        let start = (value.as_ptr() as usize).checked_sub(doc.as_ptr() as usize)?;
        let before = doc.get(..start)?;
        let back = |end: usize| before.get(..end)?.iter().rposition(|b| !b.is_ascii_whitespace());
        let colon = back(start)?;
        let closing_quote = back(colon)?;
        let opening_quote = before.get(..closing_quote)?.iter().rposition(|b| *b == b'"')?;
        let comma = back(opening_quote).filter(|at| before.get(*at) == Some(&b','));
        Some((opening_quote as u64, comma.map(|c| c as u64), start as u64))
    }

    impl<'de, 't, 'd, 'f> DeserializeSeed<'de> for Walk<'t, 'd, 'f> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_any(self)
        }
    }

    impl<'de, 't, 'd, 'f> Visitor<'de> for Walk<'t, 'd, 'f> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let inner = Walk { depth: self.depth + 1, ..self };
            while seq.next_element_seed(inner)?.is_some() {}
            Ok(())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let depth = self.depth + 1;
            while let Some(key) = map.next_key::<KeyName<'de>>()? {
                // The lexer compares only unescaped keys, and none inside more than MAX_PATH containers.
                let (exact, deeper) = match key {
                    KeyName::Plain(key) if depth <= MAX_PATH => self.lookup(key),
                    _ => (None, false),
                };
                if let Some(target) = exact {
                    let raw: &RawValue = map.next_value()?;
                    self.capture(target, raw);
                } else if let (true, KeyName::Plain(key)) = (deeper && self.len < MAX_PATH, key) {
                    let mut inner = Walk { depth, len: self.len + 1, ..self };
                    if let Some(slot) = inner.prefix.get_mut(self.len) {
                        *slot = key;
                    }
                    map.next_value_seed(inner)?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }

    /// An object key: borrowed from the document when it has no escapes.
    enum KeyName<'de> {
        Plain(&'de str),
        Escaped,
    }

    impl<'de> serde::Deserialize<'de> for KeyName<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct KeyVisitor;
            impl<'de> Visitor<'de> for KeyVisitor {
                type Value = KeyName<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object key")
                }
                fn visit_borrowed_str<E>(self, key: &'de str) -> Result<KeyName<'de>, E> {
                    Ok(KeyName::Plain(key))
                }
                fn visit_str<E>(self, _: &str) -> Result<KeyName<'de>, E> {
                    Ok(KeyName::Escaped)
                }
            }
            deserializer.deserialize_str(KeyVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &[&[&str]] = &[&["usage"], &["model"], &["message", "usage"]];

    fn values(captured: &[Captured]) -> Vec<(usize, String)> {
        captured.iter().map(|c| (c.target, String::from_utf8(c.bytes.clone()).unwrap())).collect()
    }

    /// The byte-at-a-time lexer alone (what `scan_document` falls back to).
    fn lexer(targets: &'static [&'static [&'static str]], doc: &[u8]) -> Result<Vec<Captured>, ScanError> {
        let mut scanner = JsonScanner::new(targets);
        scanner.push(doc)?;
        scanner.finish()?;
        Ok(scanner.take_captured())
    }

    #[test]
    fn a_whole_document_in_its_last_chunk_reads_as_pushed() {
        let doc = br#"{"model":"m","usage":{"total_tokens":3}}"#;
        let mut whole = JsonScanner::new(USAGE);
        whole.push_last(doc).unwrap();
        assert!(whole.is_complete());
        whole.finish().unwrap();
        assert_eq!(whole.take_captured(), lexer(USAGE, doc).unwrap());
        // After earlier chunks, the last one is pushed like any other.
        let mut split = JsonScanner::new(USAGE);
        split.push(&doc[..10]).unwrap();
        split.push_last(&doc[10..]).unwrap();
        split.finish().unwrap();
        assert_eq!(split.take_captured(), lexer(USAGE, doc).unwrap());
        let mut bad = JsonScanner::new(USAGE);
        assert!(bad.push_last(br#"{"usage":1"#).is_ok() && bad.finish() == Err(ScanError::Truncated));
    }

    #[test]
    fn fast_path_agrees_on_the_edges_of_the_lexer() {
        let cases: &[&str] = &[
            r#"{"model":"m","usage":{"a":1}}"#,
            "{\n  \"id\": 1 ,\n  \"usage\" :\t{\"a\": [1, 2]}\n}\n",
            r#"[{"usage":1},{"usage":2}]"#,
            r#"{"message":[{"usage":{"x":1}}],"usage":null}"#,
            r#"{"us\u0061ge":1,"usage":2}"#,
            r#"{"usage":1,"usage":2}"#,
            r#"[[[{"usage":1}]]]"#,
            r#"[[[[{"usage":1}]]]]"#,
            r#"{"a":{"b":{"usage":1}},"message":{"model":"x","usage":3}}"#,
            "7",
            r#""usage""#,
        ];
        for doc in cases {
            let fast = fast::scan(USAGE, doc.as_bytes()).unwrap_or_else(|| panic!("fast path refused {doc}"));
            assert_eq!(Ok(fast), lexer(USAGE, doc.as_bytes()), "{doc}");
        }
        // Where serde_json refuses, the lexer decides (and may accept what serde_json does not).
        let deep = format!("{}{}{}", "[".repeat(200), r#"{"usage":1}"#, "]".repeat(200));
        for doc in [deep.as_bytes(), br#"{"usage":tru}"#, b"{\"usage\":\"\xff\"}", br#"{"usage":1} x"#] {
            let shown = String::from_utf8_lossy(doc);
            assert!(fast::scan(USAGE, doc).is_none(), "{shown}");
            assert_eq!(scan_document(USAGE, doc), lexer(USAGE, doc), "{shown}");
        }
        let big = format!(r#"{{"usage":"{}"}}"#, "x".repeat(MAX_CAPTURE_BYTES));
        assert!(fast::scan(USAGE, big.as_bytes()).is_none());
        assert_eq!(scan_document(USAGE, big.as_bytes()), Err(ScanError::CaptureTooLarge));
    }

    fn scan_split(doc: &[u8], cuts: &[usize]) -> Result<Vec<Captured>, ScanError> {
        let mut scanner = JsonScanner::new(USAGE);
        let mut last = 0;
        for &cut in cuts {
            scanner.push(&doc[last..cut])?;
            last = cut;
        }
        scanner.push(&doc[last..])?;
        scanner.finish()?;
        Ok(scanner.take_captured())
    }

    #[test]
    fn captures_top_level_values_of_every_type() {
        let doc = br#"{"id":"x","model":"gpt-4o","choices":[{"usage":{"no":1}}],"usage":{"prompt_tokens":9,"completion_tokens":12}}"#;
        let got = values(&scan_document(USAGE, doc).unwrap());
        assert_eq!(got, [(1, r#""gpt-4o""#.into()), (0, r#"{"prompt_tokens":9,"completion_tokens":12}"#.into())]);
    }

    #[test]
    fn captures_nested_paths_and_scalars() {
        let doc = br#"{"type":"message_start","message":{"model":"claude","usage":{"input_tokens":25,"output_tokens":1}},"usage":null}"#;
        let got = values(&scan_document(USAGE, doc).unwrap());
        assert_eq!(got, [(2, r#"{"input_tokens":25,"output_tokens":1}"#.into()), (0, "null".into())]);
        let doc = br#"{"usage":42}"#;
        assert_eq!(values(&scan_document(USAGE, doc).unwrap()), [(0, "42".into())]);
    }

    #[test]
    fn root_arrays_are_transparent() {
        let doc = b"[{\"usage\":{\"a\":1}}\r\n,\r\n{\"usage\":{\"a\":2}}]";
        assert_eq!(values(&scan_document(USAGE, doc).unwrap()), [(0, r#"{"a":1}"#.into()), (0, r#"{"a":2}"#.into())]);
    }

    #[test]
    fn keys_inside_strings_and_escapes_do_not_match() {
        let doc = br#"{"content":"{\"usage\":{\"x\":1}}","us\u0061ge":{"x":2},"model":"a\"b"}"#;
        assert_eq!(values(&scan_document(USAGE, doc).unwrap()), [(1, r#""a\"b""#.into())]);
    }

    #[test]
    fn reports_member_and_comma_offsets_for_splicing() {
        let doc = br#"{"id":"c","choices":[],"usage":null}"#;
        let got = scan_document(USAGE, doc).unwrap();
        let usage = &got[0];
        let comma = usage.comma_before.unwrap() as usize;
        assert_eq!(&doc[comma..usage.value_end as usize], br#","usage":null"#);
        assert_eq!(&doc[usage.member_start as usize..usage.value_start as usize], br#""usage":"#);
    }

    #[test]
    fn every_split_gives_the_same_captures() {
        let doc = br#" { "model" : "m-1" , "usage" : { "p" : [1, 2.5e3, -3, true, null, "s\"\\"] } , "x": {} } "#;
        let whole = scan_document(USAGE, doc).unwrap();
        for i in 0..=doc.len() {
            for j in i..=doc.len() {
                assert_eq!(scan_split(doc, &[i, j]).unwrap(), whole, "split {i}/{j}");
            }
        }
    }

    #[test]
    fn malformed_and_truncated_documents_are_errors() {
        assert!(matches!(scan_document(USAGE, b"{\"a\" 1}"), Err(ScanError::Syntax { .. })));
        assert!(matches!(scan_document(USAGE, b"{\"a\":1,}"), Err(ScanError::Syntax { .. })));
        assert!(matches!(scan_document(USAGE, b"[1,]"), Err(ScanError::Syntax { .. })));
        assert!(scan_document(USAGE, b"[[], {}, [1]]").is_ok());
        assert!(matches!(scan_document(USAGE, b"{\"a\":1} x"), Err(ScanError::Syntax { .. })));
        assert_eq!(scan_document(USAGE, b"{\"usage\":{\"a\":"), Err(ScanError::Truncated));
        assert_eq!(scan_document(USAGE, b""), Err(ScanError::Truncated));
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(scan_document(USAGE, deep.as_bytes()), Err(ScanError::TooDeep));
    }

    #[test]
    fn oversized_capture_is_an_error_not_unbounded_memory() {
        let doc = format!("{{\"usage\":\"{}\"}}", "x".repeat(MAX_CAPTURE_BYTES + 1));
        assert_eq!(scan_document(USAGE, doc.as_bytes()), Err(ScanError::CaptureTooLarge));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::Bool),
                any::<i64>().prop_map(|n| serde_json::json!(n)),
                "[a-z\"\\\\é世 ]{0,8}".prop_map(serde_json::Value::String),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                    proptest::collection::btree_map(
                        prop_oneof![Just("usage".to_string()), Just("model".to_string()), "[a-z]{1,5}"],
                        inner,
                        0..4
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn captures_equal_serde_and_survive_any_chunking(value in json_value(), cuts in proptest::collection::vec(0usize..4096, 0..6)) {
                let doc = serde_json::to_vec(&value).unwrap();
                let whole = scan_document(USAGE, &doc).unwrap();
                if let Some(usage) = value.get("usage") {
                    let captured = whole.iter().find(|c| c.target == 0).unwrap();
                    let reparsed: serde_json::Value = serde_json::from_slice(&captured.bytes).unwrap();
                    prop_assert_eq!(&reparsed, usage);
                }
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (doc.len() + 1)).collect();
                cuts.sort_unstable();
                prop_assert_eq!(scan_split(&doc, &cuts).unwrap(), whole);
            }

            #[test]
            fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = scan_document(USAGE, &data);
            }

            #[test]
            fn the_fast_path_equals_the_lexer_whenever_it_answers(
                value in json_value(),
                pretty in any::<bool>(),
                edits in proptest::collection::vec((0usize..4096, proptest::sample::select(b" \t\\\"{}[],:u0en".to_vec())), 0..3),
            ) {
                let mut doc = if pretty { serde_json::to_vec_pretty(&value) } else { serde_json::to_vec(&value) }.unwrap();
                for (at, byte) in edits {
                    let len = doc.len();
                    doc[at % len] = byte;
                }
                if let Some(captured) = fast::scan(USAGE, &doc) {
                    prop_assert_eq!(Ok(captured), lexer(USAGE, &doc));
                }
            }
        }
    }
}
