//! provider-rewrite through the fake host, in the all-in-one pipeline (token-counter →
//! provider-rewrite → quota): the model table, the OpenAI → Anthropic translation of requests,
//! answers, streams (split at every byte) and errors, and that usage is counted once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use serde_json::{json, Value};
use std::path::PathBuf;
use tollgate_core::stage::{compose, Pipeline};
use tollgate_host::fake::Exchange;
use tollgate_host::{Action, Driver};

const TOKENS: &str = "tollgate.gen_ai.client.token.usage";

fn config() -> Value {
    json!({
        "token_counter": {},
        "provider_rewrite": {
            "backends": {
                "openai": {"kind": "openai", "cluster": "openai", "host": "api.openai.com",
                           "api_key": {"value": "sk-test-openai"}},
                "claude": {"kind": "anthropic", "cluster": "anthropic", "host": "api.anthropic.com",
                           "api_key": {"value": "sk-ant-test"}, "default_max_tokens": 1024},
                "azure": {"kind": "azure", "cluster": "azure", "host": "contoso.openai.azure.com",
                          "api_version": "2024-10-21", "api_key": {"value": "azure-key"}},
                "local": {"kind": "openai_compatible", "cluster": "vllm", "base_path": "/api/v1"},
                "gemini": {"kind": "gemini", "cluster": "gemini", "host": "generativelanguage.googleapis.com",
                           "api_key": {"value": "goog-key"}},
                "vertex": {"kind": "vertex", "cluster": "vertex", "host": "us-central1-aiplatform.googleapis.com",
                           "project": "demo", "location": "us-central1", "api_key": {"value": "ya29.token"}},
                "bedrock": {"kind": "bedrock", "cluster": "bedrock", "host": "bedrock-runtime.us-east-1.amazonaws.com",
                            "region": "us-east-1", "aws_access_key_id": {"value": "AKIDTEST"},
                            "aws_secret_access_key": {"value": "secret"}}
            },
            "models": [
                {"name": "gpt-4o-mini", "backend": "openai"},
                {"name": "fast", "alias_of": "gpt-4o-mini"},
                {"name": "claude-sonnet", "backend": "claude", "model": "claude-sonnet-4-20250514"},
                {"name": "claude-*", "backend": "claude"},
                {"name": "gpt-4o", "backend": "azure", "model": "gpt-4o-prod"},
                {"name": "azure-*", "backend": "azure"},
                {"name": "llama-3.1-8b", "backend": "local", "model": "meta-llama/Llama-3.1-8B-Instruct"},
                {"name": "gemini-*", "backend": "gemini"},
                {"name": "vertex-flash", "backend": "vertex", "model": "gemini-2.0-flash"},
                {"name": "haiku", "backend": "bedrock", "model": "anthropic.claude-3-5-haiku-20241022-v1:0"},
                {"name": "us.*", "backend": "bedrock"}
            ]
        },
        "quota": {"mode": "shadow", "limits": [
            {"name": "tpm", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 100000}
        ]}
    })
}

fn driver(config: &Value) -> Driver {
    let composed = compose::parse(config.to_string().as_bytes()).unwrap();
    Driver::new(Pipeline::new(composed.stages.iter().map(|f| f.create()).collect(), composed.max_request_bytes))
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/responses").join(name)).unwrap()
}

/// Sends `request` to `path` with a client key; returns the exchange after the body.
fn send<'a>(driver: &'a mut Driver, path: &str, request: &Value) -> (Exchange<'a>, Action) {
    send_with(driver, path, request, &[])
}

fn send_with<'a>(
    driver: &'a mut Driver,
    path: &str,
    request: &Value,
    extra: &[(&str, &str)],
) -> (Exchange<'a>, Action) {
    let body = serde_json::to_vec(request).unwrap();
    let length = body.len().to_string();
    let mut ex = Exchange::new(driver);
    let mut headers = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", "gateway.local"),
        ("content-type", "application/json"),
        ("content-length", &length),
        ("authorization", "Bearer client-key"),
        ("accept-encoding", "gzip, deflate"),
    ];
    headers.extend_from_slice(extra);
    let action = ex.request_headers(&headers, false);
    assert_eq!(action, Action::Pause, "headers held until the model is read");
    let action = ex.request_body(&[&body]);
    (ex, action)
}

/// Sends `body` as it is to the chat completions path, with `extra` headers.
fn send_bytes<'a>(driver: &'a mut Driver, body: &[u8], extra: &[(&str, &str)]) -> Exchange<'a> {
    let mut ex = Exchange::new(driver);
    ex.chat_request_headers(body.len(), extra);
    ex.request_body(&[body]);
    ex
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Hello"}]})
}

#[test]
fn the_gateway_answers_the_model_list_from_its_table() {
    let mut driver = driver(&config());
    let mut ex = Exchange::new(&mut driver);
    let action = ex.request_headers(&[(":method", "GET"), (":path", "/v1/models"), (":authority", "gw")], true);
    assert_eq!(action, Action::Pause);
    let reply = ex.host.local_reply.clone().expect("answered by the gateway");
    assert_eq!(reply.status, 200);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["claude-sonnet", "fast", "gpt-4o", "gpt-4o-mini", "haiku", "llama-3.1-8b", "vertex-flash"],
        "exact names and aliases; patterns are not listable"
    );
    let owners: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["owned_by"].as_str().unwrap()).collect();
    assert_eq!(owners, ["anthropic", "openai", "azure", "openai", "bedrock", "openai-compatible", "vertex"]);
    assert_eq!(body["object"], "list");
    ex.log();
    assert_eq!(ex.host.counter(TOKENS, &[]), 0, "no usage for a model list");
}

/// A `GET` answered by the gateway: status and JSON body.
fn get(driver: &mut Driver, path: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut ex = Exchange::new(driver);
    let mut headers = vec![(":method", "GET"), (":path", path), (":authority", "gw")];
    headers.extend_from_slice(extra);
    assert_eq!(ex.request_headers(&headers, true), Action::Pause, "{path}");
    let reply = ex.host.local_reply.clone().expect("answered by the gateway");
    (reply.status, serde_json::from_slice(&reply.body).unwrap())
}

#[test]
fn one_model_and_anthropic_pages_are_answered_in_the_clients_format() {
    let mut driver = driver(&config());
    let anthropic = [("anthropic-version", "2023-06-01")];
    assert_eq!(
        get(&mut driver, "/v1/models/haiku", &[]),
        (200, json!({"id": "haiku", "object": "model", "created": 0, "owned_by": "bedrock"}))
    );
    // SDKs percent-encode the id; a name a pattern serves is a model too.
    let (status, card) = get(&mut driver, "/v1/models/claude-3-opus%2Dx", &anthropic);
    assert_eq!(status, 200, "{card}");
    assert_eq!(
        card,
        json!({"type": "model", "id": "claude-3-opus-x", "display_name": "claude-3-opus-x",
               "created_at": "1970-01-01T00:00:00Z"})
    );
    let (status, error) = get(&mut driver, "/v1/models/nope", &[]);
    assert_eq!(
        (status, &error["error"]["code"], &error["error"]["param"]),
        (404, &json!("model_not_found"), &json!("model"))
    );
    let (status, error) = get(&mut driver, "/v1/models/nope", &anthropic);
    assert_eq!((status, &error["type"], &error["error"]["type"]), (404, &json!("error"), &json!("not_found_error")));

    let (status, page) = get(&mut driver, "/v1/models?limit=2&after_id=fast", &anthropic);
    assert_eq!(status, 200);
    assert_eq!(
        page,
        json!({"data": [
            {"type": "model", "id": "gpt-4o", "display_name": "gpt-4o", "created_at": "1970-01-01T00:00:00Z"},
            {"type": "model", "id": "gpt-4o-mini", "display_name": "gpt-4o-mini", "created_at": "1970-01-01T00:00:00Z"}],
            "has_more": true, "first_id": "gpt-4o", "last_id": "gpt-4o-mini"})
    );
    let (status, error) = get(&mut driver, "/v1/models?limit=0", &anthropic);
    assert_eq!((status, &error["error"]["type"]), (400, &json!("invalid_request_error")));
}

