//! OpenAI and OpenAI-compatible backends: `{base_path}/chat/completions` (and the other
//! OpenAI paths), `Authorization: Bearer <key>`.

use super::Backend;
use crate::route::ApiKind;

/// The upstream path of `api` on this backend.
pub fn path(backend: &Backend, api: ApiKind) -> Option<String> {
    let tail = match api {
        ApiKind::OpenAiChat => "/chat/completions",
        ApiKind::OpenAiCompletions => "/completions",
        ApiKind::OpenAiEmbeddings => "/embeddings",
        ApiKind::OpenAiResponses => "/responses",
        ApiKind::OpenAiInputTokens => "/responses/input_tokens",
        ApiKind::OpenAiCompact => "/responses/compact",
        ApiKind::OpenAiImages => "/images/generations",
        ApiKind::OpenAiSpeech => "/audio/speech",
        ApiKind::OpenAiDecisions => "/decisions",
        _ => return None,
    };
    Some(format!("{}{tail}", backend.base_path))
}

/// Credential headers (the client's own are removed by the caller).
pub fn auth_headers(backend: &Backend) -> Vec<(&'static str, String)> {
    backend.api_key.iter().map(|key| ("authorization", format!("Bearer {}", key.expose()))).collect()
}
