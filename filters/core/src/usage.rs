//! One normalised usage model for every provider, and the tracker that reads it off responses.
//!
//! [`Usage`] semantics, whatever the provider:
//! - `input`: every prompt token the provider processed, cached and cache-writing ones included
//!   (Anthropic and Bedrock report those separately; OpenAI and Gemini already include them);
//!   Gemini's tool-use prompt tokens count as input.
//! - `output`: every generated token, reasoning included (Gemini reports thoughts separately).
//! - `cached_input` ⊆ input (cache reads), `cache_creation` ⊆ input (cache writes),
//!   `reasoning` ⊆ output.
//! - `total = input + output`.
//!
//! Streams: providers repeat or split usage over several events. The tracker keeps the
//! provider's own counters in [`Reported`] and lets a newer report *overwrite* the fields it
//! carries, never add to them: Anthropic's `message_start` (input side) then cumulative
//! `message_delta` (output side), Gemini's repeated cumulative `usageMetadata`, OpenAI's single
//! final usage chunk and Bedrock's `metadata` event are all read right by that one rule, and
//! nothing is counted twice. Normalisation happens once, at the end.
//!
//! Bedrock's InvokeModel answers in the model family's own format; Bedrock reports its counts
//! beside it, in `x-amzn-bedrock-*-token-count` headers ([`Reported::from_invoke_headers`]) or in
//! the `amazon-bedrock-invocationMetrics` of a stream's last chunk, base64 inside an event-stream
//! `chunk` event ([`UsageTracker::observe_invoke_chunk`]). A Claude answer's own `usage` is read
//! too (the same numbers, known earlier in a stream: a reset one still has its input count).

use crate::api;
use crate::json_scan::{Captured, JsonScanner};
use serde::Serialize;

/// Normalised token usage of one request (see the module docs for the exact semantics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_creation: u64,
    /// The part of `cache_creation` written with the provider's longer retention (Anthropic's
    /// `ttl: "1h"`, also on Bedrock, OpenAI's 12 hours), priced above the shorter one's writes.
    pub cache_creation_long: u64,
    pub reasoning: u64,
    pub total: u64,
}

/// The response body formats whose usage we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageFormat {
    /// Chat Completions, legacy Completions (also Azure OpenAI and OpenAI-compatible servers).
    OpenAiChat,
    OpenAiEmbeddings,
    OpenAiResponses,
    Anthropic,
    Gemini,
    Bedrock,
    /// Bedrock InvokeModel: [`api::bedrock::InvocationMetrics`], and a Claude answer's `usage`.
    BedrockInvoke,
    /// Vertex AI's `:predict` for text embeddings: each prediction's
    /// `embeddings.statistics.token_count`, added up.
    VertexPredict,
}

/// What a captured value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Usage,
    Model,
    /// Bedrock's `amazon-bedrock-invocationMetrics`.
    Metrics,
    /// One embedding's `statistics` (Vertex AI `:predict`): its tokens add to the input.
    EmbeddingStatistics,
}

/// Paths (see [`crate::json_scan`]) holding usage and the response model, valid both for a
/// whole JSON response and for each event of the format's stream.
struct Targets {
    paths: &'static [&'static [&'static str]],
    fields: &'static [Field],
}

const OPENAI: Targets = Targets { paths: &[&["usage"], &["model"]], fields: &[Field::Usage, Field::Model] };
const RESPONSES: Targets = Targets {
    paths: &[&["usage"], &["model"], &["response", "usage"], &["response", "model"]],
    fields: &[Field::Usage, Field::Model, Field::Usage, Field::Model],
};
const ANTHROPIC: Targets = Targets {
    paths: &[&["usage"], &["model"], &["message", "usage"], &["message", "model"]],
    fields: &[Field::Usage, Field::Model, Field::Usage, Field::Model],
};
const GEMINI: Targets =
    Targets { paths: &[&["usageMetadata"], &["modelVersion"]], fields: &[Field::Usage, Field::Model] };
const BEDROCK: Targets = Targets { paths: &[&["usage"]], fields: &[Field::Usage] };
const BEDROCK_INVOKE: Targets = Targets {
    paths: &[&[INVOCATION_METRICS], &["usage"], &["message", "usage"]],
    fields: &[Field::Metrics, Field::Usage, Field::Usage],
};

const VERTEX_PREDICT: Targets =
    Targets { paths: &[&["predictions", "embeddings", "statistics"]], fields: &[Field::EmbeddingStatistics] };

/// The member of an InvokeModel stream's last chunk holding Bedrock's counts (and quoted).
const INVOCATION_METRICS: &str = "amazon-bedrock-invocationMetrics";
const INVOCATION_METRICS_KEY: &[u8] = b"\"amazon-bedrock-invocationMetrics\"";

impl UsageFormat {
    fn targets(self) -> &'static Targets {
        match self {
            UsageFormat::OpenAiChat | UsageFormat::OpenAiEmbeddings => &OPENAI,
            UsageFormat::OpenAiResponses => &RESPONSES,
            UsageFormat::Anthropic => &ANTHROPIC,
            UsageFormat::Gemini => &GEMINI,
            UsageFormat::Bedrock => &BEDROCK,
            UsageFormat::BedrockInvoke => &BEDROCK_INVOKE,
            UsageFormat::VertexPredict => &VERTEX_PREDICT,
        }
    }

