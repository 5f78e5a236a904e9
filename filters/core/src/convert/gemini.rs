//! OpenAI Chat Completions → Gemini `generateContent` (AI Studio and Vertex AI), and the answers
//! back. Anthropic clients reach Gemini through the same code, with OpenAI chat as the pivot.
//!
//! References: ai.google.dev/api/generate-content (request, `GenerateContentResponse`,
//! `UsageMetadata`, `FinishReason`), ai.google.dev/gemini-api/docs/function-calling and
//! /docs/thought-signatures, ai.google.dev/gemini-api/docs/openai (Google's own mapping).
//!
//! Request: `system`/`developer` messages become `systemInstruction`; `assistant` turns
//! `model` contents with `functionCall` parts; `tool` messages `functionResponse` parts of a
//! user turn (Gemini wants the function's name: it is found from the call's id earlier in the
//! conversation). Images: data URLs become `inlineData`, other URLs `fileData`. Parameters go
//! to `generationConfig` (`max_completion_tokens`/`max_tokens` → `maxOutputTokens`, `n` →
//! `candidateCount`, `stop` → `stopSequences`, `response_format` → `responseMimeType` and
//! `responseJsonSchema`); tools to `functionDeclarations` with `parametersJsonSchema` (JSON
//! Schema as sent); `tool_choice` to `toolConfig.functionCallingConfig`. Anything else with no
//! Gemini equivalent is refused with 400 naming it, unless at its default.
//!
//! Thought signatures: Gemini returns a `thoughtSignature` with a function call and requires it
//! back with that call in the next turn. OpenAI's format has no field for it, so it rides in the
//! tool call's id (`<id>~ts~<signature>`), which clients return verbatim, and is restored from
//! there.
//!
//! Responses: candidates become choices (text parts joined; thought parts not shown;
//! `functionCall` parts tool calls), `finishReason` maps to `finish_reason`, `usageMetadata` to
//! usage with thinking tokens inside `completion_tokens` (as OpenAI counts reasoning) and in
//! `completion_tokens_details.reasoning_tokens`. Streams: each SSE event (`alt=sse`) is one
//! chunk; usage, cumulative in every event, is sent once at the end when asked for.

use super::{function_tools, stream_error, text_and_images, ChunkWriter};
use crate::api::openai::{ChatCompletionRequest, Content};
use crate::error::{shown, Dialect, Error};
use crate::sse::SseDecoder;
use serde_json::{json, Map, Value};

const SIGNATURE: &str = "~ts~";

fn is_default(name: &str, value: &Value) -> bool {
    match (name, value) {
        (_, Value::Null) => true,
        ("presence_penalty" | "frequency_penalty", v) => v.as_f64() == Some(0.0),
        ("logprobs", Value::Bool(false)) | ("parallel_tool_calls", Value::Bool(true)) => true,
        ("store" | "metadata" | "stream_options" | "user", _) => true,
        _ => false,
    }
}

