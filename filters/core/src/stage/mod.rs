//! Stages: the per-stream state machines of the filters, and the pipeline that runs them.
//!
//! A [`Stage`] is one filter's behaviour (token counting now; guardrails, provider rewrite and
//! quota later). The [`Pipeline`] drives the enabled stages in order over one request: it
//! classifies the request once, parses the body once ([`crate::request::parse`]) and hands every
//! stage the same [`Exchange`]. Stages never touch the host: they read through [`StageHost`] and
//! write decisions into an [`Outbox`] (header edits, metrics, filter state, log lines) that the
//! adapter applies in one place. Time is a parameter ([`Now`], read lazily: a host call).
//!
//! The per-filter cdylibs build a pipeline with one stage; the all-in-one module builds it with
//! every configured stage, and still parses each body once.

pub mod compose;
pub mod guardrails;
pub mod provider_rewrite;
pub mod quota;
pub mod token_counter;

use crate::error::{Dialect, Error};
use crate::request::{Parsed, Splice};
use crate::route::Route;

/// Bytes of a form held before its head is first read (a client's first write holds the fields).
const FORM_FIRST_LOOK: usize = 1024;

/// The host's clock, read at most once per callback and only if a stage asks: each read is a
/// host call.
pub struct Now<'a> {
    read: &'a dyn Fn() -> u64,
    cached: std::cell::Cell<Option<u64>>,
}

impl<'a> Now<'a> {
    pub fn new(read: &'a dyn Fn() -> u64) -> Self {
        Now { read, cached: std::cell::Cell::new(None) }
    }

    /// Nanoseconds since the epoch.
    pub fn ns(&self) -> u64 {
        if let Some(value) = self.cached.get() {
            return value;
        }
        let value = (self.read)();
        self.cached.set(Some(value));
        value
    }
}

/// What a stage may ask of the host directly: reads, and shared data (a compare-and-swap loop
/// cannot wait for an outbox). Every other effect goes through the [`Outbox`].
pub trait StageHost {
    fn request_header(&self, name: &str) -> Option<String>;
    fn response_header(&self, name: &str) -> Option<String>;
    /// An Envoy attribute/property (`["xds","route_name"]`, `["metadata",…]`).
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Process-wide shared data (Envoy's, per `vm_id`), for counters shared by all workers.
    fn shared_data(&self) -> &dyn SharedStore;
}

pub use crate::quota::store::SharedStore;

/// A header change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    Set(&'static str, String),
    Remove(&'static str),
}

/// A metric update. Names carry their labels (see [`crate::metrics`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricOp {
    /// Names are shared: a stage may build a label combination's names once and reuse them.
    Counter {
        name: std::rc::Rc<str>,
        value: u64,
    },
    Histogram {
        name: std::rc::Rc<str>,
        value: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// A unary gRPC call a stage asks the host to make (a rate-limit service, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    /// Envoy cluster of the service.
    pub cluster: String,
    pub service: &'static str,
    pub method: &'static str,
    pub message: Vec<u8>,
    pub timeout_ms: u32,
    /// The stage's own id for the call, handed back with the response.
    pub tag: u32,
    /// Fire and forget: made on behalf of the plugin rather than the stream, so it outlives the
    /// stream (a stream's pending calls are cancelled when it ends); no response is delivered.
    pub detached: bool,
    /// Index of the stage that made the call (set by the pipeline).
    pub stage: usize,
}

/// A failed gRPC call: the gRPC status, or a host refusal to make the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcFailure {
    Status(u32),
    NotDispatched(u32),
}

/// Everything a stage wants done, applied by the adapter after each callback.
#[derive(Debug, Default, PartialEq)]
pub struct Outbox {
    /// gRPC calls to make; the request waits for the non-detached ones.
    pub calls: Vec<GrpcCall>,
    pub request_headers: Vec<HeaderEdit>,
    pub response_headers: Vec<HeaderEdit>,
    pub metrics: Vec<MetricOp>,
    /// Filter state for access logs: `(key, value)`, key without Envoy's `wasm.` prefix.
    pub filter_state: Vec<(std::borrow::Cow<'static, str>, String)>,
    /// Log lines. Never prompt text, response text or credentials.
    pub logs: Vec<(LogLevel, String)>,
    /// Reset the stream (after a stage ended the answer early: the upstream stops generating).
    /// Asked from the chunk after the one that carried the end, so that one reaches the client.
    pub reset_stream: bool,
}

impl Outbox {
    pub fn counter(&mut self, name: impl Into<std::rc::Rc<str>>, value: u64) {
        if value > 0 {
            self.metrics.push(MetricOp::Counter { name: name.into(), value });
        }
    }

