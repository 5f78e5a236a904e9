//! quota: token and request quotas that hold under concurrency — reserve, then settle.
//!
//! Request headers: the consumer is resolved (a property such as a JWT claim, else an API-key
//! header kept only as a salted hash, else the downstream address); an unknown consumer is
//! refused with 401 when configured so. Request body (after the one parse): the request's
//! reservation — estimated input tokens plus `max_tokens` (or the configured default) — is
//! charged atomically against every applicable counter in shared data, across all workers; if
//! any would go over its limit, nothing is charged and the client gets 429 with `retry-after`
//! and `x-ratelimit-*` headers, in its dialect. Every response carries the `x-ratelimit-*`
//! headers of the tightest token and request limits. End of stream: each reservation is
//! settled to the provider-reported usage that the token-counter stage read (it runs first in
//! the pipeline): the unused part refunded, an excess charged. An error response or a reset
//! without usage releases the reservation.
//!
//! States: `Idle` → (`Refused` | `Holding`) → settled. Shadow mode reserves and reports the
//! same, and never refuses.
//!
//! Known inaccuracies: a single request larger than a whole limit is refused outright; a
//! counter whose CAS keeps conflicting is skipped (fail open, counted); the first write of a new
//! counter key cannot be compare-and-swapped (see `quota::store`).

use super::{
    Exchange, HeaderEdit, HeadersFlow, Now, Outbox, RequestHead, ResponseHead, Stage, StageFactory, StageHost,
};
use crate::error::{Dialect, Error};
use crate::metrics;
use crate::quota::store::{self, Charge, Standing};
use crate::quota::{self, Admission, Config, Mode, Tokens, UnknownConsumer};
use crate::request::Splice;
use std::rc::Rc;

/// Per-VM state of the stage.
pub struct Quota {
    config: Rc<Config>,
}

impl Quota {
    pub fn new(config: Config) -> Self {
        Quota { config: Rc::new(config) }
    }
}

