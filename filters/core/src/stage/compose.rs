//! Configuration of the all-in-one module: one object with a section per stage.
//!
//! ```json
//! { "token_counter": { "consumer_header": "x-consumer" }, "quota": { "limits": [ ... ] } }
//! ```
//! A present section enables its stage; stages run in the fixed order token-counter →
//! guardrails → provider-rewrite → quota. Token-counter runs before provider-rewrite so that
//! it reads each answer in the provider's own format, before translation; guardrails checks the
//! request before it is translated and reads the answer after translation (as the client gets it).
//! The quota stage settles with the usage the token-counter stage reads, so enabling quota
//! enables token counting too (with its defaults, unless configured). Unknown sections are
//! refused, naming them.

use super::quota::Quota;
use super::token_counter::{self, TokenCounter};
use super::StageFactory;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    #[serde(borrow, default)]
    token_counter: Option<&'a RawValue>,
    #[serde(borrow, default)]
    guardrails: Option<&'a RawValue>,
    #[serde(borrow, default)]
    provider_rewrite: Option<&'a RawValue>,
    #[serde(borrow, default)]
    quota: Option<&'a RawValue>,
}

/// The all-in-one configuration as its JSON Schema describes it: the sections [`Raw`] reads
/// (kept apart because `Raw` borrows each section unparsed, for its stage to parse).
#[derive(Default, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[allow(dead_code)]
pub struct Sections {
    /// Token counting, GenAI metrics and access-log fields; enabled by `quota` too (with its
    /// defaults) when absent.
    token_counter: Option<token_counter::RawConfig>,
    /// Prompt and answer guardrails.
    guardrails: Option<crate::guard::policy::Config>,
    /// One API in front of many providers: the model table and its backends.
    provider_rewrite: Option<super::provider_rewrite::RawConfig>,
    /// Token and request quotas.
    quota: Option<crate::quota::RawConfig>,
}

