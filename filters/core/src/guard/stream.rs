//! Guarding a streamed answer as it flows (sans-I/O: SSE bytes in, SSE bytes out).
//!
//! Each text channel of the stream (an OpenAI choice's `delta.content`, its tool call's
//! `arguments`, a completions choice's `text`; an Anthropic content block's `text_delta`,
//! `input_json_delta` or `thinking_delta`) keeps a window: new text is appended, the window is
//! scanned whole, and only what lies before the last `holdback` characters, and before any
//! finding or restorable placeholder that reaches into them, is released. So a match of up to
//! `holdback` characters split across any chunk boundary is seen whole, and the client still gets
//! a live stream (each event carries the text released so far; the held tail comes out in the
//! next events, or at the end of the channel: a choice's `finish_reason`, a block's
//! `content_block_stop`, `[DONE]`, `message_stop`, the end of the body).
//!
//! Released text is masked (mask/redact/hash findings) and then has the request's placeholders
//! restored (if configured). A `block` finding ends the stream with one error event in the
//! client's dialect; everything after it is dropped. Events without text pass byte-exact.
//!
//! Gemini streams (`alt=sse`) too: a candidate's text and thoughts are its channels (see
//! [`gemini`]). Responses-API streams (`response.output_text.delta`, …) are guarded the same way, with two
//! differences their grammar asks for (see [`responses`]): each channel's latest delta event is
//! held until the next (so the tail released at the channel's end rides on an event the provider
//! sent, and the client gets the same events with the same `sequence_number`s), and the events
//! that repeat the whole text (`….done`, `response.completed`) carry the text as released.
//!
//! Memory per stream: the SSE decoder's pending event plus, per channel, `holdback` characters
//! and the current chunk's text (for a Responses stream also the channel's released text, which
//! its closing events repeat, and its latest delta event).

use super::policy::{Action, Finding, Masker, Policy};
use crate::error::{Dialect, Error};
use crate::eventstream::{EventStreamDecoder, DEFAULT_MAX_MESSAGE_BYTES};
use crate::json_array::{ArraySplitter, Piece};
use crate::sse::{Event, SseDecoder};
use serde_json::{json, Value};

mod bedrock;
mod gemini;
mod responses;

/// What a guarded answer produced, for metrics: (rule, entity, action) per finding released.
pub type Tally = Vec<(String, String, Action)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// OpenAI `delta.content`, Anthropic `text_delta`.
    Text,
    /// OpenAI completions `text`.
    CompletionText,
    /// OpenAI `tool_calls[i].function.arguments`.
    ToolArguments(u64),
    /// Anthropic `input_json_delta`.
    PartialJson,
    /// Anthropic `thinking_delta`.
    Thinking,
    /// Responses: the `output_text` part at this content index of a message item.
    OutputText(u64),
    /// Responses: the `refusal` part at this content index of a message item.
    Refusal(u64),
    /// Responses: a tool call item's `arguments` (or a custom tool call's `input`).
    Arguments,
    /// Responses: a reasoning item's summary part at this index.
    Summary(u64),
    /// Responses: a reasoning item's `reasoning_text` part at this content index.
    Reasoning(u64),
}

struct Channel {
    /// Choice (OpenAI) or content block (Anthropic) index; a Responses output item's index.
    index: u64,
    field: Field,
    window: String,
    /// Responses only: see [`responses::Lane`].
    lane: Option<Box<responses::Lane>>,
}

/// The grammar of the guarded stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// OpenAI chat completions and legacy completions chunks (`choices[]`), ended by `[DONE]`.
    Chunks,
    /// Anthropic Messages events.
    Anthropic,
    /// OpenAI Responses events (`type`, `sequence_number`).
    Responses,
    /// Gemini and Vertex AI `GenerateContentResponse` events (`alt=sse`, or the elements of a
    /// streamed JSON array without it).
    Gemini,
    /// Bedrock ConverseStream: AWS event-stream frames.
    Bedrock,
    /// Bedrock InvokeModel: Claude's Anthropic events, or Llama's, Titan's or Mistral's text,
    /// base64 in `chunk` frames.
    BedrockInvoke,
}

/// The most bytes of one element of a streamed JSON array held to read it (an SSE event's bound).
const MAX_ARRAY_ELEMENT: usize = crate::sse::DEFAULT_MAX_EVENT_BYTES;

/// Why the stream was ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub rule: String,
    pub entity: String,
}

/// What guarding a piece of a stream works with: the policy, the request's masker, the findings
/// so far, and the bytes that go to the client.
struct Ctx<'a> {
    policy: &'a Policy,
    masker: &'a mut Masker,
    tally: &'a mut Tally,
    out: &'a mut Vec<u8>,
}

pub struct StreamGuard {
    decoder: SseDecoder,
    /// Bedrock's frames, read instead of SSE.
    frames: Option<EventStreamDecoder>,
    /// Gemini without `alt=sse`: a streamed JSON array, read instead of SSE.
    array: Option<ArraySplitter>,
    state: State,
}

/// What of a streamed JSON array went to the client.
#[derive(Debug, Clone, Copy, Default)]
struct ArrayOut {
    opened: bool,
    elements: u64,
}

struct State {
    dialect: Dialect,
    format: Format,
    /// Responses: the last `sequence_number` seen, for an error event that ends the stream.
    sequence: u64,
    /// InvokeModel of a family with one text field: where it is (see `bedrock::FAMILY_TEXT`).
    family: Option<&'static str>,
    holdback: usize,
    channels: Vec<Channel>,
    /// The stream's first OpenAI chunk, for synthetic flush chunks (id, model, created):
    /// kept as bytes, parsed only if a flush needs it.
    template: Option<Vec<u8>>,
    /// The stream is a JSON array (Gemini without `alt=sse`): what of it was written.
    array: Option<ArrayOut>,
    ended: bool,
}

impl StreamGuard {
    /// A chat completions or legacy completions stream (OpenAI dialect), or Anthropic's Messages.
    pub fn new(dialect: Dialect, holdback_chars: usize) -> StreamGuard {
        let format = match dialect {
            Dialect::OpenAi | Dialect::Google | Dialect::Aws => Format::Chunks,
            Dialect::Anthropic => Format::Anthropic,
        };
        StreamGuard::with_format(dialect, format, holdback_chars)
    }

    /// An OpenAI Responses-API stream.
    pub fn responses(holdback_chars: usize) -> StreamGuard {
        StreamGuard::with_format(Dialect::OpenAi, Format::Responses, holdback_chars)
    }

    /// A Gemini or Vertex AI `streamGenerateContent?alt=sse` stream.
    pub fn gemini(holdback_chars: usize) -> StreamGuard {
        StreamGuard::with_format(Dialect::Google, Format::Gemini, holdback_chars)
    }

    /// A Gemini or Vertex AI `streamGenerateContent` stream without `alt=sse`: a JSON array
    /// whose elements come as they are generated.
    pub fn gemini_array(holdback_chars: usize) -> StreamGuard {
        let mut guard = StreamGuard::with_format(Dialect::Google, Format::Gemini, holdback_chars);
        guard.array = Some(ArraySplitter::new(MAX_ARRAY_ELEMENT));
        guard.state.array = Some(ArrayOut::default());
        guard
    }

    /// A Bedrock `converse-stream` answer (AWS event-stream).
    pub fn bedrock(holdback_chars: usize) -> StreamGuard {
        StreamGuard::with_format(Dialect::Aws, Format::Bedrock, holdback_chars)
    }

    /// A Bedrock `invoke-with-response-stream` answer (base64 inside AWS event-stream `chunk`
    /// frames) of a Claude model (Anthropic's events) or of Llama, Titan or Mistral (one text field).
    pub fn bedrock_invoke(holdback_chars: usize) -> StreamGuard {
        StreamGuard::with_format(Dialect::Aws, Format::BedrockInvoke, holdback_chars)
    }

