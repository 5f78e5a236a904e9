//! Google Gemini / Vertex AI `generateContent`: the `usageMetadata` section.
//!
//! Reference: ai.google.dev/api/generate-content#UsageMetadata. `promptTokenCount` includes
//! `cachedContentTokenCount`; `candidatesTokenCount` excludes `thoughtsTokenCount`; a stream
//! repeats `usageMetadata` on chunks with the counts so far, the last one being final.

use serde::{Deserialize, Serialize};

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
