//! token-counter: reads what an LLM call costs, changes nothing the client can see.
//!
//! Request: learns the model, whether it streams and the estimated prompt tokens from the one
//! parse of the body. When `inject_include_usage` is on (default), a streaming OpenAI chat or
//! completions request without `stream_options.include_usage: true` is forwarded with it, and
//! the extra usage chunk (and the `"usage":null` members it adds) is removed from the stream the
//! client receives, so the client sees exactly the stream it asked for.
//!
//! Response, without buffering (every chunk is forwarded in the callback that received it):
//! - JSON: an incremental scan captures `usage`/`model` (also Gemini's JSON-array stream);
//! - SSE: events are decoded as they complete; usage is read from each event's data;
//! - AWS event-stream (Bedrock): frames are decoded and CRC-checked, usage read from `metadata`
//!   (Converse) or from the base64 `chunk` events (InvokeModel, whose JSON answers' counts come
//!   in `x-amzn-bedrock-*-token-count` headers);
//! - `gzip`/`deflate`: decompressed on the side for reading; the client gets the original bytes;
//! - error statuses pass untouched (counted by status).
//!
//! States (response side): `Idle` → one of `Json | Sse | EventStream | Skip` → done. Any
//! decoding failure moves to `Failed` (pass-through, counted by reason). Bounds: one SSE event or
//! event-stream message ≤ `max_event_bytes`; captured JSON values ≤ 64 KiB; decompression output
//! per step ≤ 1 MiB.
//!
//! Known inaccuracies: usage after a reset is counted as far as reported and marked `incomplete`;
//! a client that asked `include_usage: false` still does not see usage (we strip it) but the
//! upstream sees `true`.

use super::{
    Exchange, HeaderEdit, HeadersFlow, LogLevel, Now, Outbox, RequestHead, ResponseHead, Stage, StageFactory, StageHost,
};
use crate::decompress::{Encoding, Inflater};
use crate::error::{Dialect, Error};
use crate::eventstream::EventStreamDecoder;
use crate::json_scan::{self, JsonScanner};
use crate::metrics::{self, LabelLimiter};
use crate::request::Splice;
use crate::route::ApiKind;
use crate::sse::{SseDecoder, SseError};
use crate::usage::{Reported, Usage, UsageFormat, UsageTracker};
use serde::Deserialize;
use std::cell::RefCell;
use std::rc::Rc;

// ---- configuration ------------------------------------------------------------------------

/// The plugin configuration, as written in Envoy's `configuration` (JSON).
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Add `stream_options.include_usage: true` to streaming OpenAI requests that lack it (and
    /// strip what it adds from the stream). Off: such streams report no usage, and are counted
    /// as `usage_missing`.
    pub inject_include_usage: bool,
    /// Hold request headers while the body is read. Needs `allow_on_headers_stop_iteration:
    /// true` in the Envoy plugin config (without it Envoy never calls the body callback and the
    /// request hangs). Set `false` where that knob cannot be set (Istio `WasmPlugin`): headers
    /// continue, and `content-length` is removed from chat/completions requests so Envoy
    /// re-frames a rewritten body.
    pub hold_request_headers: bool,
    /// Refuse larger bodies with 413 in the client's dialect (by `content-length`, or as they
    /// arrive). Unset: Envoy's buffer limit applies and its plain-text 413 is reworded as JSON.
    #[schemars(extend("examples" = [4194304]))]
    pub max_request_bytes: Option<u64>,
    /// Bound on one SSE event or event-stream message (1024–67108864). A larger one stops
    /// reading that stream (counted, passed through).
    pub max_event_bytes: u64,
    /// Request header naming the consumer (metric label, access log). Credential headers
    /// (`authorization`, `x-api-key`, `api-key`, `x-goog-api-key`, `cookie`, …) are refused: a
    /// label must never carry a secret.
    #[schemars(extend("examples" = ["x-tollgate-consumer"]))]
    pub consumer_header: Option<String>,
    /// Envoy property path naming the consumer; tried before `consumer_header`.
    #[schemars(extend("examples" = [["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload", "sub"]]))]
    pub consumer_property: Option<Vec<String>>,
    /// Provider label, instead of the one detected from path and authority (`openai`, `azure`,
    /// `anthropic`, `gemini`, `vertex`, `bedrock`).
    #[schemars(extend("examples" = ["openai-compatible"]))]
    pub provider: Option<String>,
    /// Distinct values per label (model, consumer, route) per worker before new values become
    /// `other` (1–100000): every label combination is an Envoy stat forever.
    pub max_label_values: u32,
    /// Decompress gzip/deflate responses on the side to read usage (the client still gets them
    /// compressed). Brotli is not supported (counted as `response_unsupported_encoding`).
    pub decompress_responses: bool,
    /// Write the exchange's fields to Envoy filter state for access logs
    /// (`%FILTER_STATE(wasm.tollgate.input_tokens:PLAIN)%`, …). `false`: metrics only, for
    /// deployments whose access logs do not print them (14 host calls fewer per request).
    pub filter_state: bool,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            inject_include_usage: true,
            hold_request_headers: true,
            max_request_bytes: None,
            max_event_bytes: crate::sse::DEFAULT_MAX_EVENT_BYTES as u64,
            consumer_header: None,
            consumer_property: None,
            provider: None,
            max_label_values: 200,
            decompress_responses: true,
            filter_state: true,
        }
    }
}

