//! Metric names and labels, as Envoy stats can carry them.
//!
//! Envoy stats have no labels of their own: a label travels inside the stat name as
//! `;key=value` and the bootstrap's `stats_config.stats_tags` (one regex per key, shipped in
//! `envoy/`) cuts it out into a real tag, so `/stats/prometheus` shows
//! `tollgate_gen_ai_client_token_usage{gen_ai_token_type="input",…}`. Values are sanitised
//! (no `;`, `=`, control characters; bounded length) and each label's number of distinct values
//! per VM is capped ([`LabelLimiter`]): past the cap a value becomes `other`, because every new
//! combination is an Envoy stat forever.

use crate::fxhash::{FxHashMap, FxHashSet};
use std::borrow::Cow;

/// Every stat this project defines starts with this (Envoy adds `wasmcustom.` in front).
pub const PREFIX: &str = "tollgate.";

/// Tag keys used in stat names; each needs a `stats_tags` entry in the Envoy bootstrap.
pub const TAGS: &[&str] = &[
    "gen_ai_token_type",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "gen_ai_provider_name",
    "gen_ai_operation_name",
    "route",
    "consumer",
    "error_type",
    "reason",
    "direction",
    "rule",
    "entity",
    "action",
    "decision",
];

/// Longest label value kept.
pub const MAX_LABEL_LEN: usize = 96;

/// Makes a value safe inside a stat name: keeps `[A-Za-z0-9._:/@+-]`, maps the rest to `_`.
pub fn sanitize(value: &str) -> String {
    value
        .chars()
        .take(MAX_LABEL_LEN)
        .map(
            |c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '@' | '+' | '-') {
                    c
                } else {
                    '_'
                }
            },
        )
        .collect()
}

/// `tollgate.<base>;k1=v1;k2=v2` with sanitised values.
pub fn name(base: &str, labels: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(PREFIX.len() + base.len() + labels.len() * 24);
    out.push_str(PREFIX);
    out.push_str(base);
    for (key, value) in labels {
        out.push(';');
        out.push_str(key);
        out.push('=');
        out.push_str(&sanitize(value));
    }
    out
}

/// `;k1=v1;k2=v2` for values that are already safe (admitted by [`LabelLimiter`] or static).
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(pairs.len() * 32);
    for (key, value) in pairs {
        debug_assert!(sanitize(value) == *value, "label {key} not sanitised");
        out.push(';');
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Caps the distinct values of each label per VM.
#[derive(Debug, Default)]
pub struct LabelLimiter {
    cap: usize,
    seen: FxHashMap<&'static str, FxHashSet<String>>,
}

impl LabelLimiter {
    pub fn new(cap: usize) -> Self {
        LabelLimiter { cap, seen: FxHashMap::default() }
    }

    /// The value to use for `label`: the sanitised value while under the cap, else `other`.
    pub fn admit<'a>(&mut self, label: &'static str, value: &'a str) -> Cow<'a, str> {
        let seen = self.seen.entry(label).or_default();
        if value.is_empty() || seen.contains(value) {
            return Cow::Borrowed(value); // values in the set were sanitised when first admitted
        }
        let value = sanitize(value);
        if seen.contains(&value) {
            return Cow::Owned(value);
        }
        if seen.len() >= self.cap {
            return Cow::Borrowed("other");
        }
        seen.insert(value.clone());
        Cow::Owned(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_labels_for_stats_tags() {
        assert_eq!(
            name("requests", &[("gen_ai_request_model", "gpt-4.1"), ("route", "r;x=1")]),
            "tollgate.requests;gen_ai_request_model=gpt-4.1;route=r_x_1"
        );
    }

    #[test]
    fn sanitize_keeps_model_ids_readable_and_bounded() {
        assert_eq!(sanitize("anthropic.claude-3-5-sonnet-20240620-v1:0"), "anthropic.claude-3-5-sonnet-20240620-v1:0");
        assert_eq!(sanitize("openai/gpt-4o"), "openai/gpt-4o");
        assert_eq!(sanitize("a b\n\"c\""), "a_b__c_");
        assert_eq!(sanitize(&"x".repeat(500)).len(), MAX_LABEL_LEN);
    }

    #[test]
    fn limiter_caps_distinct_values_per_label() {
        let mut limiter = LabelLimiter::new(2);
        assert_eq!(limiter.admit("consumer", "a"), "a");
        assert_eq!(limiter.admit("consumer", "b"), "b");
        assert_eq!(limiter.admit("consumer", "c"), "other");
        assert_eq!(limiter.admit("consumer", "a"), "a");
        assert_eq!(limiter.admit("route", "c"), "c", "caps are per label");
        assert_eq!(limiter.admit("consumer", ""), "", "empty is free");
    }
}
