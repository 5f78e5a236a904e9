//! provider-rewrite: one API in front of many providers.
//!
//! Request headers: `GET /v1/models` and `GET /v1/models/{id}` are answered by the gateway from
//! its model table (`provider::models`, in the client's format); other AI requests are held
//! (`Pause`) until the body is read. Plan (after the one parse): the model is resolved in the
//! table (exact name, alias, longest prefix) to a backend and the backend's model id, or refused
//! with 404 in the client's dialect; `ex.upstream` tells the other stages which API the answer
//! will come in. Request body: for a backend that speaks the client's API
//! the model id is spliced in place (nothing else changes); for another API the request is
//! translated (OpenAI chat → Anthropic Messages). Then the routing header (the route's
//! `cluster_header`), `:path`, `:authority` and the backend's credentials are set; the client's
//! own credentials never reach a provider.
//!
//! Responses of a translated request are rewritten into the client's dialect: a JSON answer is
//! held until complete (bounded), a stream is re-framed event by event as it arrives, an error
//! becomes the client dialect's error (429 keeps `retry-after`, Anthropic's 529 becomes 503).
//! The token-counter stage runs before this one and reads the provider's own format, so usage
//! is counted once, exactly as the provider reported it.

use super::{Answer, Exchange, HeaderEdit, HeadersFlow, Now, Outbox, RequestHead, ResponseHead, Stage, StageFactory};
use super::{StageHost, Upstream};
use crate::api::anthropic::{MessagesRequest, MessagesResponse};
use crate::api::openai::{ChatCompletionRequest, ChatCompletionResponse};
use crate::convert::anthropic::{self as to_anthropic, StreamToOpenAi};
use crate::convert::bedrock as to_bedrock;
use crate::convert::gemini as to_gemini;
use crate::convert::openai as to_openai;
use crate::convert::{Chain, StreamTranslate};
use crate::error::{Dialect, Error};
use crate::metrics;
use crate::provider::{self, Backend, Config, Kind};
use crate::request::Splice;
use crate::route::ApiKind;
use serde::Deserialize;
use serde_json::Value;
use std::rc::Rc;

/// The header in which the downstream stage keeps the client's path for the upstream instances
/// of a fallback cluster (every attempt sees the headers the previous one rewrote).
pub const CLIENT_PATH_HEADER: &str = "x-tollgate-client-path";

/// The provider-rewrite configuration: the model table and its backends, and the stage's own
/// settings.
// It describes the whole section (the JSON Schema comes from it); `parse` reads the two parts
// apart, as `deny_unknown_fields` does not work through `flatten`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(flatten)]
    pub table: provider::RawConfig,
    #[serde(flatten)]
    pub own: RawSettings,
}

/// The stage's settings besides the model table.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// Largest translated JSON answer held in memory (bytes, at least 1024).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Largest single event of a translated stream (bytes, at least 1024).
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Where this instance runs: `downstream` (the listener's filter chain) or `upstream` (a
    /// fallback cluster's upstream filters, translating each attempt).
    #[serde(default)]
    pub role: Role,
    /// Who may call which model and provider, per consumer tier.
    #[serde(default)]
    pub access: Option<provider::access::RawAccess>,
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, schemars::JsonSchema, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// In the listener's HTTP filter chain.
    #[default]
    Downstream,
    /// In a fallback cluster's `upstream_http_filters`.
    Upstream,
}

fn default_max_response_bytes() -> usize {
    8 << 20
}

fn default_max_event_bytes() -> usize {
    1 << 20
}

#[derive(Debug)]
pub struct Settings {
    pub table: Config,
    pub max_response_bytes: usize,
    pub max_event_bytes: usize,
    /// Where this instance runs: in the listener's filter chain (`downstream`, the default), or
    /// in a fallback cluster's upstream filters (`upstream`), once per attempt.
    pub upstream_role: bool,
    /// Who may call which model (see `provider::access`).
    pub access: Option<provider::access::Access>,
}

/// The access check's view of a resolution.
fn target<'a>(requested: &'a str, resolved: &provider::Resolved<'a>) -> provider::access::Target<'a> {
    provider::access::Target {
        requested,
        entry: resolved.entry,
        model: resolved.model,
        backend: &resolved.backend.name,
        kind: resolved.backend.kind.label(),
    }
}

