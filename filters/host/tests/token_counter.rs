//! The token-counter's whole per-stream state machine, driven through the fake host the way
//! Envoy drives it: golden usage for every provider fixture, every stream split at every byte,
//! and the edge cases (bad input, compression, limits, resets, trailers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{json, Value};
use std::path::PathBuf;
use tollgate_core::stage::token_counter::{Config, TokenCounter};
use tollgate_core::stage::{Pipeline, StageFactory};
use tollgate_host::fake::Exchange;
use tollgate_host::{Action, Driver};

/// Compares bytes and, on mismatch, shows where they differ instead of two huge arrays.
#[track_caller]
fn assert_bytes(actual: &[u8], expected: &[u8], context: &str) {
    if actual == expected {
        return;
    }
    let at = actual.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(actual.len().min(expected.len()));
    let show = |b: &[u8]| String::from_utf8_lossy(&b[at.saturating_sub(40)..(at + 60).min(b.len())]).into_owned();
    panic!(
        "{context}: bytes differ at {at} (lengths {} vs {})\n actual: {:?}\n expect: {:?}",
        actual.len(),
        expected.len(),
        show(actual),
        show(expected)
    );
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["cases"].as_array().unwrap().clone()
}

fn factory(config: Value) -> TokenCounter {
    TokenCounter::new(Config::parse(config.to_string().as_bytes(), "").unwrap())
}

fn driver_with(factory: &TokenCounter, max_request_bytes: Option<u64>) -> Driver {
    Driver::new(Pipeline::new(vec![factory.create()], max_request_bytes))
}

/// The provider's response bytes for a case, as the upstream would send them given the request
/// it received (OpenAI only streams usage when `include_usage` was asked for).
fn upstream_body(case: &Value, forwarded_request: &[u8]) -> Vec<u8> {
    let file = case["response"].as_str().unwrap();
    let raw = std::fs::read(fixtures().join("responses").join(file)).unwrap();
    if file.ends_with(".events.json") {
        return tollgate_host::fake::eventstream_fixture(&raw);
    }
    let asked = serde_json::from_slice::<Value>(forwarded_request)
        .ok()
        .and_then(|r| r["stream_options"]["include_usage"].as_bool())
        == Some(true);
    if case["openai_include_usage"] == json!(true) && !asked {
        return without_usage(&raw);
    }
    raw
}

/// OpenAI's stream without include_usage, computed independently of the filter (via serde).
fn without_usage(raw: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(raw).unwrap();
    let mut out = String::new();
    for event in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let data = event.strip_prefix("data: ").unwrap();
        if data == "[DONE]" {
            out.push_str("data: [DONE]\n\n");
            continue;
        }
        let mut v: Value = serde_json::from_str(data).unwrap();
        let obj = v.as_object_mut().unwrap();
        if !obj["usage"].is_null() && obj["choices"] == json!([]) {
            continue;
        }
        obj.remove("usage");
        out.push_str(&format!("data: {}\n\n", serde_json::to_string(&v).unwrap()));
    }
    out.into_bytes()
}

struct Run {
    ex_host: tollgate_host::fake::FakeHost,
    forwarded: Vec<u8>,
}

const FORM_BOUNDARY: &str = "tollgate-form-7MA4YWxkTrZu0gW";

