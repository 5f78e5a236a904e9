//! Where the text of a request lives, per API: a walk that hands every checked string to a
//! callback that may rewrite it in place. Roles and history come from the policy's request
//! scope. Strings are JSON-decoded (escapes such as `\u00e7` or `\n` are already resolved), so
//! a CPF written with escapes is still a CPF.
//!
//! - OpenAI chat: `messages[].content` (string or `text` parts), assistant `tool_calls[].function.arguments`,
//!   `tool`/`function` messages; `developer` counts as `system`.
//! - Anthropic Messages: `system` (string or text blocks), `messages[].content` (string or
//!   `text`, `tool_use.input` (every string in it), `tool_result.content`, which is role `tool`).
//! - Embeddings `input`, completions `prompt` (string or array of strings): role `user`.
//! - Responses (also its `input_tokens` count and `compact`): `instructions` (system), `input`
//!   (string, or items with `content` strings/parts).
//! - Gemini `contents[].parts[].text`, `systemInstruction` (or any field by its snake_case name,
//!   which Gemini's protobuf JSON accepts too: `system_instruction`); Bedrock `messages[].content[].text`, `system[].text`.
//! - Bedrock InvokeModel: `messages`/`system` (Anthropic, Nova), `prompt`, `inputText`, `texts`,
//!   `message`, `chat_history` (Llama, Mistral, Titan, Cohere).
//! - Google `:predict`/`:predictLongRunning` other than text embeddings (Imagen, Veo, multimodal
//!   embeddings): `instances[].prompt`, `instances[].text`, `parameters.negativePrompt`.
//! - Gemini's `cachedContents` (as a generate body) and OpenAI's conversation `items` (as
//!   Responses input items): stored to be named by later requests, so every item is checked.
//! - Anthropic Message Batches: each `requests[].params` as a Messages request; Gemini Batch Mode:
//!   each `batch.inputConfig.requests.requests[].request` as a generateContent request.
//!
//! With `history: latest` only the last message (or item) is checked, plus the system prompt
//! when `system` is among the roles.

use super::policy::{History, RequestScope, Role};
use crate::route::ApiKind;
use serde_json::Value;

/// Deepest nesting followed inside tool inputs.
const MAX_DEPTH: usize = 32;

fn role_of(name: &str) -> Role {
    match name {
        "system" | "developer" => Role::System,
        "assistant" | "model" => Role::Assistant,
        "tool" | "function" => Role::Tool,
        _ => Role::User,
    }
}

/// Whether a form's field named `name` is text the request checks: the `prompt` of an image
/// edit (what the user asks for) and of a transcription (a hint of words and spellings the audio
/// holds), the user's. The other fields are settings (`model`, `size`, `language`, …).
pub fn form_field_is_text(kind: ApiKind, name: &str, scope: &RequestScope) -> bool {
    kind.reads_form() && name == "prompt" && scope.roles.contains(&Role::User)
}

