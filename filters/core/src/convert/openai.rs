//! Anthropic Messages → OpenAI Chat Completions, and the answers back: an Anthropic client on an
//! OpenAI (or OpenAI-compatible, or Azure) backend.
//!
//! References: docs.anthropic.com/en/api/messages, /en/docs/build-with-claude/streaming,
//! /en/api/errors; platform.openai.com/docs/api-reference/chat.
//!
//! Request: `system` becomes the first (system) message; a user turn's `tool_result` blocks
//! become `tool` messages (placed first, right after the assistant turn that called the tools),
//! its text and images a user message; an assistant turn's `tool_use` blocks become
//! `tool_calls` with the input serialised as the arguments. Thinking blocks of earlier turns
//! are dropped (a chat completion has no place for them; Anthropic itself ignores them in
//! history). `top_k` and an enabled `thinking` have no OpenAI equivalent and are refused with
//! 400 naming them. Streams ask for usage (`stream_options.include_usage`), which the
//! translated `message_delta` carries.
//!
//! Responses: content becomes a text block, tool calls `tool_use` blocks (arguments parsed);
//! `finish_reason` maps to `stop_reason`; usage maps with cached prompt tokens reported as
//! `cache_read_input_tokens` and the tokens written to the cache as
//! `cache_creation_input_tokens`, both left out of `input_tokens` (Anthropic's convention). Streams:
//! chunks are re-framed as Anthropic events (`message_start`, one content block per text run or
//! tool call, `message_delta` with the stop reason and usage, `message_stop`).

use crate::api::anthropic::{Block, MessageContent, MessagesRequest};
use crate::api::openai::{ChatCompletionChunk, ChatCompletionResponse, Usage};
use crate::error::{shown, Dialect, Error};
use crate::sse::SseDecoder;
use serde_json::{json, Map, Value};

/// Which token-limit field the backend understands: OpenAI's own API wants
/// `max_completion_tokens` (reasoning models refuse `max_tokens`); other servers `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    MaxCompletionTokens,
    MaxTokens,
}

/// The OpenAI chat request for an Anthropic Messages request, sent to `model`.
pub fn request_from_anthropic(request: &MessagesRequest, model: &str, field: MaxTokensField) -> Result<Value, Error> {
    let mut messages: Vec<Value> = Vec::with_capacity(request.messages.len() + 1);
    match &request.system {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(json!({"role": "system", "content": text})),
        Some(Value::Array(blocks)) => {
            let text: Vec<&str> = blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
            if text.len() != blocks.len() {
                return Err(Error::invalid("system", "only text blocks are supported here"));
            }
            messages.push(json!({"role": "system", "content": text.join("\n\n")}));
        }
        Some(_) => return Err(Error::invalid("system", "must be a string or text blocks")),
    }
    for (i, message) in request.messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let blocks: Vec<Block> = match &message.content {
            MessageContent::Text(text) => {
                messages.push(json!({"role": message.role, "content": text}));
                continue;
            }
            MessageContent::Blocks(blocks) => blocks.clone(),
        };
        match message.role.as_str() {
            "user" => {
                let mut parts = Vec::new();
                for (j, block) in blocks.iter().enumerate() {
                    let field = at(&format!("content[{j}]"));
                    match block.kind.as_str() {
                        "tool_result" => {
                            let id =
                                block.tool_use_id.clone().ok_or_else(|| Error::invalid(&field, "needs tool_use_id"))?;
                            let content = tool_result_text(block.content.as_ref(), &field)?;
                            // Tool answers come first: they must follow the assistant's calls.
                            messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
                        }
                        "text" => parts.push(json!({"type": "text", "text": block.text.as_deref().unwrap_or("")})),
                        "image" => parts.push(image_part(block.source.as_ref(), &field)?),
                        other => {
                            return Err(Error::invalid(
                                field,
                                format!("'{}' blocks are not supported by this backend", shown(other)),
                            ))
                        }
                    }
                }
                if !parts.is_empty() {
                    messages.push(json!({"role": "user", "content": parts}));
                }
            }
            "assistant" => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for (j, block) in blocks.iter().enumerate() {
                    match block.kind.as_str() {
                        "text" => text.push_str(block.text.as_deref().unwrap_or("")),
                        "tool_use" => calls.push(json!({
                            "id": block.id,
                            "type": "function",
                            "function": {"name": block.name, "arguments": block.input.as_ref().map_or_else(|| "{}".into(), Value::to_string)},
                        })),
                        "thinking" | "redacted_thinking" => {}
                        other => {
                            let field = at(&format!("content[{j}]"));
                            return Err(Error::invalid(field, format!("'{}' blocks are not supported by this backend", shown(other))));
                        }
                    }
                }
                let mut turn = Map::new();
                turn.insert("role".into(), json!("assistant"));
                turn.insert("content".into(), if text.is_empty() { Value::Null } else { Value::String(text) });
                if !calls.is_empty() {
                    turn.insert("tool_calls".into(), Value::Array(calls));
                }
                messages.push(Value::Object(turn));
            }
            other => return Err(Error::invalid(at("role"), format!("role '{}' is not a Messages role", shown(other)))),
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages));
    let limit = match field {
        MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        MaxTokensField::MaxTokens => "max_tokens",
    };
    out.insert(limit.into(), json!(request.max_tokens));
    if let Some(t) = request.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if let Some(stop) = &request.stop_sequences {
        out.insert("stop".into(), json!(stop));
    }
    if request.stream == Some(true) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(user) = request.metadata.as_ref().and_then(|m| m.get("user_id")).and_then(Value::as_str) {
        out.insert("user".into(), json!(user));
    }
    if let Some(tools) = &request.tools {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut function = json!({"name": t.name, "parameters": t.input_schema});
                if let (Some(d), Some(f)) = (&t.description, function.as_object_mut()) {
                    f.insert("description".into(), json!(d));
                }
                json!({"type": "function", "function": function})
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &request.tool_choice {
        let kind = choice.get("type").and_then(Value::as_str).unwrap_or("");
        let mapped = match kind {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => match choice.get("name").and_then(Value::as_str) {
                Some(name) => json!({"type": "function", "function": {"name": name}}),
                None => return Err(Error::invalid("tool_choice.name", "is required")),
            },
            _ => return Err(Error::invalid("tool_choice", "must be auto, any, none or tool")),
        };
        out.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    for (name, value) in &request.rest {
        match name.as_str() {
            "thinking" if value.get("type").and_then(Value::as_str) == Some("disabled") => {}
            "service_tier" if value.as_str() == Some("auto") => {}
            _ if value.is_null() => {}
            _ => {
                return Err(Error::invalid(
                    name,
                    format!("'{}' is not supported by this backend (openai)", shown(name)),
                ))
            }
        }
    }
    Ok(Value::Object(out))
}

fn tool_result_text(content: Option<&Value>, field: &str) -> Result<String, Error> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|b| match (b.get("type").and_then(Value::as_str), b.get("text").and_then(Value::as_str)) {
                (Some("text"), Some(text)) => Ok(text),
                _ => Err(Error::invalid(format!("{field}.content"), "only text tool results are supported here")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("\n")),
        Some(_) => Err(Error::invalid(format!("{field}.content"), "must be a string or text blocks")),
    }
}