/// A validated configuration; only [`Config::parse`] makes one.
#[derive(Debug, Clone)]
pub struct Config {
    raw: RawConfig,
    /// Who is calling, from `consumer_property` and `consumer_header`.
    consumer: crate::consumer::ConsumerSource,
}

/// A configuration error naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "x-amz-security-token",
];

impl Config {
    /// Parses and validates. `prefix` is the field path of this object (`""` for a top-level
    /// plugin config, `"token_counter."` inside the all-in-one config).
    pub fn parse(json: &[u8], prefix: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = if json.iter().all(u8::is_ascii_whitespace) {
            RawConfig::default()
        } else {
            crate::config::from_json(json, prefix).map_err(ConfigError)?
        };
        Config::validate(raw, prefix)
    }

    pub fn validate(raw: RawConfig, prefix: &str) -> Result<Config, ConfigError> {
        let field = |name: &str, message: String| Err(ConfigError(format!("{prefix}{name}: {message}")));
        if !(1024..=64 << 20).contains(&raw.max_event_bytes) {
            return field("max_event_bytes", format!("{} is outside 1024..=67108864", raw.max_event_bytes));
        }
        if raw.max_request_bytes == Some(0) {
            return field("max_request_bytes", "must be at least 1".into());
        }
        if raw.max_label_values == 0 || raw.max_label_values > 100_000 {
            return field("max_label_values", format!("{} is outside 1..=100000", raw.max_label_values));
        }
        if let Some(header) = &raw.consumer_header {
            let valid = !header.is_empty()
                && header.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !valid {
                return field("consumer_header", format!("'{header}' is not a lowercase header name"));
            }
            if CREDENTIAL_HEADERS.contains(&header.as_str()) {
                return field("consumer_header", format!("'{header}' carries credentials and would leak them into metrics and logs; name the consumer with a header set by your auth filter instead"));
            }
        }
        if let Some(path) = &raw.consumer_property {
            if path.is_empty() || path.iter().any(String::is_empty) {
                return field("consumer_property", "must be a non-empty list of non-empty path segments".into());
            }
        }
        if let Some(provider) = &raw.provider {
            if provider.is_empty() || metrics::sanitize(provider) != *provider {
                return field("provider", format!("'{provider}' must be a non-empty label of [A-Za-z0-9._:/@+-]"));
            }
        }
        // The same consumer model as every stage: the property, else the identity header.
        let consumer = crate::consumer::ConsumerSource {
            property: raw.consumer_property.clone(),
            identity_header: raw.consumer_header.clone(),
            downstream_address: false,
            ..crate::consumer::ConsumerSource::default()
        };
        Ok(Config { raw, consumer })
    }

    pub fn raw(&self) -> &RawConfig {
        &self.raw
    }

    pub fn max_request_bytes(&self) -> Option<u64> {
        self.raw.max_request_bytes
    }
}

// ---- factory --------------------------------------------------------------------------------

/// Per-VM state of the stage: config and label caps.
pub struct TokenCounter {
    config: Rc<Config>,
    labels: Rc<RefCell<LabelLimiter>>,
    names: Rc<RefCell<NameCache>>,
}

impl TokenCounter {
    pub fn new(config: Config) -> Self {
        let cap = config.raw.max_label_values as usize;
        TokenCounter {
            config: Rc::new(config),
            labels: Rc::new(RefCell::new(LabelLimiter::new(cap))),
            names: Rc::default(),
        }
    }
}

impl StageFactory for TokenCounter {
    fn create(&self) -> Box<dyn Stage> {
        Box::new(TokenCounterStream::new(self.config.clone(), self.labels.clone(), self.names.clone()))
    }
}

// ---- metric names ---------------------------------------------------------------------------

/// The label values of one exchange's metrics (already admitted by the label caps).
struct Labels<'a> {
    request_model: &'a str,
    response_model: &'a str,
    consumer: &'a str,
    route: &'a str,
    provider: &'a str,
    operation: &'a str,
    error_type: &'a str,
}

/// Every metric name one label combination needs, built once.
struct Names {
    /// `gen_ai.client.token.usage`, one per token type in [`token_types`] order.
    usage: [Rc<str>; 6],
    estimated_input: Rc<str>,
    requests: Rc<str>,
    duration: Rc<str>,
    time_to_first_token: Rc<str>,
    time_per_output_token: Rc<str>,
}

impl Names {
    fn build(l: &Labels<'_>) -> Names {
        let prefix = metrics::PREFIX;
        let timing = metrics::labels(&[
            ("gen_ai_request_model", l.request_model),
            ("gen_ai_provider_name", l.provider),
            ("gen_ai_operation_name", l.operation),
            ("route", l.route),
        ]);
        let base = format!(
            "{timing}{}",
            metrics::labels(&[("gen_ai_response_model", l.response_model), ("consumer", l.consumer)])
        );
        let usage = |kind: &str| Rc::from(format!("{prefix}gen_ai.client.token.usage;gen_ai_token_type={kind}{base}"));
        let kinds = token_types(&Usage::default()).map(|(kind, _)| kind);
        Names {
            usage: kinds.map(usage),
            estimated_input: Rc::from(format!("{prefix}gen_ai.client.token.estimated_input{base}")),
            requests: Rc::from(format!("{prefix}gen_ai.requests{base};error_type={}", l.error_type)),
            duration: Rc::from(format!("{prefix}gen_ai.server.request.duration{timing}")),
            time_to_first_token: Rc::from(format!("{prefix}gen_ai.server.time_to_first_token{timing}")),
            time_per_output_token: Rc::from(format!("{prefix}gen_ai.server.time_per_output_token{timing}")),
        }
    }
}