/// Calls `f` with every checked string of the request `body` and its role.
pub fn for_each_text(body: &mut Value, kind: ApiKind, scope: &RequestScope, f: &mut dyn FnMut(Role, &mut String)) {
    let wants = |role: Role| scope.roles.contains(&role);
    let latest = scope.history == History::Latest;
    let Some(object) = body.as_object_mut() else { return };
    match kind {
        ApiKind::OpenAiChat
        | ApiKind::AnthropicMessages
        | ApiKind::AnthropicCountTokens
        | ApiKind::BedrockConverse { .. } => {
            if wants(Role::System) {
                if let Some(system) = object.get_mut("system") {
                    strings_in(system, Role::System, 0, f);
                }
            }
            if let Some(Value::Array(messages)) = object.get_mut("messages") {
                let skip = if latest { messages.len().saturating_sub(1) } else { 0 };
                for message in messages.iter_mut().skip(skip) {
                    message_texts(message, &wants, f);
                }
            }
        }
        ApiKind::OpenAiEmbeddings | ApiKind::OpenAiCompletions | ApiKind::OpenAiImages => {
            if wants(Role::User) {
                for key in ["input", "prompt"] {
                    if let Some(value) = object.get_mut(key) {
                        strings_in(value, Role::User, 0, f);
                    }
                }
            }
        }
        ApiKind::OpenAiDecisions => {
            // The input as a Responses request's; each question's instructions as the
            // developer's (a system prompt).
            if wants(Role::System) {
                if let Some(Value::Array(questions)) = object.get_mut("questions") {
                    for instructions in questions.iter_mut().filter_map(|q| q.get_mut("instructions")) {
                        strings_in(instructions, Role::System, 0, f);
                    }
                }
            }
            responses_input(object.get_mut("input"), latest, &wants, f);
        }
        ApiKind::OpenAiSpeech => {
            // The text spoken, and how to speak it (`instructions`, as a Responses request's).
            if wants(Role::System) {
                if let Some(instructions) = object.get_mut("instructions") {
                    strings_in(instructions, Role::System, 0, f);
                }
            }
            if let Some(input) = object.get_mut("input").filter(|_| wants(Role::User)) {
                strings_in(input, Role::User, 0, f);
            }
        }
        ApiKind::OpenAiResponses | ApiKind::OpenAiInputTokens | ApiKind::OpenAiCompact => {
            if wants(Role::System) {
                if let Some(instructions) = object.get_mut("instructions") {
                    strings_in(instructions, Role::System, 0, f);
                }
            }
            responses_input(object.get_mut("input"), latest, &wants, f);
        }
        ApiKind::GeminiGenerate { .. } => {
            // Gemini reads protobuf JSON: every field by its camelCase or its snake_case name.
            if wants(Role::System) {
                for key in ["systemInstruction", "system_instruction"] {
                    if let Some(system) = object.get_mut(key) {
                        strings_in(system, Role::System, 0, f);
                    }
                }
            }
            if let Some(Value::Array(contents)) = object.get_mut("contents") {
                let skip = if latest { contents.len().saturating_sub(1) } else { 0 };
                for content in contents.iter_mut().skip(skip) {
                    message_texts(content, &wants, f);
                }
            }
        }
        // Stored for later requests to name, never checked before: every item, whatever
        // `history` says.
        ApiKind::GeminiCache => {
            let every = RequestScope { roles: scope.roles.clone(), history: History::All };
            for_each_text(body, ApiKind::GeminiGenerate { stream: false }, &every, f);
        }
        ApiKind::OpenAiConversation => {
            if let Some(Value::Array(items)) = object.get_mut("items") {
                for item in items.iter_mut() {
                    message_texts(item, &wants, f);
                }
            }
        }
        // InvokeModel: the model family's body. Anthropic's and Nova's `messages`/`system`; the
        // text fields of the others, as the user's.
        ApiKind::BedrockInvoke { .. } => {
            for key in ["prompt", "inputText", "texts", "message", "chat_history"] {
                if let (Some(value), true) = (object.get_mut(key), wants(Role::User)) {
                    strings_in(value, Role::User, 0, f);
                }
            }
            for_each_text(body, ApiKind::AnthropicMessages, scope, f);
        }
        // CountTokens carries a Converse request inside `input.converse`.
        ApiKind::BedrockCountTokens => {
            if let Some(converse) = object.get_mut("input").and_then(|i| i.get_mut("converse")) {
                for_each_text(converse, ApiKind::BedrockConverse { stream: false }, scope, f);
            }
        }
        // `contents`, or a whole `generateContentRequest` to count.
        ApiKind::GeminiCountTokens => {
            let generate = ApiKind::GeminiGenerate { stream: false };
            for key in ["generateContentRequest", "generate_content_request"] {
                if let Some(request) = object.get_mut(key) {
                    for_each_text(request, generate, scope, f);
                }
            }
            for_each_text(body, generate, scope, f);
        }
        // What is embedded is the user's: `content` (`title` too), or each of `requests[]`.
        ApiKind::GeminiEmbed { .. } => {
            if wants(Role::User) {
                embedded_texts(object, f);
                if let Some(Value::Array(requests)) = object.get_mut("requests") {
                    for request in requests.iter_mut().filter_map(Value::as_object_mut) {
                        embedded_texts(request, f);
                    }
                }
            }
        }
        // Vertex AI's `:predict`: each of `instances[]` (`content`, `title`).
        ApiKind::VertexEmbedPredict => {
            if let (true, Some(Value::Array(instances))) = (wants(Role::User), object.get_mut("instances")) {
                for instance in instances.iter_mut().filter_map(Value::as_object_mut) {
                    embedded_texts(instance, f);
                }
            }
        }
        // Imagen's, Veo's and the multimodal embeddings' `:predict`: each instance's `prompt`
        // (`text`), and what the images must not show (`parameters.negativePrompt`).
        ApiKind::GooglePredict => {
            if !wants(Role::User) {
                return;
            }
            if let Some(Value::Array(instances)) = object.get_mut("instances") {
                for instance in instances.iter_mut().filter_map(Value::as_object_mut) {
                    for key in ["prompt", "text"] {
                        if let Some(text @ Value::String(_)) = instance.get_mut(key) {
                            strings_in(text, Role::User, 0, f);
                        }
                    }
                }
            }
            let negative = object.get_mut("parameters").and_then(|p| p.get_mut("negativePrompt"));
            if let Some(text @ Value::String(_)) = negative {
                strings_in(text, Role::User, 0, f);
            }
        }
        // Gemini Batch Mode: `batch.inputConfig.requests.requests[].request` (either spelling).
        ApiKind::GeminiBatch => {
            let Some(Value::Object(batch)) = object.get_mut("batch") else { return };
            for key in ["inputConfig", "input_config"] {
                let inlined =
                    batch.get_mut(key).and_then(|c| c.get_mut("requests")).and_then(|r| r.get_mut("requests"));
                if let Some(Value::Array(requests)) = inlined {
                    for request in requests.iter_mut().filter_map(|r| r.get_mut("request")) {
                        for_each_text(request, ApiKind::GeminiGenerate { stream: false }, scope, f);
                    }
                }
            }
        }
        // A Message Batch carries a Messages request in each `requests[].params`, every one
        // checked (`history: latest` keeps each request's last message).
        ApiKind::AnthropicBatch => {
            if let Some(Value::Array(requests)) = object.get_mut("requests") {
                for params in requests.iter_mut().filter_map(|r| r.get_mut("params")) {
                    for_each_text(params, ApiKind::AnthropicMessages, scope, f);
                }
            }
        }
        // A form, not JSON: not guarded (see the guardrails stage).
        ApiKind::OpenAiModels | ApiKind::OpenAiTranscription | ApiKind::OpenAiImageEdits => {}
    }
}

