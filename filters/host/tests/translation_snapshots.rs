//! Golden translations: for each front door × backend, the request each request shape becomes
//! and the answer each provider fixture becomes, compared with the snapshot files in
//! `tests/fixtures/translations/` (reviewed by hand against the providers' API references; see
//! that directory's README). Every stream fixture is also replayed cut at every byte boundary and
//! must translate to the identical bytes.
//!
//! `TOLLGATE_UPDATE_SNAPSHOTS=1 cargo test -p tollgate-host --test translation_snapshots`
//! rewrites the files; review the diff before committing it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{json, Value};
use std::path::PathBuf;
use tollgate_core::stage::{compose, Pipeline};
use tollgate_host::fake::Exchange;
use tollgate_host::Driver;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn driver() -> Driver {
    let config = json!({"provider_rewrite": {
        "backends": {
            "openai": {"kind": "openai", "cluster": "openai", "host": "api.openai.com", "api_key": {"value": "sk-o"}},
            "azure": {"kind": "azure", "cluster": "azure", "host": "contoso.openai.azure.com", "api_version": "2024-10-21",
                      "api_key": {"value": "az"}},
            "anthropic": {"kind": "anthropic", "cluster": "anthropic", "host": "api.anthropic.com",
                          "api_key": {"value": "sk-a"}, "default_max_tokens": 1024},
            "gemini": {"kind": "gemini", "cluster": "gemini", "host": "generativelanguage.googleapis.com",
                       "api_key": {"value": "g"}},
            "bedrock": {"kind": "bedrock", "cluster": "bedrock", "host": "bedrock-runtime.us-east-1.amazonaws.com",
                        "region": "us-east-1", "aws_access_key_id": {"value": "AKID"}, "aws_secret_access_key": {"value": "s"}}
        },
        "models": [
            {"name": "to-openai", "backend": "openai", "model": "gpt-4o-mini"},
            {"name": "to-azure", "backend": "azure", "model": "gpt-4o-prod"},
            {"name": "to-anthropic", "backend": "anthropic", "model": "claude-sonnet-4-20250514"},
            {"name": "to-gemini", "backend": "gemini", "model": "gemini-2.5-flash"},
            {"name": "to-bedrock", "backend": "bedrock", "model": "anthropic.claude-3-5-haiku-20241022-v1:0"}
        ]
    }});
    let composed = compose::parse(config.to_string().as_bytes()).unwrap();
    Driver::new(Pipeline::new(composed.stages.iter().map(|f| f.create()).collect(), None))
}

fn openai_shapes(model: &str) -> Vec<(&'static str, Value)> {
    let user = json!({"role": "user", "content": "What is the weather in Recife?"});
    vec![
        ("plain", json!({"model": model, "messages": [user]})),
        (
            "system-multi-turn",
            json!({"model": model, "temperature": 0.3, "max_tokens": 200, "stop": ["END"],
            "messages": [{"role": "system", "content": "You are terse."}, user,
                         {"role": "assistant", "content": "Sunny, 31C."}, {"role": "user", "content": "And tomorrow?"}]}),
        ),
        (
            "tools",
            json!({"model": model, "tool_choice": "auto",
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
            "messages": [user, {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Recife\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":31}"}]}),
        ),
        (
            "image",
            json!({"model": model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}),
        ),
        ("json-mode", json!({"model": model, "response_format": {"type": "json_object"}, "messages": [user]})),
        (
            "stream",
            json!({"model": model, "stream": true, "stream_options": {"include_usage": true}, "messages": [user]}),
        ),
    ]
}

fn anthropic_shapes(model: &str) -> Vec<(&'static str, Value)> {
    let user = json!({"role": "user", "content": "What is the weather in Recife?"});
    vec![
        ("plain", json!({"model": model, "max_tokens": 100, "messages": [user]})),
        (
            "system-multi-turn",
            json!({"model": model, "max_tokens": 200, "temperature": 0.3, "stop_sequences": ["END"],
            "system": "You are terse.",
            "messages": [user, {"role": "assistant", "content": "Sunny, 31C."}, {"role": "user", "content": "And tomorrow?"}]}),
        ),
        (
            "tools",
            json!({"model": model, "max_tokens": 100, "tool_choice": {"type": "auto"},
            "tools": [{"name": "get_weather", "description": "Weather by city",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            "messages": [user, {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Recife"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "{\"temp\":31}"}]}]}),
        ),
        (
            "image",
            json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]}),
        ),
        ("stream", json!({"model": model, "max_tokens": 100, "stream": true, "messages": [user]})),
    ]
}