    /// The key that must appear in a JSON document for it to carry usage (a cheap pre-check
    /// that lets stream events without usage skip the scanner).
    pub fn usage_key(self) -> &'static [u8] {
        match self {
            UsageFormat::Gemini => b"\"usageMetadata\"",
            UsageFormat::VertexPredict => b"\"statistics\"",
            UsageFormat::OpenAiChat
            | UsageFormat::OpenAiEmbeddings
            | UsageFormat::OpenAiResponses
            | UsageFormat::Anthropic
            | UsageFormat::Bedrock
            | UsageFormat::BedrockInvoke => b"\"usage\"",
        }
    }

    /// A scanner looking for this format's usage and model.
    pub fn scanner(self) -> JsonScanner {
        JsonScanner::new(self.targets().paths)
    }
}

/// Counters as the provider reported them (its own semantics), `None` = not seen yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// The provider's main input counter (excludes cache tokens for Anthropic and Bedrock).
    pub input: Option<u64>,
    /// The provider's main output counter (excludes thoughts for Gemini).
    pub output: Option<u64>,
    pub cache_read: Option<u64>,
    pub cache_write: Option<u64>,
    /// Anthropic's `cache_creation.ephemeral_1h_input_tokens`, OpenAI's
    /// `cache_write_tokens_details.ttl_12h_tokens`.
    pub cache_write_long: Option<u64>,
    pub reasoning: Option<u64>,
    /// Gemini `toolUsePromptTokenCount`.
    pub tool_prompt: Option<u64>,
}

impl Reported {
    /// Overwrites the fields `newer` carries.
    pub fn merge(&mut self, newer: Reported) {
        let Reported { input, output, cache_read, cache_write, cache_write_long, reasoning, tool_prompt } = newer;
        for (slot, value) in [
            (&mut self.input, input),
            (&mut self.output, output),
            (&mut self.cache_read, cache_read),
            (&mut self.cache_write, cache_write),
            (&mut self.cache_write_long, cache_write_long),
            (&mut self.reasoning, reasoning),
            (&mut self.tool_prompt, tool_prompt),
        ] {
            if value.is_some() {
                *slot = value;
            }
        }
    }

    fn is_empty(&self) -> bool {
        *self == Reported::default()
    }

    /// Reads one usage section of `format`. `Ok(None)` for an explicit `null` (OpenAI's
    /// non-final stream chunks).
    pub fn parse(format: UsageFormat, json: &[u8]) -> Result<Option<Reported>, serde_json::Error> {
        Ok(match format {
            UsageFormat::OpenAiChat | UsageFormat::OpenAiEmbeddings | UsageFormat::OpenAiResponses => {
                serde_json::from_slice::<Option<api::openai::Usage>>(json)?.map(|u| Reported {
                    input: u.prompt_tokens,
                    output: match format {
                        // Embeddings generate nothing; report 0, not "unknown".
                        UsageFormat::OpenAiEmbeddings => Some(u.completion_tokens.unwrap_or(0)),
                        _ => u.completion_tokens,
                    },
                    cache_read: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
                    cache_write: u.prompt_tokens_details.and_then(|d| d.cache_write_tokens),
                    cache_write_long: u
                        .prompt_tokens_details
                        .and_then(|d| d.cache_write_tokens_details)
                        .and_then(|d| d.ttl_12h_tokens),
                    reasoning: u.completion_tokens_details.and_then(|d| d.reasoning_tokens),
                    tool_prompt: None,
                })
            }
            UsageFormat::Anthropic => {
                serde_json::from_slice::<Option<api::anthropic::Usage>>(json)?.map(Reported::from)
            }
            UsageFormat::Gemini => {
                serde_json::from_slice::<Option<api::gemini::UsageMetadata>>(json)?.map(|u| Reported {
                    input: u.prompt_token_count,
                    output: u.candidates_token_count,
                    cache_read: u.cached_content_token_count,
                    cache_write: None,
                    cache_write_long: None,
                    reasoning: u.thoughts_token_count,
                    tool_prompt: u.tool_use_prompt_token_count,
                })
            }
            UsageFormat::Bedrock => {
                serde_json::from_slice::<Option<api::bedrock::TokenUsage>>(json)?.map(|u| Reported {
                    input: u.input_tokens,
                    output: u.output_tokens,
                    cache_read: u.cache_read_input_tokens,
                    cache_write: u.cache_write_input_tokens,
                    cache_write_long: u.cache_write_long_input_tokens,
                    reasoning: None,
                    tool_prompt: None,
                })
            }
            // The family's own `usage`: read when it is Claude's; any other shape is not ours to
            // judge (Bedrock's own counts follow).
            UsageFormat::BedrockInvoke => {
                serde_json::from_slice::<Option<api::anthropic::Usage>>(json).ok().flatten().map(Reported::from)
            }
            // Read per embedding (`Field::EmbeddingStatistics`), never as one usage section.
            UsageFormat::VertexPredict => None,
        }
        .filter(|r| !r.is_empty()))
    }

    /// Reads Bedrock's `amazon-bedrock-invocationMetrics`.
    fn parse_invocation_metrics(json: &[u8]) -> Result<Option<Reported>, serde_json::Error> {
        Ok(serde_json::from_slice::<Option<api::bedrock::InvocationMetrics>>(json)?
            .map(Reported::from)
            .filter(|r| !r.is_empty()))
    }

