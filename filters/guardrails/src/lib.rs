//! The guardrails filter: the guardrails stage alone. Its configuration is the guardrails
//! object (`filters/guardrails/README.md`, `examples/guardrails/`). Place it before
//! provider-rewrite in the chain, so it checks the client's request before translation and the
//! answer after it. With token counting or quotas in the same chain, prefer the all-in-one
//! `tollgate.wasm` (one parse of the body).

use tollgate_core::stage::guardrails::{self, Guardrails};
use tollgate_host::Spec;

pub fn spec(config: &[u8]) -> Result<Spec, String> {
    let policy = guardrails::parse(config, "")?;
    let max_request_bytes = policy.limits.max_request_bytes;
    Ok(Spec { max_request_bytes, stages: vec![Box::new(Guardrails::new(policy))], route_header: None })
}

#[cfg(target_arch = "wasm32")]
tollgate_host::filter!("guardrails", spec);
