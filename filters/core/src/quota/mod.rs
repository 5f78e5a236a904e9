//! Token and request quotas: configuration, what a request costs, which counters it charges.
//!
//! Pure: the counters live behind [`store::SharedStore`], time is a parameter. The stage that
//! uses this at request and response time is [`crate::stage::quota`].
//!
//! A limit is `meter` (requests, input/output/total tokens, a weighted cost, or dollars from a
//! per-model price table) × `per` (consumer, consumer and model, model, or everyone) ×
//! `window` (minute, hour, day, calendar month). Tiers override limit values per consumer.

pub mod rls;
pub mod store;
pub mod stream;
pub mod window;

use serde::Deserialize;

use std::collections::BTreeMap;
pub use window::Window;

/// What a limit counts.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Meter {
    /// Model requests: 1 per request, or the number of requests a batch holds.
    Requests,
    InputTokens,
    OutputTokens,
    TotalTokens,
    /// `input × w_in + output × w_out`, the parts of the input read from or written to a prompt
    /// cache weighted by their own rates (`{"input": 1, "output": 4, "cached_input": 0.1}`).
    Weighted(Rates),
    /// US dollars from `prices` (per million tokens), counted in micro-dollars; needs `prices`.
    Dollars,
}

/// Whose counter a request charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Consumer,
    ConsumerModel,
    Model,
    Global,
}

/// `enforce` refuses with 429 when a limit is exhausted; `shadow` counts and adds the headers.
pub use crate::config::Mode;

/// How a request is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// Reserve the request's maximum at admission, settle to usage at the end: concurrent
    /// requests cannot overshoot a limit by more than one request's estimation error.
    #[default]
    Reserve,
    /// Admit while the counter is under the limit, charge usage at the end (what most gateways
    /// do): concurrent requests can all pass before any is charged. For comparison only; local
    /// mode only.
    PostAccounting,
}

/// What happens to a request whose consumer no source names: `default` puts them all in one
/// consumer, `unknown` (give it its own limits with a tier: `"consumers": {"unknown": "anonymous"}`);
/// `refuse` answers 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownConsumer {
    /// Apply the limits to one shared `unknown` consumer.
    #[default]
    Default,
    /// Refuse with 401.
    Refuse,
}

/// Where the counters live when quotas are shared by many Envoy instances (absent: in this
/// Envoy's shared data, shared by its workers only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum Global {
    /// Envoy's own `envoy.filters.http.ratelimit` filter, placed after this one, calls an RLS v3
    /// service (envoyproxy/ratelimit): the stage writes the descriptors' values and the amounts
    /// (`hits_addend`) to filter state; the route's `rate_limits` read them.
    EnvoyRatelimit {
        /// Give back unused reservations at stream end (`is_negative_hits`): needs a service
        /// that decrements on negative hits (envoyproxy/ratelimit since 2026); one that does
        /// not would add them instead. Off: the unused part of a reservation stays charged.
        #[serde(default)]
        refunds: bool,
    },
    /// The stage calls the service itself over gRPC: a reservation before the request goes
    /// upstream and a `Report` of the rest at stream end (Kuadrant Limitador's API).
    CheckReport {
        /// Envoy cluster (HTTP/2) of the service.
        #[schemars(extend("examples" = ["limitador"]))]
        cluster: String,
        /// The rate-limit domain of the descriptors.
        #[serde(default = "default_domain")]
        domain: String,
        /// Time allowed for the reservation call before `failure_mode` applies.
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u32,
        #[serde(default)]
        reservation: Reservation,
        #[serde(default)]
        failure_mode: FailureMode,
    },
}

fn default_domain() -> String {
    "tollgate".into()
}

fn default_timeout_ms() -> u32 {
    200
}

/// How `check_report` reserves at request time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reservation {
    /// `ShouldRateLimit` with the reservation as hits: an atomic check-and-charge, so the
    /// quota holds under concurrency; the rest of the usage is reported at the end, the unused
    /// part of the reservation stays charged (no refunds in this API).
    #[default]
    Charge,
    /// `CheckRateLimit` (no charge), then `Report` of the exact usage at the end: exact
    /// accounting, but concurrent requests can all pass the check before any is charged.
    Check,
}

/// What happens when the rate-limit service cannot be reached or answers garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Admit the request (counted in `tollgate.quota.rls_errors`).
    #[default]
    Allow,
    /// Refuse with 503.
    Deny,
}

