//! The provider-rewrite filter: the provider-rewrite stage alone. Its configuration is the
//! provider-rewrite object (`filters/provider-rewrite/README.md`). With token counting or quotas
//! in the same chain, use the all-in-one `tollgate.wasm` instead, so the body is parsed once and
//! usage is read in the provider's format before translation.

use tollgate_core::stage::provider_rewrite::{self, ProviderRewrite};
use tollgate_host::Spec;

pub fn spec(config: &[u8]) -> Result<Spec, String> {
    let env = |name: &str| std::env::var(name).ok();
    let settings = provider_rewrite::parse(config, "", &env)?;
    let route_header = settings.upstream_role.then_some(provider_rewrite::CLIENT_PATH_HEADER);
    Ok(Spec { max_request_bytes: None, stages: vec![Box::new(ProviderRewrite::new(settings))], route_header })
}

#[cfg(target_arch = "wasm32")]
tollgate_host::filter!("provider_rewrite", spec);