/// Parses and validates the section; `env` reads the VM's environment (for `api_key.env`).
pub fn parse(json: &[u8], prefix: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, String> {
    // `deny_unknown_fields` does not work through `flatten`: read the table apart.
    let value: serde_json::Value = crate::config::from_json(json, prefix)?;
    let mut table_value = value.clone();
    let mut own = serde_json::Map::new();
    if let Some(object) = table_value.as_object_mut() {
        for key in ["max_response_bytes", "max_event_bytes", "role", "access"] {
            if let Some(v) = object.remove(key) {
                own.insert(key.into(), v);
            }
        }
    }
    let table: provider::RawConfig = crate::config::from_json(table_value.to_string().as_bytes(), prefix)?;
    let own: RawSettings = crate::config::from_json(serde_json::Value::Object(own).to_string().as_bytes(), prefix)?;
    if own.max_response_bytes < 1024 {
        return Err(format!("{prefix}max_response_bytes: must be at least 1024"));
    }
    if own.max_event_bytes < 1024 {
        return Err(format!("{prefix}max_event_bytes: must be at least 1024"));
    }
    let table = Config::validate(table, prefix, env)?;
    let access = match own.access {
        Some(raw) => {
            let backends: Vec<&str> = table.backends.iter().map(|b| b.name.as_str()).collect();
            Some(provider::access::Access::validate(raw, &format!("{prefix}access."), &backends, env)?)
        }
        None => None,
    };
    Ok(Settings {
        table,
        access,
        max_response_bytes: own.max_response_bytes,
        max_event_bytes: own.max_event_bytes,
        upstream_role: own.role == Role::Upstream,
    })
}

/// Per-VM state of the stage.
pub struct ProviderRewrite {
    settings: Rc<Settings>,
}

impl ProviderRewrite {
    pub fn new(settings: Settings) -> Self {
        ProviderRewrite { settings: Rc::new(settings) }
    }
}

impl StageFactory for ProviderRewrite {
    fn create(&self) -> Box<dyn Stage> {
        Box::new(ProviderRewriteStream {
            settings: self.settings.clone(),
            backend: None,
            attempt: None,
            measured: None,
            tier: None,
            first_byte_ns: None,
            status: 0,
            include_usage: false,
            variant: None,
            pair: Pair::None,
            response: Response::Pass,
        })
    }
}

/// Which translation a stream needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pair {
    /// Same API both sides.
    None,
    /// OpenAI chat client, Anthropic backend.
    OpenAiToAnthropic,
    /// Anthropic Messages client, OpenAI-style backend.
    AnthropicToOpenAi,
    /// OpenAI chat client, Gemini backend.
    OpenAiToGemini,
    /// Anthropic Messages client, Gemini backend (OpenAI chat as the pivot).
    AnthropicToGemini,
    /// OpenAI chat client, Bedrock Converse backend.
    OpenAiToBedrock,
    /// Anthropic Messages client, Bedrock Converse backend (OpenAI chat as the pivot).
    AnthropicToBedrock,
    /// Anthropic `count_tokens` client, Bedrock CountTokens backend (the same pivot).
    AnthropicCountToBedrock,
}

/// How the response of this stream is rewritten.
enum Response {
    /// Same API as the client's (or not routed): untouched.
    Pass,
    /// A JSON answer, held until complete.
    Json(Vec<u8>),
    /// An error answer with its status, held until complete.
    Error(u16, Vec<u8>),
    Stream(Box<dyn StreamTranslate>),
    /// The answer cannot be translated (compressed, or too large): one error body replaces it.
    Refused(&'static str),
}

pub struct ProviderRewriteStream {
    settings: Rc<Settings>,
    /// Index of the chosen backend.
    backend: Option<usize>,
    /// Upstream role: the backend of this attempt (the upstream host's metadata); for a model
    /// chosen by latency or cost, the backend chosen.
    attempt: Option<String>,
    /// The backend whose latency and errors this exchange is recorded for (a chosen model).
    measured: Option<String>,
    /// The caller's access tier, when an access policy is configured (`None`: no tier).
    tier: Option<String>,
    first_byte_ns: Option<u64>,
    status: u16,
    /// The OpenAI client asked for the usage chunk of a stream.
    include_usage: bool,
    /// The split variant chosen, if any.
    variant: Option<String>,
    pair: Pair,
    response: Response,
}

/// The APIs this stage routes; the others (Gemini, Bedrock and Vertex native paths, Claude on
/// Vertex's `rawPredict` included: its path names its model and its provider) pass through.
fn routed(route: &crate::route::Route) -> bool {
    route.provider != "vertex"
        && matches!(
            route.kind,
            ApiKind::OpenAiChat
                | ApiKind::OpenAiCompletions
                | ApiKind::OpenAiEmbeddings
                | ApiKind::OpenAiResponses
                | ApiKind::OpenAiInputTokens
                | ApiKind::OpenAiCompact
                | ApiKind::OpenAiImages
                | ApiKind::OpenAiSpeech
                | ApiKind::OpenAiDecisions
                | ApiKind::AnthropicMessages
                | ApiKind::AnthropicCountTokens
        )
}

impl ProviderRewriteStream {
    /// `GET /v1/models` and `GET /v1/models/{id}`, answered from the model table: the models
    /// this caller may use (all, without an access policy), in Anthropic's format when the
    /// request carries `anthropic-version` (Anthropic's SDKs always send it).
    fn models(&self, ex: &Exchange, head: &RequestHead, host: &dyn StageHost, out: &mut Outbox) -> HeadersFlow {
        out.counter(metrics::name("provider.models_listed", &[]), 1);
        let dialect =
            if host.request_header("anthropic-version").is_some() { Dialect::Anthropic } else { Dialect::OpenAi };
        let table = &self.settings.table;
        let visible = |name: &str, resolved: &provider::Resolved<'_>| {
            self.settings.access.as_ref().is_none_or(|a| a.allows(self.tier.as_deref(), &target(name, resolved)))
        };
        let body = match ex.route.path_model.as_deref() {
            // A name any request could use (a pattern's too), not only the listed ones.
            Some(id) => match table.resolve(id).filter(|r| visible(id, r)) {
                Some(resolved) => provider::models::model(dialect, id, resolved.backend.kind),
                None => return HeadersFlow::Reply(Error::model_not_found(id), dialect),
            },
            None => {
                let listed: Vec<_> =
                    table.listed().filter(|(name, _)| table.resolve(name).is_some_and(|r| visible(name, &r))).collect();
                let query = head.path.split_once('?').map_or("", |(_, q)| q);
                match provider::models::list(dialect, &listed, query) {
                    Ok(body) => body,
                    Err(error) => return HeadersFlow::Reply(error, dialect),
                }
            }
        };
        HeadersFlow::Answer(Answer { status: 200, content_type: "application/json", body })
    }

