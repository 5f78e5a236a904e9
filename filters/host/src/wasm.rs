//! The real host (wasm32 only): raw proxy-wasm ABI calls and the root/HTTP contexts.
//!
//! Why raw calls: every `proxy_wasm::hostcalls` function `panic!`s on a status it does not
//! expect (a header edit after the headers were continued returns `BadArgument`; a non-UTF-8
//! header value makes `get_map_value` unwrap), and a panic kills the VM for every request on
//! that worker. Here every status becomes a `Result`. The SDK's dispatcher (context
//! bookkeeping) and allocator are still used.

use crate::{Action, ConfigParser, Driver, HeaderPairs, HostError, HttpHost, Spec};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::cell::RefCell;
use std::rc::Rc;
use tollgate_core::fxhash::FxHashMap;
use tollgate_core::quota::store::StoreError;
use tollgate_core::stage::{GrpcCall, LogLevel, SharedStore, StageHost};

#[allow(unsafe_code)]
mod abi {
    //! One safe function per host call. SAFETY (all blocks): pointers passed to the host are
    //! valid for the given lengths for the duration of the call; memory the host returns was
    //! allocated through the SDK's `proxy_on_memory_allocate` (a boxed slice of exactly the
    //! returned size), which is what `Vec::from_raw_parts(ptr, len, len)` reclaims, as the
    //! SDK itself does.

    use std::ptr::null_mut;

    const OK: u32 = 0;
    const NOT_FOUND: u32 = 1;
    pub const REQUEST_HEADERS: u32 = 0;
    pub const RESPONSE_HEADERS: u32 = 2;
    pub const REQUEST_BODY: u32 = 0;
    pub const RESPONSE_BODY: u32 = 1;
    pub const GRPC_RECEIVE_BUFFER: u32 = 5;
    const STREAM_REQUEST: u32 = 0;
    const STREAM_RESPONSE: u32 = 1;
    pub const PLUGIN_CONFIGURATION: u32 = 7;
    pub const COUNTER: u32 = 0;
    pub const GAUGE: u32 = 1;
    pub const HISTOGRAM: u32 = 2;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
        fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
        fn proxy_get_buffer_bytes(kind: u32, start: usize, max: usize, data: *mut *mut u8, size: *mut usize) -> u32;
        fn proxy_set_buffer_bytes(kind: u32, start: usize, size: usize, data: *const u8, len: usize) -> u32;
        fn proxy_get_header_map_value(
            map: u32,
            key: *const u8,
            key_len: usize,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
        fn proxy_replace_header_map_value(
            map: u32,
            key: *const u8,
            key_len: usize,
            value: *const u8,
            value_len: usize,
        ) -> u32;
        fn proxy_remove_header_map_value(map: u32, key: *const u8, key_len: usize) -> u32;
        fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
        fn proxy_get_property(path: *const u8, path_len: usize, data: *mut *mut u8, size: *mut usize) -> u32;
        fn proxy_set_property(path: *const u8, path_len: usize, value: *const u8, value_len: usize) -> u32;
        fn proxy_send_local_response(
            status: u32,
            details: *const u8,
            details_len: usize,
            body: *const u8,
            body_len: usize,
            headers: *const u8,
            headers_len: usize,
            grpc_status: i32,
        ) -> u32;
        fn proxy_define_metric(kind: u32, name: *const u8, name_len: usize, id: *mut u32) -> u32;
        fn proxy_get_shared_data(
            key: *const u8,
            key_len: usize,
            data: *mut *mut u8,
            size: *mut usize,
            cas: *mut u32,
        ) -> u32;
        fn proxy_set_shared_data(key: *const u8, key_len: usize, value: *const u8, value_len: usize, cas: u32) -> u32;
        fn proxy_increment_metric(id: u32, offset: i64) -> u32;
        fn proxy_continue_stream(stream: u32) -> u32;
        fn proxy_close_stream(stream: u32) -> u32;
        fn proxy_set_effective_context(context_id: u32) -> u32;
        fn proxy_record_metric(id: u32, value: u64) -> u32;
    }

    fn status(code: u32) -> Result<(), u32> {
        if code == OK {
            Ok(())
        } else {
            Err(code)
        }
    }

