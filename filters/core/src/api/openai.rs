//! OpenAI Chat Completions (request, response, stream chunk) and the usage sections of Chat
//! Completions, legacy Completions, Embeddings and the Responses API.
//!
//! Reference: platform.openai.com/docs/api-reference/chat. Azure OpenAI uses the same bodies.

use super::Rest;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<serde_json::Value>>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant`, `tool` (or the legacy `function`).
    pub role: String,
    /// A string, an array of content parts, or null (assistant messages with tool calls).
    /// `Some(None)` is an explicit `null`, kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option")]
    pub content: Option<Option<Content>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// `{"type":"text","text":…}`, `{"type":"image_url","image_url":{…}}`, `input_audio`, `file`, …
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCall>,
    /// Present on stream deltas: which tool call this fragment extends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// JSON text, possibly a fragment of it in stream deltas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: ChatMessage,
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// One `data:` event of a streamed chat completion (`object: "chat.completion.chunk"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    /// Empty on the usage-only chunk that `stream_options.include_usage` adds.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// `null` on every chunk but the last when `include_usage` is set; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option")]
    pub usage: Option<Option<Usage>>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `Some(None)` is an explicit `null` (tool-call deltas), kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option")]
    pub content: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// Usage of Chat Completions, Completions and Embeddings (`prompt_tokens`…) and of the
/// Responses API (`input_tokens`…): the same counters under two sets of names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, alias = "input_tokens")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, alias = "output_tokens", skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    #[serde(default, alias = "input_tokens_details", skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, alias = "output_tokens_details", skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u64>,
    /// Input tokens written to the prompt cache (part of the input, like `cached_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    /// Responses: the writes by retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens_details: Option<CacheWriteDetails>,
}

/// `input_tokens_details.cache_write_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheWriteDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_30m_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_12h_tokens: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_prediction_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_prediction_tokens: Option<u64>,
}

/// Distinguishes an absent field from an explicit `null` (`usage` on stream chunks).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }

    pub fn serialize<T: Serialize, S: Serializer>(value: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../../tests/fixtures/responses/openai/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    /// Parse, serialise again, compare as JSON: nothing a provider sent is lost.
    fn round_trips<T: serde::de::DeserializeOwned + Serialize>(json: &[u8]) -> T {
        let typed: T = serde_json::from_slice(json).unwrap();
        let again: Value = serde_json::to_value(&typed).unwrap();
        assert_eq!(again, serde_json::from_slice::<Value>(json).unwrap());
        typed
    }

    #[test]
    fn responses_round_trip_with_unknown_fields_kept() {
        let response: ChatCompletionResponse = round_trips(&fixture("chat.json"));
        assert_eq!(response.usage.and_then(|u| u.total_tokens), Some(29));
        assert!(response.rest.contains_key("service_tier"));
        let tools: ChatCompletionResponse = round_trips(&fixture("chat-tools.json"));
        let call = &tools.choices[0].message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.function.as_ref().unwrap().name.as_deref(), Some("get_weather"));
    }

    #[test]
    fn stream_chunks_round_trip_and_tell_null_usage_from_absent() {
        let text = String::from_utf8(fixture("chat-tools-stream.sse")).unwrap();
        let mut chunks = Vec::new();
        for event in text.split("\n\n").filter(|e| e.starts_with("data: {")) {
            chunks.push(round_trips::<ChatCompletionChunk>(&event.as_bytes()[6..]));
        }
        assert_eq!(chunks[0].usage, Some(None), "usage: null on content chunks");
        let last = chunks.last().unwrap();
        assert!(last.choices.is_empty());
        assert_eq!(last.usage.unwrap().unwrap().completion_tokens, Some(17));
        let without: ChatCompletionChunk =
            serde_json::from_str(r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[]}"#)
                .unwrap();
        assert_eq!(without.usage, None, "no usage key at all");
    }

    #[test]
    fn requests_round_trip_with_parts_tools_and_extras() {
        let request = br#"{"model":"gpt-4o","messages":[{"role":"developer","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"42"}],
            "stream":true,"stream_options":{"include_usage":true},"temperature":0.2,"response_format":{"type":"json_object"},
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"max_completion_tokens":64,"n":1,"user":"u-1"}"#;
        let parsed: ChatCompletionRequest = round_trips(request);
        assert_eq!(parsed.messages.len(), 4);
        assert!(
            matches!(parsed.messages[1].content, Some(Some(Content::Parts(ref parts))) if parts[1].kind == "image_url")
        );
        assert_eq!(parsed.messages[2].content, Some(None), "explicit null kept");
        assert_eq!(parsed.rest.get("response_format").and_then(|v| v["type"].as_str()), Some("json_object"));
    }
}
