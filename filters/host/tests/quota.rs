//! The quota stage's state machine through the fake host: reserve, refuse, settle, release,
//! headers, tiers, shadow mode, CAS conflicts, and many streams sharing one store (as Envoy's
//! workers share one shared-data map).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{json, Value};
use std::rc::Rc;
use tollgate_core::quota::store::MemoryStore;
use tollgate_core::stage::compose;
use tollgate_host::fake::Exchange;
use tollgate_host::{Action, Driver};

struct Gateway {
    spec: compose::Composed,
    shared: Rc<MemoryStore>,
}

impl Gateway {
    fn new(quota: Value) -> Gateway {
        let config = json!({"token_counter": {}, "quota": quota});
        Gateway {
            spec: compose::parse(config.to_string().as_bytes()).unwrap(),
            shared: Rc::new(MemoryStore::default()),
        }
    }

    fn driver(&self) -> Driver {
        Driver::new(tollgate_core::stage::Pipeline::new(
            self.spec.stages.iter().map(|f| f.create()).collect(),
            self.spec.max_request_bytes,
        ))
    }
}

/// One request from `key` (the API key header) at `now_s`, up to the request body.
struct Call<'a> {
    ex: Exchange<'a>,
    admitted: bool,
}

fn start<'a>(gw: &Gateway, driver: &'a mut Driver, key: &str, body: Value, now_s: u64) -> Call<'a> {
    let mut ex = Exchange::new(driver);
    ex.host.shared = gw.shared.clone();
    ex.host.now_ns = now_s * 1_000_000_000;
    let body = body.to_string();
    ex.chat_request_headers(body.len(), &[("x-api-key", key)]);
    let action = ex.request_body(&[body.as_bytes()]);
    let admitted = ex.host.local_reply.is_none();
    assert_eq!(action, if admitted { Action::Continue } else { Action::Pause });
    Call { ex, admitted }
}

impl Call<'_> {
    /// The provider answers with `prompt`/`completion` usage.
    fn finish(&mut self, prompt: u64, completion: u64) {
        let body = json!({"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}});
        self.ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
        self.ex.response_body(&[body.to_string().as_bytes()], 1, true);
        self.ex.log();
        // Every edit was made in a phase where Envoy accepts it (each refusal is a wasted host
        // call and a log line).
        assert!(!self.ex.host.logs_text().contains("refused (host status"), "{}", self.ex.host.logs_text());
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.ex.host.response_header_value(name)
    }
}

/// An exchange on `gw`'s shared store at `NOW`.
fn exchange<'a>(gw: &Gateway, driver: &'a mut Driver) -> Exchange<'a> {
    let mut ex = Exchange::new(driver);
    ex.host.shared = gw.shared.clone();
    ex.host.now_ns = NOW * 1_000_000_000;
    ex
}

