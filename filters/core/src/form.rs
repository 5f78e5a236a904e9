//! A `multipart/form-data` body read as it passes (RFC 7578, RFC 2046 §5.1.1): every text field,
//! wherever it is — before the files or after them — with its value's place in the bytes Envoy
//! holds, so that it can be checked and rewritten there; the files' bytes are only looked through
//! for the next delimiter, never kept.
//!
//! Sans-I/O and position-based: the caller holds a buffer (what Envoy holds of the body) and asks
//! [`FormWalker::next`] what comes next in it. A text field is held whole: until its value ends,
//! the walker asks for more ([`Next::NeedMore`]) and the caller keeps the buffer (Envoy buffers
//! the rest behind it); once the walker is inside a file with nothing pending, the caller may let
//! the buffer go ([`Next::Release`]) and call [`FormWalker::released`]: the next buffer starts
//! where this one ended. Bounded: a part's headers over [`MAX_PART_HEAD`] bytes or a text field
//! over [`MAX_FIELD`] end the reading ([`Next::Unreadable`]).

use memchr::memmem;
use std::ops::Range;

/// The most bytes of one part's headers.
pub const MAX_PART_HEAD: usize = 16 * 1024;
/// The most bytes of one text field's value held to read it (OpenAI's longest prompt, an image
/// edit's, is 32,000 characters).
pub const MAX_FIELD: usize = 256 * 1024;

/// What comes next in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A text field, its value at `value` in the buffer. After replacing the value, tell the
    /// walker with [`FormWalker::replaced`].
    Field { name: String, value: Range<usize> },
    /// The buffer ends inside a part's headers or a text field: keep it and call again with more.
    NeedMore,
    /// The buffer ends inside a file, nothing pending: it may go.
    Release,
    /// The closing delimiter: nothing more to read.
    Done,
    /// Not a form this walker can follow (the reason, for a metric).
    Unreadable(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Before the first delimiter (a preamble, normally empty).
    Preamble,
    /// A part's headers begin at this offset (just after a delimiter).
    Head(usize),
    /// A text field's value begins at this offset.
    Field {
        name: String,
        start: usize,
    },
    /// Inside a file's bytes.
    File,
    Done,
}

/// Reads a form's parts as its bytes pass. See the module documentation.
#[derive(Debug)]
pub struct FormWalker {
    /// `CRLF--boundary`: what ends a part.
    close: Vec<u8>,
    state: State,
    /// Offset in the buffer from which the next delimiter is looked for.
    at: usize,
    /// The last bytes of a file let go: a delimiter may begin among them.
    tail: Vec<u8>,
    /// The last bytes of the buffer as last walked inside a file, the tail once it is let go.
    pending: Vec<u8>,
    /// The buffer is the first after a release: look at the seam with the one let go.
    fresh: bool,
    /// The last answer was [`Next::NeedMore`].
    wants_more: bool,
}

impl FormWalker {
    /// A walker for a form with this `boundary`, from the body's first byte.
    pub fn new(boundary: &str) -> FormWalker {
        let mut close = b"\r\n--".to_vec();
        close.extend_from_slice(boundary.as_bytes());
        FormWalker {
            close,
            state: State::Preamble,
            at: 0,
            tail: Vec::new(),
            pending: Vec::new(),
            fresh: false,
            wants_more: false,
        }
    }

    /// Whether the whole form is read.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the buffer must be kept: a part's headers, a text field or a delimiter are not
    /// yet whole (the last answer was [`Next::NeedMore`]).
    pub fn holding(&self) -> bool {
        self.wants_more
    }

    /// What comes next in `buffer` (the same buffer as before, grown at its end, unless
    /// [`FormWalker::released`] was called since).
    pub fn next(&mut self, buffer: &[u8]) -> Next {
        let next = self.step(buffer);
        self.wants_more = next == Next::NeedMore;
        next
    }

