//! Guarding an OpenAI Responses-API stream.
//!
//! Text comes in delta events, one channel per output item and part: `response.output_text.delta`
//! and `response.refusal.delta` (a message's part at `content_index`),
//! `response.function_call_arguments.delta`, `response.custom_tool_call_input.delta` and
//! `response.mcp_call_arguments.delta` (a tool call's arguments),
//! `response.reasoning_summary_text.delta` (`summary_index`) and `response.reasoning_text.delta`.
//! Each channel's window works as for chat chunks; what differs is where released text goes.
//! A channel's latest delta event is held until its next one comes: it then goes out carrying what
//! the window released in between (possibly `""`), so the tail released when the channel closes
//! rides on the provider's own last delta, and the client sees the events the provider sent, in
//! its order, with their `sequence_number`s. Any other event (but one that closes the channel)
//! first lets the held delta events go with what is released so far, so the order stays; should
//! a channel close right after such an event, its tail goes out in a copy of its last delta event
//! (the one event added, with the same `sequence_number`).
//!
//! The events that repeat a channel's whole text — the `….done` events (`text`, `refusal`,
//! `arguments`, `input`), `response.content_part.done`, `response.reasoning_summary_part.done`,
//! `response.output_item.done`, and the response in `response.completed` / `.incomplete` /
//! `.failed` — close the channel and carry its text as released: masked, placeholders restored.
//! Text such an event carries for a channel that never streamed is checked whole there.
//!
//! An audio transcription's stream has the same grammar in two events: `transcript.text.delta`
//! and `transcript.text.done` (the whole transcript), one channel.

use super::{write_parts, Blocked, Channel, Ctx, Field, State};
use crate::sse::Event;
use serde_json::Value;

/// A Responses channel's state beside its window.
#[derive(Default)]
pub(super) struct Lane {
    /// The channel's latest delta event, not sent yet.
    held: Option<Held>,
    /// Text released and not sent yet: the held event's `delta` when it goes.
    ready: String,
    /// All the text released: what the closing events repeat.
    full: String,
    /// The delta event sent last: the template of a tail that finds no held event.
    last: Option<Held>,
    closed: bool,
}

/// A delta event as the provider framed it: `event:` name, `id:`, the parsed data.
struct Held {
    name: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
    value: Value,
}

impl Held {
    /// Sends the event with `delta` set to `text`.
    fn send(&mut self, text: String, out: &mut Vec<u8>) {
        if let Some(object) = self.value.as_object_mut() {
            object.insert("delta".into(), Value::String(text));
        }
        write_parts(out, self.name.as_deref(), self.id.as_deref(), &self.value);
    }
}

/// The channel a delta event's text belongs to.
fn delta_field(kind: &str, value: &Value) -> Option<Field> {
    let at = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
    Some(match kind {
        "response.output_text.delta" => Field::OutputText(at("content_index")),
        "response.refusal.delta" => Field::Refusal(at("content_index")),
        "response.function_call_arguments.delta"
        | "response.custom_tool_call_input.delta"
        | "response.mcp_call_arguments.delta" => Field::Arguments,
        "response.reasoning_summary_text.delta" => Field::Summary(at("summary_index")),
        "response.reasoning_text.delta" => Field::Reasoning(at("content_index")),
        "transcript.text.delta" => Field::OutputText(0),
        _ => return None,
    })
}

/// The channel and member of a `….done` event that repeats one channel's text.
fn done_field(kind: &str, value: &Value) -> Option<(Field, &'static str)> {
    let at = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
    Some(match kind {
        "response.output_text.done" => (Field::OutputText(at("content_index")), "text"),
        "response.refusal.done" => (Field::Refusal(at("content_index")), "refusal"),
        "response.function_call_arguments.done" | "response.mcp_call_arguments.done" => (Field::Arguments, "arguments"),
        "response.custom_tool_call_input.done" => (Field::Arguments, "input"),
        "response.reasoning_summary_text.done" => (Field::Summary(at("summary_index")), "text"),
        "response.reasoning_text.done" => (Field::Reasoning(at("content_index")), "text"),
        "transcript.text.done" => (Field::OutputText(0), "text"),
        _ => return None,
    })
}

