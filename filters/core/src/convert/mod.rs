//! Translations between provider APIs: `convert::<backend>` turns a client's request into the
//! backend's and the backend's answers (JSON, streams, errors) back into the client's dialect.
//! Pure functions and sans-I/O stream translators; the provider-rewrite stage drives them.

pub mod anthropic;
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
