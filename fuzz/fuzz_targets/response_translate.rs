//! Answer translations: Anthropic, Gemini and Bedrock answers → OpenAI; OpenAI → Anthropic; and
//! every provider error body → the other dialect. Any bytes and status: no panic, and what comes
//! out serialises and re-parses to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_core::api::anthropic::MessagesResponse;
use tollgate_core::api::openai::ChatCompletionResponse;
use tollgate_core::convert::{anthropic, bedrock, gemini, openai};

#[path = "shared/roundtrip.rs"]
mod roundtrip;
use roundtrip::reparses;

fuzz_target!(|data: &[u8]| {
    let status = 400 + u16::from(data.first().copied().unwrap_or(0)) % 200;
    if let Ok(response) = serde_json::from_slice::<MessagesResponse>(data) {
        reparses(&anthropic::response_to_openai(&response, 1));
    }
    if let Ok(response) = serde_json::from_slice::<ChatCompletionResponse>(data) {
        reparses(&openai::response_to_anthropic(&response));
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        if let Some(out) = gemini::response_to_openai(&value, "m", 1) {
            reparses(&out);
        }
        if let Some(out) = bedrock::response_to_openai(&value, "m", 1) {
            reparses(&out);
        }
    }
    if let Some((_, out)) = anthropic::error_to_openai(status, data) {
        reparses(&out);
    }
    if let Some(out) = gemini::error_to_openai(status, data) {
        reparses(&out);
    }
    reparses(&bedrock::error_to_openai(status, data));
    reparses(&openai::error_to_anthropic(status, data));
});
