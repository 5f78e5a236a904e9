//! The one parse of an AI request body that every stage shares.
//!
//! [`parse`] reads the body once, borrowing from it (no copy of the prompt is made), and returns
//! a small owned [`RequestInfo`]: model, streaming, output cap and the estimator's features over
//! exactly the text the provider will tokenize (message contents, system prompt, tool calls and
//! tool definitions; not image/audio payloads, ids or roles). Stages that change the body express
//! it as [`Splice`]s on the original bytes, applied once, so the body is never re-serialised.

use crate::error::Error;
use crate::estimate::Features;
use crate::route::ApiKind;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Tokens OpenAI adds per message (role and separators) and to prime the reply; applied to
/// every API as the best public approximation of chat templates.
const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_NAME: u64 = 1;
const REPLY_PRIMING_TOKENS: u64 = 3;
/// Longest model name kept from a request (longer names are not labels anyone wants).
pub const MAX_MODEL_LEN: usize = 128;
/// Most completions one request is taken to ask for (OpenAI's limit for `n`; a provider
/// refuses more, so counting more would only turn its 400 into a misleading 429).
pub const MAX_CHOICES: u64 = 128;

/// What the stages learn from a request body.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestInfo {
    /// `model` from the body (or, for Gemini/Bedrock, from the path: filled by the caller).
    pub model: Option<String>,
    pub stream: bool,
    /// `stream_options.include_usage` as the client sent it (OpenAI chat/completions).
    pub include_usage: Option<bool>,
    /// `max_tokens`, `max_completion_tokens`, `max_output_tokens`, `maxOutputTokens`, …; 0 for
    /// an API that generates nothing (embeddings).
    pub max_output_tokens: Option<u64>,
    /// Completions generated for the request, each up to `max_output_tokens`: OpenAI's `n`
    /// (and `best_of` on legacy completions, all of them generated and billed), Gemini's
    /// `candidateCount`; 1 when absent, clamped to 1..=[`MAX_CHOICES`].
    pub choices: u64,
    /// The answer leaves queued, before anything is generated, and carries no usage (the
    /// client polls for the result): a Responses API request with `background: true`, or a
    /// batch (Anthropic's Message Batches, Gemini's Batch Mode).
    pub background: bool,
    /// Model requests the call makes: 1, or the number of requests in a batch.
    pub requests: u64,
    /// A batch whose requests name different models (`model` is then `None`).
    pub mixed_models: bool,
    /// A batch's largest request: its messages and estimated prompt tokens (the totals above
    /// are the batch's).
    pub largest: Option<(u32, u64)>,
    /// Number of messages (or contents, or input items).
    pub messages: u32,
    /// Estimator features of the prompt text.
    pub features: Features,
    /// Tokens added for message framing.
    pub framing_tokens: u64,
    /// Token ids sent directly (embeddings/completions accept arrays of ints).
    pub token_ids: u64,
}

impl RequestInfo {
    /// Estimated prompt tokens.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        self.features.estimate() + self.framing_tokens + self.token_ids
    }

    /// The messages and estimated prompt tokens of the largest model request the call makes
    /// (of a batch, its largest request; else the request itself), which per-request limits hold.
    pub fn largest_request(&self) -> (u32, u64) {
        self.largest.unwrap_or_else(|| (self.messages, self.estimated_prompt_tokens()))
    }

    /// The most output tokens the request can generate: its output cap (or `default` when it
    /// sets none) for each completion it asks for.
    pub fn output_cap(&self, default: u64) -> u64 {
        self.max_output_tokens.unwrap_or(default).saturating_mul(self.choices)
    }
}

/// The completions a request asks for, from the fields that set it (absent: 1).
fn choices(counts: &[Option<u64>]) -> u64 {
    counts.iter().flatten().copied().max().unwrap_or(1).clamp(1, MAX_CHOICES)
}

/// A replacement of `remove` bytes at `at` by `insert`, on the original body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    pub at: usize,
    pub remove: usize,
    pub insert: Vec<u8>,
}

/// Applies non-overlapping splices (any order) to `body`.
pub fn apply_splices(body: &[u8], splices: &mut [Splice]) -> Vec<u8> {
    splices.sort_by_key(|s| s.at);
    let extra: usize = splices.iter().map(|s| s.insert.len()).sum();
    let mut out = Vec::with_capacity(body.len() + extra);
    let mut cursor = 0;
    for splice in splices.iter() {
        let at = splice.at.clamp(cursor, body.len());
        out.extend_from_slice(body.get(cursor..at).unwrap_or(&[]));
        out.extend_from_slice(&splice.insert);
        cursor = (at + splice.remove).min(body.len());
    }
    out.extend_from_slice(body.get(cursor..).unwrap_or(&[]));
    out
}

/// The parse result: the information plus, when asked, the splice that makes a streaming OpenAI
/// request report usage.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub info: RequestInfo,
    /// Set when `stream` is true, the API supports `stream_options` and `include_usage` is not
    /// already `true`.
    pub include_usage_splice: Option<Splice>,
    /// Where the `model` string's characters are in the body (`at`, `len`, quotes excluded),
    /// when it was written without escapes: a rename is then a splice.
    pub model_span: Option<(usize, usize)>,
}

fn model_span(body: &[u8], model: &Option<Cow<'_, str>>) -> Option<(usize, usize)> {
    match model {
        Some(Cow::Borrowed(text)) => offset_in(body, text).map(|at| (at, text.len())),
        _ => None,
    }
}

/// Parses `body` as a request of `kind`. Errors are serde's messages (positions only, never
/// body content), fit for a metric reason and a log line.
pub fn parse(kind: ApiKind, body: &[u8]) -> Result<Parsed, serde_json::Error> {
    // serde's derived structs also accept a JSON array (fields by position); a request is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(de::Error::custom("request body is not a JSON object"));
    }
    let mut splice = None;
    let mut span = None;
    let info = match kind {
        ApiKind::OpenAiChat => {
            let v: ChatView<'_> = serde_json::from_slice(body)?;
            span = model_span(body, &v.model);
            let mut info = info_from_messages(v.model, v.stream, &v.messages);
            info.max_output_tokens = v.max_completion_tokens.or(v.max_tokens);
            info.choices = choices(&[v.n]);
            add_raw(&mut info.features, v.tools);
            add_raw(&mut info.features, v.functions);
            finish_stream_options(body, v.stream_options, &mut info, &mut splice)?;
            info
        }
        ApiKind::OpenAiCompletions => {
            let v: CompletionsView<'_> = serde_json::from_slice(body)?;
            span = model_span(body, &v.model);
            let mut info = base(v.model, v.stream);
            info.max_output_tokens = v.max_tokens;
            info.choices = choices(&[v.n, v.best_of]);
            add_text(&mut info, v.prompt);
            finish_stream_options(body, v.stream_options, &mut info, &mut splice)?;
            info
        }
        ApiKind::OpenAiEmbeddings => {
            let v: EmbeddingsView<'_> = serde_json::from_slice(body)?;
            span = model_span(body, &v.model);
            let mut info = base(v.model, None);
            // Generates no tokens: nothing to reserve for output.
            info.max_output_tokens = Some(0);
            add_text(&mut info, v.input);
            info
        }
        ApiKind::OpenAiImages => {
            let v: ImagesView<'_> = serde_json::from_slice(body)?;
            span = model_span(body, &v.model);
            let mut info = base(v.model, v.stream);
            // No output cap to read: each image reserves the configured default.
            info.choices = choices(&[v.n]);
            add_text(&mut info, v.prompt);
            info
        }
        ApiKind::OpenAiSpeech => {
            let v: SpeechView<'_> = serde_json::from_slice(body)?;
            span = model_span(body, &v.model);
            // Streamed only as SSE events; `audio` (the default) is the audio's bytes as made.
            let mut info = base(v.model, Some(v.stream_format.as_deref() == Some("sse")));
            // No output cap to read: the audio reserves the configured default.
            add_text(&mut info, v.instructions);
            add_text(&mut info, v.input);
            info
        }
        ApiKind::OpenAiDecisions => {
            let v: DecisionsView<'_> = serde_json::from_slice(body)?;
            span = model_span(body, &v.model);
            let mut info = base(v.model, Some(false));
            // Each question's instructions (and its choices and levels) are read with the input.
            add_text(&mut info, v.questions);
            add_text(&mut info, v.input);
            info.framing_tokens += REPLY_PRIMING_TOKENS;
            info
        }
        ApiKind::OpenAiResponses | ApiKind::OpenAiInputTokens | ApiKind::OpenAiCompact => {
            let v: ResponsesView<'_> = serde_json::from_slice(body)?;
            span = model_span(body, &v.model);
            // A count and a compaction answer at once, whatever `stream` says.
            let stream = if kind == ApiKind::OpenAiResponses { v.stream } else { Some(false) };
            let mut info = base(v.model, stream);
            let prewarm = v.prompt_cache_options.and_then(|o| o.prewarm) == Some(true);
            info.max_output_tokens = if prewarm { Some(0) } else { v.max_output_tokens };
            info.background = v.background == Some(true);
            add_text(&mut info, v.instructions);
            add_text(&mut info, v.input);
            add_raw(&mut info.features, v.tools);
            info.framing_tokens += REPLY_PRIMING_TOKENS;
            info
        }
        ApiKind::AnthropicMessages | ApiKind::AnthropicCountTokens => {
            let v: AnthropicView<'_> = serde_json::from_slice(body)?;
            span = model_span(body, &v.model);
            anthropic_info(v)
        }
        ApiKind::AnthropicBatch => {
            let v: BatchView<'_> = serde_json::from_slice(body)?;
            batch_info(v.requests.into_iter().filter_map(|item| item.params).map(anthropic_info))
        }
        ApiKind::GeminiBatch => {
            let v: GeminiBatchView<'_> = serde_json::from_slice(body)?;
            let inlined = v.batch.and_then(|b| b.input_config).and_then(|c| c.requests).map(|r| r.requests);
            batch_info(inlined.unwrap_or_default().into_iter().filter_map(|r| r.request).map(|r| gemini_info(r, false)))
        }
        ApiKind::GeminiGenerate { stream } => {
            let v: GeminiView<'_> = serde_json::from_slice(body)?;
            gemini_info(v, stream)
        }
        ApiKind::GeminiCountTokens => {
            let v: GeminiCountView<'_> = serde_json::from_slice(body)?;
            let mut info =
                v.generate_content_request.map_or_else(|| base(None, Some(false)), |r| gemini_info(r, false));
            if !v.contents.is_empty() {
                add_messages(&mut info, v.contents);
            }
            info.max_output_tokens = None;
            info
        }
        ApiKind::GeminiEmbed { .. } => {
            let v: GeminiEmbedView = serde_json::from_slice(body)?;
            let mut info = base(None, Some(false));
            info.max_output_tokens = Some(0);
            for one in v.content.into_iter().chain(v.requests.into_iter().filter_map(|r| r.content)) {
                info.messages += 1;
                add_text(&mut info, Some(one));
            }
            info
        }
        ApiKind::VertexEmbedPredict => {
            let v: VertexPredictView = serde_json::from_slice(body)?;
            let mut info = base(None, Some(false));
            info.max_output_tokens = Some(0);
            for instance in v.instances {
                info.messages += 1;
                add_text(&mut info, instance.content);
                add_text(&mut info, instance.title);
            }
            info
        }
        ApiKind::GooglePredict => {
            let v: GooglePredictView = serde_json::from_slice(body)?;
            let mut info = base(None, Some(false));
            info.max_output_tokens = Some(0);
            for instance in v.instances {
                info.messages += 1;
                add_text(&mut info, instance.prompt);
                add_text(&mut info, instance.text);
            }
            add_text(&mut info, v.parameters.and_then(|p| p.negative_prompt));
            info
        }
        ApiKind::GeminiCache => {
            let v: GeminiView<'_> = serde_json::from_slice(body)?;
            let mut info = gemini_info(v, false);
            info.max_output_tokens = Some(0);
            info
        }
        ApiKind::OpenAiConversation => {
            let v: ConversationView = serde_json::from_slice(body)?;
            let mut info = base(None, Some(false));
            info.max_output_tokens = Some(0);
            add_text(&mut info, v.items);
            info
        }
        ApiKind::OpenAiModels => return no_body(),
        ApiKind::OpenAiTranscription | ApiKind::OpenAiImageEdits => {
            return Err(de::Error::custom("a form body: see parse_form_prefix"))
        }
        ApiKind::BedrockConverse { stream } => {
            let v: BedrockView<'_> = serde_json::from_slice(body)?;
            let mut info = base(None, Some(stream));
            add_messages(&mut info, v.messages);
            add_text(&mut info, v.system);
            add_raw(&mut info.features, v.tool_config);
            info.max_output_tokens = v.inference_config.and_then(|c| c.max_tokens);
            info
        }
        ApiKind::BedrockInvoke { stream } => {
            let v: InvokeView = serde_json::from_slice(body)?;
            let mut info = base(None, Some(stream));
            if !v.messages.is_empty() {
                add_messages(&mut info, v.messages);
            }
            for text in [v.system, v.prompt, v.input_text, v.texts, v.message, v.chat_history] {
                add_text(&mut info, text);
            }
            info.max_output_tokens = v
                .max_tokens
                .or(v.max_gen_len)
                .or(v.max_completion_tokens)
                .or(v.titan_config.and_then(|c| c.max_token_count))
                .or(v.nova_config.and_then(|c| c.max_new_tokens.or(c.max_tokens)));
            info
        }
        ApiKind::BedrockCountTokens => {
            let v: BedrockCountView<'_> = serde_json::from_slice(body)?;
            let mut info = base(None, Some(false));
            if let Some(v) = v.input.converse {
                add_messages(&mut info, v.messages);
                add_text(&mut info, v.system);
                add_raw(&mut info.features, v.tool_config);
            }
            info
        }
    };
    Ok(Parsed { info, include_usage_splice: splice, model_span: span })
}