fn image_part(source: Option<&Value>, field: &str) -> Result<Value, Error> {
    let source = source.ok_or_else(|| Error::invalid(format!("{field}.source"), "is required"))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source.get("media_type").and_then(Value::as_str).unwrap_or("image/png");
            let data = source.get("data").and_then(Value::as_str).unwrap_or("");
            format!("data:{media};base64,{data}")
        }
        Some("url") => source.get("url").and_then(Value::as_str).unwrap_or("").to_string(),
        _ => return Err(Error::invalid(format!("{field}.source"), "must be a base64 or url image")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// Anthropic `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage for OpenAI usage: the prompt's cache reads and writes apart, as Anthropic
/// reports them.
pub fn usage(u: &Usage) -> Value {
    let cached = u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0);
    let prompt = u.prompt_tokens.unwrap_or(0);
    let written =
        u.prompt_tokens_details.and_then(|d| d.cache_write_tokens).unwrap_or(0).min(prompt.saturating_sub(cached));
    let mut usage = json!({
        "input_tokens": prompt.saturating_sub(cached) - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": u.completion_tokens.unwrap_or(0),
    });
    // Reasoning only where there was some, as cache writes.
    let reasoning = u.completion_tokens_details.and_then(|d| d.reasoning_tokens).filter(|&n| n > 0);
    if let (Some(reasoning), Some(object)) = (reasoning, usage.as_object_mut()) {
        object.insert("output_tokens_details".into(), json!({"thinking_tokens": reasoning}));
    }
    usage
}

fn arguments_input(arguments: Option<&str>) -> Value {
    let text = arguments.unwrap_or("").trim();
    if text.is_empty() {
        return json!({});
    }
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

/// A complete chat completion as an Anthropic message.
pub fn response_to_anthropic(response: &ChatCompletionResponse) -> Value {
    let mut content = Vec::new();
    let choice = response.choices.first();
    if let Some(message) = choice.map(|c| &c.message) {
        if let Some(Some(crate::api::openai::Content::Text(text))) = &message.content {
            if !text.is_empty() {
                content.push(json!({"type": "text", "text": text}));
            }
        }
        for call in message.tool_calls.iter().flatten() {
            let function = call.function.as_ref();
            content.push(json!({
                "type": "tool_use",
                "id": call.id,
                "name": function.and_then(|f| f.name.as_deref()),
                "input": arguments_input(function.and_then(|f| f.arguments.as_deref())),
            }));
        }
    }
    json!({
        "id": response.id,
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.finish_reason.as_deref())),
        "stop_sequence": null,
        "usage": usage(&response.usage.unwrap_or_default()),
    })
}