    /// Reads an InvokeModel answer's `x-amzn-bedrock-*-token-count` headers through `header`.
    /// `Err` names a header that is not a count.
    pub fn from_invoke_headers(header: impl Fn(&str) -> Option<String>) -> Result<Reported, &'static str> {
        let mut counts = [None; 4];
        for (count, name) in counts.iter_mut().zip(api::bedrock::INVOKE_COUNT_HEADERS) {
            if let Some(value) = header(name) {
                *count = Some(value.trim().parse::<u64>().map_err(|_| name)?);
            }
        }
        let [input_token_count, output_token_count, cache_read_input_token_count, cache_write_input_token_count] =
            counts;
        Ok(Reported::from(api::bedrock::InvocationMetrics {
            input_token_count,
            output_token_count,
            cache_read_input_token_count,
            cache_write_input_token_count,
        }))
    }

    /// Applies the format's semantics once (see the module docs).
    pub fn normalise(&self, format: UsageFormat) -> Usage {
        let base_input = self.input.unwrap_or(0);
        let cached_input = self.cache_read.unwrap_or(0);
        let cache_creation = self.cache_write.unwrap_or(0);
        let cache_creation_long = self.cache_write_long.unwrap_or(0).min(cache_creation);
        let reasoning = self.reasoning.unwrap_or(0);
        let (input, output) = match format {
            UsageFormat::OpenAiChat
            | UsageFormat::OpenAiEmbeddings
            | UsageFormat::OpenAiResponses
            | UsageFormat::VertexPredict => (base_input, self.output.unwrap_or(0)),
            UsageFormat::Gemini => (base_input + self.tool_prompt.unwrap_or(0), self.output.unwrap_or(0) + reasoning),
            UsageFormat::Anthropic | UsageFormat::Bedrock | UsageFormat::BedrockInvoke => {
                (base_input + cached_input + cache_creation, self.output.unwrap_or(0))
            }
        };
        Usage { input, output, cached_input, cache_creation, cache_creation_long, reasoning, total: input + output }
    }
}

impl From<api::anthropic::Usage> for Reported {
    fn from(u: api::anthropic::Usage) -> Reported {
        Reported {
            input: u.input_tokens,
            output: u.output_tokens,
            cache_read: u.cache_read_input_tokens,
            cache_write: u.cache_creation_input_tokens,
            cache_write_long: u.cache_creation.and_then(|c| c.ephemeral_1h_input_tokens),
            reasoning: u.output_tokens_details.and_then(|d| d.thinking_tokens),
            tool_prompt: None,
        }
    }
}

impl From<api::bedrock::InvocationMetrics> for Reported {
    fn from(m: api::bedrock::InvocationMetrics) -> Reported {
        Reported {
            input: m.input_token_count,
            output: m.output_token_count,
            cache_read: m.cache_read_input_token_count,
            cache_write: m.cache_write_input_token_count,
            cache_write_long: None,
            reasoning: None,
            tool_prompt: None,
        }
    }
}

/// Why a captured value could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// The usage section is not the shape the format documents.
    BadUsage(String),
}

/// Accumulates usage and response model over one response.
#[derive(Debug, Clone)]
pub struct UsageTracker {
    format: UsageFormat,
    reported: Reported,
    response_model: Option<String>,
}

/// Longest response model name kept (labels and filter state stay small).
const MAX_MODEL_LEN: usize = 128;

impl UsageTracker {
    pub fn new(format: UsageFormat) -> Self {
        UsageTracker { format, reported: Reported::default(), response_model: None }
    }

    pub fn format(&self) -> UsageFormat {
        self.format
    }