    /// The headers that send the request for `model` to `backend`, in `api`.
    fn route_headers(&self, backend: &Backend, api: ApiKind, model: &str, out: &mut Outbox) -> Result<String, Error> {
        // A tier's own key for this backend replaces the backend's (a team's own Azure key).
        let own_key = self.settings.access.as_ref().and_then(|a| a.credential(self.tier.as_deref(), &backend.name));
        let with_own_key;
        let backend = match own_key {
            Some(key) => {
                with_own_key = Backend { api_key: Some(key.clone()), ..backend.clone() };
                &with_own_key
            }
            None => backend,
        };
        let Some((path, credentials)) = provider::target(backend, api, model) else {
            let message = format!("model '{model}' cannot be named in a request to this backend");
            return Err(Error::InvalidRequest { param: Some("model".into()), message });
        };
        let edits = &mut out.request_headers;
        if !self.settings.upstream_role {
            // (Upstream, the route and cluster are chosen already.)
            edits.push(HeaderEdit::Set(cluster_header(&self.settings), backend.cluster.clone()));
        }
        edits.push(HeaderEdit::Set(":path", path.clone()));
        if let Some(host) = &backend.host {
            edits.push(HeaderEdit::Set(":authority", host.clone()));
        }
        // The client's credentials are the gateway's business, never a provider's; and on a
        // fallback attempt, the headers set for the previous backend go.
        const PROVIDER_HEADERS: [&str; 7] = [
            "authorization",
            "x-api-key",
            "api-key",
            "anthropic-version",
            "x-goog-api-key",
            "x-amz-date",
            "x-amz-security-token",
        ];
        for name in PROVIDER_HEADERS {
            if !credentials.iter().any(|(n, _)| *n == name) {
                edits.push(HeaderEdit::Remove(name));
            }
        }
        for (name, value) in credentials {
            edits.push(HeaderEdit::Set(name, value));
        }
        Ok(path)
    }
}

/// The configured routing header, as the `&'static str` a header edit carries. Leaked once per
/// distinct name: configurations are few and live as long as the VM.
fn cluster_header(settings: &Settings) -> &'static str {
    match settings.table.cluster_header.as_str() {
        "x-tollgate-cluster" => "x-tollgate-cluster",
        other => intern(other),
    }
}

fn intern(name: &str) -> &'static str {
    thread_local! {
        static NAMES: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(found) = names.iter().find(|n| **n == name) {
            return *found;
        }
        let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
        names.push(leaked);
        leaked
    })
}