/// A case's request body and content type: JSON, or for a `form_file` case the form a client
/// sends — the `request` members as text fields, then the file (byte i = i mod 251).
fn request_body(case: &Value) -> (Vec<u8>, String) {
    let Some(file) = case.get("form_file") else {
        return (serde_json::to_vec(&case["request"]).unwrap(), "application/json".into());
    };
    let mut body = Vec::new();
    for (name, value) in case["request"].as_object().unwrap() {
        let value = value.as_str().unwrap();
        body.extend(
            format!("--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes(),
        );
    }
    let (field, filename, kind) =
        (file["field"].as_str().unwrap(), file["filename"].as_str().unwrap(), file["content_type"].as_str().unwrap());
    body.extend(
        format!("--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: {kind}\r\n\r\n")
            .bytes(),
    );
    body.extend((0..file["bytes"].as_u64().unwrap()).map(|i| (i % 251) as u8));
    body.extend(format!("\r\n--{FORM_BOUNDARY}--\r\n").bytes());
    (body, format!("multipart/form-data; boundary={FORM_BOUNDARY}"))
}

/// Plays a full exchange for `case`, with the response body cut into `chunks`.
fn run_case(case: &Value, factory: &TokenCounter, split: impl Fn(&[u8]) -> Vec<Vec<u8>>) -> Run {
    let mut driver = driver_with(factory, None);
    let mut ex = Exchange::new(&mut driver);
    let (body, content_type) = request_body(case);
    let length = body.len().to_string();
    let path = case["path"].as_str().unwrap();
    let action = ex.request_headers(
        &[
            (":method", "POST"),
            (":path", path),
            (":authority", "api.example.com"),
            ("content-type", &content_type),
            ("content-length", &length),
        ],
        false,
    );
    assert_eq!(action, Action::Pause, "{}: headers held while the body is read", case["name"]);
    // A form goes in the pieces a client writes; its head is read, the rest passed on.
    let pieces: Vec<&[u8]> =
        if case.get("form_file").is_some() { body.chunks(16 * 1024).collect() } else { vec![&body] };
    assert_eq!(ex.request_body(&pieces), Action::Continue);
    let forwarded = ex.host.forwarded_request.clone();
    if case.get("form_file").is_some() {
        assert_eq!(forwarded, body, "{}: the form passed on unchanged", case["name"]);
    }
    if forwarded != body {
        assert_eq!(ex.host.request_header_value("content-length"), Some(forwarded.len().to_string().as_str()));
    }
    let status = case["status"].as_u64().unwrap().to_string();
    let mut headers = vec![(":status", status.as_str()), ("content-type", case["content_type"].as_str().unwrap())];
    let extra: Vec<(String, String)> = case["headers"]
        .as_object()
        .map(|h| h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect())
        .unwrap_or_default();
    headers.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    ex.response_headers(&headers, false);
    let upstream = upstream_body(case, &forwarded);
    let pieces = split(&upstream);
    let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
    ex.response_body(&refs, 5, true);
    ex.log();
    Run { ex_host: ex.host, forwarded }
}

fn whole(bytes: &[u8]) -> Vec<Vec<u8>> {
    vec![bytes.to_vec()]
}

/// What the client must receive for a case (the provider's bytes, minus usage it did not ask for).
fn expected_client_body(case: &Value, forwarded: &[u8]) -> Vec<u8> {
    let sent = upstream_body(case, forwarded);
    let client_asked = case["request"]["stream_options"]["include_usage"].as_bool() == Some(true);
    if case["openai_include_usage"] == json!(true) && !client_asked {
        let raw = std::fs::read(fixtures().join("responses").join(case["response"].as_str().unwrap())).unwrap();
        return without_usage(&raw);
    }
    sent
}

fn check_usage(name: &str, host: &tollgate_host::fake::FakeHost, case: &Value) {
    let usage = &case["usage"];
    let base = "tollgate.gen_ai.client.token.usage";
    if usage.is_null() {
        assert_eq!(host.counter(base, &[]), 0, "{name}: an error response reports no usage");
        let status = case["status"].as_u64().unwrap().to_string();
        assert_eq!(host.counter("tollgate.gen_ai.requests", &[&format!("error_type={status}")]), 1, "{name}");
        assert_eq!(host.filter_state["tollgate.usage"], "none", "{name}");
        return;
    }
    for (kind, key, state) in [
        ("input", "input", "tollgate.input_tokens"),
        ("output", "output", "tollgate.output_tokens"),
        ("total", "total", "tollgate.total_tokens"),
        ("cached_input", "cached_input", "tollgate.cached_input_tokens"),
        ("cache_creation_input", "cache_creation", "tollgate.cache_creation_input_tokens"),
        ("reasoning", "reasoning", "tollgate.reasoning_tokens"),
    ] {
        let expected = usage[key].as_u64().unwrap();
        assert_eq!(host.counter(base, &[&format!("gen_ai_token_type={kind}")]), expected, "{name}: {kind} counter");
        assert_eq!(host.filter_state[state], expected.to_string(), "{name}: {state}");
    }
    assert_eq!(host.filter_state["tollgate.usage"], "reported", "{name}");
    let model = case["response_model"].as_str().unwrap();
    assert_eq!(host.filter_state["tollgate.response_model"], model, "{name}");
    assert_eq!(
        host.counter(base, &[&format!("gen_ai_response_model={model}"), "gen_ai_token_type=input"]),
        usage["input"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        host.counter(base, &[&format!("gen_ai_provider_name={}", case["provider"].as_str().unwrap())]),
        usage["total"].as_u64().unwrap() * 2
            + usage["cached_input"].as_u64().unwrap()
            + usage["cache_creation"].as_u64().unwrap()
            + usage["reasoning"].as_u64().unwrap(),
        "{name}: provider label"
    );
    assert_eq!(host.counter("tollgate.gen_ai.requests", &["error_type="]), 1, "{name}");
    assert!(host.counter("tollgate.token_counter.unread", &[]) == 0, "{name}: nothing unread: {:?}", host.counters);
}

#[test]
fn golden_usage_for_every_provider_fixture() {
    let factory = factory(json!({}));
    for case in manifest() {
        let name = case["name"].as_str().unwrap();
        let run = run_case(&case, &factory, whole);
        check_usage(name, &run.ex_host, &case);
        assert_bytes(
            &run.ex_host.client_body,
            &expected_client_body(&case, &run.forwarded),
            &format!("{name}: client bytes"),
        );
        assert!(
            run.ex_host.filter_state["tollgate.estimated_input_tokens"].parse::<u64>().unwrap() > 0,
            "{name}: estimate"
        );
    }
}

#[test]
fn every_stream_split_at_every_byte_gives_identical_usage_and_bytes() {
    let factory = factory(json!({}));
    for case in manifest().into_iter().filter(|c| c["usage"].is_object()) {
        let name = case["name"].as_str().unwrap();
        let reference = run_case(&case, &factory, whole);
        let body_len = upstream_body(&case, &reference.forwarded).len();
        for cut in 0..=body_len {
            let run = run_case(&case, &factory, |b| vec![b[..cut].to_vec(), b[cut..].to_vec()]);
            assert_eq!(
                state_without_timing(&run.ex_host),
                state_without_timing(&reference.ex_host),
                "{name}: cut at {cut}"
            );
            assert_bytes(&run.ex_host.client_body, &reference.ex_host.client_body, &format!("{name}: cut at {cut}"));
        }
        let bytes = run_case(&case, &factory, |b| b.chunks(1).map(<[u8]>::to_vec).collect());
        check_usage(name, &bytes.ex_host, &case);
        assert_bytes(&bytes.ex_host.client_body, &reference.ex_host.client_body, &format!("{name}: 1-byte chunks"));
    }
}

#[test]
fn random_three_way_chunkings_give_identical_usage() {
    let factory = factory(json!({}));
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for case in manifest().into_iter().filter(|c| c["usage"].is_object()) {
        let name = case["name"].as_str().unwrap();
        for _ in 0..40 {
            let (a, b) = (next(), next());
            let run = run_case(&case, &factory, |body| {
                let mut cuts = [a as usize % (body.len() + 1), b as usize % (body.len() + 1)];
                cuts.sort_unstable();
                vec![body[..cuts[0]].to_vec(), body[cuts[0]..cuts[1]].to_vec(), body[cuts[1]..].to_vec()]
            });
            check_usage(name, &run.ex_host, &case);
        }
    }
}

/// `filter_state: false` writes no filter state and changes nothing else (metrics, bytes), for
/// every provider fixture (errors, streams, cached and reasoning tokens included).
#[test]
fn without_filter_state_the_metrics_and_bytes_are_the_same() {
    let (with, without) = (factory(json!({})), factory(json!({"filter_state": false})));
    let mut cases = 0;
    for case in manifest() {
        let name = case["name"].as_str().unwrap();
        let full = run_case(&case, &with, whole).ex_host;
        let silent = run_case(&case, &without, whole).ex_host;
        assert!(full.filter_state.len() >= 10, "{name}: {:?}", full.filter_state);
        assert!(silent.filter_state.is_empty(), "{name}: {:?}", silent.filter_state);
        assert_eq!(silent.counters, full.counters, "{name}");
        assert_eq!(silent.histograms, full.histograms, "{name}");
        assert_eq!(silent.client_body, full.client_body, "{name}");
        cases += 1;
    }
    assert!(cases >= 20, "{cases}");
}

/// Filter state minus the fields that depend on how many chunks (fake milliseconds) there were.
fn state_without_timing(host: &tollgate_host::fake::FakeHost) -> std::collections::BTreeMap<String, String> {
    let mut state = host.filter_state.clone();
    state.remove("tollgate.duration_ms");
    state.remove("tollgate.ttft_ms");
    state
}

// ---- request side ---------------------------------------------------------------------------

fn chat_headers(length: usize) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":path", "/v1/chat/completions".into()),
        (":authority", "gw".into()),
        ("content-type", "application/json".into()),
        ("content-length", length.to_string()),
    ]
}

