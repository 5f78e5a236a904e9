//! An in-memory host for native tests of the whole per-stream state machine.
//!
//! It records what a real Envoy would see: header maps, the buffered request body, the response
//! chunks the client receives (after any rewrite), local replies, filter state, metrics by full
//! stat name, and log lines. Phases are modelled where Envoy enforces them: request headers can
//! only be edited while held, as Envoy refuses edits after they were continued.

use crate::{Action, Driver, HostError, HttpHost};
use std::collections::BTreeMap;
use std::rc::Rc;
use tollgate_core::quota::store::MemoryStore;
use tollgate_core::stage::{GrpcCall, LogLevel, SharedStore, StageHost};

/// A local reply the filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct FakeHost {
    pub now_ns: u64,
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub properties: BTreeMap<Vec<String>, Vec<u8>>,
    /// Request body buffered so far.
    pub request_body: Vec<u8>,
    /// Everything the filter let through to the upstream, in order (a body forwarded in pieces).
    pub forwarded_request: Vec<u8>,
    /// The current response chunk (what the callback sees and may replace).
    pub response_chunk: Vec<u8>,
    /// Everything the client received so far.
    pub client_body: Vec<u8>,
    pub local_reply: Option<LocalReply>,
    pub filter_state: BTreeMap<String, String>,
    pub counters: BTreeMap<String, u64>,
    pub histograms: BTreeMap<String, Vec<u64>>,
    pub logs: std::cell::RefCell<Vec<(LogLevel, String)>>,
    /// Whether request headers may still be edited (held by the filter).
    pub request_headers_editable: bool,
    /// Whether response headers exist yet (Envoy refuses edits to them before).
    pub response_started: bool,
    /// Shared data, as all workers of one Envoy see it: share the `Rc` between hosts to model
    /// several streams (or workers) of one process.
    pub shared: Rc<MemoryStore>,
    /// gRPC calls made, with the token each got (tokens count from 1).
    pub grpc_calls: Vec<(u32, GrpcCall)>,
    /// Host status to refuse gRPC calls with (a missing cluster is `ParseFailure`, 4).
    pub refuse_grpc: Option<u32>,
    /// The gRPC answer being delivered.
    pub grpc_answer: Vec<u8>,
    /// Whether the filter resumed a held request.
    pub resumed: bool,
    /// Whether the filter reset the stream.
    pub reset: bool,
}

fn get<'a>(map: &'a [(String, String)], name: &str) -> Option<&'a String> {
    map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn set(map: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    map.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    if let Some(value) = value {
        map.push((name.to_string(), value.to_string()));
    }
}

impl FakeHost {
    pub fn new() -> Self {
        FakeHost { now_ns: 1_000_000_000, request_headers_editable: true, ..FakeHost::default() }
    }

    pub fn request_header_value(&self, name: &str) -> Option<&str> {
        get(&self.request_headers, name).map(String::as_str)
    }

    pub fn response_header_value(&self, name: &str) -> Option<&str> {
        get(&self.response_headers, name).map(String::as_str)
    }

    /// Sum of a counter over every stat name that starts with `base` and contains every `label`
    /// (`"key=value"`).
    pub fn counter(&self, base: &str, labels: &[&str]) -> u64 {
        self.counters
            .iter()
            .filter(|(name, _)| name.starts_with(base) && labels.iter().all(|l| name.split(';').any(|part| part == *l)))
            .map(|(_, v)| *v)
            .sum()
    }

    pub fn logs_text(&self) -> String {
        self.logs.borrow().iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("\n")
    }
}

impl StageHost for FakeHost {
    fn request_header(&self, name: &str) -> Option<String> {
        get(&self.request_headers, name).cloned()
    }

    fn response_header(&self, name: &str) -> Option<String> {
        get(&self.response_headers, name).cloned()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.properties.get(&key).cloned()
    }

    fn shared_data(&self) -> &dyn SharedStore {
        &*self.shared
    }
}

impl HttpHost for FakeHost {
    fn now_ns(&self) -> u64 {
        self.now_ns
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        if !self.request_headers_editable {
            return Err(HostError(2)); // BadArgument, as Envoy answers after headers continued
        }
        set(&mut self.request_headers, name, value);
        Ok(())
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        if !self.response_started {
            return Err(HostError(1)); // NotFound: there is no response header map yet
        }
        set(&mut self.response_headers, name, value);
        Ok(())
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.request_body.get(..size.min(self.request_body.len()))?.to_vec())
    }

    fn set_request_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
        let size = size.min(self.request_body.len());
        self.request_body.splice(..size, body.iter().copied());
        Ok(())
    }

    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.response_chunk.get(..size.min(self.response_chunk.len()))?.to_vec())
    }

    fn set_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
        let size = size.min(self.response_chunk.len());
        self.response_chunk.splice(..size, body.iter().copied());
        Ok(())
    }

    fn send_local_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        self.local_reply = Some(LocalReply {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.to_vec(),
        });
        Ok(())
    }

    fn reset_stream(&mut self) -> Result<(), HostError> {
        self.reset = true;
        Ok(())
    }

    fn resume_request(&mut self) -> Result<(), HostError> {
        self.resumed = true;
        self.request_headers_editable = false;
        Ok(())
    }

    fn grpc_call(&mut self, call: &GrpcCall) -> Result<u32, HostError> {
        if let Some(status) = self.refuse_grpc {
            return Err(HostError(status));
        }
        let token = self.grpc_calls.len() as u32 + 1;
        self.grpc_calls.push((token, call.clone()));
        Ok(token)
    }

    fn grpc_response_body(&self, size: usize) -> Option<Vec<u8>> {
        Some(self.grpc_answer.get(..size.min(self.grpc_answer.len()))?.to_vec())
    }

    fn set_filter_state(&mut self, key: &str, value: &str) -> Result<(), HostError> {
        self.filter_state.insert(key.to_string(), value.to_string());
        Ok(())
    }

    fn counter_add(&mut self, name: &Rc<str>, value: u64) {
        *self.counters.entry(name.to_string()).or_default() += value;
    }

    fn histogram_record(&mut self, name: &Rc<str>, value: u64) {
        self.histograms.entry(name.to_string()).or_default().push(value);
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }
}

