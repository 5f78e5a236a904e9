//! Request translations, both ways: OpenAI chat → Anthropic, Gemini, Bedrock; Anthropic Messages
//! → OpenAI. Whatever the JSON: an error, or a request that serialises and re-parses to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::api::anthropic::MessagesRequest;
use tollgate_core::api::openai::ChatCompletionRequest;
use tollgate_core::convert::{anthropic, bedrock, gemini, openai};

#[path = "shared/roundtrip.rs"]
mod roundtrip;
use roundtrip::reparses;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<ChatCompletionRequest>(data) {
        if let Ok(value) = gemini::request_from_openai(&request) {
            reparses(&value);
        }
        if let Ok(value) = bedrock::request_from_openai(&request) {
            reparses(&value);
        }
        if let Ok(messages) = anthropic::request_from_openai(&request, "claude", 1024) {
            let bytes = serde_json::to_vec(&messages).expect("serialises");
            let again: MessagesRequest = serde_json::from_slice(&bytes).expect("re-parses as a Messages request");
            assert_eq!(again, messages, "round trip");
        }
    }
    if let Ok(request) = serde_json::from_slice::<MessagesRequest>(data) {
        for field in [openai::MaxTokensField::MaxTokens, openai::MaxTokensField::MaxCompletionTokens] {
            if let Ok(value) = openai::request_from_anthropic(&request, "gpt", field) {
                reparses(&value);
                assert!(serde_json::from_value::<ChatCompletionRequest>(value).is_ok(), "an OpenAI chat request");
            }
        }
    }
});