    pub fn histogram(&mut self, name: impl Into<std::rc::Rc<str>>, value: u64) {
        self.metrics.push(MetricOp::Histogram { name: name.into(), value });
    }

    /// Sets filter state `key`; an empty value is not written (each write is a host call; an
    /// access log shows an absent key as `-`/null).
    pub fn state(&mut self, key: impl Into<std::borrow::Cow<'static, str>>, value: impl Into<String>) {
        let value = value.into();
        if !value.is_empty() {
            self.filter_state.push((key.into(), value));
        }
    }

    pub fn log(&mut self, level: LogLevel, message: impl Into<String>) {
        self.logs.push((level, message.into()));
    }

    pub fn is_empty(&self) -> bool {
        *self == Outbox::default()
    }
}

/// What to do with the request headers.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadersFlow {
    Continue,
    /// Hold the headers until the body decision (needs `allow_on_headers_stop_iteration`).
    Pause,
    Reply(Error, Dialect),
    /// The gateway itself answers (the model list): no upstream.
    Answer(Answer),
}

/// A successful answer made by the gateway (not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// What to do after a request body callback.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyFlow {
    /// Keep buffering (the adapter returns `Pause`).
    Buffer,
    /// Forward the body; `Some` replaces it (the adapter fixes `content-length`).
    Continue(Option<Vec<u8>>),
    /// Like `Continue`, but hold the request until the stages' gRPC calls are answered.
    Wait(Option<Vec<u8>>),
    /// Replace what Envoy holds of the body (not all of it yet: `content-length` is adjusted,
    /// if the headers are still held) and keep buffering.
    Hold(Vec<u8>),
    Reply(Error, Dialect),
}

/// What to do after a gRPC response.
#[derive(Debug, Clone, PartialEq)]
pub enum GrpcFlow {
    /// Other calls are still pending (or the request is not waiting).
    Wait,
    /// The last call is answered: let the held request go.
    Resume,
    Reply(Error, Dialect),
}

/// What the pipeline learned about the request, shared by every stage.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub route: Route,
    /// Nanoseconds at request headers.
    pub started_ns: u64,
    /// The one parse of the body, once it is complete (`None` before, or when not parseable).
    pub parsed: Option<Parsed>,
    /// Why the body was not parsed, as a metric reason.
    pub unparsed_reason: Option<&'static str>,
    /// Why the body could not be read, as the client's error (with `unparsed_reason`): the
    /// encoding or content type that kept it unread, or the field at fault in JSON that is not
    /// this API's request. `None` for a body that is not JSON.
    pub unreadable: Option<Error>,
    /// Whether the request body was forwarded with `stream_options.include_usage` added.
    pub injected_include_usage: bool,
    /// The usage the response reported, handed by the token-counter stage to the stages after
    /// it (quota settles with it). Set in `done`, where stages run in order.
    pub usage: std::cell::Cell<Option<ReportedUsage>>,
    /// Where the request really goes, when a stage (provider-rewrite) sends it to another API
    /// than the client spoke: responses arrive in that API's format.
    pub upstream: Option<Upstream>,
    /// The caller's tier as provider-rewrite's access policy decided it, for the stages after
    /// it (quota limits by it when it has a tier of that name).
    pub tier: Option<String>,
    /// A whole new body written by a stage (guardrails' masking): later stages see it, freshly
    /// parsed, instead of the client's.
    pub replacement: Option<Vec<u8>>,
}

/// The API and provider a rewritten request is sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub kind: crate::route::ApiKind,
    /// Provider label (`openai`, `anthropic`, …) for metrics.
    pub provider: &'static str,
    /// The model id sent upstream.
    pub model: String,
}

/// Usage as the token-counter stage read it, for later stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedUsage {
    pub usage: crate::usage::Usage,
    /// False after a reset: the provider's final figures never arrived.
    pub complete: bool,
}

impl Exchange {
    pub fn dialect(&self) -> Dialect {
        self.route.kind.dialect()
    }

    /// The API the upstream answers in (the client's unless a stage rerouted the request).
    pub fn upstream_kind(&self) -> crate::route::ApiKind {
        self.upstream.as_ref().map_or(self.route.kind, |u| u.kind)
    }

