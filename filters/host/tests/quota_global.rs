//! The quota stage's global modes through the fake host.
//!
//! `envoy_ratelimit`: the filter state Envoy's rate-limit filter reads (descriptor values,
//! request-time and stream-end `hits_addend`s), the service's draft-03 headers turned into
//! OpenAI-style ones, refusals by that filter, refunds only of what the service counted.
//! `check_report`: the reservation calls (one per distinct amount), the held request resumed or
//! refused on the answers, failure modes, and the fire-and-forget `Report` at stream end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{json, Value};
use tollgate_core::quota::rls::{self, Code, Response, Status};
use tollgate_core::stage::compose;
use tollgate_host::fake::Exchange;
use tollgate_host::{Action, Driver};

fn spec(global: Value, extra_limits: Value) -> compose::Composed {
    let mut limits = vec![
        json!({"name": "tpm", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 10000}),
        json!({"name": "rpm", "meter": "requests", "per": "consumer", "window": "minute", "limit": 100}),
    ];
    limits.extend(extra_limits.as_array().cloned().unwrap_or_default());
    let config = json!({"token_counter": {}, "quota": {
        "consumer": {"header": "x-api-key", "salt": "s"}, "limits": limits, "global": global}});
    compose::parse(config.to_string().as_bytes()).unwrap()
}

fn new_driver(spec: &compose::Composed) -> Driver {
    Driver::new(tollgate_core::stage::Pipeline::new(
        spec.stages.iter().map(|f| f.create()).collect(),
        spec.max_request_bytes,
    ))
}

const NOW: u64 = 1_795_000_040;

