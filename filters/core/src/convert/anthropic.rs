//! OpenAI Chat Completions → Anthropic Messages, and the answers back: an OpenAI client on an
//! Anthropic backend.
//!
//! References: platform.openai.com/docs/api-reference/chat, docs.anthropic.com/en/api/messages,
//! /en/docs/build-with-claude/streaming, /en/api/errors, and Anthropic's own OpenAI SDK
//! compatibility notes (/en/api/openai-sdk) for what has no equivalent.
//!
//! Request: `system`/`developer` messages are hoisted into `system` (in order); `tool` messages
//! become `tool_result` blocks of a user turn (Anthropic joins consecutive turns of one role);
//! assistant `tool_calls` become `tool_use` blocks whose `input` is the parsed arguments;
//! images given as data URLs become base64 sources, other URLs URL sources. A parameter with no
//! Anthropic equivalent is refused with 400 naming it, unless it is sent at its default value
//! (`n: 1`, `presence_penalty: 0`, …) — a request is never silently changed. Dropped without
//! effect on the answer: `store`, `metadata` (OpenAI's stored-completions fields) and message
//! `name`s (Anthropic has no participant names).
//!
//! Responses: text blocks joined into `content`, `tool_use` blocks into `tool_calls`, thinking
//! blocks not shown (OpenAI's chat format has no place for them), `stop_reason` mapped to
//! `finish_reason`, usage mapped with cached and cache-writing tokens counted in
//! `prompt_tokens` (Anthropic reports them apart). Streams: events re-framed as
//! `chat.completion.chunk`s as they come, whatever the chunk boundaries; the usage chunk only
//! when the client asked for it (`stream_options.include_usage`).

use super::{function_tools, sse_data, stream_error, ChunkWriter};
use crate::api::anthropic::{
    Block, ErrorBody, Message, MessageContent, MessagesRequest, MessagesResponse, StreamEvent, Tool, Usage,
};
use crate::api::openai::{ChatCompletionRequest, ChatMessage, Content, ContentPart};
use crate::error::{shown, Error};
use crate::sse::SseDecoder;
use serde_json::{json, Map, Value};

/// Whether an OpenAI parameter value is its default (so dropping it changes nothing).
fn is_default(name: &str, value: &Value) -> bool {
    match (name, value) {
        (_, Value::Null) => true,
        ("n", v) => v.as_u64() == Some(1),
        ("presence_penalty" | "frequency_penalty", v) => v.as_f64() == Some(0.0),
        ("logprobs" | "parallel_tool_calls", Value::Bool(b)) => (name == "logprobs") != *b,
        ("response_format", v) => v.get("type").and_then(Value::as_str) == Some("text"),
        ("store", _) | ("metadata", _) | ("stream_options", _) => true,
        _ => false,
    }
}