    /// The provider label of the upstream.
    pub fn provider(&self) -> &'static str {
        self.upstream.as_ref().map_or(self.route.provider, |u| u.provider)
    }

    /// The request's model: from the body, or from the path (Gemini, Bedrock, Azure deployment).
    pub fn request_model(&self) -> Option<&str> {
        self.parsed.as_ref().and_then(|p| p.info.model.as_deref()).or(self.route.path_model.as_deref())
    }

    /// The refusal of a stage that must read the body and could not (`parsed` is `None`): the
    /// encoding or type that kept it unread, the field at fault, or else `detail`'s invalid JSON.
    pub fn unreadable_error(&self, detail: &str) -> Error {
        self.unreadable.clone().unwrap_or_else(|| Error::InvalidJson { detail: detail.into() })
    }

    pub fn streaming(&self) -> bool {
        match self.route.kind {
            crate::route::ApiKind::GeminiGenerate { stream }
            | crate::route::ApiKind::BedrockConverse { stream }
            | crate::route::ApiKind::BedrockInvoke { stream } => stream,
            _ => self.parsed.as_ref().is_some_and(|p| p.info.stream),
        }
    }
}

/// Head of the request as the pipeline needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `:method`, `:path`, `:authority`. Stages that need other headers read them through
    /// [`StageHost`] (each read is a host call, so only when needed).
    pub method: String,
    pub path: String,
    pub authority: String,
    /// Read only when a request size limit is configured.
    pub content_length: Option<u64>,
    /// Whether a body follows the headers.
    pub has_body: bool,
}

/// Head of the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub has_body: bool,
}

/// One filter's per-stream behaviour. Every method has a do-nothing default.
pub trait Stage {
    /// Called for AI requests only (the pipeline skips everything else).
    fn request_headers(
        &mut self,
        _ex: &mut Exchange,
        _head: &RequestHead,
        _host: &dyn StageHost,
        _out: &mut Outbox,
    ) -> HeadersFlow {
        HeadersFlow::Continue
    }

    /// Whether this stage needs the complete request body before the request may proceed.
    fn needs_request_body(&self, _ex: &Exchange, _head: &RequestHead) -> bool {
        false
    }

    /// The body is complete and parsed: decide where the request goes (`ex.upstream`), before
    /// any stage's `request_body` runs, so that every stage knows. May refuse.
    fn plan(&mut self, _ex: &mut Exchange, _host: &dyn StageHost, _out: &mut Outbox) -> Result<(), (Error, Dialect)> {
        Ok(())
    }

    /// The body is complete and parsed once into `ex.parsed` (if it could be). The stage may
    /// add splices (applied once by the pipeline) or refuse.
    fn request_body(
        &mut self,
        _ex: &mut Exchange,
        _body: &[u8],
        _splices: &mut Vec<Splice>,
        _host: &dyn StageHost,
        _out: &mut Outbox,
    ) -> Result<(), (Error, Dialect)> {
        Ok(())
    }

    /// Response headers; other headers than the head's are read through `host` (host calls).
    fn response_headers(&mut self, _ex: &Exchange, _head: &ResponseHead, _host: &dyn StageHost, _out: &mut Outbox) {}

    /// Whether the stage reads the answer as the client will get it (after every other
    /// stage's rewrite, as a filter placed before them in Envoy's chain would): guardrails.
    fn reads_client_answer(&self) -> bool {
        false
    }

    /// Whether this stage reads a form's text fields wherever they are — before its files or
    /// after them — as the body passes (`Some`), and may rewrite them (`Some(true)`).
    fn reads_form_fields(&self, _ex: &Exchange) -> Option<bool> {
        None
    }

    /// A text field of a form, its value as sent (after the `request_body` of every stage).
    /// `Some` replaces the value.
    fn form_field(
        &mut self,
        _ex: &mut Exchange,
        _name: &str,
        _value: &[u8],
        _out: &mut Outbox,
    ) -> Result<Option<Vec<u8>>, (Error, Dialect)> {
        Ok(None)
    }

    /// The form cannot be followed further (`reason`, for a metric): its fields from here on
    /// go unread. May refuse the request.
    fn form_unreadable(
        &mut self,
        _ex: &Exchange,
        _reason: &'static str,
        _out: &mut Outbox,
    ) -> Result<(), (Error, Dialect)> {
        Ok(())
    }

    /// A response body chunk. Returning `Some` replaces the chunk sent to the client.
    fn response_chunk(
        &mut self,
        _ex: &Exchange,
        _chunk: &[u8],
        _end_of_stream: bool,
        _now: &Now<'_>,
        _host: &dyn StageHost,
        _out: &mut Outbox,
    ) -> Option<Vec<u8>> {
        None
    }

