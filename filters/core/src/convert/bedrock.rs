//! OpenAI Chat Completions → Bedrock Converse / ConverseStream, and the answers back. Anthropic
//! clients reach Bedrock through the same code, with OpenAI chat as the pivot.
//!
//! References: docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html,
//! _ConverseStream.html, _Message.html, _ContentBlock.html, _ToolConfiguration.html,
//! _TokenUsage.html, and the event-stream encoding (`application/vnd.amazon.eventstream`).
//!
//! Request: `system`/`developer` messages become `system` text blocks; `tool` messages
//! `toolResult` blocks of a user turn (consecutive turns of one role are merged, as Converse
//! requires alternation); assistant `tool_calls` `toolUse` blocks; data-URL images `image`
//! blocks with their bytes (Converse takes no image URLs: refused). `max_tokens`,
//! `temperature`, `top_p`, `stop` go to `inferenceConfig`; tools to `toolConfig`. The model is in
//! the path, not the body.
//!
//! Responses: `output.message.content` text joined, `toolUse` blocks become tool calls,
//! `stopReason` maps to `finish_reason`, usage maps with cache reads and writes inside
//! `prompt_tokens`. Streams: each event-stream message (CRC-checked) is one event; an
//! `exception` message ends the stream with one error event.

use super::{function_tools, push_turn, stream_error, text_and_images, ChunkWriter};
use crate::api::openai::{ChatCompletionRequest, Content};
use crate::error::{shown, Dialect, Error};
use crate::eventstream::EventStreamDecoder;
use serde_json::{json, Map, Value};

/// The CountTokens request for a Converse request: what CountTokens reads of it (`messages`,
/// `system`, `toolConfig`, `additionalModelRequestFields`) under `input.converse`.
pub fn count_tokens_request(mut converse: Value) -> Value {
    if let Some(object) = converse.as_object_mut() {
        object.retain(|key, _| {
            matches!(key.as_str(), "messages" | "system" | "toolConfig" | "additionalModelRequestFields")
        });
    }
    json!({"input": {"converse": converse}})
}

/// Anthropic's `count_tokens` answer for a CountTokens answer (`{"inputTokens": n}`).
pub fn count_tokens_response(answer: &Value) -> Option<Value> {
    let tokens = answer.get("inputTokens")?.as_u64()?;
    Some(json!({"input_tokens": tokens}))
}

