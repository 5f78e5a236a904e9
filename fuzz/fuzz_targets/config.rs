//! Configuration parsing (all-in-one, guardrails alone): an error naming a field, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = tollgate_core::stage::compose::parse(data) {
        assert!(!e.0.is_empty());
    }
    if let Err(e) = tollgate_core::guard::policy::Policy::from_json(data, "guardrails.") {
        assert!(!e.is_empty());
    }
});
