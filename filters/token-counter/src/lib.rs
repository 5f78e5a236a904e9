//! The token-counter filter: one stage, wired to the shared proxy-wasm glue.
//! Behaviour lives in `tollgate_core::stage::token_counter`; see `filters/token-counter/README.md`.

use tollgate_core::stage::token_counter::{Config, TokenCounter};
use tollgate_host::Spec;

/// Parses the plugin configuration (the token-counter object itself).
pub fn spec(config: &[u8]) -> Result<Spec, String> {
    let config = Config::parse(config, "").map_err(|e| e.to_string())?;
    Ok(Spec {
        max_request_bytes: config.max_request_bytes(),
        stages: vec![Box::new(TokenCounter::new(config))],
        route_header: None,
    })
}

#[cfg(target_arch = "wasm32")]
tollgate_host::filter!("token-counter", spec);
