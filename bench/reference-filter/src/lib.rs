//! Reference filters for the benchmark (never deployed). Plugin configuration selects one:
//! - `"null"`: every callback returns `Continue` without a host call: the cost of having a
//!   wasm filter at all (context creation, callbacks into V8);
//! - `"parse"`: holds the request headers, buffers the body, parses it as JSON: the minimal
//!   "buffer and parse" filter the targets are stated against;
//! - `"read"`: `"parse"` plus reading every response chunk once (`get_buffer`);
//! - `"rewrite"`: `"read"` plus writing each chunk back unchanged (`set_buffer`): the floor of a
//!   filter that rewrites a stream chunk by chunk (token-counter stripping injected usage);
//! - `"estimate"`: `"parse"` plus Tollgate's token estimator over the body, ten times: the
//!   speed of pure compute in Envoy's V8, to compare with native and Node.
//! - `"calls:<kind>"`: `"null"` plus 20 host calls of one kind at response headers —
//!   `set_header` (response header replace), `get_header`, `set_property` (filter state),
//!   `metric` (counter increment), `shared` (shared-data get + set, 10 of each), `time` — so
//!   (this − null) / 20 is what one such call costs in Envoy.
//! - `"mimic"`: `"parse"` plus every host call token-counter makes on a 1 KB chat exchange,
//!   with none of its work: both header maps read whole, each response chunk read, and at the
//!   response's end the clock, the route name, six metric updates (five counters, one
//!   histogram, token-counter's names) and the 14 `tollgate.*` filter-state keys the access
//!   log prints. token-counter − mimic is what its own code costs; mimic − parse what the
//!   outputs cost Envoy. `"mimic-state"` (`-metrics`, `-headers`, `-route`) leaves one kind of
//!   call out; `"mimic=one"` writes one short filter-state key instead of the 14, `"mimic=json"`
//!   one key holding all 14 as a JSON object; `"mimic+quota"` adds the local quota's calls.
//! - `"timing"`: at each response's headers, 100 calls of every kind above (and
//!   `get_headers`, `get_property`), timed with the host clock inside Envoy; every 100 requests
//!   the mean ns per call of each kind is logged (`warn`, `timing: …`). Free of the run-to-run
//!   noise of the CPU-per-request variants: `bench/host_calls.py` runs it.
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { mode: Mode::Null, metric: None, timing: Rc::default(), mimic: Rc::default() })
    });
}}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Null,
    Parse,
    Read,
    Rewrite,
    Estimate,
    Calls(Call),
    Timing,
    /// Which of the mimicked calls to leave out (`"mimic"` + `-state`, `-metrics`, `-headers`, `-route`).
    /// `"mimic+quota"` adds the local quota's calls (issue #9): a shared-data record read and
    /// compare-and-swapped at the request's end and again at the response's, six
    /// `x-ratelimit-*` response headers, three filter-state keys, three counters.
    /// `"mimic=one"` writes one short filter-state key instead of 14, `"mimic=json"` one key
    /// holding all 14 as a JSON object (token-counter's `filter_state: "json"`).
    Mimic {
        state: bool,
        metrics: bool,
        headers: bool,
        route: bool,
        quota: bool,
        one_key: Option<bool>,
    },
}

