//! The proxy-wasm glue every Tollgate filter shares.
//!
//! - [`HttpHost`]: what a filter may ask of the host (headers, bodies, local replies, time,
//!   filter state, metrics, logs), as a trait;
//! - [`Driver`]: turns the proxy-wasm HTTP callbacks into calls on a core
//!   [`Pipeline`](tollgate_core::stage::Pipeline) and applies its decisions, in one place;
//! - [`fake::FakeHost`]: an in-memory host, so the whole per-stream state machine is tested
//!   natively (like Envoy's `filter_test.cc` tests filters against mocks);
//! - `wasm` (wasm32 only): the real host over the raw ABI, where no host status can panic, and
//!   the root context that validates the plugin configuration in `on_configure`.
//!
//! Dependencies point one way: filters → host → core.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

#[cfg(not(target_arch = "wasm32"))]
pub mod fake;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

use tollgate_core::fxhash::FxHashMap;
use tollgate_core::stage::{
    BodyFlow, GrpcCall, GrpcFailure, GrpcFlow, HeaderEdit, HeadersFlow, LogLevel, MetricOp, Now, Outbox, Pipeline,
    ResponseHead, StageFactory, StageHost,
};

/// What a module's configuration parser produces: its stages, in order, and the request size
/// limit. One per VM; each stream gets a fresh [`Pipeline`] from it.
pub struct Spec {
    pub stages: Vec<Box<dyn StageFactory>>,
    pub max_request_bytes: Option<u64>,
    /// Read the API path from this header instead of `:path` (upstream filters only).
    pub route_header: Option<&'static str>,
}

impl Spec {
    pub fn pipeline(&self) -> Pipeline {
        Pipeline::new(self.stages.iter().map(|f| f.create()).collect(), self.max_request_bytes)
            .with_route_header(self.route_header)
    }
}

/// Parses a module's plugin configuration; the error names the field.
pub type ConfigParser = fn(&[u8]) -> Result<Spec, String>;

/// What a filter may do to the stream and the host. Every write reports failure instead of
/// panicking: the host refuses edits in some phases (headers already sent) and that must never
/// take the VM down.
pub trait HttpHost: StageHost {
    fn now_ns(&self) -> u64;
    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError>;
    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError>;
    /// The request body buffered so far (`size` bytes from the start).
    fn request_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Replaces the first `size` bytes of the buffered request body.
    fn set_request_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError>;
    /// The response body chunk of this callback (`size` bytes).
    fn response_body(&self, size: usize) -> Option<Vec<u8>>;
    fn set_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError>;
    fn send_local_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError>;
    /// Lets a request held by `Pause` go on.
    fn resume_request(&mut self) -> Result<(), HostError>;
    /// Resets the stream, downstream and upstream (once the callback returns).
    fn reset_stream(&mut self) -> Result<(), HostError>;
    /// Starts a unary gRPC call; the token identifies its answer. A detached call is made on
    /// behalf of the plugin, so the stream's end does not cancel it, and is never answered.
    fn grpc_call(&mut self, call: &GrpcCall) -> Result<u32, HostError>;
    /// The message of the gRPC answer being delivered (`size` bytes).
    fn grpc_response_body(&self, size: usize) -> Option<Vec<u8>>;
    /// Sets filter state `wasm.<key>` (readable as `%FILTER_STATE(wasm.<key>:PLAIN)%`).
    fn set_filter_state(&mut self, key: &str, value: &str) -> Result<(), HostError>;
    /// Metric names are shared (`Rc`): a host may key its metric ids by the name's address.
    fn counter_add(&mut self, name: &std::rc::Rc<str>, value: u64);
    fn histogram_record(&mut self, name: &std::rc::Rc<str>, value: u64);
    fn log(&self, level: LogLevel, message: &str);
}

/// A header map as `proxy_get_header_map_pairs` returns it, read once per callback: one host
/// call instead of one per header (in Envoy's V8 every call that returns data costs ≈ 1.1 µs,
/// most of it the re-entry into the module to allocate; `bench/host_calls.py`). Layout: `u32`
/// count, then a `u32` name length and value length per header, then each name and value
/// followed by a NUL.
pub struct HeaderPairs {
    bytes: Vec<u8>,
    /// Name and value ranges into `bytes`, in map order.
    entries: Vec<(u32, u32, u32, u32)>,
}