impl StageFactory for Quota {
    fn create(&self) -> Box<dyn Stage> {
        Box::new(QuotaStream {
            config: self.config.clone(),
            consumer: String::new(),
            tier: None,
            model: String::new(),
            charges: Vec::new(),
            held: Vec::new(),
            headers: Vec::new(),
            status: None,
            outcome: Outcome::Idle,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Idle,
    /// Refused (enforce) at the limit with this index.
    Refused(usize),
    /// Admitted; `Some(index)` in shadow mode when that limit would have refused.
    Admitted(Option<usize>),
}

struct QuotaStream {
    config: Rc<Config>,
    consumer: String,
    tier: Option<String>,
    model: String,
    /// (limit index, charge) per applicable limit, in config order.
    charges: Vec<(usize, Charge)>,
    /// Whether each charge was written (so must be settled).
    held: Vec<bool>,
    /// `x-ratelimit-*` headers for the response.
    headers: Vec<(&'static str, String)>,
    status: Option<u16>,
    outcome: Outcome,
}

fn property_string(host: &dyn StageHost, path: &[String]) -> Option<String> {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    host.property(&path).map(|v| String::from_utf8_lossy(&v).into_owned()).filter(|v| !v.is_empty())
}

impl QuotaStream {
    fn resolve_consumer(&self, host: &dyn StageHost) -> Option<String> {
        let source = &self.config.consumer;
        if let Some(id) = source.property.as_ref().and_then(|p| property_string(host, p)) {
            return Some(quota::plain_consumer(&id));
        }
        if let Some(value) = source.header.as_ref().and_then(|h| host.request_header(h)).filter(|v| !v.is_empty()) {
            let salt = source.salt.as_deref().unwrap_or("");
            return Some(quota::hashed_consumer(salt, value.trim()));
        }
        if source.downstream_address {
            let address = host.property(&["source", "address"]).map(|v| String::from_utf8_lossy(&v).into_owned())?;
            // Strip the port: one client is one address, whatever its source port.
            let ip = match address.rsplit_once(':') {
                Some((ip, port)) if port.bytes().all(|b| b.is_ascii_digit()) => ip.trim_matches(['[', ']']),
                _ => address.as_str(),
            };
            return Some(quota::plain_consumer(&format!("ip:{ip}")));
        }
        None
    }

    /// The `x-ratelimit-*` headers of the tightest token limit and the tightest request limit.
    fn rate_headers(&self, standings: &[Option<Standing>], now_s: u64) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        for (tokens, names) in [
            (true, ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"]),
            (false, ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"]),
        ] {
            let tightest = self
                .charges
                .iter()
                .zip(standings)
                .filter_map(|((index, _), standing)| Some((*index, (*standing)?)))
                .filter(|(index, _)| self.config.limits.get(*index).is_some_and(|l| l.counts_tokens() == tokens))
                .min_by_key(|(_, s)| s.remaining());
            if let Some((index, standing)) = tightest {
                let reset = self.config.limits.get(index).map_or(1, |l| l.window.reset_after(now_s));
                headers.push((names[0], standing.limit.to_string()));
                headers.push((names[1], standing.remaining().to_string()));
                headers.push((names[2], quota::window::openai_duration(reset)));
            }
        }
        headers
    }
}

impl Stage for QuotaStream {
    fn request_headers(
        &mut self,
        ex: &mut Exchange,
        _head: &RequestHead,
        host: &dyn StageHost,
        out: &mut Outbox,
    ) -> HeadersFlow {
        match self.resolve_consumer(host) {
            Some(consumer) => self.consumer = consumer,
            None if self.config.unknown_consumer == UnknownConsumer::Refuse => {
                out.counter(metrics::name("quota.decisions", &[("limit", ""), ("outcome", "unknown_consumer")]), 1);
                let error = Error::Unauthorized { message: "no consumer identity: send your API key".into() };
                return HeadersFlow::Reply(error, ex.dialect());
            }
            None => self.consumer = "unknown".into(),
        }
        self.tier = self
            .config
            .tier_property
            .as_ref()
            .and_then(|p| property_string(host, p))
            .or_else(|| self.config.tier(&self.consumer, None).map(str::to_string));
        HeadersFlow::Continue
    }

    fn needs_request_body(&self, _ex: &Exchange, _head: &RequestHead) -> bool {
        true
    }

    fn request_body(
        &mut self,
        ex: &mut Exchange,
        body: &[u8],
        _splices: &mut Vec<Splice>,
        host: &dyn StageHost,
        out: &mut Outbox,
    ) -> Result<(), (Error, Dialect)> {
        let config = self.config.clone();
        self.model = metrics::sanitize(ex.request_model().unwrap_or("unknown"));
        // Reserve: estimated input (bounded by the body size when unparsed) + the output cap.
        let info = ex.parsed.as_ref().map(|p| &p.info);
        let input = info.map_or(body.len() as u64, |i| i.estimated_prompt_tokens());
        let output = info.and_then(|i| i.max_output_tokens).unwrap_or(config.default_max_output_tokens);
        let reserve = Tokens { input, output, cached_input: 0 };
        let now_s = ex.started_ns / 1_000_000_000;
        let tier = self.tier.as_deref().and_then(|t| config.tier(&self.consumer, Some(t)));
        self.charges = config
            .applicable(&self.model)
            .filter_map(|index| {
                let limit = config.limits.get(index)?;
                let mut charge = Charge {
                    key: config.key(limit, &self.consumer, &self.model),
                    window: limit.window.index(now_s),
                    amount: config.amount(limit, &self.model, reserve, true),
                    limit: config.limit_value(index, tier),
                };
                if config.admission == Admission::PostAccounting && limit.counts_tokens() {
                    // Admit while used < limit; the whole usage is charged at settlement.
                    charge.amount = 0;
                    charge.limit = charge.limit.saturating_sub(1);
                }
                Some((index, charge))
            })
            .collect();
        let charges: Vec<Charge> = self.charges.iter().map(|(_, c)| c.clone()).collect();
        let enforce = config.mode == Mode::Enforce;
        let reservation = store::reserve(host.shared_data(), &charges, enforce);
        self.held = reservation.held.clone();
        self.headers = self.rate_headers(&reservation.standings, now_s);
        out.counter(metrics::name("quota.cas_retries", &[]), u64::from(reservation.retries));
        out.counter(metrics::name("quota.counters_skipped", &[]), u64::from(reservation.skipped));
        let exhausted = reservation.exhausted.and_then(|i| self.charges.get(i)).map(|(index, _)| *index);
        for (index, _) in &self.charges {
            let outcome = match exhausted {
                Some(e) if e == *index && enforce => "refused",
                Some(e) if e == *index => "shadow_refused",
                _ => "admitted",
            };
            let name = config.limits.get(*index).map_or("", |l| l.name.as_str());
            out.counter(metrics::name("quota.decisions", &[("limit", name), ("outcome", outcome)]), 1);
        }
        for (name, value) in &self.headers {
            out.response_headers.push(HeaderEdit::Set(name, value.clone()));
        }
        match (exhausted, enforce) {
            (Some(index), true) => {
                self.outcome = Outcome::Refused(index);
                let limit = config.limits.get(index);
                let error = Error::RateLimited {
                    limit: limit.map_or_else(String::new, |l| l.name.clone()),
                    retry_after_secs: limit.map_or(1, |l| l.window.reset_after(now_s)),
                };
                Err((error, ex.dialect()))
            }
            (shadow, _) => {
                self.outcome = Outcome::Admitted(shadow);
                if let Some(index) = shadow {
                    let name = config.limits.get(index).map_or("", |l| l.name.as_str());
                    out.response_headers.push(HeaderEdit::Set("x-tollgate-quota-shadow", format!("exhausted={name}")));
                }
                Ok(())
            }
        }
    }

    fn response_headers(&mut self, _ex: &Exchange, head: &ResponseHead, out: &mut Outbox) {
        self.status = Some(head.status);
        if matches!(self.outcome, Outcome::Admitted(_)) {
            for (name, value) in &self.headers {
                out.response_headers.push(HeaderEdit::Set(name, value.clone()));
            }
            if let Outcome::Admitted(Some(index)) = self.outcome {
                let name = self.config.limits.get(index).map_or("", |l| l.name.as_str());
                out.response_headers.push(HeaderEdit::Set("x-tollgate-quota-shadow", format!("exhausted={name}")));
            }
        }
    }

    fn done(&mut self, ex: &Exchange, _completed: bool, now: &Now<'_>, host: &dyn StageHost, out: &mut Outbox) {
        if !matches!(self.outcome, Outcome::Admitted(_)) {
            return;
        }
        // Settle to the provider's usage; an error or a reset without usage releases it all.
        let reported = ex.usage.get().filter(|_| self.status.is_some_and(|s| s < 400));
        let tokens = reported.map(|r| Tokens {
            input: r.usage.input,
            output: r.usage.output,
            cached_input: r.usage.cached_input,
        });
        let now_s = now.ns() / 1_000_000_000;
        let mut retries = 0;
        let mut failed = 0u64;
        for ((index, charge), held) in self.charges.iter().zip(&self.held) {
            let Some(limit) = self.config.limits.get(*index) else { continue };
            if !*held {
                continue;
            }
            let actual = match (limit.counts_tokens(), tokens) {
                (false, _) => charge.amount, // a request is a request, answered or not
                (true, Some(t)) => self.config.amount(limit, &self.model, t, true),
                (true, None) => 0,
            };
            if !store::settle(host.shared_data(), charge, actual, limit.window.index(now_s), &mut retries) {
                failed += 1;
            }
        }
        out.counter(metrics::name("quota.cas_retries", &[]), u64::from(retries));
        out.counter(metrics::name("quota.settle_failed", &[]), failed);
        let settled = match (reported, tokens) {
            (Some(r), _) if r.complete => "usage",
            (Some(_), _) => "partial_usage",
            (None, _) => "released",
        };
        out.counter(metrics::name("quota.settlements", &[("outcome", settled)]), 1);
        out.state("tollgate.quota.consumer", self.consumer.clone());
        for (name, value) in &self.headers {
            if let Some(field) = name.strip_prefix("x-ratelimit-") {
                out.state(&format!("tollgate.quota.{}", field.replace('-', "_")), value.clone());
            }
        }
    }
}

/// Parses the quota section: the validated configuration.
pub fn parse(json: &[u8], prefix: &str) -> Result<Config, String> {
    Config::parse(json, prefix)
}