fn start<'a>(driver: &'a mut Driver, max_tokens: u64) -> (Exchange<'a>, Action) {
    let mut ex = Exchange::new(driver);
    ex.host.now_ns = NOW * 1_000_000_000;
    let body = json!({"model": "gpt-4o", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Hi"}]})
        .to_string();
    let action = ex.chat_request_headers(body.len(), &[("x-api-key", "sk-a")]);
    assert_eq!(action, Action::Pause, "headers are held until the reservation is decided");
    let action = ex.request_body(&[body.as_bytes()]);
    (ex, action)
}

fn finish(ex: &mut Exchange<'_>, headers: &[(&str, &str)], prompt: u64, completion: u64) {
    let body = json!({"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}});
    let mut all = vec![(":status", "200"), ("content-type", "application/json")];
    all.extend_from_slice(headers);
    ex.response_headers(&all, false);
    ex.response_body(&[body.to_string().as_bytes()], 1, true);
    ex.log();
}

fn state<'a>(ex: &'a Exchange<'_>, key: &str) -> Option<&'a str> {
    ex.host.filter_state.get(key).map(String::as_str)
}

const DRAFT_TPM: [(&str, &str); 3] = [
    ("x-ratelimit-limit", "10000, 10000;w=60;name=\"tpm\""),
    ("x-ratelimit-remaining", "9000"),
    ("x-ratelimit-reset", "20"),
];

// ---- envoy_ratelimit ------------------------------------------------------------------------

#[test]
fn envoy_ratelimit_writes_descriptors_and_reservations_to_filter_state() {
    let spec = spec(
        json!({"backend": "envoy_ratelimit"}),
        json!([
            {"name": "claude_tpd", "meter": "total_tokens", "per": "consumer_model", "window": "day", "limit": 5000, "models": ["claude*"]}
        ]),
    );
    let mut driver = new_driver(&spec);
    let (ex, action) = start(&mut driver, 100);
    assert_eq!(action, Action::Continue, "Envoy's rate-limit filter decides, after this filter");
    let consumer = tollgate_core::quota::hashed_consumer("s", "sk-a");
    assert_eq!(state(&ex, "tollgate.quota.consumer"), Some(consumer.as_str()));
    assert_eq!(state(&ex, "tollgate.quota.tier"), Some("default"));
    assert_eq!(state(&ex, "tollgate.quota.model"), Some("gpt-4o"));
    let reserve: u64 = state(&ex, "tollgate.quota.tpm.reserve").unwrap().parse().unwrap();
    assert!(reserve > 100 && reserve < 120, "estimate + max_tokens: {reserve}");
    assert_eq!(state(&ex, "tollgate.quota.rpm.reserve"), Some("1"));
    assert_eq!(state(&ex, "tollgate.quota.claude_tpd.reserve"), None, "a limit for other models is skipped by Envoy");
    assert!(ex.host.grpc_calls.is_empty());
}

#[test]
fn envoy_ratelimit_settles_excess_and_refunds_only_when_configured() {
    for refunds in [false, true] {
        let spec = spec(json!({"backend": "envoy_ratelimit", "refunds": refunds}), json!([]));
        // Usage below the reservation: refund (or nothing); above: the excess is charged.
        for (completion, expect_settle) in [(10, false), (500, true)] {
            let mut driver = new_driver(&spec);
            let (mut ex, _) = start(&mut driver, 100);
            let reserve: u64 = state(&ex, "tollgate.quota.tpm.reserve").unwrap().parse().unwrap();
            finish(&mut ex, &DRAFT_TPM, 20, completion);
            let actual = 20 + completion;
            assert_eq!(ex.host.response_header_value("x-ratelimit-limit-tokens"), Some("10000"));
            assert_eq!(ex.host.response_header_value("x-ratelimit-remaining-tokens"), Some("9000"));
            assert_eq!(ex.host.response_header_value("x-ratelimit-reset-tokens"), Some("20s"));
            let settle = state(&ex, "tollgate.quota.tpm.settle").map(|v| v.parse::<u64>().unwrap());
            let refund = state(&ex, "tollgate.quota.tpm.refund").map(|v| v.parse::<u64>().unwrap());
            if expect_settle {
                assert_eq!(settle, Some(actual - reserve));
                assert_eq!(refund, None);
            } else {
                assert_eq!(settle, None);
                assert_eq!(refund, refunds.then(|| reserve - actual));
            }
            assert_eq!(state(&ex, "tollgate.quota.rpm.refund"), None, "an answered request stays counted");
        }
    }
}

#[test]
fn envoy_ratelimit_refusal_gets_retry_after_and_refunds_what_the_service_counted() {
    let spec = spec(json!({"backend": "envoy_ratelimit", "refunds": true}), json!([]));
    let mut driver = new_driver(&spec);
    let (mut ex, _) = start(&mut driver, 100);
    let reserve = state(&ex, "tollgate.quota.tpm.reserve").unwrap().to_string();
    // Envoy's rate-limit filter answered 429 itself (the HCM's local-reply config words it).
    ex.response_headers(
        &[
            (":status", "429"),
            ("x-envoy-ratelimited", "true"),
            ("x-ratelimit-limit", "10000, 10000;w=60;name=\"tpm\""),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "33"),
        ],
        true,
    );
    ex.log();
    assert_eq!(ex.host.response_header_value("retry-after"), Some("33"));
    assert_eq!(ex.host.response_header_value("x-ratelimit-remaining-tokens"), Some("0"));
    assert_eq!(ex.host.counter("tollgate.quota.decisions", &["limit=tpm", "outcome=refused"]), 1);
    assert_eq!(ex.host.counter("tollgate.errors", &["reason=rate_limited"]), 1);
    // envoyproxy/ratelimit counted every descriptor of the refused request: all given back.
    assert_eq!(state(&ex, "tollgate.quota.tpm.refund"), Some(reserve.as_str()));
    assert_eq!(state(&ex, "tollgate.quota.rpm.refund"), Some("1"));
}

#[test]
fn envoy_ratelimit_without_an_answer_charges_the_usage_in_full() {
    // No draft-03 headers: the service failed open (or matched no limit), nothing was counted
    // at request time, so nothing may be refunded and the whole usage is charged at the end.
    let spec = spec(json!({"backend": "envoy_ratelimit", "refunds": true}), json!([]));
    let mut driver = new_driver(&spec);
    let (mut ex, _) = start(&mut driver, 100);
    finish(&mut ex, &[], 20, 10);
    assert_eq!(state(&ex, "tollgate.quota.tpm.settle"), Some("30"));
    assert_eq!(state(&ex, "tollgate.quota.tpm.refund"), None);
    assert_eq!(state(&ex, "tollgate.quota.rpm.settle"), Some("1"));
}

// ---- check_report ---------------------------------------------------------------------------

fn check_report(extra: Value) -> compose::Composed {
    let mut global = json!({"backend": "check_report", "cluster": "rls", "domain": "tollgate"});
    for (k, v) in extra.as_object().unwrap() {
        global[k] = v.clone();
    }
    spec(global, json!([]))
}

fn ok(statuses: Vec<Status>) -> Vec<u8> {
    rls::encode_response(&Response { overall: Code::Ok, statuses, headers: Vec::new() })
}

fn status(code: Code, name: &str, limit: u32, remaining: u32, reset: u64) -> Status {
    Status { code, name: name.into(), limit, remaining, reset_secs: reset }
}

#[test]
fn check_report_holds_the_request_until_every_reservation_is_answered() {
    let spec = check_report(json!({}));
    let mut driver = new_driver(&spec);
    let (mut ex, action) = start(&mut driver, 100);
    assert_eq!(action, Action::Pause);
    // tpm and rpm reserve different amounts: two calls, each ShouldRateLimit with its amount.
    let calls: Vec<_> = ex.host.grpc_calls.clone();
    assert_eq!(calls.len(), 2);
    let consumer = tollgate_core::quota::hashed_consumer("s", "sk-a");
    let tpm = rls::decode_request(&calls[0].1.message).unwrap();
    assert_eq!((calls[0].1.service, calls[0].1.method), (rls::RLS_SERVICE, rls::SHOULD_RATE_LIMIT));
    assert_eq!(calls[0].1.cluster, "rls");
    assert!(!calls[0].1.detached);
    assert_eq!(tpm.domain, "tollgate");
    assert_eq!(
        tpm.descriptors,
        vec![vec![("limit".into(), "tpm".into()), ("tier".into(), "default".into()), ("consumer".into(), consumer)]]
    );
    let reserve = tpm.hits_addend;
    assert!(reserve > 100 && reserve < 120, "{reserve}");
    assert_eq!(rls::decode_request(&calls[1].1.message).unwrap().hits_addend, 1);

    assert_eq!(ex.grpc_answer(calls[1].0, Ok(&ok(vec![status(Code::Ok, "rpm", 100, 99, 20)]))), None, "one pending");
    assert_eq!(ex.host.counter("tollgate.quota.decisions", &[]), 0, "decided once every answer is in");
    assert!(!ex.host.resumed);
    let answer = ok(vec![status(Code::Ok, "tpm", 10000, 9000, 20)]);
    assert_eq!(ex.grpc_answer(calls[0].0, Ok(&answer)), Some(Action::Continue));
    assert!(ex.host.resumed);
    assert_eq!(ex.host.counter("tollgate.quota.decisions", &["outcome=admitted"]), 2);

    // Usage above the reservation: the excess is reported at the end, detached.
    finish(&mut ex, &[], 20, 300);
    assert_eq!(ex.host.response_header_value("x-ratelimit-remaining-tokens"), Some("9000"));
    assert_eq!(ex.host.response_header_value("x-ratelimit-remaining-requests"), Some("99"));
    let reports: Vec<_> = ex.host.grpc_calls.iter().skip(2).map(|(_, c)| c.clone()).collect();
    assert_eq!(reports.len(), 1, "only tpm has something left to charge");
    assert!(reports[0].detached);
    assert_eq!((reports[0].service, reports[0].method), (rls::KUADRANT_SERVICE, rls::REPORT));
    let report = rls::decode_request(&reports[0].message).unwrap();
    assert_eq!(report.hits_addend, 320 - reserve);
    assert_eq!(report.descriptors[0][0], ("limit".into(), "tpm".into()));
}

/// A transcription's form goes on coming while its fields' reservation is asked: every later
/// piece is held too, and the whole request goes on only once the answers are in.
#[test]
fn check_report_holds_a_forms_file_until_the_reservation_is_answered() {
    let spec = check_report(json!({}));
    let mut driver = new_driver(&spec);
    let mut ex = Exchange::new(&mut driver);
    ex.host.now_ns = NOW * 1_000_000_000;
    let mut form = b"--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-transcribe\r\n".to_vec();
    form.extend(b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n");
    form.extend(std::iter::repeat_n(7u8, 100_000));
    form.extend(b"\r\n--xyz--\r\n");
    let length = form.len().to_string();
    let headers = [
        (":method", "POST"),
        (":path", "/v1/audio/transcriptions"),
        (":authority", "api.openai.com"),
        ("content-type", "multipart/form-data; boundary=xyz"),
        ("content-length", length.as_str()),
        ("x-api-key", "sk-a"),
    ];
    assert_eq!(ex.request_headers(&headers, false), Action::Pause);
    let chunks: Vec<&[u8]> = form.chunks(8 * 1024).collect();
    // The fields are in the first piece (asked at once); the other twelve come while it waits.
    assert_eq!(ex.request_body(&chunks), Action::Pause, "the file is held while the answers are awaited");
    assert_eq!(ex.host.grpc_calls.len(), 2, "tpm and rpm, asked once");
    assert!(ex.host.forwarded_request.is_empty() && !ex.host.resumed, "no piece went on before the answers");
    let calls = ex.host.grpc_calls.clone();
    assert_eq!(ex.grpc_answer(calls[1].0, Ok(&ok(vec![status(Code::Ok, "rpm", 100, 99, 20)]))), None);
    let answer = ok(vec![status(Code::Ok, "tpm", 10000, 9000, 20)]);
    assert_eq!(ex.grpc_answer(calls[0].0, Ok(&answer)), Some(Action::Continue));
    assert!(ex.host.resumed);
    assert_eq!(ex.host.request_body, form, "all of it buffered, unchanged, and let go at once");
}

#[test]
fn check_report_refuses_on_over_limit_in_the_clients_dialect() {
    let spec = check_report(json!({}));
    let mut driver = new_driver(&spec);
    let (mut ex, _) = start(&mut driver, 100);
    let calls = ex.host.grpc_calls.clone();
    let over = rls::encode_response(&Response {
        overall: Code::OverLimit,
        statuses: vec![status(Code::OverLimit, "tpm", 10000, 0, 17)],
        headers: Vec::new(),
    });
    assert_eq!(ex.grpc_answer(calls[0].0, Ok(&over)), Some(Action::Pause));
    let reply = ex.host.local_reply.clone().unwrap();
    assert_eq!(reply.status, 429);
    assert!(reply.headers.contains(&("retry-after".into(), "17".into())));
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("'tpm'"));
    // The late answer of the other call changes nothing; no report for a refused request.
    assert_eq!(ex.grpc_answer(calls[1].0, Ok(&ok(Vec::new()))), None);
    ex.log();
    assert_eq!(ex.host.grpc_calls.len(), 2);
}

#[test]
fn check_report_failure_modes() {
    // allow: admitted without a reservation; the whole usage is reported at the end.
    let spec = check_report(json!({}));
    let mut driver = new_driver(&spec);
    let (mut ex, _) = start(&mut driver, 100);
    let calls = ex.host.grpc_calls.clone();
    assert_eq!(ex.grpc_answer(calls[0].0, Err(14)), None); // UNAVAILABLE
    assert_eq!(ex.grpc_answer(calls[1].0, Ok(b"\xff\xff")), Some(Action::Continue), "garbage is a failure too");
    assert_eq!(ex.host.counter("tollgate.quota.rls_errors", &[]), 2);
    finish(&mut ex, &[], 20, 10);
    let reports: Vec<_> =
        ex.host.grpc_calls.iter().skip(2).map(|(_, c)| rls::decode_request(&c.message).unwrap()).collect();
    let hits: Vec<u64> = reports.iter().map(|r| r.hits_addend).collect();
    assert_eq!(hits, vec![30, 1], "tpm in full, and the request");

    // deny: 503 in the client's dialect.
    let spec = check_report(json!({"failure_mode": "deny"}));
    let mut driver = new_driver(&spec);
    let (mut ex, _) = start(&mut driver, 100);
    let calls = ex.host.grpc_calls.clone();
    assert_eq!(ex.grpc_answer(calls[0].0, Err(4)), Some(Action::Pause));
    assert_eq!(ex.host.local_reply.as_ref().unwrap().status, 503);

    // The host refuses to make the calls (no such cluster): decided within the body callback.
    let spec = check_report(json!({}));
    let mut driver = new_driver(&spec);
    let mut ex = Exchange::new(&mut driver);
    ex.host.refuse_grpc = Some(4);
    let body = json!({"model": "gpt-4o", "messages": []}).to_string();
    ex.request_headers(&[(":method", "POST"), (":path", "/v1/chat/completions"), (":authority", "gw")], false);
    assert_eq!(ex.request_body(&[body.as_bytes()]), Action::Continue);
    assert!(!ex.host.resumed, "no resume from inside the callback");
}

#[test]
fn check_report_in_shadow_mode_never_refuses() {
    let global = json!({"backend": "check_report", "cluster": "rls"});
    let config = json!({"token_counter": {}, "quota": {"mode": "shadow", "consumer": {"header": "x-api-key"},
        "limits": [{"name": "tpm", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 10}],
        "global": global}});
    let spec = compose::parse(config.to_string().as_bytes()).unwrap();
    let mut driver = new_driver(&spec);
    let (mut ex, _) = start(&mut driver, 100);
    let calls = ex.host.grpc_calls.clone();
    let over = rls::encode_response(&Response {
        overall: Code::OverLimit,
        statuses: vec![status(Code::OverLimit, "tpm", 10, 0, 9)],
        headers: Vec::new(),
    });
    assert_eq!(ex.grpc_answer(calls[0].0, Ok(&over)), Some(Action::Continue), "admitted all the same");
    assert!(ex.host.local_reply.is_none());
    finish(&mut ex, &[], 20, 10);
    assert_eq!(ex.host.response_header_value("x-tollgate-quota-shadow"), Some("exhausted=tpm"));
    assert_eq!(ex.host.counter("tollgate.quota.decisions", &["limit=tpm", "outcome=shadow_refused"]), 1);
    assert_eq!(ex.host.counter("tollgate.quota.decisions", &["outcome=admitted"]), 0);
    // The service counted nothing for the refused reservation: the whole usage is reported.
    let report = rls::decode_request(&ex.host.grpc_calls[1].1.message).unwrap();
    assert_eq!(report.hits_addend, 30);
}

#[test]
fn check_report_in_check_mode_reports_exact_usage() {
    let spec = check_report(json!({"reservation": "check"}));
    let mut driver = new_driver(&spec);
    let (mut ex, _) = start(&mut driver, 100);
    let calls = ex.host.grpc_calls.clone();
    assert_eq!((calls[0].1.service, calls[0].1.method), (rls::KUADRANT_SERVICE, rls::CHECK_RATE_LIMIT));
    // Limitador answers without statuses, with draft-03 headers of the tightest limit.
    let answer = rls::encode_response(&Response {
        overall: Code::Ok,
        statuses: Vec::new(),
        headers: vec![
            ("X-RateLimit-Limit".into(), "10000, 10000;w=60;name=\"tpm\"".into()),
            ("X-RateLimit-Remaining".into(), "4000".into()),
            ("X-RateLimit-Reset".into(), "5".into()),
        ],
    });
    ex.grpc_answer(calls[0].0, Ok(&answer));
    ex.grpc_answer(calls[1].0, Ok(&ok(Vec::new())));
    finish(&mut ex, &[], 20, 10);
    assert_eq!(ex.host.response_header_value("x-ratelimit-remaining-tokens"), Some("4000"));
    let hits: Vec<u64> =
        ex.host.grpc_calls.iter().skip(2).map(|(_, c)| rls::decode_request(&c.message).unwrap().hits_addend).collect();
    assert_eq!(hits, vec![30, 1], "the exact usage, and the request");
}

/// With guardrails too, a form's prompt after its file is checked and masked wherever the
/// reservation's answers come: before the prompt (the held file goes on, the prompt is held
/// when it comes), while it is half in (the request goes on once it is whole), after all of it
/// (masked in what is held).
#[test]
fn check_report_and_guardrails_mask_a_prompt_after_the_file_whenever_the_answers_come() {
    let config = json!({"token_counter": {}, "guardrails": {"entities": {"default": "mask"}}, "quota": {
        "consumer": {"header": "x-api-key", "salt": "s"},
        "limits": [{"name": "rpm", "meter": "requests", "per": "consumer", "window": "minute", "limit": 100}],
        "global": {"backend": "check_report", "cluster": "rls", "domain": "tollgate"}}});
    let spec = compose::parse(config.to_string().as_bytes()).unwrap();
    let field = |name: &str, value: &str| {
        format!("--xyz\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").into_bytes()
    };
    let form_with = |prompt: &str| {
        let mut form = field("model", "gpt-image-1");
        form.extend(b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n");
        form.extend((0..50_000).map(|i| (i % 251) as u8));
        form.extend(b"\r\n");
        form.extend(field("prompt", prompt));
        form.extend(b"--xyz--\r\n");
        form
    };
    let form = form_with("a hat for ana@exemplo.com.br");
    let masked = form_with("a hat for [EMAIL_1]");
    let prompt_at = form.windows(13).position(|w| w == b"name=\"prompt\"").unwrap();
    // Where the answers come: after the first piece, half-way through the prompt, after all.
    for answers_after in [4_096, prompt_at + 40, form.len()] {
        let mut driver = new_driver(&spec);
        let mut ex = Exchange::new(&mut driver);
        ex.host.now_ns = NOW * 1_000_000_000;
        let length = form.len().to_string();
        let headers = [
            (":method", "POST"),
            (":path", "/v1/images/edits"),
            (":authority", "api.openai.com"),
            ("content-type", "multipart/form-data; boundary=xyz"),
            ("content-length", length.as_str()),
            ("x-api-key", "sk-a"),
        ];
        assert_eq!(ex.request_headers(&headers, false), Action::Pause);
        let (first, rest) = form.split_at(answers_after);
        let first: Vec<&[u8]> = first.chunks(4_096).collect();
        assert_eq!(
            ex.request_body_pieces(&first, rest.is_empty()),
            Action::Pause,
            "{answers_after}: held for the answer"
        );
        let call = ex.host.grpc_calls[0].0;
        let resumed = ex.grpc_answer(call, Ok(&ok(vec![status(Code::Ok, "rpm", 100, 99, 20)])));
        if resumed.is_some() {
            // Envoy lets go of what it held.
            let held = std::mem::take(&mut ex.host.request_body);
            ex.host.forwarded_request.extend(held);
        } else {
            assert!(ex.host.forwarded_request.is_empty(), "{answers_after}: the prompt is not whole: still held");
        }
        if !rest.is_empty() {
            let rest: Vec<&[u8]> = rest.chunks(4_096).collect();
            assert_eq!(ex.request_body(&rest), Action::Continue, "{answers_after}");
        }
        assert!(ex.host.forwarded_request == masked, "{answers_after}: the prompt masked, the rest as sent");
        let length = ex.host.request_header_value("content-length");
        assert!(length.is_none_or(|l| l == masked.len().to_string()), "{answers_after}: {length:?}");
    }
}