fn send_headers(ex: &mut Exchange<'_>, headers: &[(&'static str, String)], eos: bool) -> Action {
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ex.request_headers(&refs, eos)
}

#[test]
fn non_ai_traffic_passes_untouched_without_metrics() {
    let factory = factory(json!({}));
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    assert_eq!(
        ex.request_headers(&[(":method", "POST"), (":path", "/upload"), (":authority", "gw")], false),
        Action::Continue
    );
    assert_eq!(ex.request_body(&[b"not json at all"]), Action::Continue);
    ex.response_headers(&[(":status", "200"), ("content-type", "text/plain")], false);
    ex.response_body(&[b"ok"], 1, true);
    ex.log();
    assert!(ex.host.counters.is_empty() && ex.host.histograms.is_empty() && ex.host.filter_state.is_empty());
    assert_eq!(ex.host.client_body, b"ok");
    for path in ["/v1/models", "/v1/models/gpt-4o"] {
        let mut ex = Exchange::new(&mut driver);
        assert_eq!(
            ex.request_headers(&[(":method", "GET"), (":path", path), (":authority", "gw")], true),
            Action::Continue
        );
        ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
        let card = br#"{"id":"gpt-4o","object":"model","created":0,"owned_by":"openai"}"#;
        ex.response_body(&[card], 1, true);
        ex.log();
        assert_eq!(ex.host.client_body, card, "{path}");
        // A model question reports no usage: no token metrics, no access-log fields.
        assert!(ex.host.counters.is_empty() && ex.host.histograms.is_empty(), "{path}");
        assert!(ex.host.filter_state.is_empty(), "{path}");
    }
}

/// An InvokeModel stream whose chunk cannot be read counts it and reads on; one cut short still
/// has the input Claude's first event reported, marked incomplete.
#[test]
fn invoke_streams_read_past_a_bad_chunk_and_keep_what_a_reset_one_reported() {
    let raw = std::fs::read(fixtures().join("responses/bedrock/invoke-claude-stream.events.json")).unwrap();
    let mut events: Vec<Value> = serde_json::from_slice(&raw).unwrap();
    events.insert(2, json!({"event": "chunk", "payload": {"bytes": "%%% not base64 %%%"}}));
    let frames = |events: &[Value]| tollgate_host::fake::eventstream_fixture(&serde_json::to_vec(events).unwrap());
    let factory = factory(json!({}));
    let body =
        br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":512,"messages":[{"role":"user","content":"Hi"}]}"#;
    let path = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream";
    let run = |events: &[Value], complete: bool| {
        let mut driver = driver_with(&factory, None);
        let mut ex = Exchange::new(&mut driver);
        let length = body.len().to_string();
        ex.request_headers(
            &[(":method", "POST"), (":path", path), (":authority", "bedrock"), ("content-length", length.as_str())],
            false,
        );
        ex.request_body(&[body]);
        ex.response_headers(&[(":status", "200"), ("content-type", "application/vnd.amazon.eventstream")], false);
        let stream = frames(events);
        ex.response_body(&[stream.as_slice()], 1, complete);
        ex.log();
        assert_eq!(ex.host.client_body, stream, "delivered unaltered");
        (ex.host.filter_state.clone(), ex.host.counters.clone())
    };
    let (state, counters) = run(&events, true);
    assert_eq!((state["tollgate.usage"].as_str(), state["tollgate.total_tokens"].as_str()), ("reported", "1049"));
    assert_eq!(counters.get("tollgate.token_counter.unread;reason=invoke_chunk_invalid"), Some(&1), "{counters:?}");

    // Reset after the first deltas: Claude's `message_start` reported the input.
    let (state, _) = run(&events[..4], false);
    assert_eq!((state["tollgate.usage"].as_str(), state["tollgate.input_tokens"].as_str()), ("incomplete", "1034"));
}