/// The Converse request for an OpenAI chat request.
pub fn request_from_openai(request: &ChatCompletionRequest) -> Result<Value, Error> {
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let content = message.content.as_ref().and_then(Option::as_ref);
        match message.role.as_str() {
            "system" | "developer" => system.extend(blocks(content, &at("content"))?),
            "user" => push(&mut messages, "user", blocks(content, &at("content"))?),
            "assistant" => {
                let mut out = blocks(content, &at("content"))?;
                for (j, call) in message.tool_calls.iter().flatten().enumerate() {
                    let field = at(&format!("tool_calls[{j}]"));
                    let function = call.function.as_ref().ok_or_else(|| Error::invalid(&field, "needs a function"))?;
                    let arguments = function.arguments.as_deref().unwrap_or("").trim();
                    let input: Value = if arguments.is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(arguments)
                            .map_err(|_| Error::invalid(format!("{field}.function.arguments"), "is not JSON"))?
                    };
                    out.push(json!({"toolUse": {"toolUseId": call.id, "name": function.name, "input": input}}));
                }
                push(&mut messages, "assistant", out);
            }
            "tool" => {
                let id =
                    message.tool_call_id.clone().ok_or_else(|| Error::invalid(at("tool_call_id"), "is required"))?;
                let text: Vec<Value> = blocks(content, &at("content"))?;
                push(&mut messages, "user", vec![json!({"toolResult": {"toolUseId": id, "content": text}})]);
            }
            other => {
                return Err(Error::invalid(
                    at("role"),
                    format!("role '{}' is not supported by this backend", shown(other)),
                ))
            }
        }
    }
    let mut inference = Map::new();
    if let Some(max) = request.max_completion_tokens.or(request.max_tokens) {
        inference.insert("maxTokens".into(), json!(max));
    }
    let mut tool_choice = None;
    for (name, value) in &request.rest {
        match (name.as_str(), value) {
            (_, Value::Null) => {}
            ("temperature", Value::Number(_)) => {
                inference.insert("temperature".into(), value.clone());
            }
            ("top_p", Value::Number(_)) => {
                inference.insert("topP".into(), value.clone());
            }
            ("stop", Value::String(s)) => {
                inference.insert("stopSequences".into(), json!([s]));
            }
            ("stop", Value::Array(_)) => {
                inference.insert("stopSequences".into(), value.clone());
            }
            ("tool_choice", Value::String(s)) if s == "auto" => tool_choice = Some(json!({"auto": {}})),
            ("tool_choice", Value::String(s)) if s == "required" => tool_choice = Some(json!({"any": {}})),
            ("tool_choice", Value::Object(o)) => match o.get("function").and_then(|f| f.get("name")) {
                Some(name) => tool_choice = Some(json!({"tool": {"name": name}})),
                None => return Err(Error::invalid("tool_choice", "names no function")),
            },
            ("n", v) if v.as_u64() == Some(1) => {}
            ("presence_penalty" | "frequency_penalty", v) if v.as_f64() == Some(0.0) => {}
            ("store" | "metadata" | "stream_options" | "user" | "parallel_tool_calls", _) => {}
            _ => {
                return Err(Error::invalid(
                    name,
                    format!("'{}' is not supported by this backend (bedrock)", shown(name)),
                ))
            }
        }
    }
    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(tools) = &request.tools {
        let specs: Vec<Value> = function_tools(tools)?
            .into_iter()
            .map(|f| {
                let schema = f.parameters.cloned().unwrap_or_else(|| json!({"type": "object"}));
                let mut spec = json!({"name": f.name, "inputSchema": {"json": schema}});
                if let (Some(description), Some(object)) = (f.description, spec.as_object_mut()) {
                    object.insert("description".into(), description.clone());
                }
                json!({"toolSpec": spec})
            })
            .collect();
        let mut config = json!({"tools": specs});
        if let (Some(choice), Some(object)) = (tool_choice, config.as_object_mut()) {
            object.insert("toolChoice".into(), choice);
        }
        out.insert("toolConfig".into(), config);
    }
    Ok(Value::Object(out))
}

fn push(messages: &mut Vec<Value>, role: &str, content: Vec<Value>) {
    push_turn(messages, role, "content", content);
}

fn blocks(content: Option<&Content>, field: &str) -> Result<Vec<Value>, Error> {
    text_and_images(content, field, &|url, at| {
        let Some((media, data)) = url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) else {
            return Err(Error::invalid(at, "Bedrock takes images as data URLs only"));
        };
        let format = media.strip_prefix("image/").unwrap_or(media);
        Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
    })
}

pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI usage for Converse `usage`: cache reads and writes are part of the prompt.
pub fn usage(u: &Value) -> Value {
    let n = |key: &str| u.get(key).and_then(Value::as_u64).unwrap_or(0);
    let (cached, written) = (n("cacheReadInputTokens"), n("cacheWriteInputTokens"));
    let prompt = n("inputTokens") + cached + written;
    let completion = n("outputTokens");
    // Cache writes only where there were some, as OpenAI reports them.
    let details = match written {
        0 => json!({"cached_tokens": cached}),
        _ => json!({"cached_tokens": cached, "cache_write_tokens": written}),
    };
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_tokens_details": details})
}

