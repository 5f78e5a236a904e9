//! Which LLM API a request speaks, decided from its method, path and authority alone.
//!
//! Everything that is not one of these APIs is "not AI traffic": the filters pass it untouched
//! and emit no metrics for it.

use crate::error::Dialect;
use crate::usage::UsageFormat;

/// The API a request targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiKind {
    /// `POST …/chat/completions` (OpenAI, Azure OpenAI, any OpenAI-compatible server).
    OpenAiChat,
    /// `POST …/completions` (legacy text completions).
    OpenAiCompletions,
    /// `POST …/embeddings`.
    OpenAiEmbeddings,
    /// `POST …/responses`.
    OpenAiResponses,
    /// `POST …/images/generations` (GPT Image models): `prompt`, `n`; answered with the images
    /// and `usage` in Responses' names (`input_tokens`, `output_tokens`), or streamed as
    /// `image_generation.*` events, the last with `usage`.
    OpenAiImages,
    /// `POST …/images/edits` (GPT Image models): a `multipart/form-data` form — `prompt`, `model`,
    /// `n`, `stream`, then the images (and a mask); only its head is read, as for a transcription.
    /// Answered as image generation is, the stream's events named `image_edit.*`.
    OpenAiImageEdits,
    /// `POST …/responses/compact`: a Responses body (`input`, `instructions`,
    /// `previous_response_id`), never streamed, answered with the compacted conversation
    /// (`object: "response.compaction"`, the user's messages and one encrypted `compaction` item)
    /// and `usage` in Responses' names.
    OpenAiCompact,
    /// `POST …/audio/transcriptions` and `…/audio/translations`: a `multipart/form-data` body, the
    /// audio file and text fields (`model`, `stream`, `prompt`, …), up to 25 MB; only the fields
    /// before the file are read, the body is never held whole. Answered with the text and, for
    /// the models billed in tokens (`gpt-transcribe`, `gpt-4o-transcribe`, …), `usage` in
    /// Responses' names (`input_tokens`, `output_tokens`), JSON or in the `transcript.text.done`
    /// event of a stream; `whisper-1` reports seconds, not tokens.
    OpenAiTranscription,
    /// `POST …/audio/speech` (text to speech): `model`, `input` (the text spoken, up to 4,096
    /// characters), `instructions`, `voice`; answered with the audio itself, or, when
    /// `stream_format` is `sse` (the GPT TTS models), `speech.audio.delta` events carrying base64
    /// audio and one `speech.audio.done` event with `usage` in Responses' names (`input_tokens`,
    /// `output_tokens`, `total_tokens`). `tts-1` and `tts-1-hd` report no usage (billed per
    /// character).
    OpenAiSpeech,
    /// `POST …/decisions` (OpenAI's classification and scoring API): `input` (a string or
    /// Responses-style items), `questions[]` (predicates, choices, scores, each with
    /// `instructions`); answered at once with `answers` and `usage` in Responses' names.
    OpenAiDecisions,
    /// `POST …/responses/input_tokens`: a Responses body, answered
    /// `{"object": "response.input_tokens", "input_tokens": n}`.
    OpenAiInputTokens,
    /// `POST …/v1/messages` (Anthropic Messages).
    AnthropicMessages,
    /// `POST …/v1/messages/count_tokens`: a Messages body, answered `{"input_tokens": n}`.
    AnthropicCountTokens,
    /// `POST …/v1/messages/batches` (Anthropic Message Batches): many Messages bodies inline
    /// (`requests[].params`), answered at once with the queued batch; generated later, and the
    /// usage comes with the results the client fetches.
    AnthropicBatch,
    /// `POST …/models/{model}:generateContent` / `:streamGenerateContent` (Gemini, Vertex AI).
    GeminiGenerate { stream: bool },
    /// `POST …/models/{model}:countTokens` (Gemini, Vertex AI): `contents`, or a whole
    /// `generateContentRequest`, answered `{"totalTokens": n}`.
    GeminiCountTokens,
    /// `POST …/models/{model}:embedContent` / `:batchEmbedContents` (Gemini, Vertex AI):
    /// `content`, or `requests[].content`. Vertex AI reports `usageMetadata` (`usage`); the Gemini
    /// API reports no usage for them.
    GeminiEmbed { usage: bool },
    /// `POST …/publishers/google/models/{model}:predict` for a Vertex AI text embedding model
    /// (`text-embedding-005`, `text-multilingual-embedding-002`, …; what the Gen AI SDK calls for
    /// models other than Gemini's): `instances[].content` (and `title`), answered with
    /// `predictions[].embeddings.statistics.token_count` per instance.
    VertexEmbedPredict,
    /// `POST …/models/{model}:predict` / `:predictLongRunning` of any other Google model (Imagen's
    /// image generation and editing, Veo's videos, the multimodal embeddings; Vertex AI or the
    /// Gemini API): prompts in `instances[].prompt` (or `text`) and `parameters.negativePrompt`,
    /// answered with images, vectors or a long-running operation and no token counts. Billed per
    /// image, second or call: guarded, not metered.
    GooglePredict,
    /// `POST …/cachedContents` (Gemini API, Vertex AI): contents stored for later `generateContent`
    /// calls to name in `cachedContent` — `contents`, `systemInstruction`, `tools`, as a generate
    /// body has them. Billed per token-hour of storage, nothing generated: guarded, not metered.
    GeminiCache,
    /// `POST …/conversations` and `POST …/conversations/{id}/items` (OpenAI's Conversations API):
    /// `items`, Responses' input items, stored for later Responses requests to name in
    /// `conversation`. Nothing generated: guarded, not metered.
    OpenAiConversation,
    /// `POST …/models/{model}:batchGenerateContent` (Gemini Batch Mode): generate requests
    /// inlined in `batch.inputConfig.requests.requests[].request`, answered at once with the
    /// pending batch (a long-running operation); the usage comes with its results.
    GeminiBatch,
    /// `POST /model/{modelId}/converse` / `converse-stream` (Bedrock Runtime).
    BedrockConverse { stream: bool },
    /// `POST /model/{modelId}/count-tokens` (Bedrock Runtime's CountTokens, Converse input).
    BedrockCountTokens,
    /// `POST /model/{modelId}/invoke` / `invoke-with-response-stream` (Bedrock Runtime's
    /// InvokeModel): the model family's own body (Anthropic Messages for Claude, `prompt`,
    /// `inputText`, …) and answer; Bedrock's counts come beside it, in headers or in the stream's
    /// last chunk (see [`UsageFormat::BedrockInvoke`]).
    BedrockInvoke { stream: bool },
    /// `GET …/v1/models` and `GET …/v1/models/{id}`: the model list and one model (answered by
    /// the gateway when it routes models).
    OpenAiModels,
}