#[test]
fn same_api_backends_get_the_model_id_spliced_and_their_own_credentials() {
    let mut driver = driver(&config());
    let request = json!({"model": "fast", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.2});
    let (ex, action) = send(&mut driver, "/v1/chat/completions", &request);
    assert_eq!(action, Action::Continue);
    let sent = serde_json::to_vec(&request).unwrap();
    let expected = String::from_utf8(sent).unwrap().replace("\"fast\"", "\"gpt-4o-mini\"");
    assert_eq!(String::from_utf8(ex.host.request_body.clone()).unwrap(), expected, "only the model changes");
    let h = |name| ex.host.request_header_value(name);
    assert_eq!(h("x-tollgate-cluster"), Some("openai"));
    assert_eq!(h(":path"), Some("/v1/chat/completions"));
    assert_eq!(h(":authority"), Some("api.openai.com"));
    assert_eq!(h("authorization"), Some("Bearer sk-test-openai"), "the backend's key replaces the client's");
    assert_eq!(h("content-length"), Some(expected.len().to_string().as_str()));
}

/// OpenAI's Responses input token count goes where the model's Responses would: an OpenAI
/// backend, with its key and model; any other backend would only estimate, so it is refused.
#[test]
fn responses_input_token_counts_reach_openai_backends_only() {
    let mut driver = driver(&config());
    let request = json!({"model": "fast", "input": "How many tokens is this?"});
    let (ex, action) = send(&mut driver, "/v1/responses/input_tokens", &request);
    assert_eq!(action, Action::Continue);
    assert_eq!(ex.host.request_header_value(":path"), Some("/v1/responses/input_tokens"));
    assert_eq!(ex.host.request_header_value("authorization"), Some("Bearer sk-test-openai"));
    let sent: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini", "the alias resolved");

    let mut driver = self::driver(&config());
    let (ex, _) = send(&mut driver, "/v1/responses/input_tokens", &json!({"model": "claude-sonnet", "input": "Hi"}));
    let reply = ex.host.local_reply.clone().expect("refused");
    assert_eq!(reply.status, 400);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("count_tokens"), "{body}");
}

/// OpenAI's own APIs — image generation, conversation compaction — go to OpenAI-family backends
/// (the alias resolved, the backend's credentials) and are refused (400, naming the API) for a
/// model that resolves to another provider, which has no such API.
#[test]
fn openai_only_apis_reach_openai_backends_only() {
    let image = json!({"model": "fast", "prompt": "A lighthouse at dawn", "n": 2, "size": "1024x1024"});
    let compact =
        json!({"model": "fast", "input": [{"role": "user", "content": "Plan a three-day walking tour of Lisbon."}]});
    let speech = json!({"model": "fast", "voice": "coral", "input": "Hello", "stream_format": "sse"});
    let decision = json!({"model": "fast", "input": "Charged twice!",
                          "questions": [{"type": "predicate", "instructions": "A complaint."}]});
    for (path, request, api) in [
        ("/v1/images/generations", image, "image_generation"),
        ("/v1/responses/compact", compact, "compact"),
        ("/v1/audio/speech", speech.clone(), "speech"),
        ("/v1/decisions", decision.clone(), "decision"),
    ] {
        let mut driver = driver(&config());
        let (ex, action) = send(&mut driver, path, &request);
        assert_eq!(action, Action::Continue, "{path}");
        assert_eq!(ex.host.request_header_value(":path"), Some(path));
        assert_eq!(ex.host.request_header_value("authorization"), Some("Bearer sk-test-openai"));
        let mut sent: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
        assert_eq!(sent["model"], "gpt-4o-mini", "{path}: the alias resolved");
        sent["model"] = request["model"].clone();
        assert_eq!(sent, request, "{path}: nothing else changed");

        let mut claude = request.clone();
        claude["model"] = json!("claude-sonnet");
        let mut driver = self::driver(&config());
        let (ex, _) = send(&mut driver, path, &claude);
        let reply = ex.host.local_reply.clone().expect("refused");
        assert_eq!(reply.status, 400);
        let message = String::from_utf8_lossy(&reply.body).into_owned();
        assert!(
            message.contains("'claude-sonnet'") && message.contains(&format!("does not offer the {api} API")),
            "{message}"
        );
    }
    // On Azure, speech goes to the deployment's own path.
    let mut azure = speech;
    azure["model"] = json!("azure-tts");
    let mut driver = driver(&config());
    let (ex, action) = send(&mut driver, "/v1/audio/speech", &azure);
    assert_eq!(action, Action::Continue);
    assert_eq!(
        ex.host.request_header_value(":path"),
        Some("/openai/deployments/azure-tts/audio/speech?api-version=2024-10-21")
    );
    assert_eq!(ex.host.request_header_value("api-key"), Some("azure-key"));
    // Decisions are OpenAI's own: not on Azure.
    let mut azure = decision;
    azure["model"] = json!("azure-luna");
    let mut driver = self::driver(&config());
    let (ex, _) = send(&mut driver, "/v1/decisions", &azure);
    assert_eq!(ex.host.local_reply.clone().map(|r| r.status), Some(400));
}

/// A compaction is counted from its answer, passed on unchanged.
#[test]
fn a_compaction_is_counted() {
    let mut driver = driver(&config());
    let request = json!({"model": "fast", "input": "Plan a three-day walking tour of Lisbon."});
    let (mut ex, _) = send(&mut driver, "/v1/responses/compact", &request);
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    let answer = fixture("openai/responses-compact.json");
    ex.response_body(&[&answer], 1, true);
    ex.log();
    assert_eq!(ex.host.client_body, answer);
    assert_eq!(ex.host.filter_state.get("tollgate.total_tokens").map(String::as_str), Some("1582"));
    assert_eq!(ex.host.filter_state.get("tollgate.operation").map(String::as_str), Some("compact"));
}

/// Claude on Vertex AI (`…/publishers/anthropic/models/{model}:rawPredict`) names its provider
/// and model in the path: it is counted, but not routed, even when the model table has a rule
/// for its model (`claude-*`): path, credentials and body reach Vertex as the client sent them.
#[test]
fn claude_on_vertex_is_counted_and_passed_through_not_routed() {
    let mut driver = driver(&config());
    let path = "/v1/projects/p-1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict";
    let request = json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 64,
                         "messages": [{"role": "user", "content": "Hello, Claude"}]});
    let (mut ex, action) = send(&mut driver, path, &request);
    assert_eq!(action, Action::Continue);
    assert!(ex.host.local_reply.is_none());
    assert_eq!(ex.host.request_header_value(":path"), Some(path));
    assert_eq!(ex.host.request_header_value("authorization"), Some("Bearer client-key"));
    assert_eq!(serde_json::from_slice::<Value>(&ex.host.request_body).unwrap(), request);
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    let answer = fixture("anthropic/messages.json");
    ex.response_body(&[&answer], 1, true);
    ex.log();
    assert_eq!(ex.host.client_body, answer);
    assert_eq!(ex.host.filter_state.get("tollgate.provider").map(String::as_str), Some("vertex"));
    assert_eq!(
        ex.host.filter_state.get("tollgate.request_model").map(String::as_str),
        Some("claude-sonnet-4@20250514")
    );
    assert_eq!(ex.host.filter_state.get("tollgate.total_tokens").map(String::as_str), Some("33"));
}