/// Metric names by label combination, per VM: most exchanges repeat a combination seen before,
/// and building eleven names (each ≈ 150 bytes) was most of the end-of-stream work. Bounded:
/// past [`NameCache::MAX`] combinations it starts over.
#[derive(Default)]
struct NameCache {
    by_labels: crate::fxhash::FxHashMap<Box<str>, Rc<Names>>,
    /// The lookup key, reused: label values joined by `\u{1}` (no label value contains it).
    key: String,
}

impl NameCache {
    const MAX: usize = 1024;

    fn get(&mut self, l: &Labels<'_>) -> Rc<Names> {
        self.key.clear();
        for part in [l.request_model, l.response_model, l.consumer, l.route, l.provider, l.operation, l.error_type] {
            self.key.push_str(part);
            self.key.push('\u{1}');
        }
        if let Some(names) = self.by_labels.get(self.key.as_str()) {
            return names.clone();
        }
        if self.by_labels.len() >= Self::MAX {
            self.by_labels.clear();
        }
        let names = Rc::new(Names::build(l));
        self.by_labels.insert(self.key.as_str().into(), names.clone());
        names
    }
}

// ---- per stream -----------------------------------------------------------------------------

/// Paths read from each chunk of a stream whose usage we strip: usage, model and choices.
const STRIP_TARGETS: &[&[&str]] = &[&["usage"], &["model"], &["choices"]];

// One reader per stream, created once: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Reader {
    /// Before response headers.
    Idle,
    /// Not read (error status, non-AI content): passed through.
    Skip,
    Json(JsonScanner),
    Sse {
        decoder: SseDecoder,
        strip_usage: bool,
    },
    EventStream(EventStreamDecoder),
    /// Gave up decoding (reason counted); the rest passes through unread.
    Failed,
}

pub struct TokenCounterStream {
    config: Rc<Config>,
    labels: Rc<RefCell<LabelLimiter>>,
    names: Rc<RefCell<NameCache>>,
    consumer: String,
    status: Option<u16>,
    reader: Reader,
    inflater: Option<Inflater>,
    tracker: Option<UsageTracker>,
    first_byte_ns: Option<u64>,
    /// Reasons something could not be read, counted at the end.
    unread: Vec<&'static str>,
    response_done: bool,
    /// False for requests whose responses carry no usage (the model list): no metrics.
    counts: bool,
}

impl TokenCounterStream {
    fn new(config: Rc<Config>, labels: Rc<RefCell<LabelLimiter>>, names: Rc<RefCell<NameCache>>) -> Self {
        TokenCounterStream {
            counts: true,
            config,
            labels,
            names,
            consumer: String::new(),
            status: None,
            reader: Reader::Idle,
            inflater: None,
            tracker: None,
            first_byte_ns: None,
            unread: Vec::new(),
            response_done: false,
        }
    }

    /// Stops reading (the rest passes through) and counts why. A rewriting SSE reader first
    /// hands back every byte it held, so the client's stream stays byte-exact.
    fn fail(&mut self, reason: &'static str, out_bytes: &mut Option<Vec<u8>>) {
        self.unread.push(reason);
        if let Reader::Sse { decoder, strip_usage: true } = &mut self.reader {
            out_bytes.get_or_insert_with(Vec::new).extend_from_slice(&decoder.take_unconsumed());
        }
        self.reader = Reader::Failed;
        self.inflater = None;
    }

    /// Reads one chunk of decoded (decompressed) response bytes; returns the bytes to send to
    /// the client when the stream is being rewritten.
    fn read(&mut self, bytes: &[u8], last: bool, out_bytes: &mut Option<Vec<u8>>) {
        let Some(tracker) = self.tracker.as_mut() else {
            return;
        };
        let mut failure = None;
        match &mut self.reader {
            Reader::Json(scanner) => {
                let pushed = if last { scanner.push_last(bytes) } else { scanner.push(bytes) };
                failure = match pushed {
                    Err(_) => Some("response_malformed_json"),
                    Ok(()) => observe_captured(tracker, scanner),
                };
            }
            Reader::Sse { decoder, strip_usage } => {
                if let Err(SseError::EventTooLarge { .. }) = decoder.push(bytes) {
                    failure = Some("sse_event_too_large");
                } else {
                    let strip = *strip_usage;
                    while let Some(event) = decoder.next_event() {
                        // A bad event is counted; reading goes on with the next one.
                        if let Some(reason) = read_event(tracker, &event, strip, out_bytes) {
                            self.unread.push(reason);
                        }
                    }
                }
            }
            Reader::EventStream(decoder) => {
                if decoder.push(bytes).is_err() {
                    failure = Some("eventstream_invalid");
                } else {
                    while let Some(message) = decoder.next_message() {
                        match message {
                            Ok(message) if message.header_str(":message-type") == Some("event") => {
                                match message.header_str(":event-type") {
                                    Some("metadata") if tracker.observe_document(message.payload).is_err() => {
                                        failure.get_or_insert("response_bad_usage");
                                    }
                                    // InvokeModel: the model's own event, base64; a bad one is
                                    // counted, reading goes on with the next.
                                    Some("chunk")
                                        if tracker.format() == UsageFormat::BedrockInvoke
                                            && tracker.observe_invoke_chunk(message.payload).is_err() =>
                                    {
                                        self.unread.push("invoke_chunk_invalid");
                                    }
                                    _ => {}
                                }
                            }
                            Ok(_) => {}
                            Err(_) => {
                                failure = Some("eventstream_invalid");
                                break;
                            }
                        }
                    }
                }
            }
            Reader::Idle | Reader::Skip | Reader::Failed => {}
        }
        if let Some(reason) = failure {
            self.fail(reason, out_bytes);
        }
    }

