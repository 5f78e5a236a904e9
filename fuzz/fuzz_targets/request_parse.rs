//! The one request parse, for every API kind.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_core::route::ApiKind;

fuzz_target!(|data: &[u8]| {
    // A transcription's form, whole and as a first piece.
    let _ = tollgate_core::request::parse_form_prefix("b", data, true);
    let _ = tollgate_core::request::parse_form_prefix("b", data.get(..data.len() / 2).unwrap_or_default(), false);
    for kind in ApiKind::ALL {
        let parsed = tollgate_core::request::parse(kind, data);
        if parsed.is_err() && serde_json::from_slice::<serde_json::Value>(data).is_ok() {
            // JSON that is not the API's request is always explained (a 400 naming the field).
            assert!(tollgate_core::request::explain(kind, data).is_some(), "valid JSON refused is explained");
        }
        if let Ok(parsed) = parsed {
            let _ = parsed.info.estimated_prompt_tokens();
            // A body that is valid JSON stays valid JSON once spliced. (The parse skips ignored
            // strings without validating their UTF-8, so invalid bodies can parse; they are
            // forwarded as sent and refused by the provider, or by guardrails' strict re-read.)
            let valid = serde_json::from_slice::<serde_json::Value>(data).is_ok();
            if let (Some(splice), true) = (parsed.include_usage_splice, valid) {
                let mut splices = [splice];
                let out = tollgate_core::request::apply_splices(data, &mut splices);
                assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok(), "a splice keeps the body JSON");
            }
        }
    }
});