impl Stage for ProviderRewriteStream {
    fn request_headers(
        &mut self,
        ex: &mut Exchange,
        head: &RequestHead,
        host: &dyn StageHost,
        out: &mut Outbox,
    ) -> HeadersFlow {
        if self.settings.upstream_role {
            if !routed(&ex.route) {
                return HeadersFlow::Continue;
            }
            // Which backend this attempt goes to: the host Envoy picked from the fallback cluster.
            const PATH: [&str; 5] = ["xds", "upstream_host_metadata", "filter_metadata", "tollgate", "backend"];
            self.attempt = host.property(&PATH).and_then(|v| String::from_utf8(v).ok());
            if self.attempt.is_none() {
                out.log(super::LogLevel::Warn, "upstream role: the upstream host has no tollgate.backend metadata");
            }
            return HeadersFlow::Pause;
        }
        if let Some(access) = &self.settings.access {
            let consumer = access.consumer.resolve(host);
            let from_property = access.tier_property.as_ref().and_then(|p| crate::consumer::property_string(host, p));
            self.tier = access.tier(consumer.as_deref(), from_property.as_deref()).map(str::to_string);
            ex.tier = self.tier.clone();
        }
        if ex.route.kind == ApiKind::OpenAiModels {
            return self.models(ex, head, host, out);
        }
        if routed(&ex.route) && !head.has_body {
            // No model, no route; forwarded, it would reach the route's default cluster.
            HeadersFlow::Reply(Error::InvalidJson { detail: "the body is empty".into() }, ex.dialect())
        } else if routed(&ex.route) {
            HeadersFlow::Pause // the backend is known only once the body is read
        } else {
            HeadersFlow::Continue
        }
    }

    fn needs_request_body(&self, ex: &Exchange, _head: &RequestHead) -> bool {
        routed(&ex.route)
    }

    fn plan(&mut self, ex: &mut Exchange, host: &dyn StageHost, out: &mut Outbox) -> Result<(), (Error, Dialect)> {
        let client = ex.route.kind;
        if !routed(&ex.route) {
            return Ok(());
        }
        let dialect = ex.dialect();
        if ex.parsed.is_none() {
            // No model, no route: the request cannot go anywhere.
            return Err((ex.unreadable_error("the body could not be read as this API's request"), dialect));
        }
        let Some(requested) = ex.request_model() else {
            let message = format!("'model' is required: a string of 1 to {} bytes", crate::request::MAX_MODEL_LEN);
            return Err((Error::invalid("model", message), dialect));
        };
        let table = &self.settings.table;
        // Headers are read (host calls) only for a split model.
        let mut choice = provider::Choice::default();
        let (forced, key);
        if table.is_split(requested) {
            forced = table.variant_header.as_deref().and_then(|h| host.request_header(h));
            key = table
                .sticky_header
                .as_deref()
                .and_then(|h| host.request_header(h))
                .or_else(|| host.request_header("x-request-id"))
                .unwrap_or_else(|| ex.started_ns.to_string());
            choice =
                provider::Choice { forced: forced.as_deref(), draw: provider::bucket(&key, requested), attempt: None };
        }
        if let Some((policy, candidates, max_error_ppm)) = table.choice_of(requested) {
            let store = host.shared_data();
            let stats: Vec<_> = candidates.iter().map(|(name, _)| provider::choose::load(store, name)).collect();
            let list: Vec<_> = candidates.iter().map(|(_, c)| *c).collect();
            let key = host.request_header("x-request-id").unwrap_or_else(|| ex.started_ns.to_string());
            let info = ex.parsed.as_ref().map(|p| &p.info);
            let input = info.map_or(0, |i| i.estimated_prompt_tokens());
            let output = info.map_or(256, |i| i.output_cap(256));
            let at = provider::choose::pick(
                policy,
                &list,
                &stats,
                max_error_ppm,
                provider::bucket(&key, requested),
                input,
                output,
            );
            self.attempt = candidates.get(at).map(|(name, _)| name.to_string());
            self.measured = self.attempt.clone();
        }
        choice.attempt = self.attempt.as_deref();
        let Some(resolved) = table.resolve_with(requested, choice) else {
            return Err((Error::model_not_found(requested), dialect));
        };
        // (An upstream instance of a fallback does not decide again: the downstream one did.)
        if let (Some(access), false) = (&self.settings.access, self.settings.upstream_role) {
            let allowed = access.allows(self.tier.as_deref(), &target(requested, &resolved));
            let outcome = match (allowed, access.mode) {
                (true, _) => "allowed",
                (false, provider::access::Mode::Shadow) => "shadow_denied",
                (false, provider::access::Mode::Enforce) => "denied",
            };
            let tier = self.tier.as_deref().unwrap_or("");
            out.counter(metrics::name("access.decisions", &[("tier", tier), ("outcome", outcome)]), 1);
            if outcome == "denied" {
                return Err((Error::forbidden(requested), dialect));
            }
        }
        if let Some(cluster) = resolved.fallback {
            // Envoy tries the list's backends in turn; the upstream filter translates each
            // attempt, so the answer arrives here in the client's dialect.
            let cluster = cluster.to_string();
            out.request_headers.push(HeaderEdit::Set(cluster_header(&self.settings), cluster.clone()));
            let path = host.request_header(":path").unwrap_or_default();
            out.request_headers.push(HeaderEdit::Set(CLIENT_PATH_HEADER, path));
            out.counter(
                metrics::name("provider.requests", &[("backend", &cluster), ("api", "fallback"), ("variant", "")]),
                1,
            );
            out.state("tollgate.backend", cluster);
            return Ok(());
        }
        let backend = resolved.backend;
        let Some(kind) = provider::upstream_api(backend.kind, client, ex.streaming()) else {
            let error = Error::InvalidRequest {
                param: Some("model".into()),
                message: format!(
                    "model '{}' is served by a backend ({}) that does not offer the {} API",
                    crate::error::shown(requested),
                    backend.kind.label(),
                    client.operation()
                ),
            };
            return Err((error, dialect));
        };
        let upstream = Upstream { kind, provider: backend.kind.label(), model: resolved.model.to_string() };
        self.backend = table.backends.iter().position(|b| b.name == backend.name);
        self.variant = resolved.variant.map(str::to_string);
        out.state("tollgate.backend", backend.name.clone());
        if let Some(variant) = resolved.variant {
            out.state("tollgate.variant", variant);
        }
        ex.upstream = Some(upstream);
        Ok(())
    }