    /// Feeds a raw (possibly compressed) chunk; `last` when the response ends with it.
    fn feed(&mut self, chunk: &[u8], last: bool, out_bytes: &mut Option<Vec<u8>>) {
        match self.inflater.take() {
            None => self.read(chunk, last, out_bytes),
            Some(mut inflater) => {
                let mut plain = Vec::new();
                let result = inflater.push(chunk, |b| plain.extend_from_slice(b));
                self.inflater = Some(inflater);
                self.read(&plain, false, out_bytes);
                if result.is_err() {
                    self.fail("response_decompress_error", out_bytes);
                }
            }
        }
    }

    /// End of the response body: flush decoders, check completeness.
    fn finish_response(&mut self, out_bytes: &mut Option<Vec<u8>>) {
        if self.response_done {
            return;
        }
        self.response_done = true;
        if let Some(mut inflater) = self.inflater.take() {
            let mut plain = Vec::new();
            let result = inflater.finish(|b| plain.extend_from_slice(b));
            self.read(&plain, false, out_bytes);
            if result.is_err() {
                self.fail("response_decompress_error", out_bytes);
                return;
            }
        }
        let Some(tracker) = self.tracker.as_mut() else {
            return;
        };
        let mut failure = None;
        match &mut self.reader {
            Reader::Json(scanner) => {
                failure = match scanner.finish() {
                    Err(_) => Some("response_truncated_json"),
                    Ok(()) => observe_captured(tracker, scanner),
                };
            }
            Reader::Sse { decoder, strip_usage } => {
                let strip = *strip_usage;
                let (last, tail) = decoder.finish();
                if let Some(event) = last {
                    if let Some(reason) = read_event(tracker, &event, strip, out_bytes) {
                        self.unread.push(reason);
                    }
                } else if strip && !tail.is_empty() {
                    out_bytes.get_or_insert_with(Vec::new).extend_from_slice(tail);
                }
            }
            Reader::EventStream(decoder) => {
                if decoder.finish().is_err() {
                    failure = Some("eventstream_truncated");
                }
            }
            Reader::Idle | Reader::Skip | Reader::Failed => {}
        }
        if let Some(reason) = failure {
            self.fail(reason, out_bytes);
        }
    }
}

/// Feeds the values a JSON scanner captured to the tracker. Returns a failure reason, if any.
fn observe_captured(tracker: &mut UsageTracker, scanner: &mut JsonScanner) -> Option<&'static str> {
    let mut failure = None;
    for captured in scanner.take_captured() {
        if tracker.observe(&captured).is_err() {
            failure = Some("response_bad_usage");
        }
    }
    failure
}

/// One complete SSE event: observed, or (when stripping) observed and rewritten into `out`.
fn read_event(
    tracker: &mut UsageTracker,
    event: &crate::sse::Event<'_>,
    strip: bool,
    out: &mut Option<Vec<u8>>,
) -> Option<&'static str> {
    if strip {
        read_and_strip_event(tracker, event.raw, event.data.as_deref(), out.get_or_insert_with(Vec::new))
    } else {
        observe_event(tracker, &event.data)
    }
}