    /// The answer to one of this stage's gRPC calls (`tag` as the stage set it). An error
    /// refuses the request. Calls made from here must be detached: the request waits only for
    /// the calls made with the body.
    fn grpc_response(
        &mut self,
        _ex: &mut Exchange,
        _tag: u32,
        _response: Result<&[u8], GrpcFailure>,
        _host: &dyn StageHost,
        _out: &mut Outbox,
    ) -> Result<(), (Error, Dialect)> {
        Ok(())
    }

    /// The stream is over (completed, reset or refused). Called exactly once.
    fn done(&mut self, _ex: &Exchange, _completed: bool, _now: &Now<'_>, _host: &dyn StageHost, _out: &mut Outbox) {}
}

/// Creates the stages of a pipeline for each new stream.
pub trait StageFactory {
    fn create(&self) -> Box<dyn Stage>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestState {
    /// Not an AI request: every callback is a no-op.
    Bypass,
    /// Headers seen; no body wanted (or none coming).
    Forwarded,
    /// Collecting the body for the stages.
    Buffering,
    /// The body decision is made, but gRPC calls are pending.
    Waiting,
    /// The body decision is made.
    Done,
}

/// Envoy's response code details of every local reply a Tollgate filter sends, which tells
/// them apart from the replies Envoy makes for an upstream it could not reach.
pub const LOCAL_REPLY_DETAILS: &str = "tollgate";

/// The stages of one stream, in order, over one [`Exchange`].
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
    exchange: Option<Exchange>,
    request: RequestState,
    /// Bodies larger than this are refused with 413 before Envoy's own limit is hit.
    max_request_bytes: Option<u64>,
    /// Where the request's API path is read from, when not `:path` (an upstream filter on a
    /// retry sees the headers a previous attempt rewrote; the downstream stage keeps the
    /// client's path in this header). Opt-in: a client must not choose how it is classified.
    route_header: Option<&'static str>,
    /// Envoy answered for the provider (413 to the body we were buffering, 503 for a reset, 504
    /// for a timeout): its plain-text local reply becomes this error, in the client's dialect.
    reword: Option<Error>,
    finished: bool,
    /// gRPC calls the request waits for.
    pending: usize,
    /// A form whose fields stages read as it passes.
    form: Option<crate::form::FormWalker>,
}

impl Pipeline {
    pub fn new(stages: Vec<Box<dyn Stage>>, max_request_bytes: Option<u64>) -> Self {
        Pipeline {
            stages,
            exchange: None,
            request: RequestState::Bypass,
            max_request_bytes,
            reword: None,
            route_header: None,
            finished: false,
            pending: 0,
            form: None,
        }
    }

    /// Reads the request's API path from `header` (falling back to `:path`).
    pub fn with_route_header(mut self, header: Option<&'static str>) -> Self {
        self.route_header = header;
        self
    }

    pub fn exchange(&self) -> Option<&Exchange> {
        self.exchange.as_ref()
    }

    /// Whether this stream is AI traffic the stages act on.
    pub fn active(&self) -> bool {
        self.exchange.is_some()
    }

    /// Whether the request body is still being collected (Envoy's own 413 then is ours to word).
    pub fn buffering_request(&self) -> bool {
        self.request == RequestState::Buffering || self.form.as_ref().is_some_and(crate::form::FormWalker::holding)
    }