#[test]
fn malformed_request_json_passes_unchanged_and_is_counted() {
    let factory = factory(json!({}));
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}"#;
    send_headers(&mut ex, &chat_headers(body.len()), false);
    assert_eq!(ex.request_body(&[&body[..10], &body[10..]]), Action::Continue);
    assert_eq!(ex.host.request_body, body);
    ex.response_headers(&[(":status", "400"), ("content-type", "application/json")], false);
    ex.response_body(&[br#"{"error":{"message":"bad json"}}"#], 1, true);
    ex.log();
    assert_eq!(ex.host.counter("tollgate.token_counter.unread", &["reason=request_malformed_json"]), 1);
    assert_eq!(ex.host.counter("tollgate.gen_ai.requests", &["error_type=400"]), 1);
}

#[test]
fn a_request_with_a_field_of_the_wrong_type_passes_unchanged_and_is_counted() {
    // JSON, but not a chat request: the provider answers it, the filter only counts it.
    let factory = factory(json!({}));
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    let body = br#"{"model":"gpt-4o","stream":true,"max_tokens":-5,"messages":[{"role":"user","content":"hi"}]}"#;
    send_headers(&mut ex, &chat_headers(body.len()), false);
    assert_eq!(ex.request_body(&[body]), Action::Continue);
    assert_eq!(ex.host.request_body, body, "forwarded byte for byte, no include_usage added");
    assert!(ex.host.local_reply.is_none());
    ex.response_headers(&[(":status", "400"), ("content-type", "application/json")], false);
    ex.response_body(&[br#"{"error":{"message":"bad max_tokens"}}"#], 1, true);
    ex.log();
    assert_eq!(ex.host.counter("tollgate.token_counter.unread", &["reason=request_invalid_field"]), 1);
    assert_eq!(ex.host.counter("tollgate.token_counter.unread", &["reason=request_malformed_json"]), 0);
}

#[test]
fn compressed_or_non_json_requests_pass_unchanged_and_are_counted() {
    let factory = factory(json!({}));
    for (header, value, reason) in
        [("content-encoding", "gzip", "request_compressed"), ("content-type", "text/plain", "request_not_json")]
    {
        let mut driver = driver_with(&factory, None);
        let mut ex = Exchange::new(&mut driver);
        let mut headers = chat_headers(4);
        headers.retain(|(k, _)| *k != header);
        headers.push((header, value.into()));
        send_headers(&mut ex, &headers, false);
        let body = b"\x1f\x8b\x08\x00";
        assert_eq!(ex.request_body(&[body]), Action::Continue);
        assert_eq!(ex.host.request_body, body, "{reason}: forwarded byte for byte");
        ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
        ex.response_body(
            &[br#"{"model":"m","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#],
            1,
            true,
        );
        ex.log();
        assert_eq!(ex.host.counter("tollgate.token_counter.unread", &[&format!("reason={reason}")]), 1);
        assert_eq!(
            ex.host.counter("tollgate.gen_ai.client.token.usage", &["gen_ai_token_type=total"]),
            7,
            "response usage is still read"
        );
    }
}

#[test]
fn without_held_headers_content_length_is_dropped_up_front() {
    let factory = factory(json!({"hold_request_headers": false}));
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    let body = br#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    assert_eq!(send_headers(&mut ex, &chat_headers(body.len()), false), Action::Continue);
    assert_eq!(ex.host.request_header_value("content-length"), None, "removed so Envoy re-frames the rewritten body");
    assert_eq!(ex.request_body(&[body]), Action::Continue);
    let forwarded: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
    assert_eq!(forwarded["stream_options"]["include_usage"], true);
}

#[test]
fn injection_can_be_turned_off() {
    let factory = factory(json!({"inject_include_usage": false}));
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    let body = br#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    send_headers(&mut ex, &chat_headers(body.len()), false);
    ex.request_body(&[body]);
    assert_eq!(ex.host.request_body, body);
}

#[test]
fn max_request_bytes_refuses_in_the_client_dialect() {
    let factory = factory(json!({"max_request_bytes": 100}));
    // By content-length, before any body arrives.
    let mut driver = driver_with(&factory, Some(100));
    let mut ex = Exchange::new(&mut driver);
    assert_eq!(send_headers(&mut ex, &chat_headers(5000), false), Action::Pause);
    let reply = ex.host.local_reply.clone().unwrap();
    assert_eq!(reply.status, 413);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains("100 bytes"));
    assert_eq!(ex.host.counter("tollgate.errors", &["reason=payload_too_large"]), 1);
    // Chunked (no content-length), Anthropic dialect: counted as it arrives.
    let mut driver = driver_with(&factory, Some(100));
    let mut ex = Exchange::new(&mut driver);
    ex.request_headers(
        &[(":method", "POST"), (":path", "/v1/messages"), (":authority", "gw"), ("content-type", "application/json")],
        false,
    );
    let chunk = [b'x'; 60];
    assert_eq!(ex.request_body(&[&chunk, &chunk, &chunk]), Action::Pause);
    let body: Value = serde_json::from_slice(&ex.host.local_reply.clone().unwrap().body).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "request_too_large");
}

#[test]
fn envoys_own_413_is_reworded_as_json() {
    let factory = factory(json!({}));
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    send_headers(&mut ex, &chat_headers(3 << 20), false);
    ex.host.request_body = vec![b'{'; 1 << 20];
    assert_eq!(ex.driver.on_request_body(&mut ex.host, 1 << 20, false), Action::Pause, "still buffering");
    // Envoy's buffer limit trips: its local reply flows through the response callbacks.
    ex.response_headers(&[(":status", "413"), ("content-type", "text/plain"), ("content-length", "17")], false);
    ex.response_body(&[b"Payload Too Large"], 0, true);
    ex.log();
    assert_eq!(ex.host.response_header_value("content-type"), Some("application/json"));
    assert_eq!(ex.host.response_header_value("content-length"), None);
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");
    assert_eq!(ex.host.counter("tollgate.errors", &["reason=payload_too_large"]), 1);
}

/// Envoy answers for a provider it could not reach (reset before the response, timeout): its
/// plain-text local reply becomes an error in the client's dialect, counted by reason; a
/// provider's own 503 (code details `via_upstream`) passes through as the provider wrote it.
#[test]
fn envoys_own_upstream_failures_are_reworded_in_the_clients_dialect() {
    let factory = factory(json!({}));
    let cases = [
        ("503", "upstream_reset_before_response_started{connection_termination}", "upstream_unreachable"),
        ("504", "upstream_response_timeout", "upstream_timeout"),
    ];
    for (status, details, reason) in cases {
        let mut driver = driver_with(&factory, None);
        let mut ex = Exchange::new(&mut driver);
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        send_headers(&mut ex, &chat_headers(body.len()), false);
        ex.request_body(&[body]);
        ex.host.properties.insert(vec!["response".into(), "code_details".into()], details.as_bytes().to_vec());
        ex.response_headers(&[(":status", status), ("content-type", "text/plain"), ("content-length", "95")], false);
        ex.response_body(
            &[b"upstream connect error or disconnect/reset before headers. reset reason: connection termination"],
            0,
            true,
        );
        ex.log();
        assert_eq!(ex.host.response_header_value("content-type"), Some("application/json"));
        let reply: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
        assert_eq!(reply["error"]["code"], reason);
        assert!(reply["error"]["message"].as_str().unwrap().contains(details), "{reply}");
        assert_eq!(ex.host.counter("tollgate.errors", &[&format!("reason={reason}")]), 1);
    }
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    send_headers(&mut ex, &chat_headers(body.len()), false);
    ex.request_body(&[body]);
    ex.host.properties.insert(vec!["response".into(), "code_details".into()], b"via_upstream".to_vec());
    // A Tollgate filter's own local reply (its details) is not Envoy's: left as it was written.
    let mut driver = driver_with(&factory, None);
    let mut own = Exchange::new(&mut driver);
    send_headers(&mut own, &chat_headers(body.len()), false);
    own.request_body(&[body]);
    own.host.properties.insert(
        vec!["response".into(), "code_details".into()],
        tollgate_core::stage::LOCAL_REPLY_DETAILS.as_bytes().to_vec(),
    );
    let ours = br#"{"error":{"code":"service_unavailable","message":"the gateway's rate-limit service is unavailable; retry later"}}"#;
    own.response_headers(&[(":status", "503"), ("content-type", "application/json")], false);
    own.response_body(&[ours], 0, true);
    assert_eq!(own.host.client_body, ours.to_vec());
    let provider = br#"{"error":{"message":"overloaded","type":"server_error"}}"#;
    ex.response_headers(&[(":status", "503"), ("content-type", "application/json")], false);
    ex.response_body(&[provider], 0, true);
    assert_eq!(ex.host.client_body, provider.to_vec(), "the provider's own error is delivered unaltered");
}

#[test]
fn request_trailers_end_the_body() {
    let factory = factory(json!({}));
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    let body = br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    send_headers(&mut ex, &chat_headers(body.len()), false);
    ex.host.request_body = body.to_vec();
    assert_eq!(ex.driver.on_request_body(&mut ex.host, body.len(), false), Action::Pause);
    assert_eq!(ex.driver.on_request_trailers(&mut ex.host), Action::Continue);
    let forwarded: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
    assert_eq!(forwarded["stream_options"]["include_usage"], true, "read and rewritten at the trailers");
}

#[test]
fn host_refusing_the_rewrite_means_nothing_is_stripped() {
    let factory = factory(json!({}));
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    let body = br#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    send_headers(&mut ex, &chat_headers(body.len()), false);
    // The body arrives, but the host refuses to replace it (as Envoy may in some phases).
    ex.host.request_body = body.to_vec();
    let mut pipeline_host = std::mem::take(&mut ex.host);
    pipeline_host.request_headers_editable = true;
    let mut refusing = RefusingHost(pipeline_host);
    assert_eq!(ex.driver.on_request_body(&mut refusing, body.len(), true), Action::Continue);
    ex.host = refusing.0;
    let stream = std::fs::read(fixtures().join("responses/openai/chat-stream.sse")).unwrap();
    let plain = without_usage(&stream);
    ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    ex.response_body(&[&plain], 1, true);
    ex.log();
    assert_eq!(ex.host.client_body, plain, "nothing injected, so nothing stripped");
    assert_eq!(ex.host.filter_state["tollgate.usage"], "missing");
    assert_eq!(ex.host.counter("tollgate.token_counter.unread", &["reason=usage_missing"]), 1);
}

/// Text to speech answered with the audio itself (`stream_format` unset or `audio`): the bytes
/// pass as they come, unscanned (no usage is in them), and the request is counted with its
/// estimate and `usage_missing`; streamed as SSE, its `speech.audio.done` event's usage is read
/// (the golden `openai-speech-stream` case).
#[test]
fn speech_answered_as_audio_passes_through_unread() {
    let factory = factory(json!({}));
    for stream_format in [None, Some("audio")] {
        let mut driver = driver_with(&factory, None);
        let mut ex = Exchange::new(&mut driver);
        let mut request = json!({"model": "gpt-4o-mini-tts", "voice": "coral",
            "input": "Today is a wonderful day to build something people love!",
            "instructions": "Speak in a cheerful and positive tone."});
        if let Some(format) = stream_format {
            request["stream_format"] = json!(format);
        }
        let body = serde_json::to_vec(&request).unwrap();
        let mut headers = chat_headers(body.len());
        headers[1].1 = "/v1/audio/speech".into();
        assert_eq!(send_headers(&mut ex, &headers, false), Action::Pause);
        assert_eq!(ex.request_body(&[&body]), Action::Continue);
        assert_eq!(ex.host.forwarded_request, body, "the request passes unchanged");
        // MP3 frames; one holds bytes a JSON scan would trip over (and a `"usage"` it could take).
        let mut audio = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
        audio.extend((0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        audio.extend(br#"{"usage":{"input_tokens":99,"output_tokens":99}}"#);
        ex.response_headers(&[(":status", "200"), ("content-type", "audio/mpeg")], false);
        let pieces: Vec<&[u8]> = audio.chunks(4096).collect();
        ex.response_body(&pieces, 5, true);
        ex.log();
        assert_eq!(ex.host.client_body, audio, "{stream_format:?}: the audio reaches the client as it came");
        let state = &ex.host.filter_state;
        assert_eq!(
            (state["tollgate.usage"].as_str(), state["tollgate.request_model"].as_str()),
            ("missing", "gpt-4o-mini-tts")
        );
        let estimate: u64 = state["tollgate.estimated_input_tokens"].parse().unwrap();
        assert!((15..=30).contains(&estimate), "the input and the instructions are estimated: {estimate}");
        let unread: Vec<_> = ex.host.counters.iter().filter(|(k, _)| k.contains("token_counter.unread")).collect();
        assert_eq!(unread.len(), 1, "{unread:?}");
        assert_eq!(ex.host.counter("tollgate.token_counter.unread", &["reason=usage_missing"]), 1);
        assert_eq!(ex.host.counter("tollgate.gen_ai.requests", &["gen_ai_operation_name=speech", "error_type="]), 1);
        assert_eq!(ex.host.counter("tollgate.gen_ai.client.token.usage", &[]), 0);
    }
}

/// A host whose request-body writes fail, as Envoy's may.
struct RefusingHost(tollgate_host::fake::FakeHost);

impl tollgate_core::stage::StageHost for RefusingHost {
    fn request_header(&self, name: &str) -> Option<String> {
        self.0.request_header(name)
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.0.response_header(name)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.0.property(path)
    }
    fn shared_data(&self) -> &dyn tollgate_core::stage::SharedStore {
        self.0.shared_data()
    }
}

impl tollgate_host::HttpHost for RefusingHost {
    fn now_ns(&self) -> u64 {
        self.0.now_ns()
    }
    fn set_request_header(&mut self, n: &str, v: Option<&str>) -> Result<(), tollgate_host::HostError> {
        self.0.set_request_header(n, v)
    }
    fn set_response_header(&mut self, n: &str, v: Option<&str>) -> Result<(), tollgate_host::HostError> {
        self.0.set_response_header(n, v)
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        self.0.request_body(size)
    }
    fn set_request_body(&mut self, _: usize, _: &[u8]) -> Result<(), tollgate_host::HostError> {
        Err(tollgate_host::HostError(2))
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        self.0.response_body(size)
    }
    fn set_response_body(&mut self, s: usize, b: &[u8]) -> Result<(), tollgate_host::HostError> {
        self.0.set_response_body(s, b)
    }
    fn send_local_reply(&mut self, s: u16, h: &[(&str, &str)], b: &[u8]) -> Result<(), tollgate_host::HostError> {
        self.0.send_local_reply(s, h, b)
    }
    fn resume_request(&mut self) -> Result<(), tollgate_host::HostError> {
        self.0.resume_request()
    }
    fn reset_stream(&mut self) -> Result<(), tollgate_host::HostError> {
        self.0.reset_stream()
    }
    fn grpc_call(&mut self, call: &tollgate_core::stage::GrpcCall) -> Result<u32, tollgate_host::HostError> {
        self.0.grpc_call(call)
    }
    fn grpc_response_body(&self, size: usize) -> Option<Vec<u8>> {
        self.0.grpc_response_body(size)
    }
    fn set_filter_state(&mut self, k: &str, v: &str) -> Result<(), tollgate_host::HostError> {
        self.0.set_filter_state(k, v)
    }
    fn counter_add(&mut self, n: &std::rc::Rc<str>, v: u64) {
        self.0.counter_add(n, v)
    }
    fn histogram_record(&mut self, n: &std::rc::Rc<str>, v: u64) {
        self.0.histogram_record(n, v)
    }
    fn log(&self, l: tollgate_core::stage::LogLevel, m: &str) {
        self.0.log(l, m)
    }
}

// ---- response side ---------------------------------------------------------------------------

/// Runs a chat request whose response is `chunks` with the given headers.
fn respond(
    config: Value,
    request: &[u8],
    response_headers: &[(&str, &str)],
    chunks: &[&[u8]],
    complete: bool,
) -> tollgate_host::fake::FakeHost {
    let factory = factory(config);
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    send_headers(&mut ex, &chat_headers(request.len()), false);
    ex.request_body(&[request]);
    ex.response_headers(response_headers, false);
    ex.response_body(chunks, 10, complete);
    ex.log();
    ex.host
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn gzip_responses_are_read_and_forwarded_compressed() {
    let json = std::fs::read(fixtures().join("responses/openai/chat.json")).unwrap();
    let compressed = gzip(&json);
    let (a, b) = compressed.split_at(compressed.len() / 3);
    let host = respond(
        json!({}),
        br#"{"model":"gpt-4.1","messages":[]}"#,
        &[(":status", "200"), ("content-type", "application/json"), ("content-encoding", "gzip")],
        &[a, b],
        true,
    );
    assert_eq!(host.client_body, compressed, "client gets the upstream's bytes");
    assert_eq!(host.counter("tollgate.gen_ai.client.token.usage", &["gen_ai_token_type=total"]), 29);
}

#[test]
fn gzip_streams_are_read_but_not_rewritten() {
    let stream = std::fs::read(fixtures().join("responses/openai/chat-stream.sse")).unwrap();
    let compressed = gzip(&stream);
    let host = respond(
        json!({}),
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#,
        &[(":status", "200"), ("content-type", "text/event-stream"), ("content-encoding", "gzip")],
        &compressed.chunks(37).collect::<Vec<_>>(),
        true,
    );
    assert_eq!(host.client_body, compressed);
    assert_eq!(host.counter("tollgate.gen_ai.client.token.usage", &["gen_ai_token_type=total"]), 28);
    assert_eq!(host.counter("tollgate.token_counter.unread", &["reason=compressed_stream_not_stripped"]), 1);
}

#[test]
fn unsupported_encodings_pass_through_and_are_counted() {
    let host = respond(
        json!({}),
        br#"{"model":"gpt-4.1","messages":[]}"#,
        &[(":status", "200"), ("content-type", "application/json"), ("content-encoding", "br")],
        &[b"\x0b\x02\x80garbage"],
        true,
    );
    assert_eq!(host.client_body, b"\x0b\x02\x80garbage");
    assert_eq!(host.counter("tollgate.token_counter.unread", &["reason=response_unsupported_encoding"]), 1);
    assert_eq!(host.filter_state["tollgate.usage"], "missing");
}

#[test]
fn upstream_reset_mid_stream_counts_what_was_reported_and_marks_it_incomplete() {
    let stream = std::fs::read(fixtures().join("responses/anthropic/messages-stream.sse")).unwrap();
    let half = &stream[..stream.len() / 2];
    let factory = factory(json!({}));
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    let body = br#"{"model":"claude-3-5-sonnet-20241022","max_tokens":100,"stream":true,"messages":[]}"#;
    ex.request_headers(
        &[(":method", "POST"), (":path", "/v1/messages"), (":authority", "gw"), ("content-type", "application/json")],
        false,
    );
    ex.request_body(&[body]);
    ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    ex.response_body(&[half], 10, false);
    ex.log(); // reset: on_log without end of stream
    assert_eq!(ex.host.filter_state["tollgate.usage"], "incomplete");
    assert_eq!(
        ex.host.counter("tollgate.gen_ai.client.token.usage", &["gen_ai_token_type=input"]),
        25,
        "message_start arrived"
    );
    assert_eq!(ex.host.counter("tollgate.gen_ai.requests", &["error_type=incomplete"]), 1);
    assert_eq!(ex.host.counter("tollgate.token_counter.unread", &["reason=stream_not_completed"]), 1);
    assert_eq!(ex.host.client_body, half, "what arrived was forwarded");
}

#[test]
fn response_trailers_end_the_stream() {
    let stream = std::fs::read(fixtures().join("responses/anthropic/messages-stream.sse")).unwrap();
    let factory = factory(json!({}));
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    ex.request_headers(
        &[(":method", "POST"), (":path", "/v1/messages"), (":authority", "gw"), ("content-type", "application/json")],
        false,
    );
    ex.request_body(&[br#"{"model":"m","max_tokens":1,"stream":true,"messages":[]}"#]);
    ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    ex.response_body(&[&stream], 10, false);
    ex.driver.on_response_trailers(&mut ex.host);
    ex.log();
    assert_eq!(ex.host.filter_state["tollgate.usage"], "reported");
    assert_eq!(ex.host.counter("tollgate.gen_ai.client.token.usage", &["gen_ai_token_type=output"]), 15);
}

#[test]
fn timing_histograms_follow_the_clock() {
    let stream = std::fs::read(fixtures().join("responses/openai/chat-stream.sse")).unwrap();
    let events: Vec<&[u8]> = stream.split_inclusive(|b| *b == b'\n').collect();
    let host = respond(
        json!({}),
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#,
        &[(":status", "200"), ("content-type", "text/event-stream")],
        &events,
        true,
    );
    let ttft =
        host.histograms.iter().find(|(k, _)| k.starts_with("tollgate.gen_ai.server.time_to_first_token")).unwrap().1;
    assert_eq!(ttft, &vec![10], "first chunk 10 ms after the request");
    let duration =
        host.histograms.iter().find(|(k, _)| k.starts_with("tollgate.gen_ai.server.request.duration")).unwrap().1;
    assert_eq!(duration, &vec![10 * events.len() as u64]);
    let tpot =
        host.histograms.iter().find(|(k, _)| k.starts_with("tollgate.gen_ai.server.time_per_output_token")).unwrap().1;
    // (last chunk − first chunk) / (output − 1), in µs.
    assert_eq!(tpot, &vec![(events.len() as u64 - 1) * 10_000 / 8]);
    assert_eq!(host.filter_state["tollgate.ttft_ms"], "10");
}

#[test]
fn a_malformed_event_is_counted_and_reading_goes_on() {
    let mut stream = b"data: {not json}\n\n".to_vec();
    stream.extend(std::fs::read(fixtures().join("responses/openai/chat-stream.sse")).unwrap());
    let host = respond(
        json!({}),
        br#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
        &[(":status", "200"), ("content-type", "text/event-stream")],
        &[&stream],
        true,
    );
    assert_eq!(host.counter("tollgate.token_counter.unread", &["reason=sse_malformed_json"]), 1);
    assert_eq!(host.counter("tollgate.gen_ai.client.token.usage", &["gen_ai_token_type=total"]), 28);
    assert_eq!(host.client_body, stream);
}

#[test]
fn an_oversized_event_while_rewriting_loses_no_byte() {
    let mut stream = std::fs::read(fixtures().join("responses/openai/chat-stream.sse")).unwrap();
    let giant = format!("data: {{\"filler\":\"{}\"}}\n\n", "x".repeat(3000));
    let at = stream.windows(6).position(|w| w == b"data: ").unwrap() + 10;
    let at = stream[at..].windows(2).position(|w| w == b"\n\n").unwrap() + at + 2;
    stream.splice(at..at, giant.bytes());
    let host = respond(
        json!({"max_event_bytes": 1024}),
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#,
        &[(":status", "200"), ("content-type", "text/event-stream")],
        &stream.chunks(500).collect::<Vec<_>>(),
        true,
    );
    assert_eq!(host.counter("tollgate.token_counter.unread", &["reason=sse_event_too_large"]), 1);
    // Before the giant event the stream was rewritten (usage:null removed); from it on, passed as is.
    let head = without_usage(&stream[..at]);
    let mut expected = head;
    expected.extend_from_slice(&stream[at..]);
    assert_bytes(&host.client_body, &expected, "oversized event");
}

#[test]
fn consumer_comes_from_property_then_header_and_labels_are_capped() {
    let factory = factory(
        json!({"consumer_header": "x-consumer", "consumer_property": ["metadata", "jwt", "sub"], "max_label_values": 2}),
    );
    let mut seen = Vec::new();
    for (i, property) in [Some("alice"), None, None, None].into_iter().enumerate() {
        let mut driver = driver_with(&factory, None);
        let mut ex = Exchange::new(&mut driver);
        if let Some(p) = property {
            ex.host.properties.insert(vec!["metadata".into(), "jwt".into(), "sub".into()], p.as_bytes().to_vec());
        }
        let mut headers = chat_headers(2);
        let consumer = format!("team-{i}");
        headers.push(("x-consumer", consumer));
        send_headers(&mut ex, &headers, false);
        ex.request_body(&[b"{}"]);
        ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
        ex.response_body(&[br#"{"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#], 1, true);
        ex.log();
        seen.push(ex.host.counters.keys().find(|k| k.starts_with("tollgate.gen_ai.requests")).unwrap().clone());
        assert_eq!(
            ex.host.filter_state["tollgate.consumer"],
            property.map(str::to_string).unwrap_or(format!("team-{i}"))
        );
    }
    assert!(seen[0].contains(";consumer=alice;"), "property wins over the header");
    assert!(seen[1].contains(";consumer=team-1;"));
    assert!(seen[2].contains(";consumer=other;"), "third distinct value is over the cap of 2: {}", seen[2]);
}

#[test]
fn configuration_errors_name_the_field() {
    for (config, field) in [
        (json!({"max_event_bytes": 10}), "max_event_bytes"),
        (json!({"consumer_header": "authorization"}), "consumer_header"),
        (json!({"consumer_header": "X-Bad Header"}), "consumer_header"),
        (json!({"consumer_property": []}), "consumer_property"),
        (json!({"provider": "a b"}), "provider"),
        (json!({"max_label_values": 0}), "max_label_values"),
        (json!({"max_request_bytes": 0}), "max_request_bytes"),
        (json!({"inject_include_usage": "yes"}), "inject_include_usage"),
        (json!({"unknown_knob": 1}), "unknown_knob"),
    ] {
        let error = tollgate_token_counter_spec(&config);
        assert!(error.contains(field), "{config}: {error}");
    }
}

fn tollgate_token_counter_spec(config: &Value) -> String {
    Config::parse(config.to_string().as_bytes(), "").err().map(|e| e.0).unwrap_or_default()
}

#[test]
fn arbitrary_bytes_in_every_callback_never_panic() {
    let factory = factory(json!({}));
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (0..n).map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8).collect::<Vec<u8>>()
    };
    for (i, path) in [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1beta/models/g:streamGenerateContent?alt=sse",
        "/model/x/converse-stream",
        "/v1/responses",
    ]
    .iter()
    .cycle()
    .take(200)
    .enumerate()
    {
        let mut driver = driver_with(&factory, None);
        let mut ex = Exchange::new(&mut driver);
        ex.request_headers(
            &[(":method", "POST"), (":path", path), (":authority", "gw"), ("content-type", "application/json")],
            false,
        );
        let body = rand(i % 97);
        ex.request_body(&[&body]);
        let content_type = ["text/event-stream", "application/json", "application/vnd.amazon.eventstream"][i % 3];
        let encoding = ["identity", "gzip", "deflate"][i % 3];
        ex.response_headers(
            &[(":status", "200"), ("content-type", content_type), ("content-encoding", encoding)],
            false,
        );
        let chunk = rand(i % 251);
        ex.response_body(&[&chunk, &rand(7)], 1, i % 2 == 0);
        ex.log();
    }
}

/// curl's order (`-F file=@a.wav -F model=… -F prompt=…`): the fields after the file are read as
/// the form passes, which is never held, and the usage is labelled with the model they name.
#[test]
fn a_model_named_after_the_file_labels_the_usage() {
    let mut body = format!(
        "--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    body.extend((0..100_000u32).map(|i| (i % 251) as u8));
    for (name, value) in [("model", "gpt-transcribe"), ("prompt", "Tollgate, Envoy")] {
        body.extend(
            format!("\r\n--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}").bytes(),
        );
    }
    body.extend(format!("\r\n--{FORM_BOUNDARY}--\r\n").bytes());
    let factory = factory(json!({}));
    let mut driver = driver_with(&factory, None);
    let mut ex = Exchange::new(&mut driver);
    let length = body.len().to_string();
    let content_type = format!("multipart/form-data; boundary={FORM_BOUNDARY}");
    let headers = [
        (":method", "POST"),
        (":path", "/v1/audio/transcriptions"),
        (":authority", "api.openai.com"),
        ("content-type", content_type.as_str()),
        ("content-length", length.as_str()),
    ];
    assert_eq!(ex.request_headers(&headers, false), Action::Pause);
    let pieces: Vec<&[u8]> = body.chunks(8 * 1024).collect();
    assert_eq!(ex.request_body(&pieces), Action::Continue);
    assert_eq!(ex.host.forwarded_request, body, "passed on unchanged");
    assert_eq!(ex.host.request_header_value("content-length"), Some(length.as_str()), "its length kept");
    let answer = std::fs::read(fixtures().join("responses/openai/transcription.json")).unwrap();
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    ex.response_body(&[&answer], 1, true);
    ex.log();
    let usage = "tollgate.gen_ai.client.token.usage";
    assert_eq!(ex.host.counter(usage, &["gen_ai_token_type=total", "gen_ai_request_model=gpt-transcribe"]), 71);
    assert_ne!(ex.host.filter_state["tollgate.estimated_input_tokens"], "0", "the prompt after the file estimated");
}
