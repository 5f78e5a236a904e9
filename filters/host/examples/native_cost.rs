//! Native cost of one full exchange through the driver and the stages (no Envoy, no V8):
//! separates the filters' own work from host-call overhead, for token counting alone and with a
//! local quota on top. `cargo run --release -p tollgate-host --example native_cost [FILTER]`:
//! FILTER (e.g. `token-counter, chat`) runs only the cases whose label contains it, longer (for
//! `perf record`).
use std::rc::Rc;
use std::time::Instant;
use tollgate_core::quota::store::MemoryStore;
use tollgate_core::stage::{compose, Pipeline};
use tollgate_host::fake::Exchange;
use tollgate_host::Driver;

const QUOTA: &str = r#"{"token_counter":{},"quota":{"consumer":{"header":"authorization","salt":"bench"},
  "limits":[{"name":"tpm","meter":"total_tokens","per":"consumer","window":"minute","limit":1e15},
            {"name":"rpm","meter":"requests","per":"consumer","window":"minute","limit":1e15}]}}"#;

fn main() {
    let body = format!(
        r#"{{"model":"gpt-4.1","messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"{}"}}]}}"#,
        "The gateway reads each request once. ".repeat(25)
    );
    let response = std::fs::read("tests/fixtures/responses/openai/chat.json").unwrap_or_default();
    let stream = std::fs::read("tests/fixtures/responses/openai/chat-stream-20.sse").unwrap_or_default();
    let events: Vec<&[u8]> = stream.split_inclusive(|b| *b == b'\n').collect();
    let only = std::env::args().nth(1);
    for (label, config) in [("token-counter", r#"{"token_counter":{}}"#), ("token-counter + quota", QUOTA)] {
        let Ok(spec) = compose::parse(config.as_bytes()) else { return };
        let shared = Rc::new(MemoryStore::default());
        for (name, streaming) in [("chat-1k", false), ("sse-20 (strip)", true)] {
            let case = format!("{label}, {name}");
            if only.as_ref().is_some_and(|only| !case.contains(only.as_str())) {
                continue;
            }
            let n = if only.is_some() { 400_000 } else { 20_000 };
            let start = Instant::now();
            for _ in 0..n {
                let mut driver = Driver::new(Pipeline::new(spec.stages.iter().map(|f| f.create()).collect(), None));
                let mut ex = Exchange::new(&mut driver);
                ex.host.shared = shared.clone();
                let request =
                    if streaming { body.replace("\"model\"", "\"stream\":true,\"model\"") } else { body.clone() };
                ex.chat_request_headers(request.len(), &[("authorization", "Bearer sk-bench-0123456789")]);
                ex.request_body(&[request.as_bytes()]);
                if streaming {
                    ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
                    ex.response_body(&events, 1, true);
                } else {
                    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
                    ex.response_body(&[&response], 1, true);
                }
                ex.log();
            }
            println!(
                "{case}: {:.2} µs per exchange (native, fake host included)",
                start.elapsed().as_secs_f64() * 1e6 / n as f64
            );
        }
    }
}