    /// Feeds a value captured by this format's scanner.
    pub fn observe(&mut self, captured: &Captured) -> Result<(), UsageError> {
        match self.format.targets().fields.get(captured.target) {
            Some(Field::Usage) => {
                let reported =
                    Reported::parse(self.format, &captured.bytes).map_err(|e| UsageError::BadUsage(e.to_string()))?;
                if let Some(reported) = reported {
                    self.reported.merge(reported);
                }
            }
            Some(Field::Metrics) => {
                let reported = Reported::parse_invocation_metrics(&captured.bytes)
                    .map_err(|e| UsageError::BadUsage(e.to_string()))?;
                if let Some(reported) = reported {
                    self.reported.merge(reported);
                }
            }
            Some(Field::EmbeddingStatistics) => {
                let statistics: api::gemini::EmbeddingStatistics =
                    serde_json::from_slice(&captured.bytes).map_err(|e| UsageError::BadUsage(e.to_string()))?;
                if let Some(tokens) = statistics.token_count {
                    // One per embedding: they add up (embeddings generate nothing).
                    self.reported.input = Some(self.reported.input.unwrap_or(0).saturating_add(tokens));
                    self.reported.output = Some(0);
                }
            }
            Some(Field::Model) => {
                if let Ok(model) = serde_json::from_slice::<String>(&captured.bytes) {
                    if !model.is_empty() && model.len() <= MAX_MODEL_LEN {
                        self.response_model = Some(model);
                    }
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Scans one complete JSON document (an SSE event's data, an event-stream payload).
    pub fn observe_document(&mut self, json: &[u8]) -> Result<(), UsageTrackerError> {
        let captured = crate::json_scan::scan_document(self.format.targets().paths, json)
            .map_err(|e| UsageTrackerError::Json(e.to_string()))?;
        for value in &captured {
            self.observe(value).map_err(|UsageError::BadUsage(e)| UsageTrackerError::Usage(e))?;
        }
        Ok(())
    }

    /// Takes counts read elsewhere than the body (InvokeModel's headers).
    pub fn observe_reported(&mut self, reported: Reported) {
        self.reported.merge(reported);
    }

    /// Reads one `chunk` event's payload of an InvokeModel stream (`{"bytes": "<base64>"}`): the
    /// model's own stream event, scanned only when it names `usage` or Bedrock's metrics.
    pub fn observe_invoke_chunk(&mut self, payload: &[u8]) -> Result<(), UsageTrackerError> {
        use base64::Engine as _;
        let part: api::bedrock::PayloadPart<'_> =
            serde_json::from_slice(payload).map_err(|e| UsageTrackerError::Json(e.to_string()))?;
        let event = base64::engine::general_purpose::STANDARD
            .decode(part.bytes.as_bytes())
            .map_err(|e| UsageTrackerError::Json(format!("chunk bytes: {e}")))?;
        if key_positions(&event, b"\"usage\"").next().is_some()
            || key_positions(&event, INVOCATION_METRICS_KEY).next().is_some()
        {
            self.observe_document(&event)?;
        }
        Ok(())
    }

    /// Whether a complete document names this format's usage key at all (`null` included).
    pub fn names_usage(&self, json: &[u8]) -> bool {
        self.response_model.is_none() || key_positions(json, self.format.usage_key()).next().is_some()
    }

    /// Whether a complete document (stream event) is worth scanning: it has a usage member
    /// that is not `null`, or the response model is still unknown. (OpenAI streams asked for
    /// usage carry `"usage":null` in every chunk but the last; a quoted key followed by `:` can
    /// only be a member, so the bytes alone tell.)
    pub fn worth_scanning(&self, json: &[u8]) -> bool {
        if self.response_model.is_none() {
            return true;
        }
        let key = self.format.usage_key();
        if ends_with_null_usage(json, key) {
            return false;
        }
        key_positions(json, key).any(|at| !member_is_null(json.get(at + key.len()..).unwrap_or(&[])))
    }

    /// Whether a complete document's last root member is its usage key set to `null`, compactly
    /// (`,"usage":null}`: every OpenAI chunk but the last), told from its last bytes. The closing
    /// brace of a document that begins with `{` closes the root object, so that member is the
    /// root's — the one the scan reads. (A duplicate usage key earlier in the same object is not
    /// looked for; which of two equal keys counts is undefined in JSON.)
    pub fn ends_with_null_usage(&self, json: &[u8]) -> bool {
        ends_with_null_usage(json, self.format.usage_key())
    }

    /// Whether any usage was reported.
    pub fn has_usage(&self) -> bool {
        !self.reported.is_empty()
    }

    pub fn reported(&self) -> Reported {
        self.reported
    }

    /// The normalised usage, if the provider reported any.
    pub fn usage(&self) -> Option<Usage> {
        self.has_usage().then(|| self.reported.normalise(self.format))
    }

    pub fn response_model(&self) -> Option<&str> {
        self.response_model.as_deref()
    }
}

/// Where `quoted` (a key with its quotes) occurs in `json`. Per stream event, so cheap: quotes
/// are found with `memchr` and compared in place (a `memmem` finder costs more to build for each
/// event than the search itself, and its fallback prefilter is slow in wasm without SIMD).
fn key_positions<'a>(json: &'a [u8], quoted: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    memchr::memchr_iter(b'"', json).filter(move |&at| json.get(at..).is_some_and(|rest| rest.starts_with(quoted)))
}

fn ends_with_null_usage(json: &[u8], quoted: &[u8]) -> bool {
    let json = json.trim_ascii();
    json.first() == Some(&b'{')
        && json
            .strip_suffix(b":null}")
            .and_then(|head| head.strip_suffix(quoted))
            .is_some_and(|head| head.ends_with(b",") || head == b"{")
}

/// Whether `rest` (the bytes after a quoted key) is `: null` followed by the end of the member.
fn member_is_null(rest: &[u8]) -> bool {
    let rest = rest.trim_ascii_start();
    let Some(rest) = rest.strip_prefix(b":") else { return false };
    let Some(rest) = rest.trim_ascii_start().strip_prefix(b"null") else { return false };
    matches!(rest.first(), Some(b' ' | b'\t' | b'\r' | b'\n' | b',' | b'}' | b']'))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageTrackerError {
    /// The document is not JSON.
    Json(String),
    /// The usage section has the wrong shape.
    Usage(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_positions_finds_every_quoted_occurrence() {
        let json = br#"{"usage":1,"a":"usage","usage_x":2,"b":"\"usage\""}"#;
        let found: Vec<usize> = key_positions(json, b"\"usage\"").collect();
        assert_eq!(found, vec![1, 15]);
        assert_eq!(key_positions(b"\"usage\"", b"\"usage\"").collect::<Vec<_>>(), vec![0]);
        assert_eq!(key_positions(b"\"usag", b"\"usage\"").count(), 0);
    }

    #[test]
    fn events_whose_only_usage_is_null_are_not_worth_scanning() {
        let mut tracker = UsageTracker::new(UsageFormat::OpenAiChat);
        let chunk = br#"{"id":"c","model":"gpt-4o","choices":[{"delta":{"content":"hi"}}],"usage":null}"#;
        assert!(tracker.worth_scanning(chunk), "the first event names the model");
        tracker.observe_document(chunk).unwrap();
        assert!(!tracker.worth_scanning(chunk));
        assert!(!tracker.worth_scanning(br#"{"usage" : null ,"x":1}"#));
        assert!(!tracker.worth_scanning(br#"{"choices":[]}"#));
        for worth in [
            &br#"{"choices":[],"usage":{"prompt_tokens":1}}"#[..],
            br#"{"usage":null,"x":{"usage":{"total_tokens":2}}}"#,
            br#"{"usage":nullx}"#,
            br#"{"usage":"null"}"#,
            br#"{"usage""#,
        ] {
            assert!(tracker.worth_scanning(worth), "{}", String::from_utf8_lossy(worth));
        }
        // A last root member `"usage":null` is told from the last bytes: a usage object nested
        // deeper is not the root's (the scan would not read it either).
        let nested = br#"{"x":{"usage":{"total_tokens":2}},"usage":null}"#;
        assert!(tracker.ends_with_null_usage(nested) && !tracker.worth_scanning(nested));
        let mut scanned = tracker.clone();
        scanned.observe_document(nested).unwrap();
        assert!(!scanned.has_usage(), "the scan agrees");
        for not_last in [
            &br#"{"usage":null,"x":1}"#[..],
            br#"["usage":null}"#,
            br#"{"x":"a,\"usage\":null}"#,
            br#"{"xusage":null}"#,
        ] {
            assert!(!tracker.ends_with_null_usage(not_last), "{}", String::from_utf8_lossy(not_last));
        }
        assert!(tracker.ends_with_null_usage(b" {\"usage\":null}\n"));
        // Text that merely mentions usage is inside a string, where quotes are escaped.
        assert!(!tracker.worth_scanning(br#"{"choices":[{"delta":{"content":"the \"usage\":1 field"}}]}"#));
    }

    fn track(format: UsageFormat, docs: &[&str]) -> (Option<Usage>, Option<String>) {
        let mut tracker = UsageTracker::new(format);
        for doc in docs {
            tracker.observe_document(doc.as_bytes()).unwrap();
        }
        (tracker.usage(), tracker.response_model().map(str::to_string))
    }

    /// OpenAI's prompt caching (explicit breakpoints): the tokens written to the cache, part of
    /// the input like the cached ones, and in Responses the writes by retention.
    #[test]
    fn openai_cache_writes_are_part_of_the_input() {
        let chat = r#"{"model":"gpt-5.6","usage":{"prompt_tokens":3000,"completion_tokens":20,"total_tokens":3020,
            "prompt_tokens_details":{"cached_tokens":1000,"cache_write_tokens":1500}}}"#;
        let usage = track(UsageFormat::OpenAiChat, &[chat]).0.unwrap();
        let parts = (usage.input, usage.cached_input, usage.cache_creation, usage.cache_creation_long, usage.total);
        assert_eq!(parts, (3000, 1000, 1500, 0, 3020));
        let responses = r#"{"type":"response.completed","response":{"model":"gpt-5.6","usage":{"input_tokens":6212,
            "input_tokens_details":{"cached_tokens":0,"cache_write_tokens":6144,
            "cache_write_tokens_details":{"ttl_30m_tokens":2048,"ttl_12h_tokens":4096}},
            "output_tokens":120,"output_tokens_details":{"reasoning_tokens":64},"total_tokens":6332}}}"#;
        let usage = track(UsageFormat::OpenAiResponses, &[responses]).0.unwrap();
        assert_eq!((usage.input, usage.cache_creation, usage.cache_creation_long), (6212, 6144, 4096));
        // Translated for an Anthropic client: reads and writes out of `input_tokens`.
        let openai: api::openai::Usage = serde_json::from_str(
            r#"{"prompt_tokens":3000,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":1000,"cache_write_tokens":1500}}"#,
        )
        .unwrap();
        let anthropic = crate::convert::openai::usage(&openai);
        assert_eq!(
            anthropic,
            serde_json::json!({"input_tokens": 500, "cache_creation_input_tokens": 1500,
                               "cache_read_input_tokens": 1000, "output_tokens": 20})
        );
    }

    #[test]
    fn openai_chat_with_cached_and_reasoning_tokens() {
        let (usage, model) = track(
            UsageFormat::OpenAiChat,
            &[r#"{"model":"o3-2025","usage":{"prompt_tokens":1200,"completion_tokens":800,"total_tokens":2000,
                "prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},
                "completion_tokens_details":{"reasoning_tokens":512}}}"#],
        );
        assert_eq!(
            usage,
            Some(Usage {
                input: 1200,
                output: 800,
                cached_input: 1024,
                cache_creation: 0,
                cache_creation_long: 0,
                reasoning: 512,
                total: 2000
            })
        );
        assert_eq!(model.as_deref(), Some("o3-2025"));
    }

    #[test]
    fn vertex_predict_adds_up_the_tokens_of_every_embedding() {
        let answer = r#"{"predictions":[
            {"embeddings":{"statistics":{"truncated":false,"token_count":6},"values":[0.1,-0.2]}},
            {"embeddings":{"values":[0.3],"statistics":{"token_count":11.0,"truncated":true}}}],
            "metadata":{"billableCharacterCount":52}}"#;
        let (usage, _) = track(UsageFormat::VertexPredict, &[answer]);
        assert_eq!(usage.map(|u| (u.input, u.output, u.total)), Some((17, 0, 17)));
        let none = r#"{"predictions":[{"embeddings":{"values":[0.1]}}]}"#;
        assert_eq!(track(UsageFormat::VertexPredict, &[none]).0, None, "no statistics: no usage");
        for bad in [r#"{"token_count":-1}"#, r#"{"token_count":1.5}"#, r#"{"token_count":"6"}"#] {
            let doc = format!(r#"{{"predictions":[{{"embeddings":{{"statistics":{bad}}}}}]}}"#);
            let mut tracker = UsageTracker::new(UsageFormat::VertexPredict);
            assert!(matches!(tracker.observe_document(doc.as_bytes()), Err(UsageTrackerError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn openai_stream_ignores_null_usage_until_the_final_chunk() {
        let (usage, _) = track(
            UsageFormat::OpenAiChat,
            &[
                r#"{"model":"gpt-4o","choices":[{"delta":{"content":"Hi"}}],"usage":null}"#,
                r#"{"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#,
            ],
        );
        assert_eq!(usage.map(|u| (u.input, u.output, u.total)), Some((9, 3, 12)));
        assert_eq!(track(UsageFormat::OpenAiChat, &[r#"{"usage":null}"#]).0, None);
    }

    #[test]
    fn responses_api_usage_in_the_completed_event() {
        let (usage, model) = track(
            UsageFormat::OpenAiResponses,
            &[r#"{"type":"response.completed","response":{"model":"gpt-4.1","usage":{"input_tokens":36,
                "input_tokens_details":{"cached_tokens":0},"output_tokens":87,
                "output_tokens_details":{"reasoning_tokens":10},"total_tokens":123}}}"#],
        );
        assert_eq!(usage.map(|u| (u.input, u.output, u.reasoning, u.total)), Some((36, 87, 10, 123)));
        assert_eq!(model.as_deref(), Some("gpt-4.1"));
    }

    #[test]
    fn transcriptions_report_tokens_or_seconds() {
        // The models billed in tokens: Responses' names, with `input_token_details` (audio, text).
        let tokens = r#"{"text":"Hi","usage":{"type":"tokens","input_tokens":57,"input_token_details":
            {"text_tokens":6,"audio_tokens":51},"output_tokens":14,"total_tokens":71}}"#;
        let (usage, _) = track(UsageFormat::OpenAiResponses, &[tokens]);
        assert_eq!(usage.map(|u| (u.input, u.output, u.cached_input, u.total)), Some((57, 14, 0, 71)));
        // whisper-1 is billed by the minute: seconds are no tokens.
        let seconds = r#"{"text":"Hi","usage":{"type":"duration","seconds":9}}"#;
        let mut tracker = UsageTracker::new(UsageFormat::OpenAiResponses);
        let observed = tracker.observe_document(seconds.as_bytes());
        assert!(observed.is_ok() && tracker.usage().is_none(), "{observed:?}: no usage, and no error");
    }

    #[test]
    fn embeddings_have_zero_output() {
        let (usage, _) = track(UsageFormat::OpenAiEmbeddings, &[r#"{"usage":{"prompt_tokens":8,"total_tokens":8}}"#]);
        assert_eq!(usage.map(|u| (u.input, u.output, u.total)), Some((8, 0, 8)));
    }

    #[test]
    fn anthropic_stream_takes_cumulative_delta_and_adds_cache_to_input() {
        let (usage, model) = track(
            UsageFormat::Anthropic,
            &[
                r#"{"type":"message_start","message":{"model":"claude-sonnet-4","usage":{"input_tokens":25,
                    "cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":1}}}"#,
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#,
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":40}}"#,
            ],
        );
        assert_eq!(
            usage,
            Some(Usage {
                input: 2125,
                output: 40,
                cached_input: 2000,
                cache_creation: 100,
                cache_creation_long: 0,
                reasoning: 0,
                total: 2165
            })
        );
        assert_eq!(model.as_deref(), Some("claude-sonnet-4"));
    }

    /// Anthropic's `output_tokens_details.thinking_tokens` (cumulative in `message_delta`) is the
    /// reasoning part of the output; translated for an OpenAI client it is `reasoning_tokens`.
    #[test]
    fn anthropic_thinking_tokens_are_the_reasoning() {
        let start = r#"{"type":"message_start","message":{"model":"claude-opus-4-6","usage":{"input_tokens":40,"output_tokens":1}}}"#;
        let first = r#"{"type":"message_delta","delta":{},"usage":{"output_tokens":300,"output_tokens_details":{"thinking_tokens":250}}}"#;
        let last = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":420,
            "output_tokens_details":{"thinking_tokens":380}}}"#;
        let usage = track(UsageFormat::Anthropic, &[start, first, last]).0.unwrap();
        assert_eq!((usage.output, usage.reasoning, usage.total), (420, 380, 460), "part of the output, not added");
        let anthropic: api::anthropic::Usage = serde_json::from_str(
            r#"{"input_tokens":40,"output_tokens":420,"output_tokens_details":{"thinking_tokens":380}}"#,
        )
        .unwrap();
        let openai = crate::convert::anthropic::usage(&anthropic);
        assert_eq!(openai["completion_tokens_details"], serde_json::json!({"reasoning_tokens": 380}));
        let back: api::openai::Usage = serde_json::from_value(openai).unwrap();
        assert_eq!(crate::convert::openai::usage(&back)["output_tokens_details"]["thinking_tokens"], 380);
    }

    /// Converse's `cacheDetails` lists the writes by TTL: the hour-long ones are the longer
    /// retention's.
    #[test]
    fn bedrock_cache_details_give_the_hour_long_writes() {
        let metadata = r#"{"usage":{"inputTokens":12,"outputTokens":30,"totalTokens":3042,"cacheReadInputTokens":0,
            "cacheWriteInputTokens":3000,"cacheDetails":[{"ttl":"1h","inputTokens":2000},{"ttl":"5m","inputTokens":1000}]}}"#;
        let usage = track(UsageFormat::Bedrock, &[metadata]).0.unwrap();
        assert_eq!((usage.input, usage.cache_creation, usage.cache_creation_long), (3012, 3000, 2000));
        let none = r#"{"usage":{"inputTokens":12,"outputTokens":30,"totalTokens":42,"cacheDetails":[]}}"#;
        assert_eq!(track(UsageFormat::Bedrock, &[none]).0.map(|u| u.cache_creation_long), Some(0));
    }

    /// `usage.cache_creation` splits the writes by lifetime; a later `message_delta` that repeats
    /// the total writes without the split keeps the split already read.
    #[test]
    fn anthropic_cache_writes_keep_their_one_hour_part() {
        let start = r#"{"type":"message_start","message":{"model":"claude-sonnet-4","usage":{"input_tokens":25,
            "cache_creation_input_tokens":1500,"cache_read_input_tokens":0,
            "cache_creation":{"ephemeral_5m_input_tokens":500,"ephemeral_1h_input_tokens":1000},"output_tokens":1}}}"#;
        let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":25,
            "cache_creation_input_tokens":1500,"cache_read_input_tokens":0,"output_tokens":40}}"#;
        let (usage, _) = track(UsageFormat::Anthropic, &[start, delta]);
        let usage = usage.unwrap();
        assert_eq!((usage.input, usage.cache_creation, usage.cache_creation_long), (1525, 1500, 1000));
        let whole = r#"{"model":"claude-sonnet-4","usage":{"input_tokens":25,"cache_creation_input_tokens":1500,
            "cache_creation":{"ephemeral_5m_input_tokens":1500,"ephemeral_1h_input_tokens":0},"output_tokens":9}}"#;
        assert_eq!(track(UsageFormat::Anthropic, &[whole]).0.map(|u| u.cache_creation_long), Some(0));
    }

    #[test]
    fn anthropic_delta_with_input_counters_overrides_not_adds() {
        let (usage, _) = track(
            UsageFormat::Anthropic,
            &[
                r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1}}}"#,
                r#"{"type":"message_delta","usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":0}}"#,
            ],
        );
        assert_eq!(usage.map(|u| (u.input, u.output)), Some((10, 5)));
    }

    #[test]
    fn gemini_repeated_usage_metadata_is_cumulative_and_thoughts_are_output() {
        let (usage, model) = track(
            UsageFormat::Gemini,
            &[
                r#"{"candidates":[],"usageMetadata":{"promptTokenCount":50,"candidatesTokenCount":2,"totalTokenCount":52},"modelVersion":"gemini-2.5-flash"}"#,
                r#"{"candidates":[],"usageMetadata":{"promptTokenCount":50,"candidatesTokenCount":20,"thoughtsTokenCount":30,
                    "cachedContentTokenCount":32,"toolUsePromptTokenCount":4,"totalTokenCount":104}}"#,
            ],
        );
        assert_eq!(
            usage,
            Some(Usage {
                input: 54,
                output: 50,
                cached_input: 32,
                cache_creation: 0,
                cache_creation_long: 0,
                reasoning: 30,
                total: 104
            })
        );
        assert_eq!(model.as_deref(), Some("gemini-2.5-flash"));
    }

    #[test]
    fn bedrock_cache_tokens_are_added_to_input() {
        let (usage, _) = track(
            UsageFormat::Bedrock,
            &[
                r#"{"usage":{"inputTokens":12,"outputTokens":30,"totalTokens":42,"cacheReadInputTokens":500,"cacheWriteInputTokens":7}}"#,
            ],
        );
        assert_eq!(
            usage,
            Some(Usage {
                input: 519,
                output: 30,
                cached_input: 500,
                cache_creation: 7,
                cache_creation_long: 0,
                reasoning: 0,
                total: 549
            })
        );
    }

    #[test]
    fn wrong_shapes_are_errors_not_guesses() {
        let mut tracker = UsageTracker::new(UsageFormat::OpenAiChat);
        assert!(matches!(
            tracker.observe_document(br#"{"usage":{"prompt_tokens":"9"}}"#),
            Err(UsageTrackerError::Usage(_))
        ));
        assert!(matches!(tracker.observe_document(b"{not json"), Err(UsageTrackerError::Json(_))));
        assert_eq!(tracker.usage(), None);
    }

    #[test]
    fn absurd_model_names_are_not_kept() {
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(500));
        assert_eq!(track(UsageFormat::OpenAiChat, &[&long]).1, None);
    }

    fn invoke_chunk(event: &str) -> Vec<u8> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.encode(event);
        format!(r#"{{"bytes":"{bytes}","p":"abcdefghij"}}"#).into_bytes()
    }

    #[test]
    fn an_invoke_stream_is_read_from_its_base64_chunks() {
        // Claude on Bedrock: Anthropic's events, the last with Bedrock's invocation metrics.
        let events = [
            r#"{"type":"message_start","message":{"id":"m","model":"claude-3-5-haiku-20241022","usage":{"input_tokens":10,"cache_creation_input_tokens":1800,"cache_read_input_tokens":0,"output_tokens":1}}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}"#,
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":10,"outputTokenCount":42,"invocationLatency":611,"firstByteLatency":300,"cacheReadInputTokenCount":0,"cacheWriteInputTokenCount":1800}}"#,
        ];
        let expected = Usage {
            input: 1810,
            output: 42,
            cached_input: 0,
            cache_creation: 1800,
            cache_creation_long: 0,
            reasoning: 0,
            total: 1852,
        };
        let mut tracker = UsageTracker::new(UsageFormat::BedrockInvoke);
        tracker.observe_invoke_chunk(&invoke_chunk(events[0])).unwrap();
        assert_eq!(tracker.usage().map(|u| u.input), Some(1810), "the input is known from the first chunk");
        for event in &events[1..] {
            tracker.observe_invoke_chunk(&invoke_chunk(event)).unwrap();
        }
        assert_eq!(tracker.usage(), Some(expected));
        assert_eq!(tracker.response_model(), None, "the model is the one the path names");

        // Llama: its own counts are not read; Bedrock's metrics are.
        let mut llama = UsageTracker::new(UsageFormat::BedrockInvoke);
        for event in [
            r#"{"generation":"Hel","prompt_token_count":12,"generation_token_count":1,"stop_reason":null}"#,
            r#"{"generation":"lo.","prompt_token_count":null,"generation_token_count":3,"stop_reason":"stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":12,"outputTokenCount":3,"invocationLatency":90,"firstByteLatency":40}}"#,
        ] {
            llama.observe_invoke_chunk(&invoke_chunk(event)).unwrap();
        }
        assert_eq!(llama.usage(), Some(Usage { input: 12, output: 3, total: 15, ..Usage::default() }));

        // A family whose own `usage` has another shape: not an error, not counted.
        let mut other = UsageTracker::new(UsageFormat::BedrockInvoke);
        other.observe_invoke_chunk(&invoke_chunk(r#"{"usage":"n/a","x":1}"#)).unwrap();
        other.observe_invoke_chunk(&invoke_chunk(r#"{"usage":{"prompt_tokens":5,"completion_tokens":2}}"#)).unwrap();
        assert!(!other.has_usage());

        for bad in [&b"{}"[..], br#"{"bytes":"not base64!"}"#, b"nope", br#"{"bytes":"bm90IGpzb24gInVzYWdlIg=="}"#] {
            assert!(other.observe_invoke_chunk(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let wrong = invoke_chunk(r#"{"amazon-bedrock-invocationMetrics":{"inputTokenCount":"ten"}}"#);
        assert!(other.observe_invoke_chunk(&wrong).is_err(), "Bedrock's own counts must be counts");
    }

    #[test]
    fn invoke_headers_carry_bedrocks_counts() {
        let headers = [
            ("x-amzn-bedrock-input-token-count", "10"),
            ("x-amzn-bedrock-output-token-count", " 42"),
            ("x-amzn-bedrock-cache-read-input-token-count", "500"),
            ("x-amzn-bedrock-cache-write-input-token-count", "7"),
            ("x-amzn-bedrock-invocation-latency", "611"),
        ];
        let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
        let reported = Reported::from_invoke_headers(header).unwrap();
        assert_eq!(
            reported.normalise(UsageFormat::BedrockInvoke),
            Usage {
                input: 517,
                output: 42,
                cached_input: 500,
                cache_creation: 7,
                cache_creation_long: 0,
                reasoning: 0,
                total: 559
            }
        );
        let none = Reported::from_invoke_headers(|_| None).unwrap();
        assert_eq!(none, Reported::default());
        let bad = Reported::from_invoke_headers(|n| (n == "x-amzn-bedrock-output-token-count").then(|| "-1".into()));
        assert_eq!(bad, Err("x-amzn-bedrock-output-token-count"));

        // A JSON answer's own Claude usage agrees (the same numbers overwrite).
        let mut tracker = UsageTracker::new(UsageFormat::BedrockInvoke);
        tracker.observe_reported(reported);
        tracker
            .observe_document(br#"{"type":"message","usage":{"input_tokens":10,"output_tokens":42,"cache_read_input_tokens":500,"cache_creation_input_tokens":7}}"#)
            .unwrap();
        assert_eq!(tracker.usage().map(|u| u.total), Some(559));
    }
}
