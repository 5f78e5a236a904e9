//! Guarding a Gemini or Vertex AI stream (`streamGenerateContent?alt=sse`, or without `alt=sse`
//! a JSON array whose elements come as they are generated: each element is read as an event is,
//! the bytes between them pass as they came, and a tail the stream did not end with its
//! `finishReason` goes in an element of its own before the closing bracket).
//!
//! Each event is a whole `GenerateContentResponse`; a candidate's text comes in its
//! `content.parts[].text`, thought summaries in parts marked `thought: true`. Each candidate keeps
//! two channels, text and thoughts: a part's text is replaced by what its window releases (possibly
//! `""`), and the event that ends the candidate (`finishReason`) carries the held tail, appended to
//! its last part of that kind or, when it has none, in a part of its own put before its other parts.
//! A function call comes whole (Gemini does not stream its arguments): every string in its `args` is
//! checked there. A stream that ends without a `finishReason` gets its tails in one last event.

use super::{Blocked, Ctx, Field, State};
use serde_json::{json, Value};

/// How deep into a function call's `args` strings are looked for.
const MAX_ARGS_DEPTH: usize = 32;

impl State {
    pub(super) fn gemini(&mut self, data: &[u8], value: &mut Value, cx: &mut Ctx<'_>) -> Result<bool, Blocked> {
        let Some(Value::Array(candidates)) = value.get_mut("candidates") else { return Ok(false) };
        if self.template.is_none() {
            self.template = Some(data.to_vec());
        }
        let mut touched = false;
        for candidate in candidates.iter_mut() {
            let index = candidate.get("index").and_then(Value::as_u64).unwrap_or(0);
            if let Some(Value::Array(parts)) = candidate.pointer_mut("/content/parts") {
                for part in parts.iter_mut() {
                    let field = if is_thought(part) { Field::Thinking } else { Field::Text };
                    if let Some(Value::String(text)) = part.get_mut("text") {
                        *text = self.feed(index, field, text, false, cx)?;
                        touched = true;
                    }
                    if let Some(args) = part.pointer_mut("/functionCall/args") {
                        touched |= self.whole_strings(index, args, 0, cx)?;
                    }
                }
            }
            if candidate.get("finishReason").is_some_and(|f| !f.is_null()) {
                for field in [Field::Thinking, Field::Text] {
                    if !self.channels.iter().any(|c| c.index == index && c.field == field && !c.window.is_empty()) {
                        continue;
                    }
                    let tail = self.feed(index, field, "", true, cx)?;
                    if !tail.is_empty() {
                        put_tail(candidate, field, tail);
                        touched = true;
                    }
                }
            }
        }
        Ok(touched)
    }

    /// One element of a streamed JSON array: guarded as an SSE event's data is.
    pub(super) fn element(&mut self, element: &[u8], cx: &mut Ctx<'_>) -> Result<(), Blocked> {
        let Ok(mut value) = serde_json::from_slice::<Value>(element) else {
            return Err(self.unreadable(cx.out));
        };
        if self.gemini(element, &mut value, cx)? {
            self.write_element(&value.to_string().into_bytes(), cx.out);
        } else {
            self.write_element(element, cx.out);
        }
        Ok(())
    }

    /// What lies between a streamed array's elements, as it came; the tails held when the
    /// closing bracket comes go out first, in elements of their own.
    pub(super) fn between(&mut self, between: &[u8], cx: &mut Ctx<'_>) -> Result<(), Blocked> {
        let (before, after) = match between.iter().position(|&b| b == b']') {
            Some(at) => between.split_at(at),
            None => (between, &[][..]),
        };
        cx.out.extend_from_slice(before);
        if let Some(array) = self.array.as_mut() {
            array.opened |= before.contains(&b'[');
        }
        if !after.is_empty() {
            self.flush(None, cx)?;
            cx.out.extend_from_slice(after);
        }
        Ok(())
    }

    /// An element of a streamed array (a synthetic one after the comma it needs; the provider's
    /// own come after the provider's own commas).
    pub(super) fn write_element(&mut self, element: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(element);
        if let Some(array) = self.array.as_mut() {
            array.elements += 1;
        }
    }

    /// Checks every string in `value` whole (a function call's arguments). Whether any changed.
    fn whole_strings(
        &mut self,
        index: u64,
        value: &mut Value,
        depth: usize,
        cx: &mut Ctx<'_>,
    ) -> Result<bool, Blocked> {
        if depth > MAX_ARGS_DEPTH {
            return Ok(false);
        }
        let mut changed = false;
        match value {
            Value::String(text) => {
                let checked = self.feed(index, Field::Arguments, text, true, cx)?;
                changed = checked != *text;
                *text = checked;
            }
            Value::Array(items) => {
                for item in items {
                    changed |= self.whole_strings(index, item, depth + 1, cx)?;
                }
            }
            Value::Object(object) => {
                for item in object.values_mut() {
                    changed |= self.whole_strings(index, item, depth + 1, cx)?;
                }
            }
            _ => {}
        }
        Ok(changed)
    }

    /// The last event of a stream that ended without a `finishReason`: the held tail of one
    /// channel, in the stream's first event's frame (`modelVersion`, `responseId`).
    pub(super) fn gemini_synthetic(&self, index: u64, field: Field, text: &str) -> Value {
        let mut event = self
            .template
            .as_deref()
            .and_then(|raw| serde_json::from_slice::<Value>(raw).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        let mut candidate = json!({"content": {"parts": [], "role": "model"}, "index": index});
        put_tail(&mut candidate, field, text.to_string());
        if let Some(object) = event.as_object_mut() {
            object.insert("candidates".into(), json!([candidate]));
            object.remove("usageMetadata");
        }
        event
    }
}

fn is_thought(part: &Value) -> bool {
    part.get("thought").and_then(Value::as_bool) == Some(true)
}

/// Appends `tail` to the candidate's last part of `field`'s kind, or puts it in a part of its own
/// before the others (thoughts first, then text, then calls and the rest).
fn put_tail(candidate: &mut Value, field: Field, tail: String) {
    let thought = field == Field::Thinking;
    let Some(object) = candidate.as_object_mut() else { return };
    let content = object.entry("content").or_insert_with(|| json!({"role": "model"}));
    if !content.is_object() {
        *content = json!({"role": "model"});
    }
    let Some(content) = content.as_object_mut() else { return };
    let parts = content.entry("parts").or_insert_with(|| json!([]));
    if !parts.is_array() {
        *parts = json!([]);
    }
    let Some(parts) = parts.as_array_mut() else { return };
    let last = parts.iter_mut().rev().find(|p| is_thought(p) == thought && p.get("text").is_some_and(Value::is_string));
    if let Some(Value::String(text)) = last.and_then(|p| p.get_mut("text")) {
        text.push_str(&tail);
        return;
    }
    let at = if thought { 0 } else { parts.iter().take_while(|p| is_thought(p)).count() };
    let part = if thought { json!({"text": tail, "thought": true}) } else { json!({"text": tail}) };
    parts.insert(at.min(parts.len()), part);
}