    fn request_body(
        &mut self,
        ex: &mut Exchange,
        body: &[u8],
        splices: &mut Vec<Splice>,
        _host: &dyn StageHost,
        out: &mut Outbox,
    ) -> Result<(), (Error, Dialect)> {
        let settings = self.settings.clone();
        let (Some(backend), Some(upstream)) =
            (self.backend.and_then(|i| settings.table.backends.get(i)), ex.upstream.clone())
        else {
            return Ok(());
        };
        let dialect = ex.dialect();
        let variant = self.variant.as_deref().unwrap_or("");
        out.counter(
            metrics::name(
                "provider.requests",
                &[("backend", &backend.name), ("api", upstream.kind.operation()), ("variant", variant)],
            ),
            1,
        );
        if upstream.kind == ex.route.kind {
            if ex.request_model() != Some(upstream.model.as_str()) {
                rename_model(ex, body, &upstream.model, splices).map_err(|e| (e, dialect))?;
            }
            self.route_headers(backend, upstream.kind, &upstream.model, out).map_err(|e| (e, dialect))?;
            if self.settings.upstream_role && splices.is_empty() {
                // A previous attempt may have set another length: the body is always re-sent,
                // so that `content-length` is set for this one.
                splices.push(Splice { at: 0, remove: 0, insert: Vec::new() });
            }
            return Ok(());
        }
        let invalid = |e: serde_json::Error| {
            let message = format!("not a {} request: {}", ex.route.kind.operation(), crate::error::redacted(&e));
            (Error::InvalidRequest { param: None, message }, dialect)
        };
        let anthropic_to_openai = |field| -> Result<Value, (Error, Dialect)> {
            let request: MessagesRequest = serde_json::from_slice(body).map_err(invalid)?;
            to_openai::request_from_anthropic(&request, &upstream.model, field).map_err(|e| (e, dialect))
        };
        let no_pair = || (Error::Internal { detail: "no translation for this pair of APIs".into() }, dialect);
        let anthropic_client = ex.route.kind == ApiKind::AnthropicMessages;
        let translated = match backend.kind {
            Kind::Openai | Kind::OpenaiCompatible | Kind::Azure if anthropic_client => {
                self.pair = Pair::AnthropicToOpenAi;
                let field = match backend.kind {
                    Kind::OpenaiCompatible => to_openai::MaxTokensField::MaxTokens,
                    _ => to_openai::MaxTokensField::MaxCompletionTokens,
                };
                serde_json::to_vec(&anthropic_to_openai(field)?)
            }
            Kind::Anthropic | Kind::Gemini | Kind::Vertex | Kind::Bedrock => {
                // Every other backend is reached from OpenAI chat: the client's own request, or
                // an Anthropic client's translated to it (the pivot).
                let request: ChatCompletionRequest = match ex.route.kind {
                    ApiKind::OpenAiChat => {
                        let request: ChatCompletionRequest = serde_json::from_slice(body).map_err(invalid)?;
                        self.include_usage =
                            request.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
                        request
                    }
                    ApiKind::AnthropicMessages if backend.kind != Kind::Anthropic => {
                        let pivot = anthropic_to_openai(to_openai::MaxTokensField::MaxTokens)?;
                        serde_json::from_value(pivot).map_err(invalid)?
                    }
                    ApiKind::AnthropicCountTokens if backend.kind == Kind::Bedrock => {
                        // A count has no `max_tokens`; the Messages reader needs one, and
                        // CountTokens takes no inference settings, so its value goes nowhere.
                        let mut count: Value = serde_json::from_slice(body).map_err(invalid)?;
                        if let Some(object) = count.as_object_mut() {
                            object.entry("max_tokens").or_insert(Value::from(1));
                        }
                        let request: MessagesRequest = serde_json::from_value(count).map_err(invalid)?;
                        let field = to_openai::MaxTokensField::MaxTokens;
                        let pivot = to_openai::request_from_anthropic(&request, &upstream.model, field)
                            .map_err(|e| (e, dialect))?;
                        serde_json::from_value(pivot).map_err(invalid)?
                    }
                    _ => return Err(no_pair()),
                };
                let fail = |e| (e, dialect);
                match backend.kind {
                    Kind::Anthropic => {
                        self.pair = Pair::OpenAiToAnthropic;
                        let max = backend.default_max_tokens;
                        serde_json::to_vec(
                            &to_anthropic::request_from_openai(&request, &upstream.model, max).map_err(fail)?,
                        )
                    }
                    Kind::Gemini | Kind::Vertex => {
                        self.pair = if anthropic_client { Pair::AnthropicToGemini } else { Pair::OpenAiToGemini };
                        serde_json::to_vec(&to_gemini::request_from_openai(&request).map_err(fail)?)
                    }
                    _ if ex.route.kind == ApiKind::AnthropicCountTokens => {
                        self.pair = Pair::AnthropicCountToBedrock;
                        let converse = to_bedrock::request_from_openai(&request).map_err(fail)?;
                        serde_json::to_vec(&to_bedrock::count_tokens_request(converse))
                    }
                    _ => {
                        self.pair = if anthropic_client { Pair::AnthropicToBedrock } else { Pair::OpenAiToBedrock };
                        serde_json::to_vec(&to_bedrock::request_from_openai(&request).map_err(fail)?)
                    }
                }
            }
            _ => return Err(no_pair()),
        };
        let bytes =
            translated.map_err(|_| (Error::Internal { detail: "request translation failed".into() }, dialect))?;
        out.request_headers.push(HeaderEdit::Set("content-type", "application/json".into()));
        // The answer is rewritten: it must arrive uncompressed.
        out.request_headers.push(HeaderEdit::Remove("accept-encoding"));
        let path = self.route_headers(backend, upstream.kind, &upstream.model, out).map_err(|e| (e, dialect))?;
        if backend.kind == Kind::Bedrock {
            // Signed over the final path, host and body, with the request's own clock.
            for (name, value) in
                provider::bedrock::signed_headers(backend, &path, &bytes, ex.started_ns / 1_000_000_000)
            {
                out.request_headers.push(HeaderEdit::Set(name, value));
            }
        }
        // The body is replaced whole: what earlier stages spliced belonged to the old API.
        splices.clear();
        ex.injected_include_usage = false;
        splices.push(Splice { at: 0, remove: body.len(), insert: bytes });
        Ok(())
    }