/// Why a body [`parse`] refused is not a request, when it is JSON: the field at fault and the
/// type it must have (`invalid 'max_tokens': expected a non-negative integer`), as the client's
/// 400. `None` when the body is not JSON at all (the caller says so instead).
///
/// Runs only after a failed parse, so a good body pays nothing for it. It finds the field by
/// parsing probes — the path so far holding some of an object's members (or an array's
/// elements), halved until one alone fails (a few parses' worth: 5× the parse natively for a
/// 690 KB body whose 10,000th message is wrong) — and descends into that one: every field of the
/// request views is optional, so only a wrong one fails alone. The same [`parse`] decides, so
/// the explanation cannot disagree with it. The message names fields and JSON types only,
/// never a value from the body.
pub fn explain(kind: ApiKind, body: &[u8]) -> Option<Error> {
    let root: &RawValue = serde_json::from_slice(body).ok()?;
    if !root.get().starts_with('{') {
        let message = "the request body must be a JSON object".to_string();
        return Some(Error::InvalidRequest { param: None, message });
    }
    let (mut prefix, mut suffix, mut path) = (String::new(), String::new(), String::new());
    let mut at = root;
    // Every field the views type is within six levels (`requests[0].params.messages[0].name`).
    for _ in 0..6 {
        let Some((step, open, value, close)) = failing_child(kind, &prefix, at, &suffix) else { break };
        path.push_str(&step);
        prefix.push_str(&open);
        suffix.insert_str(0, close);
        at = value;
    }
    let probe = format!("{prefix}{}{suffix}", at.get());
    let text = parse(kind, probe.as_bytes()).err()?.to_string();
    let (param, message) = if text.starts_with("prompt nested too deeply") {
        // Inside a prompt the keys are the client's text: no path.
        (None, format!("a prompt value is nested more than {MAX_WALK_DEPTH} levels deep"))
    } else if text.starts_with("duplicate field") {
        (None, "an object has the same member twice".to_string())
    } else {
        let what = expected(&text).map_or("wrong type or value".to_string(), |what| format!("expected {what}"));
        ((!path.is_empty()).then_some(path), what)
    };
    let message = match &param {
        Some(param) => format!("invalid '{param}': {message}"),
        None => format!("invalid request: {message}"),
    };
    Some(Error::InvalidRequest { param, message })
}

/// The member (with a plain name) or element of `value` that fails [`parse`] alone, at the
/// place `prefix`/`suffix` put it: its path step, the probe's new opening and closing, and it.
/// The probe with all of them fails; halving the set finds the one in O(log n) parses (an
/// object with a hundred thousand members costs a few whole parses, not a hundred thousand).
fn failing_child<'a>(
    kind: ApiKind,
    prefix: &str,
    value: &'a RawValue,
    suffix: &str,
) -> Option<(String, String, &'a RawValue, &'static str)> {
    let object = value.get().starts_with('{');
    let (open, close) = if object { ("{", "}") } else { ("[", "]") };
    let fails = |children: &[Child<'a>]| {
        let inner: Vec<&str> = children.iter().map(|c| c.text.as_ref()).collect();
        parse(kind, format!("{prefix}{open}{}{close}{suffix}", inner.join(",")).as_bytes()).is_err()
    };
    // A container that fails even empty is itself what is wrong (`"name": ["x"]`).
    if fails(&[]) {
        return None;
    }
    let children: Vec<Child<'a>> = if object {
        let members: Members<'a> = serde_json::from_str(value.get()).ok()?;
        let member = |(key, child): (Cow<'a, str>, &'a RawValue)| {
            let text = format!("{}:{}", serde_json::to_string(key.as_ref()).ok()?, child.get());
            Some(Child { key: Some(key), text: Cow::Owned(text), value: child })
        };
        members.0.into_iter().map(member).collect::<Option<_>>()?
    } else {
        let elements: Vec<&'a RawValue> = serde_json::from_str(value.get()).ok()?;
        elements.into_iter().map(|child| Child { key: None, text: Cow::Borrowed(child.get()), value: child }).collect()
    };
    let (mut low, mut high) = (0, children.len());
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if fails(children.get(low..middle)?) {
            high = middle;
        } else if fails(children.get(middle..high)?) {
            low = middle;
        } else {
            return None; // only together (a member given twice): reported here
        }
    }
    let Child { key, value: child, .. } = children.get(low)?;
    match key {
        None => Some((format!("[{low}]"), "[".to_string(), child, "]")),
        // A name that needs escaping is no field of ours.
        Some(key)
            if !key.is_empty() && key.len() <= 64 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            let step = if prefix.is_empty() { key.to_string() } else { format!(".{key}") };
            Some((step, format!("{{\"{key}\":"), child, "}"))
        }
        Some(_) => None,
    }
}

/// A member or element as a probe holds it: its name (members), its JSON text, its value.
struct Child<'a> {
    key: Option<Cow<'a, str>>,
    text: Cow<'a, str>,
    value: &'a RawValue,
}

/// An object's members in order, values unparsed.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// The JSON type serde expected, in the words of an API reference (serde's own words for our
/// views are Rust's: `u64`, `struct MessageView`).
fn expected(serde_message: &str) -> Option<&'static str> {
    let (_, rest) = serde_message.split_once(", expected ")?;
    let what = rest.split(" at line ").next().unwrap_or(rest);
    Some(match what {
        "u64" => "a non-negative integer",
        "a boolean" => "a boolean",
        "a string" | "a borrowed string" => "a string",
        "a sequence" => "an array",
        _ if what.starts_with("struct ") => "an object",
        _ => return None,
    })
}