/// Reads usage from one SSE event's data, skipping events that cannot carry it (once the
/// response model is known). Returns a failure reason, if any.
fn observe_event(tracker: &mut UsageTracker, data: &Option<std::borrow::Cow<'_, [u8]>>) -> Option<&'static str> {
    let data = data.as_deref()?;
    let trimmed = data.trim_ascii();
    // Events that cannot carry usage are not scanned (once the response model is known).
    if trimmed.is_empty() || trimmed == b"[DONE]" || !tracker.worth_scanning(trimmed) {
        return None;
    }
    match tracker.observe_document(trimmed) {
        Ok(()) => None,
        Err(crate::usage::UsageTrackerError::Json(_)) => Some("sse_malformed_json"),
        Err(crate::usage::UsageTrackerError::Usage(_)) => Some("response_bad_usage"),
    }
}

/// The rewriting path of an OpenAI stream: reads usage and model from the event with the same
/// single scan that finds what to strip, and writes the event to `sink` without the usage the
/// client did not ask for: the usage-only chunk (`choices: []` with usage) is dropped,
/// `"usage":null` members are removed, and a usage object on a chunk that has choices is removed
/// from it. Anything unexpected is written unchanged. Returns a failure reason, if any.
///
/// Every chunk but the last ends with `,"usage":null}` in OpenAI's compact JSON: once the
/// response model is known, such a chunk is not parsed. That closing `}` ends the root object
/// (a document that begins with `{` ends with the brace that closes it), so the member before
/// it is the root's, the same one the scan would find; only a malformed chunk is told apart
/// differently (stripped, not counted — as the observing path, which skips such chunks too).
fn read_and_strip_event(
    tracker: &mut UsageTracker,
    raw: &[u8],
    data: Option<&[u8]>,
    sink: &mut Vec<u8>,
) -> Option<&'static str> {
    let Some(data) = data else {
        sink.extend_from_slice(raw);
        return None;
    };
    let trimmed = data.trim_ascii();
    if tracker.response_model().is_some() && trimmed.first() == Some(&b'{') {
        if let Some(head) = trimmed.strip_suffix(NULL_USAGE_LAST) {
            if let Some(start) = offset_of(data, head).map(|at| at + head.len()) {
                // `,"usage":null` out, the closing brace kept.
                emit_without(sink, raw, data, start, start + NULL_USAGE_LAST.len() - 1);
                return None;
            }
        }
    }
    if trimmed.is_empty() || trimmed == b"[DONE]" || !tracker.names_usage(trimmed) {
        sink.extend_from_slice(raw);
        return None;
    }
    let captured = match json_scan::scan_document(STRIP_TARGETS, data) {
        Ok(captured) => captured,
        Err(_) => {
            sink.extend_from_slice(raw);
            return Some("sse_malformed_json");
        }
    };
    let mut failure = None;
    for value in captured.iter().filter(|c| c.target < 2) {
        // STRIP_TARGETS begins with the format's own targets (usage, model).
        if tracker.observe(value).is_err() {
            failure = Some("response_bad_usage");
        }
    }
    let Some(usage) = captured.iter().find(|c| c.target == 0) else {
        sink.extend_from_slice(raw);
        return failure;
    };
    let choices_empty =
        captured.iter().any(|c| c.target == 2 && c.bytes.iter().filter(|b| !b.is_ascii_whitespace()).eq(b"[]".iter()));
    let usage_null = usage.bytes.trim_ascii() == b"null";
    if !usage_null && choices_empty {
        return failure; // the usage-only chunk the client did not ask for
    }
    // Remove the member: with the comma before it, or with the comma after it if it is first.
    let (start, mut end) = match usage.comma_before {
        Some(comma) => (comma as usize, usage.value_end as usize),
        None => (usage.member_start as usize, usage.value_end as usize),
    };
    if usage.comma_before.is_none() {
        let rest = data.get(end..).unwrap_or(&[]);
        if let Some(pos) = rest.iter().position(|b| !b.is_ascii_whitespace()) {
            if rest.get(pos) == Some(&b',') {
                end += pos + 1;
            }
        }
    }
    emit_without(sink, raw, data, start, end);
    failure
}

/// The last member of an OpenAI stream chunk when the chunk carries no usage.
const NULL_USAGE_LAST: &[u8] = b",\"usage\":null}";

/// Writes the event `raw` to `sink` with `data[start..end]` left out: in place when the data
/// is one borrowed line of `raw` (the framing kept), else as a new `data:` event.
fn emit_without(sink: &mut Vec<u8>, raw: &[u8], data: &[u8], start: usize, end: usize) {
    let (before, after) = (data.get(..start).unwrap_or(&[]), data.get(end..).unwrap_or(&[]));
    match offset_of(raw, data) {
        Some(at) => {
            sink.extend_from_slice(raw.get(..at).unwrap_or(&[]));
            sink.extend_from_slice(before);
            sink.extend_from_slice(after);
            sink.extend_from_slice(raw.get(at + data.len()..).unwrap_or(&[]));
        }
        None => {
            sink.extend_from_slice(b"data: ");
            sink.extend_from_slice(before);
            sink.extend_from_slice(after);
            sink.extend_from_slice(b"\n\n");
        }
    }
}

fn offset_of(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (start + inner.len() <= outer.len()).then_some(start)
}

fn header_is(value: &Option<String>, wanted: &str) -> bool {
    value.as_deref().is_some_and(|v| v.to_ascii_lowercase().contains(wanted))
}

impl Stage for TokenCounterStream {
    fn request_headers(
        &mut self,
        ex: &mut Exchange,
        head: &RequestHead,
        host: &dyn StageHost,
        out: &mut Outbox,
    ) -> HeadersFlow {
        if !ex.route.kind.has_usage() {
            self.counts = false;
            return HeadersFlow::Continue;
        }
        if let Some(consumer) = self.config.consumer.resolve(host) {
            self.consumer = consumer;
        }
        let may_rewrite = self.config.raw.inject_include_usage
            && matches!(ex.route.kind, ApiKind::OpenAiChat | ApiKind::OpenAiCompletions)
            && ex.unparsed_reason.is_none();
        if !head.has_body {
            return HeadersFlow::Continue;
        }
        if self.config.raw.hold_request_headers {
            HeadersFlow::Pause
        } else {
            if may_rewrite {
                out.request_headers.push(HeaderEdit::Remove("content-length"));
            }
            HeadersFlow::Continue
        }
    }