/// The largest limit an RLS can hold (`requests_per_unit` is a uint32).
pub const RLS_MAX_LIMIT: u64 = u32::MAX as u64;
/// Envoy's rate-limit filter ignores a `hits_addend` above this (`MAX_HITS_ADDEND`).
pub const ENVOY_MAX_HITS: u64 = 1_000_000_000;

/// What each kind of token costs: a weighted meter's weights, or a model's price in USD per
/// million tokens. Input read from a prompt cache (`cached_input`) and written to one
/// (`cache_creation_input`: the cache writes Anthropic, Bedrock and OpenAI report, which can cost
/// more than input; `cache_creation_input_long`: those written with the longer retention,
/// Anthropic's and Bedrock's one hour or OpenAI's 12 hours) are parts of the input priced at
/// their own rates.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    /// An input token.
    #[schemars(extend("examples" = [3.0]))]
    pub input: f64,
    /// An output token.
    #[schemars(extend("examples" = [15.0]))]
    pub output: f64,
    /// An input token read from a prompt cache (default: `input`).
    #[serde(default)]
    #[schemars(extend("examples" = [0.3]))]
    pub cached_input: Option<f64>,
    /// An input token written to a prompt cache (default: `input`).
    #[serde(default)]
    #[schemars(extend("examples" = [3.75]))]
    pub cache_creation_input: Option<f64>,
    /// An input token written to a prompt cache with the longer retention: one hour at Anthropic
    /// and Bedrock, 12 hours at OpenAI (default: `cache_creation_input`).
    #[serde(default)]
    #[schemars(extend("examples" = [6.0]))]
    pub cache_creation_input_long: Option<f64>,
}

/// A model's price: USD per million tokens.
pub type Price = Rates;

impl Rates {
    fn valid(&self) -> bool {
        let optional = [self.cached_input, self.cache_creation_input, self.cache_creation_input_long];
        [self.input, self.output].into_iter().chain(optional.into_iter().flatten()).all(|v| v.is_finite() && v >= 0.0)
    }

    /// `tokens` at these rates, rounded up.
    fn cost(&self, tokens: Tokens) -> u64 {
        let cached = tokens.cached_input.min(tokens.input);
        let written = tokens.cache_creation.min(tokens.input - cached);
        let written_long = tokens.cache_creation_long.min(written);
        let write = self.cache_creation_input.unwrap_or(self.input);
        let parts = [
            ((tokens.input - cached - written) as f64, self.input),
            (cached as f64, self.cached_input.unwrap_or(self.input)),
            ((written - written_long) as f64, write),
            (written_long as f64, self.cache_creation_input_long.unwrap_or(write)),
            (tokens.output as f64, self.output),
        ];
        parts.iter().map(|(count, rate)| count * rate).sum::<f64>().ceil() as u64
    }
}

pub use crate::consumer::{hashed_consumer, plain_consumer, ConsumerSource};

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// The limit's name (`[a-z0-9_]`, at most 64, unique), in errors, metrics, tiers and global
    /// descriptors.
    #[schemars(regex(pattern = r"^[a-z0-9_]{1,64}$"), extend("examples" = ["tokens_per_minute"]))]
    pub name: String,
    #[schemars(extend("examples" = ["total_tokens"]))]
    pub meter: Meter,
    #[schemars(extend("examples" = ["consumer"]))]
    pub per: Scope,
    /// The fixed UTC window the count is kept for.
    #[schemars(extend("examples" = ["minute"]))]
    pub window: Window,
    /// Count (requests, tokens, weighted units) or dollars: positive, and a whole number except
    /// for `dollars` and weighted meters.
    #[schemars(extend("examples" = [100000]))]
    pub limit: f64,
    /// Model patterns the limit applies to (`gpt-4o` exact, `gpt-4*` prefix); empty: all.
    #[serde(default)]
    pub models: Vec<String>,
}