/// The Anthropic request for an OpenAI chat request, sent to `model`.
pub fn request_from_openai(
    request: &ChatCompletionRequest,
    model: &str,
    default_max_tokens: u64,
) -> Result<MessagesRequest, Error> {
    let mut system: Vec<Value> = Vec::new();
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, message) in request.messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        match message.role.as_str() {
            "system" | "developer" => {
                for text in texts(message, &at("content"))? {
                    system.push(json!({"type": "text", "text": text}));
                }
            }
            "user" => {
                let content = match &message.content {
                    Some(Some(Content::Text(text))) => MessageContent::Text(text.clone()),
                    Some(Some(Content::Parts(parts))) => MessageContent::Blocks(
                        parts
                            .iter()
                            .enumerate()
                            .map(|(j, part)| user_block(part, &at(&format!("content[{j}]"))))
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => return Err(Error::invalid(at("content"), "a user message needs content")),
                };
                messages.push(Message { role: "user".into(), content });
            }
            "assistant" => {
                let mut blocks: Vec<Block> = texts(message, &at("content"))?
                    .into_iter()
                    .filter(|t| !t.is_empty())
                    .map(|text| Block { kind: "text".into(), text: Some(text), ..Block::default() })
                    .collect();
                for (j, call) in message.tool_calls.iter().flatten().enumerate() {
                    let field = at(&format!("tool_calls[{j}]"));
                    let function = call.function.as_ref().ok_or_else(|| Error::invalid(&field, "needs a function"))?;
                    let arguments = function.arguments.as_deref().unwrap_or("{}");
                    let input: Value = serde_json::from_str(if arguments.trim().is_empty() { "{}" } else { arguments })
                        .map_err(|_| Error::invalid(format!("{field}.function.arguments"), "is not JSON"))?;
                    blocks.push(Block {
                        kind: "tool_use".into(),
                        id: call.id.clone(),
                        name: function.name.clone(),
                        input: Some(input),
                        ..Block::default()
                    });
                }
                // An empty assistant turn has nothing to say to Anthropic (it refuses empty text).
                if !blocks.is_empty() {
                    messages.push(Message { role: "assistant".into(), content: MessageContent::Blocks(blocks) });
                }
            }
            "tool" => {
                let content = texts(message, &at("content"))?.join("\n");
                let block = Block {
                    kind: "tool_result".into(),
                    tool_use_id: Some(
                        message
                            .tool_call_id
                            .clone()
                            .ok_or_else(|| Error::invalid(at("tool_call_id"), "is required"))?,
                    ),
                    content: Some(Value::String(content)),
                    ..Block::default()
                };
                messages.push(Message { role: "user".into(), content: MessageContent::Blocks(vec![block]) });
            }
            other => {
                return Err(Error::invalid(
                    at("role"),
                    format!("role '{}' is not supported by this backend", shown(other)),
                ))
            }
        }
    }

    let rest = Map::new();
    let mut temperature = None;
    let mut top_p = None;
    let mut stop_sequences = None;
    let mut tool_choice: Option<Value> = None;
    let mut parallel = true;
    let mut user = None;
    for (name, value) in &request.rest {
        match name.as_str() {
            "temperature" => match value.as_f64() {
                Some(t) if (0.0..=1.0).contains(&t) => temperature = Some(t),
                Some(t) => {
                    return Err(Error::invalid("temperature", format!("{t} is outside 0–1, the range of this backend")))
                }
                None if value.is_null() => {}
                None => return Err(Error::invalid("temperature", "must be a number")),
            },
            "top_p" => top_p = value.as_f64(),
            "stop" => {
                stop_sequences = match value {
                    Value::String(s) => Some(vec![s.clone()]),
                    Value::Array(items) => {
                        Some(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect::<Vec<_>>())
                    }
                    _ => None,
                }
            }
            "tool_choice" => {
                tool_choice = match value {
                    Value::String(s) if s == "auto" => Some(json!({"type": "auto"})),
                    Value::String(s) if s == "none" => Some(json!({"type": "none"})),
                    Value::String(s) if s == "required" => Some(json!({"type": "any"})),
                    Value::Object(o) => match o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
                        Some(name) => Some(json!({"type": "tool", "name": name})),
                        None => return Err(Error::invalid("tool_choice", "names no function")),
                    },
                    Value::Null => None,
                    _ => return Err(Error::invalid("tool_choice", "must be auto, none, required or a function")),
                }
            }
            "parallel_tool_calls" => parallel = value.as_bool() != Some(false),
            "user" => user = value.as_str().map(str::to_string),
            _ if is_default(name, value) => {}
            _ => {
                return Err(Error::invalid(
                    name,
                    format!("'{}' is not supported by this backend (anthropic)", shown(name)),
                ));
            }
        }
    }
    if !parallel {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if let Some(object) = choice.as_object_mut() {
            object.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    let tools = match &request.tools {
        None => None,
        Some(tools) => Some(
            function_tools(tools)?
                .into_iter()
                .map(|f| Tool {
                    name: f.name.to_string(),
                    description: f.description.and_then(Value::as_str).map(str::to_string),
                    input_schema: f.parameters.cloned().unwrap_or_else(|| json!({"type": "object"})),
                    rest: Map::new(),
                })
                .collect(),
        ),
    };
    Ok(MessagesRequest {
        model: model.to_string(),
        messages,
        max_tokens: request.max_completion_tokens.or(request.max_tokens).unwrap_or(default_max_tokens),
        system: (!system.is_empty()).then_some(Value::Array(system)),
        stream: request.stream.filter(|s| *s),
        temperature,
        top_p,
        stop_sequences,
        tools,
        tool_choice,
        metadata: user.map(|u| json!({"user_id": u})),
        rest,
    })
}

/// The text of a message's content (a string, or text/refusal parts).
fn texts(message: &ChatMessage, field: &str) -> Result<Vec<String>, Error> {
    match &message.content {
        None | Some(None) => Ok(Vec::new()),
        Some(Some(Content::Text(text))) => Ok(vec![text.clone()]),
        Some(Some(Content::Parts(parts))) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| match (part.kind.as_str(), &part.text) {
                ("text", Some(text)) => Ok(text.clone()),
                ("refusal", _) => Ok(part.rest.get("refusal").and_then(Value::as_str).unwrap_or("").to_string()),
                (kind, _) => Err(Error::invalid(
                    format!("{field}[{j}]"),
                    format!("'{}' parts are not supported here", shown(kind)),
                )),
            })
            .collect(),
    }
}

