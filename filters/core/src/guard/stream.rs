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
//! Memory per stream: the SSE decoder's pending event plus, per channel, `holdback` characters
//! and the current chunk's text.

use super::policy::{Action, Finding, Masker, Policy};
use crate::error::{Dialect, Error};
use crate::sse::{Event, SseDecoder};
use serde_json::{json, Value};

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
}

struct Channel {
    /// Choice (OpenAI) or content block (Anthropic) index.
    index: u64,
    field: Field,
    window: String,
}

/// Why the stream was ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub rule: String,
    pub entity: String,
}

pub struct StreamGuard {
    decoder: SseDecoder,
    state: State,
}

struct State {
    dialect: Dialect,
    holdback: usize,
    channels: Vec<Channel>,
    /// The stream's first OpenAI chunk, for synthetic flush chunks (id, model, created):
    /// kept as bytes, parsed only if a flush needs it.
    template: Option<Vec<u8>>,
    ended: bool,
}

impl StreamGuard {
    pub fn new(dialect: Dialect, holdback_chars: usize) -> StreamGuard {
        StreamGuard {
            decoder: SseDecoder::default(),
            state: State { dialect, holdback: holdback_chars, channels: Vec::new(), template: None, ended: false },
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
        if self.decoder.push(bytes).is_err() {
            return Err(self.state.unreadable(out));
        }
        while let Some(event) = self.decoder.next_event() {
            self.state.event(&event, policy, masker, tally, out)?;
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
            self.state.event(&event, policy, masker, tally, out)?;
        }
        self.state.flush(None, policy, masker, tally, out)?;
        out.extend_from_slice(&rest);
        Ok(())
    }
}

impl State {
    /// A stream we cannot read is a stream we cannot check: it ends here, with the provider
    /// (not a guardrail) named as the cause.
    fn unreadable(&mut self, out: &mut Vec<u8>) -> Blocked {
        self.ended = true;
        let detail = "the provider's stream could not be read, so the rest of the answer was withheld unchecked";
        out.extend_from_slice(&Error::UpstreamInvalid { detail: detail.into() }.sse_event(self.dialect));
        Blocked { rule: "response_unreadable".to_string(), entity: "SSE".to_string() }
    }

    fn end(&mut self, out: &mut Vec<u8>, rule: &str, entity: &str) -> Blocked {
        self.ended = true;
        let error = Error::Blocked { rule: rule.to_string(), entity: Some(entity.to_string()) };
        out.extend_from_slice(&error.sse_event(self.dialect));
        Blocked { rule: rule.to_string(), entity: entity.to_string() }
    }

    fn event(
        &mut self,
        event: &Event<'_>,
        policy: &Policy,
        masker: &mut Masker,
        tally: &mut Tally,
        out: &mut Vec<u8>,
    ) -> Result<(), Blocked> {
        let Some(data) = event.data.as_deref() else {
            out.extend_from_slice(event.raw);
            return Ok(());
        };
        if data.trim_ascii() == b"[DONE]" {
            self.flush(None, policy, masker, tally, out)?;
            out.extend_from_slice(event.raw);
            return Ok(());
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(data) else {
            // Text we cannot read is text we cannot check.
            return Err(self.unreadable(out));
        };
        let touched = match self.dialect {
            Dialect::OpenAi => self.openai(data, &mut value, policy, masker, tally, out)?,
            Dialect::Anthropic => self.anthropic(&mut value, policy, masker, tally, out)?,
        };
        if touched {
            write_event(out, event, &value);
        } else {
            out.extend_from_slice(event.raw);
        }
        Ok(())
    }

    fn openai(
        &mut self,
        data: &[u8],
        value: &mut Value,
        policy: &Policy,
        masker: &mut Masker,
        tally: &mut Tally,
        out: &mut Vec<u8>,
    ) -> Result<bool, Blocked> {
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
            self.flush_absent(*index, value, policy, masker, tally, out)?;
        }
        if self.template.is_none() && value.get("choices").is_some() {
            self.template = Some(data.to_vec());
        }
        if let Some(Value::Array(choices)) = value.get_mut("choices") {
            for choice in choices.iter_mut() {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
                let last = finishing.contains(&index);
                if let Some(Value::String(text)) = choice.get_mut("text") {
                    *text = self.feed(index, Field::CompletionText, text, last, policy, masker, tally, out)?;
                    touched = true;
                }
                let Some(delta) = choice.get_mut("delta") else { continue };
                if let Some(Value::String(text)) = delta.get_mut("content") {
                    *text = self.feed(index, Field::Text, text, last, policy, masker, tally, out)?;
                    touched = true;
                }
                if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                    for call in calls {
                        let at = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some(Value::String(args)) = call.pointer_mut("/function/arguments") {
                            *args =
                                self.feed(index, Field::ToolArguments(at), args, last, policy, masker, tally, out)?;
                            touched = true;
                        }
                    }
                }
            }
        }
        Ok(touched)
    }