/// The `quota` section of the plugin configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `enforce` refuses with 429; `shadow` counts and adds the headers only.
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub admission: Admission,
    /// Who is calling.
    #[serde(default)]
    pub consumer: ConsumerSource,
    #[serde(default)]
    pub unknown_consumer: UnknownConsumer,
    /// The limits; a request is charged against every one that applies to it.
    pub limits: Vec<RawLimit>,
    /// Tier name → limit name → value that replaces the limit's default for that tier.
    #[serde(default)]
    pub tiers: BTreeMap<String, BTreeMap<String, f64>>,
    /// Consumer id → tier.
    #[serde(default)]
    pub consumers: BTreeMap<String, String>,
    /// Property path naming the consumer's tier (set by an auth filter); wins over `consumers`.
    #[serde(default)]
    #[schemars(extend("examples" = [["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload", "tier"]]))]
    pub tier_property: Option<Vec<String>>,
    /// Model (or prefix ending in `*`) → price, for `dollars` limits; the longest match wins.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// Output tokens reserved (per completion) when a request names no `max_tokens`; none for
    /// embeddings, which generate nothing.
    #[serde(default = "default_max_output")]
    pub default_max_output_tokens: u64,
    /// Share the counters of many Envoy instances through a rate-limit service.
    #[serde(default)]
    pub global: Option<Global>,
    /// Hold request headers until the body is decided (needs `allow_on_headers_stop_iteration:
    /// true` in Envoy's plugin config, which Istio's `WasmPlugin` cannot set). `false`: headers
    /// go on at once (`content-length` removed, so a rewritten body is re-framed) and the body is
    /// held instead; a refusal then resets the upstream request, which has seen headers only.
    /// Not with `global.backend: envoy_ratelimit` (Envoy's rate-limit filter reads the
    /// reservation when the headers reach it).
    #[serde(default = "yes")]
    pub hold_request_headers: bool,
    /// End a streamed answer whose consumer runs out mid-way: output beyond the reservation is
    /// estimated from the streamed text and charged as it flows (64 tokens ahead; near the limit
    /// exactly what was streamed); when that no longer fits a limit, the stream ends after the
    /// event that crossed it with one error event in the client's dialect (`rate_limit_exceeded`,
    /// naming the limit), the rest of the answer is dropped and the stream reset. A stream that
    /// ends early is settled to its usage if the provider reported it, else to the input it
    /// reported (or the estimate) and the output estimated up to the end. Local counters, `enforce` mode and `reserve` admission only; OpenAI chat,
    /// completions and Responses, Anthropic Messages and Gemini SSE streams, uncompressed.
    #[serde(default)]
    pub stream_cut_off: bool,
}

fn yes() -> bool {
    true
}

fn default_max_output() -> u64 {
    4_096
}

/// A model pattern: exact, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String, bool);

impl Pattern {
    fn parse(text: &str) -> Option<Pattern> {
        match text.strip_suffix('*') {
            Some(prefix) if !prefix.contains('*') => Some(Pattern(prefix.to_string(), true)),
            None if !text.contains('*') && !text.is_empty() => Some(Pattern(text.to_string(), false)),
            _ => None,
        }
    }

    pub fn matches(&self, model: &str) -> bool {
        if self.1 {
            model.starts_with(&self.0)
        } else {
            model == self.0
        }
    }
}

/// A validated limit; `limit` is in the meter's unit (micro-dollars for dollars).
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub name: String,
    pub meter: Meter,
    pub per: Scope,
    pub window: Window,
    pub limit: u64,
    pub models: Vec<Pattern>,
}

impl Limit {
    pub fn counts_tokens(&self) -> bool {
        !matches!(self.meter, Meter::Requests)
    }

    /// Whether what this limit counts depends on the request's model (its scope, its model
    /// patterns, or its prices).
    pub fn per_model(&self) -> bool {
        matches!(self.per, Scope::ConsumerModel | Scope::Model)
            || !self.models.is_empty()
            || self.meter == Meter::Dollars
    }

    fn applies_to(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|p| p.matches(model))
    }
}

/// Token amounts a meter prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    /// All input, the cache's reads and writes included.
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_creation: u64,
    /// The part of `cache_creation` written with the longer retention.
    pub cache_creation_long: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub admission: Admission,
    pub consumer: ConsumerSource,
    pub unknown_consumer: UnknownConsumer,
    pub limits: Vec<Limit>,
    /// Tier → per-limit override (same order as `limits`).
    tiers: BTreeMap<String, Vec<Option<u64>>>,
    consumers: BTreeMap<String, String>,
    pub tier_property: Option<Vec<String>>,
    prices: Vec<(Pattern, Price)>,
    pub default_max_output_tokens: u64,
    pub global: Option<Global>,
    pub hold_request_headers: bool,
    pub stream_cut_off: bool,
}

