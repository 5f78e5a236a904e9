//! The streaming guard over any bytes, in every stream grammar (chat chunks, Anthropic's events,
//! Responses' events, Gemini's, Bedrock's event-stream frames), at a fuzzer-chosen cut.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tollgate_core::error::Dialect;
use tollgate_core::guard::policy::Policy;
use tollgate_core::guard::stream::{StreamGuard, Tally};

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        Policy::from_json(
            br#"{"entities":{"default":"mask","CREDIT_CARD":"block"},"response":{"restore":true,"holdback_chars":16}}"#,
            "",
        )
        .expect("policy")
    })
}

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| *b as usize) % (data.len() + 1);
    for format in 0..6 {
        let policy = policy();
        let mut masker = policy.masker();
        let mut guard = match format {
            0 => StreamGuard::new(Dialect::OpenAi, 16),
            1 => StreamGuard::new(Dialect::Anthropic, 16),
            2 => StreamGuard::gemini(16),
            3 => StreamGuard::bedrock(16),
            4 => StreamGuard::bedrock_invoke_claude(16),
            _ => StreamGuard::responses(16),
        };
        let mut out = Vec::new();
        let mut tally = Tally::new();
        let _ = guard.push(&data[..cut], policy, &mut masker, &mut tally, &mut out);
        let _ = guard.push(&data[cut..], policy, &mut masker, &mut tally, &mut out);
        let _ = guard.finish(policy, &mut masker, &mut tally, &mut out);
    }
});