/// A request without a body (`GET /v1/models`): nothing to parse.
/// How much of a form is held to read its leading text fields (the file's part begins before
/// this in any form a client builds: fields are small).
pub const FORM_PREFIX_BYTES: usize = 64 * 1024;

/// What the leading part of a `multipart/form-data` body tells.
#[derive(Debug)]
pub enum FormPrefix {
    /// More bytes are needed: no file part has begun and the prefix is short.
    NeedMore,
    /// The text fields before the first file part (or all of them).
    Ready(Box<Parsed>),
    /// Not a form with a usable boundary.
    NotAForm,
}

/// The `boundary` of a `multipart/form-data` content type (quoted or not), per RFC 2046: 1 to 70
/// characters.
pub fn form_boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let value = params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim().eq_ignore_ascii_case("boundary").then_some(value.trim())
    })?;
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    (1..=70).contains(&value.len()).then_some(value)
}

/// Reads the text fields of a form (an audio transcription's, an image edit's) that come before
/// its first file part: `model`, `stream`, `prompt`, `n`. `complete` says the prefix is the whole
/// body. Never holds the file: a part with a `filename` ends the reading, as does a prefix of
/// [`FORM_PREFIX_BYTES`].
pub fn parse_form_prefix(boundary: &str, prefix: &[u8], complete: bool) -> FormPrefix {
    use memchr::memmem;
    // Each part ends at CRLF and the next delimiter; the first delimiter has no CRLF before it.
    let close = format!("\r\n--{boundary}");
    let close = close.as_bytes();
    let delimiter = close.get(2..).unwrap_or_default();
    let Some(first) = memmem::find(prefix, delimiter) else {
        return if complete || prefix.len() >= FORM_PREFIX_BYTES { FormPrefix::NotAForm } else { FormPrefix::NeedMore };
    };
    let mut info = base(None, None);
    let mut at = first + delimiter.len();
    let ended = loop {
        let rest = prefix.get(at..).unwrap_or_default();
        if rest.starts_with(b"--") {
            break true; // the closing delimiter: no file at all
        }
        let Some(head_end) = memmem::find(rest, b"\r\n\r\n") else { break false };
        let head = String::from_utf8_lossy(rest.get(..head_end).unwrap_or_default());
        let (name, file) = disposition(&head);
        if file {
            break true; // the file: the fields before it are all there is to read
        }
        let value_start = head_end + 4;
        let Some(value_len) = rest.get(value_start..).and_then(|v| memmem::find(v, close)) else { break false };
        if let Some(name) = name.as_deref() {
            form_field_info(&mut info, name, rest.get(value_start..value_start + value_len).unwrap_or_default());
        }
        at += value_start + value_len + close.len();
    };
    if !ended && !complete && prefix.len() < FORM_PREFIX_BYTES {
        return FormPrefix::NeedMore;
    }
    FormPrefix::Ready(Box::new(Parsed { info, include_usage_splice: None, model_span: None }))
}

/// What a form's text field tells: `model`, `stream`, `n`, and the `prompt` (its estimate) — the
/// first of each, wherever it is in the form (the fields before the file are read by
/// [`parse_form_prefix`], those after it as the form passes).
pub fn form_field_info(info: &mut RequestInfo, name: &str, value: &[u8]) {
    let value = String::from_utf8_lossy(value);
    match name {
        "model" if info.model.is_none() => info.model = model_name(Some(Cow::Borrowed(value.trim()))),
        "stream" if value.trim().eq_ignore_ascii_case("true") => info.stream = true,
        "n" if info.choices == 1 => info.choices = choices(&[value.trim().parse().ok()]),
        "prompt" if info.messages == 0 => {
            info.features.add_str(&value);
            info.messages = 1;
        }
        _ => {}
    }
}

/// `name` and whether the part is a file, from a part's headers.
pub(crate) fn disposition(head: &str) -> (Option<String>, bool) {
    let Some(line) = head.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition:")) else {
        return (None, false);
    };
    let mut name = None;
    let mut file = false;
    for param in line.split(';').skip(1) {
        let Some((key, value)) = param.split_once('=') else { continue };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "name" => name = Some(value.to_string()),
            "filename" | "filename*" => file = true,
            _ => {}
        }
    }
    (name, file)
}

fn no_body() -> Result<Parsed, serde_json::Error> {
    Err(de::Error::custom("this API takes no request body"))
}

/// A model name worth keeping: not empty, not absurdly long.
fn model_name(model: Option<Cow<'_, str>>) -> Option<String> {
    model.filter(|m| !m.is_empty() && m.len() <= MAX_MODEL_LEN).map(Cow::into_owned)
}

fn base(model: Option<Cow<'_, str>>, stream: Option<bool>) -> RequestInfo {
    RequestInfo {
        model: model_name(model),
        stream: stream.unwrap_or(false),
        include_usage: None,
        max_output_tokens: None,
        choices: 1,
        background: false,
        requests: 1,
        mixed_models: false,
        largest: None,
        messages: 0,
        features: Features::default(),
        framing_tokens: 0,
        token_ids: 0,
    }
}

fn info_from_messages(model: Option<Cow<'_, str>>, stream: Option<bool>, messages: &[MessageView<'_>]) -> RequestInfo {
    let mut info = base(model, stream);
    for message in messages {
        info.messages += 1;
        info.framing_tokens += TOKENS_PER_MESSAGE;
        if let Some(name) = &message.name {
            info.framing_tokens += TOKENS_PER_NAME;
            info.features.add_str(name);
        }
        for text in [&message.content, &message.tool_calls].into_iter().flatten() {
            info.features.merge(&text.features);
            info.token_ids += text.token_ids;
        }
    }
    info.framing_tokens += REPLY_PRIMING_TOKENS;
    info
}

fn gemini_info(v: GeminiView<'_>, stream: bool) -> RequestInfo {
    let mut info = base(None, Some(stream));
    add_messages(&mut info, v.contents);
    add_text(&mut info, v.system_instruction);
    add_raw(&mut info.features, v.tools);
    if let Some(c) = v.generation_config {
        info.max_output_tokens = c.max_output_tokens;
        info.choices = choices(&[c.candidate_count]);
    }
    info
}

fn anthropic_info(v: AnthropicView<'_>) -> RequestInfo {
    let mut info = info_from_messages(v.model, v.stream, &v.messages);
    info.max_output_tokens = v.max_tokens;
    add_text(&mut info, v.system);
    add_raw(&mut info.features, v.tools);
    info
}

/// A batch is the sum of its requests: their prompts, their output caps (unknown if one has
/// none), their model when they all name the same one.
fn batch_info(requests: impl Iterator<Item = RequestInfo>) -> RequestInfo {
    let mut info = base(None, Some(false));
    info.background = true;
    info.requests = 0;
    info.max_output_tokens = Some(0);
    for one in requests {
        let (messages, tokens) = info.largest.unwrap_or_default();
        info.largest = Some((messages.max(one.messages), tokens.max(one.estimated_prompt_tokens())));
        info.requests += 1;
        info.messages = info.messages.saturating_add(one.messages);
        info.features.merge(&one.features);
        info.framing_tokens = info.framing_tokens.saturating_add(one.framing_tokens);
        info.token_ids = info.token_ids.saturating_add(one.token_ids);
        let cap = one.max_output_tokens.map(|m| m.saturating_mul(one.choices));
        info.max_output_tokens = info.max_output_tokens.zip(cap).map(|(a, b)| a.saturating_add(b));
        match (&info.model, one.model) {
            (_, None) => {}
            (None, Some(model)) if !info.mixed_models => info.model = Some(model),
            (Some(first), Some(model)) if *first != model => {
                info.model = None;
                info.mixed_models = true;
            }
            _ => {}
        }
    }
    info.requests = info.requests.max(1);
    info
}

/// Messages walked as a whole (Gemini `contents`, Bedrock `messages`), with chat framing.
fn add_messages(info: &mut RequestInfo, messages: Vec<PromptText>) {
    for message in messages {
        info.messages += 1;
        info.framing_tokens += TOKENS_PER_MESSAGE;
        add_text(info, Some(message));
    }
    info.framing_tokens += REPLY_PRIMING_TOKENS;
}

fn add_text(info: &mut RequestInfo, text: Option<PromptText>) {
    if let Some(text) = text {
        info.features.merge(&text.features);
        info.token_ids += text.token_ids;
    }
}

fn add_raw(features: &mut Features, raw: Option<&RawValue>) {
    if let Some(raw) = raw {
        features.add_str(raw.get());
    }
}