    fn step(&mut self, buffer: &[u8]) -> Next {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Next::Done,
                State::Preamble => {
                    // The first delimiter has no CRLF before it (the body's first bytes).
                    let delimiter = self.close.get(2..).unwrap_or_default();
                    let found = if buffer.starts_with(delimiter) {
                        Some(delimiter.len())
                    } else {
                        search(buffer, self.at, &self.close).map(|at| at + self.close.len())
                    };
                    match found {
                        Some(end) => self.state = State::Head(end),
                        None => {
                            self.state = State::Preamble;
                            self.at = self.resume_at(buffer);
                            return if buffer.len() > MAX_PART_HEAD {
                                Next::Unreadable("form_preamble")
                            } else {
                                Next::NeedMore
                            };
                        }
                    }
                }
                State::Head(start) => {
                    let rest = buffer.get(start..).unwrap_or_default();
                    if rest.len() < 2 {
                        self.state = State::Head(start);
                        return Next::NeedMore;
                    }
                    if rest.starts_with(b"--") {
                        self.state = State::Done;
                        return Next::Done;
                    }
                    // The delimiter line's CRLF, then the headers, then an empty line.
                    let Some(end) = memmem::find(rest, b"\r\n\r\n") else {
                        self.state = State::Head(start);
                        return if rest.len() > MAX_PART_HEAD {
                            Next::Unreadable("form_part_head")
                        } else {
                            Next::NeedMore
                        };
                    };
                    let head = String::from_utf8_lossy(rest.get(..end).unwrap_or_default());
                    let (name, file) = crate::request::disposition(&head);
                    let value = start + end + 4;
                    self.at = value;
                    self.state = match (file, name) {
                        (false, Some(name)) => State::Field { name, start: value },
                        // A file, or a part without a name (nothing a field could be): looked through.
                        _ => State::File,
                    };
                }
                State::Field { name, start } => match search(buffer, self.at, &self.close) {
                    Some(end) => {
                        self.at = end;
                        self.state = State::Head(end + self.close.len());
                        return Next::Field { name, value: start..end };
                    }
                    None => {
                        self.at = self.resume_at(buffer).max(start);
                        let long = buffer.len().saturating_sub(start) > MAX_FIELD;
                        self.state = State::Field { name, start };
                        return if long { Next::Unreadable("form_field_too_long") } else { Next::NeedMore };
                    }
                },
                State::File => {
                    if std::mem::take(&mut self.fresh) && !self.tail.is_empty() {
                        // A delimiter that began in the bytes already let go.
                        let kept = self.tail.len();
                        let mut seam = self.tail.clone();
                        seam.extend_from_slice(buffer.get(..self.close.len()).unwrap_or(buffer));
                        if let Some(at) = memmem::find(&seam, &self.close).filter(|&at| at < kept) {
                            if buffer.len() + kept < at + self.close.len() {
                                self.fresh = true; // not all of it has come yet
                                self.state = State::File;
                                return Next::NeedMore;
                            }
                            self.tail.clear();
                            self.state = State::Head(at + self.close.len() - kept);
                            continue;
                        }
                    }
                    match search(buffer, self.at, &self.close) {
                        Some(at) => self.state = State::Head(at + self.close.len()),
                        None => {
                            self.at = self.resume_at(buffer).max(self.at);
                            self.state = State::File;
                            let keep = (self.close.len() - 1).min(buffer.len());
                            self.pending.clear();
                            self.pending.extend_from_slice(buffer.get(buffer.len() - keep..).unwrap_or_default());
                            return Next::Release;
                        }
                    }
                }
            }
        }
    }

    /// Where to look for a delimiter once `buffer` has grown: it may begin in its last bytes.
    fn resume_at(&self, buffer: &[u8]) -> usize {
        buffer.len().saturating_sub(self.close.len() - 1)
    }

    /// The value of the field just returned was replaced by one `new_len` bytes long (it was
    /// `old_len`): what follows moved.
    pub fn replaced(&mut self, old_len: usize, new_len: usize) {
        let shift = |at: usize| (at + new_len).saturating_sub(old_len);
        self.at = shift(self.at);
        if let State::Head(start) = self.state {
            self.state = State::Head(shift(start));
        }
    }

    /// The buffer was let go after a [`Next::Release`]: the next one starts after it.
    pub fn released(&mut self) {
        if self.state == State::File {
            // What a delimiter split across two buffers needs of those let go.
            self.tail.append(&mut self.pending);
            let excess = self.tail.len().saturating_sub(self.close.len() - 1);
            self.tail.drain(..excess);
            self.fresh = true;
        }
        self.pending.clear();
        self.at = 0;
    }
}

