//! The all-in-one module: every stage named in the configuration, in the fixed order
//! token-counter → guardrails → provider-rewrite → quota, over one parse of each body.
//! Configuration and composition live in `tollgate_core::stage::compose`.

use tollgate_host::Spec;

pub fn spec(config: &[u8]) -> Result<Spec, String> {
    let composed = tollgate_core::stage::compose::parse(config).map_err(|e| e.to_string())?;
    Ok(Spec {
        stages: composed.stages,
        max_request_bytes: composed.max_request_bytes,
        route_header: composed.route_header,
    })
}

#[cfg(target_arch = "wasm32")]
tollgate_host::filter!("tollgate", spec);