impl HeaderPairs {
    /// `None` when the bytes do not follow the layout (never trusted blindly: a short or
    /// inconsistent buffer yields no snapshot, and the caller reads headers one by one).
    pub fn parse(bytes: Vec<u8>) -> Option<Self> {
        let word = |at: usize| -> Option<u32> { Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?)) };
        let count = word(0)? as usize;
        let mut sizes_at = 4usize;
        let mut data_at = 4usize.checked_add(count.checked_mul(8)?)?;
        if data_at > bytes.len() {
            return None;
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let (name_len, value_len) = (word(sizes_at)? as usize, word(sizes_at + 4)? as usize);
            sizes_at += 8;
            let name_end = data_at.checked_add(name_len)?;
            let value_at = name_end.checked_add(1)?;
            let value_end = value_at.checked_add(value_len)?;
            if bytes.get(name_end) != Some(&0) || bytes.get(value_end) != Some(&0) {
                return None;
            }
            entries.push((data_at as u32, name_end as u32, value_at as u32, value_end as u32));
            data_at = value_end + 1;
        }
        Some(HeaderPairs { bytes, entries })
    }

    /// The first value of `name` (lowercase), as Envoy's `get_header_map_value` returns it.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries.iter().find_map(|&(n0, n1, v0, v1)| {
            (self.bytes.get(n0 as usize..n1 as usize)? == name.as_bytes())
                .then(|| self.bytes.get(v0 as usize..v1 as usize))
                .flatten()
        })
    }
}

