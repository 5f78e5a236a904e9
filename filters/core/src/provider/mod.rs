//! Backends and the model table: which provider serves a model, under which id, with which
//! credentials.
//!
//! A backend is one provider endpoint (an Envoy cluster) with its kind, host, key and the
//! kind's own settings. The model table maps the names clients use to a backend and the
//! backend's model id: exact names, aliases of exact names, and prefix patterns (`claude-*`,
//! the requested name passed through). Exact names win over patterns, longer patterns over
//! shorter ones.

pub mod access;
pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod choose;
pub mod gemini;
pub mod models;
pub mod openai;

use crate::route::ApiKind;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A credential. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a key comes from: the Envoy VM's environment (`vm_config.environment_variables`), or
/// the plugin configuration itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    /// Name of an environment variable of the VM (listed in `vm_config.environment_variables`).
    #[serde(default)]
    #[schemars(extend("examples" = ["OPENAI_API_KEY"]))]
    pub env: Option<String>,
    /// The key itself (prefer `env`: a configuration is read by more people than a secret).
    #[serde(default)]
    #[schemars(extend("examples" = ["sk-proj-..."]))]
    pub value: Option<String>,
}

/// The API a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// OpenAI itself.
    Openai,
    /// Any server speaking OpenAI's API (vLLM, Ollama, Groq, Mistral, DeepSeek, OpenRouter…).
    OpenaiCompatible,
    /// Azure OpenAI: deployment URLs, `api-version`, `api-key`.
    Azure,
    Anthropic,
    /// Google AI Studio (Gemini API): `x-goog-api-key`.
    Gemini,
    /// Vertex AI: project and location in the path, a bearer token.
    Vertex,
    /// AWS Bedrock Runtime (Converse), SigV4-signed.
    Bedrock,
}