#[test]
fn unknown_models_are_404_in_the_clients_dialect() {
    let mut driver = driver(&config());
    let (ex, _) = send(&mut driver, "/v1/chat/completions", &chat("gpt-9", false));
    let reply = ex.host.local_reply.clone().unwrap();
    assert_eq!(reply.status, 404);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("gpt-9"));
    assert_eq!(ex.host.counter("tollgate.errors", &["reason=model_not_found"]), 1);

    let mut driver = self::driver(&config());
    let request = json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]});
    let (ex, _) = send(&mut driver, "/v1/messages", &request);
    let reply = ex.host.local_reply.clone().unwrap();
    assert_eq!(reply.status, 404);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!((body["type"].as_str(), body["error"]["type"].as_str()), (Some("error"), Some("not_found_error")));
}

#[test]
fn a_field_of_the_wrong_type_is_a_400_naming_it_in_the_clients_dialect() {
    // JSON, but not the API's request: the model cannot be trusted to route, so the gateway
    // answers, naming the field and the type it must have, never echoing the value.
    let mut driver = driver(&config());
    let mut request = chat("gpt-4o", false);
    request["max_tokens"] = json!(-5);
    let (ex, _) = send(&mut driver, "/v1/chat/completions", &request);
    let reply = ex.host.local_reply.clone().expect("refused");
    assert_eq!(reply.status, 400);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"]["param"], "max_tokens", "{body}");
    assert_eq!(body["error"]["message"], "invalid 'max_tokens': expected a non-negative integer", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(ex.host.counter("tollgate.errors", &["reason=invalid_request"]), 1);

    let mut driver = self::driver(&config());
    let request =
        json!({"model": "claude-sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}, "oops"]});
    let (ex, _) = send(&mut driver, "/v1/messages", &request);
    let reply = ex.host.local_reply.clone().expect("refused");
    assert_eq!(reply.status, 400);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["message"], "invalid 'messages[1]': expected an object", "{body}");

    // Stricter than the shared parse, a translation's own reading refuses too, and its message
    // never repeats the request's text.
    let mut driver = self::driver(&config());
    let request =
        json!({"model": "claude-sonnet", "tools": "secret text", "messages": [{"role": "user", "content": "Hi"}]});
    let (ex, _) = send(&mut driver, "/v1/chat/completions", &request);
    let reply = ex.host.local_reply.clone().expect("refused");
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(reply.status, 400, "{body}");
    assert!(message.starts_with("not a chat request: invalid type: string, expected a sequence"), "{message}");
    assert!(!message.contains("secret"), "{message}");
}

#[test]
fn unreadable_bodies_are_refused_naming_what_was_sent() {
    // A compressed or non-JSON body cannot be routed: 415, naming what was sent.
    for (header, value, code, says) in [
        ("content-encoding", "gzip", "unsupported_content_encoding", "content-encoding 'gzip'"),
        ("content-type", "text/plain", "unsupported_media_type", "content-type 'text/plain'"),
    ] {
        let mut driver = self::driver(&config());
        let ex = send_bytes(&mut driver, b"\x1f\x8b\x08\x00", &[(header, value)]);
        let reply = ex.host.local_reply.clone().expect("refused");
        let answer: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!((reply.status, answer["error"]["code"].as_str()), (415, Some(code)), "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().starts_with(says), "{answer}");
    }

    // Not JSON at all is still said so.
    let mut driver = self::driver(&config());
    let ex = send_bytes(&mut driver, br#"{"model":"gpt-4o","messages":["#, &[]);
    let reply = ex.host.local_reply.clone().expect("refused");
    let answer: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!((reply.status, answer["error"]["code"].as_str()), (400, Some("invalid_json")), "{answer}");
}

#[test]
fn anthropic_clients_reach_anthropic_backends_by_alias() {
    let mut driver = driver(&config());
    let request = json!({"model": "claude-sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]});
    let (ex, action) = send(&mut driver, "/v1/messages", &request);
    assert_eq!(action, Action::Continue);
    let forwarded: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
    assert_eq!(forwarded["model"], "claude-sonnet-4-20250514");
    assert_eq!(ex.host.request_header_value("x-api-key"), Some("sk-ant-test"));
    assert_eq!(ex.host.request_header_value("authorization"), None);
}

#[test]
fn anthropic_requests_become_chat_completions() {
    let request = json!({
        "model": "gpt-4o-mini",
        "max_tokens": 300,
        "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in Portuguese."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Recife?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "...", "signature": "sig"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Recife"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "31C"}]},
                {"type": "text", "text": "And tomorrow?"}
            ]}
        ],
        "tools": [{"name": "get_weather", "description": "Weather by city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "temperature": 0.3,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-42"},
        "stream": true
    });
    let mut driver = driver(&config());
    let (ex, action) = send_with(&mut driver, "/v1/messages", &request, &[("x-api-key", "client-anthropic-key")]);
    assert_eq!(action, Action::Continue);
    let forwarded: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
    let expected = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse.\n\nAnswer in Portuguese."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Recife?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Recife\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "31C"},
            {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]}
        ],
        "max_completion_tokens": 300,
        "temperature": 0.3,
        "stop": ["END"],
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "u-42",
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false
    });
    assert_eq!(forwarded, expected);
    let h = |name| ex.host.request_header_value(name);
    assert_eq!(h(":path"), Some("/v1/chat/completions"));
    assert_eq!(h("authorization"), Some("Bearer sk-test-openai"));
    assert_eq!(h("x-api-key"), None, "the client's key never reaches the provider");

    // No OpenAI equivalent: refused, naming the parameter.
    let mut driver = self::driver(&config());
    let request =
        json!({"model": "gpt-4o-mini", "max_tokens": 5, "top_k": 5, "messages": [{"role": "user", "content": "Hi"}]});
    let (ex, _) = send(&mut driver, "/v1/messages", &request);
    let reply = ex.host.local_reply.clone().unwrap();
    assert_eq!(reply.status, 400);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["type"], "error");
    assert!(body["error"]["message"].as_str().unwrap().contains("top_k"), "{body}");
}

