//! Translations between provider APIs: `convert::<backend>` turns a client's request into the
//! backend's and the backend's answers (JSON, streams, errors) back into the client's dialect.
//! Pure functions and sans-I/O stream translators; the provider-rewrite stage drives them.

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod openai;

use crate::error::{Dialect, Error};
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
            let refuse =
                |param: String, message: &str| Error::InvalidRequest { param: Some(param), message: message.into() };
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
    let refuse = |param: String, message: String| Error::InvalidRequest { param: Some(param), message };
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
                other => {
                    Err(refuse(format!("{field}[{j}]"), format!("'{other}' parts are not supported by this backend")))
                }
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