fn chat(max_tokens: u64) -> Value {
    json!({"model": "gpt-4o", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Hi"}]})
}

fn tpm(limit: u64) -> Value {
    json!({"consumer": {"header": "x-api-key", "salt": "s"},
           "limits": [{"name": "tokens_per_minute", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": limit},
                      {"name": "requests_per_minute", "meter": "requests", "per": "consumer", "window": "minute", "limit": 1000}]})
}

const NOW: u64 = 1_795_000_040; // 20 s into a minute

/// The shared-data key of the consumer counters of API key `key` (salt `s`).
fn record_of(key: &str) -> String {
    format!("tollgate.quota;consumer;{}", tollgate_core::quota::hashed_consumer("s", key))
}

#[test]
fn sequential_requests_are_held_to_the_limit_exactly() {
    let gw = Gateway::new(tpm(1000));
    let mut admitted_tokens = 0;
    let mut refusals = 0;
    for _ in 0..40 {
        let mut driver = gw.driver();
        let mut call = start(&gw, &mut driver, "sk-a", chat(50), NOW);
        if call.admitted {
            call.finish(30, 40);
            admitted_tokens += 70;
        } else {
            refusals += 1;
        }
    }
    // Each request reserves its estimate + 50 and settles to 70: admitted while 70×n + next
    // reservation fits in 1000.
    assert!(admitted_tokens <= 1000, "{admitted_tokens}");
    assert!(admitted_tokens > 1000 - 70 - 60, "{admitted_tokens}");
    assert!(refusals > 0);
    let key = tollgate_core::quota::hashed_consumer("s", "sk-a");
    assert_eq!(
        gw.shared.used(&format!("tollgate.quota;consumer;{key}"), "tokens_per_minute", NOW / 60),
        admitted_tokens
    );
}

/// `n` completions can each generate `max_tokens`: the reservation covers all of them, so a
/// request for many completions cannot pass on the reservation of one.
#[test]
fn a_request_for_several_completions_reserves_each_ones_output() {
    let record = record_of("sk-a");
    let mut reserved = Vec::new();
    for n in [1, 4] {
        // Each from an empty store.
        let gw = Gateway::new(tpm(1000));
        let mut driver = gw.driver();
        let mut body = chat(200);
        body["n"] = json!(n);
        let mut call = start(&gw, &mut driver, "sk-a", body, NOW);
        assert!(call.admitted, "n = {n}");
        reserved.push(gw.shared.used(&record, "tokens_per_minute", NOW / 60));
        call.finish(10, 20 * n);
        assert_eq!(gw.shared.used(&record, "tokens_per_minute", NOW / 60), 10 + 20 * n, "settled to the usage");
    }
    let estimate = reserved[0] - 200;
    assert!(estimate > 0 && estimate < 20, "{reserved:?}");
    assert_eq!(reserved[1], estimate + 4 * 200, "{reserved:?}");
    // Eight completions of up to 200 tokens cannot fit in 1000, although one would.
    let gw = Gateway::new(tpm(1000));
    let mut driver = gw.driver();
    let mut body = chat(200);
    body["n"] = json!(8);
    let call = start(&gw, &mut driver, "sk-a", body, NOW);
    assert!(!call.admitted);
    assert_eq!(call.ex.host.local_reply.as_ref().unwrap().status, 429);
    assert_eq!(gw.shared.used(&record, "tokens_per_minute", NOW / 60), 0, "nothing reserved");
}

/// An embedding generates nothing: it reserves its input only, not the default output cap
/// (4096 here, over the whole limit).
#[test]
fn an_embedding_reserves_no_output() {
    let mut quota = tpm(1000);
    quota["default_max_output_tokens"] = json!(4096);
    let gw = Gateway::new(quota);
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    let body = json!({"model": "text-embedding-3-small", "input": "The food was delicious"}).to_string();
    ex.chat_request_headers(body.len(), &[("x-api-key", "sk-a"), (":path", "/v1/embeddings")]);
    assert_eq!(ex.request_body(&[body.as_bytes()]), Action::Continue);
    assert!(ex.host.local_reply.is_none());
    let key = tollgate_core::quota::hashed_consumer("s", "sk-a");
    let reserved = gw.shared.used(&format!("tollgate.quota;consumer;{key}"), "tokens_per_minute", NOW / 60);
    assert!((1..20).contains(&reserved), "the input's estimate only: {reserved}");
}

#[test]
fn a_request_costs_one_read_and_one_write_of_its_consumers_record_at_each_end() {
    // Two limits per consumer (tokens and requests) live in one shared-data record.
    let gw = Gateway::new(tpm(100_000));
    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-a", chat(50), NOW);
    assert!(call.admitted);
    assert_eq!((gw.shared.gets.get(), gw.shared.sets.get()), (1, 1), "reservation");
    call.finish(30, 40);
    assert_eq!((gw.shared.gets.get(), gw.shared.sets.get()), (2, 2), "settlement (the request count is unchanged)");
    let record = record_of("sk-a");
    assert_eq!(gw.shared.used(&record, "tokens_per_minute", NOW / 60), 70);
    assert_eq!(gw.shared.used(&record, "requests_per_minute", NOW / 60), 1);
}

#[test]
fn a_refusal_is_a_429_in_the_clients_dialect_with_rate_limit_headers() {
    let gw = Gateway::new(tpm(100));
    let mut driver = gw.driver();
    let call = start(&gw, &mut driver, "sk-a", chat(500), NOW);
    assert!(!call.admitted);
    let reply = call.ex.host.local_reply.clone().unwrap();
    assert_eq!(reply.status, 429);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("tokens_per_minute"));
    let header = |name: &str| reply.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header("retry-after").as_deref(), Some("40"), "until the minute ends");
    assert_eq!(header("x-ratelimit-limit-tokens").as_deref(), Some("100"));
    assert_eq!(header("x-ratelimit-remaining-tokens").as_deref(), Some("100"));
    assert_eq!(header("x-ratelimit-reset-tokens").as_deref(), Some("40s"));
    assert_eq!(call.ex.host.counter("tollgate.quota.decisions", &["limit=tokens_per_minute", "outcome=refused"]), 1);
    // Anthropic clients get Anthropic's error shape.
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    ex.request_headers(
        &[(":method", "POST"), (":path", "/v1/messages"), (":authority", "gw"), ("x-api-key", "sk-a")],
        false,
    );
    ex.request_body(&[json!({"model": "claude", "max_tokens": 500, "messages": []}).to_string().as_bytes()]);
    let body: Value = serde_json::from_slice(&ex.host.local_reply.clone().unwrap().body).unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[test]
fn every_response_carries_the_tightest_limits() {
    let gw = Gateway::new(tpm(10_000));
    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-a", chat(100), NOW);
    call.finish(10, 20);
    let remaining: u64 = call.header("x-ratelimit-remaining-tokens").unwrap().parse().unwrap();
    assert!(remaining < 10_000 - 100 && remaining > 10_000 - 200, "after this request's reservation: {remaining}");
    assert_eq!(call.header("x-ratelimit-limit-requests"), Some("1000"));
    assert_eq!(call.header("x-ratelimit-remaining-requests"), Some("999"));
    assert_eq!(call.ex.host.filter_state["tollgate.quota.remaining_requests"], "999");
    assert!(call.ex.host.filter_state["tollgate.quota.consumer"].starts_with("k:"));
}

#[test]
fn the_api_key_never_appears_raw() {
    let gw = Gateway::new(tpm(1000));
    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-live-SECRET", chat(10), NOW);
    call.finish(5, 5);
    let everything =
        format!("{:?}{:?}{:?}", call.ex.host.counters, call.ex.host.filter_state, call.ex.host.logs_text());
    assert!(!everything.contains("SECRET"));
}

#[test]
fn consumers_do_not_affect_each_other() {
    let gw = Gateway::new(tpm(300));
    for _ in 0..10 {
        let mut driver = gw.driver();
        let mut call = start(&gw, &mut driver, "sk-a", chat(100), NOW);
        if call.admitted {
            call.finish(10, 100);
        }
    }
    let mut driver = gw.driver();
    let call = start(&gw, &mut driver, "sk-b", chat(100), NOW);
    assert!(call.admitted, "b has its own budget");
}

#[test]
fn the_next_window_starts_afresh() {
    let gw = Gateway::new(tpm(200));
    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-a", chat(150), NOW);
    call.finish(10, 150);
    let mut driver = gw.driver();
    assert!(!start(&gw, &mut driver, "sk-a", chat(150), NOW).admitted);
    let mut driver = gw.driver();
    assert!(start(&gw, &mut driver, "sk-a", chat(150), NOW + 60).admitted);
}

#[test]
fn reservations_hold_under_concurrency_and_settle_afterwards() {
    // 20 streams are admitted before any finishes (they all run concurrently): reservations
    // make the admitted total stay within the limit, where post-accounting would admit all 20.
    let gw = Gateway::new(tpm(1000));
    let mut drivers: Vec<Driver> = (0..20).map(|_| gw.driver()).collect();
    let mut calls: Vec<Call<'_>> = drivers.iter_mut().map(|d| start(&gw, d, "sk-a", chat(200), NOW)).collect();
    let admitted = calls.iter().filter(|c| c.admitted).count();
    assert!(admitted <= 1000 / 200, "{admitted} admitted: each reserves > 200");
    for call in calls.iter_mut().filter(|c| c.admitted) {
        call.finish(10, 20); // actual 30 each: refunds the rest
    }
    let key = tollgate_core::quota::hashed_consumer("s", "sk-a");
    assert_eq!(
        gw.shared.used(&format!("tollgate.quota;consumer;{key}"), "tokens_per_minute", NOW / 60),
        30 * admitted as u64
    );
    let mut driver = gw.driver();
    assert!(start(&gw, &mut driver, "sk-a", chat(200), NOW).admitted, "refunds free the quota again");
}

#[test]
fn post_accounting_admits_every_concurrent_request_for_comparison() {
    let mut config = tpm(1000);
    config["admission"] = json!("post_accounting");
    let gw = Gateway::new(config);
    let mut drivers: Vec<Driver> = (0..20).map(|_| gw.driver()).collect();
    let mut calls: Vec<Call<'_>> = drivers.iter_mut().map(|d| start(&gw, d, "sk-a", chat(200), NOW)).collect();
    assert!(calls.iter().all(|c| c.admitted), "nothing is charged until the end");
    for call in &mut calls {
        call.finish(100, 200);
    }
    let key = tollgate_core::quota::hashed_consumer("s", "sk-a");
    assert_eq!(
        gw.shared.used(&format!("tollgate.quota;consumer;{key}"), "tokens_per_minute", NOW / 60),
        6000,
        "6x the limit"
    );
    let mut driver = gw.driver();
    assert!(!start(&gw, &mut driver, "sk-a", chat(1), NOW).admitted, "refused only once the counter is over");
}

#[test]
fn a_reset_without_usage_releases_the_reservation() {
    let gw = Gateway::new(tpm(1000));
    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-a", chat(900), NOW);
    assert!(call.admitted);
    call.ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    call.ex.response_body(&[b"data: {\"choices\":[]}\n\n"], 1, false);
    call.ex.log(); // reset: no end of stream, no usage
    let key = tollgate_core::quota::hashed_consumer("s", "sk-a");
    assert_eq!(gw.shared.used(&format!("tollgate.quota;consumer;{key}"), "tokens_per_minute", NOW / 60), 0);
    assert_eq!(call.ex.host.counter("tollgate.quota.settlements", &["outcome=released"]), 1);
}

/// A success answered to its end whose usage cannot be read — here a stream of image events too
/// large to decode, and a JSON answer without usage — was generated all the same: it keeps its
/// reservation (releasing it would make such answers free), unlike the reset above.
#[test]
fn a_completed_success_without_readable_usage_keeps_its_reservation() {
    let gw = Gateway::new(tpm(100_000));
    let record = record_of("sk-a");
    let used = |gw: &Gateway| gw.shared.used(&record, "tokens_per_minute", NOW / 60);
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    let body = json!({"model": "gpt-image-1", "prompt": "A lighthouse at dawn", "stream": true}).to_string();
    ex.chat_request_headers(body.len(), &[("x-api-key", "sk-a"), (":path", "/v1/images/generations")]);
    assert_eq!(ex.request_body(&[body.as_bytes()]), Action::Continue);
    let reserved = used(&gw);
    assert!(reserved > 4096, "the prompt's estimate and the default output: {reserved}");
    ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    let image = "A".repeat(1 << 21); // 2 MiB of base64: past what the SSE decoder holds
    let completed = format!(
        "event: image_generation.completed\ndata: {{\"type\":\"image_generation.completed\",\"b64_json\":\"{image}\",\
         \"usage\":{{\"input_tokens\":5,\"output_tokens\":272,\"total_tokens\":277}}}}\n\n"
    );
    // As Envoy delivers it: in chunks, so the event must be held whole to be read.
    let chunks: Vec<&[u8]> = completed.as_bytes().chunks(64 * 1024).collect();
    ex.response_body(&chunks, 1, true);
    ex.log();
    assert_eq!(
        ex.host.counter("tollgate.token_counter.unread", &["reason=sse_event_too_large"]),
        1,
        "{:?}",
        ex.host.counters
    );
    assert_eq!(ex.host.counter("tollgate.quota.settlements", &["outcome=reserved"]), 1);
    assert_eq!(used(&gw), reserved, "kept, not released");

    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-a", chat(50), NOW);
    let before = used(&gw);
    call.ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    call.ex.response_body(&[br#"{"model":"gpt-4o","choices":[]}"#], 1, true);
    call.ex.log();
    assert_eq!(call.ex.host.counter("tollgate.quota.settlements", &["outcome=reserved"]), 1);
    assert_eq!(used(&gw), before, "the JSON answer without usage keeps its reservation too");
}

/// Text to speech is limited like any generation: reserved from its text and the default
/// output before it goes (a consumer out of tokens is refused), settled to the `usage` of a
/// stream's `speech.audio.done` event; answered with the audio itself (no usage in it), it keeps
/// its reservation.
#[test]
fn speech_is_reserved_and_settled_to_its_streamed_usage() {
    let gw = Gateway::new(tpm(8_000));
    let record = record_of("sk-a");
    let used = |gw: &Gateway| gw.shared.used(&record, "tokens_per_minute", NOW / 60);
    let speak = |gw: &Gateway, stream_format: &str, answer: (&str, &[u8])| {
        let mut driver = gw.driver();
        let mut ex = exchange(gw, &mut driver);
        let body = json!({"model": "gpt-4o-mini-tts", "voice": "coral", "stream_format": stream_format,
                          "input": "Today is a wonderful day to build something people love!"})
        .to_string();
        ex.chat_request_headers(body.len(), &[("x-api-key", "sk-a"), (":path", "/v1/audio/speech")]);
        let before = used(gw);
        if ex.request_body(&[body.as_bytes()]) != Action::Continue {
            return (None, ex.host.local_reply.clone().map(|r| r.status));
        }
        let reserved = used(gw) - before;
        ex.response_headers(&[(":status", "200"), ("content-type", answer.0)], false);
        let chunks: Vec<&[u8]> = answer.1.chunks(700).collect();
        ex.response_body(&chunks, 1, true);
        ex.log();
        assert_eq!(ex.host.client_body, answer.1);
        (Some((reserved, used(gw) - before)), None)
    };
    let stream =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/responses/openai/speech-stream.sse"))
            .unwrap();
    let (reserved, charged) = speak(&gw, "sse", ("text/event-stream", &stream)).0.unwrap();
    assert!(reserved > 4096, "the text's estimate and the default output: {reserved}");
    assert_eq!(charged, 115, "settled to speech.audio.done's usage");
    let audio = vec![0xffu8; 5000];
    let (reserved, charged) = speak(&gw, "audio", ("audio/mpeg", &audio)).0.unwrap();
    assert_eq!(charged, reserved, "no usage in the audio: the reservation is kept");
    let (admitted, refused) = speak(&gw, "sse", ("text/event-stream", &stream));
    assert_eq!((admitted, refused), (None, Some(429)), "out of tokens: refused before it goes");
}

/// The provider answers `answer` at once, queued, without usage: the reservation (`reserved` on
/// `record`) is kept as the charge, and the usage is deferred, not missing.
fn answer_queued(gw: &Gateway, ex: &mut Exchange<'_>, answer: &Value, record: &str, reserved: u64) {
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    ex.response_body(&[answer.to_string().as_bytes()], 1, true);
    ex.log();
    assert_eq!(gw.shared.used(record, "tokens_per_minute", NOW / 60), reserved, "kept, not released");
    assert_eq!(ex.host.counter("tollgate.quota.settlements", &["outcome=reserved"]), 1);
    assert_eq!(ex.host.filter_state.get("tollgate.usage").map(String::as_str), Some("deferred"));
    assert!(ex.host.counters.keys().all(|k| !k.contains("usage_missing")), "{:?}", ex.host.counters);
}

/// OpenAI's background mode answers at once, queued and without usage, and generates
/// afterwards: the reservation is kept as the charge instead of being released (else
/// `background: true` would be a way round every token limit), and the token counter reports
/// the usage as deferred, not missing.
#[test]
fn a_background_response_keeps_its_reservation() {
    let gw = Gateway::new(tpm(1000));
    let record = record_of("sk-a");
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    let body =
        json!({"model": "o3-deep-research", "input": "Survey the field", "background": true, "max_output_tokens": 300})
            .to_string();
    ex.chat_request_headers(body.len(), &[("x-api-key", "sk-a"), (":path", "/v1/responses")]);
    assert_eq!(ex.request_body(&[body.as_bytes()]), Action::Continue);
    let reserved = gw.shared.used(&record, "tokens_per_minute", NOW / 60);
    assert!(reserved > 300 && reserved < 320, "the estimate + max_output_tokens: {reserved}");
    let queued = json!({"id": "resp_1", "object": "response", "status": "queued", "background": true,
                        "model": "o3-deep-research", "output": [], "usage": null});
    answer_queued(&gw, &mut ex, &queued, &record, reserved);

    // The same request in the foreground is settled to its usage.
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    let body = json!({"model": "gpt-4.1", "input": "Survey the field", "max_output_tokens": 300}).to_string();
    ex.chat_request_headers(body.len(), &[("x-api-key", "sk-a"), (":path", "/v1/responses")]);
    ex.request_body(&[body.as_bytes()]);
    let done = json!({"id": "resp_2", "object": "response", "status": "completed", "model": "gpt-4.1", "output": [],
                      "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}});
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    ex.response_body(&[done.to_string().as_bytes()], 1, true);
    ex.log();
    assert_eq!(gw.shared.used(&record, "tokens_per_minute", NOW / 60), reserved + 12);
    assert_eq!(ex.host.filter_state.get("tollgate.usage").map(String::as_str), Some("reported"));
}

/// A Message Batch: `n` requests of `max_tokens` each, to `models` in turn.
fn batch(n: usize, max_tokens: u64, models: &[&str]) -> String {
    let requests: Vec<Value> = (0..n)
        .map(|i| {
            json!({"custom_id": format!("r{i}"), "params": {"model": models[i % models.len()], "max_tokens": max_tokens,
                        "messages": [{"role": "user", "content": "Summarise the report"}]}})
        })
        .collect();
    json!({"requests": requests}).to_string()
}

/// Sends a batch from `sk-a`; the local reply if refused.
fn send_batch(ex: &mut Exchange<'_>, body: &str) -> Option<(u16, Value)> {
    ex.chat_request_headers(body.len(), &[("x-api-key", "sk-a"), (":path", "/v1/messages/batches")]);
    ex.request_body(&[body.as_bytes()]);
    ex.host.local_reply.as_ref().map(|r| (r.status, serde_json::from_slice(&r.body).unwrap()))
}

/// Anthropic's Message Batches carry many Messages requests inline and answer at once, queued;
/// the results (and their usage) are fetched later. The batch reserves the sum of its requests
/// (prompts and `max_tokens`), counts as that many requests, and keeps the reservation as its
/// charge; a batch over the limit is refused in Anthropic's dialect.
#[test]
fn a_message_batch_reserves_every_request_and_keeps_the_reservation() {
    let gw = Gateway::new(tpm(1000));
    let record = record_of("sk-a");
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    assert_eq!(send_batch(&mut ex, &batch(3, 100, &["claude-haiku-4-5"])), None);
    let reserved = gw.shared.used(&record, "tokens_per_minute", NOW / 60);
    assert!(reserved > 300 && reserved < 360, "3 × (estimate + 100): {reserved}");
    assert_eq!(gw.shared.used(&record, "requests_per_minute", NOW / 60), 3, "three requests");
    let created = json!({"id": "msgbatch_01", "type": "message_batch", "processing_status": "in_progress",
        "request_counts": {"processing": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
        "ended_at": null, "created_at": "2026-11-28T12:00:00Z", "expires_at": "2026-11-29T12:00:00Z",
        "archived_at": null, "cancel_initiated_at": null, "results_url": null});
    answer_queued(&gw, &mut ex, &created, &record, reserved);
    // The token counter sees one call of its own kind, its model, its estimate.
    assert_eq!(ex.host.filter_state.get("tollgate.operation").map(String::as_str), Some("batch"));
    assert_eq!(ex.host.filter_state.get("tollgate.request_model").map(String::as_str), Some("claude-haiku-4-5"));
    assert_eq!(
        ex.host.counter("tollgate.gen_ai.requests", &["gen_ai_operation_name=batch", "gen_ai_provider_name=anthropic"]),
        1
    );

    // Seven more requests of 100 would pass one by one, but not as one batch over the limit.
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    let (status, body) = send_batch(&mut ex, &batch(7, 100, &["claude-haiku-4-5"])).expect("refused");
    assert_eq!(
        (status, body["type"].as_str(), body["error"]["type"].as_str()),
        (429, Some("error"), Some("rate_limit_error"))
    );
    assert_eq!(gw.shared.used(&record, "requests_per_minute", NOW / 60), 3);
}

/// Gemini's Batch Mode inlines generate requests in the same way: their sum is reserved and kept.
#[test]
fn a_gemini_batch_reserves_every_inlined_request() {
    let gw = Gateway::new(tpm(1000));
    let record = record_of("sk-a");
    let request = json!({"request": {"contents": [{"parts": [{"text": "Describe photosynthesis."}]}],
                                     "generationConfig": {"maxOutputTokens": 200}}});
    let body = json!({"batch": {"display_name": "b", "input_config": {"requests": {"requests": [request, request]}}}})
        .to_string();
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    let path = "/v1beta/models/gemini-2.5-flash:batchGenerateContent";
    ex.chat_request_headers(body.len(), &[("x-api-key", "sk-a"), (":path", path)]);
    assert_eq!(ex.request_body(&[body.as_bytes()]), Action::Continue);
    let reserved = gw.shared.used(&record, "tokens_per_minute", NOW / 60);
    assert!(reserved > 400 && reserved < 430, "2 × (estimate + 200): {reserved}");
    assert_eq!(gw.shared.used(&record, "requests_per_minute", NOW / 60), 2);
    let pending = json!({"name": "batches/123", "metadata": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
                         "name": "batches/123", "model": "models/gemini-2.5-flash", "state": "BATCH_STATE_PENDING"}});
    answer_queued(&gw, &mut ex, &pending, &record, reserved);
    assert_eq!(ex.host.filter_state.get("tollgate.request_model").map(String::as_str), Some("gemini-2.5-flash"));
}

/// Bedrock's InvokeModel answers in the model family's own format; Bedrock's counts come in
/// `x-amzn-bedrock-*-token-count` headers (JSON) or in the stream's last base64 chunk. Both
/// settle the reservation (the family's output cap) to them.
#[test]
fn bedrock_invoke_is_reserved_and_settled_to_bedrocks_counts() {
    let gw = Gateway::new(tpm(1000));
    let record = record_of("sk-a");
    let used = |gw: &Gateway| gw.shared.used(&record, "tokens_per_minute", NOW / 60);

    let claude = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 300,
                        "messages": [{"role": "user", "content": "How far is the moon?"}]})
    .to_string();
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    let path = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke";
    ex.chat_request_headers(claude.len(), &[("x-api-key", "sk-a"), (":path", path)]);
    assert_eq!(ex.request_body(&[claude.as_bytes()]), Action::Continue);
    let reserved = used(&gw);
    assert!(reserved > 300 && reserved < 320, "the estimate + max_tokens: {reserved}");
    let answer = json!({"type": "message", "content": [{"type": "text", "text": "384,400 km."}],
                        "usage": {"input_tokens": 14, "output_tokens": 10}});
    ex.response_headers(
        &[
            (":status", "200"),
            ("content-type", "application/json"),
            ("x-amzn-bedrock-input-token-count", "14"),
            ("x-amzn-bedrock-output-token-count", "10"),
        ],
        false,
    );
    ex.response_body(&[answer.to_string().as_bytes()], 1, true);
    ex.log();
    assert_eq!(used(&gw), 24, "settled to Bedrock's counts");
    assert_eq!(ex.host.filter_state.get("tollgate.usage").map(String::as_str), Some("reported"));
    assert_eq!(
        ex.host.filter_state.get("tollgate.request_model").map(String::as_str),
        Some("anthropic.claude-3-5-haiku-20241022-v1:0")
    );

    // Llama, streamed: the golden fixture's chunks, the counts in the last one.
    let llama = json!({"prompt": "How far is the moon?", "max_gen_len": 200}).to_string();
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    let path = "/model/meta.llama3-1-70b-instruct-v1%3A0/invoke-with-response-stream";
    ex.chat_request_headers(llama.len(), &[("x-api-key", "sk-a"), (":path", path)]);
    assert_eq!(ex.request_body(&[llama.as_bytes()]), Action::Continue);
    assert!(used(&gw) > 24 + 200, "the estimate + max_gen_len: {}", used(&gw));
    let fixture =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/responses/bedrock/invoke-llama-stream.events.json");
    let stream = tollgate_host::fake::eventstream_fixture(&std::fs::read(fixture).unwrap());
    ex.response_headers(&[(":status", "200"), ("content-type", "application/vnd.amazon.eventstream")], false);
    let chunks: Vec<&[u8]> = stream.chunks(64).collect();
    ex.response_body(&chunks, 5, true);
    ex.log();
    assert_eq!(used(&gw), 24 + 21, "settled to the invocation metrics (12 + 9)");
    assert_eq!(ex.host.filter_state.get("tollgate.output_tokens").map(String::as_str), Some("9"));
}

/// Per-model limits (and prices) need the batch's model: a batch mixing models is refused
/// (400 naming `requests`) where one applies, and passes where none does.
#[test]
fn a_batch_mixing_models_is_refused_only_where_limits_are_per_model() {
    let mixed = batch(2, 10, &["claude-haiku-4-5", "claude-opus-4-1"]);
    let per_model = json!({"consumer": {"header": "x-api-key", "salt": "s"},
        "limits": [{"name": "opus_day", "meter": "total_tokens", "per": "consumer", "window": "day", "limit": 100000,
                    "models": ["claude-opus*"]}]});
    let gw = Gateway::new(per_model);
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    let (status, body) = send_batch(&mut ex, &mixed).expect("refused");
    assert_eq!((status, body["error"]["type"].as_str()), (400, Some("invalid_request_error")));
    assert!(body["error"]["message"].as_str().unwrap().contains("one batch per model"), "{body}");
    assert_eq!(ex.host.counter("tollgate.quota.decisions", &["limit=", "outcome=mixed_models"]), 1);
    // One model: admitted and charged to that model's limit.
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    assert_eq!(send_batch(&mut ex, &batch(2, 10, &["claude-opus-4-1"])), None);

    let gw = Gateway::new(tpm(1000));
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    assert_eq!(send_batch(&mut ex, &mixed), None, "a consumer-wide limit needs no model");
}

#[test]
fn an_error_response_releases_the_reservation() {
    let gw = Gateway::new(tpm(1000));
    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-a", chat(900), NOW);
    call.ex.response_headers(&[(":status", "500"), ("content-type", "application/json")], false);
    call.ex.response_body(&[b"{\"error\":{}}"], 1, true);
    call.ex.log();
    let key = tollgate_core::quota::hashed_consumer("s", "sk-a");
    assert_eq!(gw.shared.used(&format!("tollgate.quota;consumer;{key}"), "tokens_per_minute", NOW / 60), 0);
    assert_eq!(
        gw.shared.used(&format!("tollgate.quota;consumer;{key}"), "requests_per_minute", NOW / 60),
        1,
        "a request is a request"
    );
}

#[test]
fn shadow_mode_never_refuses_but_says_what_it_would_have_done() {
    let mut config = tpm(100);
    config["mode"] = json!("shadow");
    let gw = Gateway::new(config);
    for i in 0..5 {
        let mut driver = gw.driver();
        let mut call = start(&gw, &mut driver, "sk-a", chat(500), NOW);
        assert!(call.admitted);
        call.finish(10, 500);
        assert_eq!(call.header("x-ratelimit-remaining-tokens"), Some("0"), "request {i}");
        assert_eq!(call.header("x-tollgate-quota-shadow"), Some("exhausted=tokens_per_minute"));
        assert_eq!(call.ex.host.counter("tollgate.quota.decisions", &["outcome=shadow_refused"]), 1);
    }
}

/// OpenAI's SDKs send the key as `authorization: Bearer <key>`, Anthropic's as `x-api-key:
/// <key>`: with both headers named, one key is one consumer (switching header does not open a
/// second budget), and a request with neither is not taken for any key's consumer.
#[test]
fn one_key_is_one_consumer_whichever_header_carries_it() {
    let gw = Gateway::new(
        json!({"consumer": {"header": ["authorization", "x-api-key"], "salt": "s", "downstream_address": false},
        "unknown_consumer": "refuse",
        "limits": [{"name": "rpm", "meter": "requests", "per": "consumer", "window": "minute", "limit": 3}]}),
    );
    let mut statuses = Vec::new();
    for headers in [
        &[("authorization", "Bearer sk-a")][..],
        &[("x-api-key", "sk-a")],
        // An empty bearer token is no key: the next header names the consumer.
        &[("authorization", "Bearer "), ("x-api-key", "sk-a")],
        &[("authorization", "bearer sk-a")],
        &[("x-api-key", "sk-b")],
        &[],
    ] {
        let mut driver = gw.driver();
        let mut ex = exchange(&gw, &mut driver);
        let body = chat(10).to_string();
        ex.chat_request_headers(body.len(), headers);
        ex.request_body(&[body.as_bytes()]);
        statuses.push(ex.host.local_reply.as_ref().map_or(200, |r| r.status));
        ex.log();
    }
    assert_eq!(statuses, [200, 200, 200, 429, 200, 401], "sk-a's third request fills its 3; sk-b is another consumer");
    let record = format!("tollgate.quota;consumer;{}", tollgate_core::quota::hashed_consumer("s", "sk-a"));
    assert_eq!(gw.shared.used(&record, "rpm", NOW / 60), 3);
}

/// Vertex AI's embeddings report their tokens: reserved at the prompt's estimate (no output),
/// settled to what the answer counts (every prediction's `token_count`, or `usageMetadata`).
#[test]
fn vertex_embeddings_are_reserved_and_settled_to_their_counts() {
    let gw = Gateway::new(tpm(1000));
    let record = record_of("sk-a");
    let used = |gw: &Gateway| gw.shared.used(&record, "tokens_per_minute", NOW / 60);
    let base = "/v1/projects/demo/locations/us-central1/publishers/google/models";
    let long = "How much wood would a woodchuck chuck if a woodchuck could chuck wood? ".repeat(4);
    let calls = [
        (
            format!("{base}/text-embedding-005:predict"),
            json!({"instances": [{"content": "What is the meaning of life?"}, {"content": long}]}),
            json!({"predictions": [{"embeddings": {"statistics": {"truncated": false, "token_count": 7}, "values": [0.1]}},
                                   {"embeddings": {"statistics": {"truncated": false, "token_count": 60}, "values": [0.2]}}]}),
            67,
        ),
        (
            format!("{base}/gemini-embedding-001:embedContent"),
            json!({"content": {"parts": [{"text": long}]}}),
            json!({"embedding": {"values": [0.1]}, "usageMetadata": {"promptTokenCount": 60, "totalTokenCount": 60}}),
            67 + 60,
        ),
    ];
    for (path, body, answer, settled) in calls {
        let before = used(&gw);
        let mut driver = gw.driver();
        let mut ex = exchange(&gw, &mut driver);
        let body = body.to_string();
        ex.chat_request_headers(body.len(), &[("x-api-key", "sk-a"), (":path", path.as_str())]);
        assert_eq!(ex.request_body(&[body.as_bytes()]), Action::Continue);
        let reserved = used(&gw) - before;
        assert!((50..90).contains(&reserved), "{path}: the prompt's estimate, no output: {reserved}");
        ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
        assert_eq!(
            ex.host.response_header_value("x-ratelimit-remaining-tokens"),
            Some((1000 - before - reserved).to_string().as_str())
        );
        ex.response_body(&[answer.to_string().as_bytes()], 1, true);
        ex.log();
        assert_eq!(used(&gw), settled, "{path}: settled to the reported count");
    }
}

/// An audio transcription's form: its `model` and `prompt` fields, then a file of `size` bytes.
fn transcription_form(model: &str, size: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in [("model", model), ("prompt", "Tollgate, Envoy")] {
        body.extend(format!("--xyz\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes());
    }
    body.extend(b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n");
    body.extend((0..size).map(|i| (i % 251) as u8));
    body.extend(b"\r\n--xyz--\r\n");
    body
}

/// Sends a transcription form from `sk-a` in 16 KiB pieces.
fn send_form<'a>(gw: &Gateway, driver: &'a mut Driver, form: &[u8]) -> (Exchange<'a>, Action) {
    let mut ex = exchange(gw, driver);
    let length = form.len().to_string();
    let action = ex.request_headers(
        &[
            (":method", "POST"),
            (":path", "/v1/audio/transcriptions"),
            (":authority", "api.openai.com"),
            ("content-type", "multipart/form-data; boundary=xyz"),
            ("content-length", &length),
            ("x-api-key", "sk-a"),
        ],
        false,
    );
    assert_eq!(action, Action::Pause, "held until the fields are read");
    let chunks: Vec<&[u8]> = form.chunks(16 * 1024).collect();
    let action = ex.request_body(&chunks);
    (ex, action)
}

/// A transcription (GPT transcription models bill tokens) is reserved once its form's leading
/// fields are read — the model's limits too — and settled to its usage; its file, larger than
/// `max_request_bytes`, is passed on as it comes, never held.
#[test]
fn a_transcription_is_reserved_from_its_forms_fields_and_settled_to_its_usage() {
    let mut config = tpm(1000);
    config["default_max_output_tokens"] = json!(100);
    config["limits"].as_array_mut().unwrap().push(
        json!({"name": "transcribe_tokens", "meter": "total_tokens", "per": "consumer_model", "models": ["gpt-transcribe"],
               "window": "minute", "limit": 150}),
    );
    let spec = json!({"token_counter": {"max_request_bytes": 4096}, "quota": config});
    let gw =
        Gateway { spec: compose::parse(spec.to_string().as_bytes()).unwrap(), shared: Rc::new(MemoryStore::default()) };
    let record = record_of("sk-a");
    let used = |gw: &Gateway| gw.shared.used(&record, "tokens_per_minute", NOW / 60);
    let form = transcription_form("gpt-transcribe", 200_000);
    let mut driver = gw.driver();
    let (mut ex, action) = send_form(&gw, &mut driver, &form);
    assert_eq!(action, Action::Continue);
    assert_eq!(ex.host.forwarded_request, form, "the whole form, unchanged, over max_request_bytes");
    let reserved = used(&gw);
    assert!((101..110).contains(&reserved), "the prompt's estimate and the default output: {reserved}");
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    let answer = json!({"text": "Hi", "usage": {"type": "tokens", "input_tokens": 57, "output_tokens": 14, "total_tokens": 71,
                                                "input_token_details": {"text_tokens": 6, "audio_tokens": 51}}});
    ex.response_body(&[answer.to_string().as_bytes()], 1, true);
    ex.log();
    assert_eq!(used(&gw), 71, "settled to the usage");
    assert_eq!(ex.host.filter_state.get("tollgate.request_model").map(String::as_str), Some("gpt-transcribe"));
    // The model's own limit (150) holds the next one: 71 used, 100 more would not fit.
    let mut driver = gw.driver();
    let (ex, _) = send_form(&gw, &mut driver, &form);
    let reply = ex.host.local_reply.clone().expect("refused");
    assert_eq!(reply.status, 429);
    assert!(String::from_utf8_lossy(&reply.body).contains("transcribe_tokens"));
    assert!(ex.host.forwarded_request.is_empty(), "nothing of it left");
}

/// A SigV4 `authorization` (Bedrock's SDKs) differs on every request (its date and signature):
/// the caller is its access key id, so signing anew is no way round the limit.
#[test]
fn a_sigv4_caller_is_its_access_key_id_whatever_it_signs() {
    let gw = Gateway::new(json!({"consumer": {"header": "authorization", "salt": "s", "downstream_address": false},
        "limits": [{"name": "rpm", "meter": "requests", "per": "consumer", "window": "minute", "limit": 2}]}));
    let signed = |key_id: &str, n: u32| {
        format!(
            "AWS4-HMAC-SHA256 Credential={key_id}/20261128/us-east-1/bedrock/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature={n:064x}"
        )
    };
    let body = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]})
        .to_string();
    let mut statuses = Vec::new();
    for (key_id, n) in [("AKIDONE", 1), ("AKIDONE", 2), ("AKIDONE", 3), ("AKIDTWO", 4)] {
        let mut driver = gw.driver();
        let mut ex = exchange(&gw, &mut driver);
        let authorization = signed(key_id, n);
        let path = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke";
        ex.chat_request_headers(body.len(), &[("authorization", authorization.as_str()), (":path", path)]);
        ex.request_body(&[body.as_bytes()]);
        statuses.push(ex.host.local_reply.as_ref().map_or(200, |r| r.status));
        ex.log();
    }
    assert_eq!(statuses, [200, 200, 429, 200]);
    assert_eq!(gw.shared.used(&record_of("AKIDONE"), "rpm", NOW / 60), 2);
}

/// Token counts, Gemini's embeddings and the model list generate nothing and report no usage:
/// not metered (neither reserved nor charged, never refused for a limit), but an unknown
/// caller is refused on them too where `unknown_consumer: refuse` says so. Their responses carry
/// the consumer's standing all the same: of the limits a generation with the call's model would
/// meet (the per-model ones only when the call names a model).
#[test]
fn unmetered_calls_are_neither_reserved_nor_refused_but_show_the_standing() {
    let mut config = tpm(100);
    config["unknown_consumer"] = json!("refuse");
    config["consumer"]["downstream_address"] = json!(false);
    config["limits"].as_array_mut().unwrap().push(json!({"name": "claude_tpm", "meter": "total_tokens",
        "per": "consumer_model", "window": "minute", "limit": 50, "models": ["claude-*"]}));
    let gw = Gateway::new(config);
    let record = record_of("sk-a");
    let mut driver = gw.driver();
    let mut generation = start(&gw, &mut driver, "sk-a", chat(20), NOW);
    generation.finish(30, 10);
    assert_eq!(gw.shared.used(&record, "tokens_per_minute", NOW / 60), 40);
    let long = "Count the tokens of this rather long prompt, please. ".repeat(20);
    // (path, body, tightest token limit and what is left of it)
    let calls = [
        (
            "/v1/messages/count_tokens",
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": long}]}),
            ("50", "50"),
        ),
        (
            "/v1beta/models/gemini-2.5-flash:countTokens",
            json!({"contents": [{"parts": [{"text": long}]}]}),
            ("100", "60"),
        ),
        (
            "/v1beta/models/gemini-embedding-001:embedContent",
            json!({"content": {"parts": [{"text": long}]}}),
            ("100", "60"),
        ),
        ("/v1/responses/input_tokens", json!({"model": "gpt-4.1", "input": long}), ("100", "60")),
    ];
    for (path, body, (limit, remaining)) in &calls {
        for key in [Some("sk-a"), None] {
            let mut driver = gw.driver();
            let mut ex = exchange(&gw, &mut driver);
            let body = body.to_string();
            let headers: Vec<(&str, &str)> =
                key.map(|k| ("x-api-key", k)).into_iter().chain([(":path", *path)]).collect();
            ex.chat_request_headers(body.len(), &headers);
            ex.request_body(&[body.as_bytes()]);
            let status = ex.host.local_reply.as_ref().map(|r| r.status);
            assert_eq!(status, if key.is_some() { None } else { Some(401) }, "{path} {key:?}");
            if key.is_some() {
                ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
                ex.response_body(&[br#"{"input_tokens":250}"#], 1, true);
                let header = |name: &str| ex.host.response_header_value(name).map(str::to_string);
                assert_eq!(header("x-ratelimit-limit-tokens").as_deref(), Some(*limit), "{path}");
                assert_eq!(header("x-ratelimit-remaining-tokens").as_deref(), Some(*remaining), "{path}");
                assert_eq!(header("x-ratelimit-reset-tokens").as_deref(), Some("40s"), "{path}");
                assert_eq!(header("x-ratelimit-remaining-requests").as_deref(), Some("999"), "{path}");
            }
            ex.log();
            if key.is_some() {
                assert_eq!(
                    ex.host.filter_state.get("tollgate.quota.remaining_tokens").map(String::as_str),
                    Some(*remaining)
                );
            }
        }
    }
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    ex.request_headers(
        &[(":method", "GET"), (":path", "/v1/models"), (":authority", "gw"), ("x-api-key", "sk-a")],
        true,
    );
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    assert_eq!(
        ex.host.response_header_value("x-ratelimit-remaining-tokens"),
        Some("60"),
        "no model named: the per-model limit is not shown"
    );
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    ex.request_headers(&[(":method", "GET"), (":path", "/v1/models"), (":authority", "gw")], true);
    assert_eq!(ex.host.local_reply.as_ref().map(|r| r.status), Some(401), "the model list too");
    assert_eq!(gw.shared.used(&record, "tokens_per_minute", NOW / 60), 40);
    assert_eq!(gw.shared.used(&record, "requests_per_minute", NOW / 60), 1);
}

#[test]
fn unknown_consumers_can_be_refused() {
    let gw = Gateway::new(
        json!({"consumer": {"header": "x-api-key", "downstream_address": false}, "unknown_consumer": "refuse",
        "limits": [{"name": "rpm", "meter": "requests", "per": "consumer", "window": "minute", "limit": 10}]}),
    );
    let mut driver = gw.driver();
    let mut ex = Exchange::new(&mut driver);
    ex.host.shared = gw.shared.clone();
    ex.request_headers(&[(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "gw")], false);
    let reply = ex.host.local_reply.clone().unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(serde_json::from_slice::<Value>(&reply.body).unwrap()["error"]["code"], "invalid_api_key");
}

#[test]
fn unknown_consumers_share_one_counter_with_its_own_tier() {
    let gw = Gateway::new(json!({"consumer": {"header": "x-api-key", "downstream_address": false},
        "tiers": {"anonymous": {"rpm": 2}}, "consumers": {"unknown": "anonymous"},
        "limits": [{"name": "rpm", "meter": "requests", "per": "consumer", "window": "minute", "limit": 100}]}));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let mut driver = gw.driver();
        let mut ex = exchange(&gw, &mut driver);
        let body = chat(10).to_string();
        ex.chat_request_headers(body.len(), &[]); // no x-api-key
        ex.request_body(&[body.as_bytes()]);
        statuses.push(ex.host.local_reply.as_ref().map_or(200, |r| r.status));
        ex.log();
    }
    assert_eq!(statuses, [200, 200, 429], "the anonymous tier's 2 requests per minute, shared");
    assert_eq!(gw.shared.used("tollgate.quota;consumer;unknown", "rpm", NOW / 60), 2);
}

#[test]
fn tiers_from_an_auth_filters_metadata_raise_the_limit() {
    let gw = Gateway::new(
        json!({"consumer": {"property": ["metadata", "jwt", "sub"]}, "tier_property": ["metadata", "jwt", "tier"],
        "tiers": {"gold": {"tpm": 100000}},
        "limits": [{"name": "tpm", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 100}]}),
    );
    for (tier, admitted) in [(None, false), (Some("gold"), true)] {
        let mut driver = gw.driver();
        let mut ex = exchange(&gw, &mut driver);
        ex.host.properties.insert(vec!["metadata".into(), "jwt".into(), "sub".into()], b"alice".to_vec());
        if let Some(t) = tier {
            ex.host.properties.insert(vec!["metadata".into(), "jwt".into(), "tier".into()], t.as_bytes().to_vec());
        }
        ex.request_headers(&[(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "gw")], false);
        ex.request_body(&[chat(500).to_string().as_bytes()]);
        assert_eq!(ex.host.local_reply.is_none(), admitted, "tier {tier:?}");
    }
}

#[test]
fn cas_conflicts_are_retried_and_nothing_is_lost() {
    let gw = Gateway::new(tpm(100_000));
    let mut total = 0;
    for i in 0..30 {
        gw.shared.conflicts.set(i % 4);
        let mut driver = gw.driver();
        let mut call = start(&gw, &mut driver, "sk-a", chat(10), NOW);
        assert!(call.admitted);
        gw.shared.conflicts.set(i % 3);
        call.finish(7, 8);
        total += 15;
    }
    let key = tollgate_core::quota::hashed_consumer("s", "sk-a");
    assert_eq!(gw.shared.used(&format!("tollgate.quota;consumer;{key}"), "tokens_per_minute", NOW / 60), total);
    let mut driver = gw.driver();
    let call = start(&gw, &mut driver, "sk-a", chat(10), NOW);
    assert!(call.ex.host.counter("tollgate.quota.cas_retries", &[]) == 0 || call.admitted);
}

#[test]
fn dollars_limits_use_the_price_table() {
    let gw = Gateway::new(json!({"consumer": {"header": "x-api-key"},
        "prices": {"gpt-4o": {"input": 2.5, "output": 10.0}},
        "limits": [{"name": "daily_usd", "meter": "dollars", "per": "consumer", "window": "day", "limit": 0.01}]}));
    // 0.01 USD = 10000 micro-USD; a request reserving 500 output tokens costs > 5000 µUSD.
    let mut driver = gw.driver();
    let mut first = start(&gw, &mut driver, "sk-a", chat(500), NOW);
    assert!(first.admitted);
    first.finish(100, 400); // 250 + 4000 = 4250 µUSD
    let mut driver = gw.driver();
    assert!(!start(&gw, &mut driver, "sk-a", chat(600), NOW).admitted, "4250 + (estimate + 6000) > 10000");
    let mut driver = gw.driver();
    assert!(start(&gw, &mut driver, "sk-a", chat(100), NOW).admitted);
}

/// Anthropic's prompt caching: reads cost a tenth of input, five-minute writes 1.25×, one-hour
/// writes 2× — a dollar limit is charged each part of the input at its own price, from the
/// usage Anthropic reports (`cache_creation` splitting the writes by lifetime).
#[test]
fn dollars_limits_price_cache_reads_and_writes_apart() {
    let gw = Gateway::new(json!({"consumer": {"header": "x-api-key", "salt": "s"},
        "prices": {"claude-sonnet-4*": {"input": 3, "output": 15, "cached_input": 0.3, "cache_creation_input": 3.75,
                                        "cache_creation_input_long": 6}},
        "limits": [{"name": "daily_usd", "meter": "dollars", "per": "consumer", "window": "day", "limit": 10}]}));
    let record = record_of("sk-a");
    let mut driver = gw.driver();
    let mut ex = exchange(&gw, &mut driver);
    let body =
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]})
            .to_string();
    ex.chat_request_headers(body.len(), &[("x-api-key", "sk-a"), (":path", "/v1/messages")]);
    assert_eq!(ex.request_body(&[body.as_bytes()]), Action::Continue);
    let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 25, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 1500,
                  "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000},
                  "output_tokens": 40}});
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    ex.response_body(&[answer.to_string().as_bytes()], 1, true);
    ex.log();
    // 25 × 3 + 2,000 × 0.3 + 500 × 3.75 + 1,000 × 6 + 40 × 15 micro-USD
    assert_eq!(gw.shared.used(&record, "daily_usd", NOW / 86_400), 75 + 600 + 1_875 + 6_000 + 600);
}