/// Calls `f` with every text of a (non-streamed) answer: OpenAI chat `choices[].message`
/// (content, tool-call arguments), completions `choices[].text`, Anthropic `content[]` (text,
/// thinking, tool inputs), Responses `output[]` (message parts and refusals, tool-call arguments,
/// reasoning summaries), Gemini `candidates[].content`, Bedrock
/// `output.message`, and the InvokeModel families' own: Llama `generation`, Cohere `text` and
/// `generations[].text`, Claude's legacy `completion`, Titan `results[].outputText`, Mistral
/// `outputs[].text`; a transcription's `text`, `segments[].text` (also diarized) and
/// `words[].word`.
pub fn for_each_answer_text(body: &mut Value, f: &mut dyn FnMut(&mut String)) {
    let mut g = |_: Role, text: &mut String| f(text);
    let Some(object) = body.as_object_mut() else { return };
    if let Some(Value::Array(choices)) = object.get_mut("choices") {
        for choice in choices {
            if let Some(text @ Value::String(_)) = choice.get_mut("text") {
                strings_in(text, Role::Assistant, 0, &mut g);
            }
            if let Some(message) = choice.get_mut("message") {
                message_texts(message, &|_| true, &mut g);
            }
        }
    }
    for key in ["content", "output", "candidates"] {
        if let Some(Value::Array(items)) = object.get_mut(key) {
            for item in items {
                if key != "content" && item.get("content").is_some() {
                    // A Responses reasoning item may have a summary beside its content.
                    for part in ["content", "summary"] {
                        if let Some(value) = item.get_mut(part) {
                            strings_in(value, Role::Assistant, 0, &mut g);
                        }
                    }
                } else {
                    content_block(item, Role::Assistant, &mut g);
                }
            }
        }
    }
    if let Some(message) = object.get_mut("output").and_then(|o| o.get_mut("message")) {
        message_texts(message, &|_| true, &mut g);
    }
    for key in ["generation", "text", "completion"] {
        if let Some(text @ Value::String(_)) = object.get_mut(key) {
            strings_in(text, Role::Assistant, 0, &mut g);
        }
    }
    // (A transcription's `segments[].text` and `words[].word` too: each word is checked alone.)
    for (list, field) in [
        ("results", "outputText"),
        ("outputs", "text"),
        ("generations", "text"),
        ("segments", "text"),
        ("words", "word"),
    ] {
        if let Some(Value::Array(items)) = object.get_mut(list) {
            for item in items {
                if let Some(text @ Value::String(_)) = item.get_mut(field) {
                    strings_in(text, Role::Assistant, 0, &mut g);
                }
            }
        }
    }
}