    fn response_headers(&mut self, ex: &Exchange, head: &ResponseHead, _host: &dyn StageHost, out: &mut Outbox) {
        self.status = head.status;
        if let Some(backend) = self.backend.and_then(|i| self.settings.table.backends.get(i)) {
            // Per backend and variant: what a canary is judged by.
            let class = match head.status {
                200..=299 => "2xx",
                400..=499 => "4xx",
                500..=599 => "5xx",
                _ => "other",
            };
            let variant = self.variant.as_deref().unwrap_or("");
            let labels = [("backend", backend.name.as_str()), ("variant", variant), ("status", class)];
            out.counter(metrics::name("provider.responses", &labels), 1);
        }
        if self.pair == Pair::None || !head.has_body {
            return;
        }
        let edits = &mut out.response_headers;
        edits.push(HeaderEdit::Remove("content-length"));
        if head.content_encoding.as_deref().is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
            self.response = Response::Refused("upstream answer is compressed");
            // Known before the body: the status can still say so.
            edits.push(HeaderEdit::Set(":status", "502".into()));
            edits.push(HeaderEdit::Remove("content-encoding"));
            edits.push(HeaderEdit::Set("content-type", "application/json".into()));
            return;
        }
        let model = ex.upstream.as_ref().map_or("", |u| u.model.as_str());
        let max_event = self.settings.max_event_bytes;
        if head.status >= 400 {
            if head.status == 529 && self.pair == Pair::OpenAiToAnthropic {
                edits.push(HeaderEdit::Set(":status", "503".into()));
            }
            edits.push(HeaderEdit::Set("content-type", "application/json".into()));
            self.response = Response::Error(head.status, Vec::new());
        } else if head.content_type.as_deref().is_some_and(|c| c.contains("application/vnd.amazon.eventstream")) {
            edits.push(HeaderEdit::Set("content-type", "text/event-stream".into()));
            let include_usage = self.include_usage;
            self.response = Response::Stream(match self.pair {
                Pair::AnthropicToBedrock => Box::new(Chain::new(
                    to_bedrock::StreamToOpenAi::new(max_event, true, model),
                    to_openai::StreamToAnthropic::new(max_event, model),
                )),
                _ => Box::new(to_bedrock::StreamToOpenAi::new(max_event, include_usage, model)),
            });
        } else if head.content_type.as_deref().is_some_and(|c| c.contains("text/event-stream")) {
            let max = self.settings.max_event_bytes;
            let include_usage = self.include_usage;
            self.response = Response::Stream(match self.pair {
                Pair::AnthropicToOpenAi => Box::new(to_openai::StreamToAnthropic::new(max, model)),
                Pair::OpenAiToGemini => Box::new(to_gemini::StreamToOpenAi::new(max, include_usage, model)),
                Pair::AnthropicToGemini => Box::new(Chain::new(
                    to_gemini::StreamToOpenAi::new(max, true, model),
                    to_openai::StreamToAnthropic::new(max, model),
                )),
                _ => Box::new(StreamToOpenAi::new(max, 0, include_usage, model)),
            });
        } else {
            self.response = Response::Json(Vec::new());
        }
    }

    fn response_chunk(
        &mut self,
        ex: &Exchange,
        chunk: &[u8],
        end_of_stream: bool,
        now: &Now<'_>,
        _host: &dyn StageHost,
        out: &mut Outbox,
    ) -> Option<Vec<u8>> {
        if self.measured.is_some() && self.first_byte_ns.is_none() && !chunk.is_empty() {
            self.first_byte_ns = Some(now.ns());
        }
        let limit = self.settings.max_response_bytes;
        match &mut self.response {
            Response::Pass => None,
            Response::Stream(stream) => {
                let mut bytes = Vec::with_capacity(chunk.len() + 64);
                stream.set_created(now.ns() / 1_000_000_000);
                if stream.push(chunk, &mut bytes).is_err() {
                    out.counter(metrics::name("errors", &[("reason", "upstream_invalid")]), 1);
                }
                if end_of_stream {
                    stream.finish(&mut bytes);
                }
                Some(bytes)
            }
            Response::Json(held) | Response::Error(_, held) => {
                if held.len() + chunk.len() > limit {
                    self.response = Response::Refused("upstream answer exceeds max_response_bytes");
                    return Some(self.refused_body(ex, end_of_stream, out));
                }
                held.extend_from_slice(chunk);
                if !end_of_stream {
                    return Some(Vec::new());
                }
                let created = now.ns() / 1_000_000_000;
                let model = ex.upstream.as_ref().map_or("", |u| u.model.as_str());
                let translated = match (&self.response, self.pair) {
                    (Response::Json(held), Pair::OpenAiToAnthropic) => serde_json::from_slice::<MessagesResponse>(held)
                        .ok()
                        .map(|r| to_anthropic::response_to_openai(&r, created)),
                    (Response::Json(held), Pair::AnthropicToOpenAi) => {
                        serde_json::from_slice::<ChatCompletionResponse>(held)
                            .ok()
                            .map(|r| to_openai::response_to_anthropic(&r))
                    }
                    (Response::Json(held), Pair::OpenAiToGemini) => serde_json::from_slice::<Value>(held)
                        .ok()
                        .and_then(|r| to_gemini::response_to_openai(&r, model, created)),
                    (Response::Json(held), Pair::OpenAiToBedrock) => serde_json::from_slice::<Value>(held)
                        .ok()
                        .and_then(|r| to_bedrock::response_to_openai(&r, model, created)),
                    (Response::Json(held), Pair::AnthropicCountToBedrock) => {
                        serde_json::from_slice::<Value>(held).ok().and_then(|r| to_bedrock::count_tokens_response(&r))
                    }
                    (Response::Json(held), Pair::AnthropicToBedrock) => serde_json::from_slice::<Value>(held)
                        .ok()
                        .and_then(|r| to_bedrock::response_to_openai(&r, model, created))
                        .and_then(|pivot| serde_json::from_value::<ChatCompletionResponse>(pivot).ok())
                        .map(|r| to_openai::response_to_anthropic(&r)),
                    (Response::Json(held), _) => serde_json::from_slice::<Value>(held)
                        .ok()
                        .and_then(|r| to_gemini::response_to_openai(&r, model, created))
                        .and_then(|pivot| serde_json::from_value::<ChatCompletionResponse>(pivot).ok())
                        .map(|r| to_openai::response_to_anthropic(&r)),
                    // Already in the client's dialect: a local reply of this gateway (quota, say).
                    (Response::Error(_, held), _) if is_error_in(held, ex.dialect()) => return Some(held.clone()),
                    (Response::Error(status, held), Pair::OpenAiToAnthropic) => Some(
                        to_anthropic::error_to_openai(*status, held).map_or_else(|| generic_error(*status), |(_, b)| b),
                    ),
                    (Response::Error(status, held), Pair::OpenAiToGemini) => {
                        Some(to_gemini::error_to_openai(*status, held).unwrap_or_else(|| generic_error(*status)))
                    }
                    (Response::Error(status, held), Pair::OpenAiToBedrock) => {
                        Some(to_bedrock::error_to_openai(*status, held))
                    }
                    (Response::Error(status, held), Pair::AnthropicToBedrock | Pair::AnthropicCountToBedrock) => {
                        let pivot = to_bedrock::error_to_openai(*status, held).to_string();
                        Some(to_openai::error_to_anthropic(*status, pivot.as_bytes()))
                    }
                    (Response::Error(status, held), _) => Some(to_openai::error_to_anthropic(*status, held)),
                    _ => None,
                };
                match translated {
                    Some(value) => Some(value.to_string().into_bytes()),
                    None => {
                        self.response = Response::Refused("upstream answer is not the backend API's answer");
                        Some(self.refused_body(ex, true, out))
                    }
                }
            }
            Response::Refused(_) => Some(self.refused_body(ex, end_of_stream, out)),
        }
    }

    fn done(&mut self, ex: &Exchange, completed: bool, _now: &Now<'_>, host: &dyn StageHost, _out: &mut Outbox) {
        self.record(ex, completed, host);
    }
}