    fn needs_request_body(&self, _ex: &Exchange, _head: &RequestHead) -> bool {
        true
    }

    fn request_body(
        &mut self,
        ex: &mut Exchange,
        _body: &[u8],
        splices: &mut Vec<Splice>,
        _host: &dyn StageHost,
        _out: &mut Outbox,
    ) -> Result<(), (Error, Dialect)> {
        if !self.config.raw.inject_include_usage {
            return Ok(());
        }
        if ex.upstream_kind() != ex.route.kind {
            // Translated for another API: the translation decides what the client sees.
            return Ok(());
        }
        if let Some(splice) = ex.parsed.as_mut().and_then(|p| p.include_usage_splice.take()) {
            splices.push(splice);
            ex.injected_include_usage = true;
        }
        Ok(())
    }

    fn response_headers(&mut self, ex: &Exchange, head: &ResponseHead, host: &dyn StageHost, out: &mut Outbox) {
        if !self.counts {
            return;
        }
        self.status = Some(head.status);
        let format = ex.upstream_kind().usage_format();
        let mut tracker = UsageTracker::new(format);
        let event_stream = header_is(&head.content_type, "application/vnd.amazon.eventstream");
        if format == UsageFormat::BedrockInvoke && head.status < 400 && !event_stream {
            // InvokeModel's counts, whatever the model family: in headers (a stream has them in
            // its last chunk instead).
            match Reported::from_invoke_headers(|name| host.response_header(name)) {
                Ok(reported) => tracker.observe_reported(reported),
                Err(_) => self.unread.push("response_bad_usage"),
            }
        }
        self.tracker = Some(tracker);
        if head.status >= 400 || !head.has_body {
            self.reader = Reader::Skip;
            return;
        }
        let encoding = match Encoding::parse(head.content_encoding.as_deref()) {
            Ok(encoding) => encoding,
            Err(_) => {
                self.fail("response_unsupported_encoding", &mut None);
                return;
            }
        };
        if encoding != Encoding::Identity {
            if !self.config.raw.decompress_responses {
                self.fail("response_compressed", &mut None);
                return;
            }
            self.inflater = Inflater::new(encoding);
        }
        let max_event = self.config.raw.max_event_bytes as usize;
        self.reader = if header_is(&head.content_type, "text/event-stream") {
            let strip_usage = ex.injected_include_usage;
            if strip_usage {
                // We rewrite the stream: its length changes.
                out.response_headers.push(HeaderEdit::Remove("content-length"));
            }
            Reader::Sse { decoder: SseDecoder::new(max_event), strip_usage }
        } else if event_stream {
            Reader::EventStream(EventStreamDecoder::new(max_event))
        } else if ex.upstream_kind() == ApiKind::OpenAiSpeech {
            // The audio itself (`stream_format: audio`): no usage in it, nothing to scan.
            Reader::Skip
        } else {
            // JSON, or whatever the upstream labelled its JSON: the scanner decides.
            Reader::Json(format.scanner())
        };
        if ex.injected_include_usage && !matches!(self.reader, Reader::Sse { .. }) {
            // We asked for usage in a stream but did not get a stream: nothing to strip.
            out.logs.push((LogLevel::Debug, "include_usage injected but response is not SSE".into()));
        }
        if self.inflater.is_some() && matches!(self.reader, Reader::Sse { strip_usage: true, .. }) {
            // Rewriting a compressed stream would mean recompressing it: leave it as it is.
            self.reader = Reader::Sse { decoder: SseDecoder::new(max_event), strip_usage: false };
            self.unread.push("compressed_stream_not_stripped");
        }
    }

    fn response_chunk(
        &mut self,
        ex: &Exchange,
        chunk: &[u8],
        end_of_stream: bool,
        now: &Now<'_>,
        _host: &dyn StageHost,
        out: &mut Outbox,
    ) -> Option<Vec<u8>> {
        // Time to first token is a streaming measure; only streams pay for the clock read.
        if !chunk.is_empty() && self.first_byte_ns.is_none() && ex.streaming() {
            self.first_byte_ns = Some(now.ns());
        }
        let strip = matches!(self.reader, Reader::Sse { strip_usage: true, .. });
        let mut rewritten = strip.then(Vec::new);
        self.feed(chunk, end_of_stream, &mut rewritten);
        if end_of_stream {
            self.finish_response(&mut rewritten);
        }
        if strip && matches!(self.reader, Reader::Failed) {
            out.log(LogLevel::Warn, "token-counter: SSE rewrite stopped; the rest of the stream passes unchanged");
        }
        rewritten
    }