#[test]
fn chat_completions_become_anthropic_messages() {
    let mut driver = driver(&config());
    let request =
        json!({"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "Weather?"}]});
    let (mut ex, _) = send(&mut driver, "/v1/messages", &request);
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json"), ("content-length", "900")], false);
    ex.response_body(&[&fixture("openai/chat-tools.json")], 5, true);
    ex.log();
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(
        body,
        json!({
            "id": "chatcmpl-tools", "type": "message", "role": "assistant", "model": "gpt-4o-2024-08-06",
            "content": [{"type": "tool_use", "id": "call_abc123", "name": "get_weather", "input": {"city": "Recife", "unit": "celsius"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 82, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 17}
        })
    );
    assert_eq!(ex.host.counter(TOKENS, &["gen_ai_token_type=output", "gen_ai_provider_name=openai"]), 17);
}

/// Plays the OpenAI tool stream to an Anthropic client, cut at `cut`.
fn openai_tool_stream(cut: Option<usize>) -> (Vec<u8>, tollgate_host::fake::FakeHost) {
    let request = json!({"model": "gpt-4o-mini", "max_tokens": 50, "stream": true,
                         "messages": [{"role": "user", "content": "Weather?"}]});
    let mut driver = driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/messages", &request);
    ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    let upstream = fixture("openai/chat-tools-stream.sse");
    match cut {
        Some(at) => ex.response_body(&[&upstream[..at], &upstream[at..]], 5, true),
        None => ex.response_body(&[&upstream], 5, true),
    }
    ex.log();
    (ex.host.client_body.clone(), ex.host)
}

fn anthropic_events(body: &[u8]) -> Vec<(String, Value)> {
    std::str::from_utf8(body)
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.strip_prefix("event: ").unwrap().split_once("\ndata: ").unwrap();
            let value: Value = serde_json::from_str(data).unwrap();
            assert_eq!(value["type"], name, "event name and type agree");
            (name.to_string(), value)
        })
        .collect()
}

#[test]
fn openai_streams_become_anthropic_events_at_every_byte_boundary() {
    let (whole, host) = openai_tool_stream(None);
    let events = anthropic_events(&whole);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    assert_eq!(names.iter().filter(|n| **n == "content_block_start").count(), 1);
    assert_eq!(names.iter().filter(|n| **n == "content_block_stop").count(), 1);
    let (_, start) = events.iter().find(|(n, _)| n == "content_block_start").unwrap();
    assert_eq!(
        start["content_block"],
        json!({"type": "tool_use", "id": "call_abc123", "name": "get_weather", "input": {}})
    );
    let input: String = events.iter().filter_map(|(_, e)| e["delta"]["partial_json"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&input).unwrap(), json!({"city": "Recife", "unit": "celsius"}));
    let (_, delta) = &events[events.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 17);
    assert_eq!(delta["usage"]["input_tokens"], 82);
    assert_eq!(host.counter(TOKENS, &["gen_ai_token_type=output"]), 17);

    let upstream_len = fixture("openai/chat-tools-stream.sse").len();
    for cut in 1..upstream_len {
        let (split, host) = openai_tool_stream(Some(cut));
        assert_eq!(split, whole, "cut at {cut}");
        assert_eq!(host.counter(TOKENS, &["gen_ai_token_type=output"]), 17, "cut at {cut}");
    }
}

#[test]
fn anthropic_token_counts_go_to_backends_that_count_them_only() {
    let request = json!({"model": "claude-sonnet", "system": "Be brief.",
                         "messages": [{"role": "user", "content": "Hello"}]});
    let mut driver = driver(&config());
    let (mut ex, action) =
        send_with(&mut driver, "/v1/messages/count_tokens", &request, &[("x-api-key", "client-anthropic-key")]);
    assert_eq!(action, Action::Continue, "{:?}", ex.host.local_reply);
    let h = |name: &str| ex.host.request_header_value(name).map(str::to_string);
    assert_eq!(h(":path").as_deref(), Some("/v1/messages/count_tokens"));
    assert_eq!(h("x-tollgate-cluster").as_deref(), Some("anthropic"));
    assert_eq!(h("x-api-key").as_deref(), Some("sk-ant-test"), "the backend's key, never the client's");
    let forwarded: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
    assert_eq!(forwarded["model"], "claude-sonnet-4-20250514", "the model id spliced, nothing else");
    assert_eq!(forwarded["system"], "Be brief.");
    assert!(forwarded.get("max_tokens").is_none());
    let answer = br#"{"input_tokens":14}"#;
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    ex.response_body(&[answer], 1, true);
    ex.log();
    assert_eq!(ex.host.client_body, answer);
    assert_eq!(ex.host.counter(TOKENS, &[]), 0, "a count generates nothing: no token usage");
    assert_eq!(ex.host.counter("tollgate.provider.requests", &["backend=claude", "api=count_tokens", "variant="]), 1);

    // Bedrock counts with its CountTokens API: the Converse request under `input.converse`,
    // signed like any Bedrock call, and `inputTokens` read back as `input_tokens`.
    let request = json!({"model": "haiku", "system": "Be brief.", "messages": [{"role": "user", "content": "Hello"}]});
    let mut driver = self::driver(&config());
    let (mut ex, action) = send(&mut driver, "/v1/messages/count_tokens", &request);
    assert_eq!(action, Action::Continue, "{:?}", ex.host.local_reply);
    assert_eq!(
        ex.host.request_header_value(":path"),
        Some("/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/count-tokens")
    );
    assert!(ex
        .host
        .request_header_value("authorization")
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/"));
    let forwarded: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
    assert_eq!(
        forwarded,
        json!({"input": {"converse": {"messages": [{"role": "user", "content": [{"text": "Hello"}]}],
                                      "system": [{"text": "Be brief."}]}}})
    );
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    ex.response_body(&[br#"{"inputTokens":"#, br#"9}"#], 1, true);
    assert_eq!(serde_json::from_slice::<Value>(&ex.host.client_body).unwrap(), json!({"input_tokens": 9}));
    let mut driver = self::driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/messages/count_tokens", &request);
    ex.response_headers(&[(":status", "400"), ("content-type", "application/json")], false);
    ex.response_body(&[br#"{"message":"The provided model doesn't support counting tokens"}"#], 1, true);
    let error: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(
        (&error["type"], &error["error"]["type"]),
        (&json!("error"), &json!("invalid_request_error")),
        "{error}"
    );

    // Only the provider counts its model's tokens: another backend is refused, never estimated.
    for model in ["gpt-4o-mini", "gemini-2.5-flash"] {
        let mut driver = self::driver(&config());
        let request = json!({"model": model, "messages": [{"role": "user", "content": "Hello"}]});
        let (ex, _) = send(&mut driver, "/v1/messages/count_tokens", &request);
        let reply = ex.host.local_reply.clone().unwrap_or_else(|| panic!("{model}: forwarded"));
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!((reply.status, &body["error"]["type"]), (400, &json!("invalid_request_error")), "{model}");
        assert!(body["error"]["message"].as_str().unwrap().contains("count_tokens API"), "{body}");
    }
}

#[test]
fn openai_errors_reach_anthropic_clients_in_their_dialect() {
    let mut driver = driver(&config());
    let request = json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]});
    let (mut ex, _) = send(&mut driver, "/v1/messages", &request);
    ex.response_headers(&[(":status", "429"), ("content-type", "application/json"), ("retry-after", "3")], false);
    ex.response_body(&[&fixture("openai/error-429.json")], 5, true);
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    assert_eq!(ex.host.response_header_value("retry-after"), Some("3"));
}

#[test]
fn openai_requests_become_anthropic_messages() {
    let request = json!({
        "model": "claude-sonnet",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in Portuguese."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Recife?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/sky.jpg"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Recife\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "31C, sunny"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "max_completion_tokens": 300,
        "temperature": 0.5,
        "stop": ["END"],
        "n": 1,
        "user": "u-42",
        "stream": true,
        "stream_options": {"include_usage": true}
    });
    let mut driver = driver(&config());
    let (ex, action) = send(&mut driver, "/v1/chat/completions", &request);
    assert_eq!(action, Action::Continue);
    let forwarded: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
    let expected = json!({
        "model": "claude-sonnet-4-20250514",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Recife?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/sky.jpg"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Recife"}}
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "31C, sunny"}]}
        ],
        "max_tokens": 300,
        "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in Portuguese."}],
        "stream": true,
        "temperature": 0.5,
        "stop_sequences": ["END"],
        "tools": [{"name": "get_weather", "description": "Weather by city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "metadata": {"user_id": "u-42"}
    });
    assert_eq!(forwarded, expected);
    let h = |name| ex.host.request_header_value(name);
    assert_eq!(h("x-tollgate-cluster"), Some("anthropic"));
    assert_eq!(h(":path"), Some("/v1/messages"));
    assert_eq!(h(":authority"), Some("api.anthropic.com"));
    assert_eq!(h("x-api-key"), Some("sk-ant-test"));
    assert_eq!(h("anthropic-version"), Some("2023-06-01"));
    assert_eq!(h("authorization"), None, "the client's key never reaches the provider");
    assert_eq!(h("accept-encoding"), None, "the answer is translated, so it must come uncompressed");
    assert_eq!(h("content-length"), Some(ex.host.request_body.len().to_string().as_str()));
}

#[test]
fn parameters_anthropic_cannot_honour_are_refused_naming_them() {
    for (extra, param) in [
        (json!({"n": 3}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"temperature": 1.5}), "temperature"),
        (json!({"response_format": {"type": "json_object"}}), "response_format"),
    ] {
        let mut request = chat("claude-sonnet", false);
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        let mut driver = driver(&config());
        let (ex, _) = send(&mut driver, "/v1/chat/completions", &request);
        let reply = ex.host.local_reply.clone().unwrap_or_else(|| panic!("{param}: forwarded"));
        assert_eq!(reply.status, 400, "{param}");
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"]["param"], param, "{body}");
    }
    // Defaults change nothing, so they pass.
    let mut request = chat("claude-sonnet", false);
    request["n"] = json!(1);
    request["presence_penalty"] = json!(0);
    let mut driver = driver(&config());
    let (_, action) = send(&mut driver, "/v1/chat/completions", &request);
    assert_eq!(action, Action::Continue);
}