/// Istio's `WasmPlugin` cannot set `allow_on_headers_stop_iteration`: with
/// `hold_request_headers: false` the headers go on at once and the body is held instead, so a
/// refusal still answers 429 before the prompt leaves, and an admitted request settles as usual.
#[test]
fn without_held_headers_the_body_is_held_and_refusals_still_answer() {
    let mut quota = tpm(1000);
    quota["hold_request_headers"] = json!(false);
    let config = json!({"token_counter": {"hold_request_headers": false}, "quota": quota});
    let gw = Gateway {
        spec: compose::parse(config.to_string().as_bytes()).unwrap(),
        shared: Rc::new(MemoryStore::default()),
    };
    for (max_tokens, admitted) in [(100, true), (5000, false)] {
        let mut driver = gw.driver();
        let mut ex = exchange(&gw, &mut driver);
        let body = chat(max_tokens).to_string();
        let action = ex.chat_request_headers(body.len(), &[("x-api-key", "sk-a")]);
        assert_eq!(action, Action::Continue, "headers are not held");
        let action = ex.request_body(&[body.as_bytes()]);
        assert_eq!(ex.host.local_reply.is_none(), admitted);
        if admitted {
            assert_eq!(action, Action::Continue);
            let mut call = Call { ex, admitted };
            call.finish(20, 30);
            // The response headers are written while the reservation (prompt estimate + 100) holds.
            let remaining: u64 = call.header("x-ratelimit-remaining-tokens").unwrap().parse().unwrap();
            assert!((850..900).contains(&remaining), "{remaining}");
        } else {
            assert_eq!(ex.host.local_reply.as_ref().unwrap().status, 429);
            assert!(!ex.host.logs_text().contains("refused (host status"), "{}", ex.host.logs_text());
        }
    }
}

