//! Throughput of the request-side work on a 16 KB chat body, natively.
//! `cargo run --release -p tollgate-host --example estimator_speed`
use std::time::Instant;
use tollgate_core::estimate::estimate_tokens;
use tollgate_core::request::parse;
use tollgate_core::route::ApiKind;

fn main() {
    let text = "The gateway reads each request once and never buffers a stream. ".repeat(250);
    let body = format!(r#"{{"model":"gpt-4.1","messages":[{{"role":"user","content":"{text}"}}]}}"#);
    let n = 2_000;
    let t = Instant::now();
    let mut sink = 0;
    for _ in 0..n {
        sink += estimate_tokens(std::hint::black_box(&text));
    }
    let est = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let t = Instant::now();
    for _ in 0..n {
        sink += parse(ApiKind::OpenAiChat, std::hint::black_box(body.as_bytes()))
            .map(|p| p.info.messages as u64)
            .unwrap_or(0);
    }
    let full = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let t = Instant::now();
    for _ in 0..n {
        sink += serde_json::from_slice::<serde_json::Value>(std::hint::black_box(body.as_bytes()))
            .map(|v| v.is_object() as u64)
            .unwrap_or(0);
    }
    let value = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{} bytes: estimator {est:.1} µs ({:.0} MB/s); request::parse (parse + estimate) {full:.1} µs; serde Value parse {value:.1} µs [{sink}]",
        text.len(), text.len() as f64 / est);
}