    /// Request headers. Reads only what it needs through `host`: a request that is not a
    /// `POST` costs one header read, a `POST` to another path two, and the clock is read only
    /// for AI traffic.
    pub fn request_headers(
        &mut self,
        host: &dyn StageHost,
        has_body: bool,
        now_ns: impl FnOnce() -> u64,
        out: &mut Outbox,
    ) -> HeadersFlow {
        self.request = RequestState::Bypass;
        let header = |name: &str| host.request_header(name).unwrap_or_default();
        let method = header(":method");
        if !method.eq_ignore_ascii_case("POST") && !method.eq_ignore_ascii_case("GET") {
            return HeadersFlow::Continue;
        }
        let path = match self.route_header.and_then(|name| host.request_header(name)) {
            Some(path) => path,
            None => header(":path"),
        };
        if !crate::route::may_be_ai(&path) {
            return HeadersFlow::Continue;
        }
        let authority = header(":authority");
        let Some(route) = crate::route::classify(&method, &path, &authority) else {
            return HeadersFlow::Continue;
        };
        let head = RequestHead {
            content_length: self
                .max_request_bytes
                .and_then(|_| host.request_header("content-length"))
                .and_then(|v| v.trim().parse().ok()),
            method,
            path,
            authority,
            has_body,
        };
        let head = &head;
        let now_ns = now_ns();
        let mut ex = Exchange {
            route,
            started_ns: now_ns,
            parsed: None,
            unparsed_reason: None,
            unreadable: None,
            injected_include_usage: false,
            usage: std::cell::Cell::new(None),
            upstream: None,
            tier: None,
            replacement: None,
        };
        // A form's file is passed on as it comes, whatever its size (only its head is held).
        let limit = self.max_request_bytes.filter(|_| !ex.route.kind.reads_form());
        if let (Some(limit), Some(length)) = (limit, head.content_length) {
            if length > limit {
                let dialect = ex.dialect();
                self.exchange = Some(ex);
                self.request = RequestState::Done;
                return reply(Error::PayloadTooLarge { limit_bytes: Some(limit) }, dialect, out).into();
            }
        }
        let mut flow = HeadersFlow::Continue;
        for stage in &mut self.stages {
            match stage.request_headers(&mut ex, head, host, out) {
                HeadersFlow::Continue => {}
                HeadersFlow::Pause => flow = HeadersFlow::Pause,
                HeadersFlow::Reply(error, dialect) => {
                    self.exchange = Some(ex);
                    self.request = RequestState::Done;
                    return reply(error, dialect, out).into();
                }
                HeadersFlow::Answer(answer) => {
                    self.exchange = Some(ex);
                    self.request = RequestState::Done;
                    return HeadersFlow::Answer(answer);
                }
            }
        }
        let wants_body = head.has_body && self.stages.iter().any(|s| s.needs_request_body(&ex, head));
        self.request =
            if wants_body && ex.unparsed_reason.is_none() { RequestState::Buffering } else { RequestState::Forwarded };
        if self.request != RequestState::Buffering && flow == HeadersFlow::Pause {
            flow = HeadersFlow::Continue;
        }
        self.exchange = Some(ex);
        flow
    }

    /// A request body callback: `buffered` is what Envoy holds so far, `body` the whole body
    /// when `end_of_stream` (or at request trailers).
    pub fn request_body(
        &mut self,
        buffered: u64,
        end_of_stream: bool,
        body: impl FnOnce() -> Option<Vec<u8>>,
        host: &dyn StageHost,
        out: &mut Outbox,
    ) -> BodyFlow {
        if self.form.is_some() {
            return self.form_body(end_of_stream, body, out);
        }
        if self.request == RequestState::Waiting {
            // A form's file keeps coming while its head waits for the answers: held too.
            return BodyFlow::Buffer;
        }
        if self.request != RequestState::Buffering {
            return BodyFlow::Continue(None);
        }
        let Some(ex) = self.exchange.as_mut() else {
            return BodyFlow::Continue(None);
        };
        if ex.route.kind.reads_form() {
            return self.request_form(buffered, end_of_stream, body, host, out);
        }
        if let Some(limit) = self.max_request_bytes {
            if buffered > limit {
                self.request = RequestState::Done;
                let (error, dialect) = reply(Error::PayloadTooLarge { limit_bytes: Some(limit) }, ex.dialect(), out);
                return BodyFlow::Reply(error, dialect);
            }
        }
        if !end_of_stream {
            return BodyFlow::Buffer;
        }
        self.request = RequestState::Done;
        let Some(body) = body() else {
            ex.unparsed_reason = Some("request_body_unavailable");
            return BodyFlow::Continue(None);
        };
        match crate::request::parse(ex.route.kind, &body) {
            Ok(parsed) => ex.parsed = Some(parsed),
            // Only now, on failure, are the headers that explain it read (host calls).
            Err(_) => {
                let (reason, error) = body_unreadable(host, ex.route.kind, &body);
                ex.unparsed_reason = Some(reason);
                ex.unreadable = error;
            }
        }
        self.run_stages(body, true, host, out)
    }

    /// Plans and runs every stage on the read `body`; `rewritable` lets stages change it (a
    /// form's head is passed on as it came). Holds the request while stages' calls are pending.
    fn run_stages(&mut self, body: Vec<u8>, rewritable: bool, host: &dyn StageHost, out: &mut Outbox) -> BodyFlow {
        let Some(ex) = self.exchange.as_mut() else {
            return BodyFlow::Continue(None);
        };
        for stage in &mut self.stages {
            if let Err((error, dialect)) = stage.plan(ex, host, out) {
                let (error, dialect) = reply(error, dialect, out);
                return BodyFlow::Reply(error, dialect);
            }
        }
        let mut splices = Vec::new();
        let mut body = body;
        let mut replaced = false;
        for (index, stage) in self.stages.iter_mut().enumerate() {
            let before = out.calls.len();
            let result = stage.request_body(ex, &body, &mut splices, host, out);
            if let Some(new_body) = ex.replacement.take().filter(|_| rewritable) {
                // Earlier splices are part of the new body; later stages read it, re-parsed
                // (a second parse, only for a rewritten request).
                body = new_body;
                splices.clear();
                replaced = true;
                if let Ok(parsed) = crate::request::parse(ex.route.kind, &body) {
                    ex.parsed = Some(parsed);
                }
            }
            for call in out.calls.iter_mut().skip(before) {
                call.stage = index;
            }
            if let Err((error, dialect)) = result {
                out.calls.retain(|c| c.detached);
                let (error, dialect) = reply(error, dialect, out);
                return BodyFlow::Reply(error, dialect);
            }
        }
        let body = if splices.is_empty() || !rewritable {
            replaced.then_some(body)
        } else {
            Some(crate::request::apply_splices(&body, &mut splices))
        };
        self.pending = out.calls.iter().filter(|c| !c.detached).count();
        if self.pending > 0 {
            self.request = RequestState::Waiting;
            BodyFlow::Wait(body)
        } else {
            BodyFlow::Continue(body)
        }
    }