#[test]
fn envoys_rate_limit_filter_needs_held_headers() {
    let config = json!({"quota": {"hold_request_headers": false, "global": {"backend": "envoy_ratelimit"},
        "limits": [{"name": "tpm", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 10}]}});
    let err = compose::parse(config.to_string().as_bytes()).err().unwrap().0;
    assert!(err.starts_with("quota.hold_request_headers: must be true"), "{err}");
}

/// An OpenAI stream of `n` chunks of `words` words each, then the usage chunk and `[DONE]`.
fn long_stream(n: usize, words: usize) -> Vec<Vec<u8>> {
    let text = "stream ".repeat(words);
    let mut chunks: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let chunk = json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o",
                               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
            format!("data: {chunk}\n\n").into_bytes()
        })
        .collect();
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [],
                       "usage": {"prompt_tokens": 9, "completion_tokens": n * words, "total_tokens": 9 + n * words}});
    chunks.push(format!("data: {usage}\n\ndata: [DONE]\n\n").into_bytes());
    chunks
}

/// What consumer `sk-a` used of `tpm` this minute.
fn tpm_used(gw: &Gateway) -> u64 {
    used(gw, "tpm")
}

/// What consumer `sk-a` used of `limit` this minute.
fn used(gw: &Gateway, limit: &str) -> u64 {
    let record = format!("tollgate.quota;consumer;{}", tollgate_core::quota::hashed_consumer("s", "sk-a"));
    gw.shared.used(&record, limit, NOW / 60)
}

