//! Translations between provider APIs: `convert::<backend>` turns a client's request into the
//! backend's and the backend's answers (JSON, streams, errors) back into the client's dialect.
//! Pure functions and sans-I/O stream translators; the provider-rewrite stage drives them.

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod openai;

use crate::error::{shown, Dialect, Error};
use serde_json::{json, Value};

/// A function tool of an OpenAI request, as every backend's tool list needs it.
pub struct FunctionTool<'a> {
    pub name: &'a str,
    pub description: Option<&'a Value>,
    /// JSON Schema of the arguments.
    pub parameters: Option<&'a Value>,
}

/// The function tools of an OpenAI `tools` list; other tool types are refused, naming them.
pub fn function_tools(tools: &[Value]) -> Result<Vec<FunctionTool<'_>>, Error> {
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let refuse = |param: String, message: &str| Error::invalid(param, message);
            let function = tool
                .get("function")
                .filter(|_| tool.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| refuse(format!("tools[{i}]"), "only function tools are supported"))?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| refuse(format!("tools[{i}].function.name"), "is required"))?;
            Ok(FunctionTool { name, description: function.get("description"), parameters: function.get("parameters") })
        })
        .collect()
}

/// Writes OpenAI `chat.completion.chunk` events: what every translated stream ends up as for an
/// OpenAI client.
#[derive(Debug, Clone, Default)]
pub struct ChunkWriter {
    pub id: String,
    pub model: String,
    pub created: u64,
    /// The client asked for usage: every chunk carries `"usage": null` and the last the usage.
    pub include_usage: bool,
}

impl ChunkWriter {
    pub fn new(id: &str, model: &str, include_usage: bool) -> Self {
        ChunkWriter { id: id.to_string(), model: model.to_string(), created: 0, include_usage }
    }

    /// Sets `created` once: the clock is read with the first bytes.
    pub fn set_created(&mut self, secs: u64) {
        if self.created == 0 {
            self.created = secs;
        }
    }

    /// One chunk of choice 0.
    pub fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        let mut chunk = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                               "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if let (true, Some(object)) = (self.include_usage, chunk.as_object_mut()) {
            object.insert("usage".into(), Value::Null);
        }
        sse_data(out, &chunk);
    }

    /// The end: the usage chunk (when asked for) and `[DONE]`.
    pub fn end(&self, out: &mut Vec<u8>, usage: Value) {
        if self.include_usage {
            let chunk = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                               "model": self.model, "choices": [], "usage": usage});
            sse_data(out, &chunk);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// Appends a turn, merged into the previous one when it has the same role (Gemini and Bedrock
/// want roles to alternate). `key` is where the turn's items go (`parts`, `content`).
pub fn push_turn(turns: &mut Vec<Value>, role: &str, key: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut().filter(|t| t.get("role").and_then(Value::as_str) == Some(role)) {
        if let Some(existing) = last.get_mut(key).and_then(Value::as_array_mut) {
            existing.extend(items);
            return;
        }
    }
    let mut turn = serde_json::Map::new();
    turn.insert("role".into(), json!(role));
    turn.insert(key.into(), Value::Array(items));
    turns.push(Value::Object(turn));
}

/// An OpenAI message's content as `{"text"}` items plus images, each image made by `image`
/// from its URL (`image(url, field)`); other part types are refused, naming them.
pub fn text_and_images(
    content: Option<&crate::api::openai::Content>,
    field: &str,
    image: &dyn Fn(&str, &str) -> Result<Value, Error>,
) -> Result<Vec<Value>, Error> {
    use crate::api::openai::Content;
    let refuse = |param: String, message: String| Error::invalid(param, message);
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![json!({"text": text})]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| match part.kind.as_str() {
                "text" => Ok(json!({"text": part.text.as_deref().unwrap_or("")})),
                "image_url" => {
                    let at = format!("{field}[{j}].image_url.url");
                    let url = part.rest.get("image_url").and_then(|i| i.get("url")).and_then(Value::as_str);
                    image(url.ok_or_else(|| refuse(at.clone(), "is required".into()))?, &at)
                }
                other => Err(refuse(
                    format!("{field}[{j}]"),
                    format!("'{}' parts are not supported by this backend", shown(other)),
                )),
            })
            .collect(),
    }
}