impl Mode {
    /// Holds the request headers and buffers the body (every mode but `null` and `calls:*`).
    fn buffers_request(self) -> bool {
        matches!(self, Mode::Parse | Mode::Read | Mode::Rewrite | Mode::Estimate | Mode::Timing | Mode::Mimic { .. })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Call {
    SetHeader,
    GetHeader,
    /// All response headers in one call (`proxy_get_header_map_pairs`).
    GetHeaders,
    GetProperty,
    SetProperty,
    Metric,
    Shared,
    Time,
    /// No call: Tollgate's token estimator over 1 KB of English (pure compute, timing mode only).
    Estimate,
    /// No call: the loop and the clock alone (timing mode only).
    Null,
}

const CALLS: usize = 20;

struct Root {
    mode: Mode,
    metric: Option<u32>,
    timing: Rc<RefCell<Timing>>,
    /// Metric ids for `"mimic"`: five counters, then the duration histogram.
    mimic: Rc<Vec<u32>>,
}

const MIMIC_RATELIMIT_HEADERS: [(&str, &str); 6] = [
    ("x-ratelimit-limit-tokens", "100000000"),
    ("x-ratelimit-remaining-tokens", "99999700"),
    ("x-ratelimit-reset-tokens", "42s"),
    ("x-ratelimit-limit-requests", "1000000"),
    ("x-ratelimit-remaining-requests", "999999"),
    ("x-ratelimit-reset-requests", "42s"),
];
const MIMIC_QUOTA_STATE: [(&str, &str); 3] = [
    ("tollgate.quota.consumer", "k:3f2a9c"),
    ("tollgate.quota.remaining_tokens", "99999700"),
    ("tollgate.quota.remaining_requests", "999999"),
];

/// token-counter's metric names for one label combination (`"mimic"`).
const MIMIC_LABELS: &str =
    ";gen_ai_request_model=gpt-4o-mini;gen_ai_provider_name=openai;gen_ai_operation_name=chat;route=llm";
const MIMIC_STATE: [(&str, &str); 14] = [
    ("tollgate.request_model", "gpt-4o-mini"),
    ("tollgate.response_model", "gpt-4o-mini-2024-07-18"),
    ("tollgate.provider", "openai"),
    ("tollgate.operation", "chat"),
    ("tollgate.stream", "false"),
    ("tollgate.duration_ms", "3"),
    ("tollgate.usage", "reported"),
    ("tollgate.input_tokens", "250"),
    ("tollgate.output_tokens", "42"),
    ("tollgate.cached_input_tokens", "0"),
    ("tollgate.cache_creation_input_tokens", "0"),
    ("tollgate.reasoning_tokens", "0"),
    ("tollgate.total_tokens", "292"),
    ("tollgate.estimated_input_tokens", "248"),
];

/// Every kind of call, timed (`"timing"` mode).
const TIMED: [(Call, &str); 10] = [
    (Call::Time, "time"),
    (Call::GetHeader, "get_header"),
    (Call::GetHeaders, "get_headers"),
    (Call::GetProperty, "get_property"),
    (Call::SetProperty, "set_property"),
    (Call::SetHeader, "set_header"),
    (Call::Metric, "metric"),
    (Call::Shared, "shared"),
    (Call::Estimate, "estimate_1k"),
    (Call::Null, "none"),
];
const TIMED_CALLS: u64 = 100;

#[derive(Default)]
struct Timing {
    requests: u64,
    ns: [u64; TIMED.len()],
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        let call = match config.strip_prefix("calls:").unwrap_or("") {
            "set_header" => Some(Call::SetHeader),
            "get_header" => Some(Call::GetHeader),
            "get_headers" => Some(Call::GetHeaders),
            "get_property" => Some(Call::GetProperty),
            "set_property" => Some(Call::SetProperty),
            "metric" => Some(Call::Metric),
            "shared" => Some(Call::Shared),
            "time" => Some(Call::Time),
            _ => None,
        };
        if let Some(call) = call {
            if call == Call::Metric {
                self.metric =
                    proxy_wasm::hostcalls::define_metric(proxy_wasm::types::MetricType::Counter, "bench_calls").ok();
            }
            self.mode = Mode::Calls(call);
            return true;
        }
        if config.contains("mimic") {
            use proxy_wasm::hostcalls::define_metric;
            use proxy_wasm::types::MetricType;
            let base = format!("{MIMIC_LABELS};gen_ai_response_model=gpt-4o-mini-2024-07-18;consumer=");
            let mut ids = Vec::new();
            for kind in ["input", "output", "total"] {
                let name = format!("tollgate.gen_ai.client.token.usage;gen_ai_token_type={kind}{base}");
                ids.extend(define_metric(MetricType::Counter, &name).ok());
            }
            ids.extend(
                define_metric(MetricType::Counter, &format!("tollgate.gen_ai.client.token.estimated_input{base}")).ok(),
            );
            ids.extend(define_metric(MetricType::Counter, &format!("tollgate.gen_ai.requests{base};error_type=")).ok());
            let name = format!("tollgate.gen_ai.server.request.duration{MIMIC_LABELS}");
            ids.extend(define_metric(MetricType::Histogram, &name).ok());
            self.mimic = Rc::new(ids);
            self.mode = Mode::Mimic {
                state: !config.contains("-state"),
                metrics: !config.contains("-metrics"),
                headers: !config.contains("-headers"),
                route: !config.contains("-route"),
                quota: config.contains("+quota"),
                one_key: if config.contains("=json") {
                    Some(true)
                } else if config.contains("=one") {
                    Some(false)
                } else {
                    None
                },
            };
            return true;
        }
        if config.contains("timing") {
            self.metric =
                proxy_wasm::hostcalls::define_metric(proxy_wasm::types::MetricType::Counter, "bench_calls").ok();
            self.mode = Mode::Timing;
            return true;
        }
        self.mode = if config.contains("estimate") {
            Mode::Estimate
        } else if config.contains("parse") {
            Mode::Parse
        } else if config.contains("read") {
            Mode::Read
        } else if config.contains("rewrite") {
            Mode::Rewrite
        } else {
            Mode::Null
        };
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            mode: self.mode,
            metric: self.metric,
            timing: self.timing.clone(),
            mimic: self.mimic.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    mode: Mode,
    metric: Option<u32>,
    timing: Rc<RefCell<Timing>>,
    mimic: Rc<Vec<u32>>,
}

impl Http {
    fn call(&self, call: Call, i: usize) {
        const NAMES: [&str; CALLS] = [
            "x-b0", "x-b1", "x-b2", "x-b3", "x-b4", "x-b5", "x-b6", "x-b7", "x-b8", "x-b9", "x-b10", "x-b11", "x-b12",
            "x-b13", "x-b14", "x-b15", "x-b16", "x-b17", "x-b18", "x-b19",
        ];
        let name = NAMES[i % CALLS];
        match call {
            Call::SetHeader => self.set_http_response_header(name, Some("1234")),
            Call::GetHeader => {
                std::hint::black_box(self.get_http_response_header("content-type"));
            }
            Call::GetHeaders => {
                std::hint::black_box(self.get_http_response_headers_bytes());
            }
            Call::GetProperty => {
                std::hint::black_box(self.get_property(vec!["xds", "route_name"]));
            }
            Call::SetProperty => self.set_property(vec![name], Some(b"1234")),
            Call::Metric => {
                if let Some(id) = self.metric {
                    let _ = proxy_wasm::hostcalls::increment_metric(id, 1);
                }
            }
            Call::Shared => {
                if i.is_multiple_of(2) {
                    std::hint::black_box(self.get_shared_data("bench"));
                } else {
                    let _ = self.set_shared_data("bench", Some(b"0123456789abcdef"), None);
                }
            }
            Call::Time => {
                std::hint::black_box(self.get_current_time());
            }
            Call::Estimate => {
                const TEXT: &str = "The gateway reads each request once and never buffers a stream. ";
                let text = std::hint::black_box(TEXT.repeat(16));
                std::hint::black_box(tollgate_core::estimate::estimate_tokens(&text));
            }
            Call::Null => {
                std::hint::black_box(i);
            }
        }
    }

    /// Times `TIMED_CALLS` calls of every kind; logs the means every 100 requests.
    fn time_calls(&self) {
        let now = || {
            proxy_wasm::hostcalls::get_current_time()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64)
        };
        let mut timing = self.timing.borrow_mut();
        for (slot, (call, _)) in TIMED.iter().enumerate() {
            let start = now();
            for i in 0..TIMED_CALLS as usize {
                self.call(*call, i);
            }
            timing.ns[slot] += now().saturating_sub(start);
        }
        timing.requests += 1;
        if timing.requests.is_multiple_of(100) {
            let per = |slot: usize| timing.ns[slot] / (timing.requests * TIMED_CALLS);
            let line: Vec<String> =
                TIMED.iter().enumerate().map(|(slot, (_, name))| format!("{name}={}", per(slot))).collect();
            proxy_wasm::hostcalls::log(
                proxy_wasm::types::LogLevel::Warn,
                &format!("timing: requests={} ns/call: {}", timing.requests, line.join(" ")),
            )
            .ok();
        }
    }
}

impl Http {
    /// The quota's counter record: one read and one compare-and-swap.
    fn mimic_quota_counters(&self) {
        let (record, cas) = self.get_shared_data("tollgate.quota.bench");
        let mut record = record.unwrap_or_else(|| vec![0; 48]);
        if let Some(byte) = record.first_mut() {
            *byte = byte.wrapping_add(1);
        }
        let _ = self.set_shared_data("tollgate.quota.bench", Some(&record), cas);
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        match self.mode {
            Mode::Calls(call) => (0..CALLS).for_each(|i| self.call(call, i)),
            Mode::Timing => self.time_calls(),
            Mode::Mimic { headers, quota, .. } => {
                if headers {
                    std::hint::black_box(self.get_http_response_headers_bytes());
                }
                if quota {
                    for (name, value) in MIMIC_RATELIMIT_HEADERS {
                        self.set_http_response_header(name, Some(value));
                    }
                }
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if let Mode::Mimic { headers, .. } = self.mode {
            if headers {
                std::hint::black_box(self.get_http_request_headers_bytes());
            }
            std::hint::black_box(self.get_current_time());
        }
        if self.mode.buffers_request() && !end_of_stream {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !self.mode.buffers_request() {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        if self.mode == Mode::Timing {
            return Action::Continue;
        }
        if let Mode::Mimic { quota: true, .. } = self.mode {
            self.mimic_quota_counters();
        }
        if let Some(body) = self.get_http_request_body(0, size) {
            let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&body);
            std::hint::black_box(parsed.is_ok());
            if self.mode == Mode::Estimate {
                let text = String::from_utf8_lossy(&body);
                for _ in 0..10 {
                    std::hint::black_box(tollgate_core::estimate::estimate_tokens(std::hint::black_box(&text)));
                }
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if matches!(self.mode, Mode::Read | Mode::Mimic { .. }) {
            std::hint::black_box(self.get_http_response_body(0, size));
        }
        if self.mode == Mode::Rewrite {
            if let Some(chunk) = self.get_http_response_body(0, size) {
                self.set_http_response_body(0, size, &chunk);
            }
        }
        let Mode::Mimic { state, metrics, route, quota, one_key, .. } = self.mode else { return Action::Continue };
        if end_of_stream {
            std::hint::black_box(self.get_current_time());
            if route {
                std::hint::black_box(self.get_property(vec!["xds", "route_name"]));
            }
            if metrics {
                let (histogram, counters) = self.mimic.split_last().unwrap_or((&0, &[]));
                for id in counters {
                    let _ = proxy_wasm::hostcalls::increment_metric(*id, 3);
                }
                let _ = proxy_wasm::hostcalls::record_metric(*histogram, 12);
            }
            if let (true, Some(json)) = (state, one_key) {
                let value = if json {
                    let fields: Vec<String> = MIMIC_STATE.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
                    format!("{{{}}}", fields.join(","))
                } else {
                    "292".to_string()
                };
                self.set_property(vec!["tollgate.json"], Some(value.as_bytes()));
            } else if state {
                for (key, value) in MIMIC_STATE {
                    self.set_property(vec![key], Some(value.as_bytes()));
                }
            }
            if quota {
                self.mimic_quota_counters();
                for (key, value) in MIMIC_QUOTA_STATE {
                    self.set_property(vec![key], Some(value.as_bytes()));
                }
                for id in self.mimic.iter().take(3) {
                    let _ = proxy_wasm::hostcalls::increment_metric(*id, 1);
                }
            }
        }
        Action::Continue
    }
}
