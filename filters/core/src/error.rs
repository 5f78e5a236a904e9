//! The one error type of Tollgate and its one mapping to HTTP.
//!
//! Every refusal a filter can make is a variant here. [`Error::spec`] maps each variant, with no
//! wildcard arm, to a status, a metric reason and the `type`/`code` each client dialect expects;
//! [`Error::body`] renders the JSON body and [`Error::sse_event`] the single SSE event that ends a
//! stream whose headers were already sent. Messages name rules, limits and fields; they never
//! contain prompt text, matched text or credentials, so they are safe to log as well.

use serde_json::json;

/// The API dialect a client speaks; errors are rendered in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `{"error":{"message","type","param","code"}}` (OpenAI and every OpenAI-compatible API).
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}` (Anthropic Messages).
    Anthropic,
    /// `{"error":{"code","message","status"}}`, `code` the HTTP status (Gemini API, Vertex AI).
    Google,
    /// `{"message"}` with the exception's name in `x-amzn-errortype` (Bedrock Runtime), and in a
    /// stream an exception frame.
    Aws,
}

/// Everything that makes a filter answer instead of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The body of an AI request is not JSON. `detail` is the parser's position message.
    InvalidJson { detail: String },
    /// The body is JSON but not a request we can act on (a field has the wrong type, say).
    InvalidRequest { param: Option<String>, message: String },
    /// The request body exceeds a configured limit, or Envoy's buffer limit (`None`: the
    /// number is Envoy's and not known to the filter).
    PayloadTooLarge { limit_bytes: Option<u64> },
    /// A `content-encoding` we cannot inspect on a route where inspection is required.
    UnsupportedEncoding { encoding: String },
    /// A `content-type` that is not JSON on a route where inspection is required.
    UnsupportedMediaType { content_type: String },
    /// No credential, or one that does not identify a consumer.
    Unauthorized { message: String },
    /// The consumer may not use this model or provider.
    Forbidden { model: String },
    /// No backend serves this model.
    ModelNotFound { model: String },
    /// A quota is exhausted; `limit` names it (never another consumer's data).
    RateLimited { limit: String, retry_after_secs: u64 },
    /// A guardrail rule refused the request; names the rule and the entity type, never the text.
    Blocked { rule: String, entity: Option<String> },
    /// The upstream answered something we cannot translate or read.
    UpstreamInvalid { detail: String },
    /// A bug of ours. The request is refused rather than forwarded half-processed.
    Internal { detail: String },
    /// A service the gateway depends on (the rate-limit service) did not answer usably.
    ServiceUnavailable { service: String },
    /// Envoy could not get an answer from the provider (connection refused or reset before the
    /// response, no healthy endpoint, timeout): its plain-text local reply, reworded. `status`
    /// is Envoy's (502, 503, 504, 408); `detail` its response code details.
    UpstreamFailed { status: u16, detail: String },
}

/// How one error variant maps onto HTTP and onto each dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorSpec {
    pub status: u16,
    /// Metric label: which kind of refusal this was.
    pub reason: &'static str,
    pub openai_type: &'static str,
    pub openai_code: &'static str,
    pub anthropic_type: &'static str,
}

impl Error {
    /// A request refused for a field (`param`, a path such as `messages[2].role`). The path is
    /// passed through [`shown`]: a client chooses parameter names too.
    pub fn invalid(param: impl AsRef<str>, message: impl Into<String>) -> Error {
        Error::InvalidRequest { param: Some(shown(param.as_ref())), message: message.into() }
    }

    /// A model no backend serves, named as [`shown`] repeats a client's name.
    pub fn model_not_found(model: &str) -> Error {
        Error::ModelNotFound { model: shown(model) }
    }

    /// A model the caller may not use, named as [`shown`] repeats a client's name.
    pub fn forbidden(model: &str) -> Error {
        Error::Forbidden { model: shown(model) }
    }

    /// A refused `content-encoding` header value, kept short.
    pub fn unsupported_encoding(header: &str) -> Error {
        Error::UnsupportedEncoding { encoding: header.trim().chars().take(32).collect() }
    }

    /// A refused `content-type` header value, kept short.
    pub fn unsupported_media_type(header: &str) -> Error {
        Error::UnsupportedMediaType { content_type: header.trim().chars().take(64).collect() }
    }

    /// The single mapping from variant to status and dialect vocabulary.
    pub fn spec(&self) -> ErrorSpec {
        let (status, reason, openai_type, openai_code, anthropic_type) = match self {
            Error::InvalidJson { .. } => {
                (400, "invalid_json", "invalid_request_error", "invalid_json", "invalid_request_error")
            }
            Error::InvalidRequest { .. } => {
                (400, "invalid_request", "invalid_request_error", "invalid_request", "invalid_request_error")
            }
            Error::PayloadTooLarge { .. } => {
                (413, "payload_too_large", "invalid_request_error", "request_too_large", "request_too_large")
            }
            Error::UnsupportedEncoding { .. } => (
                415,
                "unsupported_encoding",
                "invalid_request_error",
                "unsupported_content_encoding",
                "invalid_request_error",
            ),
            Error::UnsupportedMediaType { .. } => (
                415,
                "unsupported_media_type",
                "invalid_request_error",
                "unsupported_media_type",
                "invalid_request_error",
            ),
            Error::Unauthorized { .. } => {
                (401, "unauthorized", "invalid_request_error", "invalid_api_key", "authentication_error")
            }
            Error::Forbidden { .. } => {
                (403, "forbidden", "invalid_request_error", "model_not_allowed", "permission_error")
            }
            Error::ModelNotFound { .. } => {
                (404, "model_not_found", "invalid_request_error", "model_not_found", "not_found_error")
            }
            Error::RateLimited { .. } => (429, "rate_limited", "tokens", "rate_limit_exceeded", "rate_limit_error"),
            Error::Blocked { .. } => {
                (400, "blocked", "invalid_request_error", "content_blocked", "invalid_request_error")
            }
            Error::UpstreamInvalid { .. } => (502, "upstream_invalid", "server_error", "bad_gateway", "api_error"),
            Error::Internal { .. } => (500, "internal", "server_error", "internal_error", "api_error"),
            Error::ServiceUnavailable { .. } => {
                (503, "service_unavailable", "server_error", "service_unavailable", "api_error")
            }
            Error::UpstreamFailed { status: status @ (504 | 408), .. } => {
                (*status, "upstream_timeout", "server_error", "upstream_timeout", "api_error")
            }
            Error::UpstreamFailed { status, .. } => {
                (*status, "upstream_unreachable", "server_error", "upstream_unreachable", "api_error")
            }
        };
        ErrorSpec { status, reason, openai_type, openai_code, anthropic_type }
    }

    /// HTTP status of the local reply.
    pub fn status(&self) -> u16 {
        self.spec().status
    }

    /// Human-readable message. Safe to log: built only from rule ids, limits and field names.
    pub fn message(&self) -> String {
        match self {
            Error::InvalidJson { detail } => format!("request body is not valid JSON: {detail}"),
            Error::InvalidRequest { message, .. } => message.clone(),
            Error::PayloadTooLarge { limit_bytes: Some(limit) } => {
                format!("request body exceeds the gateway limit of {limit} bytes")
            }
            Error::PayloadTooLarge { limit_bytes: None } => {
                "request body exceeds the gateway's buffer limit".to_string()
            }
            Error::UnsupportedEncoding { encoding } => {
                format!("content-encoding '{encoding}' is not accepted on this route")
            }
            Error::UnsupportedMediaType { content_type } => {
                format!("content-type '{content_type}' is not accepted on this route; send application/json")
            }
            Error::Unauthorized { message } => message.clone(),
            Error::Forbidden { model } => format!("you are not allowed to use model '{model}'"),
            Error::ModelNotFound { model } => {
                format!("model '{model}' is not served by this gateway")
            }
            Error::RateLimited { limit, retry_after_secs } => {
                format!("quota '{limit}' exhausted; retry after {retry_after_secs} s")
            }
            Error::Blocked { rule, entity: Some(entity) } => {
                format!("request blocked by guardrail rule '{rule}' ({entity} detected)")
            }
            Error::Blocked { rule, entity: None } => {
                format!("request blocked by guardrail rule '{rule}'")
            }
            Error::UpstreamInvalid { detail } => {
                format!("upstream response could not be read: {detail}")
            }
            Error::Internal { detail } => format!("internal gateway error: {detail}"),
            Error::ServiceUnavailable { service } => format!("the gateway's {service} is unavailable; retry later"),
            Error::UpstreamFailed { status: 504 | 408, detail } => {
                format!("the provider did not answer in time ({detail})")
            }
            Error::UpstreamFailed { detail, .. } => format!("the provider could not be reached ({detail})"),
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Error::InvalidRequest { param, .. } => param.as_deref(),
            Error::Forbidden { .. } | Error::ModelNotFound { .. } => Some("model"),
            Error::InvalidJson { .. }
            | Error::PayloadTooLarge { .. }
            | Error::UnsupportedEncoding { .. }
            | Error::UnsupportedMediaType { .. }
            | Error::Unauthorized { .. }
            | Error::RateLimited { .. }
            | Error::Blocked { .. }
            | Error::UpstreamInvalid { .. }
            | Error::Internal { .. }
            | Error::ServiceUnavailable { .. }
            | Error::UpstreamFailed { .. } => None,
        }
    }

    /// Extra response headers that belong to this error (`retry-after` for 429).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Error::RateLimited { retry_after_secs, .. } = self {
            headers.push(("retry-after", retry_after_secs.to_string()));
        }
        headers
    }

    /// The error object inside the body, in the client's dialect.
    fn json(&self, dialect: Dialect) -> serde_json::Value {
        let spec = self.spec();
        match dialect {
            Dialect::OpenAi => json!({
                "error": {
                    "message": self.message(),
                    "type": spec.openai_type,
                    "param": self.param(),
                    "code": spec.openai_code,
                }
            }),
            Dialect::Anthropic => json!({
                "type": "error",
                "error": { "type": spec.anthropic_type, "message": self.message() }
            }),
            Dialect::Google => json!({
                "error": { "code": spec.status, "message": self.message(), "status": google_status(spec.status) }
            }),
            Dialect::Aws => json!({ "message": self.message() }),
        }
    }

    /// The headers a dialect adds to [`Error::headers`] on a local reply: AWS SDKs take the
    /// error's name from `x-amzn-errortype`.
    pub fn dialect_headers(&self, dialect: Dialect) -> Vec<(&'static str, String)> {
        let mut headers = self.headers();
        if dialect == Dialect::Aws {
            headers.push(("x-amzn-errortype", aws_exception(self.spec().status).to_string()));
        }
        headers
    }

    /// The JSON body of the local reply.
    pub fn body(&self, dialect: Dialect) -> Vec<u8> {
        self.json(dialect).to_string().into_bytes()
    }

    /// The one event that ends a stream whose `200` headers were already sent.
    ///
    /// OpenAI's SDKs raise on a `data:` line holding an `error` object, and Google's Gen AI SDK on
    /// one holding Google's; Anthropic's stream has a named `error` event for this; a Bedrock
    /// stream (AWS event-stream, not SSE) an exception frame, which AWS SDKs raise.
    pub fn sse_event(&self, dialect: Dialect) -> Vec<u8> {
        let data = self.json(dialect).to_string();
        match dialect {
            Dialect::OpenAi | Dialect::Google => format!("data: {data}\n\n").into_bytes(),
            Dialect::Anthropic => format!("event: error\ndata: {data}\n\n").into_bytes(),
            Dialect::Aws => {
                let kind = match self.spec().status {
                    400 | 413 | 415 => "validationException",
                    429 => "throttlingException",
                    503 => "serviceUnavailableException",
                    _ => "internalServerException",
                };
                let headers =
                    [(":exception-type", kind), (":content-type", "application/json"), (":message-type", "exception")];
                crate::eventstream::encode(&headers, data.as_bytes())
            }
        }
    }

    /// The same for a Responses-API stream: its `error` event (`type`, `code`, `message`,
    /// `param`, `sequence_number`), which typed clients read, with the `error` object beside
    /// them, on which OpenAI's SDKs raise as they do on any stream.
    pub fn responses_sse_event(&self, sequence_number: u64) -> Vec<u8> {
        let mut value = self.json(Dialect::OpenAi);
        let spec = self.spec();
        if let Some(object) = value.as_object_mut() {
            object.insert("type".into(), json!("error"));
            object.insert("code".into(), json!(spec.openai_code));
            object.insert("message".into(), json!(self.message()));
            object.insert("param".into(), json!(self.param()));
            object.insert("sequence_number".into(), json!(sequence_number));
        }
        format!("event: error\ndata: {value}\n\n").into_bytes()
    }
}

/// Google's canonical status name for an HTTP status.
fn google_status(status: u16) -> &'static str {
    match status {
        400 | 413 | 415 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        502 | 503 => "UNAVAILABLE",
        504 | 408 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Bedrock Runtime's exception name for an HTTP status.
fn aws_exception(status: u16) -> &'static str {
    match status {
        400 | 413 | 415 => "ValidationException",
        401 => "UnrecognizedClientException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        504 | 408 => "ModelTimeoutException",
        _ => "InternalServerException",
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for Error {}

/// The longest name from a request that an error message repeats.
pub const MAX_SHOWN: usize = 80;

/// A name the client chose (a model, a role, a parameter, a part's type) as an error message
/// may repeat it: at most [`MAX_SHOWN`] characters (a longer one is cut and ends in `…`), control
/// characters as `?`. Such names are not prompt text, but a client can put anything in them,
/// and a message is logged as well as returned.
pub fn shown(name: &str) -> String {
    let mut shown: String = name.chars().take(MAX_SHOWN).map(|c| if c.is_control() { '?' } else { c }).collect();
    if name.chars().nth(MAX_SHOWN).is_some() {
        shown.pop();
        shown.push('…');
    }
    shown
}

/// serde_json's description of a body it could not read as a type, without the value it may
/// quote (`invalid type: string "…", expected u32` → `invalid type: string, expected u32`), so
/// a message built from it keeps the promise above: no request text. Field and variant names
/// it expects are the schema's and stay; a message of unknown shape becomes a generic one.
pub fn redacted(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let (what, position) = text.rfind(" at line ").map_or((text.as_str(), ""), |at| text.split_at(at));
    let expected = what.rfind(", expected ").map(|at| &what[at..]);
    let described = match (error.classify(), expected) {
        // Fixed messages of the JSON parser ("EOF while parsing a string", …).
        (serde_json::error::Category::Syntax | serde_json::error::Category::Eof, _) => what.to_string(),
        _ if what.starts_with("missing field `") || what.starts_with("duplicate field `") => what.to_string(),
        _ if what.starts_with("invalid length ") => what.to_string(),
        (_, Some(expected)) => {
            let head = what.get(..what.len() - expected.len()).unwrap_or_default();
            // `invalid type: string "…"`: the kind, up to the quoted value.
            let kind = head.split(['"', '`']).next().unwrap_or_default().trim_end();
            format!("{kind}{expected}")
        }
        _ => "wrong type or value".to_string(),
    };
    format!("{described}{position}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn names_from_a_request_are_shown_bounded_and_on_one_line() {
        assert_eq!(shown("system"), "system");
        assert_eq!(shown("a\nb\u{7}c"), "a?b?c");
        let exact = "é".repeat(MAX_SHOWN);
        assert_eq!(shown(&exact), exact, "a name of the maximum length is kept whole");
        let cut = shown(&format!("{exact}!"));
        assert_eq!(cut.chars().count(), MAX_SHOWN);
        assert!(cut.ends_with("é…"), "{cut}");
        let error = Error::invalid("x".repeat(10_000), "is wrong");
        assert_eq!(error.param().map(|p| p.chars().count()), Some(MAX_SHOWN));
    }

    #[test]
    fn redacted_serde_messages_keep_the_schema_and_drop_the_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        #[serde(deny_unknown_fields)]
        struct Request {
            model: String,
            max_tokens: u32,
            #[serde(default)]
            role: Option<Role>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        enum Role {
            User,
        }
        let cases = [
            (r#"{"model":"m","max_tokens":"secret text"}"#, "invalid type: string, expected u32"),
            (r#"{"model":"m","max_tokens":-7}"#, "invalid value: integer, expected u32"),
            (r#"{"model":"m","max_tokens":1,"role":"secret"}"#, "unknown variant, expected `user`"),
            (
                r#"{"model":"m","max_tokens":1,"secret":1}"#,
                "unknown field, expected one of `model`, `max_tokens`, `role`",
            ),
            (r#"{"max_tokens":1}"#, "missing field `model`"),
            (r#"{"model":"secret"#, "EOF while parsing a string"),
        ];
        for (body, want) in cases {
            let error = serde_json::from_str::<Request>(body).unwrap_err();
            let redacted = redacted(&error);
            assert!(redacted.starts_with(&format!("{want} at line 1 column ")), "{redacted}");
            assert!(!redacted.contains("secret"), "{redacted}");
        }
    }

    fn all() -> Vec<Error> {
        vec![
            Error::InvalidJson { detail: "EOF at line 1 column 3".into() },
            Error::InvalidRequest { param: Some("messages".into()), message: "messages must be an array".into() },
            Error::PayloadTooLarge { limit_bytes: Some(1024) },
            Error::PayloadTooLarge { limit_bytes: None },
            Error::UnsupportedEncoding { encoding: "br".into() },
            Error::UnsupportedMediaType { content_type: "text/plain".into() },
            Error::Unauthorized { message: "missing API key".into() },
            Error::Forbidden { model: "gpt-4o".into() },
            Error::ModelNotFound { model: "nope".into() },
            Error::RateLimited { limit: "tokens_per_minute".into(), retry_after_secs: 7 },
            Error::Blocked { rule: "lgpd".into(), entity: Some("CPF".into()) },
            Error::UpstreamInvalid { detail: "truncated body".into() },
            Error::Internal { detail: "state".into() },
            Error::ServiceUnavailable { service: "rate-limit service".into() },
            Error::UpstreamFailed { status: 503, detail: "upstream_reset_before_response_started".into() },
            Error::UpstreamFailed { status: 504, detail: "upstream_response_timeout".into() },
        ]
    }

    #[test]
    fn every_variant_renders_openai_shape_with_its_status() {
        for error in all() {
            let body: Value = serde_json::from_slice(&error.body(Dialect::OpenAi)).unwrap();
            let spec = error.spec();
            assert_eq!(body["error"]["type"], spec.openai_type, "{error:?}");
            assert_eq!(body["error"]["code"], spec.openai_code, "{error:?}");
            assert_eq!(body["error"]["message"], error.message());
            assert!(body["error"].as_object().unwrap().contains_key("param"));
            assert!((400..600).contains(&spec.status));
        }
    }

    #[test]
    fn every_variant_renders_anthropic_shape() {
        for error in all() {
            let body: Value = serde_json::from_slice(&error.body(Dialect::Anthropic)).unwrap();
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], error.spec().anthropic_type);
            assert_eq!(body["error"]["message"], error.message());
        }
    }

    #[test]
    fn every_variant_renders_googles_and_aws_shapes() {
        for error in all() {
            let status = error.status();
            let google: Value = serde_json::from_slice(&error.body(Dialect::Google)).unwrap();
            assert_eq!(google["error"]["code"], status, "{error:?}");
            assert_eq!(google["error"]["message"], error.message());
            assert!(google["error"]["status"].as_str().unwrap().bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
            let aws: Value = serde_json::from_slice(&error.body(Dialect::Aws)).unwrap();
            assert_eq!(aws, serde_json::json!({"message": error.message()}));
            let kind = error.dialect_headers(Dialect::Aws).into_iter().find(|(k, _)| *k == "x-amzn-errortype");
            assert!(kind.is_some_and(|(_, v)| v.ends_with("Exception")), "{error:?}");
            assert!(!error.dialect_headers(Dialect::OpenAi).iter().any(|(k, _)| *k == "x-amzn-errortype"));
        }
        let throttled = Error::RateLimited { limit: "tpm".into(), retry_after_secs: 3 };
        assert_eq!(throttled.dialect_headers(Dialect::Aws).last().unwrap().1, "ThrottlingException");
        let google: Value = serde_json::from_slice(&throttled.body(Dialect::Google)).unwrap();
        assert_eq!(google["error"]["status"], "RESOURCE_EXHAUSTED");
        // In a Bedrock stream: one exception frame, which the event-stream decoder reads back.
        let mut decoder = crate::eventstream::EventStreamDecoder::new(1 << 16);
        decoder.push(&throttled.sse_event(Dialect::Aws)).unwrap();
        let frame = decoder.next_message().unwrap().unwrap();
        assert_eq!(frame.header_str(":message-type"), Some("exception"));
        assert_eq!(frame.header_str(":exception-type"), Some("throttlingException"));
        assert!(decoder.next_message().is_none());
    }

    #[test]
    fn statuses_follow_the_style_guide() {
        let status = |e: Error| e.status();
        assert_eq!(status(Error::InvalidJson { detail: String::new() }), 400);
        assert_eq!(status(Error::PayloadTooLarge { limit_bytes: Some(1) }), 413);
        assert_eq!(status(Error::UnsupportedEncoding { encoding: "br".into() }), 415);
        assert_eq!(status(Error::RateLimited { limit: "x".into(), retry_after_secs: 1 }), 429);
        assert_eq!(status(Error::UpstreamInvalid { detail: String::new() }), 502);
        assert_eq!(status(Error::Internal { detail: String::new() }), 500);
        assert_eq!(status(Error::ServiceUnavailable { service: String::new() }), 503);
        assert_eq!(status(Error::UpstreamFailed { status: 504, detail: String::new() }), 504);
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let headers = Error::RateLimited { limit: "rpm".into(), retry_after_secs: 12 }.headers();
        assert!(headers.contains(&("retry-after", "12".to_string())));
        assert!(!Error::Internal { detail: String::new() }.headers().iter().any(|(k, _)| *k == "retry-after"));
    }

    #[test]
    fn reasons_are_distinct_metric_labels() {
        let mut reasons: Vec<_> = all().iter().map(|e| e.spec().reason).collect();
        reasons.dedup(); // the two PayloadTooLarge forms share a reason
        reasons.sort_unstable();
        let before = reasons.len();
        reasons.dedup();
        assert_eq!(before, reasons.len());
        assert!(reasons.iter().all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }

    #[test]
    fn sse_error_event_is_one_well_formed_event() {
        let error = Error::Blocked { rule: "pii".into(), entity: Some("EMAIL".into()) };
        let openai = String::from_utf8(error.sse_event(Dialect::OpenAi)).unwrap();
        assert!(openai.starts_with("data: {") && openai.ends_with("}\n\n"));
        let anthropic = String::from_utf8(error.sse_event(Dialect::Anthropic)).unwrap();
        assert!(anthropic.starts_with("event: error\ndata: {") && anthropic.ends_with("}\n\n"));
        let data: Value = serde_json::from_str(anthropic.trim_end().split_once("data: ").unwrap().1).unwrap();
        assert_eq!(data["error"]["type"], "invalid_request_error");
    }
}