/// The Gemini request for an OpenAI chat request.
pub fn request_from_openai(request: &ChatCompletionRequest) -> Result<Value, Error> {
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // tool_call id → function name, for functionResponse parts.
    let mut call_names: Vec<(String, String)> = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        match message.role.as_str() {
            "system" | "developer" => {
                for part in parts(message.content.as_ref().and_then(Option::as_ref), &at("content"))? {
                    system.push(part);
                }
            }
            "user" => {
                let parts = parts(message.content.as_ref().and_then(Option::as_ref), &at("content"))?;
                push_turn(&mut contents, "user", parts);
            }
            "assistant" => {
                let mut parts = parts(message.content.as_ref().and_then(Option::as_ref), &at("content"))?;
                for (j, call) in message.tool_calls.iter().flatten().enumerate() {
                    let field = at(&format!("tool_calls[{j}]"));
                    let function = call.function.as_ref().ok_or_else(|| Error::invalid(&field, "needs a function"))?;
                    let name = function
                        .name
                        .clone()
                        .ok_or_else(|| Error::invalid(format!("{field}.function.name"), "is required"))?;
                    let arguments = function.arguments.as_deref().unwrap_or("").trim();
                    let args: Value = if arguments.is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(arguments)
                            .map_err(|_| Error::invalid(format!("{field}.function.arguments"), "is not JSON"))?
                    };
                    let id = call.id.clone().unwrap_or_default();
                    let mut part = Map::new();
                    part.insert("functionCall".into(), json!({"name": name, "args": args}));
                    if let Some((_, signature)) = id.split_once(SIGNATURE) {
                        part.insert("thoughtSignature".into(), json!(signature));
                    }
                    parts.push(Value::Object(part));
                    call_names.push((id, name));
                }
                push_turn(&mut contents, "model", parts);
            }
            "tool" => {
                let id =
                    message.tool_call_id.clone().ok_or_else(|| Error::invalid(at("tool_call_id"), "is required"))?;
                let name =
                    call_names.iter().find(|(call, _)| *call == id).map(|(_, name)| name.clone()).ok_or_else(|| {
                        Error::invalid(at("tool_call_id"), "answers no tool call of an earlier assistant turn")
                    })?;
                let text: Vec<String> = parts(message.content.as_ref().and_then(Option::as_ref), &at("content"))?
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str).map(str::to_string))
                    .collect();
                let text = text.join("\n");
                // A JSON object answer is passed as is; anything else wrapped, as Gemini wants an object.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(object)) => Value::Object(object),
                    _ => json!({"result": text}),
                };
                push_turn(
                    &mut contents,
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
            other => {
                return Err(Error::invalid(
                    at("role"),
                    format!("role '{}' is not supported by this backend", shown(other)),
                ))
            }
        }
    }

    let mut generation = Map::new();
    if let Some(max) = request.max_completion_tokens.or(request.max_tokens) {
        generation.insert("maxOutputTokens".into(), json!(max));
    }
    let mut tool_config = None;
    for (name, value) in &request.rest {
        match name.as_str() {
            "temperature" => insert_number(&mut generation, "temperature", name, value)?,
            "top_p" => insert_number(&mut generation, "topP", name, value)?,
            "seed" => insert_number(&mut generation, "seed", name, value)?,
            "presence_penalty" if !is_default(name, value) => {
                insert_number(&mut generation, "presencePenalty", name, value)?
            }
            "frequency_penalty" if !is_default(name, value) => {
                insert_number(&mut generation, "frequencyPenalty", name, value)?
            }
            "n" => insert_number(&mut generation, "candidateCount", name, value)?,
            "stop" => {
                let stops = match value {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
                    Value::Null => continue,
                    _ => return Err(Error::invalid("stop", "must be a string or an array of strings")),
                };
                generation.insert("stopSequences".into(), json!(stops));
            }
            "response_format" => match value.get("type").and_then(Value::as_str) {
                Some("text") | None => {}
                Some("json_object") => {
                    generation.insert("responseMimeType".into(), json!("application/json"));
                }
                Some("json_schema") => {
                    let schema = value.get("json_schema").and_then(|s| s.get("schema")).cloned().unwrap_or(json!({}));
                    generation.insert("responseMimeType".into(), json!("application/json"));
                    generation.insert("responseJsonSchema".into(), schema);
                }
                Some(other) => {
                    return Err(Error::invalid("response_format", format!("'{}' is not supported", shown(other))))
                }
            },
            "tool_choice" => {
                tool_config = match value {
                    Value::String(s) if s == "auto" => Some(json!({"mode": "AUTO"})),
                    Value::String(s) if s == "none" => Some(json!({"mode": "NONE"})),
                    Value::String(s) if s == "required" => Some(json!({"mode": "ANY"})),
                    Value::Object(o) => match o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
                        Some(name) => Some(json!({"mode": "ANY", "allowedFunctionNames": [name]})),
                        None => return Err(Error::invalid("tool_choice", "names no function")),
                    },
                    Value::Null => None,
                    _ => return Err(Error::invalid("tool_choice", "must be auto, none, required or a function")),
                }
            }
            _ if is_default(name, value) => {}
            _ => {
                return Err(Error::invalid(
                    name,
                    format!("'{}' is not supported by this backend (gemini)", shown(name)),
                ))
            }
        }
    }

    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    if let Some(tools) = &request.tools {
        let declarations: Vec<Value> = function_tools(tools)?
            .into_iter()
            .map(|f| {
                let mut declaration = Map::new();
                declaration.insert("name".into(), json!(f.name));
                if let Some(description) = f.description {
                    declaration.insert("description".into(), description.clone());
                }
                if let Some(parameters) = f.parameters {
                    declaration.insert("parametersJsonSchema".into(), parameters.clone());
                }
                Value::Object(declaration)
            })
            .collect();
        out.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
    }
    if let Some(config) = tool_config {
        out.insert("toolConfig".into(), json!({"functionCallingConfig": config}));
    }
    if !generation.is_empty() {
        out.insert("generationConfig".into(), Value::Object(generation));
    }
    Ok(Value::Object(out))
}