pub struct Composed {
    pub stages: Vec<Box<dyn StageFactory>>,
    pub max_request_bytes: Option<u64>,
    /// Set for provider-rewrite's upstream role (see `Pipeline::with_route_header`).
    pub route_header: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeError(pub String);

impl std::fmt::Display for ComposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn parse(json: &[u8]) -> Result<Composed, ComposeError> {
    let raw: Raw<'_> = if json.iter().all(u8::is_ascii_whitespace) {
        return Err(ComposeError("configuration: empty; name at least one stage, e.g. {\"token_counter\":{}}".into()));
    } else {
        crate::config::from_json(json, "").map_err(ComposeError)?
    };
    let mut composed = Composed { stages: Vec::new(), max_request_bytes: None, route_header: None };
    let quota = match raw.quota {
        Some(section) => Some(super::quota::parse(section.get().as_bytes(), "quota.").map_err(ComposeError)?),
        None => None,
    };
    // Every stage holds the request headers alike: one that holds them holds the request.
    let mut holds: Vec<(&str, bool)> = Vec::new();
    let token_counter = match (raw.token_counter, &quota) {
        (Some(section), _) => Some(section.get().as_bytes()),
        // Quota settles with token-counter's usage: counting runs with its defaults, holding
        // the headers as quota does.
        (None, Some(q)) if !q.hold_request_headers => Some(&br#"{"hold_request_headers":false}"#[..]),
        (None, Some(_)) => Some(&b"{}"[..]),
        (None, None) => None,
    };
    if let Some(section) = token_counter {
        let config = token_counter::Config::parse(section, "token_counter.").map_err(|e| ComposeError(e.0))?;
        composed.max_request_bytes = min_limit(composed.max_request_bytes, config.max_request_bytes());
        holds.push(("token_counter", config.raw().hold_request_headers));
        composed.stages.push(Box::new(TokenCounter::new(config)));
    }
    if let Some(section) = raw.guardrails {
        let policy = super::guardrails::parse(section.get().as_bytes(), "guardrails.").map_err(ComposeError)?;
        composed.max_request_bytes = min_limit(composed.max_request_bytes, policy.limits.max_request_bytes);
        holds.push(("guardrails", policy.hold_request_headers));
        composed.stages.push(Box::new(super::guardrails::Guardrails::new(policy)));
    }
    if let Some(section) = raw.provider_rewrite {
        let env = |name: &str| std::env::var(name).ok();
        let settings = super::provider_rewrite::parse(section.get().as_bytes(), "provider_rewrite.", &env)
            .map_err(ComposeError)?;
        if settings.upstream_role {
            if composed.stages.len() + usize::from(raw.quota.is_some()) > 0 {
                return Err(ComposeError(
                    "provider_rewrite.role: an upstream instance runs provider_rewrite alone (count and limit downstream)".into(),
                ));
            }
            composed.route_header = Some(super::provider_rewrite::CLIENT_PATH_HEADER);
        }
        // The route depends on the body: provider-rewrite always holds the headers.
        holds.push(("provider_rewrite", true));
        composed.stages.push(Box::new(super::provider_rewrite::ProviderRewrite::new(settings)));
    }
    if let Some(config) = quota {
        holds.push(("quota", config.hold_request_headers));
        composed.stages.push(Box::new(Quota::new(config)));
    }
    if let (Some((off, _)), Some((on, _))) = (holds.iter().find(|h| !h.1), holds.iter().find(|h| h.1)) {
        let why = if *on == "provider_rewrite" { " (it must: the route depends on the body)" } else { "" };
        return Err(ComposeError(format!(
            "{off}.hold_request_headers: false, but {on} holds the request headers{why}; the request would be held \
             anyway (set it alike in every section; false only where allow_on_headers_stop_iteration cannot be set)"
        )));
    }
    if composed.stages.is_empty() {
        return Err(ComposeError(
            "configuration: no stage enabled; add a \"token_counter\", \"guardrails\", \"provider_rewrite\" or \"quota\" section"
                .into(),
        ));
    }
    Ok(composed)
}

fn min_limit(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_holds_the_request_headers_alike() {
        let off = r#""hold_request_headers":false"#;
        let guard = r#""entities":{"CPF":"mask"}"#;
        let limits = r#""limits":[{"name":"t","meter":"total_tokens","per":"consumer","window":"minute","limit":9}]"#;
        // Quota without a token_counter section: counting follows quota's setting.
        assert!(parse(format!(r#"{{"quota":{{{off},{limits}}}}}"#).as_bytes()).is_ok());
        assert!(parse(format!(r#"{{"token_counter":{{{off}}},"guardrails":{{{off},{guard}}}}}"#).as_bytes()).is_ok());
        let err =
            parse(format!(r#"{{"token_counter":{{}},"guardrails":{{{off},{guard}}}}}"#).as_bytes()).err().unwrap().0;
        assert!(err.starts_with("guardrails.hold_request_headers: false, but token_counter holds"), "{err}");
        let err = parse(
            format!(r#"{{"token_counter":{{{off}}},"provider_rewrite":{{"backends":{{}},"models":[]}}}}"#).as_bytes(),
        )
        .err()
        .unwrap()
        .0;
        assert!(err.contains("but provider_rewrite holds the request headers (it must"), "{err}");
    }

    #[test]
    fn sections_enable_stages_and_errors_name_fields() {
        assert_eq!(parse(br#"{"token_counter":{}}"#).map(|c| c.stages.len()).ok(), Some(1));
        let err = parse(br#"{"token_counter":{"max_event_bytes":1}}"#).err().unwrap();
        assert!(err.0.starts_with("token_counter.max_event_bytes:"), "{}", err.0);
        let err = parse(br#"{"tokencounter":{}}"#).err().unwrap();
        assert!(err.0.contains("unknown field `tokencounter`"), "{}", err.0);
        assert!(parse(b"{}").is_err());
        assert!(parse(b"  ").is_err());
    }

    #[test]
    fn shipped_example_configurations_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quota");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read(&path).unwrap();
                let composed = parse(&text).unwrap_or_else(|e| panic!("{}: {}", path.display(), e.0));
                assert_eq!(composed.stages.len(), 2, "{}", path.display());
                seen += 1;
            }
        }
        assert_eq!(seen, 3);
    }

    #[test]
    fn an_upstream_provider_rewrite_runs_alone_and_reads_the_client_path() {
        let section = r#"{"role":"upstream","backends":{"o":{"kind":"openai","cluster":"o"}},"models":[]}"#;
        let alone = parse(format!(r#"{{"provider_rewrite":{section}}}"#).as_bytes()).ok().unwrap();
        assert_eq!(alone.route_header, Some(super::super::provider_rewrite::CLIENT_PATH_HEADER));
        let err = parse(format!(r#"{{"token_counter":{{}},"provider_rewrite":{section}}}"#).as_bytes()).err().unwrap();
        assert!(err.0.starts_with("provider_rewrite.role:"), "{}", err.0);
        let downstream = r#"{"provider_rewrite":{"backends":{"o":{"kind":"openai","cluster":"o"}},"models":[]}}"#;
        assert_eq!(parse(downstream.as_bytes()).ok().unwrap().route_header, None, "never for a downstream instance");
    }

    #[test]
    fn shipped_provider_examples_are_valid() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/provider-rewrite/providers.json");
        let value: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let section = value["provider_rewrite"].to_string();
        // The keys come from the VM's environment; any value stands in for them here.
        let env = |name: &str| name.chars().all(|c| c.is_ascii_uppercase() || c == '_').then(|| "k".to_string());
        let settings = crate::stage::provider_rewrite::parse(section.as_bytes(), "provider_rewrite.", &env).unwrap();
        assert_eq!(settings.table.backends.len(), 4);
        let missing = crate::stage::provider_rewrite::parse(section.as_bytes(), "provider_rewrite.", &|_| None);
        assert!(missing.unwrap_err().ends_with("is not set in the VM's environment"));
    }
}