fn cut_off_config(limit: u64) -> Value {
    json!({"consumer": {"header": "x-api-key", "salt": "s"}, "stream_cut_off": true, "default_max_output_tokens": 10,
           "limits": [{"name": "tpm", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": limit}]})
}

fn stream_request() -> Value {
    json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "Tell me a long story"}]})
}

#[test]
fn a_stream_that_outgrows_its_consumers_quota_is_cut_off_with_one_error_event() {
    let gw = Gateway::new(cut_off_config(300));
    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-a", stream_request(), NOW);
    assert!(call.admitted);
    let reserved = tpm_used(&gw);
    call.ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    let chunks = long_stream(40, 10);
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    call.ex.response_body(&refs, 1, true);
    call.ex.log();

    let client = String::from_utf8(call.ex.host.client_body.clone()).unwrap();
    let events: Vec<&str> = client.split("\n\n").filter(|e| !e.is_empty()).collect();
    let error = events.last().unwrap();
    assert!(error.contains("\"rate_limit_exceeded\"") && error.contains("tpm"), "{error}");
    assert_eq!(events.iter().filter(|e| e.contains("error")).count(), 1, "one error event");
    let delivered = events.len() - 1;
    assert!(delivered > 3 && delivered < 40, "cut mid-way after {delivered} chunks");
    assert!(events[..delivered].iter().all(|e| e.starts_with("data: {") && e.contains("\"content\"")));
    assert!(call.ex.host.reset, "the stream is reset so the provider stops");
    assert_eq!(call.ex.host.counter("tollgate.quota.streams_cut", &["limit=tpm"]), 1);

    // Settled to the provider's usage when it arrives, which here it did (the fake keeps
    // delivering after the reset): the whole answer the provider generated, 409 tokens.
    let used = tpm_used(&gw);
    assert!(reserved < 300 && used == 409, "reserved {reserved}, settled {used}");
    let mut driver = gw.driver();
    assert!(!start(&gw, &mut driver, "sk-a", stream_request(), NOW).admitted, "the consumer is out");
}