type Visit<'a> = dyn FnMut(Field, &mut String) -> Result<(), Blocked> + 'a;

/// A content part's text: `output_text` and `reasoning_text` parts' `text`, a `refusal`'s
/// `refusal`.
fn part_text(part: &mut Value, content_index: u64, f: &mut Visit<'_>) -> Result<(), Blocked> {
    let (field, key) = match part.get("type").and_then(Value::as_str) {
        Some("output_text") => (Field::OutputText(content_index), "text"),
        Some("refusal") => (Field::Refusal(content_index), "refusal"),
        Some("reasoning_text") => (Field::Reasoning(content_index), "text"),
        _ => return Ok(()),
    };
    match part.get_mut(key) {
        Some(Value::String(text)) => f(field, text),
        _ => Ok(()),
    }
}

/// Every text of one output item (a message's parts, a reasoning item's summary and text, a tool
/// call's arguments), each with its channel.
fn item_texts(item: &mut Value, f: &mut Visit<'_>) -> Result<(), Blocked> {
    let arguments = match item.get("type").and_then(Value::as_str) {
        Some("function_call" | "mcp_call") => Some("arguments"),
        Some("custom_tool_call") => Some("input"),
        _ => None,
    };
    if let Some(key) = arguments {
        if let Some(Value::String(text)) = item.get_mut(key) {
            f(Field::Arguments, text)?;
        }
    }
    if let Some(Value::Array(parts)) = item.get_mut("content") {
        for (at, part) in (0u64..).zip(parts.iter_mut()) {
            part_text(part, at, f)?;
        }
    }
    if let Some(Value::Array(parts)) = item.get_mut("summary") {
        for (at, part) in (0u64..).zip(parts.iter_mut()) {
            if let Some(Value::String(text)) = part.get_mut("text") {
                f(Field::Summary(at), text)?;
            }
        }
    }
    Ok(())
}

impl State {
    pub(super) fn responses(&mut self, event: &Event<'_>, mut value: Value, cx: &mut Ctx<'_>) -> Result<(), Blocked> {
        if let Some(n) = value.get("sequence_number").and_then(Value::as_u64) {
            self.sequence = n;
        }
        let kind = value.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        let index = value.get("output_index").and_then(Value::as_u64).unwrap_or(0);
        if let Some(field) = delta_field(&kind, &value) {
            return self.delta(event, value, index, field, cx);
        }
        let mut changed = false;
        let mut close = |state: &mut State, index: u64, field: Field, text: &mut String| -> Result<(), Blocked> {
            changed |= state.close(index, field, text, cx)?;
            Ok(())
        };
        if let Some((field, key)) = done_field(&kind, &value) {
            if let Some(Value::String(text)) = value.get_mut(key) {
                close(self, index, field, text)?;
            }
        } else {
            match kind.as_str() {
                "response.content_part.done" => {
                    let at = value.get("content_index").and_then(Value::as_u64).unwrap_or(0);
                    if let Some(part) = value.get_mut("part") {
                        part_text(part, at, &mut |field, text| close(self, index, field, text))?;
                    }
                }
                "response.reasoning_summary_part.done" => {
                    let at = value.get("summary_index").and_then(Value::as_u64).unwrap_or(0);
                    if let Some(Value::String(text)) = value.pointer_mut("/part/text") {
                        close(self, index, Field::Summary(at), text)?;
                    }
                }
                "response.output_item.done" => {
                    if let Some(item) = value.get_mut("item") {
                        item_texts(item, &mut |field, text| close(self, index, field, text))?;
                    }
                }
                "response.completed" | "response.incomplete" | "response.failed" => {
                    if let Some(Value::Array(items)) = value.pointer_mut("/response/output") {
                        for (at, item) in (0u64..).zip(items.iter_mut()) {
                            item_texts(item, &mut |field, text| close(self, at, field, text))?;
                        }
                    }
                }
                _ => {}
            }
        }
        // After the closes, which send their channels' held events with their tails.
        self.send_held(None, cx.out);
        if changed {
            super::write_event(cx.out, event, &value);
        } else {
            cx.out.extend_from_slice(event.raw);
        }
        Ok(())
    }