/// Plays one HTTP exchange through a driver the way Envoy would, so tests read like traffic.
pub struct Exchange<'a> {
    pub host: FakeHost,
    pub driver: &'a mut Driver,
}

impl<'a> Exchange<'a> {
    pub fn new(driver: &'a mut Driver) -> Self {
        Exchange { host: FakeHost::new(), driver }
    }

    /// Sends request headers; returns the driver's action.
    pub fn request_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        self.host.request_headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.host.request_headers_editable = true;
        let action = self.driver.on_request_headers(&mut self.host, end_of_stream);
        self.host.request_headers_editable = action == Action::Pause;
        action
    }

    /// Sends the headers of a JSON `POST /v1/chat/completions` with a body of `length` bytes,
    /// plus `extra` headers (replacing any of the same name).
    pub fn chat_request_headers(&mut self, length: usize, extra: &[(&str, &str)]) -> Action {
        let length = length.to_string();
        let mut headers = vec![
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gw"),
            ("content-type", "application/json"),
            ("content-length", length.as_str()),
        ];
        headers.retain(|(k, _)| extra.iter().all(|(e, _)| e != k));
        headers.extend_from_slice(extra);
        self.request_headers(&headers, false)
    }

    /// Sends the request body in the given chunks, buffering as Envoy does on `Pause`. Returns
    /// the action of the last callback.
    pub fn request_body(&mut self, chunks: &[&[u8]]) -> Action {
        self.request_body_pieces(chunks, true)
    }

    /// Sends request body chunks, the last one ending the body only if `ends`.
    pub fn request_body_pieces(&mut self, chunks: &[&[u8]], ends: bool) -> Action {
        let mut action = Action::Continue;
        let last = if ends { chunks.len().saturating_sub(1) } else { usize::MAX };
        for (i, chunk) in chunks.iter().enumerate() {
            if self.host.local_reply.is_some() {
                break; // Envoy stops feeding the body once the filter answered
            }
            if action == Action::Continue && i > 0 {
                self.host.request_body.clear(); // forwarded already: the next callback sees only new data
            }
            self.host.request_body.extend_from_slice(chunk);
            let size = self.host.request_body.len();
            action = self.driver.on_request_body(&mut self.host, size, i == last);
            if action == Action::Continue {
                self.host.request_headers_editable = false;
                self.host.forwarded_request.extend_from_slice(&self.host.request_body);
            }
        }
        action
    }

    /// Sends response headers.
    pub fn response_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        self.host.response_headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.host.response_started = true;
        self.driver.on_response_headers(&mut self.host, end_of_stream)
    }

    /// Sends the response body in chunks, `ms` apart; the client's bytes accumulate in
    /// `host.client_body`.
    pub fn response_body(&mut self, chunks: &[&[u8]], ms_apart: u64, end_of_stream: bool) {
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.iter().enumerate() {
            self.host.now_ns += ms_apart * 1_000_000;
            self.host.response_chunk = chunk.to_vec();
            let size = chunk.len();
            let action = self.driver.on_response_body(&mut self.host, size, end_of_stream && i == last);
            assert_eq!(action, Action::Continue, "an observing filter never pauses a response");
            let sent = std::mem::take(&mut self.host.response_chunk);
            self.host.client_body.extend_from_slice(&sent);
        }
        if chunks.is_empty() && end_of_stream {
            let action = self.driver.on_response_body(&mut self.host, 0, true);
            assert_eq!(action, Action::Continue);
            let sent = std::mem::take(&mut self.host.response_chunk);
            self.host.client_body.extend_from_slice(&sent);
        }
    }

    /// Delivers the answer to gRPC call `token`: a message, or a gRPC status.
    pub fn grpc_answer(&mut self, token: u32, answer: Result<&[u8], u32>) -> Option<Action> {
        let (status, size) = match answer {
            Ok(bytes) => {
                self.host.grpc_answer = bytes.to_vec();
                (0, bytes.len())
            }
            Err(status) => (status, 0),
        };
        self.driver.on_grpc_response(&mut self.host, token, status, size)
    }

    /// Ends the stream (Envoy's `on_log`).
    pub fn log(&mut self) {
        self.driver.on_log(&mut self.host);
    }
}

/// A Bedrock event-stream fixture (`[{event, payload}]`, as in `tests/fixtures`) as the wire
/// bytes Bedrock sends, framed with Tollgate's own encoder (CRCs included).
pub fn eventstream_fixture(events_json: &[u8]) -> Vec<u8> {
    let events: Vec<serde_json::Value> = serde_json::from_slice(events_json).unwrap_or_default();
    events
        .iter()
        .flat_map(|e| {
            tollgate_core::eventstream::encode(
                &[
                    (":event-type", e.get("event").and_then(serde_json::Value::as_str).unwrap_or("")),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                e.get("payload").map(serde_json::Value::to_string).unwrap_or_default().as_bytes(),
            )
        })
        .collect()
}