/// A Gemini stream (`alt=sse`) is cut with Google's error object, which Google's Gen AI SDK
/// raises as a `ClientError` (it reads `code` as the HTTP status: OpenAI's string code broke it).
#[test]
fn a_gemini_stream_is_cut_off_with_googles_error_object() {
    let gw = Gateway::new(cut_off_config(300));
    let mut driver = gw.driver();
    let mut ex = Exchange::new(&mut driver);
    ex.host.shared = gw.shared.clone();
    ex.host.now_ns = NOW * 1_000_000_000;
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "Tell me a long story"}]}]}).to_string();
    ex.chat_request_headers(
        body.len(),
        &[(":path", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"), ("x-api-key", "sk-a")],
    );
    assert_eq!(ex.request_body(&[body.as_bytes()]), Action::Continue);
    ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    let text = "stream ".repeat(10);
    let chunk = json!({"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}]});
    let chunks: Vec<Vec<u8>> = (0..40).map(|_| format!("data: {chunk}\r\n\r\n").into_bytes()).collect();
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    ex.response_body(&refs, 1, true);
    let client = String::from_utf8(ex.host.client_body.clone()).unwrap();
    let last = client.trim_end().rsplit("data: ").next().unwrap();
    let error: Value = serde_json::from_str(last).unwrap();
    assert_eq!(error["error"]["code"], 429, "{error}");
    assert_eq!(error["error"]["status"], "RESOURCE_EXHAUSTED");
    assert!(error["error"]["message"].as_str().unwrap().contains("tpm"));
}

#[test]
fn a_cut_stream_without_reported_usage_is_settled_to_what_was_estimated() {
    let gw = Gateway::new(cut_off_config(300));
    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-a", stream_request(), NOW);
    call.ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    let chunks = long_stream(40, 10);
    let refs: Vec<&[u8]> = chunks.iter().take(30).map(Vec::as_slice).collect();
    call.ex.response_body(&refs, 1, false);
    call.ex.log(); // reset: no usage from the provider
    let used = tpm_used(&gw);
    // The event that crossed the limit reached the client and is charged: over by less than
    // one event (10 words).
    assert!(used > 280 && used <= 300 + 20, "estimated input and output up to the cut: {used}");
    assert_eq!(call.ex.host.counter("tollgate.quota.settlements", &["outcome=estimated"]), 1);
}

/// An Anthropic Messages stream cut off by the provider's reset after `deltas` text events of
/// 10 words each: `message_start` reports `input` tokens (`cached` of them read from the cache),
/// and the closing `message_delta` with the output never comes.
fn cut_anthropic_stream(gw: &Gateway, input: u64, cached: u64, deltas: usize) -> (u64, u64) {
    let mut driver = gw.driver();
    let mut ex = exchange(gw, &mut driver);
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": true,
                      "messages": [{"role": "user", "content": "Tell me a long story"}]})
    .to_string();
    let length = body.len().to_string();
    let headers = [
        (":method", "POST"),
        (":path", "/v1/messages"),
        (":authority", "gw"),
        ("content-type", "application/json"),
        ("content-length", length.as_str()),
        ("x-api-key", "sk-a"),
    ];
    ex.request_headers(&headers, false);
    assert_eq!(ex.request_body(&[body.as_bytes()]), Action::Continue);
    ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    let start = json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input - cached, "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0, "output_tokens": 1}}});
    let mut chunks = vec![format!("event: message_start\ndata: {start}\n\n").into_bytes()];
    let block = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
    chunks.push(format!("event: content_block_start\ndata: {block}\n\n").into_bytes());
    for _ in 0..deltas {
        let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "stream ".repeat(10)}});
        chunks.push(format!("event: content_block_delta\ndata: {delta}\n\n").into_bytes());
    }
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    ex.response_body(&refs, 1, false);
    ex.log(); // reset by the provider: no `message_delta`
    let estimate = ex.host.filter_state["tollgate.estimated_input_tokens"].parse().unwrap();
    assert_eq!(ex.host.counter("tollgate.quota.settlements", &["outcome=estimated"]), 1);
    (tpm_used(gw), estimate)
}