#[test]
fn a_routed_request_without_a_body_is_refused_not_sent_to_the_default_route() {
    for (path, dialect) in [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")] {
        let mut driver = driver(&config());
        let mut ex = Exchange::new(&mut driver);
        let headers =
            [(":method", "POST"), (":path", path), (":authority", "gw"), ("content-type", "application/json")];
        assert_eq!(ex.request_headers(&headers, true), Action::Pause, "{path}");
        let reply = ex.host.local_reply.clone().unwrap_or_else(|| panic!("{path}: forwarded"));
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(reply.status, 400, "{path}");
        match dialect {
            "openai" => assert_eq!(body["error"]["code"], "invalid_json", "{body}"),
            _ => assert_eq!(body["type"], "error", "{body}"),
        }
        assert!(body["error"]["message"].as_str().unwrap().contains("the body is empty"), "{body}");
        assert_eq!(ex.host.request_header_value("x-tollgate-cluster"), None);
    }
}

#[test]
fn names_a_client_chose_are_repeated_short_in_errors() {
    // A role, a parameter name or a model is the client's text: an error (also logged) repeats
    // at most `error::MAX_SHOWN` characters of it, control characters replaced.
    // (Within request::MAX_MODEL_LEN, so the model is read; a longer one is refused as such.)
    let long = format!("x{}\n{}", "a".repeat(100), "z".repeat(20));
    let mut role = chat("claude-sonnet", false);
    role["messages"][0]["role"] = json!(long);
    let mut param = chat("claude-sonnet", false);
    param[long.as_str()] = json!(true);
    let model = chat(&long, false);
    for (request, status, field) in [(role, 400, "messages[0].role"), (param, 400, ""), (model, 404, "model")] {
        let mut driver = driver(&config());
        let (ex, _) = send(&mut driver, "/v1/chat/completions", &request);
        let reply = ex.host.local_reply.clone().unwrap_or_else(|| panic!("{field}: forwarded"));
        assert_eq!(reply.status, status, "{field}: {}", String::from_utf8_lossy(&reply.body));
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("xaaaa") && message.contains('…'), "{message}");
        assert!(!message.contains('\n') && !message.contains("zzz"), "{message}");
        assert!(message.chars().count() < 200, "{message}");
        let param = body["error"]["param"].as_str().unwrap();
        assert!(param.chars().count() <= tollgate_core::error::MAX_SHOWN, "{param}");
        if !field.is_empty() {
            assert_eq!(param, field);
        }
    }
    let mut driver = driver(&config());
    let (ex, _) = send(&mut driver, "/v1/chat/completions", &chat(&"m".repeat(129), false));
    let reply = ex.host.local_reply.clone().expect("refused");
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!((reply.status, &body["error"]["param"]), (400, &json!("model")));
    assert!(body["error"]["message"].as_str().unwrap().contains("a string of 1 to 128 bytes"), "{body}");
}

#[test]
fn anthropic_answers_become_chat_completions_and_usage_is_counted_once() {
    let mut driver = driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &chat("claude-sonnet", false));
    let upstream = fixture("anthropic/messages.json");
    let length = upstream.len().to_string();
    ex.response_headers(
        &[(":status", "200"), ("content-type", "application/json"), ("content-length", &length)],
        false,
    );
    assert_eq!(ex.host.response_header_value("content-length"), None, "the body changes length");
    let (first, second) = upstream.split_at(upstream.len() / 2);
    ex.response_body(&[first, second], 5, true);
    ex.log();
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], "msg_01XFDUDYJgAACzvnptvVoYEL");
    assert_eq!(body["model"], "claude-sonnet-4-20250514");
    assert_eq!(
        body["choices"][0]["message"],
        json!({"role": "assistant", "content": "Hello! How can I help you today?"})
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 21);
    assert_eq!(body["usage"]["completion_tokens"], 12);
    assert_eq!(body["usage"]["total_tokens"], 33);
    // token-counter read the provider's own answer, once; labelled with the real provider.
    assert_eq!(ex.host.counter(TOKENS, &["gen_ai_token_type=input"]), 21);
    assert_eq!(ex.host.counter(TOKENS, &["gen_ai_token_type=output"]), 12);
    assert_eq!(ex.host.counter(TOKENS, &["gen_ai_token_type=output", "gen_ai_provider_name=anthropic"]), 12);
    assert_eq!(ex.host.counter("tollgate.quota.settlements", &["outcome=usage"]), 1, "quota settled with that usage");
}

/// Plays the tool stream with the body cut at `cut` (and the whole body at `None`); returns
/// what the client received.
fn tool_stream(cut: Option<usize>, include_usage: bool) -> (Vec<u8>, tollgate_host::fake::FakeHost) {
    let mut request = chat("claude-sonnet", true);
    if include_usage {
        request["stream_options"] = json!({"include_usage": true});
    }
    let mut driver = driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &request);
    ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream; charset=utf-8")], false);
    let upstream = fixture("anthropic/messages-tool-stream.sse");
    match cut {
        Some(at) => ex.response_body(&[&upstream[..at], &upstream[at..]], 5, true),
        None => ex.response_body(&[&upstream], 5, true),
    }
    ex.log();
    (ex.host.client_body.clone(), ex.host)
}

fn events(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    text.split("\n\n")
        .filter(|e| !e.is_empty() && *e != "data: [DONE]")
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

#[test]
fn anthropic_streams_become_chat_completion_chunks_at_every_byte_boundary() {
    let (whole, host) = tool_stream(None, true);
    let chunks = events(&whole);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(text, "Let me check the weather.");
    let calls: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    assert_eq!(calls[0]["id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let arguments: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"city": "Recife", "unit": "celsius"}));
    let finish: Vec<&Value> =
        chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 472 + 1024);
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 1024);
    assert_eq!(last["usage"]["completion_tokens"], 58);
    assert_eq!(host.counter(TOKENS, &["gen_ai_token_type=output"]), 58, "counted from the provider's events");
    assert_eq!(host.counter(TOKENS, &["gen_ai_token_type=cached_input"]), 1024);

    let (plain, _) = tool_stream(None, false);
    assert!(events(&plain).iter().all(|c| c.get("usage").is_none()), "no usage chunk unless asked for");

    let upstream_len = fixture("anthropic/messages-tool-stream.sse").len();
    for cut in 1..upstream_len {
        let (split, host) = tool_stream(Some(cut), true);
        assert_eq!(split, whole, "cut at {cut}");
        assert_eq!(host.counter(TOKENS, &["gen_ai_token_type=output"]), 58, "cut at {cut}");
    }
}

#[test]
fn a_stream_cut_before_message_stop_ends_with_an_error_event() {
    let mut driver = driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &chat("claude-sonnet", true));
    ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    let upstream = fixture("anthropic/messages-tool-stream.sse");
    ex.response_body(&[&upstream[..upstream.len() / 2]], 5, true);
    let text = String::from_utf8(ex.host.client_body.clone()).unwrap();
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let event: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(event["error"]["code"], "bad_gateway", "{text}");
    assert!(!text.contains("[DONE]"), "a cut stream never looks complete");
}