    /// Flushes the channels of choice `index` that `chunk` has no text for.
    fn flush_absent(
        &mut self,
        index: u64,
        chunk: &Value,
        policy: &Policy,
        masker: &mut Masker,
        tally: &mut Tally,
        out: &mut Vec<u8>,
    ) -> Result<(), Blocked> {
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
            let text = self.feed(index, field, "", true, policy, masker, tally, out)?;
            self.synthetic(index, field, &text, chunk, out);
        }
        Ok(())
    }

    /// Everything held (of block/choice `only`, or of all) goes out in synthetic events.
    fn flush(
        &mut self,
        only: Option<u64>,
        policy: &Policy,
        masker: &mut Masker,
        tally: &mut Tally,
        out: &mut Vec<u8>,
    ) -> Result<(), Blocked> {
        let keys: Vec<(u64, Field)> = self
            .channels
            .iter()
            .filter(|c| only.is_none_or(|i| c.index == i) && !c.window.is_empty())
            .map(|c| (c.index, c.field))
            .collect();
        for (index, field) in keys {
            let text = self.feed(index, field, "", true, policy, masker, tally, out)?;
            let template = self
                .template
                .as_deref()
                .and_then(|raw| serde_json::from_slice::<Value>(raw).ok())
                .unwrap_or_else(|| json!({}));
            self.synthetic(index, field, &text, &template, out);
        }
        Ok(())
    }

    fn synthetic(&self, index: u64, field: Field, text: &str, template: &Value, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        let (event, value) = match (self.dialect, field) {
            (Dialect::Anthropic, field) => {
                let delta = match field {
                    Field::PartialJson => json!({"type": "input_json_delta", "partial_json": text}),
                    Field::Thinking => json!({"type": "thinking_delta", "thinking": text}),
                    _ => json!({"type": "text_delta", "text": text}),
                };
                (Some("content_block_delta"), json!({"type": "content_block_delta", "index": index, "delta": delta}))
            }
            (Dialect::OpenAi, field) => {
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
        if let Some(event) = event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.push(b'\n');
        }
        crate::convert::sse_data(out, &value);
    }

    fn anthropic(
        &mut self,
        value: &mut Value,
        policy: &Policy,
        masker: &mut Masker,
        tally: &mut Tally,
        out: &mut Vec<u8>,
    ) -> Result<bool, Blocked> {
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
                    *text = self.feed(index, field, text, false, policy, masker, tally, out)?;
                    return Ok(true);
                }
                Ok(false)
            }
            Some("content_block_stop") => {
                self.flush(Some(index), policy, masker, tally, out)?;
                Ok(false)
            }
            Some("message_delta" | "message_stop") => {
                self.flush(None, policy, masker, tally, out)?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Appends `text` to the channel and returns what may be released now (masked, restored).
    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        index: u64,
        field: Field,
        text: &str,
        last: bool,
        policy: &Policy,
        masker: &mut Masker,
        tally: &mut Tally,
        out: &mut Vec<u8>,
    ) -> Result<String, Blocked> {
        let position = match self.channels.iter().position(|c| c.index == index && c.field == field) {
            Some(p) => p,
            None => {
                self.channels.push(Channel { index, field, window: String::new() });
                self.channels.len() - 1
            }
        };
        let holdback = self.holdback;
        let Some(channel) = self.channels.get_mut(position) else { return Ok(text.to_string()) };
        channel.window.push_str(text);
        let window = &channel.window;
        let mut findings: Vec<Finding<'_>> = Vec::new();
        policy.scan(window, &mut findings);
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
        if policy.response.restore {
            cut = masker.safe_cut(window, cut);
        }
        let released: Vec<Finding<'_>> = findings.into_iter().filter(|f| f.end <= cut).collect();
        if let Some(block) =
            released.iter().find(|f| f.action == Action::Block && policy.mode == super::policy::Mode::Enforce)
        {
            let (rule, entity) = (block.rule.to_string(), block.entity.to_string());
            tally.extend(released.iter().map(|f| (f.rule.to_string(), f.entity.to_string(), f.action)));
            return Err(self.end(out, &rule, &entity));
        }
        tally.extend(released.iter().map(|f| (f.rule.to_string(), f.entity.to_string(), f.action)));
        let head = window.get(..cut).unwrap_or_default();
        let masked = if policy.mode == super::policy::Mode::Enforce { masker.apply(head, &released) } else { None };
        let masked = masked.as_deref().unwrap_or(head);
        let restored = if policy.response.restore { masker.restore(masked) } else { None };
        let result = restored.unwrap_or_else(|| masked.to_string());
        if let Some(channel) = self.channels.get_mut(position) {
            channel.window.drain(..cut);
        }
        Ok(result)
    }
}

fn write_event(out: &mut Vec<u8>, event: &Event<'_>, value: &Value) {
    if let Some(name) = event.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name);
        out.push(b'\n');
    }
    if let Some(id) = event.id {
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
        let mut guard = StreamGuard::new(dialect, policy.response.holdback_chars);
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
}