/// The Anthropic error for an OpenAI-style error response: `(status, body)`. Any body works:
/// the message is taken from `error.message` when there is one.
pub fn error_to_anthropic(status: u16, body: &[u8]) -> Value {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.get("message")).and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| format!("the provider answered {status}"));
    let kind = match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Re-frames an OpenAI chat completion stream as Anthropic Messages events.
pub struct StreamToAnthropic {
    decoder: SseDecoder,
    model: String,
    started: bool,
    /// Index of the next content block.
    next_block: u32,
    /// The open block: `None`, text, or the OpenAI tool-call index it carries.
    open: Option<Open>,
    finish: Option<String>,
    usage: Option<Usage>,
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Tool(u32),
}

impl StreamToAnthropic {
    pub fn new(max_event_bytes: usize, model: &str) -> Self {
        StreamToAnthropic {
            decoder: SseDecoder::new(max_event_bytes),
            model: model.to_string(),
            started: false,
            next_block: 0,
            open: None,
            finish: None,
            usage: None,
            done: false,
        }
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
            if payload == b"[DONE]" {
                self.end(out);
                break;
            }
            match serde_json::from_slice::<ChatCompletionChunk>(&payload) {
                Ok(chunk) => self.chunk(chunk, out),
                Err(_) => {
                    // An error object mid-stream (OpenAI sends `{"error":…}`) or garbage. The
                    // provider's words are not repeated: they may quote the prompt.
                    let is_error =
                        serde_json::from_slice::<Value>(&payload).ok().is_some_and(|v| v.get("error").is_some());
                    let detail = if is_error {
                        "the provider ended the stream with an error"
                    } else {
                        "upstream stream event is not JSON"
                    };
                    return Err(self.fail(out, detail));
                }
            }
        }
        Ok(())
    }

    fn chunk(&mut self, chunk: ChatCompletionChunk, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            if !chunk.model.is_empty() {
                self.model = chunk.model.clone();
            }
            let start = json!({"type": "message_start", "message": {
                "id": chunk.id, "type": "message", "role": "assistant", "content": [], "model": self.model,
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}});
            event(out, "message_start", &start);
        }
        if let Some(Some(u)) = chunk.usage {
            self.usage = Some(u);
        }
        let Some(choice) = chunk.choices.into_iter().next() else { return };
        if let Some(Some(text)) = choice.delta.content.filter(|t| t.as_ref().is_some_and(|t| !t.is_empty())) {
            if self.open != Some(Open::Text) {
                self.open_block(out, Open::Text, json!({"type": "text", "text": ""}));
            }
            let delta = json!({"type": "content_block_delta", "index": self.next_block - 1,
                               "delta": {"type": "text_delta", "text": text}});
            event(out, "content_block_delta", &delta);
        }
        for call in choice.delta.tool_calls.into_iter().flatten() {
            let index = call.index.unwrap_or(0);
            let function = call.function.unwrap_or(crate::api::openai::FunctionCall { name: None, arguments: None });
            if self.open != Some(Open::Tool(index)) {
                let block = json!({"type": "tool_use", "id": call.id, "name": function.name, "input": {}});
                self.open_block(out, Open::Tool(index), block);
            }
            if let Some(arguments) = function.arguments.filter(|a| !a.is_empty()) {
                let delta = json!({"type": "content_block_delta", "index": self.next_block - 1,
                                   "delta": {"type": "input_json_delta", "partial_json": arguments}});
                event(out, "content_block_delta", &delta);
            }
        }
        if let Some(finish) = choice.finish_reason {
            self.finish = Some(finish);
        }
    }

    fn open_block(&mut self, out: &mut Vec<u8>, kind: Open, block: Value) {
        self.close_block(out);
        let start = json!({"type": "content_block_start", "index": self.next_block, "content_block": block});
        event(out, "content_block_start", &start);
        self.next_block += 1;
        self.open = Some(kind);
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            event(out, "content_block_stop", &json!({"type": "content_block_stop", "index": self.next_block - 1}));
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.close_block(out);
        let mut delta_usage = json!({"output_tokens": 0});
        if let Some(u) = &self.usage {
            delta_usage = usage(u);
        }
        let delta = json!({"type": "message_delta",
                           "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null},
                           "usage": delta_usage});
        event(out, "message_delta", &delta);
        event(out, "message_stop", &json!({"type": "message_stop"}));
        self.done = true;
    }

    /// The upstream stream ended. A stream cut before `[DONE]` gets an error event, never a
    /// clean end.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let (last, _) = self.decoder.finish();
        if let Some(payload) = last.and_then(|e| e.data.map(|d| d.into_owned())) {
            if payload == b"[DONE]" {
                self.end(out);
                return;
            }
            if let Ok(chunk) = serde_json::from_slice::<ChatCompletionChunk>(&payload) {
                self.chunk(chunk, out);
            }
        }
        if !self.done {
            let _ = self.fail(out, "upstream stream ended before [DONE]");
        }
    }

    fn fail(&mut self, out: &mut Vec<u8>, detail: &str) -> Error {
        self.done = true;
        super::stream_error(out, detail, Dialect::Anthropic)
    }
}

fn event(out: &mut Vec<u8>, name: &str, value: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}