impl Kind {
    /// Label for `owned_by` in the model list and the provider metric label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Openai => "openai",
            Kind::OpenaiCompatible => "openai-compatible",
            Kind::Azure => "azure",
            Kind::Anthropic => "anthropic",
            Kind::Gemini => "gemini",
            Kind::Vertex => "vertex",
            Kind::Bedrock => "bedrock",
        }
    }

    /// Whether the model id goes into the request path (so it must be path-safe).
    pub fn model_in_path(self) -> bool {
        matches!(self, Kind::Azure | Kind::Gemini | Kind::Vertex)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// The API the backend speaks.
    #[schemars(extend("examples" = ["anthropic"]))]
    pub kind: Kind,
    /// Envoy cluster of the endpoint (it must exist; the route picks it from the cluster header).
    #[schemars(extend("examples" = ["anthropic"]))]
    pub cluster: String,
    /// `:authority` sent upstream (`api.anthropic.com`); unset: left as the client sent it.
    /// Required for `bedrock` (it is signed).
    #[serde(default)]
    #[schemars(extend("examples" = ["api.anthropic.com"]))]
    pub host: Option<String>,
    /// Path prefix before the API's own path. Default: `/v1` (OpenAI, Anthropic, compatible
    /// servers, Vertex), `/v1beta` (Gemini), none (Azure, Bedrock).
    #[serde(default)]
    #[schemars(extend("examples" = ["/api/v1"]))]
    pub base_path: Option<String>,
    /// The backend's key (`Authorization: Bearer`, `x-api-key`, `api-key` or
    /// `x-goog-api-key`, as the kind wants; the bearer token for `vertex`); the client's own
    /// credentials are never forwarded.
    #[serde(default)]
    pub api_key: Option<RawSecret>,
    /// Anthropic: `anthropic-version` header (default `2023-06-01`).
    #[serde(default)]
    #[schemars(extend("examples" = ["2023-06-01"]))]
    pub anthropic_version: Option<String>,
    /// Anthropic: `max_tokens` when the client sets none (Anthropic requires one; default 4096).
    #[serde(default)]
    #[schemars(extend("examples" = [1024]))]
    pub default_max_tokens: Option<u64>,
    /// Azure: the `api-version` query parameter (required).
    #[serde(default)]
    #[schemars(extend("examples" = ["2024-10-21"]))]
    pub api_version: Option<String>,
    /// Vertex: the Google Cloud project (required).
    #[serde(default)]
    #[schemars(extend("examples" = ["my-project"]))]
    pub project: Option<String>,
    /// Vertex: the region, e.g. `us-central1` (required).
    #[serde(default)]
    #[schemars(extend("examples" = ["us-central1"]))]
    pub location: Option<String>,
    /// Bedrock: the SigV4 access key id (required).
    #[serde(default)]
    pub aws_access_key_id: Option<RawSecret>,
    /// Bedrock: the SigV4 secret access key (required).
    #[serde(default)]
    pub aws_secret_access_key: Option<RawSecret>,
    /// Bedrock: the session token of temporary credentials.
    #[serde(default)]
    pub aws_session_token: Option<RawSecret>,
    /// Bedrock: the AWS region (required).
    #[serde(default)]
    #[schemars(extend("examples" = ["us-east-1"]))]
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub name: String,
    pub kind: Kind,
    pub cluster: String,
    pub host: Option<String>,
    pub base_path: String,
    pub api_key: Option<Secret>,
    pub anthropic_version: String,
    pub default_max_tokens: u64,
    pub api_version: String,
    pub project: String,
    pub location: String,
    /// Bedrock: SigV4 credentials and region.
    pub aws: Option<bedrock::Credentials>,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// The name clients use: exact, or a prefix ending in `*`.
    #[schemars(extend("examples" = ["claude-sonnet-4"]))]
    pub name: String,
    /// The backend (a key of `backends`) serving this name; one of `backend`, `alias_of`,
    /// `split`, `fallback` and `choose`.
    #[serde(default)]
    #[schemars(extend("examples" = ["anthropic"]))]
    pub backend: Option<String>,
    /// The backend's model id (default: the requested name).
    #[serde(default)]
    #[schemars(extend("examples" = ["claude-sonnet-4-20250514"]))]
    pub model: Option<String>,
    /// This name is another name for `alias_of` (an exact name of the table).
    #[serde(default)]
    #[schemars(extend("examples" = ["claude-sonnet-4"]))]
    pub alias_of: Option<String>,
    /// Weighted variants (canary, A/B): each request goes to one, sticky per key.
    #[serde(default)]
    pub split: Option<Vec<RawVariant>>,
    /// Backends tried in order by Envoy's retries (see [`RawFallback`]).
    #[serde(default)]
    pub fallback: Option<RawFallback>,
    /// Equivalent backends, one chosen per request by measured latency or by price (see
    /// [`choose`]).
    #[serde(default)]
    pub choose: Option<RawChoose>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawChoose {
    /// `latency` (the fastest measured time to first byte) or `cost` (the cheapest for the
    /// request, from the prices).
    #[schemars(extend("examples" = ["latency"]))]
    pub policy: String,
    /// The equivalent backends.
    pub backends: Vec<RawPricedTarget>,
    /// Error rate (0–1) above which a backend is left out (default 0.2).
    #[serde(default)]
    #[schemars(extend("examples" = [0.2]))]
    pub max_error_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPricedTarget {
    /// A key of `backends`.
    #[schemars(extend("examples" = ["gemini"]))]
    pub backend: String,
    /// The backend's model id (default: the requested name).
    #[serde(default)]
    #[schemars(extend("examples" = ["gemini-2.5-flash"]))]
    pub model: Option<String>,
    /// USD per million input tokens (needed by `cost`).
    #[serde(default)]
    #[schemars(extend("examples" = [0.1]))]
    pub input_price: Option<f64>,
    /// USD per million output tokens (needed by `cost`).
    #[serde(default)]
    #[schemars(extend("examples" = [0.4]))]
    pub output_price: Option<f64>,
}

/// A fallback list: the request goes to `cluster`, an Envoy cluster whose endpoints are the
/// backends as priorities 0, 1, … (host metadata `tollgate.backend` naming each); the route
/// retries on the next priority; this module, as an upstream filter of that cluster,
/// translates each attempt for the backend it goes to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    /// The Envoy cluster whose priorities are the backends.
    #[schemars(extend("examples" = ["fallback-resilient"]))]
    pub cluster: String,
    /// The backends in the order they are tried.
    pub backends: Vec<RawTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// A key of `backends`.
    #[schemars(extend("examples" = ["openai"]))]
    pub backend: String,
    /// The backend's model id (default: the requested name).
    #[serde(default)]
    #[schemars(extend("examples" = ["gpt-4o-mini"]))]
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVariant {
    /// The variant's name, in metrics and the access log (`stable`, `canary`, …).
    #[schemars(extend("examples" = ["canary"]))]
    pub variant: String,
    /// A key of `backends`.
    #[schemars(extend("examples" = ["openai"]))]
    pub backend: String,
    /// The backend's model id (default: the requested name).
    #[serde(default)]
    #[schemars(extend("examples" = ["gpt-4.1"]))]
    pub model: Option<String>,
    /// Relative weight; 0 takes the variant out (a rollback) while keeping it forceable.
    #[schemars(extend("examples" = [10]))]
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Backend name → where and how to reach it.
    pub backends: BTreeMap<String, RawBackend>,
    /// The model table: what clients may ask for, looked up by exact name, then alias, then the
    /// longest matching prefix.
    pub models: Vec<RawModel>,
    /// Header the filter sets to the backend's cluster; the route uses it as `cluster_header`.
    #[serde(default = "default_cluster_header")]
    pub cluster_header: String,
    /// Request header whose value keeps a client on one variant of a split (a consumer or
    /// session id). Without it, or when the request lacks it, each request is drawn anew (from
    /// Envoy's `x-request-id`).
    #[serde(default)]
    #[schemars(extend("examples" = ["x-tollgate-consumer"]))]
    pub sticky_header: Option<String>,
    /// Request header naming the variant to use (for testing a canary). Off unless set: a
    /// client could otherwise choose its backend.
    #[serde(default)]
    #[schemars(extend("examples" = ["x-tollgate-variant"]))]
    pub variant_header: Option<String>,
}

fn default_cluster_header() -> String {
    "x-tollgate-cluster".into()
}

#[derive(Debug, Clone)]
enum Entry {
    Model {
        backend: usize,
        model: Option<String>,
    },
    Split(Vec<Variant>),
    /// (cluster, [(backend, model id)]) in priority order.
    Fallback(String, Vec<(usize, Option<String>)>),
    Choose(choose::Policy, Vec<choose::Candidate>, u32),
    Alias(String),
}

#[derive(Debug, Clone)]
struct Variant {
    name: String,
    backend: usize,
    model: Option<String>,
    weight: u32,
}

/// How to pick among a split's variants.
#[derive(Debug, Clone, Copy, Default)]
pub struct Choice<'a> {
    /// A variant named by the (configured) override header.
    pub forced: Option<&'a str>,
    /// A uniform draw (see [`bucket`]).
    pub draw: u64,
    /// The backend of this attempt of a fallback list (the upstream filter's host metadata).
    pub attempt: Option<&'a str>,
}

/// A stable, well-mixed 64-bit draw for `key` and `model` (FNV-1a, then splitmix64's finaliser),
/// so a sticky key lands on the same variant on every worker and every restart.
pub fn bucket(key: &str, model: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0]).chain(model.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[derive(Debug, Clone)]
pub struct Config {
    pub backends: Vec<Backend>,
    exact: BTreeMap<String, Entry>,
    /// (prefix, backend, model), longest prefix first.
    prefixes: Vec<(String, usize, Option<String>)>,
    pub cluster_header: String,
    pub sticky_header: Option<String>,
    pub variant_header: Option<String>,
}

/// A choice's candidates with their backends' names.
pub type NamedCandidates<'a> = Vec<(&'a str, &'a choose::Candidate)>;

/// Where a model goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    pub backend: &'a Backend,
    /// The model id sent to the backend.
    pub model: &'a str,
    /// The split variant chosen, if the model is split.
    pub variant: Option<&'a str>,
    /// The exact table entry the name resolved to (an alias's target); `None` for a pattern.
    pub entry: Option<&'a str>,
    /// For a fallback list: the cluster that tries its backends in order (`backend` is then the
    /// first of them; each attempt is translated by the upstream filter).
    pub fallback: Option<&'a str>,
}