    fn done(&mut self, ex: &Exchange, completed: bool, now: &Now<'_>, host: &dyn StageHost, out: &mut Outbox) {
        if !self.counts {
            return;
        }
        let now_ns = now.ns();
        let mut flush = None;
        if completed {
            self.finish_response(&mut flush);
        }
        let route =
            host.property(&["xds", "route_name"]).map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
        let estimate = ex.parsed.as_ref().map(|p| p.info.estimated_prompt_tokens());
        let usage = self.tracker.as_ref().and_then(UsageTracker::usage);
        let reset = !completed || !self.response_done;
        // Later stages (quota) settle with what the provider reported.
        ex.usage.set(usage.map(|usage| super::ReportedUsage { usage, complete: !reset }));
        let background = ex.parsed.as_ref().is_some_and(|p| p.info.background);
        let usage_state = match (usage.is_some(), reset, self.status) {
            (true, false, _) => "reported",
            (true, true, _) => "incomplete",
            (false, _, Some(s)) if s >= 400 => "none",
            (false, true, _) => "incomplete",
            // Queued, generated after this answer: the usage comes with the polled result.
            (false, false, _) if background => "deferred",
            (false, false, _) => "missing",
        };
        if usage_state == "missing" && !matches!(self.reader, Reader::Failed) {
            self.unread.push("usage_missing");
        }
        if reset {
            self.unread.push("stream_not_completed");
        }
        if let Some(reason) = ex.unparsed_reason {
            self.unread.push(reason);
        }

        let provider = self.config.raw.provider.as_deref().unwrap_or(ex.provider());
        let operation = ex.route.kind.operation();
        let status_label;
        let error_type = match (self.status, reset) {
            (_, true) => "incomplete",
            (Some(status), false) if status >= 400 => {
                status_label = status.to_string();
                &status_label
            }
            _ => "",
        };
        let response_model_raw =
            self.tracker.as_ref().and_then(|t| t.response_model()).or(ex.request_model()).unwrap_or("");
        let names = {
            let mut labels = self.labels.borrow_mut();
            let key = Labels {
                request_model: &labels.admit("gen_ai_request_model", ex.request_model().unwrap_or("")),
                response_model: &labels.admit("gen_ai_response_model", response_model_raw),
                consumer: &labels.admit("consumer", &self.consumer),
                route: &labels.admit("route", &route),
                provider,
                operation,
                error_type,
            };
            self.names.borrow_mut().get(&key)
        };

        if let Some(u) = usage {
            for (name, (_, value)) in names.usage.iter().zip(token_types(&u)) {
                out.counter(name.clone(), value);
            }
        }
        if let Some(estimate) = estimate {
            out.counter(names.estimated_input.clone(), estimate);
        }
        out.counter(names.requests.clone(), 1);

        let duration_ms = now_ns.saturating_sub(ex.started_ns) / 1_000_000;
        out.histogram(names.duration.clone(), duration_ms);
        let streaming = ex.streaming();
        let ttft_ms = self.first_byte_ns.map(|t| t.saturating_sub(ex.started_ns) / 1_000_000);
        if let (true, Some(ttft)) = (streaming, ttft_ms) {
            out.histogram(names.time_to_first_token.clone(), ttft);
            if let (Some(first), Some(u)) = (self.first_byte_ns, usage) {
                if u.output > 1 && !reset {
                    let per_token_us = now_ns.saturating_sub(first) / 1_000 / (u.output - 1);
                    out.histogram(names.time_per_output_token.clone(), per_token_us);
                }
            }
        }
        self.unread.sort_unstable();
        self.unread.dedup();
        for reason in &self.unread {
            out.counter(metrics::name("token_counter.unread", &[("reason", reason)]), 1);
        }

        if self.config.raw.filter_state {
            // Filter state for access logs (`%FILTER_STATE(wasm.tollgate.<key>:PLAIN)%`).
            out.state("tollgate.request_model", ex.request_model().map(metrics::sanitize).unwrap_or_default());
            out.state("tollgate.response_model", metrics::sanitize(response_model_raw));
            out.state("tollgate.provider", provider);
            out.state("tollgate.operation", operation);
            out.state("tollgate.stream", if streaming { "true" } else { "false" });
            out.state("tollgate.consumer", self.consumer.clone());
            out.state("tollgate.usage", usage_state);
            for (key, (_, value)) in TOKEN_STATE_KEYS.iter().zip(token_types(&usage.unwrap_or_default())) {
                out.state(*key, value.to_string());
            }
            out.state("tollgate.estimated_input_tokens", estimate.map(|e| e.to_string()).unwrap_or_default());
            out.state("tollgate.ttft_ms", ttft_ms.map(|t| t.to_string()).unwrap_or_default());
            out.state("tollgate.duration_ms", duration_ms.to_string());
            if ex.injected_include_usage {
                out.state("tollgate.include_usage_injected", "true");
            }
        }
        if !self.unread.is_empty() {
            out.logs.push((LogLevel::Debug, format!("token-counter: unread: {}", self.unread.join(","))));
        }
        if flush.as_ref().is_some_and(|f| !f.is_empty()) {
            // Only reachable when the response ended with trailers: body bytes cannot follow.
            out.log(LogLevel::Debug, "token-counter: held SSE bytes dropped after response trailers");
        }
    }
}

/// The filter-state key of each of [`token_types`], in its order: `tollgate.<type>_tokens`.
const TOKEN_STATE_KEYS: [&str; 6] = [
    "tollgate.input_tokens",
    "tollgate.output_tokens",
    "tollgate.total_tokens",
    "tollgate.cached_input_tokens",
    "tollgate.cache_creation_input_tokens",
    "tollgate.reasoning_tokens",
];