impl ProviderRewriteStream {
    /// Records a chosen backend's latency and outcome (see `provider::choose`).
    fn record(&self, ex: &Exchange, completed: bool, host: &dyn StageHost) {
        let Some(backend) = &self.measured else { return };
        let failed = !completed || self.status == 0 || self.status >= 500 || self.status == 429;
        let ttfb_us = self.first_byte_ns.map(|t| t.saturating_sub(ex.started_ns) / 1000);
        provider::choose::record(host.shared_data(), backend, ttfb_us, failed);
    }

    /// Nothing of an answer that cannot be translated reaches the client; at its end, one error.
    fn refused_body(&mut self, ex: &Exchange, end_of_stream: bool, out: &mut Outbox) -> Vec<u8> {
        let Response::Refused(detail) = self.response else { return Vec::new() };
        if !end_of_stream {
            return Vec::new();
        }
        out.counter(metrics::name("errors", &[("reason", "upstream_invalid")]), 1);
        out.log(super::LogLevel::Warn, format!("response not translated: {detail}"));
        Error::UpstreamInvalid { detail: detail.into() }.body(ex.dialect())
    }
}

/// An OpenAI error for an upstream error whose body is not the provider's error format (an
/// Envoy local reply such as "no healthy upstream", say).
fn generic_error(status: u16) -> serde_json::Value {
    let (kind, code) = match status {
        429 => ("requests", "rate_limit_exceeded"),
        400..=499 => ("invalid_request_error", "upstream_error"),
        _ => ("server_error", "upstream_error"),
    };
    serde_json::json!({"error": {"message": format!("the provider answered {status}"), "type": kind, "param": null, "code": code}})
}