    /// A form body (an audio transcription's): held only until its leading text fields are read
    /// (the file's part begins, the body ends, or [`crate::request::FORM_PREFIX_BYTES`] are
    /// held), then passed on unchanged, the rest as it comes. The stages see what the fields
    /// tell in [`Exchange::parsed`], and the prefix as the body.
    fn request_form(
        &mut self,
        buffered: u64,
        end_of_stream: bool,
        body: impl FnOnce() -> Option<Vec<u8>>,
        host: &dyn StageHost,
        out: &mut Outbox,
    ) -> BodyFlow {
        let Some(ex) = self.exchange.as_mut() else {
            return BodyFlow::Continue(None);
        };
        let held = usize::try_from(buffered).unwrap_or(usize::MAX);
        if !end_of_stream && held < FORM_FIRST_LOOK {
            return BodyFlow::Buffer; // not worth a read yet
        }
        let content_type = host.request_header("content-type").unwrap_or_default();
        let prefix = body().unwrap_or_default();
        let parsed = match crate::request::form_boundary(&content_type) {
            Some(boundary) => crate::request::parse_form_prefix(boundary, &prefix, end_of_stream),
            None => crate::request::FormPrefix::NotAForm,
        };
        match parsed {
            crate::request::FormPrefix::NeedMore => return BodyFlow::Buffer,
            crate::request::FormPrefix::Ready(parsed) => ex.parsed = Some(*parsed),
            crate::request::FormPrefix::NotAForm => ex.unparsed_reason = Some("not_a_form"),
        }
        self.request = RequestState::Done;
        // The form is walked for the stages that read its fields, or to learn a model named after
        // the file (curl's `-F file=@… -F model=…`).
        let late_model = ex.parsed.as_ref().is_some_and(|p| p.info.model.is_none());
        let rewrites = self.stages.iter().filter_map(|s| s.reads_form_fields(ex)).reduce(|a, b| a || b);
        let rewrites = rewrites.or(late_model.then_some(false));
        let boundary = crate::request::form_boundary(&content_type).filter(|_| ex.parsed.is_some());
        let (Some(rewrites), Some(boundary)) = (rewrites, boundary) else {
            return self.run_stages(prefix, false, host, out);
        };
        // Stages read every text field as the form passes: from its first byte, once every
        // stage has seen the head.
        self.form = Some(crate::form::FormWalker::new(boundary));
        let flow = self.run_stages(prefix.clone(), false, host, out);
        if let BodyFlow::Reply(..) = flow {
            self.form = None;
            return flow;
        }
        let walked = self.form_body(end_of_stream, || Some(prefix), out);
        let flow = match (flow, walked) {
            // Held for the calls (the walk goes on as the body comes).
            (BodyFlow::Wait(_), BodyFlow::Hold(data) | BodyFlow::Continue(Some(data))) => BodyFlow::Wait(Some(data)),
            (BodyFlow::Wait(_), walked @ BodyFlow::Reply(..)) => walked,
            (BodyFlow::Wait(_), _) => BodyFlow::Wait(None),
            (_, walked) => walked,
        };
        if rewrites && self.form.is_some() {
            // A field yet to come may be rewritten after the headers have gone: the length is unknown.
            out.request_headers.push(HeaderEdit::Remove("content-length"));
        }
        flow
    }

