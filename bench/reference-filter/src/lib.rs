//! Reference filters for the benchmark (never deployed). Plugin configuration selects one:
//! - `"null"`: every callback returns `Continue` without a host call: the cost of having a
//!   wasm filter at all (context creation, callbacks into V8);
//! - `"parse"`: holds the request headers, buffers the body, parses it as JSON: the minimal
//!   "buffer and parse" filter the targets are stated against;
//! - `"read"`: `"parse"` plus reading every response chunk once (`get_buffer`);
//! - `"estimate"`: `"parse"` plus Tollgate's token estimator over the body, ten times: the
//!   speed of pure compute in Envoy's V8, to compare with native and Node.
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: Mode::Null }) });
}}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Null,
    Parse,
    Read,
    Estimate,
}

struct Root {
    mode: Mode,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let config = String::from_utf8_lossy(&config);
        self.mode = if config.contains("estimate") {
            Mode::Estimate
        } else if config.contains("parse") {
            Mode::Parse
        } else if config.contains("read") {
            Mode::Read
        } else {
            Mode::Null
        };
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http { mode: self.mode }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    mode: Mode,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if self.mode != Mode::Null && !end_of_stream {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if self.mode == Mode::Null {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
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

    fn on_http_response_body(&mut self, size: usize, _: bool) -> Action {
        if self.mode == Mode::Read {
            std::hint::black_box(self.get_http_response_body(0, size));
        }
        Action::Continue
    }
}