/// An embedding request's text: `content.parts[]` and a document's `title`, as the user's.
fn embedded_texts(request: &mut serde_json::Map<String, Value>, f: &mut dyn FnMut(Role, &mut String)) {
    if let Some(content) = request.get_mut("content") {
        message_texts(content, &|_| true, &mut |_, text| f(Role::User, text));
    }
    if let Some(title @ Value::String(_)) = request.get_mut("title") {
        strings_in(title, Role::User, 0, f);
    }
}

/// One message: its role decides; `tool_result` blocks inside are role `tool`.
fn message_texts(message: &mut Value, wants: &dyn Fn(Role) -> bool, f: &mut dyn FnMut(Role, &mut String)) {
    let Some(object) = message.as_object_mut() else {
        if let Value::String(_) = message {
            if wants(Role::User) {
                strings_in(message, Role::User, 0, f);
            }
        }
        return;
    };
    let role = role_of(object.get("role").and_then(Value::as_str).unwrap_or("user"));
    // Responses' function-call outputs carry no role.
    let role = match object.get("type").and_then(Value::as_str) {
        Some("function_call_output") => Role::Tool,
        Some("function_call") => Role::Assistant,
        _ => role,
    };
    for key in ["content", "parts", "output", "arguments"] {
        let Some(value) = object.get_mut(key) else { continue };
        match value {
            Value::Array(blocks) => {
                for block in blocks {
                    let tool = block.get("type").and_then(Value::as_str) == Some("tool_result")
                        || block.get("toolResult").is_some()
                        || block.get("functionResponse").is_some()
                        || block.get("function_response").is_some();
                    let role = if tool { Role::Tool } else { role };
                    if wants(role) {
                        content_block(block, role, f);
                    }
                }
            }
            other if wants(role) => strings_in(other, role, 0, f),
            _ => {}
        }
    }
    if wants(role) {
        if let Some(Value::Array(calls)) = object.get_mut("tool_calls") {
            for call in calls {
                if let Some(arguments) = call.get_mut("function").and_then(|f| f.get_mut("arguments")) {
                    strings_in(arguments, role, 0, f);
                }
            }
        }
        if let Some(call) = object.get_mut("function_call").and_then(|c| c.get_mut("arguments")) {
            strings_in(call, role, 0, f);
        }
    }
}

/// A content block: text-bearing fields only (not ids, types, media types or base64 images).
fn content_block(block: &mut Value, role: Role, f: &mut dyn FnMut(Role, &mut String)) {
    match block {
        Value::String(_) => strings_in(block, role, 0, f),
        Value::Object(object) => {
            for key in [
                "text",
                "thinking",
                "refusal",
                "summary",
                "input",
                "content",
                "arguments",
                "args",
                "functionCall",
                "function_call",
                "functionResponse",
                "function_response",
                "toolUse",
                "toolResult",
                "json",
                "output",
                "parts",
            ] {
                if let Some(value) = object.get_mut(key) {
                    strings_in(value, role, 1, f);
                }
            }
        }
        _ => {}
    }
}

/// Every string inside `value` (object keys excluded).
/// A Responses-style `input`: a string (the user's), or items (messages, tool calls and
/// outputs), of which only the last when `latest`.
fn responses_input(
    input: Option<&mut Value>,
    latest: bool,
    wants: &dyn Fn(Role) -> bool,
    f: &mut dyn FnMut(Role, &mut String),
) {
    match input {
        Some(Value::Array(items)) => {
            let skip = if latest { items.len().saturating_sub(1) } else { 0 };
            for item in items.iter_mut().skip(skip) {
                message_texts(item, wants, f);
            }
        }
        Some(input) if wants(Role::User) => strings_in(input, Role::User, 0, f),
        _ => {}
    }
}