impl Config {
    /// Parses and validates; errors name the field (`prefix` is this section's path).
    pub fn parse(json: &[u8], prefix: &str) -> Result<Config, String> {
        let raw: RawConfig = crate::config::from_json(json, prefix)?;
        Config::validate(raw, prefix)
    }

    pub fn validate(raw: RawConfig, prefix: &str) -> Result<Config, String> {
        let err = |field: &str, message: String| Err(format!("{prefix}{field}: {message}"));
        if raw.limits.is_empty() {
            return err("limits", "at least one limit is required".into());
        }
        if !raw.hold_request_headers && matches!(raw.global, Some(Global::EnvoyRatelimit { .. })) {
            return err(
                "hold_request_headers",
                "must be true with global.backend envoy_ratelimit: Envoy's rate-limit filter reads the reservation with the headers".into(),
            );
        }
        if raw.stream_cut_off && (raw.global.is_some() || raw.admission == Admission::PostAccounting) {
            return err(
                "stream_cut_off",
                "works with local counters (no global) and reserve admission: the stream's charges are compare-and-swapped in this Envoy's shared data as it flows".into(),
            );
        }
        let mut limits = Vec::with_capacity(raw.limits.len());
        for (i, l) in raw.limits.iter().enumerate() {
            let at = |f: &str| format!("limits[{i}].{f}");
            if l.name.is_empty()
                || l.name.len() > store::MAX_NAME_LEN
                || l.name.bytes().any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
            {
                return err(&at("name"), format!("'{}' must be 1 to {} of [a-z0-9_]", l.name, store::MAX_NAME_LEN));
            }
            if raw.limits.iter().take(i).any(|other| other.name == l.name) {
                return err(&at("name"), format!("'{}' is used twice", l.name));
            }
            if !l.limit.is_finite() || l.limit <= 0.0 {
                return err(&at("limit"), format!("{} must be positive", l.limit));
            }
            let units = match l.meter {
                Meter::Dollars => {
                    if raw.prices.is_empty() {
                        return err(&at("meter"), "dollars needs a `prices` table".into());
                    }
                    (l.limit * 1e6).round()
                }
                Meter::Weighted(weights) => {
                    if !weights.valid() {
                        return err(&at("meter"), "weights must be finite and not negative".into());
                    }
                    l.limit.ceil()
                }
                Meter::Requests | Meter::InputTokens | Meter::OutputTokens | Meter::TotalTokens => {
                    if l.limit.fract() != 0.0 {
                        return err(&at("limit"), format!("{} must be a whole number", l.limit));
                    }
                    l.limit
                }
            };
            let mut models = Vec::new();
            for (j, m) in l.models.iter().enumerate() {
                match Pattern::parse(m) {
                    Some(p) => models.push(p),
                    None => {
                        return err(
                            &at(&format!("models[{j}]")),
                            format!("'{m}' must be a name or a prefix ending in *"),
                        )
                    }
                }
            }
            limits.push(Limit {
                name: l.name.clone(),
                meter: l.meter.clone(),
                per: l.per,
                window: l.window,
                limit: units as u64,
                models,
            });
        }
        let mut tiers = BTreeMap::new();
        for (tier, values) in &raw.tiers {
            let mut overrides = vec![None; limits.len()];
            for (name, value) in values {
                let Some(index) = limits.iter().position(|l| &l.name == name) else {
                    return err(&format!("tiers.{tier}.{name}"), "names no limit".into());
                };
                if !value.is_finite() || *value <= 0.0 {
                    return err(&format!("tiers.{tier}.{name}"), format!("{value} must be positive"));
                }
                let units = if matches!(limits.get(index).map(|l| &l.meter), Some(Meter::Dollars)) {
                    value * 1e6
                } else {
                    *value
                };
                if let Some(slot) = overrides.get_mut(index) {
                    *slot = Some(units.round() as u64);
                }
            }
            tiers.insert(tier.clone(), overrides);
        }
        for (consumer, tier) in &raw.consumers {
            if !tiers.contains_key(tier) {
                return err(&format!("consumers.{consumer}"), format!("tier '{tier}' is not defined in `tiers`"));
            }
        }
        let mut prices = Vec::new();
        for (pattern, price) in &raw.prices {
            let Some(p) = Pattern::parse(pattern) else {
                return err(&format!("prices.{pattern}"), "must be a model name or a prefix ending in *".into());
            };
            if !price.valid() {
                return err(&format!("prices.{pattern}"), "prices must be finite and not negative".into());
            }
            prices.push((p, *price));
        }
        // Longest pattern first, so `gpt-4o-mini` wins over `gpt-4o*`.
        prices.sort_by_key(|(p, _)| std::cmp::Reverse(p.0.len() + usize::from(!p.1)));
        raw.consumer.validate(&format!("{prefix}consumer."))?;
        if raw.default_max_output_tokens == 0 {
            return err("default_max_output_tokens", "must be at least 1".into());
        }
        if let Some(global) = &raw.global {
            if raw.admission != Admission::Reserve {
                return err("admission", "only `reserve` is supported with `global`".into());
            }
            let ceiling = |limit: u64| limit > RLS_MAX_LIMIT;
            for (i, l) in limits.iter().enumerate() {
                if ceiling(l.limit) {
                    return err(
                        &format!("limits[{i}].limit"),
                        format!(
                            "{} units is above {RLS_MAX_LIMIT}, the largest limit a rate-limit service holds",
                            l.limit
                        ),
                    );
                }
            }
            for (tier, overrides) in &tiers {
                for (value, limit) in overrides.iter().zip(&limits) {
                    if value.is_some_and(ceiling) {
                        return err(
                            &format!("tiers.{tier}.{}", limit.name),
                            format!("above {RLS_MAX_LIMIT} units, the largest limit a rate-limit service holds"),
                        );
                    }
                }
            }
            if let Global::CheckReport { cluster, domain, timeout_ms, .. } = global {
                if cluster.is_empty() || rls::parses_as_message(cluster.as_bytes()) {
                    return err(
                        "global.cluster",
                        format!("'{cluster}' cannot be used: Envoy would read it as a serialized GrpcService; rename the cluster"),
                    );
                }
                if domain.is_empty() {
                    return err("global.domain", "must not be empty".into());
                }
                if *timeout_ms == 0 {
                    return err("global.timeout_ms", "must be at least 1".into());
                }
            }
        }
        Ok(Config {
            mode: raw.mode,
            admission: raw.admission,
            consumer: raw.consumer,
            unknown_consumer: raw.unknown_consumer,
            limits,
            tiers,
            consumers: raw.consumers,
            tier_property: raw.tier_property,
            prices,
            default_max_output_tokens: raw.default_max_output_tokens,
            global: raw.global,
            hold_request_headers: raw.hold_request_headers,
            stream_cut_off: raw.stream_cut_off,
        })
    }