    /// How many stream grammars there are: [`StreamGuard::of_grammar`] numbers them.
    pub const GRAMMARS: u8 = 7;

    /// The guard of grammar `n % GRAMMARS` (chat chunks, Anthropic's, Gemini's, ConverseStream's,
    /// InvokeModel's, Responses', Gemini's JSON array): for tests and fuzzing.
    pub fn of_grammar(n: u8, holdback_chars: usize) -> StreamGuard {
        match n % StreamGuard::GRAMMARS {
            0 => StreamGuard::new(Dialect::OpenAi, holdback_chars),
            1 => StreamGuard::new(Dialect::Anthropic, holdback_chars),
            2 => StreamGuard::gemini(holdback_chars),
            3 => StreamGuard::bedrock(holdback_chars),
            4 => StreamGuard::bedrock_invoke(holdback_chars),
            5 => StreamGuard::responses(holdback_chars),
            _ => StreamGuard::gemini_array(holdback_chars),
        }
    }

    fn with_format(dialect: Dialect, format: Format, holdback: usize) -> StreamGuard {
        StreamGuard {
            decoder: SseDecoder::default(),
            frames: matches!(format, Format::Bedrock | Format::BedrockInvoke)
                .then(|| EventStreamDecoder::new(DEFAULT_MAX_MESSAGE_BYTES)),
            array: None,
            state: State {
                dialect,
                format,
                sequence: 0,
                family: None,
                holdback,
                channels: Vec::new(),
                template: None,
                array: None,
                ended: false,
            },
        }
    }

    pub fn ended(&self) -> bool {
        self.state.ended
    }

    /// Guards what `bytes` completes. `Err` when a block (or an unreadable stream) ended the
    /// stream; the error event is already in `out`.
    pub fn push(
        &mut self,
        bytes: &[u8],
        policy: &Policy,
        masker: &mut Masker,
        tally: &mut Tally,
        out: &mut Vec<u8>,
    ) -> Result<(), Blocked> {
        if self.state.ended {
            return Ok(());
        }
        let cx = &mut Ctx { policy, masker, tally, out };
        if let Some(frames) = &mut self.frames {
            if frames.push(bytes).is_err() {
                return Err(self.state.unreadable(cx.out));
            }
            while let Some(message) = frames.next_message() {
                match message {
                    Ok(message) => self.state.frame(&message, cx)?,
                    Err(_) => return Err(self.state.unreadable(cx.out)),
                }
            }
            return Ok(());
        }
        if let Some(array) = &mut self.array {
            array.push(bytes);
            loop {
                match array.next_piece() {
                    Ok(Some(Piece::Element(element))) => self.state.element(&element, cx)?,
                    Ok(Some(Piece::Between(between))) => self.state.between(&between, cx)?,
                    Ok(None) => return Ok(()),
                    Err(_) => return Err(self.state.unreadable(cx.out)),
                }
            }
        }
        if self.decoder.push(bytes).is_err() {
            return Err(self.state.unreadable(cx.out));
        }
        while let Some(event) = self.decoder.next_event() {
            self.state.event(&event, cx)?;
        }
        Ok(())
    }

    /// The body ended: whatever is held goes out.
    pub fn finish(
        &mut self,
        policy: &Policy,
        masker: &mut Masker,
        tally: &mut Tally,
        out: &mut Vec<u8>,
    ) -> Result<(), Blocked> {
        if self.state.ended {
            return Ok(());
        }
        let cx = &mut Ctx { policy, masker, tally, out };
        if self.frames.is_some() {
            // A frame cut short is not sent: it could not be read, let alone checked.
            return self.state.flush(None, cx);
        }
        if let Some(array) = &self.array {
            if array.finish().is_err() {
                return Err(self.state.unreadable(cx.out));
            }
            if !array.closed() {
                // Cut short between elements: the tails go out as elements of their own.
                self.state.flush(None, cx)?;
            }
            return Ok(());
        }
        let (last, rest) = self.decoder.finish();
        let rest = rest.to_vec();
        if let Some(event) = last {
            let event = Event {
                raw: event.raw,
                event: event.event,
                data: event.data.clone(),
                id: event.id,
                retry: event.retry,
            };
            self.state.event(&event, cx)?;
        }
        if self.state.format == Format::Responses {
            self.state.close_all(cx)?;
        } else {
            self.state.flush(None, cx)?;
        }
        cx.out.extend_from_slice(&rest);
        Ok(())
    }
}

impl State {
    /// A stream we cannot read is a stream we cannot check: it ends here, with the provider
    /// (not a guardrail) named as the cause.
    fn unreadable(&mut self, out: &mut Vec<u8>) -> Blocked {
        self.ended = true;
        let detail = "the provider's stream could not be read, so the rest of the answer was withheld unchecked";
        self.error_event(&Error::UpstreamInvalid { detail: detail.into() }, out);
        Blocked { rule: "response_unreadable".to_string(), entity: "SSE".to_string() }
    }

    fn end(&mut self, out: &mut Vec<u8>, rule: &str, entity: &str) -> Blocked {
        self.ended = true;
        let error = Error::Blocked { rule: rule.to_string(), entity: Some(entity.to_string()) };
        self.error_event(&error, out);
        Blocked { rule: rule.to_string(), entity: entity.to_string() }
    }

    /// The one event that ends the stream early, in its grammar.
    fn error_event(&self, error: &Error, out: &mut Vec<u8>) {
        if let Some(array) = self.array {
            // The error object as the array's last element, and the array closed.
            out.extend_from_slice(match (array.opened, array.elements) {
                (false, _) => b"[",
                (true, 0) => b"",
                (true, _) => b",\r\n",
            });
            out.extend_from_slice(&error.body(Dialect::Google));
            out.extend_from_slice(b"]");
            return;
        }
        match self.format {
            Format::Responses => out.extend_from_slice(&error.responses_sse_event(self.sequence + 1)),
            Format::Gemini => out.extend_from_slice(&error.sse_event(Dialect::Google)),
            Format::Bedrock | Format::BedrockInvoke => out.extend_from_slice(&error.sse_event(Dialect::Aws)),
            Format::Chunks | Format::Anthropic => out.extend_from_slice(&error.sse_event(self.dialect)),
        }
    }

