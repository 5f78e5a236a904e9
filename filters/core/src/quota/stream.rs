//! A streamed answer's output, estimated from its text as it flows (sans-I/O), for cutting off a
//! stream whose consumer runs out mid-way (`stream_cut_off`).
//!
//! The stream is the one the client gets (after any translation), so the text is read where the
//! client's API puts it: OpenAI chat `choices[].delta.content` and `tool_calls`, completions
//! `choices[].text`, Responses `delta`, Anthropic `delta.text` / `partial_json` / `thinking`,
//! Gemini `candidates[].content.parts[].text`. Bytes are passed on unchanged: the meter only
//! says, after each complete event, how much output the stream has carried so far and where in
//! the current chunk that event ends (so a cut falls between two events).

use crate::estimate::Features;
use crate::json_scan;
use crate::route::ApiKind;
use crate::sse::{SseDecoder, DEFAULT_MAX_EVENT_BYTES};

const OPENAI_CHAT: &[&[&str]] =
    &[&["choices", "delta", "content"], &["choices", "delta", "tool_calls"], &["choices", "delta", "refusal"]];
const OPENAI_COMPLETIONS: &[&[&str]] = &[&["choices", "text"]];
const OPENAI_RESPONSES: &[&[&str]] = &[&["delta"]];
const ANTHROPIC: &[&[&str]] = &[&["delta", "text"], &["delta", "partial_json"], &["delta", "thinking"]];
// The parts array itself: the scanner follows four objects deep, and `text` is a fifth.
const GEMINI: &[&[&str]] = &[&["candidates", "content", "parts"]];

