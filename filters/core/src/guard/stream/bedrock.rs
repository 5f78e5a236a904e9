//! Guarding a Bedrock ConverseStream answer: AWS event-stream frames, not SSE. (And an
//! InvokeModel stream: base64 in `chunk` frames, a Claude model's Anthropic events, guarded as an
//! Anthropic stream, Nova's ConverseStream events, guarded as those frames are, or Llama's,
//! Titan's or Mistral's one text field; re-encoded.)
//!
//! A `contentBlockDelta` frame's text (`delta.text`, a tool call's `delta.toolUse.input`, the
//! reasoning's `delta.reasoningContent.text`) goes through its block's window, as an Anthropic
//! block's does, and the frame is sent again with its headers byte for byte around the new
//! payload (new length and CRCs). A block's held tail goes out in a `contentBlockDelta` frame of
//! its own before the block's `contentBlockStop`. A block ends the stream with one exception
//! frame (`validationException`; `internalServerException` for a stream that could not be
//! read), which AWS SDKs raise as the stream's error. Other frames pass
//! byte for byte.

use super::{Blocked, Ctx, Field, Format, State};
use crate::eventstream::{encode, Message};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

impl State {
    /// One frame of a Bedrock stream, ConverseStream's or a Claude InvokeModel's.
    pub(super) fn frame(&mut self, message: &Message<'_>, cx: &mut Ctx<'_>) -> Result<(), Blocked> {
        match self.format {
            Format::BedrockInvoke => self.invoke(message, cx),
            _ => self.bedrock(message, cx),
        }
    }

    /// An InvokeModel `chunk` frame (`{"bytes": "<base64 of one Anthropic event>"}`): the event
    /// is guarded as an Anthropic stream's is, and the frame sent again around it re-encoded.
    fn invoke(&mut self, message: &Message<'_>, cx: &mut Ctx<'_>) -> Result<(), Blocked> {
        if message.header_str(":message-type") != Some("event") || message.header_str(":event-type") != Some("chunk") {
            cx.out.extend_from_slice(message.raw);
            return Ok(());
        }
        let Ok(mut payload) = serde_json::from_slice::<Value>(message.payload) else {
            return Err(self.unreadable(cx.out));
        };
        let Some(encoded) = payload.get("bytes").and_then(Value::as_str) else {
            cx.out.extend_from_slice(message.raw);
            return Ok(());
        };
        let Some(mut event) =
            STANDARD.decode(encoded).ok().and_then(|inner| serde_json::from_slice::<Value>(&inner).ok())
        else {
            return Err(self.unreadable(cx.out));
        };
        let converse = CONVERSE_EVENTS.iter().find(|name| event.get(**name).is_some_and(Value::is_object));
        let touched = if event.get("type").is_some_and(Value::is_string) {
            self.anthropic(&mut event, cx)?
        } else if let Some(name) = converse {
            // Nova: ConverseStream's events, each as the chunk's member named for it.
            self.family = Some(NOVA);
            match event.get_mut(*name) {
                Some(value) => self.converse_event(name, value, cx)?,
                None => false,
            }
        } else {
            self.family_text(&mut event, cx)?
        };
        if !touched {
            cx.out.extend_from_slice(message.raw);
            return Ok(());
        }
        if let Some(object) = payload.as_object_mut() {
            object.insert("bytes".into(), Value::String(STANDARD.encode(event.to_string())));
        }
        cx.out.extend_from_slice(&message.with_payload(payload.to_string().as_bytes()));
        Ok(())
    }