#[test]
fn a_cut_stream_is_settled_to_the_input_the_provider_reported_and_the_output_streamed() {
    // Anthropic reports the input at the start of a stream (exact, with its cached part): a stream
    // that ends before its final usage settles that input, plus the output estimated from the
    // text that was streamed — not the request's input estimate, whether larger or smaller.
    let config = || {
        let mut config = cut_off_config(1_000_000);
        config["limits"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "uncached", "per": "consumer", "window": "minute",
            "limit": 1_000_000, "meter": {"weighted": {"input": 1, "output": 1, "cached_input": 0}}}));
        config
    };
    let gw = Gateway::new(config());
    let (without_reported_input, estimate) = cut_anthropic_stream(&gw, 0, 0, 20);
    let output = without_reported_input - estimate;
    assert!(output > 150 && output < 250, "20 events of 10 words: {output}");
    assert!(estimate > 2, "{estimate}");
    for (input, cached) in [(2, 0), (1200, 0), (1200, 1000)] {
        let gw = Gateway::new(config());
        let (total, _) = cut_anthropic_stream(&gw, input, cached, 20);
        assert_eq!(total, input + output, "input {input} ({cached} cached), output {output}");
        assert_eq!(used(&gw, "uncached"), input - cached + output, "cached input priced as configured");
    }
}

