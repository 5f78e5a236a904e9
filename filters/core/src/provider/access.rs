//! Who may call which model: per-tier allow and deny lists of models and providers, checked
//! after the model table resolved the name, so an alias cannot bypass them.
//!
//! ```json
//! "access": {
//!   "mode": "enforce",
//!   "consumer": {"property": ["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload", "sub"]},
//!   "tier_property": ["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload", "tier"],
//!   "consumers": {"team-a": "premium"},
//!   "default_tier": "basic",
//!   "tiers": {
//!     "basic":   {"allow": ["gpt-4o-mini", "claude-3-5-haiku*"], "providers": ["openai", "anthropic"]},
//!     "premium": {"allow": ["*"], "deny": ["o1-pro"]}
//!   }
//! }
//! ```
//!
//! A request is allowed when no `deny` pattern matches and, if `allow` is set, one matches —
//! each tried on the name the client sent, the table entry it resolved to and the backend's
//! model id — and, if `providers` is set, the backend's name or kind is in it. Patterns: exact,
//! a prefix ending in `*`, or `*`. The tier: `tier_property` (set by an auth filter), else
//! `consumers`, else `default_tier`; without one every model is refused. `shadow` only counts.

use crate::consumer::ConsumerSource;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `enforce`, or `shadow`: decide and count, never refuse.
pub use crate::config::Mode;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    /// `enforce` refuses with 403; `shadow` only counts.
    #[serde(default)]
    pub mode: Mode,
    /// Who is calling.
    #[serde(default)]
    pub consumer: ConsumerSource,
    /// Property path naming the caller's tier (set by an auth filter); wins over `consumers`.
    #[schemars(extend("examples" = [["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload", "tier"]]))]
    #[serde(default)]
    pub tier_property: Option<Vec<String>>,
    /// Consumer id → tier.
    #[serde(default)]
    pub consumers: BTreeMap<String, String>,
    /// The tier of callers that no property or `consumers` entry names; unset: they are refused.
    #[serde(default)]
    #[schemars(extend("examples" = ["basic"]))]
    pub default_tier: Option<String>,
    /// Tier name → what its callers may use.
    pub tiers: BTreeMap<String, RawPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Model patterns the tier may call (exact, prefix ending in `*`, or `*`).
    #[serde(default)]
    #[schemars(extend("examples" = [["gpt-4o-mini", "claude-*"]]))]
    pub allow: Vec<String>,
    /// Model patterns refused even when allowed.
    #[serde(default)]
    #[schemars(extend("examples" = [["gpt-4o"]]))]
    pub deny: Vec<String>,
    /// Backend names or kinds the tier may reach; empty: any.
    #[serde(default)]
    #[schemars(extend("examples" = [["openai", "azure"]]))]
    pub providers: Vec<String>,
    /// The tier's own credentials for some backends (a team's own Azure key, say): backend
    /// name → key (`{"env": …}` or `{"value": …}`), used instead of the backend's.
    #[serde(default)]
    pub credentials: BTreeMap<String, super::RawSecret>,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub mode: Mode,
    pub consumer: ConsumerSource,
    pub tier_property: Option<Vec<String>>,
    consumers: BTreeMap<String, String>,
    default_tier: Option<String>,
    tiers: BTreeMap<String, RawPolicy>,
    /// (tier, backend) → key.
    credentials: BTreeMap<(String, String), super::Secret>,
}