    fn take(data: *mut u8, size: usize) -> Vec<u8> {
        if data.is_null() {
            return Vec::new();
        }
        // SAFETY: see module docs.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }

    pub fn log(level: u32, message: &str) {
        self_timed(Call::Log, || {
            // SAFETY: see module docs.
            let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
        })
    }

    pub fn now_ns() -> u64 {
        let mut time = 0u64;
        // SAFETY: see module docs.
        let _ = unsafe { proxy_get_current_time_nanoseconds(&mut time) };
        time
    }

    pub fn get_buffer(kind: u32, start: usize, max: usize) -> Result<Option<Vec<u8>>, u32> {
        self_timed(Call::GetBuffer, || {
            let (mut data, mut size) = (null_mut(), 0usize);
            // SAFETY: see module docs.
            match unsafe { proxy_get_buffer_bytes(kind, start, max, &mut data, &mut size) } {
                OK => Ok(Some(take(data, size))),
                NOT_FOUND => Ok(None),
                other => Err(other),
            }
        })
    }

    pub fn set_buffer(kind: u32, start: usize, size: usize, value: &[u8]) -> Result<(), u32> {
        self_timed(Call::SetBuffer, || {
            // SAFETY: see module docs.
            status(unsafe { proxy_set_buffer_bytes(kind, start, size, value.as_ptr(), value.len()) })
        })
    }

    pub fn get_header(map: u32, key: &str) -> Result<Option<Vec<u8>>, u32> {
        self_timed(Call::GetHeader, || {
            let (mut data, mut size) = (null_mut(), 0usize);
            // SAFETY: see module docs.
            match unsafe { proxy_get_header_map_value(map, key.as_ptr(), key.len(), &mut data, &mut size) } {
                OK => Ok(Some(take(data, size))),
                NOT_FOUND => Ok(None),
                other => Err(other),
            }
        })
    }

    pub fn get_header_pairs(map: u32) -> Result<Option<Vec<u8>>, u32> {
        self_timed(Call::GetHeaders, || {
            let (mut data, mut size) = (null_mut(), 0usize);
            // SAFETY: see module docs.
            match unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) } {
                OK => Ok(Some(take(data, size))),
                NOT_FOUND => Ok(None),
                other => Err(other),
            }
        })
    }

    pub fn set_header(map: u32, key: &str, value: Option<&str>) -> Result<(), u32> {
        self_timed(Call::SetHeader, || {
            // SAFETY: see module docs.
            status(unsafe {
                match value {
                    Some(v) => proxy_replace_header_map_value(map, key.as_ptr(), key.len(), v.as_ptr(), v.len()),
                    None => proxy_remove_header_map_value(map, key.as_ptr(), key.len()),
                }
            })
        })
    }

    pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, u32> {
        self_timed(Call::GetProperty, || {
            let path = path.join("\0");
            let (mut data, mut size) = (null_mut(), 0usize);
            // SAFETY: see module docs.
            match unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) } {
                OK => Ok(Some(take(data, size))),
                NOT_FOUND => Ok(None),
                other => Err(other),
            }
        })
    }

    pub fn set_property(key: &str, value: &str) -> Result<(), u32> {
        self_timed(Call::SetProperty, || {
            // SAFETY: see module docs.
            status(unsafe { proxy_set_property(key.as_ptr(), key.len(), value.as_ptr(), value.len()) })
        })
    }

    pub fn send_local_response(code: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), u32> {
        self_timed(Call::Other, || {
            let map = crate::encode_header_pairs(headers);
            let details = tollgate_core::stage::LOCAL_REPLY_DETAILS.as_bytes();
            // SAFETY: see module docs.
            status(unsafe {
                proxy_send_local_response(
                    code,
                    details.as_ptr(),
                    details.len(),
                    body.as_ptr(),
                    body.len(),
                    map.as_ptr(),
                    map.len(),
                    -1,
                )
            })
        })
    }

    pub const CAS_MISMATCH: u32 = 8;

    /// Host call kinds, as `self-timing-calls` reports them.
    #[derive(Clone, Copy)]
    pub enum Call {
        GetBuffer,
        GetHeader,
        GetHeaders,
        GetProperty,
        Log,
        Metric,
        Other,
        SetBuffer,
        SetHeader,
        SetProperty,
        Shared,
    }

    /// Names of [`Call`]s, in order.
    #[cfg(feature = "self-timing")]
    pub const CALL_KINDS: [&str; 11] = [
        "get_buffer",
        "get_header",
        "get_headers",
        "get_property",
        "log",
        "metric",
        "other",
        "set_buffer",
        "set_header",
        "set_property",
        "shared",
    ];

    /// Runs one host call, timed under `self-timing-calls` (the clock call itself excluded).
    #[inline(always)]
    fn self_timed<T>(kind: Call, call: impl FnOnce() -> T) -> T {
        #[cfg(feature = "self-timing-calls")]
        let since = now_ns();
        let result = call();
        #[cfg(feature = "self-timing-calls")]
        super::self_timing::add_call(kind as usize, since);
        #[cfg(not(feature = "self-timing-calls"))]
        let _ = kind;
        result
    }

    pub fn get_shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, u32> {
        self_timed(Call::Shared, || {
            let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
            // SAFETY: see module docs.
            match unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) } {
                OK => Ok(Some((take(data, size), cas))),
                NOT_FOUND => Ok(None),
                other => Err(other),
            }
        })
    }

    pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), u32> {
        self_timed(Call::Shared, || {
            // SAFETY: see module docs.
            status(unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) })
        })
    }

    pub fn continue_request() -> Result<(), u32> {
        self_timed(Call::Other, || {
            // SAFETY: see module docs.
            status(unsafe { proxy_continue_stream(STREAM_REQUEST) })
        })
    }

    /// Envoy resets the stream (downstream and upstream) once the current callback returns.
    pub fn close_response() -> Result<(), u32> {
        self_timed(Call::Other, || {
            // SAFETY: see module docs.
            status(unsafe { proxy_close_stream(STREAM_RESPONSE) })
        })
    }

    pub fn set_effective_context(context_id: u32) -> Result<(), u32> {
        // SAFETY: see module docs.
        status(unsafe { proxy_set_effective_context(context_id) })
    }

    pub fn define_metric(kind: u32, name: &str) -> Result<u32, u32> {
        let mut id = 0u32;
        // SAFETY: see module docs.
        status(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) }).map(|()| id)
    }

    pub fn increment_metric(id: u32, offset: i64) -> Result<(), u32> {
        self_timed(Call::Metric, || {
            // SAFETY: see module docs.
            status(unsafe { proxy_increment_metric(id, offset) })
        })
    }

    pub fn record_metric(id: u32, value: u64) -> Result<(), u32> {
        self_timed(Call::Metric, || {
            // SAFETY: see module docs.
            status(unsafe { proxy_record_metric(id, value) })
        })
    }
}