/// Fills `include_usage` and, for streaming requests that lack it, plans the splice.
fn finish_stream_options(
    body: &[u8],
    stream_options: Option<&RawValue>,
    info: &mut RequestInfo,
    splice: &mut Option<Splice>,
) -> Result<(), serde_json::Error> {
    let options = match stream_options.map(|raw| (raw, raw.get().trim_start())) {
        Some((raw, json)) if json.starts_with('{') => {
            let view: StreamOptionsView<'_> = serde_json::from_str(raw.get())?;
            Some((raw, view))
        }
        _ => None,
    };
    info.include_usage = options.as_ref().and_then(|(_, v)| v.include_usage.and_then(|r| r.get().parse::<bool>().ok()));
    if !info.stream || info.include_usage == Some(true) {
        return Ok(());
    }
    *splice = match (stream_options, options) {
        // No stream_options at all: add the member right after the body's opening brace.
        (None, _) => body.iter().position(|b| *b == b'{').map(|brace| Splice {
            at: brace + 1,
            remove: 0,
            insert: br#""stream_options":{"include_usage":true},"#.to_vec(),
        }),
        // stream_options is an object: set its include_usage (replacing false/null if present).
        (Some(_), Some((raw, view))) => match view.include_usage {
            Some(value) => offset_in(body, value.get()).map(|at| Splice {
                at,
                remove: value.get().len(),
                insert: b"true".to_vec(),
            }),
            None => offset_in(body, raw.get()).map(|at| {
                let empty = raw.get().trim_start().trim_start_matches('{').trim_start().starts_with('}');
                let insert = if empty { &br#""include_usage":true"#[..] } else { &br#""include_usage":true,"#[..] };
                let brace = raw.get().find('{').unwrap_or(0);
                Splice { at: at + brace + 1, remove: 0, insert: insert.to_vec() }
            }),
        },
        // stream_options: null → an object.
        (Some(raw), None) if raw.get().trim() == "null" => offset_in(body, raw.get()).map(|at| Splice {
            at,
            remove: raw.get().len(),
            insert: br#"{"include_usage":true}"#.to_vec(),
        }),
        // Some other type: the provider will reject the request; leave it as sent.
        (Some(_), None) => None,
    };
    Ok(())
}

/// Offset of `part` inside `body`, when `part` was borrowed from it.
fn offset_in(body: &[u8], part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    (start + part.len() <= body.len()).then_some(start)
}

// ---- borrowed views ------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChatView<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default, deserialize_with = "raw_or_null")]
    stream_options: Option<&'a RawValue>,
    #[serde(default)]
    messages: Vec<MessageView<'a>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    functions: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    content: Option<PromptText>,
    #[serde(default)]
    tool_calls: Option<PromptText>,
}

#[derive(Deserialize)]
struct CompletionsView<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default, deserialize_with = "raw_or_null")]
    stream_options: Option<&'a RawValue>,
    #[serde(default)]
    prompt: Option<PromptText>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    best_of: Option<u64>,
}

#[derive(Deserialize)]
struct EmbeddingsView<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<PromptText>,
}

/// `POST /v1/images/generations`.
#[derive(Deserialize)]
struct ImagesView<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    prompt: Option<PromptText>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
}

/// `POST /v1/audio/speech`.
#[derive(Deserialize)]
struct SpeechView<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<PromptText>,
    #[serde(default)]
    instructions: Option<PromptText>,
    #[serde(borrow, default)]
    stream_format: Option<Cow<'a, str>>,
}

/// `POST /v1/decisions`.
#[derive(Deserialize)]
struct DecisionsView<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<PromptText>,
    #[serde(default)]
    questions: Option<PromptText>,
}

#[derive(Deserialize)]
struct ResponsesView<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    input: Option<PromptText>,
    #[serde(default)]
    instructions: Option<PromptText>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    background: Option<bool>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(default)]
    prompt_cache_options: Option<PromptCacheOptionsView>,
}

/// `prompt_cache_options`: `prewarm` writes the prompt to the cache and generates nothing.
#[derive(Deserialize)]
struct PromptCacheOptionsView {
    #[serde(default)]
    prewarm: Option<bool>,
}

/// OpenAI's Conversations API: `items` to store (Responses' input items).
#[derive(Deserialize)]
struct ConversationView {
    #[serde(default)]
    items: Option<PromptText>,
}

#[derive(Deserialize)]
struct BatchView<'a> {
    #[serde(borrow, default)]
    requests: Vec<BatchItem<'a>>,
}

#[derive(Deserialize)]
struct BatchItem<'a> {
    #[serde(borrow, default)]
    params: Option<AnthropicView<'a>>,
}

#[derive(Deserialize)]
struct AnthropicView<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    messages: Vec<MessageView<'a>>,
    #[serde(default)]
    system: Option<PromptText>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiView<'a> {
    #[serde(default)]
    contents: Vec<PromptText>,
    #[serde(default, alias = "system_instruction")]
    system_instruction: Option<PromptText>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(default, alias = "generation_config")]
    generation_config: Option<GeminiGenerationConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiCountView<'a> {
    #[serde(default)]
    contents: Vec<PromptText>,
    #[serde(borrow, default, alias = "generate_content_request")]
    generate_content_request: Option<GeminiView<'a>>,
}

/// An InvokeModel body, whatever the model family: Anthropic's and Nova's `messages` and
/// `system`, Llama's and Mistral's `prompt`, Titan's `inputText`, Cohere's `message`,
/// `chat_history` and `texts`; the output cap as Claude, Mistral, Cohere (`max_tokens`), Llama
/// (`max_gen_len`), OpenAI's models (`max_completion_tokens`), Titan
/// (`textGenerationConfig.maxTokenCount`) and Nova (`inferenceConfig.max_new_tokens` or `maxTokens`) name it.
#[derive(Deserialize)]
struct InvokeView {
    #[serde(default)]
    messages: Vec<PromptText>,
    #[serde(default)]
    system: Option<PromptText>,
    #[serde(default)]
    prompt: Option<PromptText>,
    #[serde(default, rename = "inputText")]
    input_text: Option<PromptText>,
    #[serde(default)]
    texts: Option<PromptText>,
    #[serde(default)]
    message: Option<PromptText>,
    #[serde(default)]
    chat_history: Option<PromptText>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_gen_len: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default, rename = "textGenerationConfig")]
    titan_config: Option<TitanConfig>,
    #[serde(default, rename = "inferenceConfig")]
    nova_config: Option<NovaConfig>,
}

#[derive(Deserialize)]
struct TitanConfig {
    #[serde(default, rename = "maxTokenCount")]
    max_token_count: Option<u64>,
}

#[derive(Deserialize)]
struct NovaConfig {
    #[serde(default)]
    max_new_tokens: Option<u64>,
    /// Nova's user guide names it so too (`"inferenceConfig": {"maxTokens": 500}`).
    #[serde(default, rename = "maxTokens")]
    max_tokens: Option<u64>,
}

/// `batchGenerateContent`: `{"batch": {"inputConfig": {"requests": {"requests": [{"request": …}]}}}}`
/// (requests inlined; a batch naming a file has none to read).
#[derive(Deserialize)]
struct GeminiBatchView<'a> {
    #[serde(borrow, default)]
    batch: Option<GeminiBatch<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiBatch<'a> {
    #[serde(borrow, default, alias = "input_config")]
    input_config: Option<GeminiInputConfig<'a>>,
}

#[derive(Deserialize)]
struct GeminiInputConfig<'a> {
    #[serde(borrow, default)]
    requests: Option<GeminiInlinedRequests<'a>>,
}

#[derive(Deserialize)]
struct GeminiInlinedRequests<'a> {
    #[serde(borrow, default)]
    requests: Vec<GeminiInlinedRequest<'a>>,
}

#[derive(Deserialize)]
struct GeminiInlinedRequest<'a> {
    #[serde(borrow, default)]
    request: Option<GeminiView<'a>>,
}

/// `embedContent` (`content`) and `batchEmbedContents` (`requests[].content`).
#[derive(Deserialize)]
struct GeminiEmbedView {
    #[serde(default)]
    content: Option<PromptText>,
    #[serde(default)]
    requests: Vec<GeminiEmbedItem>,
}

#[derive(Deserialize)]
struct GeminiEmbedItem {
    #[serde(default)]
    content: Option<PromptText>,
}

/// Vertex AI's `:predict` for a text embedding model: `instances[]` of `content` (and `title`).
#[derive(Deserialize)]
struct VertexPredictView {
    #[serde(default)]
    instances: Vec<VertexInstance>,
}

#[derive(Deserialize)]
struct VertexInstance {
    #[serde(default)]
    content: Option<PromptText>,
    #[serde(default)]
    title: Option<PromptText>,
}

/// Any other Google model's `:predict` / `:predictLongRunning` (Imagen, Veo, the multimodal
/// embeddings): `instances[]` of `prompt` (or `text`), and `parameters.negativePrompt`.
#[derive(Deserialize)]
struct GooglePredictView {
    #[serde(default)]
    instances: Vec<GooglePredictInstance>,
    #[serde(default)]
    parameters: Option<GooglePredictParameters>,
}

#[derive(Deserialize)]
struct GooglePredictInstance {
    #[serde(default)]
    prompt: Option<PromptText>,
    #[serde(default)]
    text: Option<PromptText>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GooglePredictParameters {
    #[serde(default)]
    negative_prompt: Option<PromptText>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiGenerationConfig {
    #[serde(default, alias = "max_output_tokens")]
    max_output_tokens: Option<u64>,
    #[serde(default, alias = "candidate_count")]
    candidate_count: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockView<'a> {
    #[serde(default)]
    messages: Vec<PromptText>,
    #[serde(default)]
    system: Option<PromptText>,
    #[serde(borrow, default)]
    tool_config: Option<&'a RawValue>,
    #[serde(default)]
    inference_config: Option<BedrockInferenceConfig>,
}

/// Bedrock's CountTokens: `{"input": {"converse": {…}}}` (or `invokeModel`, a raw body: not read).
#[derive(Deserialize)]
struct BedrockCountView<'a> {
    #[serde(borrow)]
    input: BedrockCountInput<'a>,
}

#[derive(Deserialize)]
struct BedrockCountInput<'a> {
    #[serde(borrow, default)]
    converse: Option<BedrockView<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockInferenceConfig {
    #[serde(default)]
    max_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct StreamOptionsView<'a> {
    #[serde(borrow, default, deserialize_with = "raw_or_null")]
    include_usage: Option<&'a RawValue>,
}

/// `Some(raw)` for any present value, `null` included (plain `Option` maps `null` to `None`,
/// which would make an explicit `null` look absent and a splice duplicate the key).
fn raw_or_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(deserializer).map(Some)
}

/// Any JSON value walked for the text a provider tokenizes: every string counts, except the
/// values of keys that hold identifiers, roles, media or signatures; integers in arrays are
/// token ids. Nothing is copied: only estimator features are kept.
#[derive(Debug, Default)]
struct PromptText {
    features: Features,
    token_ids: u64,
}

