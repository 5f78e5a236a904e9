//! Azure OpenAI backends: `{base_path}/openai/deployments/{deployment}/chat/completions
//! ?api-version=…`, `api-key: <key>`. The table's model id is the deployment name.
//! Reference: learn.microsoft.com/azure/ai-services/openai/reference (data-plane inference).

use super::Backend;
use crate::route::ApiKind;

pub fn path(backend: &Backend, api: ApiKind, deployment: &str) -> Option<String> {
    let tail = match api {
        ApiKind::OpenAiChat => "chat/completions",
        ApiKind::OpenAiCompletions => "completions",
        ApiKind::OpenAiEmbeddings => "embeddings",
        ApiKind::OpenAiImages => "images/generations",
        ApiKind::OpenAiSpeech => "audio/speech",
        _ => return None,
    };
    let base = &backend.base_path; // "" by default: Azure's paths start at the resource root
    Some(format!("{base}/openai/deployments/{deployment}/{tail}?api-version={}", backend.api_version))
}

pub fn headers(backend: &Backend) -> Vec<(&'static str, String)> {
    backend.api_key.iter().map(|key| ("api-key", key.expose().to_string())).collect()
}
