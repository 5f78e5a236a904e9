//! Translations between provider APIs: `convert::<backend>` turns a client's request into the
//! backend's and the backend's answers (JSON, streams, errors) back into the client's dialect.
//! Pure functions and sans-I/O stream translators; the provider-rewrite stage drives them.

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod openai;

use crate::error::Error;

/// A sans-I/O stream translator: bytes of the backend's stream in, the client's stream out.
pub trait StreamTranslate {
    /// The clock, read with the first bytes (for `created` fields).
    fn set_created(&mut self, _secs: u64) {}
    /// Translates what `bytes` completes; an error ends the stream with one error event.
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Error>;
    /// The backend's stream ended: close it, or end it with an error event if it was cut.
    fn finish(&mut self, out: &mut Vec<u8>);
}

impl StreamTranslate for anthropic::StreamToOpenAi {
    fn set_created(&mut self, secs: u64) {
        anthropic::StreamToOpenAi::set_created(self, secs);
    }
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        anthropic::StreamToOpenAi::push(self, bytes, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        anthropic::StreamToOpenAi::finish(self, out);
    }
}

impl StreamTranslate for openai::StreamToAnthropic {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        openai::StreamToAnthropic::push(self, bytes, out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        openai::StreamToAnthropic::finish(self, out);
    }
}

/// Two translators in a row, through a pivot format (Gemini → OpenAI chat → Anthropic, say).
pub struct Chain<A, B> {
    first: A,
    second: B,
    middle: Vec<u8>,
}

impl<A: StreamTranslate, B: StreamTranslate> Chain<A, B> {
    pub fn new(first: A, second: B) -> Self {
        Chain { first, second, middle: Vec::new() }
    }
}

impl<A: StreamTranslate, B: StreamTranslate> StreamTranslate for Chain<A, B> {
    fn set_created(&mut self, secs: u64) {
        self.first.set_created(secs);
        self.second.set_created(secs);
    }

    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.middle.clear();
        // A failing first stage writes its error event into the pivot: the second renders it.
        let first = self.first.push(bytes, &mut self.middle);
        let second = self.second.push(&self.middle, out);
        first.and(second)
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.middle.clear();
        self.first.finish(&mut self.middle);
        let _ = self.second.push(&self.middle, out);
        self.second.finish(out);
    }
}
