//! Gemini backends: Google AI Studio (`{base_path}/models/{model}:generateContent`,
//! `x-goog-api-key`) and Vertex AI (`{base_path}/projects/{project}/locations/{location}/
//! publishers/google/models/{model}:generateContent`, `Authorization: Bearer <token>`). Streams
//! use `:streamGenerateContent?alt=sse`. The Vertex token comes from the backend's `api_key`
//! (from the VM's environment, refreshed by whoever sets it, or the configuration).
//! References: ai.google.dev/api/generate-content, cloud.google.com/vertex-ai/generative-ai/docs/
//! model-reference/inference.

use super::{Backend, Kind};
use crate::route::ApiKind;

pub fn path(backend: &Backend, api: ApiKind, model: &str) -> Option<String> {
    let ApiKind::GeminiGenerate { stream } = api else { return None };
    let method = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
    let base = &backend.base_path;
    Some(match backend.kind {
        Kind::Vertex => format!(
            "{base}/projects/{}/locations/{}/publishers/google/models/{model}:{method}",
            backend.project, backend.location
        ),
        _ => format!("{base}/models/{model}:{method}"),
    })
}

pub fn headers(backend: &Backend) -> Vec<(&'static str, String)> {
    match (backend.kind, &backend.api_key) {
        (Kind::Vertex, Some(token)) => vec![("authorization", format!("Bearer {}", token.expose()))],
        (_, Some(key)) => vec![("x-goog-api-key", key.expose().to_string())],
        (_, None) => Vec::new(),
    }
}