#[test]
fn streams_within_their_reservation_or_limit_are_not_touched() {
    // Within the limit: the whole stream passes byte for byte, charges grow as it flows.
    let gw = Gateway::new(cut_off_config(100_000));
    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-a", stream_request(), NOW);
    call.ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    let chunks = long_stream(40, 10);
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    call.ex.response_body(&refs, 1, true);
    call.ex.log();
    assert_eq!(call.ex.host.client_body, chunks.concat());
    assert!(!call.ex.host.reset);
    let used = tpm_used(&gw);
    assert_eq!(used, 409, "settled to the provider's usage");

    // A compressed stream is not metered: passed on as it is.
    let gw = Gateway::new(cut_off_config(300));
    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-a", stream_request(), NOW);
    let headers = [(":status", "200"), ("content-type", "text/event-stream"), ("content-encoding", "gzip")];
    call.ex.response_headers(&headers, false);
    call.ex.response_body(&refs, 1, true);
    call.ex.log();
    assert_eq!(call.ex.host.client_body, chunks.concat());

    // Off (the default): never cut, whatever the limit.
    let mut config = cut_off_config(300);
    config.as_object_mut().unwrap().remove("stream_cut_off");
    let gw = Gateway::new(config);
    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-a", stream_request(), NOW);
    call.ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    call.ex.response_body(&refs, 1, true);
    call.ex.log();
    assert_eq!(call.ex.host.client_body, chunks.concat());
}

#[test]
fn a_stream_that_cannot_be_read_as_sse_is_passed_on_unmetered_and_counted_once() {
    let gw = Gateway::new(cut_off_config(300));
    let mut driver = gw.driver();
    let mut call = start(&gw, &mut driver, "sk-a", stream_request(), NOW);
    call.ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    // One "event" larger than the decoder holds (1 MiB), then more bytes.
    let huge = vec![b'x'; (1 << 20) + 10];
    let chunks: [&[u8]; 3] = [b"data: ", &huge, b"more\n\n"];
    call.ex.response_body(&chunks, 1, true);
    call.ex.log();
    assert_eq!(call.ex.host.client_body, chunks.concat(), "passed on unchanged");
    assert_eq!(call.ex.host.counter("tollgate.quota.stream_unmetered", &[]), 1);
    assert!(!call.ex.host.reset);
}