    fn price(&self, model: &str) -> Option<Price> {
        self.prices.iter().find(|(p, _)| p.matches(model)).map(|(_, price)| *price)
    }

    /// The amount of `tokens` (one request) in `limit`'s unit.
    pub fn amount(&self, limit: &Limit, model: &str, tokens: Tokens, requests: u64) -> u64 {
        match &limit.meter {
            Meter::Requests => requests,
            Meter::InputTokens => tokens.input,
            Meter::OutputTokens => tokens.output,
            Meter::TotalTokens => tokens.input + tokens.output,
            Meter::Weighted(weights) => weights.cost(tokens),
            // Micro-dollars: price is USD per 1e6 tokens, so tokens × price = micro-USD.
            Meter::Dollars => self.price(model).map_or(0, |p| p.cost(tokens)),
        }
    }

    /// The limit value for a consumer in `tier`.
    pub fn limit_value(&self, index: usize, tier: Option<&str>) -> u64 {
        let default = self.limits.get(index).map_or(0, |l| l.limit);
        tier.and_then(|t| self.tiers.get(t)).and_then(|o| o.get(index).copied().flatten()).unwrap_or(default)
    }

    /// The tier of a consumer, from the tier property if the auth filter set one, else the map.
    pub fn tier<'a>(&'a self, consumer: &str, from_property: Option<&'a str>) -> Option<&'a str> {
        from_property
            .filter(|t| self.tiers.contains_key(*t))
            .or_else(|| self.consumers.get(consumer).map(String::as_str))
    }