impl ApiKind {
    /// Every kind, each flag both ways (for tests and fuzzing).
    pub const ALL: [ApiKind; 30] = [
        ApiKind::OpenAiChat,
        ApiKind::OpenAiCompletions,
        ApiKind::OpenAiEmbeddings,
        ApiKind::OpenAiResponses,
        ApiKind::OpenAiImages,
        ApiKind::OpenAiInputTokens,
        ApiKind::AnthropicMessages,
        ApiKind::AnthropicCountTokens,
        ApiKind::AnthropicBatch,
        ApiKind::GeminiGenerate { stream: false },
        ApiKind::GeminiGenerate { stream: true },
        ApiKind::GeminiCountTokens,
        ApiKind::GeminiEmbed { usage: false },
        ApiKind::GeminiEmbed { usage: true },
        ApiKind::VertexEmbedPredict,
        ApiKind::GooglePredict,
        ApiKind::GeminiBatch,
        ApiKind::BedrockConverse { stream: false },
        ApiKind::BedrockConverse { stream: true },
        ApiKind::BedrockCountTokens,
        ApiKind::BedrockInvoke { stream: false },
        ApiKind::BedrockInvoke { stream: true },
        ApiKind::OpenAiModels,
        ApiKind::OpenAiCompact,
        ApiKind::GeminiCache,
        ApiKind::OpenAiConversation,
        ApiKind::OpenAiTranscription,
        ApiKind::OpenAiImageEdits,
        ApiKind::OpenAiSpeech,
        ApiKind::OpenAiDecisions,
    ];

