//! Guarding a Bedrock ConverseStream answer: AWS event-stream frames, not SSE.
//!
//! A `contentBlockDelta` frame's text (`delta.text`, a tool call's `delta.toolUse.input`, the
//! reasoning's `delta.reasoningContent.text`) goes through its block's window, as an Anthropic
//! block's does, and the frame is sent again with its headers byte for byte around the new
//! payload (new length and CRCs). A block's held tail goes out in a `contentBlockDelta` frame of
//! its own before the block's `contentBlockStop`. A block ends the stream with one exception
//! frame (`validationException`; `internalServerException` for a stream that could not be
//! read), which AWS SDKs raise as the stream's error. Other frames pass
//! byte for byte.

use super::{Blocked, Field, State, Tally};
use crate::eventstream::{encode, Message};
use crate::guard::policy::{Masker, Policy};
use serde_json::{json, Value};

impl State {
    pub(super) fn bedrock(
        &mut self,
        message: &Message<'_>,
        policy: &Policy,
        masker: &mut Masker,
        tally: &mut Tally,
        out: &mut Vec<u8>,
    ) -> Result<(), Blocked> {
        let event = match message.header_str(":message-type") {
            Some("event") => message.header_str(":event-type").unwrap_or_default(),
            _ => "",
        };
        if !matches!(event, "contentBlockDelta" | "contentBlockStop" | "messageStop" | "metadata") {
            out.extend_from_slice(message.raw);
            return Ok(());
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(message.payload) else {
            return Err(self.unreadable(out));
        };
        let index = value.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        match event {
            "contentBlockDelta" => {
                let Some(delta) = value.get_mut("delta") else {
                    out.extend_from_slice(message.raw);
                    return Ok(());
                };
                let (field, pointer) = if delta.get("text").is_some() {
                    (Field::Text, "/text")
                } else if delta.get("toolUse").is_some() {
                    (Field::PartialJson, "/toolUse/input")
                } else {
                    (Field::Thinking, "/reasoningContent/text")
                };
                match delta.pointer_mut(pointer) {
                    Some(Value::String(text)) => {
                        *text = self.feed(index, field, text, false, policy, masker, tally, out)?;
                        out.extend_from_slice(&message.with_payload(value.to_string().as_bytes()));
                    }
                    _ => out.extend_from_slice(message.raw),
                }
            }
            "contentBlockStop" => {
                self.flush(Some(index), policy, masker, tally, out)?;
                out.extend_from_slice(message.raw);
            }
            _ => {
                self.flush(None, policy, masker, tally, out)?;
                out.extend_from_slice(message.raw);
            }
        }
        Ok(())
    }

    /// A block's held tail, in a `contentBlockDelta` frame of its own.
    pub(super) fn bedrock_synthetic(&self, index: u64, field: Field, text: &str, out: &mut Vec<u8>) {
        let delta = match field {
            Field::PartialJson => json!({"toolUse": {"input": text}}),
            Field::Thinking => json!({"reasoningContent": {"text": text}}),
            _ => json!({"text": text}),
        };
        let payload = json!({"contentBlockIndex": index, "delta": delta}).to_string();
        let headers =
            [(":event-type", "contentBlockDelta"), (":content-type", "application/json"), (":message-type", "event")];
        out.extend_from_slice(&encode(&headers, payload.as_bytes()));
    }
}