/// Metric ids by full stat name, per VM: `define_metric` allocates on every call, so each
/// name is defined once. Names are bounded by the label caps; lookups do not allocate.
#[derive(Default)]
pub struct MetricIds {
    counters: FxHashMap<String, u32>,
    histograms: FxHashMap<String, u32>,
    /// Ids of shared names (a stage's names for one label combination, built once per VM) by
    /// the name's address and kind: no hashing and comparing of a ≈ 150-byte name per update.
    /// Each entry holds a clone of its name, so the address cannot go to another name while
    /// the entry lives.
    by_address: FxHashMap<(usize, u32), (Rc<str>, u32)>,
    /// Streams ended in this VM, and the id of its memory gauge once defined.
    streams: u64,
    memory_gauge: Option<u32>,
}

/// Streams between two samples of the VM's memory.
const MEMORY_SAMPLE_EVERY: u64 = 64;

/// Entries of [`MetricIds::by_address`] before it is emptied (names found by value meanwhile).
const MAX_BY_ADDRESS: usize = 4096;

impl MetricIds {
    fn id(&mut self, kind: u32, name: &Rc<str>) -> Option<u32> {
        let address = (Rc::as_ptr(name).cast::<u8>() as usize, kind);
        if let Some((_, id)) = self.by_address.get(&address) {
            return Some(*id);
        }
        let ids = if kind == abi::HISTOGRAM { &mut self.histograms } else { &mut self.counters };
        let id = match ids.get(&**name) {
            Some(id) => *id,
            None => {
                let id = abi::define_metric(kind, name).ok()?;
                ids.insert(name.to_string(), id);
                id
            }
        };
        // Only names someone else keeps (a stage's cache); a name built for one update is not.
        if Rc::strong_count(name) > 1 {
            if self.by_address.len() >= MAX_BY_ADDRESS {
                self.by_address.clear();
            }
            self.by_address.insert(address, (Rc::clone(name), id));
        }
        Some(id)
    }