    /// A delta: its text joins the channel's window, the channel's held event goes out with
    /// what that released, and this event is held in its place.
    fn delta(
        &mut self,
        event: &Event<'_>,
        mut value: Value,
        index: u64,
        field: Field,
        cx: &mut Ctx<'_>,
    ) -> Result<(), Blocked> {
        self.send_held(Some((index, field)), cx.out);
        let Some(Value::String(text)) = value.get_mut("delta").map(std::mem::take) else {
            cx.out.extend_from_slice(event.raw);
            return Ok(());
        };
        let released = self.feed(index, field, &text, false, cx)?;
        let Some(lane) = self.lane(index, field) else { return Ok(()) };
        lane.closed = false;
        lane.ready.push_str(&released);
        lane.full.push_str(&released);
        if let Some(mut held) = lane.held.take() {
            held.send(std::mem::take(&mut lane.ready), cx.out);
            lane.last = Some(held);
        }
        lane.held = Some(Held { name: event.event.map(<[u8]>::to_vec), id: event.id.map(<[u8]>::to_vec), value });
        Ok(())
    }

    fn lane(&mut self, index: u64, field: Field) -> Option<&mut Lane> {
        self.channels.iter_mut().find(|c| c.index == index && c.field == field).and_then(|c| c.lane.as_deref_mut())
    }

    /// Sends every held delta event (but the channel `except`'s) with what is released so far.
    fn send_held(&mut self, except: Option<(u64, Field)>, out: &mut Vec<u8>) {
        for channel in &mut self.channels {
            if except == Some((channel.index, channel.field)) {
                continue;
            }
            let Some(lane) = channel.lane.as_deref_mut() else { continue };
            if let Some(mut held) = lane.held.take() {
                held.send(std::mem::take(&mut lane.ready), out);
                lane.last = Some(held);
            }
        }
    }

    /// Closes channel (`index`, `field`): its tail is released and sent, and `text` (what a
    /// closing event repeats) becomes the channel's text as released. A channel that never
    /// streamed has `text` checked whole instead. Whether `text` changed.
    fn close(&mut self, index: u64, field: Field, text: &mut String, cx: &mut Ctx<'_>) -> Result<bool, Blocked> {
        let open = self.lane(index, field).map(|lane| !lane.closed);
        let released = match open {
            Some(true) => {
                let tail = self.feed(index, field, "", true, cx)?;
                let Some(lane) = self.lane(index, field) else { return Ok(false) };
                lane.ready.push_str(&tail);
                lane.full.push_str(&tail);
                let ready = std::mem::take(&mut lane.ready);
                if let Some(mut held) = lane.held.take() {
                    held.send(ready, cx.out);
                    lane.last = Some(held);
                } else if let (false, Some(last)) = (ready.is_empty(), lane.last.as_mut()) {
                    last.send(ready, cx.out);
                }
                lane.closed = true;
                lane.full.clone()
            }
            Some(false) => self.lane(index, field).map(|lane| lane.full.clone()).unwrap_or_default(),
            None => {
                let whole = self.feed(index, field, text, true, cx)?;
                if let Some(lane) = self.lane(index, field) {
                    lane.full.clone_from(&whole);
                    lane.closed = true;
                }
                whole
            }
        };
        if *text == released {
            return Ok(false);
        }
        *text = released;
        Ok(true)
    }

    /// The body ended: every channel still open closes, its tail sent.
    pub(super) fn close_all(&mut self, cx: &mut Ctx<'_>) -> Result<(), Blocked> {
        let open: Vec<(u64, Field)> = self
            .channels
            .iter()
            .filter(|c: &&Channel| c.lane.as_ref().is_some_and(|lane| !lane.closed))
            .map(|c| (c.index, c.field))
            .collect();
        for (index, field) in open {
            self.close(index, field, &mut String::new(), cx)?;
        }
        Ok(())
    }
}