/// (front door, path, backend model, answers: (fixture, content type, status)).
type Pair = (&'static str, &'static str, &'static str, &'static [(&'static str, &'static str, u16)]);

const PAIRS: &[Pair] = &[
    (
        "openai",
        "/v1/chat/completions",
        "to-anthropic",
        &[
            ("anthropic/messages.json", "application/json", 200),
            ("anthropic/messages-stream.sse", "text/event-stream", 200),
            ("anthropic/messages-tool-stream.sse", "text/event-stream", 200),
            ("anthropic/messages-cache-stream.sse", "text/event-stream", 200),
            ("anthropic/error-overloaded.json", "application/json", 529),
        ],
    ),
    (
        "openai",
        "/v1/chat/completions",
        "to-gemini",
        &[
            ("gemini/generate.json", "application/json", 200),
            ("gemini/thinking.json", "application/json", 200),
            ("gemini/stream.sse", "text/event-stream", 200),
            ("gemini/function-call-stream.sse", "text/event-stream", 200),
            ("gemini/error-400.json", "application/json", 400),
        ],
    ),
    (
        "openai",
        "/v1/chat/completions",
        "to-bedrock",
        &[
            ("bedrock/converse.json", "application/json", 200),
            ("bedrock/converse-cache.json", "application/json", 200),
            ("bedrock/converse-stream.events.json", "application/vnd.amazon.eventstream", 200),
            ("bedrock/error-validation.json", "application/json", 400),
        ],
    ),
    ("openai", "/v1/chat/completions", "to-azure", &[]),
    (
        "anthropic",
        "/v1/messages",
        "to-openai",
        &[
            ("openai/chat.json", "application/json", 200),
            ("openai/chat-tools.json", "application/json", 200),
            ("openai/chat-stream.sse", "text/event-stream", 200),
            ("openai/chat-tools-stream.sse", "text/event-stream", 200),
            ("openai/error-429.json", "application/json", 429),
        ],
    ),
    (
        "anthropic",
        "/v1/messages",
        "to-gemini",
        &[
            ("gemini/generate.json", "application/json", 200),
            ("gemini/function-call-stream.sse", "text/event-stream", 200),
        ],
    ),
    (
        "anthropic",
        "/v1/messages",
        "to-bedrock",
        &[
            ("bedrock/converse.json", "application/json", 200),
            ("bedrock/converse-stream.events.json", "application/vnd.amazon.eventstream", 200),
        ],
    ),
];

fn upstream_bytes(fixture: &str) -> Vec<u8> {
    let raw = std::fs::read(root().join("responses").join(fixture)).unwrap();
    if fixture.ends_with(".events.json") {
        tollgate_host::fake::eventstream_fixture(&raw)
    } else {
        raw
    }
}

/// Sends `request` to `path` (with a fixed clock, so signatures are reproducible).
fn start<'a>(driver: &'a mut Driver, path: &str, request: &Value) -> Exchange<'a> {
    let mut ex = Exchange::new(driver);
    ex.host.now_ns = 1_798_761_600 * 1_000_000_000;
    let body = serde_json::to_vec(request).unwrap();
    let length = body.len().to_string();
    ex.request_headers(
        &[
            (":method", "POST"),
            (":path", path),
            (":authority", "gw"),
            ("content-type", "application/json"),
            ("content-length", &length),
            ("authorization", "Bearer client"),
        ],
        false,
    );
    ex.request_body(&[&body]);
    ex
}