    /// The shared-data key of the record holding `limit`'s counter for this request: one record
    /// per scope value, shared by every limit of that scope (see [`store`]).
    pub fn key(&self, limit: &Limit, consumer: &str, model: &str) -> String {
        match limit.per {
            Scope::Consumer => format!("tollgate.quota;consumer;{consumer}"),
            Scope::ConsumerModel => format!("tollgate.quota;consumer_model;{consumer}|{model}"),
            Scope::Model => format!("tollgate.quota;model;{model}"),
            Scope::Global => "tollgate.quota;global;".to_string(),
        }
    }

    /// Whether a counter named `name` belongs to a configured limit.
    pub fn has_limit(&self, name: &str) -> bool {
        self.limits.iter().any(|l| l.name == name)
    }

    /// Indices of the limits that apply to a request for `model`.
    pub fn applicable<'a>(&'a self, model: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.limits.iter().enumerate().filter(move |(_, l)| l.applies_to(model)).map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: serde_json::Value) -> Result<Config, String> {
        Config::parse(value.to_string().as_bytes(), "quota.")
    }

    fn base() -> serde_json::Value {
        json!({
            "limits": [
                {"name": "tpm", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 1000},
                {"name": "rpm", "meter": "requests", "per": "consumer", "window": "minute", "limit": 10},
                {"name": "weighted_day", "meter": {"weighted": {"input": 1, "output": 4, "cached_input": 0.1}},
                 "per": "consumer_model", "window": "day", "limit": 5000, "models": ["gpt-4o*"]},
                {"name": "budget", "meter": "dollars", "per": "consumer", "window": "month", "limit": 2.5}
            ],
            "prices": {"gpt-4o*": {"input": 2.5, "output": 10, "cached_input": 1.25}, "gpt-4o-mini": {"input": 0.15, "output": 0.6}},
            "tiers": {"gold": {"tpm": 10000, "budget": 100}},
            "consumers": {"team-a": "gold"}
        })
    }

    #[test]
    fn meters_price_usage_as_documented() {
        let c = config(base()).unwrap();
        let t = Tokens { input: 1000, output: 200, cached_input: 400, ..Tokens::default() };
        let amount = |name: &str, model: &str| {
            let limit = c.limits.iter().find(|l| l.name == name).unwrap();
            c.amount(limit, model, t, 1)
        };
        assert_eq!(amount("tpm", "x"), 1200);
        assert_eq!(amount("rpm", "x"), 1);
        assert_eq!(amount("weighted_day", "gpt-4o"), 600 + 40 + 800);
        // 600 uncached × 2.5 + 400 cached × 1.25 + 200 × 10 = 1500 + 500 + 2000 micro-USD
        assert_eq!(amount("budget", "gpt-4o"), 4000);
        // the more specific price wins; no cached price: cached input priced as input
        assert_eq!(amount("budget", "gpt-4o-mini"), (1000.0 * 0.15 + 200.0 * 0.6f64).ceil() as u64);
        assert_eq!(amount("budget", "claude"), 0, "unpriced models cost nothing in dollars");
        let rpm = c.limits.iter().find(|l| l.name == "rpm").unwrap();
        assert_eq!(c.amount(rpm, "x", t, 40), 40, "a batch of 40 is 40 requests");
        let tpm = c.limits.iter().find(|l| l.name == "tpm").unwrap();
        assert_eq!(c.amount(tpm, "x", t, 40), 1200, "its tokens are its tokens");
    }

    /// Anthropic's prices (Claude Sonnet 4: USD 3 / 15 per million, reads 0.30, 5-minute writes
    /// 3.75, one-hour writes 6): every part of the input at its own rate.
    #[test]
    fn cache_writes_are_priced_apart_from_input_and_reads() {
        let sonnet = json!({"input": 3, "output": 15, "cached_input": 0.3, "cache_creation_input": 3.75,
                            "cache_creation_input_long": 6});
        let c = config(json!({
            "limits": [{"name": "budget", "meter": "dollars", "per": "consumer", "window": "month", "limit": 100},
                       {"name": "units", "meter": {"weighted": {"input": 1, "output": 5, "cached_input": 0.1,
                                                                 "cache_creation_input": 1.25}},
                        "per": "consumer", "window": "day", "limit": 100000},
                       {"name": "tpm", "meter": "input_tokens", "per": "consumer", "window": "minute", "limit": 100000}],
            "prices": {"claude-sonnet-4*": sonnet, "claude-haiku*": {"input": 1, "output": 5}}
        }))
        .unwrap();
        // 10,000 input: 1,000 plain, 4,000 read, 5,000 written (2,000 of them for an hour); 100 out.
        let t = Tokens {
            input: 10_000,
            output: 100,
            cached_input: 4_000,
            cache_creation: 5_000,
            cache_creation_long: 2_000,
        };
        let amount = |name: &str, model: &str, t: Tokens| {
            c.amount(c.limits.iter().find(|l| l.name == name).unwrap(), model, t, 1)
        };
        // 1,000 × 3 + 4,000 × 0.3 + 3,000 × 3.75 + 2,000 × 6 + 100 × 15 micro-USD
        assert_eq!(amount("budget", "claude-sonnet-4-5", t), 3_000 + 1_200 + 11_250 + 12_000 + 1_500);
        // Without their own rates, writes are input (one-hour ones at the write rate): as before.
        assert_eq!(amount("budget", "claude-haiku-4-5", t), 10_000 + 500);
        // 1,000 + 400 + 5,000 × 1.25 (no one-hour weight: the write weight) + 500
        assert_eq!(amount("units", "any", t), 1_000 + 400 + 6_250 + 500);
        assert_eq!(amount("tpm", "any", t), 10_000, "a token meter counts every input token once");
        // Counts past the input (a provider's inconsistency) never price more than the input.
        let odd = Tokens { input: 100, cached_input: 80, cache_creation: 500, cache_creation_long: 900, ..t };
        assert_eq!(amount("budget", "claude-sonnet-4-5", odd), (80.0 * 0.3 + 20.0 * 6.0 + 1_500.0f64).ceil() as u64);
        let bad = config(
            json!({"limits": [{"name": "b", "meter": "dollars", "per": "consumer", "window": "day", "limit": 1}],
                                "prices": {"m": {"input": 1, "output": 1, "cache_creation_input_long": -2}}}),
        );
        assert!(bad.unwrap_err().contains("prices.m"));
    }

    #[test]
    fn a_limit_is_per_model_by_scope_patterns_or_prices() {
        let c = config(base()).unwrap();
        let per_model: Vec<(&str, bool)> = c.limits.iter().map(|l| (l.name.as_str(), l.per_model())).collect();
        assert_eq!(per_model, [("tpm", false), ("rpm", false), ("weighted_day", true), ("budget", true)]);
        let scoped = config(
            json!({"limits": [{"name": "m", "meter": "requests", "per": "model", "window": "day", "limit": 1}]}),
        );
        assert!(scoped.unwrap().limits.iter().all(Limit::per_model));
    }

    #[test]
    fn tiers_override_limits_and_patterns_select_models() {
        let c = config(base()).unwrap();
        let tpm = c.limits.iter().position(|l| l.name == "tpm").unwrap();
        assert_eq!(c.limit_value(tpm, None), 1000);
        assert_eq!(c.limit_value(tpm, c.tier("team-a", None)), 10000);
        assert_eq!(c.limit_value(tpm, c.tier("team-b", Some("gold"))), 10000, "tier from an auth filter's metadata");
        assert_eq!(c.limit_value(tpm, c.tier("team-b", Some("platinum"))), 1000, "unknown tier: defaults");
        let budget = c.limits.iter().position(|l| l.name == "budget").unwrap();
        assert_eq!(c.limit_value(budget, Some("gold")), 100_000_000, "dollars in micro-dollars");
        assert_eq!(c.applicable("gpt-4o").count(), 4);
        assert_eq!(c.applicable("claude").count(), 3);
    }

    #[test]
    fn keys_are_per_scope() {
        let c = config(json!({"limits": [
            {"name": "a", "meter": "requests", "per": "consumer", "window": "minute", "limit": 1},
            {"name": "b", "meter": "requests", "per": "consumer_model", "window": "minute", "limit": 1},
            {"name": "c", "meter": "requests", "per": "model", "window": "minute", "limit": 1},
            {"name": "d", "meter": "requests", "per": "global", "window": "minute", "limit": 1}]}))
        .unwrap();
        let keys: Vec<String> = c.limits.iter().map(|l| c.key(l, "k:1", "m")).collect();
        assert_eq!(
            keys,
            [
                "tollgate.quota;consumer;k:1",
                "tollgate.quota;consumer_model;k:1|m",
                "tollgate.quota;model;m",
                "tollgate.quota;global;"
            ]
        );
    }

    #[test]
    fn api_keys_are_hashed_with_the_salt() {
        let a = hashed_consumer("salt", "sk-live-123");
        assert!(a.starts_with("k:") && a.len() == 18);
        assert_eq!(a, hashed_consumer("salt", "sk-live-123"));
        assert_ne!(a, hashed_consumer("other", "sk-live-123"));
        assert!(!a.contains("sk-live"));
    }

    #[test]
    fn global_backends_parse_with_defaults() {
        let mut value = base();
        value["global"] = json!({"backend": "check_report", "cluster": "rls"});
        let c = config(value).unwrap();
        assert_eq!(
            c.global,
            Some(Global::CheckReport {
                cluster: "rls".into(),
                domain: "tollgate".into(),
                timeout_ms: 200,
                reservation: Reservation::Charge,
                failure_mode: FailureMode::Allow,
            })
        );
        let mut value = base();
        value["global"] = json!({"backend": "envoy_ratelimit", "refunds": true});
        assert_eq!(config(value).unwrap().global, Some(Global::EnvoyRatelimit { refunds: true }));
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let cases = [
            (json!({"limits": []}), "quota.limits:"),
            (
                json!({"limits": [{"name": "A", "meter": "requests", "per": "consumer", "window": "minute", "limit": 1}]}),
                "quota.limits[0].name:",
            ),
            (
                json!({"limits": [{"name": "a".repeat(65), "meter": "requests", "per": "consumer", "window": "minute", "limit": 1}]}),
                "quota.limits[0].name:",
            ),
            (
                json!({"stream_cut_off": true, "admission": "post_accounting",
                       "limits": [{"name": "a", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 1}]}),
                "quota.stream_cut_off:",
            ),
            (
                json!({"stream_cut_off": true, "global": {"backend": "check_report", "cluster": "rls"},
                       "limits": [{"name": "a", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 1}]}),
                "quota.stream_cut_off:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "requests", "per": "consumer", "window": "week", "limit": 1}]}),
                "quota.limits[0].window:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "tokens", "per": "consumer", "window": "day", "limit": 1}]}),
                "quota.limits[0].meter:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "requests", "per": "consumer", "window": "day", "limit": 1.5}]}),
                "quota.limits[0].limit:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "dollars", "per": "consumer", "window": "day", "limit": 1}]}),
                "quota.limits[0].meter:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "requests", "per": "consumer", "window": "day", "limit": 1, "models": ["*x"]}]}),
                "quota.limits[0].models[0]:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "requests", "per": "consumer", "window": "day", "limit": 1}], "tiers": {"t": {"b": 1}}}),
                "quota.tiers.t.b:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "requests", "per": "consumer", "window": "day", "limit": 1}], "consumers": {"x": "t"}}),
                "quota.consumers.x:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "requests", "per": "consumer", "window": "day", "limit": 1}], "mode": "audit"}),
                "quota.mode:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "requests", "per": "consumer", "window": "day", "limit": 1}], "global": {"backend": "redis"}}),
                "quota.global.backend:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "requests", "per": "consumer", "window": "day", "limit": 1}], "global": {"backend": "check_report"}}),
                "quota.global:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "requests", "per": "consumer", "window": "day", "limit": 1}], "global": {"backend": "check_report", "cluster": "a12345678"}}),
                "quota.global.cluster:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "requests", "per": "consumer", "window": "day", "limit": 1}], "global": {"backend": "envoy_ratelimit", "refund": true}}),
                "quota.global:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "total_tokens", "per": "consumer", "window": "day", "limit": 5e9}], "global": {"backend": "envoy_ratelimit"}}),
                "quota.limits[0].limit:",
            ),
            (
                json!({"limits": [{"name": "a", "meter": "requests", "per": "consumer", "window": "day", "limit": 1}], "admission": "post_accounting", "global": {"backend": "envoy_ratelimit"}}),
                "quota.admission:",
            ),
        ];
        for (value, field) in cases {
            let error = config(value.clone()).unwrap_err();
            assert!(error.starts_with(field), "{value}: {error}");
        }
    }
}