    /// Stable label for metrics and logs (`gen_ai.operation.name`-like).
    pub fn operation(self) -> &'static str {
        match self {
            ApiKind::OpenAiChat
            | ApiKind::AnthropicMessages
            | ApiKind::BedrockConverse { .. }
            | ApiKind::BedrockInvoke { .. } => "chat",
            ApiKind::OpenAiCompletions => "text_completion",
            ApiKind::OpenAiEmbeddings | ApiKind::GeminiEmbed { .. } | ApiKind::VertexEmbedPredict => "embeddings",
            ApiKind::OpenAiImages => "image_generation",
            ApiKind::GooglePredict => "predict",
            ApiKind::GeminiCache => "cache",
            ApiKind::OpenAiConversation => "conversation",
            ApiKind::OpenAiResponses => "responses",
            ApiKind::OpenAiCompact => "compact",
            ApiKind::OpenAiTranscription => "transcription",
            ApiKind::OpenAiImageEdits => "image_edit",
            ApiKind::OpenAiSpeech => "speech",
            ApiKind::OpenAiDecisions => "decision",
            ApiKind::GeminiGenerate { .. } => "generate_content",
            ApiKind::OpenAiModels => "list_models",
            ApiKind::AnthropicCountTokens
            | ApiKind::BedrockCountTokens
            | ApiKind::GeminiCountTokens
            | ApiKind::OpenAiInputTokens => "count_tokens",
            ApiKind::AnthropicBatch | ApiKind::GeminiBatch => "batch",
        }
    }

    /// Whether responses of this API report token usage (a model list and a token count do not:
    /// nothing is generated, nothing billed; nor do the Gemini API's embeddings, unlike Vertex AI's,
    /// nor Imagen's and Veo's predictions, billed per image or second, nor what is only stored:
    /// Gemini's cached contents, OpenAI's conversation items).
    pub fn has_usage(self) -> bool {
        !matches!(
            self,
            ApiKind::OpenAiModels
                | ApiKind::OpenAiInputTokens
                | ApiKind::AnthropicCountTokens
                | ApiKind::BedrockCountTokens
                | ApiKind::GeminiCountTokens
                | ApiKind::GeminiEmbed { usage: false }
                | ApiKind::GooglePredict
                | ApiKind::GeminiCache
                | ApiKind::OpenAiConversation
        )
    }

    /// Whether a success answer carries generated text (a token count, a model list, a queued
    /// batch, embeddings' vectors, images, speech and decisions' answers — probabilities and the
    /// caller's own choices — do not; a transcription's transcript does).
    pub fn answers_with_text(self) -> bool {
        self.has_usage()
            && !matches!(
                self,
                ApiKind::AnthropicBatch
                    | ApiKind::GeminiBatch
                    | ApiKind::OpenAiEmbeddings
                    | ApiKind::GeminiEmbed { .. }
                    | ApiKind::VertexEmbedPredict
                    | ApiKind::OpenAiImages
                    | ApiKind::OpenAiImageEdits
                    | ApiKind::OpenAiSpeech
                    | ApiKind::OpenAiDecisions
            )
    }

    /// Whether the request body is a `multipart/form-data` form whose leading text fields are
    /// read and whose file is passed on as it comes (see [`crate::request::parse_form_prefix`]).
    pub fn reads_form(self) -> bool {
        matches!(self, ApiKind::OpenAiTranscription | ApiKind::OpenAiImageEdits)
    }

    pub fn usage_format(self) -> UsageFormat {
        match self {
            ApiKind::OpenAiChat | ApiKind::OpenAiCompletions | ApiKind::OpenAiModels => UsageFormat::OpenAiChat,
            ApiKind::OpenAiEmbeddings => UsageFormat::OpenAiEmbeddings,
            ApiKind::OpenAiResponses
            | ApiKind::OpenAiCompact
            | ApiKind::OpenAiConversation
            | ApiKind::OpenAiTranscription
            | ApiKind::OpenAiInputTokens
            | ApiKind::OpenAiImages
            | ApiKind::OpenAiImageEdits
            | ApiKind::OpenAiSpeech
            | ApiKind::OpenAiDecisions => UsageFormat::OpenAiResponses,
            ApiKind::AnthropicMessages | ApiKind::AnthropicCountTokens | ApiKind::AnthropicBatch => {
                UsageFormat::Anthropic
            }
            ApiKind::GeminiGenerate { .. }
            | ApiKind::GeminiCountTokens
            | ApiKind::GeminiEmbed { .. }
            | ApiKind::GooglePredict
            | ApiKind::GeminiCache
            | ApiKind::GeminiBatch => UsageFormat::Gemini,
            ApiKind::VertexEmbedPredict => UsageFormat::VertexPredict,
            ApiKind::BedrockConverse { .. } | ApiKind::BedrockCountTokens => UsageFormat::Bedrock,
            ApiKind::BedrockInvoke { .. } => UsageFormat::BedrockInvoke,
        }
    }

    /// The dialect errors are rendered in for this client.
    pub fn dialect(self) -> Dialect {
        match self {
            ApiKind::AnthropicMessages | ApiKind::AnthropicCountTokens | ApiKind::AnthropicBatch => Dialect::Anthropic,
            ApiKind::OpenAiChat
            | ApiKind::OpenAiCompletions
            | ApiKind::OpenAiEmbeddings
            | ApiKind::OpenAiResponses
            | ApiKind::OpenAiCompact
            | ApiKind::OpenAiInputTokens
            | ApiKind::OpenAiImages
            | ApiKind::OpenAiConversation
            | ApiKind::OpenAiTranscription
            | ApiKind::OpenAiImageEdits
            | ApiKind::OpenAiSpeech
            | ApiKind::OpenAiDecisions
            | ApiKind::OpenAiModels => Dialect::OpenAi,
            ApiKind::GeminiGenerate { .. }
            | ApiKind::GeminiCountTokens
            | ApiKind::GeminiEmbed { .. }
            | ApiKind::VertexEmbedPredict
            | ApiKind::GooglePredict
            | ApiKind::GeminiCache
            | ApiKind::GeminiBatch => Dialect::Google,
            ApiKind::BedrockConverse { .. } | ApiKind::BedrockCountTokens | ApiKind::BedrockInvoke { .. } => {
                Dialect::Aws
            }
        }
    }
}

/// A classified AI request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub kind: ApiKind,
    /// Provider label: `openai`, `azure`, `anthropic`, `gemini`, `vertex`, `bedrock`.
    pub provider: &'static str,
    /// Model named by the path (Gemini, Vertex, Bedrock, Azure deployment), percent-decoded.
    pub path_model: Option<String>,
}

/// A cheap pre-check on the path alone: `false` means [`classify`] would say "not AI", so the
/// other headers need not be read.
pub fn may_be_ai(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    path.contains("/model/")
        || path.contains("/models/")
        || path.ends_with("completions")
        || path.ends_with("/embeddings")
        || path.ends_with("/responses")
        || path.ends_with("/responses/input_tokens")
        || path.ends_with("/responses/compact")
        || path.ends_with("/images/generations")
        || path.ends_with("/images/edits")
        || path.ends_with("messages")
        || path.ends_with("/count_tokens")
        || path.ends_with("/messages/batches")
        || path.ends_with("/models")
        || path.ends_with("/cachedContents")
        || path.ends_with("/conversations")
        || path.ends_with("/items")
        || path.ends_with("/audio/transcriptions")
        || path.ends_with("/audio/translations")
        || path.ends_with("/audio/speech")
        || path.ends_with("/decisions")
}