fn insert_number(generation: &mut Map<String, Value>, key: &str, name: &str, value: &Value) -> Result<(), Error> {
    match value {
        Value::Number(_) => {
            generation.insert(key.into(), value.clone());
            Ok(())
        }
        Value::Null => Ok(()),
        _ => Err(Error::invalid(name, "must be a number")),
    }
}

/// Gemini joins nothing for us: consecutive turns of one role are merged into one content.
fn push_turn(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    super::push_turn(contents, role, "parts", parts);
}

fn parts(content: Option<&Content>, field: &str) -> Result<Vec<Value>, Error> {
    text_and_images(content, field, &|url, _| {
        Ok(match url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
            Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
            None => json!({"fileData": {"mimeType": mime_of(url), "fileUri": url}}),
        })
    })
}

fn mime_of(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
    if path.ends_with(".png") {
        "image/png"
    } else if path.ends_with(".webp") {
        "image/webp"
    } else if path.ends_with(".gif") {
        "image/gif"
    } else {
        "image/jpeg"
    }
}

/// `finish_reason` for a Gemini `finishReason`.
pub fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        _ if has_calls => "tool_calls",
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI usage for Gemini `usageMetadata`.
pub fn usage(meta: &Value) -> Value {
    let n = |key: &str| meta.get(key).and_then(Value::as_u64).unwrap_or(0);
    let prompt = n("promptTokenCount") + n("toolUsePromptTokenCount");
    let thoughts = n("thoughtsTokenCount");
    let completion = n("candidatesTokenCount") + thoughts;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": n("cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    })
}

/// One candidate's message content: (text, tool calls), thoughts left out.
fn candidate_message(candidate: &Value, calls_before: usize) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in candidate.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten() {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(call) = part.get("functionCall") {
            let index = calls_before + calls.len();
            let base = call.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{index}"), str::to_string);
            let id = match part.get("thoughtSignature").and_then(Value::as_str) {
                Some(signature) => format!("{base}{SIGNATURE}{signature}"),
                None => base,
            };
            let arguments = call.get("args").map_or_else(|| "{}".to_string(), Value::to_string);
            calls.push(json!({"id": id, "type": "function",
                              "function": {"name": call.get("name"), "arguments": arguments}}));
        }
    }
    (text, calls)
}

/// A complete Gemini response as an OpenAI chat completion; `None` when it is not one.
pub fn response_to_openai(response: &Value, model: &str, created: u64) -> Option<Value> {
    let candidates = response.get("candidates").and_then(Value::as_array);
    if candidates.is_none() && response.get("promptFeedback").is_none() {
        return None;
    }
    let choices: Vec<Value> = candidates
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, candidate)| {
            let (text, calls) = candidate_message(candidate, 0);
            let mut message =
                json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
            if let (false, Some(object)) = (calls.is_empty(), message.as_object_mut()) {
                object.insert("tool_calls".into(), Value::Array(calls.clone()));
            }
            let reason = candidate.get("finishReason").and_then(Value::as_str).unwrap_or("STOP");
            json!({"index": candidate.get("index").and_then(Value::as_u64).unwrap_or(i as u64), "message": message,
                   "finish_reason": finish_reason(reason, !calls.is_empty())})
        })
        .collect();
    let choices = if choices.is_empty() {
        // Blocked prompt: no candidates, only promptFeedback.
        vec![json!({"index": 0, "message": {"role": "assistant", "content": null}, "finish_reason": "content_filter"})]
    } else {
        choices
    };
    Some(json!({
        "id": response.get("responseId").and_then(Value::as_str).unwrap_or("gemini"),
        "object": "chat.completion",
        "created": created,
        "model": response.get("modelVersion").and_then(Value::as_str).unwrap_or(model),
        "choices": choices,
        "usage": usage(response.get("usageMetadata").unwrap_or(&Value::Null)),
    }))
}

