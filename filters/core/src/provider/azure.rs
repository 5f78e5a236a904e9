//! Azure OpenAI backends: `{base_path}/openai/deployments/{deployment}/chat/completions
//! ?api-version=…`, `api-key: <key>`. The table's model id is the deployment name.
//! Reference: learn.microsoft.com/azure/ai-services/openai/reference (data-plane inference).

use super::Backend;
use crate::route::ApiKind;

/// Deployment names are letters, digits, `-`, `_` and `.` (they go into the path as they are).
pub fn deployment_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub fn path(backend: &Backend, api: ApiKind, deployment: &str) -> Option<String> {
    let tail = match api {
        ApiKind::OpenAiChat => "chat/completions",
        ApiKind::OpenAiCompletions => "completions",
        ApiKind::OpenAiEmbeddings => "embeddings",
        _ => return None,
    };
    if !deployment_safe(deployment) {
        return None; // a pattern passed an unsafe name through: never build a path from it
    }
    let base = &backend.base_path; // "" by default: Azure's paths start at the resource root
    Some(format!("{base}/openai/deployments/{deployment}/{tail}?api-version={}", backend.api_version))
}

pub fn headers(backend: &Backend) -> Vec<(&'static str, String)> {
    backend.api_key.iter().map(|key| ("api-key", key.expose().to_string())).collect()
}
