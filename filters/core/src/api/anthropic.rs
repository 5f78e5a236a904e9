//! Anthropic Messages: the usage section, and the request fields a stage reads.
//!
//! Reference: docs.anthropic.com/en/api/messages and /en/docs/build-with-claude/streaming.
//! `input_tokens` excludes `cache_read_input_tokens` and `cache_creation_input_tokens`; in a
//! stream, `message_start.message.usage` carries the input side and `message_delta.usage` the
//! cumulative output (and, in newer API versions, cumulative input counters too).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}