fn user_block(part: &ContentPart, field: &str) -> Result<Block, Error> {
    match part.kind.as_str() {
        "text" => Ok(Block { kind: "text".into(), text: part.text.clone(), ..Block::default() }),
        "image_url" => {
            let url = part
                .rest
                .get("image_url")
                .and_then(|i| i.get("url"))
                .and_then(Value::as_str)
                .ok_or_else(|| Error::invalid(format!("{field}.image_url.url"), "is required"))?;
            let source = match url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
                Some((media_type, data)) => json!({"type": "base64", "media_type": media_type, "data": data}),
                None if url.starts_with("https://") || url.starts_with("http://") => json!({"type": "url", "url": url}),
                None => {
                    return Err(Error::invalid(
                        format!("{field}.image_url.url"),
                        "must be an http(s) or base64 data URL",
                    ))
                }
            };
            Ok(Block { kind: "image".into(), source: Some(source), ..Block::default() })
        }
        other => Err(Error::invalid(field, format!("'{}' parts are not supported by this backend", shown(other)))),
    }
}

/// `finish_reason` for an Anthropic `stop_reason`.
pub fn finish_reason(stop_reason: Option<&str>) -> Option<&'static str> {
    match stop_reason? {
        "end_turn" | "stop_sequence" | "pause_turn" => Some("stop"),
        "max_tokens" | "model_context_window_exceeded" => Some("length"),
        "tool_use" => Some("tool_calls"),
        "refusal" => Some("content_filter"),
        _ => Some("stop"),
    }
}

/// OpenAI `usage` for Anthropic usage: cached and cache-writing tokens are part of the prompt.
pub fn usage(u: &Usage) -> Value {
    let cached = u.cache_read_input_tokens.unwrap_or(0);
    let written = u.cache_creation_input_tokens.unwrap_or(0);
    let prompt = u.input_tokens.unwrap_or(0) + cached + written;
    let completion = u.output_tokens.unwrap_or(0);
    // Cache writes only where there were some, as OpenAI reports them.
    let details = match written {
        0 => json!({"cached_tokens": cached}),
        _ => json!({"cached_tokens": cached, "cache_write_tokens": written}),
    };
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
    });
    // Reasoning only where there was some, as cache writes.
    let thinking = u.output_tokens_details.and_then(|d| d.thinking_tokens).filter(|&n| n > 0);
    if let (Some(thinking), Some(object)) = (thinking, usage.as_object_mut()) {
        object.insert("completion_tokens_details".into(), json!({"reasoning_tokens": thinking}));
    }
    usage
}

