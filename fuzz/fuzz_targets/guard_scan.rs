//! Guardrails over any text: findings on character boundaries, masking and restore never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tollgate_core::guard::policy::Policy;

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        Policy::from_json(
            r#"{"entities":{"default":"mask","CREDIT_CARD":"block"},"injection":{"action":"block"},
                "keywords":[{"id":"k","action":"redact","terms":["ação","secreto"]}],
                "patterns":[{"id":"p","action":"hash","regex":"EMP-[0-9]+"}],"hash_salt":"salt-salt"}"#
                .as_bytes(),
            "",
        )
        .expect("policy")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let policy = policy();
    let mut findings = Vec::new();
    policy.scan(&text, &mut findings);
    for f in &findings {
        assert!(f.start < f.end && f.end <= text.len());
        assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
    }
    let mut masker = policy.masker();
    if let Some(masked) = masker.apply(&text, &findings) {
        masker.freeze();
        let _ = masker.restore(&masked);
        let _ = masker.safe_cut(&masked, masked.len() / 2);
    }
});