/// A credential from the VM's environment or the configuration; errors name `field` (its full
/// path).
pub fn resolve_secret(raw: &RawSecret, field: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, String> {
    match raw {
        RawSecret { env: Some(var), value: None } => match env(var) {
            Some(key) if header_safe(&key) => Ok(Secret(key)),
            Some(_) => Err(format!("{field}.env: {var} holds characters a header cannot carry")),
            None => Err(format!("{field}.env: {var} is not set in the VM's environment")),
        },
        RawSecret { env: None, value: Some(key) } if header_safe(key) => Ok(Secret(key.clone())),
        RawSecret { env: None, value: Some(_) } => {
            Err(format!("{field}.value: holds characters a header cannot carry"))
        }
        _ => Err(format!("{field}: set exactly one of `env` and `value`")),
    }
}

/// Header names and values must not smuggle a line break or a NUL into a request.
fn header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b >= 0x20 && b != 0x7f)
}

impl Config {
    /// Validates; `env` reads the VM's environment (keys named by `api_key.env`). Errors name
    /// the field (`prefix` is this section's path).
    pub fn validate(raw: RawConfig, prefix: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
        let err = |field: &str, message: String| Err(format!("{prefix}{field}: {message}"));
        let mut backends = Vec::new();
        for (name, b) in &raw.backends {
            let at = |f: &str| format!("backends.{name}.{f}");
            if !header_safe(&b.cluster) {
                return err(&at("cluster"), "must be a non-empty cluster name".into());
            }
            if let Some(host) = &b.host {
                if !header_safe(host) || host.contains('/') {
                    return err(&at("host"), format!("'{host}' is not a host[:port]"));
                }
            }
            // Azure's paths start at the resource root; the others' after `/v1`.
            let default_base = match b.kind {
                Kind::Azure => "",
                Kind::Gemini => "/v1beta",
                Kind::Bedrock => "",
                _ => "/v1",
            };
            let base_path = b.base_path.clone().unwrap_or_else(|| default_base.into());
            let path_ok = base_path.is_empty() || (base_path.starts_with('/') && header_safe(&base_path));
            if !path_ok || base_path.contains("..") || base_path.contains(['?', '#']) {
                return err(&at("base_path"), format!("'{base_path}' must be an absolute path"));
            }
            let secret = |field: &str, raw: &Option<RawSecret>| -> Result<Option<Secret>, String> {
                raw.as_ref().map(|raw| resolve_secret(raw, &format!("{prefix}{}", at(field)), env)).transpose()
            };
            let api_key = secret("api_key", &b.api_key)?;
            let aws = match (
                b.kind,
                secret("aws_access_key_id", &b.aws_access_key_id)?,
                secret("aws_secret_access_key", &b.aws_secret_access_key)?,
            ) {
                (Kind::Bedrock, Some(access_key_id), Some(secret_access_key)) => Some(bedrock::Credentials {
                    access_key_id,
                    secret_access_key,
                    session_token: secret("aws_session_token", &b.aws_session_token)?,
                }),
                (Kind::Bedrock, _, _) => {
                    return err(
                        &at("aws_access_key_id"),
                        "bedrock backends need aws_access_key_id and aws_secret_access_key".into(),
                    )
                }
                (_, None, None) if b.aws_session_token.is_none() => None,
                _ => return err(&at("kind"), "aws_* credentials are for `bedrock` backends".into()),
            };
            let region = match (b.kind, &b.region) {
                (Kind::Bedrock, Some(r)) if path_safe(r) => r.clone(),
                (Kind::Bedrock, Some(r)) => return err(&at("region"), format!("'{r}' is not a region")),
                (Kind::Bedrock, None) => return err(&at("region"), "is required for `bedrock` backends".into()),
                (_, Some(_)) => return err(&at("kind"), "region is for `bedrock` backends".into()),
                (_, None) => String::new(),
            };
            if b.kind == Kind::Bedrock && b.host.is_none() {
                return err(&at("host"), "is required for `bedrock` backends (it is signed)".into());
            }
            if b.kind != Kind::Anthropic && (b.anthropic_version.is_some() || b.default_max_tokens.is_some()) {
                return err(
                    &at("kind"),
                    "anthropic_version and default_max_tokens are for `anthropic` backends".into(),
                );
            }
            let anthropic_version = b.anthropic_version.clone().unwrap_or_else(|| "2023-06-01".into());
            if !header_safe(&anthropic_version) {
                return err(&at("anthropic_version"), "must be a header value".into());
            }
            let api_version = match (b.kind, &b.api_version) {
                (Kind::Azure, Some(v))
                    if !v.is_empty() && v.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') =>
                {
                    v.clone()
                }
                (Kind::Azure, Some(v)) => return err(&at("api_version"), format!("'{v}' is not an api-version")),
                (Kind::Azure, None) => return err(&at("api_version"), "is required for `azure` backends".into()),
                (_, Some(_)) => return err(&at("kind"), "api_version is for `azure` backends".into()),
                (_, None) => String::new(),
            };
            let mut vertex = [String::new(), String::new()];
            for (slot, (field, value)) in vertex.iter_mut().zip([("project", &b.project), ("location", &b.location)]) {
                match (b.kind, value) {
                    (Kind::Vertex, Some(v)) if path_safe(v) => *slot = v.clone(),
                    (Kind::Vertex, Some(v)) => return err(&at(field), format!("'{v}' cannot go into a path")),
                    (Kind::Vertex, None) => return err(&at(field), "is required for `vertex` backends".into()),
                    (_, Some(_)) => return err(&at("kind"), format!("{field} is for `vertex` backends")),
                    (_, None) => {}
                }
            }
            let [project, location] = vertex;
            let default_max_tokens = b.default_max_tokens.unwrap_or(4096);
            if default_max_tokens == 0 {
                return err(&at("default_max_tokens"), "must be at least 1".into());
            }
            backends.push(Backend {
                name: name.clone(),
                kind: b.kind,
                cluster: b.cluster.clone(),
                host: b.host.clone(),
                base_path: base_path.trim_end_matches('/').to_string(),
                api_key,
                anthropic_version,
                default_max_tokens,
                api_version,
                project,
                location,
                aws,
                region,
            });
        }
        let backend_index = |name: &str| backends.iter().position(|b| b.name == name);
        let mut exact = BTreeMap::new();
        let mut prefixes = Vec::new();
        for (i, m) in raw.models.iter().enumerate() {
            let at = |f: &str| format!("models[{i}].{f}");
            if m.name.is_empty() || m.name.len() > crate::request::MAX_MODEL_LEN {
                return err(&at("name"), "must be 1 to 128 characters".into());
            }
            if let Some(model) = &m.model {
                if !header_safe(model) {
                    return err(&at("model"), "must be a non-empty model id".into());
                }
            }
            // Azure, Gemini and Vertex put the model in the path: nothing that changes a path.
            let path_ok = |backend: &str, model: Option<&String>| {
                let in_path = raw.backends.get(backend).is_some_and(|b| b.kind.model_in_path());
                !in_path || m.name.ends_with('*') || path_safe(model.unwrap_or(&m.name))
            };
            if let Some(choose) = &m.choose {
                if m.backend.is_some()
                    || m.alias_of.is_some()
                    || m.split.is_some()
                    || m.model.is_some()
                    || m.fallback.is_some()
                {
                    return err(&at("choose"), "takes no `backend`, `alias_of`, `split`, `fallback` or `model`".into());
                }
                if m.name.contains('*') {
                    return err(&at("name"), "a choice is an exact name".into());
                }
                let policy = match choose.policy.as_str() {
                    "latency" => choose::Policy::Latency,
                    "cost" => choose::Policy::Cost,
                    other => return err(&at("choose.policy"), format!("'{other}' is not `latency` or `cost`")),
                };
                let max_error = choose.max_error_rate.unwrap_or(0.2);
                if !(0.0..=1.0).contains(&max_error) {
                    return err(&at("choose.max_error_rate"), "must be between 0 and 1".into());
                }
                if choose.backends.len() < 2 {
                    return err(&at("choose.backends"), "needs at least two backends".into());
                }
                let mut candidates = Vec::with_capacity(choose.backends.len());
                for (j, t) in choose.backends.iter().enumerate() {
                    let at = |f: &str| format!("models[{i}].choose.backends[{j}].{f}");
                    let Some(index) = backend_index(&t.backend) else {
                        return err(&at("backend"), format!("'{}' is not in `backends`", t.backend));
                    };
                    if candidates.iter().any(|c: &choose::Candidate| c.backend == index) {
                        return err(&at("backend"), "is listed twice".into());
                    }
                    if t.model.as_ref().is_some_and(|model| !header_safe(model))
                        || !path_ok(&t.backend, t.model.as_ref())
                    {
                        return err(&at("model"), "must be a model id this backend can be sent".into());
                    }
                    let price = |field: &str, value: Option<f64>| match (policy, value) {
                        (_, Some(v)) if v.is_finite() && v >= 0.0 => Ok(v),
                        (_, Some(_)) => Err(format!("{prefix}{}: must be a price of 0 or more", at(field))),
                        (choose::Policy::Cost, None) => {
                            Err(format!("{prefix}{}: is required by the `cost` policy", at(field)))
                        }
                        (choose::Policy::Latency, None) => Ok(0.0),
                    };
                    candidates.push(choose::Candidate {
                        backend: index,
                        model: t.model.clone(),
                        input_price: price("input_price", t.input_price)?,
                        output_price: price("output_price", t.output_price)?,
                    });
                }
                let entry = Entry::Choose(policy, candidates, (max_error * 1e6) as u32);
                if exact.insert(m.name.clone(), entry).is_some() {
                    return err(&at("name"), format!("'{}' is listed twice", m.name));
                }
                continue;
            }
            if let Some(fallback) = &m.fallback {
                if m.backend.is_some() || m.alias_of.is_some() || m.split.is_some() || m.model.is_some() {
                    return err(
                        &at("fallback"),
                        "a fallback takes no `backend`, `alias_of`, `split` or `model`".into(),
                    );
                }
                if m.name.contains('*') {
                    return err(&at("name"), "a fallback is an exact name".into());
                }
                if !header_safe(&fallback.cluster) {
                    return err(&at("fallback.cluster"), "must be a cluster name".into());
                }
                if fallback.backends.len() < 2 {
                    return err(&at("fallback.backends"), "needs at least two backends".into());
                }
                let mut targets = Vec::with_capacity(fallback.backends.len());
                for (j, t) in fallback.backends.iter().enumerate() {
                    let at = |f: &str| format!("models[{i}].fallback.backends[{j}].{f}");
                    let Some(index) = backend_index(&t.backend) else {
                        return err(&at("backend"), format!("'{}' is not in `backends`", t.backend));
                    };
                    if targets.iter().any(|(b, _)| *b == index) {
                        return err(&at("backend"), "is listed twice".into());
                    }
                    if t.model.as_ref().is_some_and(|model| !header_safe(model))
                        || !path_ok(&t.backend, t.model.as_ref())
                    {
                        return err(&at("model"), "must be a model id this backend can be sent".into());
                    }
                    targets.push((index, t.model.clone()));
                }
                if exact.insert(m.name.clone(), Entry::Fallback(fallback.cluster.clone(), targets)).is_some() {
                    return err(&at("name"), format!("'{}' is listed twice", m.name));
                }
                continue;
            }
            match (&m.backend, &m.alias_of, &m.split) {
                (Some(backend), None, None) => {
                    let Some(index) = backend_index(backend) else {
                        return err(&at("backend"), format!("'{backend}' is not in `backends`"));
                    };
                    if !path_ok(backend, m.model.as_ref()) {
                        return err(&at("model"), "cannot go into this backend's path (letters, digits, - _ .)".into());
                    }
                    if let Some(prefix) = m.name.strip_suffix('*') {
                        if prefix.contains('*') || m.model.is_some() {
                            return err(&at("name"), "a pattern is a prefix ending in *, and takes no `model`".into());
                        }
                        prefixes.push((prefix.to_string(), index, None));
                    } else if exact
                        .insert(m.name.clone(), Entry::Model { backend: index, model: m.model.clone() })
                        .is_some()
                    {
                        return err(&at("name"), format!("'{}' is listed twice", m.name));
                    }
                }
                (None, Some(target), None) => {
                    if m.name.contains('*') || m.model.is_some() {
                        return err(&at("alias_of"), "an alias is an exact name, without `model`".into());
                    }
                    if exact.insert(m.name.clone(), Entry::Alias(target.clone())).is_some() {
                        return err(&at("name"), format!("'{}' is listed twice", m.name));
                    }
                }
                (None, None, Some(split)) => {
                    if m.name.contains('*') || m.model.is_some() {
                        return err(&at("split"), "a split is an exact name, without `model`".into());
                    }
                    let mut variants = Vec::with_capacity(split.len());
                    for (j, v) in split.iter().enumerate() {
                        let at = |f: &str| format!("models[{i}].split[{j}].{f}");
                        let Some(index) = backend_index(&v.backend) else {
                            return err(&at("backend"), format!("'{}' is not in `backends`", v.backend));
                        };
                        if !metric_safe(&v.variant) || split.iter().take(j).any(|w| w.variant == v.variant) {
                            return err(&at("variant"), "must be a unique name of letters, digits, - _ .".into());
                        }
                        if v.model.as_ref().is_some_and(|model| !header_safe(model))
                            || !path_ok(&v.backend, v.model.as_ref())
                        {
                            return err(&at("model"), "must be a model id this backend can be sent".into());
                        }
                        variants.push(Variant {
                            name: v.variant.clone(),
                            backend: index,
                            model: v.model.clone(),
                            weight: v.weight,
                        });
                    }
                    if variants.iter().map(|v| u64::from(v.weight)).sum::<u64>() == 0 {
                        return err(&at("split"), "needs at least one variant with a weight above 0".into());
                    }
                    if exact.insert(m.name.clone(), Entry::Split(variants)).is_some() {
                        return err(&at("name"), format!("'{}' is listed twice", m.name));
                    }
                }
                _ => return err(&at("backend"), "set exactly one of `backend`, `alias_of` and `split`".into()),
            }
        }
        for (i, m) in raw.models.iter().enumerate() {
            if let Some(target) = &m.alias_of {
                if matches!(exact.get(target), None | Some(Entry::Alias(_))) {
                    return err(
                        &format!("models[{i}].alias_of"),
                        format!("'{target}' is not an exact model name of the table"),
                    );
                }
            }
        }
        prefixes.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.len()));
        if !header_safe(&raw.cluster_header) || raw.cluster_header.bytes().any(|b| b.is_ascii_uppercase() || b == b':')
        {
            return err("cluster_header", "must be a lowercase header name".into());
        }
        for (field, header) in [("sticky_header", &raw.sticky_header), ("variant_header", &raw.variant_header)] {
            if header
                .as_ref()
                .is_some_and(|h| !header_safe(h) || h.bytes().any(|b| b.is_ascii_uppercase() || b == b':'))
            {
                return err(field, "must be a lowercase header name".into());
            }
        }
        Ok(Config {
            backends,
            exact,
            prefixes,
            cluster_header: raw.cluster_header,
            sticky_header: raw.sticky_header,
            variant_header: raw.variant_header,
        })
    }

    /// The backend and model id for a requested model, if the table has it (a split's variant
    /// by the first draw: for listing and tests).
    pub fn resolve<'a>(&'a self, requested: &'a str) -> Option<Resolved<'a>> {
        self.resolve_with(requested, Choice::default())
    }

    /// The backend and model id for a requested model; a split's variant per `choice` (a forced
    /// variant that does not exist is ignored).
    pub fn resolve_with<'a>(&'a self, requested: &'a str, choice: Choice<'_>) -> Option<Resolved<'a>> {
        let exact = match self.exact.get(requested) {
            Some(Entry::Alias(target)) => self.exact.get(target.as_str()).map(|e| (target.as_str(), e)),
            Some(entry) => Some((requested, entry)),
            None => None,
        };
        match exact {
            Some((name, Entry::Model { backend, model })) => Some(Resolved {
                backend: self.backends.get(*backend)?,
                model: model.as_deref().unwrap_or(name),
                variant: None,
                fallback: None,
                entry: Some(name),
            }),
            Some((name, Entry::Choose(_, candidates, _))) => {
                // The stage picks (it has the measurements) and names the backend as the attempt.
                let candidate = match choice.attempt {
                    Some(attempt) => {
                        candidates.iter().find(|c| self.backends.get(c.backend).is_some_and(|b| b.name == attempt))?
                    }
                    None => candidates.first()?,
                };
                Some(Resolved {
                    backend: self.backends.get(candidate.backend)?,
                    model: candidate.model.as_deref().unwrap_or(name),
                    variant: None,
                    fallback: None,
                    entry: Some(name),
                })
            }
            Some((name, Entry::Fallback(cluster, targets))) => {
                // An attempt of the fallback (upstream role) names its backend; else the first.
                let (backend, model) = match choice.attempt {
                    Some(attempt) => {
                        targets.iter().find(|(b, _)| self.backends.get(*b).is_some_and(|b| b.name == attempt))?
                    }
                    None => targets.first()?,
                };
                Some(Resolved {
                    backend: self.backends.get(*backend)?,
                    model: model.as_deref().unwrap_or(name),
                    variant: None,
                    fallback: choice.attempt.is_none().then_some(cluster.as_str()),
                    entry: Some(name),
                })
            }
            Some((name, Entry::Split(variants))) => {
                let v = pick(variants, choice)?;
                Some(Resolved {
                    backend: self.backends.get(v.backend)?,
                    model: v.model.as_deref().unwrap_or(name),
                    variant: Some(&v.name),
                    fallback: None,
                    entry: Some(name),
                })
            }
            _ => self.resolve_prefix(requested),
        }
    }

    /// For a model chosen among equivalent backends: the policy, the candidates with their
    /// backend names, and the error-rate ceiling (ppm).
    pub fn choice_of(&self, requested: &str) -> Option<(choose::Policy, NamedCandidates<'_>, u32)> {
        let entry = match self.exact.get(requested)? {
            Entry::Alias(target) => self.exact.get(target.as_str())?,
            entry => entry,
        };
        let Entry::Choose(policy, candidates, max) = entry else { return None };
        let named = candidates.iter().filter_map(|c| Some((self.backends.get(c.backend)?.name.as_str(), c))).collect();
        Some((*policy, named, *max))
    }

    /// Whether `requested` (or what it is an alias of) is a split.
    pub fn is_split(&self, requested: &str) -> bool {
        match self.exact.get(requested) {
            Some(Entry::Split(_)) => true,
            Some(Entry::Alias(target)) => matches!(self.exact.get(target.as_str()), Some(Entry::Split(_))),
            _ => false,
        }
    }

    fn resolve_prefix<'a>(&'a self, requested: &'a str) -> Option<Resolved<'a>> {
        let (_, backend, _) = self.prefixes.iter().find(|(p, _, _)| requested.starts_with(p.as_str()))?;
        Some(Resolved {
            backend: self.backends.get(*backend)?,
            model: requested,
            variant: None,
            fallback: None,
            entry: None,
        })
    }

    /// Models clients may name exactly (patterns are not listed), with their backend's kind.
    pub fn listed(&self) -> impl Iterator<Item = (&str, Kind)> + '_ {
        self.exact.keys().filter_map(|name| Some((name.as_str(), self.resolve(name)?.backend.kind)))
    }
}

