//! AWS Bedrock Converse / ConverseStream: the `TokenUsage` section.
//!
//! Reference: docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_TokenUsage.html.
//! `inputTokens` excludes `cacheReadInputTokens` and `cacheWriteInputTokens`. A stream carries
//! usage once, in the `metadata` event.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub total_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_write_input_tokens: Option<u64>,
}