#[test]
fn provider_errors_become_openai_errors() {
    // 529 overloaded → 503, OpenAI error body.
    let mut driver = driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &chat("claude-sonnet", false));
    ex.response_headers(&[(":status", "529"), ("content-type", "application/json")], false);
    ex.response_body(&[&fixture("anthropic/error-overloaded.json")], 5, true);
    assert_eq!(ex.host.response_header_value(":status"), Some("503"));
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}})
    );

    // 429 keeps retry-after.
    let mut driver = self::driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &chat("claude-sonnet", false));
    ex.response_headers(&[(":status", "429"), ("content-type", "application/json"), ("retry-after", "7")], false);
    let anthropic = json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}});
    ex.response_body(&[anthropic.to_string().as_bytes()], 5, true);
    assert_eq!(ex.host.response_header_value(":status"), Some("429"));
    assert_eq!(ex.host.response_header_value("retry-after"), Some("7"));
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    // A body that is not the provider's error (Envoy's own "no healthy upstream") still becomes
    // an OpenAI error.
    let mut driver = self::driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &chat("claude-sonnet", false));
    ex.response_headers(&[(":status", "503"), ("content-type", "text/plain")], false);
    ex.response_body(&[b"no healthy upstream"], 5, true);
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(ex.host.response_header_value("content-type"), Some("application/json"));
}

#[test]
fn answers_that_cannot_be_translated_are_refused_not_passed_through() {
    let mut driver = driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &chat("claude-sonnet", false));
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    ex.response_body(&[b"{\"not\":\"a message\"}"], 5, true);
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(body["error"]["code"], "bad_gateway");
    assert_eq!(ex.host.counter("tollgate.errors", &["reason=upstream_invalid"]), 1);

    let mut driver = self::driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &chat("claude-sonnet", false));
    ex.response_headers(
        &[(":status", "200"), ("content-type", "application/json"), ("content-encoding", "gzip")],
        false,
    );
    ex.response_body(&[&[0x1f, 0x8b, 0, 1, 2], &[3, 4]], 5, true);
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(body["error"]["code"], "bad_gateway", "compressed bytes never reach an OpenAI client as JSON");
    assert_eq!(ex.host.response_header_value("content-encoding"), None);
}

#[test]
fn configuration_errors_name_the_field() {
    let mut bad = config();
    bad["provider_rewrite"]["models"][0]["backend"] = json!("nowhere");
    let error = compose::parse(bad.to_string().as_bytes()).err().unwrap();
    assert!(error.0.starts_with("provider_rewrite.models[0].backend:"), "{}", error.0);
    let mut bad = config();
    bad["provider_rewrite"]["max_response_bytes"] = json!(10);
    let error = compose::parse(bad.to_string().as_bytes()).err().unwrap();
    assert!(error.0.starts_with("provider_rewrite.max_response_bytes:"), "{}", error.0);
    let mut bad = config();
    bad["provider_rewrite"]["backendz"] = json!({});
    let error = compose::parse(bad.to_string().as_bytes()).err().unwrap();
    assert!(error.0.contains("backendz"), "{}", error.0);
}

#[test]
fn azure_deployments_and_openai_compatible_servers() {
    let mut driver = driver(&config());
    let request = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    let (ex, action) = send(&mut driver, "/v1/chat/completions", &request);
    assert_eq!(action, Action::Continue);
    let h = |name| ex.host.request_header_value(name);
    assert_eq!(h(":path"), Some("/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"));
    assert_eq!(h(":authority"), Some("contoso.openai.azure.com"));
    assert_eq!(h("api-key"), Some("azure-key"));
    assert_eq!(h("authorization"), None);
    assert_eq!(h("x-tollgate-cluster"), Some("azure"));
    let forwarded: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
    assert_eq!(forwarded["model"], "gpt-4o-prod");
    assert_eq!(forwarded["stream_options"]["include_usage"], true, "token-counter still asks Azure for usage");

    // A pattern passes the requested name through, so a name that would change the path is
    // refused, never built into one.
    let mut driver = self::driver(&config());
    let (ex, _) = send(&mut driver, "/v1/chat/completions", &chat("azure-x/../../admin", false));
    assert_eq!(ex.host.local_reply.clone().unwrap().status, 400);

    let mut driver = self::driver(&config());
    let (ex, _) = send(&mut driver, "/v1/embeddings", &json!({"model": "llama-3.1-8b", "input": "hi"}));
    let h = |name| ex.host.request_header_value(name);
    assert_eq!(h(":path"), Some("/api/v1/embeddings"));
    assert_eq!(h("authorization"), None, "no key configured: none sent, and never the client's");
    let forwarded: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
    assert_eq!(forwarded["model"], "meta-llama/Llama-3.1-8B-Instruct");
}

fn split_config(variant_header: bool) -> Value {
    let mut c = config();
    let table = c["provider_rewrite"].as_object_mut().unwrap();
    table.insert("sticky_header".into(), json!("x-tollgate-consumer"));
    if variant_header {
        table.insert("variant_header".into(), json!("x-tollgate-variant"));
    }
    table["models"].as_array_mut().unwrap().push(json!({"name": "chat", "split": [
        {"variant": "stable", "backend": "openai", "model": "gpt-4o-mini", "weight": 1},
        {"variant": "canary", "backend": "claude", "model": "claude-sonnet-4-20250514", "weight": 1}
    ]}));
    c
}

#[test]
fn split_variants_are_sticky_per_consumer_and_forceable_only_when_configured() {
    let variant = |config: &Value, extra: &[(&str, &str)]| {
        let mut driver = driver(config);
        let (ex, action) = send_with(&mut driver, "/v1/chat/completions", &chat("chat", false), extra);
        assert_eq!(action, Action::Continue);
        let variant = ex.host.filter_state.get("tollgate.variant").cloned().unwrap();
        let backend = ex.host.filter_state.get("tollgate.backend").cloned().unwrap();
        let cluster = ex.host.request_header_value("x-tollgate-cluster").unwrap().to_string();
        assert_eq!(ex.host.counter("tollgate.provider.requests", &[&format!("variant={variant}")]), 1);
        (variant, backend, cluster)
    };
    let config = split_config(true);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let consumer = format!("team-{i}");
        let first = variant(&config, &[("x-tollgate-consumer", &consumer), ("x-request-id", "a")]);
        let again = variant(&config, &[("x-tollgate-consumer", &consumer), ("x-request-id", "b")]);
        assert_eq!(first, again, "a consumer stays on its variant");
        assert_eq!(
            (first.1.as_str(), first.2.as_str()),
            if first.0 == "stable" { ("openai", "openai") } else { ("claude", "anthropic") }
        );
        seen.insert(first.0);
    }
    assert_eq!(seen.len(), 2, "both variants get consumers at 1:1");
    let forced = variant(&config, &[("x-tollgate-consumer", "team-1"), ("x-tollgate-variant", "canary")]);
    assert_eq!(forced.0, "canary");
    // Without variant_header configured, the header is just a header.
    let config = split_config(false);
    let natural = variant(&config, &[("x-tollgate-consumer", "team-7")]);
    let other = if natural.0 == "stable" { "canary" } else { "stable" };
    assert_eq!(variant(&config, &[("x-tollgate-consumer", "team-7"), ("x-tollgate-variant", other)]).0, natural.0);
}

#[test]
fn openai_requests_become_gemini_requests() {
    let request = json!({
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Recife?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_0~ts~c2lnbmF0dXJl", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Recife\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_0~ts~c2lnbmF0dXJl", "content": "{\"temp\": 31}"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "max_tokens": 200, "temperature": 0.2, "stop": "END", "n": 2,
        "stream": true
    });
    let mut driver = driver(&config());
    let (ex, action) = send(&mut driver, "/v1/chat/completions", &request);
    assert_eq!(action, Action::Continue);
    let forwarded: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
    assert_eq!(
        forwarded,
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Recife?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Recife"}}, "thoughtSignature": "c2lnbmF0dXJl"}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 31}}}]}
            ],
            "systemInstruction": {"parts": [{"text": "You are terse."}]},
            "tools": [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {"type": "object"}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {"maxOutputTokens": 200, "temperature": 0.2, "stopSequences": ["END"], "candidateCount": 2,
                                 "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}}
        }),
        "{forwarded:#}"
    );
    let h = |name| ex.host.request_header_value(name);
    assert_eq!(h(":path"), Some("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"));
    assert_eq!(h("x-goog-api-key"), Some("goog-key"));
    assert_eq!(h("authorization"), None);

    let mut driver = self::driver(&config());
    let (ex, _) = send(&mut driver, "/v1/chat/completions", &chat("vertex-flash", false));
    let h = |name| ex.host.request_header_value(name);
    assert_eq!(
        h(":path"),
        Some("/v1/projects/demo/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent")
    );
    assert_eq!(h("authorization"), Some("Bearer ya29.token"));
    assert_eq!(h("x-goog-api-key"), None);
}

