//! Google Gemini / Vertex AI `generateContent`: the `usageMetadata` section.
//!
//! Reference: ai.google.dev/api/generate-content#UsageMetadata. `promptTokenCount` includes
//! `cachedContentTokenCount`; `candidatesTokenCount` excludes `thoughtsTokenCount`; a stream
//! repeats `usageMetadata` on chunks with the counts so far, the last one being final.

use serde::{Deserialize, Serialize};

/// Vertex AI `:predict` for a text embedding model: `predictions[].embeddings.statistics`. The
/// prediction is a `google.protobuf.Value`, so the count is a JSON number that may be written
/// as a float (`6.0`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct EmbeddingStatistics {
    #[serde(default, alias = "tokenCount", deserialize_with = "whole_number")]
    pub token_count: Option<u64>,
}

/// A count written as an integer or as a float with no fraction (`6`, `6.0`).
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else { return Ok(None) };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!("token_count {number} is not a count"))),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: Option<u64>,
    #[serde(default)]
    pub candidates_token_count: Option<u64>,
    #[serde(default)]
    pub total_token_count: Option<u64>,
    #[serde(default)]
    pub cached_content_token_count: Option<u64>,
    #[serde(default)]
    pub thoughts_token_count: Option<u64>,
    #[serde(default)]
    pub tool_use_prompt_token_count: Option<u64>,
}