/// Token types reported to the `gen_ai.client.token.usage` counter, OTel `gen_ai.token.type`
/// values first, then the cache/reasoning breakdowns (as Envoy AI Gateway names them).
fn token_types(u: &Usage) -> [(&'static str, u64); 6] {
    [
        ("input", u.input),
        ("output", u.output),
        ("total", u.total),
        ("cached_input", u.cached_input),
        ("cache_creation_input", u.cache_creation),
        ("reasoning", u.reasoning),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<'a>(model: &'a str, error_type: &'a str) -> Labels<'a> {
        Labels {
            request_model: model,
            response_model: "gpt-4.1-2025-04-14",
            consumer: "team-a",
            route: "llm",
            provider: "openai",
            operation: "chat",
            error_type,
        }
    }

    /// Each chunk of the OpenAI stream fixtures stripped with the response model known (the
    /// unparsed path for `,"usage":null}` chunks) equals the same chunk stripped by the scan
    /// (model unknown), in the framing the chunk came in, and is still valid JSON.
    #[test]
    fn chunks_ending_in_null_usage_strip_as_the_scan_does() {
        let fixtures = ["chat-stream-20.sse", "chat-stream.sse", "chat-tools-stream.sse", "chat-pii-stream.sse"];
        let mut fast_path = 0;
        for name in fixtures {
            let path = format!("{}/../../tests/fixtures/responses/openai/{name}", env!("CARGO_MANIFEST_DIR"));
            let stream = std::fs::read(&path).unwrap();
            let format = crate::usage::UsageFormat::OpenAiChat;
            let mut known = UsageTracker::new(format);
            known.observe_document(br#"{"model":"m"}"#).unwrap();
            let mut decoder = SseDecoder::new(1 << 20);
            decoder.push(&stream).unwrap();
            while let Some(event) = decoder.next_event() {
                let data = event.data.as_deref();
                let (mut scanned, mut unparsed) = (Vec::new(), Vec::new());
                let mut unknown = UsageTracker::new(format);
                assert_eq!(read_and_strip_event(&mut unknown, event.raw, data, &mut scanned), None);
                assert_eq!(read_and_strip_event(&mut known, event.raw, data, &mut unparsed), None);
                assert_eq!(String::from_utf8_lossy(&unparsed), String::from_utf8_lossy(&scanned), "{name}");
                let trimmed = data.unwrap_or_default().trim_ascii();
                if trimmed.ends_with(NULL_USAGE_LAST) {
                    fast_path += 1;
                    let json = String::from_utf8_lossy(&unparsed);
                    let json = json.trim().strip_prefix("data:").unwrap();
                    let value: serde_json::Value = serde_json::from_str(json).unwrap();
                    assert!(value.get("usage").is_none() && value.get("choices").is_some(), "{json}");
                }
            }
        }
        assert!(fast_path >= 20, "the fixtures exercise the unparsed path: {fast_path}");
    }

    #[test]
    fn each_token_type_has_its_filter_state_key_in_order() {
        for (key, (kind, _)) in TOKEN_STATE_KEYS.iter().zip(token_types(&Usage::default())) {
            assert_eq!(*key, format!("tollgate.{kind}_tokens"));
        }
    }

    #[test]
    fn metric_names_carry_every_label_for_stats_tags() {
        let names = Names::build(&labels("gpt-4.1", "429"));
        let base = ";gen_ai_request_model=gpt-4.1;gen_ai_provider_name=openai;gen_ai_operation_name=chat;route=llm\
                    ;gen_ai_response_model=gpt-4.1-2025-04-14;consumer=team-a";
        assert_eq!(&*names.usage[0], format!("tollgate.gen_ai.client.token.usage;gen_ai_token_type=input{base}"));
        assert_eq!(&*names.usage[5], format!("tollgate.gen_ai.client.token.usage;gen_ai_token_type=reasoning{base}"));
        assert_eq!(&*names.requests, format!("tollgate.gen_ai.requests{base};error_type=429"));
        assert_eq!(
            &*names.duration,
            "tollgate.gen_ai.server.request.duration;gen_ai_request_model=gpt-4.1;gen_ai_provider_name=openai\
             ;gen_ai_operation_name=chat;route=llm"
        );
    }

    #[test]
    fn name_cache_reuses_a_combination_and_stays_bounded() {
        let mut cache = NameCache::default();
        let first = cache.get(&labels("gpt-4.1", ""));
        assert!(Rc::ptr_eq(&first, &cache.get(&labels("gpt-4.1", ""))));
        let failed = cache.get(&labels("gpt-4.1", "500"));
        assert!(!Rc::ptr_eq(&first, &failed));
        assert!(failed.requests.ends_with(";error_type=500") && first.requests.ends_with(";error_type="));
        // Parts are delimited: moving text between two labels is another combination.
        let shifted = Labels { request_model: "gpt-4.1t", consumer: "eam-a", ..labels("", "") };
        assert!(!cache.get(&shifted).requests.contains("consumer=team-a"));
        let models: Vec<String> = (0..NameCache::MAX + 10).map(|i| format!("m{i}")).collect();
        for model in &models {
            cache.get(&labels(model, ""));
            assert!(cache.by_labels.len() <= NameCache::MAX);
        }
    }
}