/// One `data:` event.
pub fn sse_data(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Ends a translated stream with one error event in `dialect`.
pub fn stream_error(out: &mut Vec<u8>, detail: &str, dialect: Dialect) -> Error {
    let error = Error::UpstreamInvalid { detail: detail.to_string() };
    out.extend_from_slice(&error.sse_event(dialect));
    error
}

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

/// Bad input never panics a translator: arbitrary bytes into every stream translator, cut
/// anywhere, and arbitrary JSON into every request translator (a panic would kill the filter's
/// VM for every request on that worker). Mutations of real fixtures reach deep paths.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod robustness {
    use super::*;
    use proptest::prelude::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../../tests/fixtures/responses/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn translators() -> Vec<Box<dyn StreamTranslate>> {
        vec![
            Box::new(anthropic::StreamToOpenAi::new(4096, 0, true, "m")),
            Box::new(openai::StreamToAnthropic::new(4096, "m")),
            Box::new(gemini::StreamToOpenAi::new(4096, true, "m")),
            Box::new(bedrock::StreamToOpenAi::new(4096, true, "m")),
            Box::new(Chain::new(
                gemini::StreamToOpenAi::new(4096, true, "m"),
                openai::StreamToAnthropic::new(4096, "m"),
            )),
            Box::new(Chain::new(
                bedrock::StreamToOpenAi::new(4096, true, "m"),
                openai::StreamToAnthropic::new(4096, "m"),
            )),
        ]
    }

    fn seeds() -> Vec<Vec<u8>> {
        let events: Vec<serde_json::Value> =
            serde_json::from_slice(&fixture("bedrock/converse-stream.events.json")).unwrap();
        let bedrock: Vec<u8> = events
            .iter()
            .flat_map(|e| {
                crate::eventstream::encode(
                    &[(":event-type", e["event"].as_str().unwrap()), (":message-type", "event")],
                    e["payload"].to_string().as_bytes(),
                )
            })
            .collect();
        vec![
            fixture("anthropic/messages-tool-stream.sse"),
            fixture("openai/chat-tools-stream.sse"),
            fixture("gemini/function-call-stream.sse"),
            bedrock,
        ]
    }

    fn feed(input: &[u8], cuts: &[usize]) {
        for mut t in translators() {
            let mut out = Vec::new();
            let mut last = 0;
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            points.sort_unstable();
            for p in points {
                let _ = t.push(&input[last..p.max(last)], &mut out);
                last = p.max(last);
            }
            let _ = t.push(&input[last..], &mut out);
            t.finish(&mut out);
            assert!(out.len() < 64 * (input.len() + 4096), "bounded output");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn stream_translators_take_any_bytes(input in proptest::collection::vec(any::<u8>(), 0..2048),
                                             cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            feed(&input, &cuts);
        }

        #[test]
        fn stream_translators_take_mutated_fixtures(which in 0usize..4, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                                                    cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let mut input = seeds()[which].clone();
            for (at, byte) in flips {
                let at = at % input.len();
                input[at] = byte;
            }
            feed(&input, &cuts);
        }

        #[test]
        fn request_translators_take_any_json(text in "[\\[\\]{}\",:a-z0-9 .\\-]{0,200}", which in 0usize..3) {
            let seeds = [
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:x;base64,"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{"}}]},{"role":"tool","tool_call_id":"a","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"stop":["a"],"n":2,"tool_choice":{"function":{}}}"#,
                r#"{"model":"m","max_tokens":1,"system":[{"type":"text","text":"s"}],"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"a","content":[{"type":"image"}]},{"type":"image","source":{"type":"url"}}]}],"tool_choice":{"type":"tool"}}"#,
                r#"{"model":"m","messages":[]}"#,
            ];
            // Arbitrary text spliced into a valid request: whatever still parses must translate or
            // be refused, never panic.
            let mut body = seeds[which].to_string();
            let at = text.len() % body.len();
            body.insert_str(at, &text);
            for body in [body.as_str(), text.as_str(), seeds[which]] {
                if let Ok(request) = serde_json::from_str::<crate::api::openai::ChatCompletionRequest>(body) {
                    let _ = anthropic::request_from_openai(&request, "m", 16);
                    let _ = gemini::request_from_openai(&request);
                    let _ = bedrock::request_from_openai(&request);
                }
                if let Ok(request) = serde_json::from_str::<crate::api::anthropic::MessagesRequest>(body) {
                    let _ = openai::request_from_anthropic(&request, "m", openai::MaxTokensField::MaxTokens);
                }
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
                    let _ = gemini::response_to_openai(&value, "m", 0);
                    let _ = bedrock::response_to_openai(&value, "m", 0);
                    let _ = gemini::error_to_openai(500, body.as_bytes());
                    let _ = bedrock::error_to_openai(500, body.as_bytes());
                    let _ = openai::error_to_anthropic(500, body.as_bytes());
                    let _ = anthropic::error_to_openai(500, body.as_bytes());
                }
            }
        }
    }
}