/// The OpenAI error for a Gemini error body (`{"error":{"code","message","status"}}`).
pub fn error_to_openai(status: u16, body: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let state = error.get("status").and_then(Value::as_str)?;
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    let (kind, code) = match (status, state) {
        (429, _) | (_, "RESOURCE_EXHAUSTED") => ("requests", "rate_limit_exceeded"),
        (401, _) | (_, "UNAUTHENTICATED") => ("invalid_request_error", "invalid_api_key"),
        (403, _) | (_, "PERMISSION_DENIED") => ("invalid_request_error", "permission_denied"),
        (404, _) | (_, "NOT_FOUND") => ("invalid_request_error", "not_found"),
        (400..=499, _) => ("invalid_request_error", "invalid_request"),
        _ => ("server_error", "upstream_error"),
    };
    Some(json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))
}

/// Re-frames a Gemini `streamGenerateContent?alt=sse` stream as chat completion chunks.
pub struct StreamToOpenAi {
    decoder: SseDecoder,
    writer: ChunkWriter,
    started: bool,
    calls: usize,
    usage: Option<Value>,
    finish: Option<&'static str>,
    done: bool,
}

impl StreamToOpenAi {
    pub fn new(max_event_bytes: usize, include_usage: bool, model: &str) -> Self {
        StreamToOpenAi {
            decoder: SseDecoder::new(max_event_bytes),
            writer: ChunkWriter::new("", model, include_usage),
            started: false,
            calls: 0,
            usage: None,
            finish: None,
            done: false,
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        self.writer.chunk(out, delta, finish);
    }

    fn event(&mut self, event: &Value, out: &mut Vec<u8>) {
        if let Some(meta) = event.get("usageMetadata") {
            self.usage = Some(usage(meta)); // cumulative: the last one is the total
        }
        if !self.started {
            self.started = true;
            if let Some(id) = event.get("responseId").and_then(Value::as_str) {
                self.writer.id = id.to_string();
            }
            if let Some(model) = event.get("modelVersion").and_then(Value::as_str) {
                self.writer.model = model.to_string();
            }
            self.chunk(out, json!({"role": "assistant", "content": ""}), None);
        }
        let Some(candidate) = event.get("candidates").and_then(Value::as_array).and_then(|c| c.first()) else {
            return;
        };
        let (text, calls) = candidate_message(candidate, self.calls);
        if !text.is_empty() {
            self.chunk(out, json!({"content": text}), None);
        }
        if !calls.is_empty() {
            let deltas: Vec<Value> = calls
                .into_iter()
                .enumerate()
                .map(|(k, mut call)| {
                    if let Some(object) = call.as_object_mut() {
                        object.insert("index".into(), json!(self.calls + k));
                    }
                    call
                })
                .collect();
            self.calls += deltas.len();
            self.chunk(out, json!({"tool_calls": deltas}), None);
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.finish = Some(finish_reason(reason, self.calls > 0));
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        self.chunk(out, json!({}), Some(self.finish.unwrap_or("stop")));
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
            return Err(self.fail(out, "upstream stream event too large"));
        }
        while let Some(event) = self.decoder.next_event() {
            let Some(payload) = event.data.as_deref().map(<[u8]>::to_vec) else { continue };
            match serde_json::from_slice::<Value>(&payload) {
                Ok(value) if value.get("error").is_some() => {
                    return Err(self.fail(out, "the provider ended the stream with an error"));
                }
                Ok(value) => self.event(&value, out),
                Err(_) => return Err(self.fail(out, "upstream stream event is not JSON")),
            }
        }
        Ok(())
    }

    /// Gemini has no end marker: the stream is complete when a candidate said why it finished.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let (last, _) = self.decoder.finish();
        if let Some(payload) = last.and_then(|e| e.data.map(|d| d.into_owned())) {
            if let Ok(value) = serde_json::from_slice::<Value>(&payload) {
                self.event(&value, out);
            }
        }
        if self.finish.is_some() {
            self.end(out);
        } else {
            let _ = self.fail(out, "upstream stream ended before a finish reason");
        }
    }
}
