//! Native cost of one full exchange through the driver and token-counter (no Envoy, no V8):
//! separates the filter's own work from host-call overhead. `cargo run --release -p tollgate-host --example native_cost`
use std::time::Instant;
use tollgate_core::stage::token_counter::{Config, TokenCounter};
use tollgate_core::stage::{Pipeline, StageFactory};
use tollgate_host::fake::Exchange;
use tollgate_host::Driver;

fn main() {
    let Ok(config) = Config::parse(b"{}", "") else { return };
    let factory = TokenCounter::new(config);
    let body = format!(
        r#"{{"model":"gpt-4.1","messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"{}"}}]}}"#,
        "The gateway reads each request once. ".repeat(25)
    );
    let response = std::fs::read("tests/fixtures/responses/openai/chat.json").unwrap_or_default();
    let stream = std::fs::read("tests/fixtures/responses/openai/chat-stream-20.sse").unwrap_or_default();
    let events: Vec<&[u8]> = stream.split_inclusive(|b| *b == b'\n').collect();
    for (name, streaming) in [("chat-1k", false), ("sse-20 (strip)", true)] {
        let n = 20_000;
        let start = Instant::now();
        for _ in 0..n {
            let mut driver = Driver::new(Pipeline::new(vec![factory.create()], None));
            let mut ex = Exchange::new(&mut driver);
            let len = body.len().to_string();
            ex.request_headers(
                &[
                    (":method", "POST"),
                    (":path", "/v1/chat/completions"),
                    (":authority", "gw"),
                    ("content-type", "application/json"),
                    ("content-length", &len),
                ],
                false,
            );
            let request = if streaming { body.replace("\"model\"", "\"stream\":true,\"model\"") } else { body.clone() };
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
            "{name}: {:.2} µs per exchange (native, fake host included)",
            start.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
}