    /// After each stream: every `MEMORY_SAMPLE_EVERY` streams, the VM's linear memory in
    /// `tollgate.vm.memory_bytes;vm=<id>` (one gauge per VM, the id fixed at its first sample),
    /// so a soak can tell whether any VM grows.
    fn stream_ended(&mut self) {
        self.streams += 1;
        if self.streams % MEMORY_SAMPLE_EVERY != 1 {
            return;
        }
        if self.memory_gauge.is_none() {
            let vm = abi::now_ns() / 1_000 % 1_000_000_000;
            self.memory_gauge = abi::define_metric(abi::GAUGE, &format!("tollgate.vm.memory_bytes;vm={vm}")).ok();
        }
        if let Some(id) = self.memory_gauge {
            let bytes = core::arch::wasm32::memory_size(0) as u64 * 65_536;
            let _ = abi::record_metric(id, bytes);
        }
    }
}

fn level_code(level: LogLevel) -> u32 {
    match level {
        LogLevel::Debug => 1,
        LogLevel::Info => 2,
        LogLevel::Warn => 3,
        LogLevel::Error => 4,
    }
}

/// The host as seen from one HTTP context.
pub struct ProxyWasmHost {
    metrics: Rc<RefCell<MetricIds>>,
    log_prefix: Rc<str>,
    /// This stream's context and the plugin's root context (detached calls are the root's).
    context_id: u32,
    root_id: u32,
    /// The request and response header maps, each read in one call the first time a callback
    /// asks for one of its headers; forgotten when the callback ends (a later filter may edit
    /// them) and when this filter edits that map.
    request_headers: HeaderSnapshot,
    response_headers: HeaderSnapshot,
}

/// One header map, read whole on first use; `Failed` falls back to one call per header.
#[derive(Default)]
enum Snapshot {
    #[default]
    Unread,
    Read(HeaderPairs),
    Failed,
}

struct HeaderSnapshot {
    map: u32,
    snapshot: RefCell<Snapshot>,
}

impl HeaderSnapshot {
    fn new(map: u32) -> Self {
        HeaderSnapshot { map, snapshot: RefCell::default() }
    }

    fn get(&self, name: &str) -> Option<String> {
        let mut snapshot = self.snapshot.borrow_mut();
        if matches!(*snapshot, Snapshot::Unread) {
            *snapshot = match abi::get_header_pairs(self.map).ok().flatten().and_then(HeaderPairs::parse) {
                Some(pairs) => Snapshot::Read(pairs),
                None => Snapshot::Failed,
            };
        }
        let value = match &*snapshot {
            Snapshot::Read(pairs) => pairs.get(name).map(<[u8]>::to_vec),
            Snapshot::Unread | Snapshot::Failed => abi::get_header(self.map, name).ok().flatten(),
        };
        value.map(|v| String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn forget(&self) {
        *self.snapshot.borrow_mut() = Snapshot::Unread;
    }
}

impl StageHost for ProxyWasmHost {
    fn request_header(&self, name: &str) -> Option<String> {
        self.request_headers.get(name)
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.response_headers.get(name)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        abi::get_property(path).ok().flatten()
    }

    fn shared_data(&self) -> &dyn SharedStore {
        self
    }
}

impl SharedStore for ProxyWasmHost {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        abi::get_shared_data(key).ok().flatten()
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        abi::set_shared_data(key, value, cas).map_err(|status| {
            if status == abi::CAS_MISMATCH {
                StoreError::CasMismatch
            } else {
                StoreError::Failed(status)
            }
        })
    }
}

impl HttpHost for ProxyWasmHost {
    fn now_ns(&self) -> u64 {
        abi::now_ns()
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        self.request_headers.forget();
        abi::set_header(abi::REQUEST_HEADERS, name, value).map_err(HostError)
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> Result<(), HostError> {
        self.response_headers.forget();
        abi::set_header(abi::RESPONSE_HEADERS, name, value).map_err(HostError)
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        abi::get_buffer(abi::REQUEST_BODY, 0, size).ok().flatten()
    }

    fn set_request_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
        abi::set_buffer(abi::REQUEST_BODY, 0, size, body).map_err(HostError)
    }

    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        abi::get_buffer(abi::RESPONSE_BODY, 0, size).ok().flatten()
    }

    fn set_response_body(&mut self, size: usize, body: &[u8]) -> Result<(), HostError> {
        abi::set_buffer(abi::RESPONSE_BODY, 0, size, body).map_err(HostError)
    }