/// What the provider receives for `request`: path, the headers that matter, the body.
fn translate_request(path: &str, request: &Value) -> Value {
    let mut driver = driver();
    let ex = start(&mut driver, path, request);
    if let Some(reply) = &ex.host.local_reply {
        return json!({"refused": reply.status, "body": serde_json::from_slice::<Value>(&reply.body).unwrap()});
    }
    let mut headers = serde_json::Map::new();
    for name in [
        ":path",
        ":authority",
        "x-tollgate-cluster",
        "authorization",
        "x-api-key",
        "api-key",
        "anthropic-version",
        "x-goog-api-key",
        "x-amz-date",
    ] {
        if let Some(value) = ex.host.request_header_value(name) {
            headers.insert(name.into(), json!(value));
        }
    }
    json!({"headers": headers, "body": serde_json::from_slice::<Value>(&ex.host.request_body).unwrap()})
}

/// What the client receives for a provider answer, the body cut at `cut`.
fn translate_answer(
    path: &str,
    request: &Value,
    fixture: &str,
    content_type: &str,
    status: u16,
    cut: Option<usize>,
) -> Vec<u8> {
    let mut driver = driver();
    let mut ex = start(&mut driver, path, request);
    assert!(ex.host.local_reply.is_none(), "{fixture}: refused");
    let status = status.to_string();
    ex.response_headers(&[(":status", &status), ("content-type", content_type)], false);
    let upstream = upstream_bytes(fixture);
    match cut {
        Some(at) => ex.response_body(&[&upstream[..at], &upstream[at..]], 1, true),
        None => ex.response_body(&[&upstream], 1, true),
    }
    let mut out = ex.host.client_body.clone();
    if let Some(status) = ex.host.response_header_value(":status").filter(|s| *s != status.as_str()) {
        out.splice(0..0, format!("(status {status})\n").into_bytes());
    }
    out
}

/// Compares with (or, when asked, writes) a snapshot; returns the mismatches.
fn check(file: &str, actual: &[u8], failures: &mut Vec<String>) {
    let path = root().join("translations").join(file);
    if std::env::var_os("TOLLGATE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    match std::fs::read(&path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{file} differs:\n--- expected\n{}\n--- actual\n{}",
            String::from_utf8_lossy(&expected),
            String::from_utf8_lossy(actual)
        )),
        Err(_) => failures.push(format!("{file}: no snapshot (TOLLGATE_UPDATE_SNAPSHOTS=1 writes it)")),
    }
}

fn pretty(value: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).unwrap();
    out.push(b'\n');
    out
}

#[test]
fn translations_match_their_reviewed_snapshots() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (door, path, model, answers) in PAIRS {
        let dir = format!("{door}-{}", model.trim_start_matches("to-"));
        let shapes = if *door == "openai" { openai_shapes(model) } else { anthropic_shapes(model) };
        for (shape, request) in &shapes {
            check(&format!("{dir}/request-{shape}.json"), &pretty(&translate_request(path, request)), &mut failures);
            count += 1;
        }
        for (fixture, content_type, status) in answers.iter() {
            let stream = !content_type.contains("json");
            let shape = if stream { "stream" } else { "plain" };
            let request = &shapes.iter().find(|(s, _)| *s == shape).unwrap().1;
            let whole = translate_answer(path, request, fixture, content_type, *status, None);
            let name = fixture.replace('/', "-").replace(".events.json", "").replace(".json", "").replace(".sse", "");
            let extension = if stream { "sse" } else { "json" };
            let shown = if stream {
                whole.clone()
            } else {
                match serde_json::from_slice::<Value>(whole.rsplit(|b| *b == b'\n').next().unwrap_or(&whole)) {
                    Ok(v) => {
                        let mut out: Vec<u8> = whole.iter().take_while(|b| **b != b'{').copied().collect();
                        out.extend(pretty(&v));
                        out
                    }
                    Err(_) => whole.clone(),
                }
            };
            check(&format!("{dir}/answer-{name}.{extension}"), &shown, &mut failures);
            count += 1;
            if stream {
                for cut in 1..upstream_bytes(fixture).len() {
                    let split = translate_answer(path, request, fixture, content_type, *status, Some(cut));
                    if split != whole {
                        failures.push(format!("{dir} {fixture}: cut at {cut} translates differently"));
                        break;
                    }
                }
            }
        }
    }
    assert!(count > 60, "{count} snapshots");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