/// A complete Anthropic response as an OpenAI chat completion.
pub fn response_to_openai(response: &MessagesResponse, created: u64) -> Value {
    let text: Vec<&str> =
        response.content.iter().filter(|b| b.kind == "text").filter_map(|b| b.text.as_deref()).collect();
    let tool_calls: Vec<Value> = response
        .content
        .iter()
        .filter(|b| b.kind == "tool_use")
        .map(|b| {
            json!({
                "id": b.id,
                "type": "function",
                "function": {"name": b.name, "arguments": b.input.as_ref().map_or_else(|| "{}".to_string(), Value::to_string)},
            })
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text.concat()) }});
    if let (false, Some(object)) = (tool_calls.is_empty(), message.as_object_mut()) {
        object.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    json!({
        "id": response.id,
        "object": "chat.completion",
        "created": created,
        "model": response.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(response.stop_reason.as_deref())}],
        "usage": usage(&response.usage),
    })
}

/// The OpenAI error for an Anthropic error response: `(status, body)`. `None` when the body is
/// not an Anthropic error.
pub fn error_to_openai(status: u16, body: &[u8]) -> Option<(u16, Value)> {
    let error: ErrorBody = serde_json::from_slice(body).ok().filter(|e: &ErrorBody| e.kind == "error")?;
    let (status, kind, code) = match error.error.kind.as_str() {
        "invalid_request_error" => (status, "invalid_request_error", Value::Null),
        "authentication_error" => (status, "invalid_request_error", json!("invalid_api_key")),
        "permission_error" => (status, "invalid_request_error", json!("permission_denied")),
        "not_found_error" => (status, "invalid_request_error", json!("not_found")),
        "request_too_large" => (status, "invalid_request_error", json!("request_too_large")),
        "rate_limit_error" => (status, "requests", json!("rate_limit_exceeded")),
        // 529: OpenAI clients know 503 as "try again later".
        "overloaded_error" => (503, "server_error", json!("overloaded")),
        _ => (status, "server_error", Value::Null),
    };
    Some((status, json!({"error": {"message": error.error.message, "type": kind, "param": null, "code": code}})))
}

/// Re-frames an Anthropic Messages stream as OpenAI `chat.completion.chunk` events.
pub struct StreamToOpenAi {
    decoder: SseDecoder,
    writer: ChunkWriter,
    /// Anthropic content-block index → OpenAI tool-call index, for `tool_use` blocks.
    tools: Vec<(u32, u32)>,
    usage: Usage,
    finish: Option<&'static str>,
    done: bool,
}

impl StreamToOpenAi {
    pub fn new(max_event_bytes: usize, created: u64, include_usage: bool, model: &str) -> Self {
        let mut writer = ChunkWriter::new("", model, include_usage);
        writer.created = created;
        StreamToOpenAi {
            decoder: SseDecoder::new(max_event_bytes),
            writer,
            tools: Vec::new(),
            usage: Usage::default(),
            finish: None,
            done: false,
        }
    }

    /// Sets `created` (seconds) of the chunks, once: the clock is read with the first bytes.
    pub fn set_created(&mut self, secs: u64) {
        self.writer.set_created(secs);
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        self.writer.chunk(out, delta, finish);
    }