    fn send_local_reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        abi::send_local_response(u32::from(status), headers, body).map_err(HostError)
    }

    fn reset_stream(&mut self) -> Result<(), HostError> {
        abi::close_response().map_err(HostError)
    }

    fn resume_request(&mut self) -> Result<(), HostError> {
        abi::continue_request().map_err(HostError)
    }

    fn grpc_call(&mut self, call: &GrpcCall) -> Result<u32, HostError> {
        // A detached call is made as the root context: Envoy cancels a stream context's
        // pending calls when the stream ends, the root context's live as long as the plugin.
        if call.detached {
            abi::set_effective_context(self.root_id).map_err(HostError)?;
        }
        // Through the SDK so that the answer is routed back to this context. The SDK panics on
        // one status only (`BadArgument`: a target that parses as a GrpcService proto but is
        // not a usable one); the configuration refuses such cluster names.
        let result = proxy_wasm::hostcalls::dispatch_grpc_call(
            &call.cluster,
            call.service,
            call.method,
            Vec::new(),
            Some(&call.message),
            std::time::Duration::from_millis(u64::from(call.timeout_ms)),
        )
        .map_err(|status| HostError(status as u32));
        if call.detached {
            let _ = abi::set_effective_context(self.context_id);
        }
        result
    }

    fn grpc_response_body(&self, size: usize) -> Option<Vec<u8>> {
        abi::get_buffer(abi::GRPC_RECEIVE_BUFFER, 0, size).ok().flatten()
    }

    fn set_filter_state(&mut self, key: &str, value: &str) -> Result<(), HostError> {
        abi::set_property(key, value).map_err(HostError)
    }

    fn counter_add(&mut self, name: &Rc<str>, value: u64) {
        let id = self.metrics.borrow_mut().id(abi::COUNTER, name);
        if let Some(id) = id {
            let _ = abi::increment_metric(id, i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    fn histogram_record(&mut self, name: &Rc<str>, value: u64) {
        let id = self.metrics.borrow_mut().id(abi::HISTOGRAM, name);
        if let Some(id) = id {
            let _ = abi::record_metric(id, value);
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        abi::log(level_code(level), &format!("{}{message}", self.log_prefix));
    }
}

/// Root context shared by every filter: validates the configuration in `on_configure`.
pub struct Root {
    parse: ConfigParser,
    spec: Option<Rc<Spec>>,
    metrics: Rc<RefCell<MetricIds>>,
    log_prefix: Rc<str>,
    context_id: u32,
}

impl Root {
    pub fn new(name: &'static str, parse: ConfigParser, context_id: u32) -> Self {
        Root { parse, spec: None, metrics: Rc::default(), log_prefix: Rc::from(format!("{name}: ")), context_id }
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = abi::get_buffer(abi::PLUGIN_CONFIGURATION, 0, usize::MAX).ok().flatten().unwrap_or_default();
        match (self.parse)(&config) {
            Ok(spec) => {
                self.spec = Some(Rc::new(spec));
                abi::log(2, &format!("{}configuration accepted", self.log_prefix));
                true
            }
            Err(message) => {
                // One line, naming the field; Envoy then rejects the configuration.
                abi::log(4, &format!("{}invalid configuration: {message}", self.log_prefix));
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let spec = self.spec.as_ref()?;
        Some(Box::new(Http {
            driver: Driver::new(spec.pipeline()),
            host: ProxyWasmHost {
                metrics: self.metrics.clone(),
                log_prefix: self.log_prefix.clone(),
                context_id,
                root_id: self.context_id,
                request_headers: HeaderSnapshot::new(abi::REQUEST_HEADERS),
                response_headers: HeaderSnapshot::new(abi::RESPONSE_HEADERS),
            },
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    driver: Driver,
    host: ProxyWasmHost,
}

impl Http {
    /// Ends a callback: header snapshots do not outlive it.
    fn end(&self, a: Action) -> proxy_wasm::types::Action {
        self.host.request_headers.forget();
        self.host.response_headers.forget();
        action(a)
    }
}

/// Self-timing (feature `self-timing`, benchmark builds only): wasm-side ns per callback kind.
#[cfg(feature = "self-timing")]
mod self_timing {
    use std::cell::RefCell;

    pub const KINDS: [&str; 7] =
        ["request_headers", "request_body", "response_headers", "response_body", "trailers", "grpc", "log"];

    #[derive(Default)]
    struct Totals {
        ns: [u64; KINDS.len()],
        calls_ns: [u64; super::abi::CALL_KINDS.len()],
        calls: [u64; super::abi::CALL_KINDS.len()],
        streams: u64,
    }

    thread_local! {
        static TOTALS: RefCell<Totals> = RefCell::default();
    }

    pub fn add(kind: usize, since: u64) {
        let elapsed = super::abi::now_ns().saturating_sub(since);
        TOTALS.with(|t| {
            if let Some(slot) = t.try_borrow_mut().ok().as_mut().and_then(|t| t.ns.get_mut(kind)) {
                *slot += elapsed;
            }
        });
    }

    #[cfg(feature = "self-timing-calls")]
    pub fn add_call(kind: usize, since: u64) {
        let elapsed = super::abi::now_ns().saturating_sub(since);
        TOTALS.with(|t| {
            // Busy while a report is written (its own log call): not counted.
            let Ok(mut t) = t.try_borrow_mut() else { return };
            if let Some(slot) = t.calls_ns.get_mut(kind) {
                *slot += elapsed;
            }
            if let Some(slot) = t.calls.get_mut(kind) {
                *slot += 1;
            }
        });
    }

    pub fn stream_ended() {
        let report = TOTALS.with(|t| {
            let Ok(mut t) = t.try_borrow_mut() else { return None };
            t.streams += 1;
            if !t.streams.is_multiple_of(1000) {
                return None;
            }
            let per: Vec<String> = KINDS.iter().zip(t.ns).map(|(k, ns)| format!("{k}={}", ns / t.streams)).collect();
            let total: u64 = t.ns.iter().sum::<u64>() / t.streams;
            let calls: Vec<String> = super::abi::CALL_KINDS
                .iter()
                .zip(t.calls_ns.iter().zip(t.calls))
                .filter(|(_, (_, n))| *n > 0)
                .map(|(k, (ns, n))| format!("{k}_ns={} {k}_calls_x100={}", ns / t.streams, n * 100 / t.streams))
                .collect();
            let message = format!(
                "self-timing: streams={} ns/stream: {} total={total} host calls: {}",
                t.streams,
                per.join(" "),
                calls.join(" ")
            );
            Some(message)
        });
        if let Some(message) = report {
            super::abi::log(3, &message);
        }
    }
}

/// Runs one callback, timed under `self-timing`.
macro_rules! timed {
    ($kind:expr, $body:expr) => {{
        #[cfg(feature = "self-timing")]
        let since = abi::now_ns();
        let result = $body;
        #[cfg(feature = "self-timing")]
        self_timing::add($kind, since);
        result
    }};
}

fn action(a: Action) -> proxy_wasm::types::Action {
    match a {
        Action::Continue => proxy_wasm::types::Action::Continue,
        Action::Pause => proxy_wasm::types::Action::Pause,
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        // A resumed or refused request needs nothing more from this callback.
        timed!(5, {
            let _ = self.driver.on_grpc_response(&mut self.host, token_id, status_code, response_size);
            self.host.request_headers.forget();
            self.host.response_headers.forget();
        })
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> proxy_wasm::types::Action {
        #[cfg(feature = "test-trap")]
        if self.host.request_header("x-tollgate-test-trap").is_some() {
            core::arch::wasm32::unreachable();
        }
        timed!(0, {
            let a = self.driver.on_request_headers(&mut self.host, end_of_stream);
            self.end(a)
        })
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> proxy_wasm::types::Action {
        timed!(1, {
            let a = self.driver.on_request_body(&mut self.host, body_size, end_of_stream);
            self.end(a)
        })
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> proxy_wasm::types::Action {
        timed!(4, {
            let a = self.driver.on_request_trailers(&mut self.host);
            self.end(a)
        })
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> proxy_wasm::types::Action {
        timed!(2, {
            let a = self.driver.on_response_headers(&mut self.host, end_of_stream);
            self.end(a)
        })
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> proxy_wasm::types::Action {
        timed!(3, {
            let a = self.driver.on_response_body(&mut self.host, body_size, end_of_stream);
            self.end(a)
        })
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> proxy_wasm::types::Action {
        timed!(4, {
            let a = self.driver.on_response_trailers(&mut self.host);
            self.end(a)
        })
    }

    fn on_log(&mut self) {
        timed!(6, {
            self.driver.on_log(&mut self.host);
            self.host.request_headers.forget();
            self.host.response_headers.forget();
            self.host.metrics.borrow_mut().stream_ended();
        });
        #[cfg(feature = "self-timing")]
        self_timing::stream_ended();
    }
}

/// Declares a filter module: `tollgate_host::filter!("name", parser_fn);`
#[macro_export]
macro_rules! filter {
    ($name:expr, $parse:expr) => {
        proxy_wasm::main! {{
            // Installs the SDK's panic hook, which logs a panic at `critical` before the trap.
            proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
            proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
                Box::new($crate::wasm::Root::new($name, $parse, context_id))
            });
        }}
    };
}
