//! OpenAI chat request → Anthropic, Gemini, Bedrock; Anthropic request → OpenAI: whatever the
//! JSON, an error or a request that serialises.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::api::openai::ChatCompletionRequest;
use tollgate_core::convert::{bedrock, gemini};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<ChatCompletionRequest>(data) else { return };
    if let Ok(value) = gemini::request_from_openai(&request) {
        assert!(serde_json::to_vec(&value).is_ok());
    }
    if let Ok(value) = bedrock::request_from_openai(&request) {
        assert!(serde_json::to_vec(&value).is_ok());
    }
});
