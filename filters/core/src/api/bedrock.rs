//! AWS Bedrock Runtime: Converse's `TokenUsage` and InvokeModel's invocation metrics.
//!
//! Reference: docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_TokenUsage.html.
//! `inputTokens` excludes `cacheReadInputTokens` and `cacheWriteInputTokens`. A stream carries
//! usage once, in the `metadata` event.
//!
//! InvokeModel (`/model/{id}/invoke`, `invoke-with-response-stream`) answers in the model
//! family's own format; Bedrock adds its counts beside it ([`InvocationMetrics`]).

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
    /// The writes made to live an hour: `cacheDetails` (`[{ttl, inputTokens}]`, one per TTL)
    /// summed for `1h`.
    #[serde(default, rename = "cacheDetails", deserialize_with = "hour_long_writes", skip_serializing)]
    pub cache_write_long_input_tokens: Option<u64>,
}

fn hour_long_writes<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct CacheDetail {
        #[serde(default)]
        ttl: Option<String>,
        #[serde(default)]
        input_tokens: Option<u64>,
    }
    let details: Option<Vec<CacheDetail>> = Option::deserialize(deserializer)?;
    Ok(details.map(|list| {
        list.iter()
            .filter(|d| d.ttl.as_deref() == Some("1h"))
            .filter_map(|d| d.input_tokens)
            .fold(0, u64::saturating_add)
    }))
}

/// InvokeModel's counts, whatever the model family: the `amazon-bedrock-invocationMetrics` member
/// of the last chunk of an `invoke-with-response-stream` answer (beside `invocationLatency` and
/// `firstByteLatency`), and the `x-amzn-bedrock-*-token-count` headers of an `invoke` answer.
/// `inputTokenCount` excludes the cache counts, as Converse's `inputTokens` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationMetrics {
    #[serde(default)]
    pub input_token_count: Option<u64>,
    #[serde(default)]
    pub output_token_count: Option<u64>,
    #[serde(default)]
    pub cache_read_input_token_count: Option<u64>,
    #[serde(default)]
    pub cache_write_input_token_count: Option<u64>,
}

/// The response headers of an `invoke` answer that carry [`InvocationMetrics`], in its field order.
pub const INVOKE_COUNT_HEADERS: [&str; 4] = [
    "x-amzn-bedrock-input-token-count",
    "x-amzn-bedrock-output-token-count",
    "x-amzn-bedrock-cache-read-input-token-count",
    "x-amzn-bedrock-cache-write-input-token-count",
];

/// One `chunk` event of an `invoke-with-response-stream` answer: the model's own stream event,
/// base64-encoded (the reference's `PayloadPart`; Bedrock adds a padding member `p`).
#[derive(Debug, Deserialize)]
pub struct PayloadPart<'a> {
    #[serde(borrow)]
    pub bytes: std::borrow::Cow<'a, str>,
}