    fn event(&mut self, event: &Event<'_>, cx: &mut Ctx<'_>) -> Result<(), Blocked> {
        let Some(data) = event.data.as_deref() else {
            cx.out.extend_from_slice(event.raw);
            return Ok(());
        };
        if data.trim_ascii() == b"[DONE]" {
            self.flush(None, cx)?;
            cx.out.extend_from_slice(event.raw);
            return Ok(());
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(data) else {
            // Text we cannot read is text we cannot check.
            return Err(self.unreadable(cx.out));
        };
        let touched = match self.format {
            Format::Chunks => self.openai(data, &mut value, cx)?,
            Format::Anthropic => self.anthropic(&mut value, cx)?,
            Format::Responses => return self.responses(event, value, cx),
            Format::Gemini => self.gemini(data, &mut value, cx)?,
            // Bedrock's frames never reach the SSE path.
            Format::Bedrock | Format::BedrockInvoke => false,
        };
        if touched {
            write_event(cx.out, event, &value);
        } else {
            cx.out.extend_from_slice(event.raw);
        }
        Ok(())
    }

    fn openai(&mut self, data: &[u8], value: &mut Value, cx: &mut Ctx<'_>) -> Result<bool, Blocked> {
        let mut touched = false;
        let mut finishing = Vec::new();
        if let Some(Value::Array(choices)) = value.get("choices") {
            for choice in choices {
                if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                    finishing.push(choice.get("index").and_then(Value::as_u64).unwrap_or(0));
                }
            }
        }
        // Channels of a finishing choice that this chunk does not carry are flushed first, in
        // a chunk of their own (their text precedes this one's).
        for index in &finishing {
            self.flush_absent(*index, value, cx)?;
        }
        if self.template.is_none() && value.get("choices").is_some() {
            self.template = Some(data.to_vec());
        }
        if let Some(Value::Array(choices)) = value.get_mut("choices") {
            for choice in choices.iter_mut() {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
                let last = finishing.contains(&index);
                if let Some(Value::String(text)) = choice.get_mut("text") {
                    *text = self.feed(index, Field::CompletionText, text, last, cx)?;
                    touched = true;
                }
                let Some(delta) = choice.get_mut("delta") else { continue };
                if let Some(Value::String(text)) = delta.get_mut("content") {
                    *text = self.feed(index, Field::Text, text, last, cx)?;
                    touched = true;
                }
                if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                    for call in calls {
                        let at = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some(Value::String(args)) = call.pointer_mut("/function/arguments") {
                            *args = self.feed(index, Field::ToolArguments(at), args, last, cx)?;
                            touched = true;
                        }
                    }
                }
            }
        }
        Ok(touched)
    }

    /// Flushes the channels of choice `index` that `chunk` has no text for.
    fn flush_absent(&mut self, index: u64, chunk: &Value, cx: &mut Ctx<'_>) -> Result<(), Blocked> {
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == index));
        let carries = |field: Field| -> bool {
            let Some(choice) = choice else { return false };
            match field {
                Field::Text => choice.pointer("/delta/content").is_some_and(Value::is_string),
                Field::CompletionText => choice.get("text").is_some_and(Value::is_string),
                Field::ToolArguments(at) => {
                    choice.pointer("/delta/tool_calls").and_then(Value::as_array).is_some_and(|calls| {
                        calls.iter().any(|c| {
                            c.get("index").and_then(Value::as_u64) == Some(at)
                                && c.pointer("/function/arguments").is_some()
                        })
                    })
                }
                _ => false,
            }
        };
        let fields: Vec<Field> =
            self.channels.iter().filter(|c| c.index == index && !carries(c.field)).map(|c| c.field).collect();
        for field in fields {
            let text = self.feed(index, field, "", true, cx)?;
            self.synthetic(index, field, &text, chunk, cx.out);
        }
        Ok(())
    }

    /// Everything held (of block/choice `only`, or of all) goes out in synthetic events.
    fn flush(&mut self, only: Option<u64>, cx: &mut Ctx<'_>) -> Result<(), Blocked> {
        let keys: Vec<(u64, Field)> = self
            .channels
            .iter()
            .filter(|c| only.is_none_or(|i| c.index == i) && !c.window.is_empty())
            .map(|c| (c.index, c.field))
            .collect();
        for (index, field) in keys {
            let text = self.feed(index, field, "", true, cx)?;
            let template = self
                .template
                .as_deref()
                .and_then(|raw| serde_json::from_slice::<Value>(raw).ok())
                .unwrap_or_else(|| json!({}));
            self.synthetic(index, field, &text, &template, cx.out);
        }
        Ok(())
    }

    fn synthetic(&mut self, index: u64, field: Field, text: &str, template: &Value, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        let (event, value) = match (self.format, field) {
            (Format::Bedrock, field) => return self.bedrock_synthetic(index, field, text, out),
            (Format::Gemini, field) => {
                let value = self.gemini_synthetic(index, field, text);
                if let Some(array) = self.array {
                    if array.elements > 0 {
                        out.extend_from_slice(b",\r\n");
                    }
                    return self.write_element(&value.to_string().into_bytes(), out);
                }
                (None, value)
            }
            (Format::Anthropic | Format::BedrockInvoke, field) => {
                let delta = match field {
                    Field::PartialJson => json!({"type": "input_json_delta", "partial_json": text}),
                    Field::Thinking => json!({"type": "thinking_delta", "thinking": text}),
                    _ => json!({"type": "text_delta", "text": text}),
                };
                (Some("content_block_delta"), json!({"type": "content_block_delta", "index": index, "delta": delta}))
            }
            (Format::Chunks | Format::Responses, field) => {
                let mut chunk = template.clone();
                let choice = match field {
                    Field::CompletionText => json!({"index": index, "text": text, "finish_reason": null}),
                    Field::ToolArguments(at) => {
                        json!({"index": index, "delta": {"tool_calls": [{"index": at, "function": {"arguments": text}}]}, "finish_reason": null})
                    }
                    _ => json!({"index": index, "delta": {"content": text}, "finish_reason": null}),
                };
                if let Some(object) = chunk.as_object_mut() {
                    object.insert("choices".into(), json!([choice]));
                    object.remove("usage");
                }
                (None, chunk)
            }
        };
        if self.format == Format::BedrockInvoke {
            let value = match self.family {
                Some(bedrock::NOVA) => json!({"contentBlockDelta": bedrock::converse_delta(index, field, text)}),
                Some(pointer) => bedrock::family_chunk(pointer, text),
                None => value,
            };
            return bedrock::invoke_chunk(&value, out);
        }
        if let Some(event) = event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.push(b'\n');
        }
        crate::convert::sse_data(out, &value);
    }

    fn anthropic(&mut self, value: &mut Value, cx: &mut Ctx<'_>) -> Result<bool, Blocked> {
        let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
        match value.get("type").and_then(Value::as_str) {
            Some("content_block_delta") => {
                let Some(delta) = value.get_mut("delta") else { return Ok(false) };
                let (field, key) = match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => (Field::Text, "text"),
                    Some("input_json_delta") => (Field::PartialJson, "partial_json"),
                    Some("thinking_delta") => (Field::Thinking, "thinking"),
                    _ => return Ok(false),
                };
                if let Some(Value::String(text)) = delta.get_mut(key) {
                    *text = self.feed(index, field, text, false, cx)?;
                    return Ok(true);
                }
                Ok(false)
            }
            Some("content_block_stop") => {
                self.flush(Some(index), cx)?;
                Ok(false)
            }
            Some("message_delta" | "message_stop") => {
                self.flush(None, cx)?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Appends `text` to the channel and returns what may be released now (masked, restored).
    fn feed(&mut self, index: u64, field: Field, text: &str, last: bool, cx: &mut Ctx<'_>) -> Result<String, Blocked> {
        let position = match self.channels.iter().position(|c| c.index == index && c.field == field) {
            Some(p) => p,
            None => {
                let lane = (self.format == Format::Responses).then(Box::default);
                self.channels.push(Channel { index, field, window: String::new(), lane });
                self.channels.len() - 1
            }
        };
        let holdback = self.holdback;
        let Some(channel) = self.channels.get_mut(position) else { return Ok(text.to_string()) };
        channel.window.push_str(text);
        let window = &channel.window;
        let mut findings: Vec<Finding<'_>> = Vec::new();
        cx.policy.scan(window, &mut findings);
        let mut cut = if last {
            window.len()
        } else {
            window.char_indices().rev().nth(holdback.saturating_sub(1)).map_or(0, |(at, _)| at)
        };
        for f in &findings {
            if f.start < cut && f.end > cut {
                cut = cut.min(f.start);
            }
        }
        if cx.policy.response.restore {
            cut = cx.masker.safe_cut(window, cut);
        }
        let released: Vec<Finding<'_>> = findings.into_iter().filter(|f| f.end <= cut).collect();
        if let Some(block) =
            released.iter().find(|f| f.action == Action::Block && cx.policy.mode == super::policy::Mode::Enforce)
        {
            let (rule, entity) = (block.rule.to_string(), block.entity.to_string());
            cx.tally.extend(released.iter().map(|f| (f.rule.to_string(), f.entity.to_string(), f.action)));
            return Err(self.end(cx.out, &rule, &entity));
        }
        cx.tally.extend(released.iter().map(|f| (f.rule.to_string(), f.entity.to_string(), f.action)));
        let head = window.get(..cut).unwrap_or_default();
        let masked =
            if cx.policy.mode == super::policy::Mode::Enforce { cx.masker.apply(head, &released) } else { None };
        let masked = masked.as_deref().unwrap_or(head);
        let restored = if cx.policy.response.restore { cx.masker.restore(masked) } else { None };
        let result = restored.unwrap_or_else(|| masked.to_string());
        if let Some(channel) = self.channels.get_mut(position) {
            channel.window.drain(..cut);
        }
        Ok(result)
    }
}

fn write_event(out: &mut Vec<u8>, event: &Event<'_>, value: &Value) {
    write_parts(out, event.event, event.id, value);
}

fn write_parts(out: &mut Vec<u8>, name: Option<&[u8]>, id: Option<&[u8]>, value: &Value) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name);
        out.push(b'\n');
    }
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id);
        out.push(b'\n');
    }
    crate::convert::sse_data(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(restore: bool) -> Policy {
        let json = format!(
            r#"{{"entities":{{"default":"mask","CREDIT_CARD":"block"}},"response":{{"restore":{restore},"holdback_chars":32}}}}"#
        );
        Policy::from_json(json.as_bytes(), "").unwrap()
    }

    fn openai_stream(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            let chunk = json!({"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":part},"finish_reason":null}]});
            crate::convert::sse_data(&mut out, &chunk);
        }
        crate::convert::sse_data(
            &mut out,
            &json!({"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}),
        );
        out.extend_from_slice(b"data: [DONE]\n\n");
        out
    }

    /// The client-visible text of an OpenAI stream, and whether it ended with an error.
    fn openai_text(stream: &[u8]) -> (String, bool) {
        let mut decoder = SseDecoder::default();
        decoder.push(stream).unwrap();
        let mut text = String::new();
        let mut error = false;
        while let Some(event) = decoder.next_event() {
            let data = event.data.unwrap();
            if &*data == b"[DONE]" {
                continue;
            }
            let value: Value = serde_json::from_slice(&data).unwrap();
            error |= value.get("error").is_some();
            if let Some(t) = value.pointer("/choices/0/delta/content").and_then(Value::as_str) {
                text.push_str(t);
            }
        }
        (text, error)
    }

    fn run(policy: &Policy, masker: &mut Masker, dialect: Dialect, chunks: &[&[u8]]) -> (Vec<u8>, Tally) {
        drive(StreamGuard::new(dialect, policy.response.holdback_chars), policy, masker, chunks)
    }

    /// Pushes `chunks` through `guard` and finishes it (unless a push ended the stream).
    /// Runs `run` on `stream` cut in two at every byte and fed one byte at a time, and checks
    /// each output.
    fn at_every_split(stream: &[u8], run: impl Fn(&[&[u8]]) -> Vec<u8>, check: impl Fn(&[u8], &str)) {
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            check(&run(&[a, b]), &format!("split at {cut}"));
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        check(&run(&bytes), "one byte at a time");
    }

    fn drive(mut guard: StreamGuard, policy: &Policy, masker: &mut Masker, chunks: &[&[u8]]) -> (Vec<u8>, Tally) {
        let mut out = Vec::new();
        let mut tally = Tally::new();
        for chunk in chunks {
            if guard.push(chunk, policy, masker, &mut tally, &mut out).is_err() {
                return (out, tally);
            }
        }
        let _ = guard.finish(policy, masker, &mut tally, &mut out);
        (out, tally)
    }

    #[test]
    fn pii_split_across_deltas_is_masked_at_every_byte_split() {
        let p = policy(false);
        let stream = openai_stream(&["O CPF é 529.9", "82.24", "7-25 e o resto ", "do texto segue aqui sem dados."]);
        let expected = "O CPF é [CPF_1] e o resto do texto segue aqui sem dados.";
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            let (out, tally) = run(&p, &mut p.masker(), Dialect::OpenAi, &[a, b]);
            let (text, error) = openai_text(&out);
            assert_eq!(text, expected, "split at {cut}");
            assert!(!error);
            assert_eq!(tally.len(), 1);
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let (out, _) = run(&p, &mut p.masker(), Dialect::OpenAi, &bytes);
        assert_eq!(openai_text(&out).0, expected, "one byte at a time");
    }

    #[test]
    fn the_stream_stays_live() {
        let p = policy(false);
        let long = "palavra ".repeat(20);
        let stream = openai_stream(&[&long, &long]);
        let mut guard = StreamGuard::new(Dialect::OpenAi, 32);
        let mut out = Vec::new();
        let first_event_end = stream.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
        guard.push(&stream[..first_event_end], &p, &mut p.masker(), &mut Tally::new(), &mut out).unwrap();
        let (text, _) = openai_text(&out);
        assert_eq!(text.len(), long.len() - 32, "all but the hold-back window is released at once");
    }

    #[test]
    fn restore_puts_the_originals_back_even_split() {
        let p = policy(true);
        let mut masker = p.masker();
        let findings = vec![Finding { start: 0, end: 14, entity: "CPF", rule: "pii", action: Action::Mask }];
        assert_eq!(masker.apply("529.982.247-25", &findings).unwrap(), "[CPF_1]");
        masker.freeze();
        let stream = openai_stream(&["Seu CPF [CP", "F_1] está ok. E o novo 111.444.777-35 fica oculto, até o fim."]);
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            let mut m = masker.clone();
            let (out, _) = run(&p, &mut m, Dialect::OpenAi, &[a, b]);
            assert_eq!(
                openai_text(&out).0,
                "Seu CPF 529.982.247-25 está ok. E o novo [CPF_2] fica oculto, até o fim.",
                "split at {cut}"
            );
        }
    }

    #[test]
    fn a_block_ends_the_stream_with_one_error_event() {
        let p = policy(false);
        let stream = openai_stream(&["cartão 4111 1111 ", "1111 1111 e mais texto depois disso tudo aqui."]);
        for cut in (0..=stream.len()).step_by(7) {
            let (a, b) = stream.split_at(cut);
            let (out, tally) = run(&p, &mut p.masker(), Dialect::OpenAi, &[a, b]);
            let (text, error) = openai_text(&out);
            assert!(error, "split at {cut}");
            assert!(!text.contains("1111"), "split at {cut}: {text}");
            assert_eq!(tally.last().map(|t| t.2), Some(Action::Block));
        }
    }

    #[test]
    fn anthropic_blocks_are_flushed_at_their_stop() {
        let p = policy(false);
        let mut stream = Vec::new();
        let ev = |out: &mut Vec<u8>, name: &str, value: Value| {
            out.extend_from_slice(format!("event: {name}\n").as_bytes());
            crate::convert::sse_data(out, &value);
        };
        ev(&mut stream, "message_start", json!({"type":"message_start","message":{"id":"m"}}));
        ev(
            &mut stream,
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        );
        ev(
            &mut stream,
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"mail: ana@exem"}}),
        );
        ev(
            &mut stream,
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"plo.com.br fim"}}),
        );
        ev(&mut stream, "content_block_stop", json!({"type":"content_block_stop","index":0}));
        ev(&mut stream, "message_stop", json!({"type":"message_stop"}));
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            let (out, _) = run(&p, &mut p.masker(), Dialect::Anthropic, &[a, b]);
            let mut decoder = SseDecoder::default();
            decoder.push(&out).unwrap();
            let mut text = String::new();
            let mut order = Vec::new();
            while let Some(event) = decoder.next_event() {
                let value: Value = serde_json::from_slice(&event.data.unwrap()).unwrap();
                order.push(value["type"].as_str().unwrap().to_string());
                if let Some(t) = value.pointer("/delta/text").and_then(Value::as_str) {
                    text.push_str(t);
                }
            }
            assert_eq!(text, "mail: [EMAIL_1] fim", "split at {cut}");
            assert_eq!(order.last().map(String::as_str), Some("message_stop"));
            let stop = order.iter().position(|t| t == "content_block_stop").unwrap();
            assert!(order[..stop].iter().filter(|t| *t == "content_block_delta").count() >= 2);
        }
    }

    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../../tests/fixtures/responses/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// Each event of a stream: its `event:` name and data.
    fn events(stream: &[u8]) -> Vec<(String, Value)> {
        let mut decoder = SseDecoder::default();
        decoder.push(stream).unwrap();
        let mut events = Vec::new();
        while let Some(event) = decoder.next_event() {
            let name = String::from_utf8(event.event.unwrap_or_default().to_vec()).unwrap();
            events.push((name, serde_json::from_slice(&event.data.unwrap()).unwrap()));
        }
        events
    }

    /// A masker that masked the request's CPF as `[CPF_1]`.
    fn request_masker(p: &Policy) -> Masker {
        let mut masker = p.masker();
        let findings = vec![Finding { start: 0, end: 14, entity: "CPF", rule: "pii", action: Action::Mask }];
        assert_eq!(masker.apply("529.982.247-25", &findings).unwrap(), "[CPF_1]");
        masker.freeze();
        masker
    }

    /// Every text a Responses stream shows: the deltas joined, then each closing event's copy.
    fn responses_texts(events: &[(String, Value)]) -> (String, Vec<String>) {
        let mut streamed = String::new();
        let mut copies = Vec::new();
        for (_, value) in events {
            match value["type"].as_str().unwrap() {
                "response.output_text.delta" => streamed.push_str(value["delta"].as_str().unwrap()),
                "response.output_text.done" => copies.push(value["text"].as_str().unwrap().to_string()),
                "response.content_part.done" => copies.push(value["part"]["text"].as_str().unwrap().to_string()),
                "response.output_item.done" => {
                    if let Some(text) = value.pointer("/item/content/0/text") {
                        copies.push(text.as_str().unwrap().to_string());
                    }
                }
                "response.completed" => copies
                    .push(value.pointer("/response/output/1/content/0/text").unwrap().as_str().unwrap().to_string()),
                _ => {}
            }
        }
        (streamed, copies)
    }

    fn run_responses(p: &Policy, masker: &mut Masker, chunks: &[&[u8]]) -> Vec<u8> {
        drive(StreamGuard::responses(p.response.holdback_chars), p, masker, chunks).0
    }

    #[test]
    fn a_responses_stream_is_masked_and_restored_in_every_copy_of_its_text_at_every_byte_split() {
        let p = policy(true);
        let masker = request_masker(&p);
        let stream = fixture("openai/responses-pii-stream.sse");
        let sent = events(&stream);
        let expected = "Seu CPF é 529.982.247-25; o do fiador é [CPF_2], confirme.";
        let check = |out: &[u8], what: &str| {
            let got = events(out);
            let order = |e: &[(String, Value)]| -> Vec<(String, u64)> {
                e.iter().map(|(name, v)| (name.clone(), v["sequence_number"].as_u64().unwrap())).collect()
            };
            assert_eq!(order(&got), order(&sent), "{what}: the same events, in order, with their numbers");
            let (streamed, copies) = responses_texts(&got);
            assert_eq!(streamed, expected, "{what}");
            assert_eq!(copies, vec![expected; 4], "{what}: done, part, item, completed");
            assert!(!String::from_utf8_lossy(out).contains("111.444"), "{what}");
            for ((_, before), (_, after)) in sent.iter().zip(&got) {
                let mut before = before.clone();
                let mut after = after.clone();
                for v in [&mut before, &mut after] {
                    for pointer in
                        ["/delta", "/text", "/part/text", "/item/content/0/text", "/response/output/1/content/0/text"]
                    {
                        if let Some(t) = v.pointer_mut(pointer) {
                            *t = Value::Null;
                        }
                    }
                }
                assert_eq!(before, after, "{what}: nothing but the text changes");
            }
        };
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            check(&run_responses(&p, &mut masker.clone(), &[a, b]), &format!("split at {cut}"));
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        check(&run_responses(&p, &mut masker.clone(), &bytes), "one byte at a time");
    }

    #[test]
    fn a_transcription_stream_is_masked_in_its_deltas_and_its_done_event_at_every_byte_split() {
        let p = policy(true);
        let stream = fixture("openai/transcription-pii-stream.sse");
        let sent = events(&stream);
        let check = |out: &[u8], what: &str| {
            let got = events(out);
            let deltas: String = got.iter().filter_map(|(_, v)| v["delta"].as_str()).collect();
            assert_eq!(deltas, "Meu CPF é [CPF_1], anote por favor.", "{what}");
            let done = &got.last().unwrap().1;
            assert_eq!(
                (done["type"].as_str(), done["text"].as_str()),
                (Some("transcript.text.done"), Some(deltas.as_str()))
            );
            assert_eq!(done["usage"]["total_tokens"], 69, "{what}");
            assert_eq!(got.len(), sent.len(), "{what}: the provider's events, no more");
            assert!(!String::from_utf8_lossy(out).contains("529.98"), "{what}");
        };
        let run = |chunks: &[&[u8]]| drive(StreamGuard::responses(32), &p, &mut p.masker(), chunks).0;
        at_every_split(&stream, run, check);
    }

    #[test]
    fn a_responses_stream_stays_live_one_delta_behind() {
        let p = policy(false);
        let long = "palavra ".repeat(20);
        let mut stream = Vec::new();
        for (n, part) in [&long, &long, &long].iter().enumerate() {
            let value = json!({"type":"response.output_text.delta","sequence_number":n,"item_id":"m","output_index":0,"content_index":0,"delta":part});
            stream.extend_from_slice(b"event: response.output_text.delta\n");
            crate::convert::sse_data(&mut stream, &value);
        }
        let mut guard = StreamGuard::responses(32);
        let mut out = Vec::new();
        guard.push(&stream, &p, &mut p.masker(), &mut Tally::new(), &mut out).unwrap();
        let got = events(&out);
        assert_eq!(got.len(), 2, "the third delta is held until the next event");
        let sent: String = got.iter().map(|(_, v)| v["delta"].as_str().unwrap()).collect();
        assert_eq!(sent.len(), 3 * long.len() - 32, "all but the hold-back window is out");
    }

    fn responses_event(out: &mut Vec<u8>, value: Value) {
        out.extend_from_slice(format!("event: {}\n", value["type"].as_str().unwrap()).as_bytes());
        crate::convert::sse_data(out, &value);
    }

    #[test]
    fn a_block_ends_a_responses_stream_with_its_error_event() {
        let p = policy(false);
        let mut stream = Vec::new();
        for (n, part) in ["cartão 4111 1111 ", "1111 1111 e mais texto depois disso tudo aqui."].iter().enumerate() {
            responses_event(
                &mut stream,
                json!({"type":"response.output_text.delta","sequence_number":n + 3,"item_id":"m","output_index":0,"content_index":0,"delta":part}),
            );
        }
        responses_event(
            &mut stream,
            json!({"type":"response.output_text.done","sequence_number":5,"item_id":"m","output_index":0,"content_index":0,"text":"…"}),
        );
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            let out = run_responses(&p, &mut p.masker(), &[a, b]);
            let got = events(&out);
            let (name, last) = got.last().unwrap();
            assert_eq!(name, "error", "split at {cut}");
            assert_eq!(last["type"], "error");
            assert_eq!(last["code"], "content_blocked");
            assert_eq!(last["sequence_number"], 5, "after the last event seen");
            assert!(last["error"]["message"].as_str().unwrap().contains("CREDIT_CARD"));
            assert!(!String::from_utf8_lossy(&out).contains("1111"), "split at {cut}");
            assert_eq!(got.iter().filter(|(n, _)| n == "error").count(), 1);
        }
    }

    #[test]
    fn tool_arguments_reasoning_and_texts_that_never_streamed_are_guarded_in_a_responses_stream() {
        let p = policy(false);
        let mut stream = Vec::new();
        let call = |args: &str| json!({"id":"fc_1","type":"function_call","call_id":"call_1","name":"lookup","arguments":args,"status":"completed"});
        for (n, part) in [r#"{"email":"ana@exem"#, r#"plo.com.br"}"#].iter().enumerate() {
            responses_event(
                &mut stream,
                json!({"type":"response.function_call_arguments.delta","sequence_number":n,"item_id":"fc_1","output_index":0,"delta":part}),
            );
        }
        let whole = r#"{"email":"ana@exemplo.com.br"}"#;
        responses_event(
            &mut stream,
            json!({"type":"response.function_call_arguments.done","sequence_number":2,"item_id":"fc_1","output_index":0,"arguments":whole}),
        );
        responses_event(
            &mut stream,
            json!({"type":"response.output_item.done","sequence_number":3,"output_index":0,"item":call(whole)}),
        );
        let summary = json!({"id":"rs_1","type":"reasoning","summary":[{"type":"summary_text","text":"O CPF 111.444.777-35 confere."}]});
        responses_event(
            &mut stream,
            json!({"type":"response.completed","sequence_number":4,"response":{"id":"r","output":[call(whole), summary],"usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3}}}),
        );
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            let got = events(&run_responses(&p, &mut p.masker(), &[a, b]));
            assert_eq!(got.len(), 5, "split at {cut}");
            let streamed: String = got.iter().filter_map(|(_, v)| v.get("delta").and_then(Value::as_str)).collect();
            let masked = r#"{"email":"[EMAIL_1]"}"#;
            assert_eq!(streamed, masked, "split at {cut}");
            assert_eq!(got[2].1["arguments"], masked);
            assert_eq!(got[3].1["item"]["arguments"], masked);
            assert_eq!(got[4].1.pointer("/response/output/0/arguments").unwrap(), masked);
            assert_eq!(
                got[4].1.pointer("/response/output/1/summary/0/text").unwrap(),
                "O CPF [CPF_1] confere.",
                "a text that never streamed is checked where it comes"
            );
            assert_eq!(got[4].1.pointer("/response/usage/total_tokens").unwrap(), 3);
        }
    }

    #[test]
    fn a_tail_after_another_event_goes_out_in_a_copy_of_the_last_delta() {
        let p = policy(false);
        let mut stream = Vec::new();
        for (n, part) in ["Escreva para ana@exem", "plo.com.br hoje."].iter().enumerate() {
            responses_event(
                &mut stream,
                json!({"type":"response.output_text.delta","sequence_number":n,"item_id":"m","output_index":0,"content_index":0,"delta":part}),
            );
        }
        responses_event(
            &mut stream,
            json!({"type":"response.output_text.annotation.added","sequence_number":2,"item_id":"m","output_index":0,"content_index":0,"annotation_index":0,"annotation":{"type":"url_citation","url":"https://example.com"}}),
        );
        responses_event(
            &mut stream,
            json!({"type":"response.output_text.done","sequence_number":3,"item_id":"m","output_index":0,"content_index":0,"text":"…"}),
        );
        let got = events(&run_responses(&p, &mut p.masker(), &[&stream]));
        let types: Vec<&str> = got.iter().map(|(_, v)| v["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.annotation.added",
                "response.output_text.delta",
                "response.output_text.done"
            ]
        );
        let streamed: String = got.iter().filter_map(|(_, v)| v.get("delta").and_then(Value::as_str)).collect();
        assert_eq!(streamed, "Escreva para [EMAIL_1] hoje.");
        assert_eq!(got[3].1["sequence_number"], 1, "the copy keeps its template's number");
        assert_eq!(got[4].1["text"], "Escreva para [EMAIL_1] hoje.");
    }

    fn run_gemini(p: &Policy, masker: &mut Masker, chunks: &[&[u8]]) -> Vec<u8> {
        drive(StreamGuard::gemini(p.response.holdback_chars), p, masker, chunks).0
    }

    /// A Gemini stream's thoughts and answer, as Google's SDK joins them, and its events.
    fn gemini_texts(stream: &[u8]) -> (String, String, Vec<Value>) {
        let (mut thoughts, mut text) = (String::new(), String::new());
        let values: Vec<Value> = events(stream).into_iter().map(|(_, v)| v).collect();
        for value in &values {
            for part in value.pointer("/candidates/0/content/parts").and_then(Value::as_array).into_iter().flatten() {
                let into = if part["thought"] == true { &mut thoughts } else { &mut text };
                into.push_str(part["text"].as_str().unwrap_or_default());
            }
        }
        (thoughts, text, values)
    }

    #[test]
    fn a_gemini_stream_is_masked_and_restored_at_every_byte_split() {
        let p = policy(true);
        let masker = request_masker(&p);
        let stream = fixture("gemini/stream-pii.sse");
        let sent = events(&stream);
        let check = |out: &[u8], what: &str| {
            let (thoughts, text, got) = gemini_texts(out);
            assert_eq!(text, "Seu CPF é 529.982.247-25; o do fiador é [CPF_2], confirme.", "{what}");
            assert!(thoughts.starts_with("**Checking the document**"), "{what}: thoughts are their own channel");
            assert_eq!(got.len(), sent.len(), "{what}: no event added");
            assert_eq!(got.last().unwrap()["usageMetadata"]["totalTokenCount"], 73, "{what}");
            assert_eq!(got.last().unwrap().pointer("/candidates/0/finishReason").unwrap(), "STOP");
            assert!(!String::from_utf8_lossy(out).contains("111.444"), "{what}");
        };
        at_every_split(&stream, |chunks| run_gemini(&p, &mut masker.clone(), chunks), check);
    }

    /// A streamed JSON array's elements, the output parsed whole as the SDKs read it.
    fn array_elements(out: &[u8]) -> Vec<Value> {
        match serde_json::from_slice::<Value>(out) {
            Ok(Value::Array(elements)) => elements,
            other => panic!("not a JSON array: {other:?}: {}", String::from_utf8_lossy(out)),
        }
    }

    #[test]
    fn a_gemini_json_array_stream_is_masked_and_restored_at_every_byte_split() {
        let p = policy(true);
        let masker = request_masker(&p);
        let stream = fixture("gemini/stream-array-pii.json");
        let sent = array_elements(&stream);
        let check = |out: &[u8], what: &str| {
            let got = array_elements(out);
            let mut as_sse = Vec::new();
            for element in &got {
                crate::convert::sse_data(&mut as_sse, element);
            }
            let (thoughts, text, _) = gemini_texts(&as_sse);
            assert_eq!(text, "Seu CPF é 529.982.247-25; o do fiador é [CPF_2], confirme.", "{what}");
            assert!(thoughts.starts_with("**Checking the document**"), "{what}");
            assert_eq!(got.len(), sent.len(), "{what}: no element added");
            assert_eq!(got.last().unwrap()["usageMetadata"]["totalTokenCount"], 73, "{what}");
            assert!(!String::from_utf8_lossy(out).contains("111.444"), "{what}");
            assert!(
                out.windows(3).filter(|w| w == b",\r\n").count() >= sent.len() - 1,
                "{what}: Gemini's separators kept"
            );
        };
        let run = |chunks: &[&[u8]]| {
            drive(StreamGuard::gemini_array(p.response.holdback_chars), &p, &mut masker.clone(), chunks).0
        };
        at_every_split(&stream, run, check);
    }

    #[test]
    fn a_gemini_json_array_stream_gets_its_tail_before_the_bracket_and_a_block_closes_it() {
        let p = policy(false);
        let run = |stream: &[u8]| -> (Vec<u8>, bool) {
            let (mut out, mut tally) = (Vec::new(), Tally::new());
            let mut guard = StreamGuard::gemini_array(32);
            let mut masker = p.masker();
            let ended = guard.push(stream, &p, &mut masker, &mut tally, &mut out).is_err()
                || guard.finish(&p, &mut masker, &mut tally, &mut out).is_err();
            (out, ended)
        };
        let element =
            |text: &str| json!({"candidates":[{"content":{"parts":[{"text": text}],"role":"model"},"index":0}]});
        // No finishReason: the tail is an element of its own, before the closing bracket.
        let stream = format!("[{},\r\n{}]", element("Escreva para ana@exem"), element("plo.com.br hoje"));
        let (out, ended) = run(stream.as_bytes());
        assert!(!ended);
        let got = array_elements(&out);
        let text: String =
            got.iter().filter_map(|e| e.pointer("/candidates/0/content/parts/0/text")?.as_str()).collect();
        assert_eq!((text.as_str(), got.len()), ("Escreva para [EMAIL_1] hoje", 3));
        // Cut short before the bracket: every text still goes out.
        let (out, _) = run(&stream.as_bytes()[..stream.len() - 1]);
        assert!(String::from_utf8_lossy(&out).contains("[EMAIL_1] hoje"));
        // A block: Google's error object is the last element, and the array is closed.
        let stream = format!("[{},\r\n{}]", element("ok"), element("card 4111 1111 1111 1111 now"));
        let (out, ended) = run(stream.as_bytes());
        assert!(ended);
        let got = array_elements(&out);
        assert_eq!(got.last().unwrap()["error"]["status"], "INVALID_ARGUMENT", "{got:?}");
        assert!(!String::from_utf8_lossy(&out).contains("4111"));
        // Not an array: ended as unreadable, in a closed array.
        let (out, ended) = run(b"data: {}\n\n");
        assert!(ended);
        assert_eq!(array_elements(&out).len(), 1);
    }

    #[test]
    fn a_gemini_tail_finds_a_part_and_a_call_is_checked_whole() {
        let p = policy(false);
        let event = |parts: Value, finish: bool| {
            let mut candidate = json!({"content":{"parts":parts,"role":"model"},"index":0});
            if finish {
                candidate["finishReason"] = json!("STOP");
            }
            let mut out = Vec::new();
            crate::convert::sse_data(&mut out, &json!({"candidates":[candidate],"modelVersion":"gemini-2.5-flash"}));
            out
        };
        // The last event carries no text, only a call: the tail gets a part of its own, first.
        let stream = [
            event(json!([{"text":"Vou escrever para ana@exemplo.com.br agora"}]), false),
            event(json!([{"functionCall":{"name":"send","args":{"to":["ana@exemplo.com.br"],"n":1}}}]), true),
        ]
        .concat();
        let (_, text, got) = gemini_texts(&run_gemini(&p, &mut p.masker(), &[&stream]));
        assert_eq!(text, "Vou escrever para [EMAIL_1] agora");
        let parts = got[1].pointer("/candidates/0/content/parts").unwrap();
        assert!(parts[0]["text"].is_string(), "{parts}");
        assert_eq!(parts[1]["functionCall"]["args"], json!({"to":["[EMAIL_1]"],"n":1}));
        // No finishReason: the tail comes in one last event.
        let stream = event(json!([{"text":"Contato: ana@exemplo.com.br"}]), false);
        let (_, text, got) = gemini_texts(&run_gemini(&p, &mut p.masker(), &[&stream]));
        assert_eq!(text, "Contato: [EMAIL_1]");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1]["modelVersion"], "gemini-2.5-flash");
    }

    #[test]
    fn a_block_ends_a_gemini_stream_with_googles_error_object() {
        let p = policy(false);
        let mut stream = Vec::new();
        for part in ["cartão 4111 1111 ", "1111 1111 e mais texto depois disso tudo aqui."] {
            crate::convert::sse_data(
                &mut stream,
                &json!({"candidates":[{"content":{"parts":[{"text":part}],"role":"model"},"index":0}]}),
            );
        }
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            let out = run_gemini(&p, &mut p.masker(), &[a, b]);
            let got = events(&out);
            let last = &got.last().unwrap().1;
            assert_eq!(last["error"]["code"], 400, "split at {cut}: {last}");
            assert_eq!(last["error"]["status"], "INVALID_ARGUMENT");
            assert!(last["error"]["message"].as_str().unwrap().contains("CREDIT_CARD"));
            assert!(!String::from_utf8_lossy(&out).contains("1111"), "split at {cut}");
        }
    }

    /// A Bedrock `*.events.json` fixture as the frames Bedrock sends.
    fn bedrock_frames(events: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        for event in events.as_array().unwrap() {
            let headers = [
                (":event-type", event["event"].as_str().unwrap()),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ];
            out.extend_from_slice(&crate::eventstream::encode(&headers, event["payload"].to_string().as_bytes()));
        }
        out
    }

    /// Each frame of a Bedrock stream: its `:event-type` (or `:exception-type`) and payload.
    fn frames_of(stream: &[u8]) -> Vec<(String, Value)> {
        let mut decoder = EventStreamDecoder::new(DEFAULT_MAX_MESSAGE_BYTES);
        decoder.push(stream).unwrap();
        let mut frames = Vec::new();
        while let Some(message) = decoder.next_message() {
            let message = message.unwrap();
            let name = message.header_str(":event-type").or(message.header_str(":exception-type")).unwrap();
            frames.push((name.to_string(), serde_json::from_slice(message.payload).unwrap()));
        }
        decoder.finish().unwrap();
        frames
    }

    fn run_bedrock(p: &Policy, masker: &mut Masker, chunks: &[&[u8]]) -> Vec<u8> {
        drive(StreamGuard::bedrock(p.response.holdback_chars), p, masker, chunks).0
    }

    #[test]
    fn a_bedrock_stream_is_masked_and_restored_frame_by_frame_at_every_byte_split() {
        let p = policy(true);
        let masker = request_masker(&p);
        let events: Value = serde_json::from_slice(&fixture("bedrock/converse-stream-pii.events.json")).unwrap();
        let stream = bedrock_frames(&events);
        let metadata = crate::eventstream::encode(
            &[(":event-type", "metadata"), (":content-type", "application/json"), (":message-type", "event")],
            events.as_array().unwrap().last().unwrap()["payload"].to_string().as_bytes(),
        );
        let check = |out: &[u8], what: &str| {
            let frames = frames_of(out);
            let joined = |index: u64, pointer: &str| -> String {
                frames
                    .iter()
                    .filter(|(name, v)| name == "contentBlockDelta" && v["contentBlockIndex"] == index)
                    .filter_map(|(_, v)| v.pointer(pointer).and_then(Value::as_str))
                    .collect()
            };
            assert_eq!(joined(0, "/delta/reasoningContent/text"), "The user shared a CPF; confirm it.", "{what}");
            assert_eq!(
                joined(1, "/delta/text"),
                "Seu CPF é 529.982.247-25; o do fiador é [CPF_2], confirme.",
                "{what}"
            );
            assert_eq!(joined(2, "/delta/toolUse/input"), r#"{"to": "[EMAIL_1]", "body": "ok"}"#, "{what}");
            for index in 0..3u64 {
                let stop = frames
                    .iter()
                    .position(|(name, v)| name == "contentBlockStop" && v["contentBlockIndex"] == index)
                    .unwrap();
                assert!(
                    frames[stop..]
                        .iter()
                        .all(|(name, v)| name != "contentBlockDelta" || v["contentBlockIndex"] != index),
                    "{what}: block {index}'s text comes before its stop"
                );
            }
            assert!(out.ends_with(&metadata), "{what}: frames without text pass byte for byte");
            assert!(!String::from_utf8_lossy(out).contains("111.444"), "{what}");
        };
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            check(&run_bedrock(&p, &mut masker.clone(), &[a, b]), &format!("split at {cut}"));
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        check(&run_bedrock(&p, &mut masker.clone(), &bytes), "one byte at a time");
    }

    #[test]
    fn a_block_ends_a_bedrock_stream_with_an_exception_frame() {
        let p = policy(false);
        let delta =
            |text: &str| json!({"event":"contentBlockDelta","payload":{"contentBlockIndex":0,"delta":{"text":text}}});
        let stream = bedrock_frames(&json!([
            delta("cartão 4111 1111 "),
            delta("1111 1111 e mais texto depois disso tudo aqui."),
            {"event":"contentBlockStop","payload":{"contentBlockIndex":0}}
        ]));
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            let out = run_bedrock(&p, &mut p.masker(), &[a, b]);
            let frames = frames_of(&out);
            let (name, last) = frames.last().unwrap();
            assert_eq!(name, "validationException", "split at {cut}");
            assert!(last["message"].as_str().unwrap().contains("CREDIT_CARD"));
            assert!(!String::from_utf8_lossy(&out).contains("1111"), "split at {cut}");
        }
        let mut corrupt = stream.clone();
        corrupt[20] ^= 1;
        let frames = frames_of(&run_bedrock(&p, &mut p.masker(), &[&corrupt]));
        assert_eq!(frames.last().unwrap().0, "internalServerException", "an unreadable stream is not passed on");
    }

    #[test]
    fn a_claude_invoke_stream_is_masked_and_restored_inside_its_base64_chunks_at_every_byte_split() {
        use base64::Engine as _;
        let p = policy(true);
        let masker = request_masker(&p);
        let events: Value = serde_json::from_slice(&fixture("bedrock/invoke-claude-pii-stream.events.json")).unwrap();
        let stream = bedrock_frames(&events);
        let inner = |out: &[u8]| -> Vec<Value> {
            frames_of(out)
                .into_iter()
                .map(|(name, payload)| {
                    assert_eq!(name, "chunk");
                    let bytes =
                        base64::engine::general_purpose::STANDARD.decode(payload["bytes"].as_str().unwrap()).unwrap();
                    serde_json::from_slice(&bytes).unwrap()
                })
                .collect()
        };
        let check = |out: &[u8], what: &str| {
            let got = inner(out);
            let text: String = got.iter().filter_map(|e| e.pointer("/delta/text").and_then(Value::as_str)).collect();
            assert_eq!(text, "Seu CPF é 529.982.247-25; o do fiador é [CPF_2], confirme.", "{what}");
            let stop = got.iter().position(|e| e["type"] == "content_block_stop").unwrap();
            assert!(got[stop..].iter().all(|e| e["type"] != "content_block_delta"), "{what}: the tail before the stop");
            assert_eq!(got.last().unwrap()["amazon-bedrock-invocationMetrics"]["outputTokenCount"], 21, "{what}");
            assert!(!String::from_utf8_lossy(out).contains("111.444"), "{what}");
        };
        let run = |chunks: &[&[u8]]| {
            drive(StreamGuard::bedrock_invoke(p.response.holdback_chars), &p, &mut masker.clone(), chunks).0
        };
        at_every_split(&stream, run, check);
    }

    #[test]
    fn a_nova_invoke_stream_is_masked_inside_its_converse_shaped_chunks_at_every_byte_split() {
        use base64::Engine as _;
        let p = policy(false);
        let events: Value = serde_json::from_slice(&fixture("bedrock/invoke-nova-pii-stream.events.json")).unwrap();
        let stream = bedrock_frames(&events);
        let check = |out: &[u8], what: &str| {
            let got: Vec<Value> = frames_of(out)
                .into_iter()
                .map(|(name, payload)| {
                    assert_eq!(name, "chunk", "{what}");
                    let bytes =
                        base64::engine::general_purpose::STANDARD.decode(payload["bytes"].as_str().unwrap()).unwrap();
                    serde_json::from_slice(&bytes).unwrap()
                })
                .collect();
            let text: String =
                got.iter().filter_map(|e| e.pointer("/contentBlockDelta/delta/text").and_then(Value::as_str)).collect();
            assert_eq!(text, "Anotei. O fiador tem CPF [CPF_1], confirme.", "{what}");
            let stop = got.iter().position(|e| e.get("contentBlockStop").is_some()).unwrap();
            assert!(
                got[stop..].iter().all(|e| e.get("contentBlockDelta").is_none()),
                "{what}: the tail before the stop"
            );
            assert_eq!(got[0], json!({"messageStart": {"role": "assistant"}}), "{what}: the rest as sent");
            assert_eq!(got.last().unwrap()["amazon-bedrock-invocationMetrics"]["outputTokenCount"], 19, "{what}");
            assert!(!String::from_utf8_lossy(out).contains("111.444"), "{what}");
        };
        let run = |chunks: &[&[u8]]| drive(StreamGuard::bedrock_invoke(32), &p, &mut p.masker(), chunks).0;
        at_every_split(&stream, run, check);
    }

    #[test]
    fn llama_titan_and_mistral_invoke_streams_are_masked_in_their_own_text_field_at_every_byte_split() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let p = policy(false);
        let parts = ["O fiador tem CPF 111.44", "4.777", "-35, confirme."];
        let expected = "O fiador tem CPF [CPF_1], confirme.";
        type Shape = fn(&str, bool) -> Value;
        let shapes: [(&str, Shape); 3] = [
            (
                "/generation",
                |t, last| json!({"generation": t, "stop_reason": if last { json!("stop") } else { Value::Null }}),
            ),
            (
                "/outputText",
                |t, last| json!({"outputText": t, "index": 0, "completionReason": if last { json!("FINISH") } else { Value::Null }}),
            ),
            (
                "/outputs/0/text",
                |t, last| json!({"outputs": [{"text": t, "stop_reason": if last { json!("stop") } else { Value::Null }}]}),
            ),
        ];
        for (pointer, shape) in shapes {
            for ends in [true, false] {
                let events: Vec<Value> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let inner = shape(t, ends && i == parts.len() - 1);
                        json!({"event": "chunk", "payload": {"bytes": b64.encode(inner.to_string())}})
                    })
                    .collect();
                let stream = bedrock_frames(&Value::Array(events));
                for cut in 0..=stream.len() {
                    let (a, b) = stream.split_at(cut);
                    let out = drive(StreamGuard::bedrock_invoke(32), &p, &mut p.masker(), &[a, b]).0;
                    let text: String = frames_of(&out)
                        .iter()
                        .map(|(_, payload)| {
                            let inner: Value =
                                serde_json::from_slice(&b64.decode(payload["bytes"].as_str().unwrap()).unwrap())
                                    .unwrap();
                            inner.pointer(pointer).and_then(Value::as_str).unwrap().to_string()
                        })
                        .collect();
                    assert_eq!(text, expected, "{pointer}, ends {ends}, split at {cut}");
                }
            }
        }
    }
}