    /// A form's body as it passes, read by the stages that read its fields (see
    /// [`crate::form`]): held only while a field (or a part's headers) is incomplete, or while
    /// gRPC calls are pending; a field a stage rewrites is rewritten where Envoy holds it.
    fn form_body(&mut self, end_of_stream: bool, body: impl FnOnce() -> Option<Vec<u8>>, out: &mut Outbox) -> BodyFlow {
        use crate::form::Next;
        let waiting = self.request == RequestState::Waiting;
        let (Some(walker), Some(ex)) = (self.form.as_mut(), self.exchange.as_mut()) else {
            return BodyFlow::Continue(None);
        };
        let mut unreadable = None;
        let mut changed = false;
        let mut data = body().unwrap_or_default();
        let hold = loop {
            match walker.next(&data) {
                Next::Field { name, value } => {
                    if let Some(parsed) = ex.parsed.as_mut() {
                        crate::request::form_field_info(
                            &mut parsed.info,
                            &name,
                            data.get(value.clone()).unwrap_or_default(),
                        );
                    }
                    let mut replacement: Option<Vec<u8>> = None;
                    for stage in &mut self.stages {
                        let current = match &replacement {
                            Some(new) => new.as_slice(),
                            None => data.get(value.clone()).unwrap_or_default(),
                        };
                        match stage.form_field(ex, &name, current, out) {
                            Ok(Some(new)) => replacement = Some(new),
                            Ok(None) => {}
                            Err((error, dialect)) => {
                                self.form = None;
                                self.request = RequestState::Done;
                                let (error, dialect) = reply(error, dialect, out);
                                return BodyFlow::Reply(error, dialect);
                            }
                        }
                    }
                    if let Some(new) = replacement {
                        let old = value.len();
                        walker.replaced(old, new.len());
                        data.splice(value, new);
                        changed = true;
                    }
                }
                Next::NeedMore if !end_of_stream => break true,
                Next::NeedMore => {
                    unreadable = Some("form_unterminated");
                    break false;
                }
                Next::Release => {
                    if end_of_stream {
                        unreadable = Some("form_unterminated");
                    } else if !waiting {
                        walker.released();
                    }
                    break false;
                }
                Next::Done => {
                    self.form = None;
                    break false;
                }
                Next::Unreadable(reason) => {
                    unreadable = Some(reason);
                    break false;
                }
            }
        };
        if let Some(reason) = unreadable {
            self.form = None;
            for stage in &mut self.stages {
                if let Err((error, dialect)) = stage.form_unreadable(ex, reason, out) {
                    self.request = RequestState::Done;
                    let (error, dialect) = reply(error, dialect, out);
                    return BodyFlow::Reply(error, dialect);
                }
            }
        }
        let data = changed.then_some(data);
        match (hold || waiting, data) {
            (true, Some(data)) => BodyFlow::Hold(data),
            (true, None) => BodyFlow::Buffer,
            (false, data) => BodyFlow::Continue(data),
        }
    }

    /// Whether the request is held for gRPC answers.
    pub fn waiting(&self) -> bool {
        self.request == RequestState::Waiting
    }

    /// The answer to a call of stage `stage`. The request goes on when the last pending call
    /// is answered; the first refusal answers the client at once.
    pub fn grpc_response(
        &mut self,
        stage: usize,
        tag: u32,
        response: Result<&[u8], GrpcFailure>,
        host: &dyn StageHost,
        out: &mut Outbox,
    ) -> GrpcFlow {
        if self.request != RequestState::Waiting {
            return GrpcFlow::Wait;
        }
        let Some(ex) = self.exchange.as_mut() else {
            return GrpcFlow::Wait;
        };
        self.pending = self.pending.saturating_sub(1);
        let result = match self.stages.get_mut(stage) {
            Some(s) => s.grpc_response(ex, tag, response, host, out),
            None => Ok(()),
        };
        for call in out.calls.iter_mut() {
            call.stage = stage;
        }
        out.calls.retain(|c| c.detached);
        match result {
            Err((error, dialect)) => {
                self.request = RequestState::Done;
                let (error, dialect) = reply(error, dialect, out);
                GrpcFlow::Reply(error, dialect)
            }
            Ok(()) if self.pending == 0 => {
                self.request = RequestState::Done;
                match self.form.as_mut() {
                    // A form's field is not whole yet: the body callback that completes it lets
                    // the request go.
                    Some(walker) if walker.holding() => GrpcFlow::Wait,
                    Some(walker) => {
                        walker.released();
                        GrpcFlow::Resume
                    }
                    None => GrpcFlow::Resume,
                }
            }
            Ok(()) => GrpcFlow::Wait,
        }
    }

    /// The host refused the rewritten body: the upstream got the original, so nothing the
    /// stages added (such as `include_usage`) is in effect.
    pub fn body_rewrite_failed(&mut self) {
        if let Some(ex) = self.exchange.as_mut() {
            ex.injected_include_usage = false;
        }
    }