#[test]
fn gemini_answers_and_errors_become_openai_ones() {
    let mut driver = driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &chat("gemini-2.5-pro", false));
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    ex.response_body(&[&fixture("gemini/thinking.json")], 5, true);
    ex.log();
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(body["choices"][0]["message"], json!({"role": "assistant", "content": "Yes: 97 is prime."}));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["model"], "gemini-2.5-pro");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 44, "completion_tokens": 150, "total_tokens": 194,
        "prompt_tokens_details": {"cached_tokens": 32}, "completion_tokens_details": {"reasoning_tokens": 120}})
    );
    assert_eq!(ex.host.counter(TOKENS, &["gen_ai_token_type=reasoning", "gen_ai_provider_name=gemini"]), 120);

    let mut driver = self::driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &chat("gemini-2.5-pro", false));
    ex.response_headers(&[(":status", "400"), ("content-type", "application/json")], false);
    ex.response_body(&[&fixture("gemini/error-400.json")], 5, true);
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
}

fn gemini_stream(path: &str, request: &Value, cut: Option<usize>) -> Vec<u8> {
    let mut driver = driver(&config());
    let (mut ex, _) = send(&mut driver, path, request);
    ex.response_headers(&[(":status", "200"), ("content-type", "text/event-stream")], false);
    let upstream = fixture("gemini/function-call-stream.sse");
    match cut {
        Some(at) => ex.response_body(&[&upstream[..at], &upstream[at..]], 5, true),
        None => ex.response_body(&[&upstream], 5, true),
    }
    ex.log();
    assert_eq!(ex.host.counter(TOKENS, &["gen_ai_token_type=output"]), 70, "counted once, from Gemini's usage");
    ex.host.client_body.clone()
}

#[test]
fn gemini_streams_become_openai_and_anthropic_streams_at_every_byte_boundary() {
    let mut openai_request = chat("gemini-2.5-flash", true);
    openai_request["stream_options"] = json!({"include_usage": true});
    let whole = gemini_stream("/v1/chat/completions", &openai_request, None);
    let chunks = events(&whole);
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Let me check the weather.");
    let calls: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["id"], "call_0~ts~CiQBVKhc7hJ3wqv0kQ0iT9bUW8zZ1g==", "the thought signature rides in the id");
    assert_eq!(
        serde_json::from_str::<Value>(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Recife", "unit": "celsius"})
    );
    let finish: Vec<&Value> =
        chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 70);

    let anthropic_request = json!({"model": "gemini-2.5-flash", "max_tokens": 100, "stream": true,
                                   "messages": [{"role": "user", "content": "Weather in Recife?"}]});
    let anthropic_whole = gemini_stream("/v1/messages", &anthropic_request, None);
    let events = anthropic_events(&anthropic_whole);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[4].1["content_block"]["name"], "get_weather");
    assert_eq!(events[7].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[7].1["usage"]["output_tokens"], 70);

    let len = fixture("gemini/function-call-stream.sse").len();
    for cut in 1..len {
        assert_eq!(gemini_stream("/v1/chat/completions", &openai_request, Some(cut)), whole, "cut at {cut}");
        assert_eq!(gemini_stream("/v1/messages", &anthropic_request, Some(cut)), anthropic_whole, "cut at {cut}");
    }
}

fn bedrock_events(file: &str) -> Vec<u8> {
    tollgate_host::fake::eventstream_fixture(&fixture(file))
}

#[test]
fn openai_requests_become_signed_bedrock_converse_calls() {
    let request = json!({
        "model": "haiku", "stream": true, "max_tokens": 100, "temperature": 0.5, "stop": ["END"],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Recife\"}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "31C"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": "required"
    });
    let mut driver = driver(&config());
    let body = serde_json::to_vec(&request).unwrap();
    let length = body.len().to_string();
    let mut ex = Exchange::new(&mut driver);
    ex.host.now_ns = 1_440_938_160 * 1_000_000_000;
    ex.request_headers(
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "gw"),
            ("content-type", "application/json"),
            ("content-length", &length),
        ],
        false,
    );
    assert_eq!(ex.request_body(&[&body]), Action::Continue);
    let forwarded: Value = serde_json::from_slice(&ex.host.request_body).unwrap();
    assert_eq!(
        forwarded,
        json!({
            "messages": [
                {"role": "user", "content": [{"text": "Weather?"}]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Recife"}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "31C"}]}}]}
            ],
            "system": [{"text": "Be brief."}],
            "inferenceConfig": {"maxTokens": 100, "temperature": 0.5, "stopSequences": ["END"]},
            "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}],
                           "toolChoice": {"any": {}}}
        })
    );
    let h = |name| ex.host.request_header_value(name);
    assert_eq!(h(":path"), Some("/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream"));
    assert_eq!(h(":authority"), Some("bedrock-runtime.us-east-1.amazonaws.com"));
    assert_eq!(h("x-amz-date"), Some("20150830T123600Z"), "signed with the request's own clock");
    let authorization = h("authorization").unwrap();
    assert!(
        authorization.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDTEST/20150830/us-east-1/bedrock/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date, Signature="
        ),
        "{authorization}"
    );

    // A pattern passes names through; `/` is encoded into the one path segment, so a name cannot
    // walk the path.
    let mut driver = self::driver(&config());
    let (ex, _) = send(&mut driver, "/v1/chat/completions", &chat("us.x/../../admin", false));
    assert_eq!(ex.host.request_header_value(":path"), Some("/model/us.x%2F..%2F..%2Fadmin/converse"));
}

fn bedrock_stream(path: &str, request: &Value, cut: Option<usize>) -> (Vec<u8>, tollgate_host::fake::FakeHost) {
    let mut driver = driver(&config());
    let (mut ex, _) = send(&mut driver, path, request);
    ex.response_headers(&[(":status", "200"), ("content-type", "application/vnd.amazon.eventstream")], false);
    assert_eq!(ex.host.response_header_value("content-type"), Some("text/event-stream"));
    let upstream = bedrock_events("bedrock/converse-stream.events.json");
    match cut {
        Some(at) => ex.response_body(&[&upstream[..at], &upstream[at..]], 5, true),
        None => ex.response_body(&[&upstream], 5, true),
    }
    ex.log();
    (ex.host.client_body.clone(), ex.host)
}

#[test]
fn bedrock_event_streams_become_sse_at_every_byte_boundary() {
    let mut openai_request = chat("haiku", true);
    openai_request["stream_options"] = json!({"include_usage": true});
    let (whole, host) = bedrock_stream("/v1/chat/completions", &openai_request, None);
    let chunks = events(&whole);
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello! How can I help you today?");
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 51);
    assert_eq!(host.counter(TOKENS, &["gen_ai_token_type=output", "gen_ai_provider_name=bedrock"]), 31);

    let anthropic_request = json!({"model": "haiku", "max_tokens": 100, "stream": true,
                                   "messages": [{"role": "user", "content": "Hi"}]});
    let (anthropic_whole, _) = bedrock_stream("/v1/messages", &anthropic_request, None);
    let names: Vec<String> = anthropic_events(&anthropic_whole).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));

    let len = bedrock_events("bedrock/converse-stream.events.json").len();
    for cut in 1..len {
        assert_eq!(bedrock_stream("/v1/chat/completions", &openai_request, Some(cut)).0, whole, "cut at {cut}");
        assert_eq!(bedrock_stream("/v1/messages", &anthropic_request, Some(cut)).0, anthropic_whole, "cut at {cut}");
    }
    // A corrupted frame (CRC) ends the stream with one error event, never garbage.
    let mut driver = driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &openai_request);
    ex.response_headers(&[(":status", "200"), ("content-type", "application/vnd.amazon.eventstream")], false);
    let mut upstream = bedrock_events("bedrock/converse-stream.events.json");
    let middle = upstream.len() / 2;
    upstream[middle] ^= 0xff;
    ex.response_body(&[&upstream], 5, true);
    let text = String::from_utf8(ex.host.client_body.clone()).unwrap();
    assert!(text.trim_end().ends_with("}") && text.contains("bad_gateway") && !text.contains("[DONE]"), "{text}");
}