/// Keys whose string values are not tokenized as prompt text.
const SKIP_KEYS: &[&str] = &[
    "type",
    "role",
    "id",
    "tool_use_id",
    "tool_call_id",
    "call_id",
    "url",
    "data",
    "media_type",
    "mime_type",
    "mimeType",
    "detail",
    "cache_control",
    "signature",
    "thoughtSignature",
    "thought_signature",
    "format",
    "file_id",
    "image_url",
    "inlineData",
    "inline_data",
    "fileData",
    "file_data",
    "fileUri",
    "file_uri",
    "bytes",
    "source",
];

impl<'de> Deserialize<'de> for PromptText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut text = PromptText::default();
        deserializer.deserialize_any(Walk { text: &mut text, depth: 0 })?;
        Ok(text)
    }
}

/// Nesting bound of the walk (serde_json has its own recursion limit of 128 as well).
const MAX_WALK_DEPTH: u32 = 64;

struct Walk<'t> {
    text: &'t mut PromptText,
    depth: u32,
}

impl<'de> de::DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.text.features.add_str(v);
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.text.token_ids += 1;
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.text.token_ids += 1;
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_WALK_DEPTH {
            return Err(de::Error::custom("prompt nested too deeply"));
        }
        while seq.next_element_seed(Walk { text: &mut *self.text, depth: self.depth + 1 })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= MAX_WALK_DEPTH {
            return Err(de::Error::custom("prompt nested too deeply"));
        }
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if SKIP_KEYS.contains(&key.as_ref()) {
                map.next_value::<IgnoredAny>()?;
            } else {
                map.next_value_seed(Walk { text: &mut *self.text, depth: self.depth + 1 })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimate::estimate_tokens;

    fn parse_ok(kind: ApiKind, body: &str) -> Parsed {
        parse(kind, body.as_bytes()).unwrap()
    }

    fn spliced(body: &str) -> Option<String> {
        let mut parsed = parse_ok(ApiKind::OpenAiChat, body);
        parsed.include_usage_splice.take().map(|s| String::from_utf8(apply_splices(body.as_bytes(), &mut [s])).unwrap())
    }

    fn form(fields: &[(&str, &str)], file: Option<usize>) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend(
                format!("--b0und\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
            );
        }
        if let Some(size) = file {
            body.extend(b"--b0und\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n");
            body.extend(b"Content-Type: audio/wav\r\n\r\n");
            body.extend((0..size).map(|i| (i % 251) as u8));
            body.extend(b"\r\n");
        }
        body.extend(b"--b0und--\r\n");
        body
    }

    fn ready(prefix: FormPrefix) -> RequestInfo {
        match prefix {
            FormPrefix::Ready(parsed) => parsed.info,
            other => panic!("not ready: {other:?}"),
        }
    }

    #[test]
    fn a_forms_leading_fields_are_read_and_its_file_never_held() {
        let fields =
            [("model", "gpt-transcribe"), ("language", "pt"), ("prompt", "Tollgate, Envoy"), ("stream", "true")];
        let body = form(&fields, Some(100_000));
        let file_at = body.windows(8).position(|w| w == b"filename").unwrap();
        let head_end = file_at + body[file_at..].windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let whole = ready(parse_form_prefix("b0und", &body, true));
        assert_eq!((whole.model.as_deref(), whole.stream, whole.messages), (Some("gpt-transcribe"), true, 1));
        let mut prompt = Features::default();
        prompt.add_str("Tollgate, Envoy");
        assert_eq!(whole.features.estimate(), prompt.estimate(), "only the prompt is text");
        // Cut anywhere: more is asked for until the file's part has begun, and then the same is read.
        for cut in 0..=head_end + 10 {
            match parse_form_prefix("b0und", &body[..cut], false) {
                FormPrefix::NeedMore => assert!(cut < head_end, "{cut}: the file has begun"),
                FormPrefix::Ready(parsed) => {
                    assert!(cut >= head_end - 4, "{cut}: ready too early");
                    assert_eq!(parsed.info.model, whole.model, "{cut}");
                    assert_eq!(
                        (parsed.info.stream, parsed.info.features.estimate()),
                        (true, whole.features.estimate())
                    );
                }
                FormPrefix::NotAForm => panic!("{cut}"),
            }
        }
        // A file first (curl -F file=@a.wav -F model=…): the fields after it are not read.
        let mut late = form(&[], Some(10));
        late.splice(late.len() - 11.., form(&fields[..1], None));
        let info = ready(parse_form_prefix("b0und", &late, true));
        assert_eq!((info.model, info.stream), (None, false));
        // An image edit's `n`: each image reserves its output.
        let edit = ready(parse_form_prefix("b0und", &form(&[("prompt", "a boat"), ("n", "3")], Some(10)), false));
        assert_eq!((edit.choices, edit.output_cap(100)), (3, 300));
        // No file at all, whole: every field.
        assert_eq!(
            ready(parse_form_prefix("b0und", &form(&fields[..1], None), true)).model.as_deref(),
            Some("gpt-transcribe")
        );
        // A field that never ends within the bound is given up on, not waited for.
        let endless = form(&[("model", "gpt-transcribe"), ("prompt", &"x".repeat(FORM_PREFIX_BYTES))], None);
        let info = ready(parse_form_prefix("b0und", &endless[..FORM_PREFIX_BYTES], false));
        assert_eq!(info.model.as_deref(), Some("gpt-transcribe"));
        // Not this boundary: not a form, once whole or long enough to say.
        assert!(matches!(parse_form_prefix("other", &body, true), FormPrefix::NotAForm));
        assert!(matches!(parse_form_prefix("other", &body[..100], false), FormPrefix::NeedMore));
        assert!(matches!(parse_form_prefix("other", &body[..FORM_PREFIX_BYTES], false), FormPrefix::NotAForm));
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        assert_eq!(form_boundary("multipart/form-data; boundary=abc123"), Some("abc123"));
        assert_eq!(form_boundary("Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b:c\""), Some("a b:c"));
        assert_eq!(form_boundary("multipart/form-data"), None);
        assert_eq!(form_boundary("multipart/mixed; boundary=abc"), None);
        assert_eq!(form_boundary("application/json"), None);
        assert_eq!(form_boundary("multipart/form-data; boundary="), None);
        assert_eq!(form_boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))), None);
    }

    #[test]
    fn chat_request_fields_and_estimate() {
        let body = r#"{"model":"gpt-4o","stream":true,"max_tokens":64,"messages":[
            {"role":"system","content":"You are terse."},
            {"role":"user","name":"ana","content":[{"type":"text","text":"Olá, tudo bem?"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
                "function":{"name":"get_weather","arguments":"{\"city\":\"Recife\"}"}}]}]}"#;
        let info = parse_ok(ApiKind::OpenAiChat, body).info;
        assert_eq!(info.model.as_deref(), Some("gpt-4o"));
        assert!(info.stream);
        assert_eq!(info.max_output_tokens, Some(64));
        assert_eq!(info.messages, 3);
        // Text only: the image payload, ids and types are not prompt text.
        let text = estimate_tokens("You are terse.")
            + estimate_tokens("ana")
            + estimate_tokens("Olá, tudo bem?")
            + estimate_tokens("get_weather")
            + estimate_tokens("{\"city\":\"Recife\"}");
        let estimate = info.estimated_prompt_tokens();
        assert!(estimate.abs_diff(text + 3 * 3 + 1 + 3) <= 2, "{estimate} vs {text}");
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let info =
            parse_ok(ApiKind::OpenAiChat, r#"{"model":"o3","messages":[],"max_tokens":5,"max_completion_tokens":9}"#)
                .info;
        assert_eq!(info.max_output_tokens, Some(9));
    }

    #[test]
    fn include_usage_is_added_when_absent() {
        let body = r#"  {"model":"m","stream":true,"messages":[]}"#;
        let out = spliced(body).unwrap();
        assert_eq!(out, r#"  {"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}"#);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn include_usage_is_set_inside_existing_options() {
        let out = spliced(r#"{"stream":true,"stream_options":{"include_obfuscation":false},"messages":[]}"#).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["stream_options"], serde_json::json!({"include_usage":true,"include_obfuscation":false}));
        let out = spliced(r#"{"stream":true,"stream_options":{ },"messages":[]}"#).unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["stream_options"]["include_usage"], true);
        let out = spliced(r#"{"stream":true,"stream_options":{"include_usage":false},"messages":[]}"#).unwrap();
        assert_eq!(out, r#"{"stream":true,"stream_options":{"include_usage":true},"messages":[]}"#);
        let out = spliced(r#"{"stream":true,"stream_options":null,"messages":[]}"#).unwrap();
        assert_eq!(out, r#"{"stream":true,"stream_options":{"include_usage":true},"messages":[]}"#);
    }

    /// Found by the fuzzer: invalid UTF-8 inside a string the parse skips. The parse may accept
    /// it (serde skips ignored strings without validating them); the splice still lands where
    /// it should and leaves every other byte as sent.
    #[test]
    fn invalid_utf8_in_a_skipped_string_is_forwarded_as_sent() {
        let body = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/fuzz/request_parse-invalid-utf8.json"))
            .unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err(), "not valid JSON");
        if let Ok(parsed) = parse(ApiKind::OpenAiChat, &body) {
            let splice = parsed.include_usage_splice.clone().unwrap();
            let out = apply_splices(&body, &mut [splice.clone()]);
            assert_eq!(out.len(), body.len() + splice.insert.len() - splice.remove);
            assert!(out.windows(b"include_usage".len()).any(|w| w == b"include_usage"));
        }
    }

    #[test]
    fn no_splice_when_not_streaming_or_already_asked() {
        assert_eq!(spliced(r#"{"messages":[]}"#), None);
        assert_eq!(spliced(r#"{"stream":false,"messages":[]}"#), None);
        let parsed =
            parse_ok(ApiKind::OpenAiChat, r#"{"stream":true,"stream_options":{"include_usage":true},"messages":[]}"#);
        assert_eq!(parsed.include_usage_splice, None);
        assert_eq!(parsed.info.include_usage, Some(true));
        assert_eq!(spliced(r#"{"stream":true,"stream_options":"weird","messages":[]}"#), None);
    }

    #[test]
    fn anthropic_system_blocks_and_tool_results_count() {
        let body = r#"{"model":"claude-sonnet-4","max_tokens":1024,"stream":true,
            "system":[{"type":"text","text":"Be brief.","cache_control":{"type":"ephemeral"}}],
            "messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"22 degrees"},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo"}}]}]}"#;
        let info = parse_ok(ApiKind::AnthropicMessages, body).info;
        assert_eq!(
            (info.model.as_deref(), info.stream, info.max_output_tokens),
            (Some("claude-sonnet-4"), true, Some(1024))
        );
        let text = estimate_tokens("Be brief.") + estimate_tokens("22 degrees");
        assert!(info.estimated_prompt_tokens().abs_diff(text + 3 + 3) <= 1);
    }

    #[test]
    fn a_bedrock_token_count_reads_its_converse_input() {
        let body = r#"{"input":{"converse":{"system":[{"text":"Be brief."}],
            "messages":[{"role":"user","content":[{"text":"Hi"}]}]}}}"#;
        let counted = parse_ok(ApiKind::BedrockCountTokens, body).info;
        let converse = body.replacen(r#"{"input":{"converse":"#, "", 1);
        let converse = &converse[..converse.len() - 2];
        let message = parse_ok(ApiKind::BedrockConverse { stream: false }, converse).info;
        assert_eq!((counted.stream, counted.messages), (false, 1));
        assert_eq!(counted.estimated_prompt_tokens(), message.estimated_prompt_tokens());
        // `invokeModel` (a raw body) is not read, but is a request.
        assert_eq!(parse_ok(ApiKind::BedrockCountTokens, r#"{"input":{"invokeModel":{"body":"x"}}}"#).info.messages, 0);
        assert!(parse(ApiKind::BedrockCountTokens, br#"{"messages":[]}"#).is_err(), "no input");
    }

    #[test]
    fn a_token_count_reads_as_the_message_it_counts() {
        let body = r#"{"model":"claude-sonnet-4","system":"Be brief.","messages":[{"role":"user","content":"Hi"}]}"#;
        let counted = parse_ok(ApiKind::AnthropicCountTokens, body).info;
        assert_eq!(
            (counted.model.as_deref(), counted.stream, counted.max_output_tokens),
            (Some("claude-sonnet-4"), false, None)
        );
        let with_max = body.replacen('{', r#"{"max_tokens":5,"#, 1);
        let message = parse_ok(ApiKind::AnthropicMessages, &with_max).info;
        assert_eq!(counted.estimated_prompt_tokens(), message.estimated_prompt_tokens());
    }

    #[test]
    fn gemini_fields_are_read_by_either_name() {
        // Gemini's protobuf JSON takes snake_case names too (its REST examples use them).
        let camel = r#"{"contents":[{"role":"user","parts":[{"text":"Hi there"},{"inlineData":{"mimeType":"image/png","data":"AAAA"}}]}],
            "systemInstruction":{"parts":[{"text":"Be kind and brief"}]},"generationConfig":{"maxOutputTokens":77,"candidateCount":2}}"#;
        let snake = camel
            .replace("inlineData", "inline_data")
            .replace("mimeType", "mime_type")
            .replace("systemInstruction", "system_instruction")
            .replace("generationConfig", "generation_config")
            .replace("maxOutputTokens", "max_output_tokens")
            .replace("candidateCount", "candidate_count");
        let kind = ApiKind::GeminiGenerate { stream: false };
        let (camel, snake) = (parse_ok(kind, camel).info, parse_ok(kind, &snake).info);
        assert_eq!((snake.max_output_tokens, snake.choices), (Some(77), 2));
        assert_eq!(snake, camel);
    }

    #[test]
    fn a_bedrock_invoke_body_is_read_whatever_the_model_family() {
        let claude = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":300,"system":"Be brief.",
            "messages":[{"role":"user","content":[{"type":"text","text":"How far is the moon?"}]}]}"#;
        let invoke = parse_ok(ApiKind::BedrockInvoke { stream: true }, claude).info;
        let messages = parse_ok(ApiKind::AnthropicMessages, claude).info;
        assert_eq!((invoke.stream, invoke.messages, invoke.max_output_tokens), (true, 1, Some(300)));
        assert!(invoke.estimated_prompt_tokens().abs_diff(messages.estimated_prompt_tokens()) <= 1);
        let llama =
            parse_ok(ApiKind::BedrockInvoke { stream: false }, r#"{"prompt":"How far is the moon?","max_gen_len":50}"#)
                .info;
        assert_eq!((llama.stream, llama.max_output_tokens), (false, Some(50)));
        assert!(llama.features.estimate() >= 5);
        let titan = parse_ok(ApiKind::BedrockInvoke { stream: false }, r#"{"inputText":"How far is the moon?"}"#).info;
        assert_eq!(titan.features.estimate(), llama.features.estimate());
        assert_eq!(titan.max_output_tokens, None);
        for (body, cap) in [
            (r#"{"inputText":"Hi","textGenerationConfig":{"maxTokenCount":70,"temperature":0}}"#, 70),
            (r#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"max_new_tokens":80}}"#, 80),
            (r#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}],"inferenceConfig":{"maxTokens":85}}"#, 85),
            (r#"{"messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":90}"#, 90),
        ] {
            let info = parse_ok(ApiKind::BedrockInvoke { stream: false }, body).info;
            assert_eq!(info.max_output_tokens, Some(cap), "{body}");
        }
    }

    #[test]
    fn a_gemini_batch_is_the_sum_of_its_inlined_requests() {
        let one = |text: &str, max: u64| {
            format!(
                r#"{{"contents":[{{"parts":[{{"text":"{text}"}}]}}],"generationConfig":{{"maxOutputTokens":{max},"candidateCount":2}}}}"#
            )
        };
        let (a, b) =
            (one("Describe photosynthesis.", 100), one("What are the main ingredients of a Margherita pizza?", 50));
        let body = format!(
            r#"{{"batch":{{"display_name":"my-batch","input_config":{{"requests":{{"requests":[
                {{"request":{a},"metadata":{{"key":"request-1"}}}},{{"request":{b},"metadata":{{"key":"request-2"}}}}]}}}}}}}}"#
        );
        let kind = ApiKind::GeminiGenerate { stream: false };
        let (a, b) = (parse_ok(kind, &a).info, parse_ok(kind, &b).info);
        for body in [body.clone(), body.replace("input_config", "inputConfig")] {
            let batch = parse_ok(ApiKind::GeminiBatch, &body).info;
            assert_eq!((batch.background, batch.requests, batch.messages), (true, 2, 2));
            assert_eq!(batch.max_output_tokens, Some(300), "each request's cap × its candidates");
            let sum = a.estimated_prompt_tokens() + b.estimated_prompt_tokens();
            assert!(batch.estimated_prompt_tokens().abs_diff(sum) <= 1);
        }
        // A batch naming a file inlines nothing to read.
        let file = parse_ok(ApiKind::GeminiBatch, r#"{"batch":{"input_config":{"file_name":"files/abc"}}}"#).info;
        assert_eq!((file.requests, file.messages, file.background), (1, 0, true));
    }

    #[test]
    fn gemini_token_counts_and_embeddings_read_their_text() {
        let generate = r#"{"contents":[{"role":"user","parts":[{"text":"How far is the moon?"}]}],
            "systemInstruction":{"parts":[{"text":"Be brief."}]}}"#;
        let asked = parse_ok(ApiKind::GeminiGenerate { stream: false }, generate).info;
        let wrapped = format!(r#"{{"generateContentRequest":{generate}}}"#);
        for body in [wrapped.as_str(), &wrapped.replace("generateContentRequest", "generate_content_request")] {
            let counted = parse_ok(ApiKind::GeminiCountTokens, body).info;
            assert_eq!(counted.estimated_prompt_tokens(), asked.estimated_prompt_tokens());
            assert_eq!((counted.messages, counted.max_output_tokens), (1, None));
        }
        let contents = r#"{"contents":[{"role":"user","parts":[{"text":"How far is the moon?"}]}]}"#;
        assert_eq!(parse_ok(ApiKind::GeminiCountTokens, contents).info.messages, 1);

        let embed = ApiKind::GeminiEmbed { usage: false };
        let one = parse_ok(embed, r#"{"content":{"parts":[{"text":"What is the meaning of life?"}]}}"#).info;
        assert_eq!((one.messages, one.max_output_tokens), (1, Some(0)));
        assert!(one.estimated_prompt_tokens() >= 7);
        let batch = r#"{"requests":[{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"What is the meaning of life?"}]}},
            {"model":"models/gemini-embedding-001","content":{"parts":[{"text":"How much wood would a woodchuck chuck?"}]}}]}"#;
        let batch = parse_ok(embed, batch).info;
        assert_eq!(batch.messages, 2);
        assert!(batch.features.estimate() > one.features.estimate());
        // OpenAI's image generation: the prompt is the text; each of `n` images reserves the
        // default output.
        let images = parse_ok(
            ApiKind::OpenAiImages,
            r#"{"model":"gpt-image-1","prompt":"A lighthouse at dawn","n":3,"stream":true}"#,
        )
        .info;
        assert_eq!(
            (images.model.as_deref(), images.choices, images.stream, images.max_output_tokens),
            (Some("gpt-image-1"), 3, true, None)
        );
        assert_eq!(images.output_cap(100), 300);
        assert!(images.estimated_prompt_tokens() >= 4);
        // A decision: the questions are read with the input.
        let decision = |questions: &str| {
            let body = format!(
                r#"{{"model":"gpt-6-luna","input":"I was charged twice for my order","questions":[{questions}]}}"#
            );
            parse_ok(ApiKind::OpenAiDecisions, &body).info
        };
        let one = decision(r#"{"type":"predicate","instructions":"The customer is complaining."}"#);
        let two = decision(
            r#"{"type":"predicate","instructions":"The customer is complaining."},
               {"type":"choice","instructions":"Which department should handle this?","choices":[{"value":"billing"}]}"#,
        );
        assert_eq!((one.model.as_deref(), one.stream), (Some("gpt-6-luna"), false));
        assert!(two.estimated_prompt_tokens() > one.estimated_prompt_tokens() + 5, "every question counts");
        // Text to speech: the text and its instructions are the prompt; it streams only as SSE.
        let speech = |extra: &str| {
            let body = format!(
                r#"{{"model":"gpt-4o-mini-tts","voice":"coral","input":"Hello there, friend","instructions":"Speak calmly and slowly"{extra}}}"#
            );
            parse_ok(ApiKind::OpenAiSpeech, &body).info
        };
        let sse = speech(r#","stream_format":"sse""#);
        assert_eq!((sse.model.as_deref(), sse.stream, sse.max_output_tokens), (Some("gpt-4o-mini-tts"), true, None));
        assert!(!speech(r#","stream_format":"audio""#).stream && !speech("").stream);
        let input_only =
            parse_ok(ApiKind::OpenAiSpeech, r#"{"model":"tts-1","voice":"coral","input":"Hello there, friend"}"#);
        assert!(sse.estimated_prompt_tokens() > input_only.info.estimated_prompt_tokens() + 2, "instructions count");
        // Vertex AI's `:predict`: one instance per text (a plain string), `title` read too.
        let predict = r#"{"instances":[{"content":"What is the meaning of life?","task_type":"RETRIEVAL_QUERY"},
            {"content":"How much wood would a woodchuck chuck?","title":"Woodchucks"}],"parameters":{"autoTruncate":true}}"#;
        let predicted = parse_ok(ApiKind::VertexEmbedPredict, predict).info;
        assert_eq!((predicted.messages, predicted.max_output_tokens, predicted.stream), (2, Some(0), false));
        let same_texts = r#"{"instances":[{"content":"What is the meaning of life?"},
            {"content":"How much wood would a woodchuck chuck?"},{"content":"Woodchucks"}]}"#;
        assert_eq!(
            predicted.features.estimate(),
            parse_ok(ApiKind::VertexEmbedPredict, same_texts).info.features.estimate(),
            "the task type is not text; the title is"
        );
        // A compaction reads like a Responses request, and answers at once.
        let compact = r#"{"model":"gpt-5.5","instructions":"Be brief.","input":[{"role":"user","content":"Plan a tour"}],
            "previous_response_id":"resp_1","stream":true}"#;
        let compacted = parse_ok(ApiKind::OpenAiCompact, compact).info;
        assert_eq!(
            (compacted.model.as_deref(), compacted.stream, compacted.max_output_tokens),
            (Some("gpt-5.5"), false, None)
        );
        let as_responses = parse_ok(ApiKind::OpenAiResponses, compact).info;
        assert_eq!(compacted.estimated_prompt_tokens(), as_responses.estimated_prompt_tokens());
        // Stored contents: read like the requests that will name them, generating nothing.
        let cache = r#"{"model":"models/gemini-2.5-flash","systemInstruction":{"parts":[{"text":"Be brief."}]},
            "contents":[{"role":"user","parts":[{"text":"A long manual."}]}],"ttl":"300s"}"#;
        let cached = parse_ok(ApiKind::GeminiCache, cache).info;
        assert_eq!((cached.messages, cached.max_output_tokens), (1, Some(0)));
        let generate = parse_ok(ApiKind::GeminiGenerate { stream: false }, cache).info;
        assert_eq!(cached.estimated_prompt_tokens(), generate.estimated_prompt_tokens());
        let items = r#"{"items":[{"type":"message","role":"user","content":"Hello"}],"metadata":{"topic":"demo"}}"#;
        let conversation = parse_ok(ApiKind::OpenAiConversation, items).info;
        let as_input = r#"{"input":[{"type":"message","role":"user","content":"Hello"}]}"#;
        assert_eq!(
            conversation.features.estimate(),
            parse_ok(ApiKind::OpenAiResponses, as_input).info.features.estimate(),
            "items are input items; the metadata is not text"
        );
        // Imagen's (Veo's) `:predict`: the prompts, generating no tokens.
        let imagen = r#"{"instances":[{"prompt":"A watercolor of a lighthouse at dawn"}],
            "parameters":{"sampleCount":4,"negativePrompt":"people, boats","aspectRatio":"16:9"}}"#;
        let imagen = parse_ok(ApiKind::GooglePredict, imagen).info;
        assert_eq!((imagen.messages, imagen.max_output_tokens, imagen.stream, imagen.model), (1, Some(0), false, None));
        let texts = r#"{"instances":[{"prompt":"A watercolor of a lighthouse at dawn"},{"text":"people, boats"}]}"#;
        assert_eq!(imagen.features.estimate(), parse_ok(ApiKind::GooglePredict, texts).info.features.estimate());
        assert!(imagen.features.estimate() >= 10);
    }

    #[test]
    fn a_message_batch_is_the_sum_of_its_requests() {
        let one = |text: &str, max: u64| {
            format!(
                r#"{{"model":"claude-haiku-4-5","max_tokens":{max},"system":"Be brief.","messages":[{{"role":"user","content":"{text}"}}]}}"#
            )
        };
        let (a, b) = (one("What is the capital of France?", 100), one("Und von Portugal?", 250));
        let body = format!(r#"{{"requests":[{{"custom_id":"a","params":{a}}},{{"custom_id":"b","params":{b}}}]}}"#);
        let batch = parse_ok(ApiKind::AnthropicBatch, &body).info;
        let (a, b) = (parse_ok(ApiKind::AnthropicMessages, &a).info, parse_ok(ApiKind::AnthropicMessages, &b).info);
        assert_eq!(
            (
                batch.model.as_deref(),
                batch.stream,
                batch.background,
                batch.requests,
                batch.mixed_models,
                batch.messages
            ),
            (Some("claude-haiku-4-5"), false, true, 2, false, 2)
        );
        assert_eq!(batch.max_output_tokens, Some(350));
        assert_eq!(batch.largest_request(), (1, a.estimated_prompt_tokens().max(b.estimated_prompt_tokens())));
        assert_eq!(a.largest_request(), (1, a.estimated_prompt_tokens()), "a request is its own largest");
        assert_eq!(batch.output_cap(4096), 350, "each request's own cap, not the default per request");
        let sum = a.estimated_prompt_tokens() + b.estimated_prompt_tokens();
        assert!(batch.estimated_prompt_tokens().abs_diff(sum) <= 1, "{} vs {sum}", batch.estimated_prompt_tokens());

        // Different models: none is the batch's.
        let mixed = body.replacen("claude-haiku-4-5", "claude-opus-4-1", 1);
        let mixed = parse_ok(ApiKind::AnthropicBatch, &mixed).info;
        assert_eq!((mixed.model, mixed.mixed_models), (None, true));
        // A request without max_tokens (Anthropic refuses it) leaves the batch's cap unknown.
        let uncapped = body.replacen(r#""max_tokens":100,"#, "", 1);
        assert_eq!(parse_ok(ApiKind::AnthropicBatch, &uncapped).info.max_output_tokens, None);
        // Empty, or not a batch: still one request to charge, nothing to estimate.
        let empty = parse_ok(ApiKind::AnthropicBatch, r#"{"requests":[]}"#).info;
        assert_eq!((empty.requests, empty.messages, empty.max_output_tokens), (1, 0, Some(0)));
        assert!(parse(ApiKind::AnthropicBatch, br#"{"requests":{"a":1}}"#).is_err());
        assert_eq!(parse_ok(ApiKind::AnthropicMessages, &one("x", 1)).info.requests, 1);
    }

    #[test]
    fn gemini_bedrock_responses_embeddings_shapes() {
        let gemini = parse_ok(
            ApiKind::GeminiGenerate { stream: true },
            r#"{"contents":[{"role":"user","parts":[{"text":"Hi there"},{"inlineData":{"mimeType":"image/png","data":"AAAA"}}]}],
               "systemInstruction":{"parts":[{"text":"Be kind"}]},"generationConfig":{"maxOutputTokens":77}}"#,
        )
        .info;
        assert_eq!((gemini.stream, gemini.messages, gemini.max_output_tokens), (true, 1, Some(77)));
        let bedrock = parse_ok(
            ApiKind::BedrockConverse { stream: false },
            r#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}],"system":[{"text":"sys"}],"inferenceConfig":{"maxTokens":12}}"#,
        )
        .info;
        assert_eq!((bedrock.messages, bedrock.max_output_tokens), (1, Some(12)));
        let responses = parse_ok(
            ApiKind::OpenAiResponses,
            r#"{"model":"gpt-4.1","input":"Tell me a joke","max_output_tokens":50}"#,
        )
        .info;
        assert_eq!((responses.model.as_deref(), responses.max_output_tokens), (Some("gpt-4.1"), Some(50)));
        assert!(!responses.background);
        let background =
            parse_ok(ApiKind::OpenAiResponses, r#"{"model":"o3-deep-research","input":"Survey","background":true}"#)
                .info;
        assert!(background.background);
        // A cache prewarm writes the prompt to the cache and generates nothing.
        let prewarm = r#"{"model":"gpt-5.6","input":"A long contract","max_output_tokens":500,
            "prompt_cache_options":{"prewarm":true,"ttl":"12h"}}"#;
        assert_eq!(parse_ok(ApiKind::OpenAiResponses, prewarm).info.output_cap(4096), 0);
        let cached = r#"{"model":"gpt-5.6","input":"A long contract","prompt_cache_options":{"ttl":"12h"}}"#;
        assert_eq!(parse_ok(ApiKind::OpenAiResponses, cached).info.output_cap(4096), 4096);
        let embeddings =
            parse_ok(ApiKind::OpenAiEmbeddings, r#"{"model":"text-embedding-3-small","input":[[1,2,3],[4,5]]}"#).info;
        assert_eq!(embeddings.estimated_prompt_tokens(), 5);
    }

    /// A request for several completions can generate its output cap once per completion:
    /// what a quota reserves and a cost-based choice weighs.
    #[test]
    fn the_output_cap_counts_every_completion_asked_for() {
        let cases: [(ApiKind, &str, u64, u64); 9] = [
            (ApiKind::OpenAiChat, r#"{"model":"m","messages":[],"max_tokens":100}"#, 1, 100),
            (ApiKind::OpenAiChat, r#"{"model":"m","messages":[],"max_completion_tokens":100,"n":4}"#, 4, 400),
            // No cap named: the caller's default, once per completion.
            (ApiKind::OpenAiChat, r#"{"model":"m","messages":[],"n":3}"#, 3, 3 * 4096),
            // Outside what any provider accepts: it refuses, so the count stays within 1..=128.
            (ApiKind::OpenAiChat, r#"{"model":"m","messages":[],"n":0,"max_tokens":10}"#, 1, 10),
            (ApiKind::OpenAiChat, r#"{"model":"m","messages":[],"n":100000,"max_tokens":10}"#, 128, 1280),
            // Legacy completions generate `best_of` server-side (n ≤ best_of), all billed.
            (ApiKind::OpenAiCompletions, r#"{"model":"m","prompt":"p","max_tokens":16,"n":2,"best_of":5}"#, 5, 80),
            (ApiKind::OpenAiCompletions, r#"{"model":"m","prompt":"p","max_tokens":16,"n":2}"#, 2, 32),
            // An embedding generates no tokens, whatever the default.
            (ApiKind::OpenAiEmbeddings, r#"{"model":"m","input":"p"}"#, 1, 0),
            (
                ApiKind::GeminiGenerate { stream: false },
                r#"{"contents":[],"generationConfig":{"maxOutputTokens":50,"candidateCount":2}}"#,
                2,
                100,
            ),
        ];
        for (kind, body, choices, cap) in cases {
            let info = parse_ok(kind, body).info;
            assert_eq!((info.choices, info.output_cap(4096)), (choices, cap), "{body}");
        }
        // A cap near the integer's limit saturates instead of wrapping.
        let body = format!(r#"{{"model":"m","messages":[],"max_tokens":{},"n":2}}"#, u64::MAX);
        assert_eq!(parse_ok(ApiKind::OpenAiChat, &body).info.output_cap(1), u64::MAX);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(parse(ApiKind::OpenAiChat, b"{").is_err());
        assert!(parse(ApiKind::OpenAiChat, br#"{"model":5,"messages":[]}"#).is_err());
        assert!(parse(ApiKind::OpenAiChat, br#"{"stream":"yes","messages":[]}"#).is_err());
        assert!(parse(ApiKind::OpenAiChat, b"[]").is_err());
        let deep = format!("{{\"messages\":[{{\"content\":{}{}}}]}}", "[".repeat(200), "]".repeat(200));
        assert!(parse(ApiKind::OpenAiChat, deep.as_bytes()).is_err());
    }

    fn explained(kind: ApiKind, body: &str) -> Option<(Option<String>, String)> {
        assert!(parse(kind, body.as_bytes()).is_err(), "parse refuses {}", &body[..body.len().min(80)]);
        match explain(kind, body.as_bytes())? {
            Error::InvalidRequest { param, message } => Some((param, message)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_wrong_field_is_named_with_the_type_it_should_have() {
        let chat = ApiKind::OpenAiChat;
        let cases = [
            (chat, r#"{"model":"m","max_tokens":-5,"messages":[]}"#, "max_tokens", "a non-negative integer"),
            (chat, r#"{"model":"m","max_tokens":"100","messages":[]}"#, "max_tokens", "a non-negative integer"),
            (chat, r#"{"model":5,"messages":[]}"#, "model", "a string"),
            (chat, r#"{"stream":"yes","messages":[]}"#, "stream", "a boolean"),
            (chat, r#"{"messages":"hello"}"#, "messages", "an array"),
            (chat, r#"{"messages":[{"role":"user","content":"a"},"hi"]}"#, "messages[1]", "an object"),
            (chat, r#"{"messages":[{"name":7,"content":"a"}]}"#, "messages[0].name", "a string"),
            (
                ApiKind::AnthropicMessages,
                r#"{"model":"c","max_tokens":1.5,"messages":[]}"#,
                "max_tokens",
                "a non-negative integer",
            ),
            (
                ApiKind::OpenAiResponses,
                r#"{"model":"m","max_output_tokens":true}"#,
                "max_output_tokens",
                "a non-negative integer",
            ),
            (
                ApiKind::GeminiGenerate { stream: false },
                r#"{"contents":[],"generationConfig":{"maxOutputTokens":"9"}}"#,
                "generationConfig.maxOutputTokens",
                "a non-negative integer",
            ),
            (
                ApiKind::BedrockConverse { stream: false },
                r#"{"messages":[],"inferenceConfig":"x"}"#,
                "inferenceConfig",
                "an object",
            ),
            (
                ApiKind::AnthropicBatch,
                r#"{"requests":[{"custom_id":"a","params":{"messages":[{"role":"user","content":"x","name":1}]}}]}"#,
                "requests[0].params.messages[0].name",
                "a string",
            ),
        ];
        // The one wrong element among many is found (each probe holds one element).
        let mut messages = vec![r#"{"role":"user","content":"a"}"#; 5000];
        messages[4321] = r#"{"role":"user","content":"a","name":["x"]}"#;
        let many = format!(r#"{{"model":"m","messages":[{}]}}"#, messages.join(","));
        // The same among many members.
        let members: Vec<String> = (0..20_000).map(|i| format!(r#""extra_{i}":{i}"#)).collect();
        let wide = format!(r#"{{{},"stream":"yes",{}}}"#, members[..12_345].join(","), members[12_345..].join(","));
        let cases = cases.into_iter().chain([
            (chat, many.as_str(), "messages[4321].name", "a string"),
            (chat, wide.as_str(), "stream", "a boolean"),
        ]);
        for (kind, body, param, what) in cases {
            let (got_param, message) = explained(kind, body).unwrap_or_else(|| panic!("{param}"));
            assert_eq!(got_param.as_deref(), Some(param));
            assert_eq!(message, format!("invalid '{param}': expected {what}"));
        }
    }

    #[test]
    fn an_explanation_never_repeats_the_body() {
        // The value at fault, a key inside a prompt, the prompt's text: none is echoed.
        let body = r#"{"model":"secret-model","max_tokens":"secret-number","messages":[{"content":"secret prompt"}]}"#;
        let (param, message) = explained(ApiKind::OpenAiChat, body).unwrap();
        assert_eq!(param.as_deref(), Some("max_tokens"));
        assert!(!message.contains("secret"), "{message}");
        let deep =
            format!("{{\"messages\":[{{\"content\":{{\"secretkey\":{}{}}}}}]}}", "[".repeat(100), "]".repeat(100));
        let (param, message) = explained(ApiKind::OpenAiChat, &deep).unwrap();
        assert_eq!(param, None, "inside a prompt keys are the client's: {message}");
        assert!(!message.contains("secret"), "{message}");
        assert!(message.contains("nested more than 64 levels"), "{message}");
    }

    #[test]
    fn only_json_that_is_not_a_request_is_explained() {
        // Not JSON at all: the caller reports invalid JSON.
        for body in ["{", r#"{"model":"m""#, r#"{"model":"m"} trailing"#, "nonsense"] {
            assert_eq!(explain(ApiKind::OpenAiChat, body.as_bytes()), None, "{body}");
        }
        // JSON, but not an object.
        for body in ["[]", r#""hello""#, " 42 "] {
            assert_eq!(
                explained(ApiKind::OpenAiChat, body),
                Some((None, "the request body must be a JSON object".to_string())),
                "{body}"
            );
        }
        let (param, message) = explained(ApiKind::OpenAiChat, r#"{"model":"a","model":"b"}"#).unwrap();
        assert_eq!((param, message.as_str()), (None, "invalid request: an object has the same member twice"));
    }

    #[test]
    fn escaped_text_is_estimated_unescaped() {
        let escaped = parse_ok(ApiKind::OpenAiChat, r#"{"messages":[{"content":"\u4e16\u754c\u4f60\u597d"}]}"#).info;
        let plain = parse_ok(ApiKind::OpenAiChat, r#"{"messages":[{"content":"世界你好"}]}"#).info;
        assert_eq!(escaped.estimated_prompt_tokens(), plain.estimated_prompt_tokens());
    }

    #[test]
    fn splices_apply_in_order() {
        let mut splices = vec![
            Splice { at: 4, remove: 1, insert: b"X".to_vec() },
            Splice { at: 0, remove: 0, insert: b">".to_vec() },
        ];
        assert_eq!(apply_splices(b"abcdef", &mut splices), b">abcdXf");
    }
}