/// Classifies a request. `None` means it is not an LLM API call we understand.
pub fn classify(method: &str, path: &str, authority: &str) -> Option<Route> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    if method.eq_ignore_ascii_case("GET") {
        let listing = ["/v1/models", "/models", "/openai/v1/models"]
            .iter()
            .find_map(|prefix| path.strip_prefix(prefix))
            .filter(|rest| rest.is_empty() || rest.len() > 1 && rest.starts_with('/'))?;
        // `GET /v1/models/{id}`: one model (SDKs percent-encode the id, '/' included).
        let path_model = listing.get(1..).map(percent_decode);
        return Some(Route { kind: ApiKind::OpenAiModels, provider: "openai", path_model });
    }
    if !method.eq_ignore_ascii_case("POST") {
        return None;
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_ascii_lowercase();

    if let Some((_, rest)) = path.split_once("/model/") {
        let (model, action) = rest.rsplit_once('/')?;
        let kind = match action {
            "converse" => ApiKind::BedrockConverse { stream: false },
            "converse-stream" => ApiKind::BedrockConverse { stream: true },
            "count-tokens" => ApiKind::BedrockCountTokens,
            "invoke" => ApiKind::BedrockInvoke { stream: false },
            "invoke-with-response-stream" => ApiKind::BedrockInvoke { stream: true },
            _ => return None,
        };
        return Some(Route { kind, provider: "bedrock", path_model: Some(percent_decode(model)) });
    }
    if let Some(models_at) = path.rfind("/models/") {
        let tail = path.get(models_at + "/models/".len()..)?;
        let (model, action) = tail.rsplit_once(':')?;
        if path.get(..models_at).is_some_and(|head| head.ends_with("/publishers/anthropic")) {
            return claude_on_vertex(model, action);
        }
        // Vertex AI: `projects/{p}/locations/{l}/publishers/google/models/…`, or its express mode
        // (`/v1beta1/publishers/google/models/…`, an API key instead of a project).
        let vertex = path.contains("/projects/")
            || path.get(..models_at).is_some_and(|head| head.ends_with("/publishers/google"))
            || host.ends_with("aiplatform.googleapis.com");
        let kind = match action {
            "generateContent" => ApiKind::GeminiGenerate { stream: false },
            "streamGenerateContent" => ApiKind::GeminiGenerate { stream: true },
            "countTokens" => ApiKind::GeminiCountTokens,
            "embedContent" | "batchEmbedContents" => ApiKind::GeminiEmbed { usage: vertex },
            "batchGenerateContent" => ApiKind::GeminiBatch,
            "predict" if vertex && is_text_embedding_model(model) => ApiKind::VertexEmbedPredict,
            "predict" | "predictLongRunning" => ApiKind::GooglePredict,
            _ => return None,
        };
        return Some(Route {
            kind,
            provider: if vertex { "vertex" } else { "gemini" },
            path_model: Some(percent_decode(model)),
        });
    }

    if path.ends_with("/cachedContents") {
        let vertex = path.contains("/projects/") || host.ends_with("aiplatform.googleapis.com");
        let provider = if vertex { "vertex" } else { "gemini" };
        return Some(Route { kind: ApiKind::GeminiCache, provider, path_model: None });
    }
    let kind = if path.ends_with("/chat/completions") {
        ApiKind::OpenAiChat
    } else if path.ends_with("/completions") {
        ApiKind::OpenAiCompletions
    } else if path.ends_with("/embeddings") {
        ApiKind::OpenAiEmbeddings
    } else if path.ends_with("/responses") {
        ApiKind::OpenAiResponses
    } else if path.ends_with("/responses/input_tokens") {
        ApiKind::OpenAiInputTokens
    } else if path.ends_with("/responses/compact") {
        ApiKind::OpenAiCompact
    } else if path.ends_with("/images/generations") {
        ApiKind::OpenAiImages
    } else if path.ends_with("/images/edits") {
        ApiKind::OpenAiImageEdits
    } else if path.ends_with("/audio/transcriptions") || path.ends_with("/audio/translations") {
        ApiKind::OpenAiTranscription
    } else if path.ends_with("/audio/speech") {
        ApiKind::OpenAiSpeech
    } else if path.ends_with("/v1/decisions") {
        ApiKind::OpenAiDecisions
    } else if path.ends_with("/conversations") || is_conversation_items(path) {
        ApiKind::OpenAiConversation
    } else if path.ends_with("/v1/messages") || path == "/messages" {
        return Some(Route { kind: ApiKind::AnthropicMessages, provider: "anthropic", path_model: None });
    } else if path.ends_with("/v1/messages/count_tokens") {
        return Some(Route { kind: ApiKind::AnthropicCountTokens, provider: "anthropic", path_model: None });
    } else if path.ends_with("/v1/messages/batches") {
        return Some(Route { kind: ApiKind::AnthropicBatch, provider: "anthropic", path_model: None });
    } else {
        return None;
    };
    let deployment =
        path.split_once("/openai/deployments/").and_then(|(_, rest)| rest.split('/').next()).map(percent_decode);
    let azure = deployment.is_some() || host.ends_with(".openai.azure.com") || path.starts_with("/openai/v1/");
    Some(Route { kind, provider: if azure { "azure" } else { "openai" }, path_model: deployment })
}