#[test]
fn bedrock_answers_and_errors_become_openai_ones() {
    let mut driver = driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &chat("haiku", false));
    ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
    ex.response_body(&[&fixture("bedrock/converse-cache.json")], 5, true);
    ex.log();
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 12 + 500 + 7, "cache reads and writes are prompt tokens");
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 500);

    let mut driver = self::driver(&config());
    let (mut ex, _) = send(&mut driver, "/v1/chat/completions", &chat("haiku", false));
    ex.response_headers(
        &[
            (":status", "400"),
            ("content-type", "application/json"),
            ("x-amzn-errortype", "ValidationException:http://internal.amazon.com/"),
        ],
        false,
    );
    ex.response_body(&[&fixture("bedrock/error-validation.json")], 5, true);
    let body: Value = serde_json::from_slice(&ex.host.client_body).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
}

/// Hostile input through the whole pipeline never panics: random bodies (mutations of real
/// requests) to every backend kind, random answer bytes with every status and content type.
#[test]
fn hostile_requests_and_answers_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let models =
        ["gpt-4o-mini", "claude-sonnet", "gpt-4o", "gemini-2.5-flash", "haiku", "vertex-flash", "llama-3.1-8b"];
    let content_types = ["application/json", "text/event-stream", "application/vnd.amazon.eventstream", "text/plain"];
    for i in 0..600 {
        let model = models[(next() % models.len() as u64) as usize];
        let (path, mut body) = if i % 2 == 0 {
            ("/v1/chat/completions", serde_json::to_vec(&chat(model, i % 4 == 0)).unwrap())
        } else {
            let request = json!({"model": model, "max_tokens": 5, "stream": i % 3 == 0,
                                 "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]});
            ("/v1/messages", serde_json::to_vec(&request).unwrap())
        };
        for _ in 0..(next() % 4) {
            let at = (next() % body.len() as u64) as usize;
            body[at] = (next() % 256) as u8;
        }
        let length = body.len().to_string();
        let mut driver = driver(&config());
        let mut ex = Exchange::new(&mut driver);
        ex.request_headers(
            &[
                (":method", "POST"),
                (":path", path),
                (":authority", "gw"),
                ("content-type", "application/json"),
                ("content-length", &length),
            ],
            false,
        );
        ex.request_body(&[&body]);
        if ex.host.local_reply.is_some() {
            continue; // refused: in the client's dialect (checked elsewhere)
        }
        let status = ["200", "400", "429", "500", "529"][(next() % 5) as usize];
        let content_type = content_types[(next() % 4) as usize];
        ex.response_headers(&[(":status", status), ("content-type", content_type)], false);
        let answer: Vec<u8> = (0..(next() % 600)).map(|_| (next() % 256) as u8).collect();
        let cut = if answer.is_empty() { 0 } else { (next() % answer.len() as u64) as usize };
        ex.response_body(&[&answer[..cut], &answer[cut..]], 1, true);
        ex.log();
    }
}

fn access_config(mode: &str) -> Value {
    let mut c = config();
    c["provider_rewrite"]["access"] = json!({
        "mode": mode,
        "consumer": {"identity_header": "x-client", "downstream_address": false},
        "consumers": {"team-a": "basic"},
        "tiers": {"basic": {"allow": ["gpt-4o-mini", "fast"], "providers": ["openai"],
                            "credentials": {"openai": {"value": "sk-team-a-own"}}}}
    });
    c
}

#[test]
fn access_policy_refuses_in_the_clients_dialect_and_shadow_only_counts() {
    let mut driver = driver(&access_config("enforce"));
    let (ex, action) = send_with(&mut driver, "/v1/chat/completions", &chat("fast", false), &[("x-client", "team-a")]);
    assert_eq!(action, Action::Continue, "an alias of an allowed model");
    assert_eq!(ex.host.counter("tollgate.access.decisions", &["tier=basic", "outcome=allowed"]), 1);
    assert_eq!(ex.host.request_header_value("authorization"), Some("Bearer sk-team-a-own"), "the team's own key");

    let mut driver = self::driver(&access_config("enforce"));
    let request = json!({"model": "claude-sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]});
    let (ex, _) = send_with(&mut driver, "/v1/messages", &request, &[("x-client", "team-a")]);
    let reply = ex.host.local_reply.clone().unwrap();
    assert_eq!(reply.status, 403);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("claude-sonnet"));

    // No identity, no tier: nothing is allowed.
    let mut driver = self::driver(&access_config("enforce"));
    let (ex, _) = send(&mut driver, "/v1/chat/completions", &chat("gpt-4o-mini", false));
    assert_eq!(ex.host.local_reply.clone().unwrap().status, 403);

    // Shadow: decided and counted, never refused.
    let mut driver = self::driver(&access_config("shadow"));
    let (ex, action) =
        send_with(&mut driver, "/v1/chat/completions", &chat("claude-sonnet", false), &[("x-client", "team-a")]);
    assert_eq!(action, Action::Continue);
    assert!(ex.host.local_reply.is_none());
    assert_eq!(ex.host.counter("tollgate.access.decisions", &["tier=basic", "outcome=shadow_denied"]), 1);

    // The model list is the caller's.
    let mut driver = self::driver(&access_config("enforce"));
    let mut ex = Exchange::new(&mut driver);
    ex.request_headers(
        &[(":method", "GET"), (":path", "/v1/models"), (":authority", "gw"), ("x-client", "team-a")],
        true,
    );
    let body: Value = serde_json::from_slice(&ex.host.local_reply.clone().unwrap().body).unwrap();
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fast", "gpt-4o-mini"]);
    // And so is one model: one it may not use is not there.
    assert_eq!(get(&mut driver, "/v1/models/fast", &[("x-client", "team-a")]).0, 200);
    let (status, error) = get(&mut driver, "/v1/models/claude-sonnet", &[("x-client", "team-a")]);
    assert_eq!((status, &error["error"]["code"]), (404, &json!("model_not_found")));
}

#[test]
fn quota_limits_by_the_access_tier() {
    let mut c = access_config("enforce");
    c["quota"] = json!({
        "consumer": {"header": "x-client", "salt": "s"},
        "limits": [{"name": "tpm", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 100000}],
        "tiers": {"basic": {"tpm": 2000}}
    });
    let limit = |headers: &[(&str, &str)]| {
        let mut driver = driver(&c);
        let mut request = chat("gpt-4o-mini", false);
        request["max_tokens"] = json!(100); // the reservation fits the basic tier's 2000
        let (mut ex, action) = send_with(&mut driver, "/v1/chat/completions", &request, headers);
        assert_eq!(action, Action::Continue, "{:?}", ex.host.local_reply);
        ex.response_headers(&[(":status", "200"), ("content-type", "application/json")], false);
        ex.host.response_header_value("x-ratelimit-limit-tokens").map(str::to_string)
    };
    assert_eq!(limit(&[("x-client", "team-a")]).as_deref(), Some("2000"), "team-a's access tier is basic");
}