/// Which events can carry text, by their `event:` type; the others are not scanned. An event
/// without a type always is.
#[derive(Debug, Clone, Copy)]
enum TextEvents {
    Any,
    /// Anthropic: only `content_block_delta` (text, tool input, thinking).
    Named(&'static [u8]),
    /// OpenAI Responses: `response.output_text.delta`, `response.function_call_arguments.delta`, …
    Suffix(&'static [u8]),
}

impl TextEvents {
    fn may_carry_text(self, event: Option<&[u8]>) -> bool {
        match (self, event) {
            (TextEvents::Any, _) | (_, None) => true,
            (TextEvents::Named(name), Some(event)) => event == name,
            (TextEvents::Suffix(suffix), Some(event)) => event.ends_with(suffix),
        }
    }
}

pub struct OutputMeter {
    decoder: SseDecoder,
    targets: &'static [&'static [&'static str]],
    text_events: TextEvents,
    text: Features,
    /// Bytes pushed before the current chunk, bytes pushed in all, and bytes of the complete
    /// events read so far.
    before_chunk: u64,
    pushed: u64,
    consumed: u64,
}

/// After one complete event: the output so far, and the offset in the current chunk just after
/// the event — 0 when the event ended in an earlier chunk (one that ends in CR is only known to
/// be complete with the next byte), so a cut there falls at the start of this chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metered {
    pub output_tokens: u64,
    pub end_in_chunk: usize,
}

impl OutputMeter {
    /// A meter for an SSE stream of this API, if its text can be read.
    pub fn for_api(kind: ApiKind) -> Option<OutputMeter> {
        let (targets, text_events) = match kind {
            ApiKind::OpenAiChat => (OPENAI_CHAT, TextEvents::Any),
            ApiKind::OpenAiCompletions => (OPENAI_COMPLETIONS, TextEvents::Any),
            ApiKind::OpenAiResponses => (OPENAI_RESPONSES, TextEvents::Suffix(b".delta")),
            ApiKind::AnthropicMessages => (ANTHROPIC, TextEvents::Named(b"content_block_delta")),
            ApiKind::GeminiGenerate { .. } => (GEMINI, TextEvents::Any),
            ApiKind::OpenAiEmbeddings
            | ApiKind::BedrockConverse { .. }
            | ApiKind::OpenAiModels
            | ApiKind::OpenAiInputTokens
            | ApiKind::OpenAiCompact
            | ApiKind::AnthropicCountTokens
            | ApiKind::BedrockCountTokens
            | ApiKind::BedrockInvoke { .. }
            | ApiKind::AnthropicBatch
            | ApiKind::GeminiCountTokens
            | ApiKind::GeminiEmbed { .. }
            | ApiKind::OpenAiImages
            | ApiKind::VertexEmbedPredict
            | ApiKind::GooglePredict
            | ApiKind::GeminiCache
            | ApiKind::OpenAiConversation
            | ApiKind::OpenAiTranscription
            | ApiKind::OpenAiImageEdits
            | ApiKind::OpenAiSpeech
            | ApiKind::OpenAiDecisions
            | ApiKind::GeminiBatch => return None,
        };
        Some(OutputMeter {
            decoder: SseDecoder::new(DEFAULT_MAX_EVENT_BYTES),
            targets,
            text_events,
            text: Features::default(),
            before_chunk: 0,
            pushed: 0,
            consumed: 0,
        })
    }

    /// Takes the next chunk of the stream. `Err` when the stream cannot be read as SSE (an event
    /// larger than the decoder holds): the meter gives up.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), crate::sse::SseError> {
        self.before_chunk = self.pushed;
        self.pushed += chunk.len() as u64;
        self.decoder.push(chunk)
    }

    /// The next complete event of what was pushed, metered; `None` when no complete event is left.
    pub fn next_event(&mut self) -> Option<Metered> {
        let event = self.decoder.next_event()?;
        self.consumed += event.raw.len() as u64;
        let data = event.data.as_deref().filter(|_| self.text_events.may_carry_text(event.event));
        if let Some(data) = data {
            let data = data.trim_ascii();
            if data.first() == Some(&b'{') {
                // A malformed event carries no text we can count; it passes on as it is.
                if let Ok(captured) = json_scan::scan_document(self.targets, data) {
                    for value in captured {
                        self.add_value(&value.bytes);
                    }
                }
            }
        }
        // An event completed by this chunk can end before it (see `Metered`): 0 then.
        let end = self.consumed.saturating_sub(self.before_chunk);
        Some(Metered { output_tokens: self.output_tokens(), end_in_chunk: usize::try_from(end).unwrap_or(usize::MAX) })
    }

    /// A captured value's text: a string's content, or every string inside an array or object
    /// (tool calls, Gemini parts).
    fn add_value(&mut self, raw: &[u8]) {
        match raw.first() {
            Some(b'"') => {
                let text = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
                self.text.add_str(&String::from_utf8_lossy(text));
            }
            Some(b'[' | b'{') => {
                if let Ok(value) = serde_json::from_slice::<serde_json::Value>(raw) {
                    self.add_strings(&value);
                }
            }
            _ => {}
        }
    }

    fn add_strings(&mut self, value: &serde_json::Value) {
        match value {
            serde_json::Value::String(text) => self.text.add_str(text),
            serde_json::Value::Array(items) => items.iter().for_each(|v| self.add_strings(v)),
            serde_json::Value::Object(members) => members.values().for_each(|v| self.add_strings(v)),
            _ => {}
        }
    }

    /// Output tokens estimated from the text seen so far.
    pub fn output_tokens(&self) -> u64 {
        if self.text == Features::default() {
            0
        } else {
            self.text.estimate()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../../tests/fixtures/responses/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// Every event boundary, wherever the chunks split the stream: the offsets returned, taken
    /// in their chunks, rebuild the stream exactly, and the output ends where one push says.
    #[test]
    fn event_ends_fall_between_events_in_any_chunking() {
        for (path, kind) in [
            ("openai/chat-stream-20.sse", ApiKind::OpenAiChat),
            ("openai/chat-tools-stream.sse", ApiKind::OpenAiChat),
            ("anthropic/messages-stream.sse", ApiKind::AnthropicMessages),
        ] {
            let stream = fixture(path);
            let mut whole = OutputMeter::for_api(kind).unwrap();
            whole.push(&stream).unwrap();
            let mut ends = Vec::new();
            while let Some(m) = whole.next_event() {
                ends.push(m.end_in_chunk);
            }
            let total = whole.output_tokens();
            assert!(total > 0, "{path}: text counted");
            assert_eq!(ends.last().copied(), Some(stream.len()), "{path}");
            for split in [1, 2, 3, 7, 13, 64] {
                let mut meter = OutputMeter::for_api(kind).unwrap();
                let mut at = 0;
                let mut rebuilt_ends = Vec::new();
                for chunk in stream.chunks(split) {
                    meter.push(chunk).unwrap();
                    while let Some(m) = meter.next_event() {
                        assert!(m.end_in_chunk <= chunk.len() && m.end_in_chunk > 0, "{path} split {split}");
                        rebuilt_ends.push(at + m.end_in_chunk);
                    }
                    at += chunk.len();
                }
                assert_eq!(rebuilt_ends, ends, "{path} split {split}");
                assert_eq!(meter.output_tokens(), total, "{path} split {split}");
            }
        }
    }

    #[test]
    fn text_is_read_where_each_api_puts_it() {
        let cases: [(ApiKind, &[u8]); 5] = [
            (ApiKind::OpenAiChat, br#"data: {"choices":[{"index":0,"delta":{"content":"Hello there, friend"}}]}"#),
            (ApiKind::OpenAiCompletions, br#"data: {"choices":[{"text":"Hello there, friend"}]}"#),
            (ApiKind::OpenAiResponses, br#"data: {"type":"response.output_text.delta","delta":"Hello there, friend"}"#),
            (
                ApiKind::AnthropicMessages,
                b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello there, friend\"}}",
            ),
            (
                ApiKind::GeminiGenerate { stream: true },
                br#"data: {"candidates":[{"content":{"parts":[{"text":"Hello there, friend"}],"role":"model"}}]}"#,
            ),
        ];
        let expected = crate::estimate::estimate_tokens("Hello there, friend");
        for (kind, event) in cases {
            let mut meter = OutputMeter::for_api(kind).unwrap();
            meter.push(event).unwrap();
            meter.push(b"\n\n").unwrap();
            let m = meter.next_event().unwrap();
            assert_eq!((m.output_tokens, m.end_in_chunk), (expected, 2), "{kind:?}");
        }
        assert!(OutputMeter::for_api(ApiKind::OpenAiEmbeddings).is_none());
    }

    /// An event that ends in CR is only known to be complete with the next byte: its end lies
    /// before the chunk that completed it (found by the fuzzer).
    #[test]
    fn an_event_ending_in_cr_ends_before_the_next_chunk() {
        let mut meter = OutputMeter::for_api(ApiKind::OpenAiChat).unwrap();
        meter.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi there\"}}]}\r\r").unwrap();
        assert_eq!(meter.next_event(), None, "a CR may be the first half of CRLF");
        meter.push(b"data: [DONE]\r\n\r\n").unwrap();
        let first = meter.next_event().unwrap();
        assert_eq!(first.end_in_chunk, 0);
        assert!(first.output_tokens > 0);
        assert_eq!(meter.next_event().map(|m| m.end_in_chunk), Some(16));
    }

    /// Events whose type cannot carry text are not scanned, and the output of every Anthropic
    /// and Responses stream fixture is what scanning every event gives.
    #[test]
    fn only_events_that_can_carry_text_are_scanned() {
        let mut meter = OutputMeter::for_api(ApiKind::AnthropicMessages).unwrap();
        meter.push(b"event: message_delta\ndata: {\"delta\":{\"text\":\"not text\"}}\n\n").unwrap();
        meter.push(b"data: {\"delta\":{\"text\":\"untyped\"}}\n\n").unwrap();
        assert_eq!(meter.next_event().map(|m| m.output_tokens), Some(0));
        assert!(meter.next_event().is_some_and(|m| m.output_tokens > 0), "an event without a type is read");
        for (path, kind) in [
            ("anthropic/messages-stream.sse", ApiKind::AnthropicMessages),
            ("anthropic/messages-tool-stream.sse", ApiKind::AnthropicMessages),
            ("anthropic/messages-cache-stream.sse", ApiKind::AnthropicMessages),
            ("anthropic/messages-pii-stream.sse", ApiKind::AnthropicMessages),
            ("openai/responses-stream.sse", ApiKind::OpenAiResponses),
        ] {
            let stream = fixture(path);
            let outputs = |text_events: Option<TextEvents>| {
                let mut meter = OutputMeter::for_api(kind).unwrap();
                if let Some(every) = text_events {
                    meter.text_events = every;
                }
                meter.push(&stream).unwrap();
                std::iter::from_fn(|| meter.next_event()).map(|m| m.output_tokens).collect::<Vec<_>>()
            };
            let filtered = outputs(None);
            assert!(filtered.last().is_some_and(|t| *t > 0), "{path}");
            assert_eq!(filtered, outputs(Some(TextEvents::Any)), "{path}");
        }
    }

    #[test]
    fn events_without_text_count_nothing() {
        let mut meter = OutputMeter::for_api(ApiKind::OpenAiChat).unwrap();
        meter.push(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n: keep-alive\n\ndata: [DONE]\n\ndata: {bad\n\n").unwrap();
        let mut events = 0;
        while let Some(m) = meter.next_event() {
            assert_eq!(m.output_tokens, 0);
            events += 1;
        }
        assert_eq!(events, 4);
    }
}