/// What a request is checked on.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The name the client sent.
    pub requested: &'a str,
    /// The table entry it resolved to (an alias's target), if it is an exact entry.
    pub entry: Option<&'a str>,
    /// The backend's model id.
    pub model: &'a str,
    /// The backend's name and kind label.
    pub backend: &'a str,
    pub kind: &'a str,
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Access {
    /// Validates; `backends` are the table's backend names, `env` reads the VM's environment.
    pub fn validate(
        raw: RawAccess,
        prefix: &str,
        backends: &[&str],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Access, String> {
        raw.consumer.validate(&format!("{prefix}consumer."))?;
        for (name, tier) in &raw.consumers {
            if !raw.tiers.contains_key(tier) {
                return Err(format!("{prefix}consumers.{name}: tier '{tier}' is not in `tiers`"));
            }
        }
        if let Some(tier) = raw.default_tier.as_ref().filter(|t| !raw.tiers.contains_key(*t)) {
            return Err(format!("{prefix}default_tier: '{tier}' is not in `tiers`"));
        }
        for (name, policy) in &raw.tiers {
            for (field, patterns) in
                [("allow", &policy.allow), ("deny", &policy.deny), ("providers", &policy.providers)]
            {
                if let Some(bad) = patterns.iter().find(|p| p.is_empty() || p.trim_end_matches('*').contains('*')) {
                    return Err(format!(
                        "{prefix}tiers.{name}.{field}: '{bad}' is not a name, a prefix ending in * or *"
                    ));
                }
            }
        }
        let mut credentials = BTreeMap::new();
        for (tier, policy) in &raw.tiers {
            for (backend, secret) in &policy.credentials {
                let field = format!("{prefix}tiers.{tier}.credentials.{backend}");
                if !backends.contains(&backend.as_str()) {
                    return Err(format!("{field}: '{backend}' is not in `backends`"));
                }
                credentials.insert((tier.clone(), backend.clone()), super::resolve_secret(secret, &field, env)?);
            }
        }
        if raw.tier_property.as_ref().is_some_and(|p| p.is_empty() || p.iter().any(String::is_empty)) {
            return Err(format!("{prefix}tier_property: must be a non-empty list of non-empty path segments"));
        }
        Ok(Access {
            mode: raw.mode,
            consumer: raw.consumer,
            tier_property: raw.tier_property,
            consumers: raw.consumers,
            default_tier: raw.default_tier,
            tiers: raw.tiers,
            credentials,
        })
    }

    /// The tier's own key for `backend`, if it has one.
    pub fn credential(&self, tier: Option<&str>, backend: &str) -> Option<&super::Secret> {
        self.credentials.get(&(tier?.to_string(), backend.to_string()))
    }

    /// The tier of a consumer: the auth filter's (`from_property`), else the configured one,
    /// else the default. An unknown tier name from a property is no tier.
    pub fn tier<'a>(&'a self, consumer: Option<&str>, from_property: Option<&str>) -> Option<&'a str> {
        if let Some(tier) = from_property {
            return self.tiers.get_key_value(tier).map(|(k, _)| k.as_str());
        }
        consumer.and_then(|c| self.consumers.get(c)).or(self.default_tier.as_ref()).map(String::as_str)
    }

    /// Whether `tier` may use `target`.
    pub fn allows(&self, tier: Option<&str>, target: &Target<'_>) -> bool {
        let Some(policy) = tier.and_then(|t| self.tiers.get(t)) else { return false };
        let names = [Some(target.requested), target.entry, Some(target.model)];
        let any = |patterns: &[String]| patterns.iter().any(|p| names.iter().flatten().any(|name| matches(p, name)));
        if any(&policy.deny) {
            return false;
        }
        if !policy.allow.is_empty() && !any(&policy.allow) {
            return false;
        }
        policy.providers.is_empty()
            || policy.providers.iter().any(|p| matches(p, target.backend) || matches(p, target.kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn access(value: serde_json::Value) -> Result<Access, String> {
        let raw: RawAccess = crate::config::from_json(value.to_string().as_bytes(), "access.")?;
        Access::validate(raw, "access.", &["openai", "azure"], &|name| (name == "TEAM_KEY").then(|| "team-key".into()))
    }

    fn target<'a>(requested: &'a str, entry: Option<&'a str>, model: &'a str, backend: &'a str) -> Target<'a> {
        Target { requested, entry, model, backend, kind: if backend == "claude" { "anthropic" } else { "openai" } }
    }

    #[test]
    fn policy_table() {
        let a = access(json!({
            "consumers": {"team-a": "premium", "team-b": "basic"},
            "default_tier": "basic",
            "tiers": {
                "basic": {"allow": ["gpt-4o-mini", "claude-3-5-haiku*"], "providers": ["openai", "anthropic"]},
                "premium": {"allow": ["*"], "deny": ["o1-pro", "gpt-4.5*"]},
                "openai-only": {"providers": ["openai"]}
            }
        }))
        .unwrap();
        let basic = a.tier(Some("team-b"), None);
        let premium = a.tier(Some("team-a"), None);
        assert_eq!((basic, premium, a.tier(Some("stranger"), None)), (Some("basic"), Some("premium"), Some("basic")));
        assert_eq!(a.tier(Some("team-b"), Some("premium")), Some("premium"), "the auth filter's tier wins");
        assert_eq!(a.tier(Some("team-b"), Some("gold")), None, "an unknown tier is none");
        let cases = [
            // (tier, target, allowed)
            (basic, target("gpt-4o-mini", Some("gpt-4o-mini"), "gpt-4o-mini", "openai"), true),
            (basic, target("fast", Some("gpt-4o-mini"), "gpt-4o-mini", "openai"), true),
            (basic, target("gpt-4o", Some("gpt-4o"), "gpt-4o", "openai"), false),
            (basic, target("claude-3-5-haiku-latest", None, "claude-3-5-haiku-latest", "claude"), true),
            (premium, target("o1-pro", Some("o1-pro"), "o1-pro", "openai"), false),
            // An alias cannot bypass a deny: the entry and the model id are checked too.
            (premium, target("cheap-reasoning", Some("o1-pro"), "o1-pro", "openai"), false),
            (premium, target("smart", None, "gpt-4.5-preview", "openai"), false),
            (premium, target("gpt-4o", Some("gpt-4o"), "gpt-4o", "openai"), true),
            (Some("openai-only"), target("sonnet", Some("sonnet"), "claude-sonnet-4", "claude"), false),
            (Some("openai-only"), target("gpt-4o", Some("gpt-4o"), "gpt-4o", "openai"), true),
            (None, target("gpt-4o-mini", Some("gpt-4o-mini"), "gpt-4o-mini", "openai"), false),
        ];
        for (tier, t, allowed) in cases {
            assert_eq!(a.allows(tier, &t), allowed, "{tier:?} {}", t.requested);
        }
    }

    #[test]
    fn a_tier_may_bring_its_own_backend_key() {
        let a =
            access(json!({"tiers": {"team-a": {"credentials": {"azure": {"env": "TEAM_KEY"}}}, "other": {}}})).unwrap();
        assert_eq!(a.credential(Some("team-a"), "azure").map(|s| s.expose()), Some("team-key"));
        assert!(a.credential(Some("team-a"), "openai").is_none() && a.credential(Some("other"), "azure").is_none());
        assert!(!format!("{a:?}").contains("team-key"), "never printed");
    }

    #[test]
    fn configuration_errors_name_the_field() {
        for (value, field) in [
            (json!({"consumers": {"x": "gold"}, "tiers": {}}), "access.consumers.x:"),
            (json!({"default_tier": "gold", "tiers": {}}), "access.default_tier:"),
            (json!({"tiers": {"t": {"allow": ["a*b"]}}}), "access.tiers.t.allow:"),
            (json!({"consumer": {"header": "Authorization"}, "tiers": {}}), "access.consumer.header:"),
            (json!({"tiers": {}, "mode": "audit"}), "access.mode"),
            (json!({"tiers": {"t": {"credentials": {"nope": {"value": "k"}}}}}), "access.tiers.t.credentials.nope:"),
            (
                json!({"tiers": {"t": {"credentials": {"azure": {"env": "MISSING"}}}}}),
                "access.tiers.t.credentials.azure.env:",
            ),
        ] {
            let error = access(value.clone()).unwrap_err();
            assert!(error.starts_with(field), "{value}: {error}");
        }
    }
}