/// Encodes headers in the same layout (what `proxy_send_local_response` takes).
pub fn encode_header_pairs<V: AsRef<[u8]>>(headers: &[(&str, V)]) -> Vec<u8> {
    let size = 4 + headers.iter().map(|(k, v)| 10 + k.len() + v.as_ref().len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.as_ref().len() as u32).to_le_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

/// A host call failed; carries the proxy-wasm status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

/// What a callback returns to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// Runs one stream's pipeline on the host's callbacks.
pub struct Driver {
    pipeline: Pipeline,
    /// Request headers were held (`Pause`) and may still be edited.
    request_headers_held: bool,
    response_headers_seen: bool,
    response_complete: bool,
    replied: bool,
    /// Pending gRPC calls: host token → (stage, tag).
    calls: FxHashMap<u32, (usize, u32)>,
}

impl Driver {
    pub fn new(pipeline: Pipeline) -> Self {
        Driver {
            pipeline,
            request_headers_held: false,
            response_headers_seen: false,
            response_complete: false,
            replied: false,
            calls: FxHashMap::default(),
        }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn on_request_headers(&mut self, host: &mut dyn HttpHost, end_of_stream: bool) -> Action {
        let mut out = Outbox::default();
        let flow = self.pipeline.request_headers(&*host, !end_of_stream, || host.now_ns(), &mut out);
        self.request_headers_held = true; // edits made during this callback are always allowed
        let reply_headers = take_reply_headers(matches!(flow, HeadersFlow::Reply(..)), &mut out);
        let _ = self.apply(host, &mut out);
        match flow {
            HeadersFlow::Continue => {
                self.request_headers_held = false;
                Action::Continue
            }
            HeadersFlow::Pause => Action::Pause,
            HeadersFlow::Reply(error, dialect) => self.reply(host, &error, dialect, &reply_headers),
            HeadersFlow::Answer(answer) => {
                self.replied = true;
                let headers = [("content-type", answer.content_type)];
                if let Err(HostError(status)) = host.send_local_reply(answer.status, &headers, &answer.body) {
                    host.log(LogLevel::Error, &format!("local answer failed (host status {status})"));
                    return Action::Continue;
                }
                Action::Pause
            }
        }
    }

    pub fn on_request_body(&mut self, host: &mut dyn HttpHost, body_size: usize, end_of_stream: bool) -> Action {
        if !self.pipeline.active() || self.replied {
            return Action::Continue;
        }
        let mut out = Outbox::default();
        let flow = self.pipeline.request_body(
            body_size as u64,
            end_of_stream,
            || host.request_body(body_size),
            &*host,
            &mut out,
        );
        self.finish_request_body(host, flow, body_size, end_of_stream, out)
    }

    /// Request trailers end the body: a body that ends with trailers is read here, so it is
    /// never waved through unread.
    pub fn on_request_trailers(&mut self, host: &mut dyn HttpHost) -> Action {
        if !self.pipeline.active() || self.replied || !self.pipeline.buffering_request() {
            return Action::Continue;
        }
        let mut out = Outbox::default();
        let body = host.request_body(usize::MAX);
        let size = body.as_ref().map_or(0, Vec::len);
        let flow = self.pipeline.request_body(size as u64, true, || body, &*host, &mut out);
        self.finish_request_body(host, flow, size, true, out)
    }

    fn finish_request_body(
        &mut self,
        host: &mut dyn HttpHost,
        flow: BodyFlow,
        size: usize,
        complete: bool,
        mut out: Outbox,
    ) -> Action {
        let reply_headers = take_reply_headers(matches!(flow, BodyFlow::Reply(..)), &mut out);
        let failed = self.apply(host, &mut out);
        match flow {
            BodyFlow::Buffer => Action::Pause,
            BodyFlow::Hold(body) => {
                self.rewrite_request_body(host, size, &body, false);
                Action::Pause
            }
            BodyFlow::Wait(body) => {
                if let Some(body) = body {
                    self.rewrite_request_body(host, size, &body, complete);
                }
                // Calls the host refused are answered now, as failures.
                for (stage, tag, status) in failed {
                    let failure = Err(GrpcFailure::NotDispatched(status));
                    if let Some(action) = self.grpc_answer(host, stage, tag, failure, true) {
                        return action;
                    }
                }
                Action::Pause
            }
            BodyFlow::Continue(None) => {
                self.request_headers_held = false;
                Action::Continue
            }
            BodyFlow::Continue(Some(body)) => {
                self.rewrite_request_body(host, size, &body, complete);
                self.request_headers_held = false;
                Action::Continue
            }
            BodyFlow::Reply(error, dialect) => self.reply(host, &error, dialect, &reply_headers),
        }
    }

    /// Replaces the `size` bytes Envoy holds with `body`: all of the request's body when
    /// `complete`, else its beginning (a form's, whose declared length then moves by as much).
    fn rewrite_request_body(&mut self, host: &mut dyn HttpHost, size: usize, body: &[u8], complete: bool) {
        match host.set_request_body(size, body) {
            Ok(()) => {
                if self.request_headers_held {
                    let length = if complete {
                        Some(body.len())
                    } else {
                        host.request_header("content-length")
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .map(|declared| (declared + body.len()).saturating_sub(size))
                    };
                    let set = length.map(|length| host.set_request_header("content-length", Some(&length.to_string())));
                    if let Some(Err(_)) = set {
                        host.log(LogLevel::Warn, "could not set content-length after rewriting the request body");
                    }
                }
            }
            Err(HostError(status)) => {
                host.log(
                    LogLevel::Warn,
                    &format!("request body not rewritten (host status {status}); forwarded as sent"),
                );
                self.pipeline.body_rewrite_failed();
            }
        }
    }

    /// The answer to a gRPC call (`status` 0 and `size` bytes of message, or a gRPC status).
    pub fn on_grpc_response(
        &mut self,
        host: &mut dyn HttpHost,
        token: u32,
        status: u32,
        size: usize,
    ) -> Option<Action> {
        let (stage, tag) = self.calls.remove(&token)?;
        let body = if status == 0 { host.grpc_response_body(size) } else { None };
        let response = match (status, &body) {
            (0, Some(bytes)) => Ok(bytes.as_slice()),
            (0, None) => Ok(&[][..]),
            (status, _) => Err(GrpcFailure::Status(status)),
        };
        self.grpc_answer(host, stage, tag, response, false)
    }

    /// Feeds one answer to the pipeline; `Some` when the request was resumed or refused. Inside
    /// the request callback that held the request, resuming is just returning `Continue`.
    fn grpc_answer(
        &mut self,
        host: &mut dyn HttpHost,
        stage: usize,
        tag: u32,
        response: Result<&[u8], GrpcFailure>,
        in_callback: bool,
    ) -> Option<Action> {
        if self.replied {
            return None;
        }
        let mut out = Outbox::default();
        let flow = self.pipeline.grpc_response(stage, tag, response, &*host, &mut out);
        let reply_headers = take_reply_headers(matches!(flow, GrpcFlow::Reply(..)), &mut out);
        let _ = self.apply(host, &mut out);
        match flow {
            GrpcFlow::Wait => None,
            GrpcFlow::Resume => {
                self.request_headers_held = false;
                if in_callback {
                    return Some(Action::Continue);
                }
                if let Err(HostError(status)) = host.resume_request() {
                    host.log(LogLevel::Error, &format!("could not resume the request (host status {status})"));
                }
                Some(Action::Continue)
            }
            GrpcFlow::Reply(error, dialect) => Some(self.reply(host, &error, dialect, &reply_headers)),
        }
    }

    /// Applies an outbox; gRPC calls are made here. Returns the non-detached calls the host
    /// refused, as (stage, tag, host status).
    fn apply(&mut self, host: &mut dyn HttpHost, out: &mut Outbox) -> Vec<(usize, u32, u32)> {
        let mut failed = Vec::new();
        for call in out.calls.drain(..) {
            match host.grpc_call(&call) {
                Ok(token) if !call.detached => {
                    self.calls.insert(token, (call.stage, call.tag));
                }
                Ok(_) => {}
                Err(HostError(status)) => {
                    host.log(
                        LogLevel::Warn,
                        &format!("gRPC call to cluster {} not made (host status {status})", call.cluster),
                    );
                    if !call.detached {
                        failed.push((call.stage, call.tag, status));
                    }
                }
            }
        }
        apply(host, out);
        failed
    }

    pub fn on_response_headers(&mut self, host: &mut dyn HttpHost, end_of_stream: bool) -> Action {
        self.response_headers_seen = true;
        if !self.pipeline.active() {
            return Action::Continue;
        }
        let head = ResponseHead {
            status: host.response_header(":status").and_then(|s| s.parse().ok()).unwrap_or(0),
            content_type: host.response_header("content-type"),
            content_encoding: host.response_header("content-encoding"),
            has_body: !end_of_stream,
        };
        let mut out = Outbox::default();
        self.pipeline.response_headers(&head, &*host, &mut out);
        let _ = self.apply(host, &mut out);
        if end_of_stream {
            self.response_complete = true;
            self.done(host, true);
        }
        Action::Continue
    }

    pub fn on_response_body(&mut self, host: &mut dyn HttpHost, body_size: usize, end_of_stream: bool) -> Action {
        if !self.pipeline.active() {
            return Action::Continue;
        }
        let chunk = if body_size > 0 { host.response_body(body_size).unwrap_or_default() } else { Vec::new() };
        let mut out = Outbox::default();
        let clock = || host.now_ns();
        let replacement = self.pipeline.response_chunk(&chunk, end_of_stream, &Now::new(&clock), &*host, &mut out);
        let _ = self.apply(host, &mut out);
        // Replacing a chunk costs a host call and a buffer copy: only when it really changed.
        if let Some(bytes) = replacement.filter(|bytes| *bytes != chunk) {
            if let Err(HostError(status)) = host.set_response_body(body_size, &bytes) {
                host.log(LogLevel::Warn, &format!("response chunk not rewritten (host status {status})"));
            }
        }
        if end_of_stream {
            self.response_complete = true;
            self.done(host, true);
        }
        // Never Pause: an observed stream is never buffered.
        Action::Continue
    }

    pub fn on_response_trailers(&mut self, host: &mut dyn HttpHost) -> Action {
        if !self.pipeline.active() {
            return Action::Continue;
        }
        let mut out = Outbox::default();
        let clock = || host.now_ns();
        // Trailers end the body; bytes a rewriting stage still held cannot be sent after them.
        let _ = self.pipeline.response_chunk(&[], true, &Now::new(&clock), &*host, &mut out);
        let _ = self.apply(host, &mut out);
        self.response_complete = true;
        self.done(host, true);
        Action::Continue
    }

    /// The stream is over; finishes it if the response never ended (reset, abort).
    pub fn on_log(&mut self, host: &mut dyn HttpHost) {
        let completed = self.response_complete;
        self.done(host, completed);
    }

    fn done(&mut self, host: &mut dyn HttpHost, completed: bool) {
        let mut out = Outbox::default();
        let clock = || host.now_ns();
        self.pipeline.done(completed, &Now::new(&clock), &*host, &mut out);
        let _ = self.apply(host, &mut out);
    }

    fn reply(
        &mut self,
        host: &mut dyn HttpHost,
        error: &tollgate_core::error::Error,
        dialect: tollgate_core::error::Dialect,
        extra: &[(&'static str, String)],
    ) -> Action {
        self.replied = true;
        let mut headers = error.dialect_headers(dialect);
        headers.extend(extra.iter().filter(|(k, _)| !headers.iter().any(|(h, _)| h == k)).cloned().collect::<Vec<_>>());
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if let Err(HostError(status)) = host.send_local_reply(error.status(), &headers, &error.body(dialect)) {
            host.log(LogLevel::Error, &format!("local reply failed (host status {status})"));
            return Action::Continue;
        }
        Action::Pause
    }
}

/// When a callback ends in a local reply, the response headers stages asked for (rate-limit
/// headers, say) belong on that reply: there will be no other response.
fn take_reply_headers(replying: bool, out: &mut Outbox) -> Vec<(&'static str, String)> {
    if !replying {
        return Vec::new();
    }
    out.response_headers
        .drain(..)
        .filter_map(|edit| match edit {
            HeaderEdit::Set(name, value) => Some((name, value)),
            HeaderEdit::Remove(_) => None,
        })
        .collect()
}

/// Applies a pipeline's decisions to the host. Failures are logged, never fatal.
fn apply(host: &mut dyn HttpHost, out: &mut Outbox) {
    if std::mem::take(&mut out.reset_stream) {
        if let Err(HostError(status)) = host.reset_stream() {
            host.log(LogLevel::Warn, &format!("stream not reset (host status {status})"));
        }
    }
    for edit in out.request_headers.drain(..) {
        let result = match &edit {
            HeaderEdit::Set(name, value) => host.set_request_header(name, Some(value)),
            HeaderEdit::Remove(name) => host.set_request_header(name, None),
        };
        if let Err(HostError(status)) = result {
            host.log(LogLevel::Warn, &format!("request header edit refused (host status {status})"));
        }
    }
    for edit in out.response_headers.drain(..) {
        let result = match &edit {
            HeaderEdit::Set(name, value) => host.set_response_header(name, Some(value)),
            HeaderEdit::Remove(name) => host.set_response_header(name, None),
        };
        if let Err(HostError(status)) = result {
            host.log(LogLevel::Warn, &format!("response header edit refused (host status {status})"));
        }
    }
    for metric in out.metrics.drain(..) {
        match metric {
            MetricOp::Counter { name, value } => host.counter_add(&name, value),
            MetricOp::Histogram { name, value } => host.histogram_record(&name, value),
        }
    }
    for (key, value) in out.filter_state.drain(..) {
        if let Err(HostError(status)) = host.set_filter_state(&key, &value) {
            host.log(LogLevel::Debug, &format!("filter state {key} not set (host status {status})"));
        }
    }
    for (level, message) in out.logs.drain(..) {
        host.log(level, &message);
    }
}

#[cfg(test)]
mod tests {
    use super::encode_header_pairs as encode;
    use super::HeaderPairs;

    #[test]
    fn reads_headers_as_envoy_returns_them() {
        let map = [
            (":method", &b"POST"[..]),
            (":path", b"/v1/chat/completions"),
            ("x-empty", b""),
            ("accept", b"a"),
            ("accept", b"b"),
            ("x-bytes", b"\xff\x00z"),
        ];
        let pairs = HeaderPairs::parse(encode(&map)).unwrap();
        assert_eq!(pairs.get(":method"), Some(&b"POST"[..]));
        assert_eq!(pairs.get(":path"), Some(&b"/v1/chat/completions"[..]));
        assert_eq!(pairs.get("x-empty"), Some(&b""[..]));
        assert_eq!(pairs.get("accept"), Some(&b"a"[..]), "the first value, as get_header_map_value");
        assert_eq!(pairs.get("x-bytes"), Some(&b"\xff\x00z"[..]), "lengths, not NULs, delimit values");
        assert_eq!(pairs.get("content-type"), None);
        assert_eq!(pairs.get(":METHOD"), None);
        assert!(HeaderPairs::parse(encode::<&[u8]>(&[])).unwrap().get(":path").is_none());
    }

    #[test]
    fn a_malformed_map_yields_no_snapshot_and_never_panics() {
        let good = encode(&[(":status", &b"200"[..]), ("content-type", b"application/json")]);
        for len in 0..good.len() {
            assert!(HeaderPairs::parse(good[..len].to_vec()).is_none(), "truncated at {len}");
        }
        let mut huge_count = good.clone();
        huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderPairs::parse(huge_count).is_none());
        let mut huge_len = good.clone();
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderPairs::parse(huge_len).is_none());
        let mut no_nul = good;
        let at = 4 + 16 + ":status".len();
        no_nul[at] = b'x';
        assert!(HeaderPairs::parse(no_nul).is_none());
    }
}