    pub fn response_headers(&mut self, head: &ResponseHead, host: &dyn StageHost, out: &mut Outbox) {
        let Some(ex) = self.exchange.as_ref() else {
            return;
        };
        let reword = if self.request == RequestState::Buffering && head.status == 413 {
            // Envoy refused the body we were buffering (its buffer limit).
            Some(Error::PayloadTooLarge { limit_bytes: None })
        } else if matches!(head.status, 408 | 502..=504) {
            // Read only on these statuses: Envoy's own reply says why in its code details.
            let details = host.property(&["response", "code_details"]).unwrap_or_default();
            let details = String::from_utf8_lossy(&details);
            let envoys = !details.is_empty() && details != "via_upstream" && details != LOCAL_REPLY_DETAILS;
            envoys.then(|| Error::UpstreamFailed { status: head.status, detail: details.chars().take(120).collect() })
        } else {
            None
        };
        if let Some(error) = reword {
            out.response_headers.push(HeaderEdit::Remove("content-length"));
            out.response_headers.push(HeaderEdit::Set("content-type", "application/json".into()));
            out.counter(crate::metrics::name("errors", &[("reason", error.spec().reason)]), 1);
            self.reword = Some(error);
        }
        for stage in &mut self.stages {
            stage.response_headers(ex, head, host, out);
        }
    }

    /// A response chunk flows through every stage; the last replacement wins the wire.
    pub fn response_chunk(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        now: &Now<'_>,
        host: &dyn StageHost,
        out: &mut Outbox,
    ) -> Option<Vec<u8>> {
        let ex = self.exchange.as_ref()?;
        if let Some(error) = &self.reword {
            return Some(if end_of_stream { error.body(ex.dialect()) } else { Vec::new() });
        }
        let mut current: Option<Vec<u8>> = None;
        for last in [false, true] {
            for stage in self.stages.iter_mut().filter(|s| s.reads_client_answer() == last) {
                let input = current.as_deref().unwrap_or(chunk);
                if let Some(replaced) = stage.response_chunk(ex, input, end_of_stream, now, host, out) {
                    current = Some(replaced);
                }
            }
        }
        current
    }

    /// End of the stream; idempotent. `completed` is false for resets and aborted streams.
    pub fn done(&mut self, completed: bool, now: &Now<'_>, host: &dyn StageHost, out: &mut Outbox) {
        if self.finished {
            return;
        }
        self.finished = true;
        let Some(ex) = self.exchange.as_ref() else {
            return;
        };
        for (index, stage) in self.stages.iter_mut().enumerate() {
            let before = out.calls.len();
            stage.done(ex, completed, now, host, out);
            for call in out.calls.iter_mut().skip(before) {
                call.stage = index;
                // Nothing waits for an answer after the stream: every call outlives it.
                call.detached = true;
            }
        }
    }
}

/// Counts a refusal by reason and passes it on.
fn reply(error: Error, dialect: Dialect, out: &mut Outbox) -> (Error, Dialect) {
    out.counter(crate::metrics::name("errors", &[("reason", error.spec().reason)]), 1);
    out.log(LogLevel::Info, format!("refused with {}: {}", error.status(), error.spec().reason));
    (error, dialect)
}

impl From<(Error, Dialect)> for HeadersFlow {
    fn from((error, dialect): (Error, Dialect)) -> Self {
        HeadersFlow::Reply(error, dialect)
    }
}

/// A request body its headers say cannot be read as JSON (compressed, or another content
/// type): the metric reason and the client's error.
pub(crate) fn unreadable_by_headers(host: &dyn StageHost) -> Option<(&'static str, Error)> {
    if let Some(encoding) =
        host.request_header("content-encoding").filter(|e| !e.trim().eq_ignore_ascii_case("identity"))
    {
        return Some(("request_compressed", Error::unsupported_encoding(&encoding)));
    }
    let content_type = host.request_header("content-type").filter(|c| !c.to_ascii_lowercase().contains("json"))?;
    Some(("request_not_json", Error::unsupported_media_type(&content_type)))
}

/// Why a request body that did not parse could not be read: the metric reason, and the
/// client's error when there is more to say than "not valid JSON".
fn body_unreadable(host: &dyn StageHost, kind: crate::route::ApiKind, body: &[u8]) -> (&'static str, Option<Error>) {
    if let Some((reason, error)) = unreadable_by_headers(host) {
        return (reason, Some(error));
    }
    match crate::request::explain(kind, body) {
        Some(error) => ("request_invalid_field", Some(error)),
        None => ("request_malformed_json", None),
    }
}