/// Whether an error body is already in `dialect` (OpenAI: `{"error":{"message","type"…}}`;
/// Anthropic: `{"type":"error","error":{"type","message"}}`).
fn is_error_in(body: &[u8], dialect: Dialect) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return false };
    let Some(error) = value.get("error") else { return false };
    // Both dialects name the error's type; Gemini's errors (`code`, `message`, `status`) do not.
    let typed = error.get("message").is_some() && error.get("type").is_some() && error.get("status").is_none();
    let anthropic = value.get("type").and_then(serde_json::Value::as_str) == Some("error");
    typed && (anthropic == (dialect == Dialect::Anthropic))
}

/// Writes `model` into the body: a splice over the model string when it was written without
/// escapes, else the body re-serialised (keeping what earlier stages spliced in).
fn rename_model(ex: &mut Exchange, body: &[u8], model: &str, splices: &mut Vec<Splice>) -> Result<(), Error> {
    let escaped = serde_json::to_string(model).map_err(|_| Error::Internal { detail: "model id".into() })?;
    let inner = escaped.get(1..escaped.len().saturating_sub(1)).unwrap_or_default();
    if let Some((at, len)) = ex.parsed.as_ref().and_then(|p| p.model_span) {
        splices.push(Splice { at, remove: len, insert: inner.as_bytes().to_vec() });
        return Ok(());
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| Error::InvalidJson { detail: "re-reading the body".into() })?;
    let Some(object) = value.as_object_mut() else {
        return Err(Error::InvalidJson { detail: "request body is not a JSON object".into() });
    };
    object.insert("model".into(), serde_json::Value::String(model.to_string()));
    if ex.injected_include_usage {
        let options = object.entry("stream_options").or_insert_with(|| serde_json::json!({}));
        if let Some(options) = options.as_object_mut() {
            options.insert("include_usage".into(), serde_json::Value::Bool(true));
        }
    }
    let bytes = serde_json::to_vec(&value).map_err(|_| Error::Internal { detail: "re-serialising".into() })?;
    splices.clear();
    splices.push(Splice { at: 0, remove: body.len(), insert: bytes });
    Ok(())
}