fn strings_in(value: &mut Value, role: Role, depth: usize, f: &mut dyn FnMut(Role, &mut String)) {
    if depth > MAX_DEPTH {
        return;
    }
    match value {
        Value::String(text) => f(role, text),
        Value::Array(items) => {
            for item in items {
                match item {
                    // A content part: only its text-bearing fields.
                    Value::Object(_) => content_block(item, role, f),
                    other => strings_in(other, role, depth + 1, f),
                }
            }
        }
        Value::Object(object) => {
            for (key, item) in object.iter_mut() {
                // Media, ids and types of messages and blocks are not prompt text; deeper (inside
                // a tool's input) every string is checked, whatever its key.
                if depth <= 1
                    && matches!(
                        key.as_str(),
                        "type"
                            | "role"
                            | "id"
                            | "tool_use_id"
                            | "media_type"
                            | "mime_type"
                            | "mimeType"
                            | "data"
                            | "image_url"
                            | "url"
                            | "source"
                            | "cache_control"
                            | "name"
                            | "call_id"
                    )
                {
                    continue;
                }
                strings_in(item, role, depth + 1, f);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(body: &str, kind: ApiKind, scope: &RequestScope) -> Vec<(Role, String)> {
        let mut value: Value = serde_json::from_str(body).unwrap();
        let mut out = Vec::new();
        for_each_text(&mut value, kind, scope, &mut |role, text| out.push((role, text.clone())));
        out
    }

    #[test]
    fn openai_chat_roles_parts_and_tool_calls() {
        let body = r#"{"model":"m","messages":[
            {"role":"developer","content":"sys"},
            {"role":"user","content":[{"type":"text","text":"u1"},{"type":"image_url","image_url":{"url":"data:x"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"cpf\":\"1\"}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"result"},
            {"role":"user","content":"u\u00e7"}]}"#;
        let all = collect(body, ApiKind::OpenAiChat, &RequestScope::default());
        assert_eq!(
            all,
            vec![
                (Role::System, "sys".into()),
                (Role::User, "u1".into()),
                (Role::Assistant, "{\"cpf\":\"1\"}".into()),
                (Role::Tool, "result".into()),
                (Role::User, "uç".into())
            ]
        );
        let latest = RequestScope { roles: vec![Role::User], history: History::Latest };
        assert_eq!(collect(body, ApiKind::OpenAiChat, &latest), vec![(Role::User, "uç".into())]);
    }

    #[test]
    fn gemini_fields_are_read_by_either_name() {
        // Gemini's protobuf JSON takes `system_instruction` as well as `systemInstruction` (its
        // own REST examples use the former): neither is a way round the policy.
        let body = r#"{"system_instruction":{"parts":[{"text":"sys"}]},"contents":[
            {"role":"model","parts":[{"function_call":{"name":"f","args":{"q":"a"}}}]},
            {"role":"user","parts":[{"function_response":{"name":"f","response":{"r":"b"}}},{"text":"c"}]}]}"#;
        let all = collect(body, ApiKind::GeminiGenerate { stream: false }, &RequestScope::default());
        let expected = [(Role::System, "sys"), (Role::Assistant, "a"), (Role::Tool, "b"), (Role::User, "c")];
        assert_eq!(all, expected.map(|(r, t)| (r, t.to_string())));
        let camel = body.replace("system_instruction", "systemInstruction").replace("function_call", "functionCall");
        let camel = camel.replace("function_response", "functionResponse");
        assert_eq!(collect(&camel, ApiKind::GeminiGenerate { stream: false }, &RequestScope::default()), all);
    }

    #[test]
    fn gemini_token_counts_and_embeddings_are_read() {
        let count = r#"{"generate_content_request":{"model":"models/gemini-2.5-flash","system_instruction":{"parts":[{"text":"sys"}]},
            "contents":[{"role":"user","parts":[{"text":"u"}]}]}}"#;
        let all = collect(count, ApiKind::GeminiCountTokens, &RequestScope::default());
        assert_eq!(all, vec![(Role::System, "sys".to_string()), (Role::User, "u".to_string())]);
        let contents = r#"{"contents":[{"role":"user","parts":[{"text":"u"}]}]}"#;
        assert_eq!(
            collect(contents, ApiKind::GeminiCountTokens, &RequestScope::default()),
            vec![(Role::User, "u".to_string())]
        );

        let embed = r#"{"content":{"parts":[{"text":"a"},{"text":"b"}]},"title":"t","taskType":"RETRIEVAL_DOCUMENT"}"#;
        let texts = collect(embed, ApiKind::GeminiEmbed { usage: true }, &RequestScope::default());
        assert_eq!(texts, ["a", "b", "t"].map(|t| (Role::User, t.to_string())));
        let batch = r#"{"requests":[{"model":"models/m","content":{"parts":[{"text":"a"}]}},{"model":"models/m","content":{"parts":[{"text":"b"}]}}]}"#;
        let texts = collect(batch, ApiKind::GeminiEmbed { usage: false }, &RequestScope::default());
        assert_eq!(texts, ["a", "b"].map(|t| (Role::User, t.to_string())));
        let image = r#"{"model":"gpt-image-1","prompt":"a","size":"1024x1024","quality":"low"}"#;
        let texts = collect(image, ApiKind::OpenAiImages, &RequestScope::default());
        assert_eq!(texts, [(Role::User, "a".to_string())], "the prompt, not the settings");
        // A decision: each question's instructions (a string or parts) and the input; not the
        // names, types, choices' values or levels' labels.
        let decision = r#"{"model":"gpt-6-luna","input":[{"role":"user","content":"u1"},{"role":"user","content":"u2"}],
            "questions":[{"type":"predicate","name":"p","instructions":"q1"},
                         {"type":"choice","name":"c","instructions":[{"type":"input_text","text":"q2"}],
                          "choices":[{"value":"billing"},{"value":true}]}]}"#;
        let texts = collect(decision, ApiKind::OpenAiDecisions, &RequestScope::default());
        let strings: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(strings, ["q1", "q2", "u1", "u2"]);
        assert_eq!(texts[0].0, Role::System);
        let only_user = RequestScope { roles: vec![Role::User], ..RequestScope::default() };
        assert_eq!(collect(decision, ApiKind::OpenAiDecisions, &only_user).len(), 2);
        let predict = r#"{"instances":[{"content":"a","task_type":"RETRIEVAL_DOCUMENT","title":"t"},{"content":"b"}],
            "parameters":{"outputDimensionality":256}}"#;
        let texts = collect(predict, ApiKind::VertexEmbedPredict, &RequestScope::default());
        assert_eq!(texts, ["a", "t", "b"].map(|t| (Role::User, t.to_string())));
    }

    #[test]
    fn stored_contents_are_checked_whole() {
        let latest = RequestScope { history: History::Latest, ..RequestScope::default() };
        let cache = r#"{"model":"models/gemini-2.5-flash","system_instruction":{"parts":[{"text":"sys"}]},
            "contents":[{"role":"user","parts":[{"text":"a"}]},{"role":"model","parts":[{"text":"b"}]}],"ttl":"300s"}"#;
        let texts = collect(cache, ApiKind::GeminiCache, &latest);
        let expected = [(Role::System, "sys"), (Role::User, "a"), (Role::Assistant, "b")];
        assert_eq!(texts, expected.map(|(r, t)| (r, t.to_string())), "every content, even with history: latest");
        let items = r#"{"items":[{"type":"message","role":"user","content":"a"},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"b"}]}],"metadata":{"k":"v"}}"#;
        let texts = collect(items, ApiKind::OpenAiConversation, &latest);
        assert_eq!(texts, [(Role::User, "a"), (Role::Assistant, "b")].map(|(r, t)| (r, t.to_string())));
    }

    #[test]
    fn imagen_veo_and_multimodal_predicts_show_their_prompts() {
        // What the Gen AI SDK sends for `generate_images` (and `generate_videos`, the same shape).
        let imagen = r#"{"instances":[{"prompt":"a cat"}],"parameters":{"sampleCount":2,"negativePrompt":"dogs",
            "personGeneration":"dont_allow","outputOptions":{"mimeType":"image/png"}}}"#;
        let texts = collect(imagen, ApiKind::GooglePredict, &RequestScope::default());
        assert_eq!(texts, ["a cat", "dogs"].map(|t| (Role::User, t.to_string())), "not the settings");
        let multimodal = r#"{"instances":[{"text":"a","image":{"bytesBase64Encoded":"iVBORw0KGgo="}},{"prompt":"b"}]}"#;
        let texts = collect(multimodal, ApiKind::GooglePredict, &RequestScope::default());
        assert_eq!(texts, ["a", "b"].map(|t| (Role::User, t.to_string())), "not the image's bytes");
        let system_only = RequestScope { roles: vec![Role::System], ..RequestScope::default() };
        assert!(collect(imagen, ApiKind::GooglePredict, &system_only).is_empty(), "a user's prompt");
    }

    #[test]
    fn every_request_of_a_gemini_batch_is_read() {
        let body = r#"{"batch":{"display_name":"b","input_config":{"requests":{"requests":[
            {"request":{"system_instruction":{"parts":[{"text":"sys"}]},"contents":[{"parts":[{"text":"a"}]}]},"metadata":{"key":"1"}},
            {"request":{"contents":[{"role":"user","parts":[{"text":"b"}]}]},"metadata":{"key":"2"}}]}}}}"#;
        let expected = [(Role::System, "sys"), (Role::User, "a"), (Role::User, "b")].map(|(r, t)| (r, t.to_string()));
        assert_eq!(collect(body, ApiKind::GeminiBatch, &RequestScope::default()), expected);
        let camel = body.replace("input_config", "inputConfig");
        assert_eq!(collect(&camel, ApiKind::GeminiBatch, &RequestScope::default()), expected);
    }

    #[test]
    fn a_bedrock_invoke_body_is_read_whatever_the_model_family() {
        let invoke = ApiKind::BedrockInvoke { stream: false };
        let claude = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":9,"system":"sys",
            "messages":[{"role":"user","content":[{"type":"text","text":"u"}]}]}"#;
        let expected = [(Role::System, "sys"), (Role::User, "u")].map(|(r, t)| (r, t.to_string()));
        assert_eq!(collect(claude, invoke, &RequestScope::default()), expected);
        let nova = r#"{"schemaVersion":"messages-v1","system":[{"text":"sys"}],"messages":[{"role":"user","content":[{"text":"u"}]}]}"#;
        assert_eq!(collect(nova, invoke, &RequestScope::default()), expected);
        for (body, text) in [
            (r#"{"prompt":"p","max_gen_len":5}"#, "p"),
            (r#"{"inputText":"t","textGenerationConfig":{"maxTokenCount":5}}"#, "t"),
            (r#"{"texts":["t"],"input_type":"search_document"}"#, "t"),
            (r#"{"message":"m","chat_history":[]}"#, "m"),
        ] {
            assert_eq!(collect(body, invoke, &RequestScope::default()), vec![(Role::User, text.to_string())], "{body}");
        }
    }

    #[test]
    fn every_request_of_a_message_batch_is_read() {
        let body = r#"{"requests":[
            {"custom_id":"a","params":{"model":"m","max_tokens":9,"system":"sys","messages":[
                {"role":"user","content":"a1"},{"role":"assistant","content":"a2"},{"role":"user","content":"a3"}]}},
            {"custom_id":"b","params":{"model":"m","max_tokens":9,"messages":[{"role":"user","content":[{"type":"text","text":"b1"}]}]}},
            {"custom_id":"c"}]}"#;
        let all = collect(body, ApiKind::AnthropicBatch, &RequestScope::default());
        let expected = [
            (Role::System, "sys"),
            (Role::User, "a1"),
            (Role::Assistant, "a2"),
            (Role::User, "a3"),
            (Role::User, "b1"),
        ];
        assert_eq!(all, expected.map(|(r, t)| (r, t.to_string())));
        let latest = RequestScope { roles: vec![Role::User], history: History::Latest };
        assert_eq!(
            collect(body, ApiKind::AnthropicBatch, &latest),
            vec![(Role::User, "a3".to_string()), (Role::User, "b1".to_string())],
            "each request's last message"
        );
    }

    #[test]
    fn anthropic_system_tool_use_and_results() {
        let body = r#"{"model":"m","system":[{"type":"text","text":"sys"}],"messages":[
            {"role":"user","content":"hi"},
            {"role":"assistant","content":[{"type":"text","text":"a"},{"type":"tool_use","id":"t","name":"n","input":{"q":"x","n":[1,"y"]}}]},
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"r"}]}]}]}"#;
        let all = collect(body, ApiKind::AnthropicMessages, &RequestScope::default());
        let mut texts: Vec<(Role, &str)> = all.iter().map(|(r, t)| (*r, t.as_str())).collect();
        // Tool inputs are walked in the map's key order, which depends on serde_json's features.
        texts.get_mut(3..5).unwrap().sort();
        assert_eq!(
            texts,
            vec![
                (Role::System, "sys"),
                (Role::User, "hi"),
                (Role::Assistant, "a"),
                (Role::Assistant, "x"),
                (Role::Assistant, "y"),
                (Role::Tool, "r")
            ]
        );
    }

    #[test]
    fn answers_of_every_api() {
        let answers = [
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"a","tool_calls":[{"function":{"name":"f","arguments":"b"}}]}}]}"#,
            r#"{"choices":[{"index":0,"text":"a"}],"object":"text_completion"}"#,
            r#"{"type":"message","content":[{"type":"text","text":"a"},{"type":"tool_use","id":"t","name":"n","input":{"k":"b"}}]}"#,
            r#"{"output":[{"type":"message","content":[{"type":"output_text","text":"a"}]}]}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"a"}]}}]}"#,
            r#"{"output":{"message":{"role":"assistant","content":[{"text":"a"}]}}}"#,
            // InvokeModel: Llama, Cohere, Claude 2, Titan, Mistral, Cohere Command.
            r#"{"generation":"a","prompt_token_count":12,"generation_token_count":3,"stop_reason":"stop"}"#,
            r#"{"text":"a","generation_id":"g","chat_history":[],"finish_reason":"COMPLETE"}"#,
            r#"{"completion":"a","stop_reason":"stop_sequence"}"#,
            r#"{"inputTextTokenCount":5,"results":[{"tokenCount":3,"outputText":"a","completionReason":"FINISH"}]}"#,
            r#"{"outputs":[{"text":"a","stop_reason":"stop"}]}"#,
            r#"{"id":"i","generations":[{"id":"g","text":"a","finish_reason":"COMPLETE"}]}"#,
        ];
        for answer in answers {
            let mut value: Value = serde_json::from_str(answer).unwrap();
            let mut seen = Vec::new();
            for_each_answer_text(&mut value, &mut |t| seen.push(t.clone()));
            assert_eq!(seen.first().map(String::as_str), Some("a"), "{answer}");
        }
        // A transcription: verbose (segments and words) and diarized.
        let mut value: Value = serde_json::from_str(
            r#"{"task":"transcribe","language":"portuguese","duration":3.2,"text":"t",
                "segments":[{"id":0,"start":0.0,"end":3.2,"text":"s","tokens":[1,2]}],
                "words":[{"word":"w","start":0.0,"end":0.4}],"usage":{"type":"duration","seconds":4}}"#,
        )
        .unwrap();
        let mut seen = Vec::new();
        for_each_answer_text(&mut value, &mut |t| seen.push(t.clone()));
        assert_eq!(seen, ["t", "s", "w"]);
        let mut value: Value = serde_json::from_str(
            r#"{"text":"a b","segments":[{"type":"transcript.text.segment","speaker":"A","text":"d"}]}"#,
        )
        .unwrap();
        let mut seen = Vec::new();
        for_each_answer_text(&mut value, &mut |t| seen.push(t.clone()));
        assert_eq!(seen, ["a b", "d"]);
        // Every text of a Responses answer: reasoning summary and text, refusal, tool arguments.
        let mut value: Value = serde_json::from_str(
            r#"{"output":[
                {"type":"reasoning","id":"rs","summary":[{"type":"summary_text","text":"s1"}],
                 "content":[{"type":"reasoning_text","text":"r1"}],"encrypted_content":"gAAA"},
                {"type":"reasoning","id":"rs2","summary":[{"type":"summary_text","text":"s2"}]},
                {"type":"message","content":[{"type":"refusal","refusal":"no"},{"type":"output_text","text":"a"}]},
                {"type":"function_call","call_id":"c","name":"f","arguments":"{}"}]}"#,
        )
        .unwrap();
        let mut seen = Vec::new();
        for_each_answer_text(&mut value, &mut |t| seen.push(t.clone()));
        assert_eq!(seen, ["r1", "s1", "s2", "no", "a", "{}"]);
        // A Responses answer's `text` is its format settings, not text.
        let mut value: Value = serde_json::from_str(r#"{"output":[],"text":{"format":{"type":"text"}}}"#).unwrap();
        let mut seen = Vec::new();
        for_each_answer_text(&mut value, &mut |t| seen.push(t.clone()));
        assert!(seen.is_empty(), "{seen:?}");
    }

    #[test]
    fn every_string_of_a_tool_input_is_checked_whatever_its_key() {
        let body = r#"{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"lookup",
            "input":{"customer":{"id":"529.982.247-25","name":"Ana","url":"https://x/?e=a@b.com"}}}]}]}"#;
        let mut texts: Vec<String> =
            collect(body, ApiKind::AnthropicMessages, &RequestScope::default()).into_iter().map(|(_, t)| t).collect();
        texts.sort();
        assert_eq!(texts, ["529.982.247-25", "Ana", "https://x/?e=a@b.com"]);
    }

    #[test]
    fn embeddings_and_rewrites_in_place() {
        let mut value: Value = serde_json::from_str(r#"{"input":["a","b"],"model":"e"}"#).unwrap();
        for_each_text(&mut value, ApiKind::OpenAiEmbeddings, &RequestScope::default(), &mut |_, t| t.push('!'));
        assert_eq!(value["input"], serde_json::json!(["a!", "b!"]));
        assert_eq!(value["model"], "e", "not prompt text");
    }
}