/// A complete Converse response as an OpenAI chat completion.
pub fn response_to_openai(response: &Value, model: &str, created: u64) -> Option<Value> {
    let content = response.pointer("/output/message/content")?.as_array()?;
    let text: String = content.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
    let calls: Vec<Value> = content
        .iter()
        .filter_map(|b| b.get("toolUse"))
        .map(|t| {
            json!({"id": t.get("toolUseId"), "type": "function", "function": {
                "name": t.get("name"), "arguments": t.get("input").map_or_else(|| "{}".to_string(), Value::to_string)}})
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
    if let (false, Some(object)) = (calls.is_empty(), message.as_object_mut()) {
        object.insert("tool_calls".into(), Value::Array(calls));
    }
    let stop = response.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn");
    Some(json!({
        "id": "bedrock", "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(stop)}],
        "usage": usage(response.get("usage").unwrap_or(&Value::Null)),
    }))
}

/// The OpenAI error for a Bedrock error (`{"message"}` with the type in `x-amzn-errortype`,
/// which the status already tells apart well enough).
pub fn error_to_openai(status: u16, body: &[u8]) -> Value {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")).and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| format!("the provider answered {status}"));
    let (kind, code) = match status {
        429 => ("requests", "rate_limit_exceeded"),
        401 | 403 => ("invalid_request_error", "permission_denied"),
        404 => ("invalid_request_error", "not_found"),
        400..=499 => ("invalid_request_error", "invalid_request"),
        _ => ("server_error", "upstream_error"),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// Re-frames a ConverseStream event stream as chat completion chunks.
pub struct StreamToOpenAi {
    decoder: EventStreamDecoder,
    writer: ChunkWriter,
    /// Bedrock content-block index → OpenAI tool-call index.
    tools: Vec<(u64, usize)>,
    finish: Option<&'static str>,
    usage: Option<Value>,
    stopped: bool,
    done: bool,
}

impl StreamToOpenAi {
    pub fn new(max_message_bytes: usize, include_usage: bool, model: &str) -> Self {
        StreamToOpenAi {
            decoder: EventStreamDecoder::new(max_message_bytes),
            writer: ChunkWriter::new("bedrock", model, include_usage),
            tools: Vec::new(),
            finish: None,
            usage: None,
            stopped: false,
            done: false,
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        self.writer.chunk(out, delta, finish);
    }

    fn event(&mut self, kind: &str, payload: &Value, out: &mut Vec<u8>) {
        let index = payload.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "messageStart" => self.chunk(out, json!({"role": "assistant", "content": ""}), None),
            "contentBlockStart" => {
                if let Some(tool) = payload.pointer("/start/toolUse") {
                    let openai = self.tools.len();
                    self.tools.push((index, openai));
                    let call = json!({"index": openai, "id": tool.get("toolUseId"), "type": "function",
                                      "function": {"name": tool.get("name"), "arguments": ""}});
                    self.chunk(out, json!({"tool_calls": [call]}), None);
                }
            }
            "contentBlockDelta" => {
                if let Some(text) = payload.pointer("/delta/text").and_then(Value::as_str) {
                    self.chunk(out, json!({"content": text}), None);
                } else if let Some(input) = payload.pointer("/delta/toolUse/input").and_then(Value::as_str) {
                    if let Some((_, openai)) = self.tools.iter().find(|(b, _)| *b == index) {
                        let call = json!({"index": openai, "function": {"arguments": input}});
                        self.chunk(out, json!({"tool_calls": [call]}), None);
                    }
                }
            }
            "messageStop" => {
                let stop = payload.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn");
                self.finish = Some(finish_reason(stop));
                self.stopped = true;
                self.chunk(out, json!({}), self.finish);
            }
            "metadata" => {
                if let Some(u) = payload.get("usage") {
                    self.usage = Some(usage(u));
                }
            }
            _ => {} // contentBlockStop, reasoning deltas: nothing to show in the chat format
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.writer.end(out, self.usage.clone().unwrap_or_else(|| usage(&Value::Null)));
        self.done = true;
    }

    fn fail(&mut self, out: &mut Vec<u8>, detail: &str) -> Error {
        self.done = true;
        stream_error(out, detail, Dialect::OpenAi)
    }
}

impl super::StreamTranslate for StreamToOpenAi {
    fn set_created(&mut self, secs: u64) {
        self.writer.set_created(secs);
    }

    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if self.done {
            return Ok(());
        }
        if self.decoder.push(bytes).is_err() {
            return Err(self.fail(out, "upstream event stream is corrupt"));
        }
        loop {
            let (kind, payload, exception) = match self.decoder.next_message() {
                None => break,
                Some(Err(_)) => return Err(self.fail(out, "upstream event stream is corrupt")),
                Some(Ok(message)) => (
                    message.header_str(":event-type").unwrap_or("").to_string(),
                    serde_json::from_slice::<Value>(message.payload).unwrap_or(Value::Null),
                    message.header_str(":message-type") == Some("exception"),
                ),
            };
            if exception {
                return Err(self.fail(out, "the provider ended the stream with an exception"));
            }
            self.event(&kind, &payload, out);
        }
        Ok(())
    }

    /// ConverseStream ends after `metadata`; a stream without `messageStop` was cut.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.decoder.finish().is_ok() && self.stopped {
            self.end(out);
        } else {
            let _ = self.fail(out, "upstream stream ended before messageStop");
        }
    }
}
