//! A streamed JSON array cut into its elements as the bytes come: what Gemini sends for
//! `streamGenerateContent` without `alt=sse` (`[{…}\r\n,\r\n{…}\r\n]`, one
//! `GenerateContentResponse` per element, each written as it is generated).
//!
//! Sans-I/O: [`ArraySplitter::push`] bytes, then take [`Piece`]s until `None`. The bytes between
//! elements (the brackets, commas and whitespace) come as [`Piece::Between`], each element whole
//! as [`Piece::Element`]; together they are the input, byte for byte. Only objects are elements
//! (anything else at the array's top level is an error), and one is held at most
//! `max_element` bytes.

use std::fmt;

/// A part of the array.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Brackets, commas, whitespace.
    Between(Vec<u8>),
    /// One element (an object), whole.
    Element(Vec<u8>),
}

/// The stream is not a JSON array of objects, or an element is over the bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayError(pub &'static str);

impl fmt::Display for ArrayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    /// Before the opening bracket.
    Before,
    /// Between elements.
    Inside,
    /// In an element: its nesting depth, and whether in a string (after a backslash).
    Element { depth: u32, string: bool, escaped: bool },
    /// After the closing bracket.
    After,
}

/// Cuts a streamed JSON array into elements. See the module documentation.
#[derive(Debug)]
pub struct ArraySplitter {
    buffer: Vec<u8>,
    /// How much of `buffer` is scanned.
    scanned: usize,
    at: Where,
    max_element: usize,
}

impl ArraySplitter {
    pub fn new(max_element: usize) -> ArraySplitter {
        ArraySplitter { buffer: Vec::new(), scanned: 0, at: Where::Before, max_element }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Whether the closing bracket was read.
    pub fn closed(&self) -> bool {
        self.at == Where::After
    }

    /// The next whole piece, if the bytes pushed complete one.
    pub fn next_piece(&mut self) -> Result<Option<Piece>, ArrayError> {
        while let Some(&byte) = self.buffer.get(self.scanned) {
            match &mut self.at {
                Where::Element { depth, string, escaped } => {
                    if *string {
                        match (byte, *escaped) {
                            (_, true) => *escaped = false,
                            (b'\\', false) => *escaped = true,
                            (b'"', false) => *string = false,
                            _ => {}
                        }
                    } else {
                        match byte {
                            b'"' => *string = true,
                            b'{' | b'[' => *depth += 1,
                            b'}' | b']' => {
                                *depth -= 1;
                                if *depth == 0 {
                                    self.at = Where::Inside;
                                    return Ok(Some(Piece::Element(self.take(self.scanned + 1))));
                                }
                            }
                            _ => {}
                        }
                    }
                    if self.scanned >= self.max_element {
                        return Err(ArrayError("an element of the streamed array is over the size limit"));
                    }
                }
                Where::Before | Where::Inside | Where::After if byte.is_ascii_whitespace() => {}
                Where::Before if byte == b'[' => self.at = Where::Inside,
                Where::Inside if byte == b',' => {}
                Where::Inside if byte == b']' => self.at = Where::After,
                Where::Inside if byte == b'{' => {
                    if self.scanned > 0 {
                        // What came before the element goes first.
                        return Ok(Some(Piece::Between(self.take(self.scanned))));
                    }
                    self.at = Where::Element { depth: 1, string: false, escaped: false };
                }
                _ => return Err(ArrayError("the stream is not a JSON array of objects")),
            }
            self.scanned += 1;
        }
        let between = !matches!(self.at, Where::Element { .. }) && self.scanned > 0;
        Ok(between.then(|| Piece::Between(self.take(self.scanned))))
    }

    /// The input ended: an element cut short is an error.
    pub fn finish(&self) -> Result<(), ArrayError> {
        match self.at {
            Where::Element { .. } => Err(ArrayError("the streamed array ended inside an element")),
            _ => Ok(()),
        }
    }

    fn take(&mut self, end: usize) -> Vec<u8> {
        let rest = self.buffer.split_off(end.min(self.buffer.len()));
        self.scanned = 0;
        std::mem::replace(&mut self.buffer, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(input: &[u8], cuts: &[usize]) -> Result<Vec<Piece>, ArrayError> {
        let mut splitter = ArraySplitter::new(1 << 20);
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            splitter.push(&input[from..cut]);
            from = cut;
            while let Some(piece) = splitter.next_piece()? {
                out.push(piece);
            }
        }
        splitter.finish()?;
        Ok(out)
    }

    /// Adjacent `Between`s merged: where a piece boundary falls among them depends on the cut.
    fn merged(pieces: Vec<Piece>) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::new();
        for piece in pieces {
            match (out.last_mut(), piece) {
                (Some(Piece::Between(a)), Piece::Between(b)) => a.extend(b),
                (_, piece) => out.push(piece),
            }
        }
        out
    }

    #[test]
    fn elements_and_what_is_between_them_come_apart_at_every_split() {
        let input = b"[{\"a\":\"x}],{\\\"\",\"b\":[1,{\"c\":2}]}\r\n,\r\n{\"d\":\"\\\\\"}\r\n]\n";
        let expected = vec![
            Piece::Between(b"[".to_vec()),
            Piece::Element(b"{\"a\":\"x}],{\\\"\",\"b\":[1,{\"c\":2}]}".to_vec()),
            Piece::Between(b"\r\n,\r\n".to_vec()),
            Piece::Element(b"{\"d\":\"\\\\\"}".to_vec()),
            Piece::Between(b"\r\n]\n".to_vec()),
        ];
        assert_eq!(merged(pieces(input, &[]).unwrap()), expected);
        for cut in 0..=input.len() {
            assert_eq!(merged(pieces(input, &[cut]).unwrap()), expected, "cut at {cut}");
        }
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(merged(pieces(input, &every).unwrap()), expected);
    }

    #[test]
    fn what_is_not_an_array_of_objects_is_an_error() {
        for input in [&b"{\"a\":1}"[..], b"[1,2]", b"[{}] x", b"data: {}"] {
            assert!(pieces(input, &[]).is_err(), "{}", String::from_utf8_lossy(input));
        }
        assert_eq!(pieces(b"[{\"a\":", &[]), Err(ArrayError("the streamed array ended inside an element")));
        let mut small = ArraySplitter::new(8);
        small.push(b"[{\"a\":\"0123456789\"}]");
        assert!(small.next_piece().is_ok_and(|p| p == Some(Piece::Between(b"[".to_vec()))));
        assert!(small.next_piece().is_err());
    }
}