    /// Translates what `bytes` completes; an error stops the stream with an error event.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if self.done {
            return Ok(());
        }
        if self.decoder.push(bytes).is_err() {
            return Err(self.fail(out, "upstream stream event too large"));
        }
        while let Some(event) = self.decoder.next_event() {
            let Some(payload) = event.data.as_deref().map(<[u8]>::to_vec) else { continue };
            let parsed: StreamEvent = match serde_json::from_slice(&payload) {
                Ok(parsed) => parsed,
                Err(_) => return Err(self.fail(out, "upstream stream event is not JSON")),
            };
            self.event(parsed, out);
            if self.done {
                break;
            }
        }
        Ok(())
    }

    fn event(&mut self, event: StreamEvent, out: &mut Vec<u8>) {
        match event.kind.as_str() {
            "message_start" => {
                if let Some(message) = event.message {
                    self.writer.id = message.id;
                    if !message.model.is_empty() {
                        self.writer.model = message.model;
                    }
                    self.usage = message.usage;
                }
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            "content_block_start" => {
                let (Some(index), Some(block)) = (event.index, event.content_block) else { return };
                match block.kind.as_str() {
                    "tool_use" => {
                        let openai = self.tools.len() as u32;
                        self.tools.push((index, openai));
                        let call = json!({"index": openai, "id": block.id, "type": "function",
                                          "function": {"name": block.name, "arguments": ""}});
                        self.chunk(out, json!({"tool_calls": [call]}), None);
                    }
                    "text" => {
                        if let Some(text) = block.text.filter(|t| !t.is_empty()) {
                            self.chunk(out, json!({"content": text}), None);
                        }
                    }
                    _ => {} // thinking: not shown in the chat format
                }
            }
            "content_block_delta" => {
                let Some(delta) = event.delta else { return };
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(text) = delta.text {
                            self.chunk(out, json!({"content": text}), None);
                        }
                    }
                    Some("input_json_delta") => {
                        let Some(partial) = delta.partial_json.filter(|p| !p.is_empty()) else { return };
                        let Some((_, openai)) = self.tools.iter().find(|(a, _)| Some(*a) == event.index) else {
                            return;
                        };
                        let call = json!({"index": openai, "function": {"arguments": partial}});
                        self.chunk(out, json!({"tool_calls": [call]}), None);
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = event.usage {
                    // Cumulative counters: a newer report replaces what it carries.
                    let current = &mut self.usage;
                    current.output_tokens = u.output_tokens.or(current.output_tokens);
                    current.input_tokens = u.input_tokens.or(current.input_tokens);
                    current.cache_read_input_tokens = u.cache_read_input_tokens.or(current.cache_read_input_tokens);
                    current.cache_creation_input_tokens =
                        u.cache_creation_input_tokens.or(current.cache_creation_input_tokens);
                }
                if let Some(stop) = event.delta.and_then(|d| d.stop_reason) {
                    self.finish = finish_reason(Some(&stop));
                }
                self.chunk(out, json!({}), Some(self.finish.unwrap_or("stop")));
            }
            "message_stop" => self.end(out),
            "error" => {
                let detail = event.error.map(|e| (e.kind, e.message)).unwrap_or_default();
                let (kind, code) = if detail.0 == "overloaded_error" {
                    ("server_error", "overloaded")
                } else {
                    ("server_error", "upstream_error")
                };
                sse_data(out, &json!({"error": {"message": detail.1, "type": kind, "param": null, "code": code}}));
                self.done = true;
            }
            _ => {} // ping, content_block_stop, and events added later
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.writer.end(out, usage(&self.usage));
        self.done = true;
    }

    /// The upstream stream ended. A stream cut before `message_stop` gets an error event, never
    /// a clean end.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let (last, _) = self.decoder.finish();
        if let Some(event) = last.and_then(|e| e.data.map(|d| d.into_owned())) {
            if let Ok(parsed) = serde_json::from_slice::<StreamEvent>(&event) {
                self.event(parsed, out);
            }
        }
        if !self.done {
            let _ = self.fail(out, "upstream stream ended before message_stop");
        }
    }

    fn fail(&mut self, out: &mut Vec<u8>, detail: &str) -> Error {
        self.done = true;
        stream_error(out, detail, crate::error::Dialect::OpenAi)
    }
}
