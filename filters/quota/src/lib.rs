//! The quota filter: the quota stage, after the token-counter stage it settles with (usage is
//! read once, by token-counter, and handed over in the pipeline). Its configuration is the quota
//! object (`filters/quota/README.md`); token counting runs with its defaults. To configure both,
//! or to add other stages, use the all-in-one `tollgate.wasm`. Do not also load
//! `tollgate_token_counter.wasm` in the same chain: tokens would be counted twice.

use tollgate_core::stage::quota::{self, Quota};
use tollgate_core::stage::token_counter::{Config as CounterConfig, TokenCounter};
use tollgate_host::Spec;

pub fn spec(config: &[u8]) -> Result<Spec, String> {
    let quota = quota::parse(config, "")?;
    // Counting holds the request headers as quota does (`hold_request_headers`).
    let counter = if quota.hold_request_headers { &b"{}"[..] } else { &br#"{"hold_request_headers":false}"#[..] };
    let counter = CounterConfig::parse(counter, "token_counter.").map_err(|e| e.to_string())?;
    Ok(Spec {
        route_header: None,
        max_request_bytes: counter.max_request_bytes(),
        stages: vec![Box::new(TokenCounter::new(counter)), Box::new(Quota::new(quota))],
    })
}

#[cfg(target_arch = "wasm32")]
tollgate_host::filter!("quota", spec);