fn search(buffer: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    memmem::find(buffer.get(from..)?, needle).map(|at| at + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A form: text fields, then a file of `size` bytes, then more text fields.
    fn form(before: &[(&str, &str)], size: usize, after: &[(&str, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        let field = |body: &mut Vec<u8>, (name, value): &(&str, &str)| {
            body.extend_from_slice(
                format!("--b0und\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
            );
        };
        before.iter().for_each(|f| field(&mut body, f));
        body.extend_from_slice(
            b"--b0und\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n",
        );
        // File bytes that hold near-delimiters (`\r\n--b0un`, `--b0und` without CRLF).
        let pattern = b"\x89PNG\r\n--b0un--b0und\r\n-";
        body.extend(pattern.iter().cycle().take(size));
        body.extend_from_slice(b"\r\n");
        after.iter().for_each(|f| field(&mut body, f));
        body.extend_from_slice(b"--b0und--\r\n");
        body
    }

    /// Feeds `body` in pieces cut at `cuts`, releasing whenever the walker allows (and
    /// replacing each `prompt` by `replace`, when given); returns the fields and the bytes
    /// passed on.
    fn walk(body: &[u8], cuts: &[usize], replace: Option<&str>) -> (Vec<(String, String)>, Vec<u8>) {
        let mut walker = FormWalker::new("b0und");
        let mut fields = Vec::new();
        let mut passed = Vec::new();
        let mut held: Vec<u8> = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
            held.extend_from_slice(&body[from..cut]);
            from = cut;
            loop {
                match walker.next(&held) {
                    Next::Field { name, value } => {
                        fields.push((name.clone(), String::from_utf8_lossy(&held[value.clone()]).into_owned()));
                        if let (Some(new), "prompt") = (replace, name.as_str()) {
                            let old = value.len();
                            held.splice(value, new.bytes());
                            walker.replaced(old, new.len());
                        }
                    }
                    Next::NeedMore => break,
                    Next::Release => {
                        walker.released();
                        passed.append(&mut held);
                        break;
                    }
                    Next::Done => break,
                    Next::Unreadable(reason) => panic!("{reason}"),
                }
            }
        }
        passed.append(&mut held);
        assert!(walker.done(), "the closing delimiter was read");
        (fields, passed)
    }

    fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn fields_before_and_after_a_file_are_found_at_every_split() {
        let before = [("model", "gpt-image-1"), ("n", "1")];
        let after = [("prompt", "Add a hat; mail ana@example.com"), ("size", "1024x1024")];
        let body = form(&before, 300, &after);
        let expected = owned(&[before.as_slice(), after.as_slice()].concat());
        assert_eq!(walk(&body, &[], None), (expected.clone(), body.clone()));
        for cut in 0..=body.len() {
            assert_eq!(walk(&body, &[cut], None), (expected.clone(), body.clone()), "cut at {cut}");
        }
        let every_byte: Vec<usize> = (1..body.len()).collect();
        assert_eq!(walk(&body, &every_byte, None), (expected, body));
    }

    #[test]
    fn a_replaced_value_is_what_passes_and_the_rest_is_unchanged() {
        let body = form(&[("prompt", "call 555-0100")], 200, &[("prompt", "mail ana@example.com"), ("n", "2")]);
        let expected = form(&[("prompt", "[REDACTED]")], 200, &[("prompt", "[REDACTED]"), ("n", "2")]);
        for cut in 0..=body.len() {
            let (fields, passed) = walk(&body, &[cut, (cut + 7).min(body.len())], Some("[REDACTED]"));
            assert_eq!(passed, expected, "cut at {cut}");
            assert_eq!(fields.len(), 3);
            assert_eq!(fields[2], ("n".to_string(), "2".to_string()));
        }
    }

    #[test]
    fn a_file_is_never_held_and_a_field_is_held_whole() {
        let body = form(&[], 100_000, &[("prompt", "x")]);
        let mut walker = FormWalker::new("b0und");
        let file_start = memmem::find(&body, b"image/png\r\n\r\n").unwrap() + 13;
        assert_eq!(walker.next(&body[..file_start + 10]), Next::Release);
        walker.released();
        // A chunk of the file alone: let go at once.
        assert_eq!(walker.next(&body[file_start + 10..file_start + 60_000]), Next::Release);
        walker.released();
        // The field begins: held until it ends.
        let rest = &body[file_start + 60_000..];
        let field_at = memmem::find(rest, b"name=\"prompt\"").unwrap();
        assert_eq!(walker.next(&rest[..field_at + 20]), Next::NeedMore);
        assert!(walker.holding());
        let Next::Field { name, value } = walker.next(rest) else { panic!() };
        assert_eq!((name.as_str(), &rest[value]), ("prompt", &b"x"[..]));
        assert_eq!(walker.next(rest), Next::Done);
    }

    #[test]
    fn what_cannot_be_followed_is_said() {
        let long = "y".repeat(MAX_FIELD + 10);
        let body = form(&[("prompt", &long)], 10, &[]);
        let mut walker = FormWalker::new("b0und");
        let start = memmem::find(&body, b"\r\n\r\n").unwrap() + 4;
        assert_eq!(walker.next(&body[..start + MAX_FIELD]), Next::NeedMore);
        assert_eq!(walker.next(&body[..start + MAX_FIELD + 5]), Next::Unreadable("form_field_too_long"));
        let mut walker = FormWalker::new("other");
        assert_eq!(walker.next(&vec![b'a'; MAX_PART_HEAD + 1]), Next::Unreadable("form_preamble"));
        let mut head = b"--b0und\r\nContent-Disposition: form-data; name=\"x\"".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_PART_HEAD));
        assert_eq!(FormWalker::new("b0und").next(&head), Next::Unreadable("form_part_head"));
    }

    /// Feeds `body` cut at `cuts` with no expectation, as a hostile client might: never panics,
    /// never reports a value outside the buffer.
    fn walk_anything(body: &[u8], cuts: &[usize]) {
        let mut walker = FormWalker::new("b0und");
        let mut held: Vec<u8> = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
            let cut = cut.clamp(from, body.len());
            held.extend_from_slice(&body[from..cut]);
            from = cut;
            loop {
                match walker.next(&held) {
                    Next::Field { value, .. } => assert!(value.start <= value.end && value.end <= held.len()),
                    Next::Release => {
                        walker.released();
                        held.clear();
                        break;
                    }
                    Next::NeedMore | Next::Done | Next::Unreadable(_) => break,
                }
            }
        }
    }

    use proptest::prelude::*;

    /// Bytes rich in what a form is made of.
    fn formy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\r\n".to_vec()),
            Just(b"--".to_vec()),
            Just(b"--b0und".to_vec()),
            Just(b"\r\n--b0und".to_vec()),
            Just(b"\r\n\r\n".to_vec()),
            Just(b"Content-Disposition: form-data; name=\"prompt\"".to_vec()),
            Just(b"; filename=\"a\"".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any form (file bytes of any kind, fields of any text that is not a delimiter) cut
        /// anywhere gives the same fields and passes the same bytes.
        #[test]
        fn any_form_cut_anywhere_is_read_the_same(
            file in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'-'), Just(b'b'), any::<u8>()], 0..300),
            prompt in "[a-z \r\n-]{0,40}",
            cuts in proptest::collection::vec(0usize..600, 0..6),
        ) {
            prop_assume!(!prompt.contains("\r\n--b0und") && !prompt.ends_with('\r'));
            let mut body = form(&[("model", "m")], 0, &[("prompt", &prompt)]);
            let at = memmem::find(&body, b"image/png\r\n\r\n").unwrap() + 13;
            body.splice(at..at, file.iter().copied());
            prop_assume!(memmem::find(&body[at..], b"\r\n--b0und") == Some(file.len()));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
            cuts.sort_unstable();
            let expected = owned(&[("model", "m"), ("prompt", &prompt)]);
            prop_assert_eq!(walk(&body, &cuts, None), (expected, body));
        }

        #[test]
        fn any_bytes_cut_anywhere_never_panic(body in formy(), cuts in proptest::collection::vec(0usize..400, 0..8)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            walk_anything(&body, &cuts);
        }
    }

    #[test]
    fn a_preamble_and_a_part_without_a_name_are_passed_over() {
        let mut body = b"This is a preamble.\r\n".to_vec();
        body.extend_from_slice(b"--b0und\r\nContent-Type: text/plain\r\n\r\nno name\r\n");
        body.extend_from_slice(&form(&[("prompt", "hi")], 5, &[]));
        let (fields, passed) = walk(&body, &[3, 30], None);
        assert_eq!((fields, passed), (owned(&[("prompt", "hi")]), body));
    }
}