/// The variant for a draw: weights partition `[0, total)`.
fn pick<'v>(variants: &'v [Variant], choice: Choice<'_>) -> Option<&'v Variant> {
    if let Some(forced) = choice.forced.and_then(|f| variants.iter().find(|v| v.name == f)) {
        return Some(forced);
    }
    let total: u64 = variants.iter().map(|v| u64::from(v.weight)).sum();
    let mut at = choice.draw.checked_rem(total)?;
    for v in variants {
        if at < u64::from(v.weight) {
            return Some(v);
        }
        at -= u64::from(v.weight);
    }
    None
}

/// Names that go into metric labels as they are.
fn metric_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The path and credential headers of a request of `api` for `model` on `backend`; `None` when
/// the backend does not offer that API. The caller removes the client's own credentials.
pub fn target(backend: &Backend, api: ApiKind, model: &str) -> Option<(String, Vec<(&'static str, String)>)> {
    if backend.kind.model_in_path() && !path_safe(model) {
        return None; // a pattern passed an unsafe name through: never build a path from it
    }
    match backend.kind {
        Kind::Openai | Kind::OpenaiCompatible => Some((openai::path(backend, api)?, openai::auth_headers(backend))),
        Kind::Azure => Some((azure::path(backend, api, model)?, azure::headers(backend))),
        Kind::Anthropic => Some((anthropic::path(backend, api), anthropic::headers(backend))),
        Kind::Gemini | Kind::Vertex => Some((gemini::path(backend, api, model)?, gemini::headers(backend))),
        // Signed over the final body: the stage adds the signature once the body is known.
        Kind::Bedrock => Some((bedrock::path(backend, api, model)?, Vec::new())),
    }
}

/// Names that go into a path segment as they are: letters, digits, `-`, `_`, `.` (not `.`/`..`).
pub fn path_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The API a backend of `kind` is spoken to in, for a client that spoke `client`.
pub fn upstream_api(kind: Kind, client: ApiKind, stream: bool) -> Option<ApiKind> {
    match (kind, client) {
        (Kind::Gemini | Kind::Vertex, ApiKind::OpenAiChat | ApiKind::AnthropicMessages) => {
            Some(ApiKind::GeminiGenerate { stream })
        }
        (Kind::Bedrock, ApiKind::OpenAiChat | ApiKind::AnthropicMessages) => Some(ApiKind::BedrockConverse { stream }),
        (
            Kind::Openai | Kind::OpenaiCompatible,
            k @ (ApiKind::OpenAiChat
            | ApiKind::OpenAiEmbeddings
            | ApiKind::OpenAiCompletions
            | ApiKind::OpenAiResponses
            | ApiKind::OpenAiCompact
            | ApiKind::OpenAiImages
            | ApiKind::OpenAiSpeech),
        ) => Some(k),
        (
            Kind::Azure,
            k @ (ApiKind::OpenAiChat
            | ApiKind::OpenAiEmbeddings
            | ApiKind::OpenAiCompletions
            | ApiKind::OpenAiImages
            | ApiKind::OpenAiSpeech),
        ) => Some(k),
        (Kind::Openai | Kind::OpenaiCompatible | Kind::Azure, ApiKind::AnthropicMessages) => Some(ApiKind::OpenAiChat),
        (Kind::Anthropic, ApiKind::OpenAiChat | ApiKind::AnthropicMessages) => Some(ApiKind::AnthropicMessages),
        // Only the provider counts its model's tokens (Anthropic, and Bedrock's CountTokens for
        // the models it supports): an estimate would pass for a count.
        (Kind::Anthropic, ApiKind::AnthropicCountTokens) => Some(ApiKind::AnthropicCountTokens),
        (Kind::Bedrock, ApiKind::AnthropicCountTokens) => Some(ApiKind::BedrockCountTokens),
        (Kind::Openai, ApiKind::OpenAiInputTokens) => Some(ApiKind::OpenAiInputTokens),
        // OpenAI's own model and API: no other provider answers it.
        (Kind::Openai, ApiKind::OpenAiDecisions) => Some(ApiKind::OpenAiDecisions),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: serde_json::Value) -> Result<Config, String> {
        let raw: RawConfig = crate::config::from_json(value.to_string().as_bytes(), "provider_rewrite.")?;
        Config::validate(raw, "provider_rewrite.", &|name| (name == "ANTHROPIC_KEY").then(|| "sk-ant-x".to_string()))
    }

    fn base() -> serde_json::Value {
        json!({
            "backends": {
                "openai": {"kind": "openai", "cluster": "openai", "host": "api.openai.com", "api_key": {"value": "sk-o"}},
                "claude": {"kind": "anthropic", "cluster": "anthropic", "api_key": {"env": "ANTHROPIC_KEY"}}
            },
            "models": [
                {"name": "gpt-4o-mini", "backend": "openai"},
                {"name": "sonnet", "backend": "claude", "model": "claude-sonnet-4-20250514"},
                {"name": "fast", "alias_of": "gpt-4o-mini"},
                {"name": "claude-*", "backend": "claude"},
                {"name": "claude-3-*", "backend": "openai"}
            ]
        })
    }

    #[test]
    fn names_aliases_and_patterns_resolve() {
        let c = config(base()).unwrap();
        let r = |m| c.resolve(m).map(|r| (r.backend.name.as_str(), r.model));
        assert_eq!(r("gpt-4o-mini"), Some(("openai", "gpt-4o-mini")));
        assert_eq!(r("sonnet"), Some(("claude", "claude-sonnet-4-20250514")));
        assert_eq!(r("fast"), Some(("openai", "gpt-4o-mini")), "an alias resolves to its target's backend and id");
        assert_eq!(r("claude-opus-4-1"), Some(("claude", "claude-opus-4-1")));
        assert_eq!(r("claude-3-haiku"), Some(("openai", "claude-3-haiku")), "the longer prefix wins");
        assert_eq!(r("gpt-5"), None);
        let listed: Vec<_> = c.listed().collect();
        assert_eq!(listed, vec![("fast", Kind::Openai), ("gpt-4o-mini", Kind::Openai), ("sonnet", Kind::Anthropic)]);
        assert_eq!(c.backends[0].api_key.as_ref().unwrap().expose(), "sk-ant-x");
        assert_eq!(format!("{:?}", c.backends[0].api_key), "Some(Secret(***))");
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let cases = [
            (
                json!({"backends": {"b": {"kind": "palm", "cluster": "c"}}, "models": []}),
                "provider_rewrite.backends.b.kind",
            ),
            (
                json!({"backends": {"b": {"kind": "openai", "cluster": "c", "api_key": {"env": "MISSING"}}}, "models": []}),
                "provider_rewrite.backends.b.api_key.env:",
            ),
            (
                json!({"backends": {"b": {"kind": "openai", "cluster": "c", "api_key": {"value": "a\r\nb"}}}, "models": []}),
                "provider_rewrite.backends.b.api_key.value:",
            ),
            (
                json!({"backends": {"b": {"kind": "openai", "cluster": "c", "host": "x/y"}}, "models": []}),
                "provider_rewrite.backends.b.host:",
            ),
            (
                json!({"backends": {}, "models": [{"name": "m", "backend": "nope"}]}),
                "provider_rewrite.models[0].backend:",
            ),
            (
                json!({"backends": {}, "models": [{"name": "a", "alias_of": "b"}]}),
                "provider_rewrite.models[0].alias_of:",
            ),
            (
                json!({"backends": {"b": {"kind": "openai", "cluster": "c"}}, "models": [{"name": "m", "backend": "b"}, {"name": "m", "backend": "b"}]}),
                "provider_rewrite.models[1].name:",
            ),
            (
                json!({"backends": {"b": {"kind": "openai", "cluster": "c"}}, "models": [{"name": "x-*", "backend": "b", "model": "y"}]}),
                "provider_rewrite.models[0].name:",
            ),
            (
                json!({"backends": {"b": {"kind": "openai", "cluster": "c", "default_max_tokens": 5}}, "models": []}),
                "provider_rewrite.backends.b.kind:",
            ),
        ];
        for (value, field) in cases {
            let error = config(value.clone()).unwrap_err();
            assert!(error.starts_with(field), "{value}: {error}");
        }
    }

    fn split_config(stable: u32, canary: u32) -> Config {
        let mut value = base();
        value["models"].as_array_mut().unwrap().push(json!({"name": "chat", "split": [
            {"variant": "stable", "backend": "openai", "model": "gpt-4o-mini", "weight": stable},
            {"variant": "canary", "backend": "claude", "model": "claude-sonnet-4-20250514", "weight": canary}
        ]}));
        value["models"].as_array_mut().unwrap().push(json!({"name": "assistant", "alias_of": "chat"}));
        config(value).unwrap()
    }

    fn variant_of(c: &Config, model: &str, key: &str, forced: Option<&str>) -> (String, String) {
        let r = c.resolve_with(model, Choice { forced, draw: bucket(key, model), attempt: None }).unwrap();
        (r.variant.unwrap().to_string(), r.model.to_string())
    }

    #[test]
    fn splits_follow_their_weights_and_stick_to_a_key() {
        let c = split_config(90, 10);
        assert!(c.is_split("chat") && c.is_split("assistant") && !c.is_split("sonnet"));
        let n = 20_000;
        let canary = (0..n).filter(|i| variant_of(&c, "chat", &format!("consumer-{i}"), None).0 == "canary").count();
        // Binomial(20000, 0.1): sd ≈ 42; 4 sd either side.
        assert!((2000 - 170..=2000 + 170).contains(&canary), "{canary} of {n}");
        for i in 0..100 {
            let key = format!("user-{i}");
            assert_eq!(variant_of(&c, "chat", &key, None), variant_of(&c, "chat", &key, None), "sticky");
        }
        assert_eq!(variant_of(&c, "chat", "k", Some("canary")).1, "claude-sonnet-4-20250514", "forced");
        assert_eq!(variant_of(&c, "assistant", "k", Some("canary")).0, "canary", "through an alias");
        assert_eq!(variant_of(&c, "chat", "k", Some("nope")), variant_of(&c, "chat", "k", None), "unknown: ignored");
        // Rollback: the canary's weight to 0; nobody lands there unless forced.
        let rolled_back = split_config(100, 0);
        assert!((0..2000).all(|i| variant_of(&rolled_back, "chat", &i.to_string(), None).0 == "stable"));
        assert_eq!(variant_of(&rolled_back, "chat", "k", Some("canary")).0, "canary");
        // Moving weights moves only the keys that must move: stable-at-90 keys stay stable at 95.
        let wider = split_config(95, 5);
        assert!((0..2000)
            .map(|i| format!("c{i}"))
            .all(|k| variant_of(&wider, "chat", &k, None).0 == "stable"
                || variant_of(&c, "chat", &k, None).0 == "canary"));
    }

    #[test]
    fn split_errors_name_the_field() {
        let with = |split: serde_json::Value| {
            let mut value = base();
            value["models"].as_array_mut().unwrap().push(json!({"name": "chat", "split": split}));
            config(value).unwrap_err()
        };
        let error = with(json!([{"variant": "a", "backend": "nope", "weight": 1}]));
        assert!(error.starts_with("provider_rewrite.models[5].split[0].backend:"), "{error}");
        let error = with(json!([{"variant": "a", "backend": "openai", "weight": 0}]));
        assert!(error.starts_with("provider_rewrite.models[5].split:"), "{error}");
        let error = with(
            json!([{"variant": "a", "backend": "openai", "weight": 1}, {"variant": "a", "backend": "claude", "weight": 1}]),
        );
        assert!(error.starts_with("provider_rewrite.models[5].split[1].variant:"), "{error}");
        let error = with(json!([{"variant": "a;b=c", "backend": "openai", "weight": 1}]));
        assert!(error.starts_with("provider_rewrite.models[5].split[0].variant:"), "{error}");
    }

    #[test]
    fn fallback_lists_resolve_per_attempt() {
        let mut value = base();
        value["models"].as_array_mut().unwrap().push(json!({"name": "resilient", "fallback": {"cluster": "fb", "backends": [
            {"backend": "claude", "model": "claude-sonnet-4-20250514"}, {"backend": "openai", "model": "gpt-4o-mini"}]}}));
        let c = config(value.clone()).unwrap();
        let downstream = c.resolve("resilient").unwrap();
        assert_eq!((downstream.fallback, downstream.backend.name.as_str()), (Some("fb"), "claude"));
        let attempt = |backend| {
            let r = c.resolve_with("resilient", Choice { attempt: Some(backend), ..Choice::default() }).unwrap();
            (r.fallback, r.backend.name.clone(), r.model.to_string())
        };
        assert_eq!(attempt("openai"), (None, "openai".into(), "gpt-4o-mini".into()));
        assert_eq!(attempt("claude"), (None, "claude".into(), "claude-sonnet-4-20250514".into()));
        assert!(c.resolve_with("resilient", Choice { attempt: Some("gemini"), ..Choice::default() }).is_none());

        value["models"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "one", "fallback": {"cluster": "fb2", "backends": [
            {"backend": "claude"}]}}));
        assert!(config(value).unwrap_err().starts_with("provider_rewrite.models[6].fallback.backends:"));
    }

    #[test]
    fn choices_name_their_candidates_and_errors_name_the_field() {
        let with = |choose: serde_json::Value| {
            let mut value = base();
            value["models"].as_array_mut().unwrap().push(json!({"name": "best", "choose": choose}));
            config(value)
        };
        let c = with(json!({"policy": "cost", "backends": [
            {"backend": "openai", "model": "gpt-4o-mini", "input_price": 0.15, "output_price": 0.6},
            {"backend": "claude", "model": "claude-3-5-haiku", "input_price": 0.8, "output_price": 4}]}))
        .unwrap();
        let (policy, candidates, max) = c.choice_of("best").unwrap();
        assert_eq!((policy, max), (choose::Policy::Cost, 200_000));
        assert_eq!(candidates.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["openai", "claude"]);
        let chosen = c.resolve_with("best", Choice { attempt: Some("claude"), ..Choice::default() }).unwrap();
        assert_eq!(chosen.model, "claude-3-5-haiku");
        for (choose, field) in [
            (json!({"policy": "fastest", "backends": []}), "models[5].choose.policy:"),
            (
                json!({"policy": "cost", "backends": [{"backend": "openai"}, {"backend": "claude"}]}),
                "models[5].choose.backends[0].input_price:",
            ),
            (json!({"policy": "latency", "backends": [{"backend": "openai"}]}), "models[5].choose.backends:"),
            (
                json!({"policy": "latency", "max_error_rate": 2, "backends": [{"backend": "openai"}, {"backend": "claude"}]}),
                "models[5].choose.max_error_rate:",
            ),
        ] {
            let error = with(choose).unwrap_err();
            assert!(error.starts_with(&format!("provider_rewrite.{field}")), "{error}");
        }
    }
}
