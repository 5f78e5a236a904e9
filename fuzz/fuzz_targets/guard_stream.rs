//! The streaming guard over any bytes, in every stream grammar (`StreamGuard::of_grammar`: chat
//! chunks, Anthropic's, Gemini's, Bedrock's frames, InvokeModel chunks, Responses'), at a fuzzer-chosen cut.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
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
    for grammar in 0..StreamGuard::GRAMMARS {
        let policy = policy();
        let mut masker = policy.masker();
        let mut guard = StreamGuard::of_grammar(grammar, 16);
        let mut out = Vec::new();
        let mut tally = Tally::new();
        let _ = guard.push(&data[..cut], policy, &mut masker, &mut tally, &mut out);
        let _ = guard.push(&data[cut..], policy, &mut masker, &mut tally, &mut out);
        let _ = guard.finish(policy, &mut masker, &mut tally, &mut out);
    }
});
