//! Anthropic Messages backends: `{base_path}/messages` (and `/messages/count_tokens`),
//! `x-api-key`, `anthropic-version`.
//! Reference: docs.anthropic.com/en/api/overview (headers), /en/api/messages,
//! /en/api/messages-count-tokens.

use super::Backend;
use crate::route::ApiKind;

pub fn path(backend: &Backend, api: ApiKind) -> String {
    match api {
        ApiKind::AnthropicCountTokens => format!("{}/messages/count_tokens", backend.base_path),
        _ => format!("{}/messages", backend.base_path),
    }
}

/// Credential and version headers (the client's own credentials are removed by the caller).
pub fn headers(backend: &Backend) -> Vec<(&'static str, String)> {
    let mut headers = vec![("anthropic-version", backend.anthropic_version.clone())];
    if let Some(key) = &backend.api_key {
        headers.push(("x-api-key", key.expose().to_string()));
    }
    headers
}