/// `…/conversations/{id}/items`.
fn is_conversation_items(path: &str) -> bool {
    path.strip_suffix("/items")
        .and_then(|head| head.rsplit_once('/'))
        .is_some_and(|(head, id)| !id.is_empty() && head.ends_with("/conversations"))
}

/// A Vertex AI text embedding model (`text-embedding-005`, `textembedding-gecko@003`,
/// `text-multilingual-embedding-002`, `gemini-embedding-001`): its `:predict` answers report
/// tokens. Other models answer `:predict` with no token counts (Imagen's images, the multimodal
/// embeddings' vectors): [`ApiKind::GooglePredict`].
fn is_text_embedding_model(model: &str) -> bool {
    let model = model.to_ascii_lowercase();
    (model.contains("embedding-") || model.starts_with("textembedding")) && !model.starts_with("multimodal")
}

/// Claude on Vertex AI (the Anthropic SDK's Vertex client): `…/publishers/anthropic/models/
/// {model}:rawPredict` (`:streamRawPredict` when the body streams) takes a Messages body without
/// `model` and answers as Anthropic does; `…/models/count-tokens:rawPredict` is the token count.
fn claude_on_vertex(model: &str, action: &str) -> Option<Route> {
    let (kind, path_model) = match (model, action) {
        ("count-tokens", "rawPredict") => (ApiKind::AnthropicCountTokens, None),
        ("count-tokens", _) => return None,
        (_, "rawPredict" | "streamRawPredict") => (ApiKind::AnthropicMessages, Some(percent_decode(model))),
        _ => return None,
    };
    Some(Route { kind, provider: "vertex", path_model })
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|c| (*c as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(method: &str, path: &str) -> Option<ApiKind> {
        classify(method, path, "example.com").map(|r| r.kind)
    }

    #[test]
    fn openai_family_paths() {
        assert_eq!(kind("POST", "/v1/chat/completions"), Some(ApiKind::OpenAiChat));
        assert_eq!(kind("post", "/chat/completions?x=1"), Some(ApiKind::OpenAiChat));
        assert_eq!(kind("POST", "/v1/completions"), Some(ApiKind::OpenAiCompletions));
        assert_eq!(kind("POST", "/v1/embeddings"), Some(ApiKind::OpenAiEmbeddings));
        let images = classify("POST", "/v1/images/generations", "api.openai.com").unwrap();
        assert_eq!(
            (images.kind, images.provider, images.kind.operation()),
            (ApiKind::OpenAiImages, "openai", "image_generation")
        );
        assert!(images.kind.has_usage() && !images.kind.answers_with_text());
        assert_eq!(images.kind.usage_format(), UsageFormat::OpenAiResponses, "input_tokens, output_tokens");
        let azure =
            classify("POST", "/openai/deployments/img/images/generations?api-version=2025-04-01-preview", "x").unwrap();
        assert_eq!(
            (azure.kind, azure.provider, azure.path_model.as_deref()),
            (ApiKind::OpenAiImages, "azure", Some("img"))
        );
        assert!(may_be_ai("/v1/images/generations"));
        let edits = classify("POST", "/v1/images/edits", "api.openai.com").unwrap();
        assert_eq!((edits.kind, edits.kind.operation()), (ApiKind::OpenAiImageEdits, "image_edit"));
        assert!(edits.kind.has_usage() && edits.kind.reads_form() && !edits.kind.answers_with_text());
        assert_eq!(kind("POST", "/v1/images/variations"), None, "dall-e-2: no usage");
        let speech = classify("POST", "/v1/audio/speech", "api.openai.com").unwrap();
        assert_eq!(
            (speech.kind, speech.provider, speech.kind.operation()),
            (ApiKind::OpenAiSpeech, "openai", "speech")
        );
        assert!(speech.kind.has_usage() && !speech.kind.reads_form() && !speech.kind.answers_with_text());
        assert_eq!(speech.kind.usage_format(), UsageFormat::OpenAiResponses, "input_tokens, output_tokens");
        let azure =
            classify("POST", "/openai/deployments/tts/audio/speech?api-version=2025-04-01-preview", "x").unwrap();
        assert_eq!(
            (azure.kind, azure.provider, azure.path_model.as_deref()),
            (ApiKind::OpenAiSpeech, "azure", Some("tts"))
        );
        assert!(may_be_ai("/v1/audio/speech"));
        let decisions = classify("POST", "/v1/decisions", "api.openai.com").unwrap();
        assert_eq!((decisions.kind, decisions.kind.operation()), (ApiKind::OpenAiDecisions, "decision"));
        assert!(decisions.kind.has_usage() && !decisions.kind.answers_with_text() && may_be_ai("/v1/decisions"));
        assert_eq!(kind("POST", "/api/legal/decisions"), None, "a path that only ends like it");
        assert_eq!(kind("POST", "/v1/responses"), Some(ApiKind::OpenAiResponses));
        let count = classify("POST", "/v1/responses/input_tokens?beta=true", "api.openai.com").unwrap();
        assert_eq!((count.kind, count.provider), (ApiKind::OpenAiInputTokens, "openai"));
        assert!(!count.kind.has_usage() && count.kind.operation() == "count_tokens");
        assert_eq!(kind("POST", "/v1/responses/resp_1/input_items"), None);
        for path in
            ["/v1/audio/transcriptions", "/v1/audio/translations", "/openai/deployments/whisper/audio/transcriptions"]
        {
            let route = classify("POST", path, "api.openai.com").unwrap();
            assert_eq!((route.kind, route.kind.operation()), (ApiKind::OpenAiTranscription, "transcription"), "{path}");
            assert!(route.kind.has_usage() && route.kind.answers_with_text() && route.kind.reads_form());
            assert!(may_be_ai(path));
        }
        // A compaction: the whole conversation in, a compacted one and its usage out.
        let compact = classify("POST", "/v1/responses/compact", "api.openai.com").unwrap();
        assert_eq!(
            (compact.kind, compact.provider, compact.kind.operation()),
            (ApiKind::OpenAiCompact, "openai", "compact")
        );
        assert!(compact.kind.has_usage() && compact.kind.answers_with_text());
        assert_eq!(compact.kind.usage_format(), UsageFormat::OpenAiResponses);
        assert_eq!(classify("POST", "/v1/chat/completions", "api.openai.com").unwrap().provider, "openai");
    }

    #[test]
    fn azure_deployment_paths_name_the_deployment() {
        let route =
            classify("POST", "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21", "x").unwrap();
        assert_eq!(route.kind, ApiKind::OpenAiChat);
        assert_eq!(route.provider, "azure");
        assert_eq!(route.path_model.as_deref(), Some("my-gpt4o"));
        assert_eq!(classify("POST", "/v1/chat/completions", "res.openai.azure.com:443").unwrap().provider, "azure");
    }

    #[test]
    fn the_model_list_and_one_model_are_gets() {
        assert_eq!(kind("GET", "/v1/models"), Some(ApiKind::OpenAiModels));
        assert_eq!(classify("GET", "/v1/models", "x").unwrap().path_model, None);
        for (path, id) in [
            ("/v1/models/gpt-4o", "gpt-4o"),
            ("/models/gpt-4o?x=1", "gpt-4o"),
            ("/openai/v1/models/bedrock%2Fclaude%203", "bedrock/claude 3"),
            ("/v1/models/a/b", "a/b"),
        ] {
            let route = classify("GET", path, "x").unwrap();
            assert_eq!((route.kind, route.path_model.as_deref()), (ApiKind::OpenAiModels, Some(id)), "{path}");
        }
        for path in ["/v1/models/", "/v1/modelsx", "/v2/models", "/v1beta/models/gemini-2.5-flash"] {
            assert_eq!(kind("GET", path), None, "{path}");
        }
        assert_eq!(kind("POST", "/v1/models"), None);
        assert_eq!(kind("GET", "/v1/chat/completions"), None);
        assert!(may_be_ai("/v1/models"));
    }

    #[test]
    fn anthropic_messages() {
        let route = classify("POST", "/v1/messages", "api.anthropic.com").unwrap();
        assert_eq!((route.kind, route.provider), (ApiKind::AnthropicMessages, "anthropic"));
        let route = classify("POST", "/v1/messages/count_tokens?beta=true", "api.anthropic.com").unwrap();
        assert_eq!((route.kind, route.provider), (ApiKind::AnthropicCountTokens, "anthropic"));
        assert!(may_be_ai("/v1/messages/count_tokens"));
        assert_eq!(kind("GET", "/v1/messages/count_tokens"), None);
    }

    #[test]
    fn anthropic_message_batches_are_created_by_a_post() {
        // The SDK's beta namespace adds `?beta=true`.
        for path in ["/v1/messages/batches", "/v1/messages/batches?beta=true"] {
            let route = classify("POST", path, "api.anthropic.com").unwrap();
            assert_eq!(
                (route.kind, route.provider, route.kind.dialect()),
                (ApiKind::AnthropicBatch, "anthropic", Dialect::Anthropic)
            );
            assert!(may_be_ai(path), "{path}");
        }
        // Polling, listing, results, cancelling and deleting carry no prompt.
        assert_eq!(kind("GET", "/v1/messages/batches"), None);
        assert_eq!(kind("GET", "/v1/messages/batches/msgbatch_01/results"), None);
        assert_eq!(kind("POST", "/v1/messages/batches/msgbatch_01/cancel"), None);
        assert_eq!(kind("DELETE", "/v1/messages/batches/msgbatch_01"), None);
    }

    #[test]
    fn gemini_and_vertex_take_model_from_path() {
        let route = classify("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "g").unwrap();
        assert_eq!(route.kind, ApiKind::GeminiGenerate { stream: true });
        assert_eq!(route.provider, "gemini");
        assert_eq!(route.path_model.as_deref(), Some("gemini-2.5-flash"));
        let vertex = classify(
            "POST",
            "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent",
            "us-central1-aiplatform.googleapis.com",
        )
        .unwrap();
        assert_eq!((vertex.kind, vertex.provider), (ApiKind::GeminiGenerate { stream: false }, "vertex"));
        for (action, expected) in [
            ("countTokens", ApiKind::GeminiCountTokens),
            ("embedContent", ApiKind::GeminiEmbed { usage: false }),
            ("batchEmbedContents", ApiKind::GeminiEmbed { usage: false }),
        ] {
            let route = classify("POST", &format!("/v1beta/models/gemini-embedding-001:{action}"), "g").unwrap();
            assert_eq!((route.kind, route.provider), (expected, "gemini"), "{action}");
            assert!(!route.kind.has_usage() && !route.kind.answers_with_text(), "{action}");
        }
        // The Gemini API's predicts (Imagen, Veo) report no tokens, like every non-embedding one.
        for action in ["predict", "predictLongRunning"] {
            let route = classify("POST", &format!("/v1beta/models/veo-3.1-generate-preview:{action}"), "g").unwrap();
            assert_eq!(
                (route.kind, route.provider, route.kind.operation()),
                (ApiKind::GooglePredict, "gemini", "predict")
            );
        }
        let batch = classify("POST", "/v1beta/models/gemini-2.5-flash:batchGenerateContent", "g").unwrap();
        assert_eq!((batch.kind, batch.path_model.as_deref()), (ApiKind::GeminiBatch, Some("gemini-2.5-flash")));
        assert!(batch.kind.has_usage() && !batch.kind.answers_with_text());
        assert_eq!(kind("POST", "/v1beta/models/gemini-2.5-flash:asyncBatchEmbedContent"), None);
    }

    #[test]
    fn stored_contents_are_ai_traffic_but_not_metered() {
        for (path, host, provider) in [
            ("/v1beta/cachedContents", "generativelanguage.googleapis.com", "gemini"),
            ("/v1/projects/p/locations/us-central1/cachedContents", "gw", "vertex"),
            ("/v1beta1/cachedContents", "us-central1-aiplatform.googleapis.com", "vertex"),
        ] {
            let route = classify("POST", path, host).unwrap();
            assert_eq!((route.kind, route.provider, route.kind.operation()), (ApiKind::GeminiCache, provider, "cache"));
            assert!(!route.kind.has_usage() && may_be_ai(path), "{path}");
        }
        assert_eq!(kind("GET", "/v1beta/cachedContents"), None);
        assert_eq!(kind("POST", "/v1beta/cachedContents/abc:patch"), None);
        for path in ["/v1/conversations", "/v1/conversations/conv_68c9/items", "/openai/v1/conversations"] {
            let route = classify("POST", path, "api.openai.com").unwrap();
            assert_eq!((route.kind, route.kind.operation()), (ApiKind::OpenAiConversation, "conversation"), "{path}");
            assert!(!route.kind.has_usage() && may_be_ai(path), "{path}");
        }
        assert_eq!(kind("POST", "/v1/conversations/conv_68c9"), None, "metadata only");
        assert_eq!(kind("POST", "/v1/conversations//items"), None);
        assert_eq!(kind("POST", "/v1/vector_stores/vs_1/files/items"), None);
    }

    #[test]
    fn all_lists_every_kind_once() {
        // A new variant fails to compile here until it has a place, then fails the test until
        // `ApiKind::ALL` lists it.
        fn place(kind: ApiKind) -> usize {
            match kind {
                ApiKind::OpenAiChat => 0,
                ApiKind::OpenAiCompletions => 1,
                ApiKind::OpenAiEmbeddings => 2,
                ApiKind::OpenAiResponses => 3,
                ApiKind::OpenAiImages => 4,
                ApiKind::OpenAiInputTokens => 5,
                ApiKind::AnthropicMessages => 6,
                ApiKind::AnthropicCountTokens => 7,
                ApiKind::AnthropicBatch => 8,
                ApiKind::GeminiGenerate { stream } => 9 + usize::from(stream),
                ApiKind::GeminiCountTokens => 11,
                ApiKind::GeminiEmbed { usage } => 12 + usize::from(usage),
                ApiKind::VertexEmbedPredict => 14,
                ApiKind::GooglePredict => 15,
                ApiKind::GeminiBatch => 16,
                ApiKind::BedrockConverse { stream } => 17 + usize::from(stream),
                ApiKind::BedrockCountTokens => 19,
                ApiKind::BedrockInvoke { stream } => 20 + usize::from(stream),
                ApiKind::OpenAiModels => 22,
                ApiKind::OpenAiCompact => 23,
                ApiKind::GeminiCache => 24,
                ApiKind::OpenAiConversation => 25,
                ApiKind::OpenAiTranscription => 26,
                ApiKind::OpenAiImageEdits => 27,
                ApiKind::OpenAiSpeech => 28,
                ApiKind::OpenAiDecisions => 29,
            }
        }
        let places: Vec<usize> = ApiKind::ALL.iter().map(|k| place(*k)).collect();
        assert_eq!(places, (0..ApiKind::ALL.len()).collect::<Vec<_>>());
    }

    #[test]
    fn vertex_embeddings_report_usage_and_text_embedding_models_predict() {
        let regional = "/v1/projects/p/locations/us-central1/publishers/google/models";
        let express = "/v1beta1/publishers/google/models";
        for base in [regional, express] {
            for action in ["embedContent", "batchEmbedContents"] {
                let route = classify("POST", &format!("{base}/gemini-embedding-001:{action}"), "gw").unwrap();
                assert_eq!((route.kind, route.provider), (ApiKind::GeminiEmbed { usage: true }, "vertex"), "{action}");
                assert!(route.kind.has_usage() && !route.kind.answers_with_text());
            }
            for model in ["text-embedding-005", "text-multilingual-embedding-002", "textembedding-gecko@003"] {
                let route = classify("POST", &format!("{base}/{model}:predict"), "gw").unwrap();
                assert_eq!((route.kind, route.provider), (ApiKind::VertexEmbedPredict, "vertex"), "{model}");
                assert_eq!(route.path_model.as_deref(), Some(model));
                assert_eq!(
                    (route.kind.usage_format(), route.kind.operation()),
                    (UsageFormat::VertexPredict, "embeddings")
                );
                assert!(route.kind.has_usage() && !route.kind.answers_with_text());
            }
            // Images, videos and multimodal vectors report no tokens: their prompts are read (to
            // be guarded), nothing is metered.
            for (model, action) in [
                ("imagen-4.0-generate-001", "predict"),
                ("multimodalembedding@001", "predict"),
                ("veo-3.1-generate-001", "predictLongRunning"),
            ] {
                let route = classify("POST", &format!("{base}/{model}:{action}"), "gw").unwrap();
                assert_eq!(
                    (route.kind, route.provider, route.path_model.as_deref()),
                    (ApiKind::GooglePredict, "vertex", Some(model))
                );
                assert!(!route.kind.has_usage() && !route.kind.answers_with_text(), "{model}");
            }
            assert_eq!(kind("POST", &format!("{base}/veo-3.1-generate-001:fetchPredictOperation")), None);
        }
        assert_eq!(kind("POST", "/v1/projects/p/locations/l/endpoints/123:predict"), None, "a deployed endpoint");
    }

    #[test]
    fn claude_on_vertex_is_anthropic_messages_with_the_model_in_the_path() {
        let base = "/v1/projects/p-1/locations/us-east5/publishers/anthropic/models";
        for action in ["rawPredict", "streamRawPredict"] {
            let route = classify("POST", &format!("{base}/claude-sonnet-4@20250514:{action}"), "x").unwrap();
            assert_eq!(route.kind, ApiKind::AnthropicMessages, "{action}");
            assert_eq!((route.provider, route.path_model.as_deref()), ("vertex", Some("claude-sonnet-4@20250514")));
            assert_eq!(route.kind.dialect(), Dialect::Anthropic);
        }
        let count = classify("POST", &format!("{base}/count-tokens:rawPredict"), "x").unwrap();
        assert_eq!((count.kind, count.provider, count.path_model), (ApiKind::AnthropicCountTokens, "vertex", None));
        assert_eq!(kind("POST", &format!("{base}/claude-sonnet-4@20250514:predict")), None);
        assert_eq!(kind("POST", &format!("{base}/count-tokens:streamRawPredict")), None);
        // Other publishers' raw endpoints speak their own formats: not read.
        assert_eq!(
            kind("POST", "/v1/projects/p/locations/l/publishers/mistralai/models/mistral-large:rawPredict"),
            None
        );
        // Gemini on Vertex is unchanged.
        let gemini =
            classify("POST", "/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-pro:generateContent", "x");
        assert_eq!(gemini.map(|r| (r.kind, r.provider)), Some((ApiKind::GeminiGenerate { stream: false }, "vertex")));
    }

    #[test]
    fn bedrock_model_ids_are_percent_decoded() {
        let route =
            classify("POST", "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream", "b").unwrap();
        assert_eq!(route.kind, ApiKind::BedrockConverse { stream: true });
        assert_eq!(route.path_model.as_deref(), Some("anthropic.claude-3-5-sonnet-20240620-v1:0"));
        assert_eq!(kind("POST", "/model/x/invoke"), Some(ApiKind::BedrockInvoke { stream: false }));
        assert_eq!(kind("POST", "/model/x/invoke-with-response-stream"), Some(ApiKind::BedrockInvoke { stream: true }));
        assert_eq!(kind("POST", "/model/x/async-invoke"), None);
        let route = classify("POST", "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/count-tokens", "b").unwrap();
        assert_eq!(
            (route.kind, route.path_model.as_deref()),
            (ApiKind::BedrockCountTokens, Some("anthropic.claude-3-5-haiku-20241022-v1:0"))
        );
    }

    #[test]
    fn the_path_pre_check_never_rejects_what_classify_accepts() {
        for path in [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/responses",
            "/v1/responses/compact",
            "/v1/responses/input_tokens",
            "/v1/images/generations",
            "/v1/messages",
            "/messages",
            "/openai/deployments/x/chat/completions?api-version=1",
            "/v1beta/models/g:generateContent",
            "/model/m/converse",
        ] {
            assert!(classify("POST", path, "h").is_some(), "{path}");
            assert!(may_be_ai(path), "{path}");
        }
        assert!(!may_be_ai("/upload") && !may_be_ai("/healthz"));
    }

    #[test]
    fn other_traffic_is_not_ai() {
        assert_eq!(kind("GET", "/v1/chat/completions"), None);
        assert_eq!(kind("POST", "/v1/models"), None);
        assert_eq!(kind("POST", "/upload"), None);
        assert_eq!(kind("POST", "/"), None);
        assert!(kind("POST", "/model/%ZZ/converse").is_some(), "undecodable escapes are kept as they are");
    }
}
