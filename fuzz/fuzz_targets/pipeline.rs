//! The all-in-one pipeline over the fake host, end to end: a fuzzer-chosen request body and
//! answer (cut in two), API path, answer status and content type, through four
//! configurations — counting + guardrails + a small quota that refuses and cuts streams off;
//! counting + provider rewrite to Anthropic; counting alone, observing only; a global quota
//! (`check_report`) whose rate-limit service answers with fuzzer bytes (the answer's first
//! part) or a gRPC error. No panic in any stage; and the observing configuration forwards the
//! request and hands the client the answer byte for byte, never pausing it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_host::fake::FakeHost;
use tollgate_host::{Action, Driver, Spec};

const CONFIGS: [&str; 4] = [
    r#"{"token_counter":{},"guardrails":{"entities":{"default":"mask"},"injection":{"action":"block"}},
        "quota":{"consumer":{"header":["authorization","x-api-key"],"salt":"fuzz"},"stream_cut_off":true,"default_max_output_tokens":8,
                 "limits":[{"name":"tpm","meter":"total_tokens","per":"consumer","window":"minute","limit":60},
                           {"name":"rpm","meter":"requests","per":"consumer","window":"minute","limit":1000000}]}}"#,
    r#"{"token_counter":{},"provider_rewrite":{"backends":{"claude":{"kind":"anthropic","cluster":"anthropic",
        "api_key":{"value":"fuzz"}}},"models":[{"name":"*","backend":"claude"}]}}"#,
    r#"{"token_counter":{"inject_include_usage":false}}"#,
    r#"{"token_counter":{},"quota":{"consumer":{"header":"authorization","salt":"fuzz"},
        "global":{"backend":"check_report","cluster":"rls","domain":"tollgate"},
        "limits":[{"name":"tpm","meter":"total_tokens","per":"consumer","window":"minute","limit":1000},
                  {"name":"rpm","meter":"requests","per":"consumer","window":"minute","limit":100}]}}"#,
];
const OBSERVING: usize = 2;
const GLOBAL: usize = 3;
const PATHS: [&str; 26] = [
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/responses",
    "/v1/completions",
    "/v1/embeddings",
    "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
    "/model/anthropic.claude-3-haiku/converse-stream",
    "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
    "/v1/messages/count_tokens",
    "/v1/messages/batches",
    "/v1beta/models/gemini-2.5-flash:countTokens",
    "/v1beta/models/gemini-embedding-001:batchEmbedContents",
    "/v1beta/models/gemini-2.5-flash:batchGenerateContent",
    "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke",
    "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict",
    "/v1/responses/input_tokens",
    "/v1beta1/projects/demo/locations/us-central1/publishers/google/models/text-embedding-005:predict",
    "/v1beta1/publishers/google/models/gemini-embedding-001:embedContent",
    "/v1/images/generations",
    "/v1/projects/demo/locations/us-central1/publishers/google/models/imagen-4.0-generate-001:predict",
    "/v1/responses/compact",
    "/v1/conversations",
    "/v1beta/cachedContents",
    "/v1/audio/transcriptions",
    "/v1/images/edits",
    "/v1/audio/speech",
];
const CONTENT_TYPES: [&str; 4] =
    ["application/json", "text/event-stream", "application/vnd.amazon.eventstream", "text/plain"];
const STATUSES: [&str; 4] = ["200", "400", "429", "500"];

thread_local! {
    // Each configuration exactly as the all-in-one module parses it.
    static SPECS: Vec<Spec> = CONFIGS.iter().map(|config| tollgate::spec(config.as_bytes()).unwrap()).collect();
}

// Input: selector (bits 0–2 path, with bit 7 of the configuration byte; 3–4 content type, 5–6
// status, 7 the rate-limit service's gRPC status), configuration, cut, request length (u16 LE),
// then the request body and the answer.
fuzz_target!(|data: &[u8]| {
    let [select, config, cut, lo, hi, rest @ ..] = data else { return };
    let path = PATHS[(*select as usize & 7 | (*config as usize >> 6) << 3) % PATHS.len()];
    let config = *config as usize % CONFIGS.len();
    let length = (u16::from_le_bytes([*lo, *hi]) as usize).min(rest.len());
    let (request, answer) = rest.split_at(length);
    let cut = *cut as usize * answer.len() / 255;
    let content_type = CONTENT_TYPES[(*select as usize >> 3) % 4];
    let status = STATUSES[(*select as usize >> 5) % 4];
    let form = path.contains("/audio/") || path.ends_with("/edits");
    SPECS.with(|specs| {
        let mut driver = Driver::new(specs[config].pipeline());
        let mut host = FakeHost::new();
        let length_header = request.len().to_string();
        host.request_headers = [
            (":method", "POST"),
            (":path", path),
            (":authority", "api.openai.com"),
            ("content-type", if form { "multipart/form-data; boundary=b" } else { "application/json" }),
            ("content-length", length_header.as_str()),
            ("authorization", "Bearer sk-fuzz"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        host.request_headers_editable = true;
        let action = driver.on_request_headers(&mut host, request.is_empty());
        host.request_headers_editable = action == Action::Pause;
        if form && request.len() > 1 {
            // A form in two pieces: its head may be read from the first.
            let (head, tail) = request.split_at(request.len() / 2);
            host.request_body = head.to_vec();
            let mut forwarded = Vec::new();
            if driver.on_request_body(&mut host, head.len(), false) == Action::Continue {
                forwarded = std::mem::take(&mut host.request_body);
            }
            host.request_body.extend_from_slice(tail);
            let size = host.request_body.len();
            driver.on_request_body(&mut host, size, true);
            forwarded.extend_from_slice(&host.request_body);
            host.request_body = forwarded;
        } else if !request.is_empty() {
            host.request_body = request.to_vec();
            driver.on_request_body(&mut host, request.len(), true);
        }
        if config == OBSERVING {
            assert_eq!(host.request_body, request, "an observer forwards the request unchanged");
        }
        if config == GLOBAL {
            let pending: Vec<u32> = host.grpc_calls.iter().filter(|(_, c)| !c.detached).map(|(t, _)| *t).collect();
            let (message, grpc_status) = (&answer[..cut], if *select & 0x80 == 0 { 0 } else { 14 });
            for token in pending {
                host.grpc_answer = message.to_vec();
                driver.on_grpc_response(&mut host, token, grpc_status, message.len());
            }
        }
        if host.local_reply.is_none() {
            host.response_headers = vec![(":status".into(), status.into()), ("content-type".into(), content_type.into())];
            host.response_started = true;
            driver.on_response_headers(&mut host, answer.is_empty());
            let (first, second) = answer.split_at(cut);
            for (part, end) in [(first, false), (second, true)] {
                host.response_chunk = part.to_vec();
                let action = driver.on_response_body(&mut host, part.len(), end);
                if config == OBSERVING {
                    assert_eq!(action, Action::Continue, "an observer never pauses the answer");
                }
                let sent = std::mem::take(&mut host.response_chunk);
                host.client_body.extend_from_slice(&sent);
            }
            if config == OBSERVING {
                assert!(host.client_body == answer, "an observer hands the client the answer unchanged");
            }
        }
        driver.on_log(&mut host);
    });
});