    /// A chunk of a model family that streams one text field (Llama's `generation`, Titan's
    /// `outputText`, Mistral's `outputs[0].text`): the text goes through the one channel; the
    /// chunk that ends the answer (a stop reason, or Bedrock's invocation metrics) carries the
    /// tail. Whether the chunk changed.
    fn family_text(&mut self, event: &mut Value, cx: &mut Ctx<'_>) -> Result<bool, Blocked> {
        let last = ["/stop_reason", "/completionReason", "/outputs/0/stop_reason"]
            .iter()
            .any(|p| event.pointer(p).is_some_and(|v| !v.is_null()))
            || event.get("amazon-bedrock-invocationMetrics").is_some();
        let Some(pointer) = FAMILY_TEXT.iter().find(|p| event.pointer(p).is_some_and(Value::is_string)) else {
            if last {
                self.flush(None, cx)?;
            }
            return Ok(false);
        };
        self.family = Some(pointer);
        match event.pointer_mut(pointer) {
            Some(Value::String(text)) => {
                *text = self.feed(0, Field::Text, text, last, cx)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn bedrock(&mut self, message: &Message<'_>, cx: &mut Ctx<'_>) -> Result<(), Blocked> {
        let event = match message.header_str(":message-type") {
            Some("event") => message.header_str(":event-type").unwrap_or_default(),
            _ => "",
        };
        if !CONVERSE_EVENTS.contains(&event) {
            cx.out.extend_from_slice(message.raw);
            return Ok(());
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(message.payload) else {
            return Err(self.unreadable(cx.out));
        };
        if self.converse_event(event, &mut value, cx)? {
            cx.out.extend_from_slice(&message.with_payload(value.to_string().as_bytes()));
        } else {
            cx.out.extend_from_slice(message.raw);
        }
        Ok(())
    }

    /// One ConverseStream event (a frame's payload, or the member of a Nova InvokeModel chunk
    /// named for the event): a `contentBlockDelta`'s text goes through its block's window; the
    /// end of a block (or of the message) first sends what its window held, in events of its own.
    /// Whether `value` changed.
    fn converse_event(&mut self, event: &str, value: &mut Value, cx: &mut Ctx<'_>) -> Result<bool, Blocked> {
        let index = value.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        match event {
            "contentBlockDelta" => {
                let Some(delta) = value.get_mut("delta") else { return Ok(false) };
                let (field, pointer) = if delta.get("text").is_some() {
                    (Field::Text, "/text")
                } else if delta.get("toolUse").is_some() {
                    (Field::PartialJson, "/toolUse/input")
                } else {
                    (Field::Thinking, "/reasoningContent/text")
                };
                match delta.pointer_mut(pointer) {
                    Some(Value::String(text)) => {
                        *text = self.feed(index, field, text, false, cx)?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            "contentBlockStop" => {
                self.flush(Some(index), cx)?;
                Ok(false)
            }
            _ => {
                self.flush(None, cx)?;
                Ok(false)
            }
        }
    }

    /// A block's held tail, in a `contentBlockDelta` frame of its own.
    pub(super) fn bedrock_synthetic(&self, index: u64, field: Field, text: &str, out: &mut Vec<u8>) {
        let payload = converse_delta(index, field, text).to_string();
        let headers =
            [(":event-type", "contentBlockDelta"), (":content-type", "application/json"), (":message-type", "event")];
        out.extend_from_slice(&encode(&headers, payload.as_bytes()));
    }
}

/// The ConverseStream events a guard reads (the others pass byte for byte).
const CONVERSE_EVENTS: [&str; 4] = ["contentBlockDelta", "contentBlockStop", "messageStop", "metadata"];

/// Marks a Nova InvokeModel stream in `State::family`: its chunks hold ConverseStream's events,
/// each as the member named for it (`{"contentBlockDelta": {…}}`).
pub(super) const NOVA: &str = "nova";

/// A `contentBlockDelta` event's payload for a held tail.
pub(super) fn converse_delta(index: u64, field: Field, text: &str) -> Value {
    let delta = match field {
        Field::PartialJson => json!({"toolUse": {"input": text}}),
        Field::Thinking => json!({"reasoningContent": {"text": text}}),
        _ => json!({"text": text}),
    };
    json!({"contentBlockIndex": index, "delta": delta})
}

/// Where the model families that stream one text field put it.
const FAMILY_TEXT: [&str; 3] = ["/generation", "/outputText", "/outputs/0/text"];

/// A held tail in a chunk of the family's own shape (`{"generation": tail}`, …).
pub(super) fn family_chunk(pointer: &str, text: &str) -> Value {
    match pointer {
        "/outputs/0/text" => json!({"outputs": [{"text": text, "stop_reason": null}]}),
        "/outputText" => json!({"outputText": text, "index": 0}),
        _ => json!({"generation": text}),
    }
}

/// One Anthropic event as an InvokeModel `chunk` frame: a held tail's own delta.
pub(super) fn invoke_chunk(event: &Value, out: &mut Vec<u8>) {
    let payload = json!({"bytes": STANDARD.encode(event.to_string())}).to_string();
    let headers = [(":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")];
    out.extend_from_slice(&encode(&headers, payload.as_bytes()));
}
