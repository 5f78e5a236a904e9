//! quota: token and request quotas that hold under concurrency — reserve, then settle.
//!
//! Request headers: the consumer is resolved (a property such as a JWT claim, else an API-key
//! header kept only as a salted hash, else the downstream address); an unknown consumer is
//! refused with 401 when configured so. The headers are held until the reservation is decided.
//! Request body (after the one parse): the request's reservation — estimated input tokens plus
//! `max_tokens` (or the configured default) — priced in every applicable limit's unit. End of
//! stream: each reservation is settled to the provider-reported usage that the token-counter
//! stage read (it runs first in the pipeline). An error response or a reset without usage
//! releases the reservation; a success answered to its end without readable usage keeps it.
//!
//! Where the counters live (`global` in the configuration):
//! - local (default): this Envoy's shared data, across its workers. The reservation is charged
//!   atomically (compare-and-swap) against every counter or none; a refusal is a 429 in the
//!   client's dialect; settlement refunds the unused part and charges any excess.
//! - `envoy_ratelimit`: Envoy's rate-limit filter, placed after this one, calls an RLS v3
//!   service. This stage writes filter state — `tollgate.quota.{consumer,tier,model}` (the
//!   descriptors' values) and `tollgate.quota.<limit>.reserve` (the request-time `hits_addend`);
//!   at stream end `tollgate.quota.<limit>.settle` (excess, charged by a stream-done entry) and,
//!   with `refunds`, `tollgate.quota.<limit>.refund` (unused, given back with
//!   `is_negative_hits`). A limit with no value set is skipped by Envoy. The RLS's answer comes
//!   back as draft-03 `X-RateLimit-*` headers, which become the OpenAI-style ones; a refusal
//!   (429 with `x-envoy-ratelimited`) is worded by the HCM's local-reply config.
//! - `check_report`: this stage calls the service itself: one reservation call per distinct
//!   amount (all limits of a call are checked and charged together by the service), the request
//!   held until every answer is in; at stream end a fire-and-forget `Report` of what is left to
//!   charge.
//!
//! Shadow mode reserves and reports the same, and never refuses (local; for the global modes
//! the service's own shadow settings apply).
//!
//! Known inaccuracies: a single request larger than a whole limit is refused outright; a local
//! counter whose CAS keeps conflicting is skipped (fail open, counted); the first write of a new
//! local counter key cannot be compare-and-swapped (see `quota::store`); global modes lose what
//! the service cannot give back (see the quota README).

use super::{
    Exchange, GrpcCall, GrpcFailure, HeaderEdit, HeadersFlow, LogLevel, Now, Outbox, RequestHead, ResponseHead, Stage,
    StageFactory, StageHost,
};
use crate::error::{Dialect, Error};
use crate::metrics;
use crate::quota::rls::{self, Code, Draft03};
use crate::quota::store::{self, Charge, Standing};
use crate::quota::stream::OutputMeter;
use crate::quota::{self, Admission, Config, FailureMode, Global, Mode, Reservation, Scope, Tokens, UnknownConsumer};
use crate::request::Splice;
use std::rc::Rc;

/// Per-VM state of the stage.
pub struct Quota {
    config: Rc<Config>,
    names: Rc<Names>,
}

/// The names of the metrics counted on every request, built once per configuration (a metric
/// update then passes a shared name, not a new string).
struct Names {
    /// Per limit: `quota.decisions` with outcome `admitted`, `refused`, `shadow_refused`.
    decisions: Vec<[Rc<str>; 3]>,
    /// `quota.settlements` per outcome, in [`SETTLED`]'s order.
    settlements: [Rc<str>; SETTLED.len()],
}

const SETTLED: [&str; 5] = ["usage", "partial_usage", "released", "estimated", "reserved"];

impl Names {
    fn build(config: &Config) -> Names {
        let decision = |limit: &str, outcome: &str| -> Rc<str> {
            metrics::name("quota.decisions", &[("limit", limit), ("outcome", outcome)]).into()
        };
        Names {
            decisions: config
                .limits
                .iter()
                .map(|l| {
                    [decision(&l.name, "admitted"), decision(&l.name, "refused"), decision(&l.name, "shadow_refused")]
                })
                .collect(),
            settlements: SETTLED.map(|outcome| metrics::name("quota.settlements", &[("outcome", outcome)]).into()),
        }
    }
}

impl Quota {
    pub fn new(config: Config) -> Self {
        let names = Rc::new(Names::build(&config));
        Quota { config: Rc::new(config), names }
    }
}

impl StageFactory for Quota {
    fn create(&self) -> Box<dyn Stage> {
        Box::new(QuotaStream {
            config: self.config.clone(),
            names: self.names.clone(),
            consumer: String::new(),
            tier: None,
            model: String::new(),
            reserved: Vec::new(),
            charges: Vec::new(),
            held: Vec::new(),
            headers: Vec::new(),
            status: None,
            outcome: Outcome::Idle,
            confirmed: false,
            calls_pending: 0,
            reserve: Tokens::default(),
            cut_off: None,
        })
    }
}

/// Output tokens charged beyond the reservation at a time (`stream_cut_off`): one
/// compare-and-swap per this many tokens of a stream that outgrows its reservation (near the
/// limit, what the stream carried so far exactly, so a stream is cut only when that no longer fits).
pub const CUT_OFF_STEP_TOKENS: u64 = 64;

/// A streamed answer metered for `stream_cut_off`.
struct CutOff {
    meter: OutputMeter,
    /// Output tokens the held charges cover.
    covered: u64,
    /// The error event went out; the rest of the answer is dropped.
    ended: bool,
    /// The stream was reset (asked once, from the chunk after the error event).
    reset: bool,
    /// The stream could not be read as SSE: no longer metered.
    unmetered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Idle,
    /// Refused at the limit with this index (by us or by the rate-limit service).
    Refused(Option<usize>),
    /// Admitted; `Some(index)` in shadow mode when that limit would have refused.
    Admitted(Option<usize>),
    /// A call that is not metered (a token count, the model list; local counters only): its
    /// response shows the consumer's standing, charged nothing.
    Unmetered,
}

struct QuotaStream {
    config: Rc<Config>,
    names: Rc<Names>,
    consumer: String,
    tier: Option<String>,
    model: String,
    /// (limit index, reserved amount) per applicable limit, in config order.
    reserved: Vec<(usize, u64)>,
    /// Local backend: the charge of each reserved limit.
    charges: Vec<Charge>,
    /// Whether each reservation was actually counted (so must be settled against it).
    held: Vec<bool>,
    /// `x-ratelimit-*` headers for the response.
    headers: Vec<(&'static str, String)>,
    status: Option<u16>,
    outcome: Outcome,
    /// `envoy_ratelimit`: the service's answer came back (its headers), so the reservation was
    /// counted there.
    confirmed: bool,
    /// `check_report`: reservation calls not answered yet.
    calls_pending: usize,
    /// What the reservation assumed: estimated input, output cap.
    reserve: Tokens,
    cut_off: Option<CutOff>,
}

/// A counter without labels, named only when there is something to count.
fn count_nonzero(out: &mut Outbox, base: &str, value: u64) {
    if value > 0 {
        out.counter(metrics::name(base, &[]), value);
    }
}

use crate::consumer::property_string;

const TOKEN_HEADERS: [&str; 3] =
    ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"];
const REQUEST_HEADERS: [&str; 3] =
    ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"];

fn rate_header_names(tokens: bool) -> [&'static str; 3] {
    if tokens {
        TOKEN_HEADERS
    } else {
        REQUEST_HEADERS
    }
}

/// One limit's standing as reported to the client.
#[derive(Debug, Clone, Copy)]
struct Reported {
    index: usize,
    limit: u64,
    remaining: u64,
    reset_secs: u64,
}

impl QuotaStream {
    fn resolve_consumer(&self, host: &dyn StageHost) -> Option<String> {
        self.config.consumer.resolve(host)
    }

    fn limit_name(&self, index: usize) -> &str {
        self.config.limits.get(index).map_or("", |l| l.name.as_str())
    }

    /// The `x-ratelimit-*` headers of the tightest token limit and the tightest request limit.
    fn rate_headers(&self, reported: &[Reported]) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        for tokens in [true, false] {
            let tightest = reported
                .iter()
                .filter(|r| self.config.limits.get(r.index).is_some_and(|l| l.counts_tokens() == tokens))
                .min_by_key(|r| r.remaining);
            if let Some(r) = tightest {
                let names = rate_header_names(tokens);
                headers.push((names[0], r.limit.to_string()));
                headers.push((names[1], r.remaining.to_string()));
                headers.push((names[2], quota::window::openai_duration(r.reset_secs)));
            }
        }
        headers
    }

    /// What a request for this stream is expected to cost: estimated input + output cap.
    fn reserve_tokens(&self, ex: &Exchange, body: &[u8]) -> Tokens {
        let info = ex.parsed.as_ref().map(|p| &p.info);
        let input = info.map_or(body.len() as u64, |i| i.estimated_prompt_tokens());
        let output =
            info.map_or(self.config.default_max_output_tokens, |i| i.output_cap(self.config.default_max_output_tokens));
        Tokens { input, output, ..Tokens::default() }
    }

    /// The provider-reported usage, if the response was a success that reported one; for a
    /// metered stream that ended without complete usage, what was estimated up to its end; for a
    /// success answered to its end whose usage could not be read, the reservation.
    fn usage(&self, ex: &Exchange, completed: bool) -> (Option<Tokens>, &'static str) {
        let reported = ex.usage.get().filter(|_| self.status.is_some_and(|s| s < 400));
        // A background response or a batch is generated after its queued answer (or its stream)
        // has gone, whether or not the client stays: without final usage it keeps its reservation.
        let background = ex.parsed.as_ref().is_some_and(|p| p.info.background);
        if background && self.status.is_some_and(|s| s < 400) && !reported.is_some_and(|r| r.complete) {
            return (Some(self.reserve), "reserved");
        }
        let metered = self.cut_off.as_ref().map(|c| c.meter.output_tokens()).filter(|&output| output > 0);
        if let (None | Some(super::ReportedUsage { complete: false, .. }), Some(output)) = (reported, metered) {
            // What the provider reported so far is exact where it is not zero (Anthropic's
            // `message_start` gives the input and its cached part); the rest is estimated.
            let tokens = match reported {
                Some(r) if r.usage.input > 0 => Tokens { output: output.max(r.usage.output), ..tokens_of(&r.usage) },
                Some(r) => {
                    Tokens { input: self.reserve.input, output: output.max(r.usage.output), ..Tokens::default() }
                }
                None => Tokens { input: self.reserve.input, output, ..Tokens::default() },
            };
            return (Some(tokens), "estimated");
        }
        let tokens = reported.map(|r| tokens_of(&r.usage));
        match reported {
            Some(r) if r.complete => (tokens, "usage"),
            Some(_) => (tokens, "partial_usage"),
            // Answered in full, but no usage could be read (a provider or model family that
            // reports none, an answer too large to read, usage not asked for): it was generated,
            // so it keeps its reservation — releasing it would make such answers free.
            None if completed && self.status.is_some_and(|s| s < 400) => (Some(self.reserve), "reserved"),
            None => (None, "released"),
        }
    }

    /// A limit's final amount for this request.
    fn actual(&self, index: usize, reserved: u64, tokens: Option<Tokens>) -> u64 {
        match (self.config.limits.get(index), tokens) {
            (None, _) => 0,
            (Some(limit), _) if !limit.counts_tokens() => reserved, // a request is a request, answered or not
            (Some(limit), Some(t)) => self.config.amount(limit, &self.model, t, 1),
            (Some(_), None) => 0,
        }
    }

    fn count_decisions(&self, out: &mut Outbox, refused: Option<usize>, shadow: bool) {
        for (index, _) in &self.reserved {
            let outcome = match refused {
                Some(r) if r == *index && !shadow => 1,
                Some(r) if r == *index => 2,
                _ => 0,
            };
            if let Some(name) = self.names.decisions.get(*index).and_then(|n| n.get(outcome)) {
                out.counter(name.clone(), 1);
            }
        }
    }

    /// The descriptor of a limit for this request, as the RLS sees it (and as the Envoy config
    /// of `envoy_ratelimit` builds it from filter state): limit, tier, then the scope's values.
    fn descriptor(&self, index: usize) -> Vec<(&'static str, &str)> {
        let mut entries = vec![("limit", self.limit_name(index)), ("tier", self.tier.as_deref().unwrap_or("default"))];
        match self.config.limits.get(index).map(|l| l.per) {
            Some(Scope::Consumer) => entries.push(("consumer", &self.consumer)),
            Some(Scope::ConsumerModel) => {
                entries.push(("consumer", &self.consumer));
                entries.push(("model", &self.model));
            }
            Some(Scope::Model) => entries.push(("model", &self.model)),
            Some(Scope::Global) | None => {}
        }
        entries
    }

    // --- local -------------------------------------------------------------------------------

    fn reserve_local(&mut self, ex: &Exchange, host: &dyn StageHost, out: &mut Outbox) -> Result<(), (Error, Dialect)> {
        let config = self.config.clone();
        let now_s = ex.started_ns / 1_000_000_000;
        let tier = self.tier.as_deref().and_then(|t| config.tier(&self.consumer, Some(t)));
        self.charges = self
            .reserved
            .iter()
            .filter_map(|(index, amount)| {
                let limit = config.limits.get(*index)?;
                let mut charge = self.charge(*index, &self.model, *amount, now_s, tier)?;
                if config.admission == Admission::PostAccounting && limit.counts_tokens() {
                    // Admit while used < limit; the whole usage is charged at settlement.
                    charge.amount = 0;
                    charge.limit = charge.limit.saturating_sub(1);
                }
                Some(charge)
            })
            .collect();
        let enforce = config.mode == Mode::Enforce;
        let reservation = store::reserve(host.shared_data(), &self.charges, enforce, &|name| config.has_limit(name));
        self.held = reservation.held.clone();
        let reported: Vec<Reported> = self
            .reserved
            .iter()
            .zip(&reservation.standings)
            .filter_map(|((index, _), standing)| Some(self.reported(*index, (*standing)?, now_s)))
            .collect();
        self.headers = self.rate_headers(&reported);
        count_nonzero(out, "quota.cas_retries", u64::from(reservation.retries));
        count_nonzero(out, "quota.counters_skipped", u64::from(reservation.skipped));
        let exhausted = reservation.exhausted.and_then(|i| self.reserved.get(i)).map(|(index, _)| *index);
        self.count_decisions(out, exhausted, !enforce);
        match (exhausted, enforce) {
            (Some(index), true) => {
                self.outcome = Outcome::Refused(Some(index));
                // Response headers asked for now go on the local reply (there is no response yet).
                for (name, value) in &self.headers {
                    out.response_headers.push(HeaderEdit::Set(name, value.clone()));
                }
                Err((self.rate_limited(index, now_s, None), ex.dialect()))
            }
            (shadow, _) => {
                self.outcome = Outcome::Admitted(shadow);
                Ok(())
            }
        }
    }

    /// The charge of `amount` against limit `index`'s counter for this consumer and `model`.
    fn charge(&self, index: usize, model: &str, amount: u64, now_s: u64, tier: Option<&str>) -> Option<Charge> {
        let limit = self.config.limits.get(index)?;
        Some(Charge {
            key: self.config.key(limit, &self.consumer, model),
            name: limit.name.clone(),
            window: limit.window.index(now_s),
            amount,
            limit: self.config.limit_value(index, tier),
        })
    }

    fn reported(&self, index: usize, Standing { used, limit }: Standing, now_s: u64) -> Reported {
        let reset_secs = self.config.limits.get(index).map_or(1, |l| l.window.reset_after(now_s));
        Reported { index, limit, remaining: limit.saturating_sub(used), reset_secs }
    }

    /// The headers of an unmetered call: the standing of the limits a generation by this
    /// consumer (with this model, when the call names one) would meet, read, not charged.
    fn unmetered_headers(&self, ex: &Exchange, host: &dyn StageHost) -> Vec<(&'static str, String)> {
        let now_s = ex.started_ns / 1_000_000_000;
        let tier = self.tier.as_deref().and_then(|t| self.config.tier(&self.consumer, Some(t)));
        let model = ex.request_model().map(metrics::sanitize);
        let limits: Vec<usize> = match &model {
            Some(model) => self.config.applicable(model).collect(),
            // Without a model, a per-model limit has no counter to show.
            None => self.config.limits.iter().enumerate().filter(|(_, l)| !l.per_model()).map(|(i, _)| i).collect(),
        };
        let model = model.as_deref().unwrap_or("");
        let (indices, charges): (Vec<usize>, Vec<Charge>) =
            limits.into_iter().filter_map(|i| Some((i, self.charge(i, model, 0, now_s, tier)?))).unzip();
        let standings = store::standings(host.shared_data(), &charges);
        let reported: Vec<Reported> =
            indices.into_iter().zip(standings).map(|(index, standing)| self.reported(index, standing, now_s)).collect();
        self.rate_headers(&reported)
    }

    /// For access logs: who, and what was left (each key is a host call: only these).
    fn log_state(&self, out: &mut Outbox) {
        out.state("tollgate.quota.consumer", self.consumer.clone());
        for (name, value) in &self.headers {
            match *name {
                "x-ratelimit-remaining-tokens" => out.state("tollgate.quota.remaining_tokens", value.clone()),
                "x-ratelimit-remaining-requests" => out.state("tollgate.quota.remaining_requests", value.clone()),
                _ => {}
            }
        }
    }

    fn rate_limited(&self, index: usize, now_s: u64, reset_secs: Option<u64>) -> Error {
        let window = self.config.limits.get(index).map(|l| l.window.reset_after(now_s));
        Error::RateLimited {
            limit: self.limit_name(index).to_string(),
            retry_after_secs: reset_secs.or(window).unwrap_or(1).max(1),
        }
    }

    fn settle_local(&self, tokens: Option<Tokens>, now_s: u64, host: &dyn StageHost, out: &mut Outbox) {
        let settlements: Vec<store::Settlement<'_>> = self
            .reserved
            .iter()
            .zip(&self.charges)
            .zip(&self.held)
            .filter(|(_, held)| **held)
            .filter_map(|(((index, reserved), charge), _)| {
                let limit = self.config.limits.get(*index)?;
                let actual = self.actual(*index, *reserved, tokens);
                Some(store::Settlement { charge, actual, current_window: limit.window.index(now_s) })
            })
            .collect();
        let mut retries = 0;
        let failed = store::settle(host.shared_data(), &settlements, &|name| self.config.has_limit(name), &mut retries);
        count_nonzero(out, "quota.cas_retries", u64::from(retries));
        count_nonzero(out, "quota.settle_failed", u64::from(failed));
    }

    // --- stream cut-off ----------------------------------------------------------------------

    /// Meters one chunk of the answer: charges output beyond what the held charges cover, and
    /// ends the stream after the event where a charge no longer fits.
    fn meter_chunk(
        &mut self,
        cut: &mut CutOff,
        ex: &Exchange,
        chunk: &[u8],
        now: &Now<'_>,
        host: &dyn StageHost,
        out: &mut Outbox,
    ) -> Option<Vec<u8>> {
        if cut.ended {
            if !cut.reset {
                cut.reset = true;
                out.reset_stream = true;
            }
            return Some(Vec::new());
        }
        if cut.unmetered {
            return None;
        }
        if cut.meter.push(chunk).is_err() {
            // Not readable as SSE: no longer metered (what was metered still settles).
            out.counter(metrics::name("quota.stream_unmetered", &[]), 1);
            cut.unmetered = true;
            return None;
        }
        while let Some(metered) = cut.meter.next_event() {
            if metered.output_tokens <= cut.covered {
                continue;
            }
            // A step ahead, or, near the limit, exactly what the stream carried so far.
            let now_s = now.ns() / 1_000_000_000;
            let step = metered.output_tokens.saturating_add(CUT_OFF_STEP_TOKENS);
            let extended = self
                .extend(step, now_s, host, out)
                .map(|()| step)
                .or_else(|_| self.extend(metered.output_tokens, now_s, host, out).map(|()| metered.output_tokens));
            match extended {
                Ok(covered) => cut.covered = covered,
                Err(index) => {
                    cut.ended = true;
                    out.counter(metrics::name("quota.streams_cut", &[("limit", self.limit_name(index))]), 1);
                    out.log(LogLevel::Info, format!("stream cut off: limit {} exhausted", self.limit_name(index)));
                    let error = self.rate_limited(index, now.ns() / 1_000_000_000, None);
                    let mut bytes = chunk.get(..metered.end_in_chunk).unwrap_or(chunk).to_vec();
                    bytes.extend_from_slice(&error.sse_event(ex.dialect()));
                    return Some(bytes);
                }
            }
        }
        None
    }

    /// Grows the held charges of token limits to cover `output` tokens; `Err(limit index)` when
    /// one no longer fits (nothing charged then). Limits whose window rolled over since the
    /// reservation are left to settlement.
    fn extend(&mut self, output: u64, now_s: u64, host: &dyn StageHost, out: &mut Outbox) -> Result<(), usize> {
        let tokens = Tokens { input: self.reserve.input, output, ..Tokens::default() };
        let mut positions = Vec::new();
        let mut deltas = Vec::new();
        for (position, ((index, _), charge)) in self.reserved.iter().zip(&self.charges).enumerate() {
            let Some(limit) = self.config.limits.get(*index) else { continue };
            if !self.held.get(position).copied().unwrap_or(false)
                || !limit.counts_tokens()
                || limit.window.index(now_s) != charge.window
            {
                continue;
            }
            let amount = self.config.amount(limit, &self.model, tokens, 1);
            if amount > charge.amount {
                positions.push(position);
                deltas.push(Charge { amount: amount - charge.amount, ..charge.clone() });
            }
        }
        if deltas.is_empty() {
            return Ok(());
        }
        let config = self.config.clone();
        let extension = store::reserve(host.shared_data(), &deltas, true, &|name| config.has_limit(name));
        count_nonzero(out, "quota.cas_retries", u64::from(extension.retries));
        if let Some(exhausted) = extension.exhausted {
            let index = positions.get(exhausted).and_then(|&p| self.reserved.get(p)).map_or(0, |(index, _)| *index);
            return Err(index);
        }
        for ((position, delta), held) in positions.iter().zip(&deltas).zip(&extension.held) {
            if let (Some(charge), true) = (self.charges.get_mut(*position), *held) {
                charge.amount += delta.amount;
            }
        }
        Ok(())
    }

    // --- envoy_ratelimit ---------------------------------------------------------------------

    /// Reads the service's draft-03 headers (Envoy's rate-limit filter ran before us on the
    /// response path) and rewords a refusal of that filter.
    fn read_envoy_ratelimit(&mut self, ex: &Exchange, head: &ResponseHead, host: &dyn StageHost, out: &mut Outbox) {
        let draft = match (
            host.response_header("x-ratelimit-limit"),
            host.response_header("x-ratelimit-remaining"),
            host.response_header("x-ratelimit-reset"),
        ) {
            (Some(l), Some(r), Some(s)) => Draft03::parse(&l, &r, &s),
            _ => None,
        };
        self.confirmed = draft.is_some();
        let named = draft.as_ref().and_then(|d| {
            let index = self.reserved.iter().find(|(i, _)| Some(self.limit_name(*i)) == d.name.as_deref())?.0;
            Some(Reported { index, limit: d.limit, remaining: d.remaining, reset_secs: d.reset_secs })
        });
        self.headers = self.rate_headers(named.as_slice());
        let refused = head.status == 429 && host.response_header("x-envoy-ratelimited").is_some();
        if refused {
            let index = named.map(|r| r.index);
            self.outcome = Outcome::Refused(index);
            match index {
                Some(_) => self.count_decisions(out, index, false),
                // The service did not say which limit: one refusal, unattributed.
                None => out.counter(metrics::name("quota.decisions", &[("limit", ""), ("outcome", "refused")]), 1),
            }
            let now_s = ex.started_ns / 1_000_000_000;
            let error = match index {
                Some(i) => self.rate_limited(i, now_s, draft.as_ref().map(|d| d.reset_secs)),
                None => Error::RateLimited {
                    limit: String::new(),
                    retry_after_secs: draft.as_ref().map_or(1, |d| d.reset_secs.max(1)),
                },
            };
            out.counter(metrics::name("errors", &[("reason", error.spec().reason)]), 1);
            for (name, value) in error.headers() {
                if name != "content-type" {
                    out.response_headers.push(HeaderEdit::Set(name, value));
                }
            }
        } else {
            self.count_decisions(out, None, false);
        }
        for (name, value) in &self.headers {
            out.response_headers.push(HeaderEdit::Set(name, value.clone()));
        }
    }

    fn settle_envoy_ratelimit(&self, tokens: Option<Tokens>, refunds: bool, out: &mut Outbox) {
        let refused = matches!(self.outcome, Outcome::Refused(_));
        for (index, reserved) in &self.reserved {
            // The service counted the reservation if it answered (its headers came back);
            // envoyproxy/ratelimit counts it even when it refuses.
            let counted = if self.confirmed { *reserved } else { 0 };
            let actual = if refused { 0 } else { self.actual(*index, *reserved, tokens) };
            let name = self.limit_name(*index);
            if actual > counted {
                out.state(
                    format!("tollgate.quota.{name}.settle"),
                    (actual - counted).min(quota::ENVOY_MAX_HITS).to_string(),
                );
            } else if counted > actual && refunds {
                out.state(format!("tollgate.quota.{name}.refund"), (counted - actual).to_string());
            }
        }
    }

    // --- check_report ------------------------------------------------------------------------

    /// The reservation calls: one per distinct amount, every limit of that amount in it.
    fn reservation_calls(&self, global: &Global) -> Vec<GrpcCall> {
        let Global::CheckReport { cluster, domain, timeout_ms, reservation, .. } = global else {
            return Vec::new();
        };
        let (service, method) = match reservation {
            Reservation::Charge => (rls::RLS_SERVICE, rls::SHOULD_RATE_LIMIT),
            Reservation::Check => (rls::KUADRANT_SERVICE, rls::CHECK_RATE_LIMIT),
        };
        let groups = self.groups(|index, reserved| Some((index, reserved)).filter(|_| reserved > 0));
        groups
            .into_iter()
            .enumerate()
            .map(|(tag, (amount, indices))| GrpcCall {
                cluster: cluster.clone(),
                service,
                method,
                message: self.rls_message(domain, amount, &indices),
                timeout_ms: *timeout_ms,
                tag: tag as u32,
                detached: false,
                stage: 0,
            })
            .collect()
    }

    /// Limits grouped by the amount `pick` gives them (in order of first appearance).
    fn groups(&self, pick: impl Fn(usize, u64) -> Option<(usize, u64)>) -> Vec<(u64, Vec<usize>)> {
        let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
        for (index, amount) in self.reserved.iter().filter_map(|(i, r)| pick(*i, *r)) {
            match groups.iter_mut().find(|(a, _)| *a == amount) {
                Some((_, indices)) => indices.push(index),
                None => groups.push((amount, vec![index])),
            }
        }
        groups
    }

    fn rls_message(&self, domain: &str, amount: u64, indices: &[usize]) -> Vec<u8> {
        let descriptors: Vec<Vec<(&str, &str)>> = indices.iter().map(|i| self.descriptor(*i)).collect();
        let views: Vec<rls::Descriptor<'_>> = descriptors.iter().map(Vec::as_slice).collect();
        rls::encode_request(domain, &views, u32::try_from(amount).unwrap_or(u32::MAX))
    }

    fn check_report_answer(
        &mut self,
        ex: &Exchange,
        tag: u32,
        response: Result<&[u8], GrpcFailure>,
        failure_mode: FailureMode,
        out: &mut Outbox,
    ) -> Result<(), (Error, Dialect)> {
        let groups = self.groups(|index, reserved| Some((index, reserved)).filter(|_| reserved > 0));
        let Some((_, indices)) = groups.get(tag as usize) else { return Ok(()) };
        let answer = match response {
            Ok(bytes) => rls::decode_response(bytes).ok().filter(|r| r.overall != Code::Unknown),
            Err(_) => None,
        };
        let Some(answer) = answer else {
            out.counter(metrics::name("quota.rls_errors", &[]), 1);
            out.log(crate::stage::LogLevel::Warn, "rate-limit service call failed or answered garbage");
            if failure_mode == FailureMode::Deny {
                self.outcome = Outcome::Refused(None);
                let error = Error::ServiceUnavailable { service: "rate-limit service".into() };
                return Err((error, ex.dialect()));
            }
            return Ok(()); // admitted without a reservation: settled in full at the end
        };
        let now_s = ex.started_ns / 1_000_000_000;
        // What the service told about each limit: per-descriptor statuses (envoyproxy/ratelimit),
        // else the draft-03 headers of the tightest one (Limitador).
        let mut reported: Vec<Reported> = answer
            .statuses
            .iter()
            .zip(indices)
            .filter(|(s, _)| s.limit > 0)
            .map(|(s, index)| Reported {
                index: *index,
                limit: u64::from(s.limit),
                remaining: u64::from(s.remaining),
                reset_secs: s.reset_secs,
            })
            .collect();
        let draft = Draft03::from_headers(&answer.headers);
        if reported.is_empty() {
            if let Some(d) = &draft {
                let index = d
                    .name
                    .as_deref()
                    .and_then(|n| indices.iter().find(|i| self.limit_name(**i) == n))
                    .or(indices.first());
                if let Some(index) = index {
                    reported.push(Reported {
                        index: *index,
                        limit: d.limit,
                        remaining: d.remaining,
                        reset_secs: d.reset_secs,
                    });
                }
            }
        }
        // Keep what earlier answers reported for other limits.
        self.headers = self.merge_reported(&reported);
        if answer.overall == Code::OverLimit {
            let over = answer
                .statuses
                .iter()
                .zip(indices)
                .find(|(s, _)| s.code == Code::OverLimit)
                .map(|(_, i)| *i)
                .or_else(|| {
                    let name = draft.as_ref()?.name.as_deref()?;
                    indices.iter().copied().find(|i| self.limit_name(*i) == name)
                })
                .or(indices.first().copied());
            if self.config.mode == Mode::Shadow {
                // Counted (decisions) once every answer is in; nothing was charged for this
                // group, so its whole usage is reported at the end.
                if self.outcome == Outcome::Admitted(None) {
                    self.outcome = Outcome::Admitted(over);
                }
                return Ok(());
            }
            let reset = reported.iter().find(|r| Some(r.index) == over).map(|r| r.reset_secs);
            self.outcome = Outcome::Refused(over);
            self.count_decisions(out, over, false);
            let error = match over {
                Some(index) => self.rate_limited(index, now_s, reset),
                None => Error::RateLimited { limit: String::new(), retry_after_secs: reset.unwrap_or(1) },
            };
            for (name, value) in &self.headers {
                out.response_headers.push(HeaderEdit::Set(name, value.clone()));
            }
            return Err((error, ex.dialect()));
        }
        for index in indices {
            if let Some(position) = self.reserved.iter().position(|(i, _)| i == index) {
                if let Some(held) = self.held.get_mut(position) {
                    *held = true;
                }
            }
        }
        Ok(())
    }

    /// `x-ratelimit-*` headers from the standings reported so far plus `new` ones.
    fn merge_reported(&self, new: &[Reported]) -> Vec<(&'static str, String)> {
        let mut headers = self.headers.clone();
        for (name, value) in self.rate_headers(new) {
            let kind_tokens = name.ends_with("-tokens");
            let current_remaining = headers
                .iter()
                .find(|(n, _)| *n == rate_header_names(kind_tokens)[1])
                .and_then(|(_, v)| v.parse::<u64>().ok());
            let new_remaining = new
                .iter()
                .filter(|r| self.config.limits.get(r.index).is_some_and(|l| l.counts_tokens() == kind_tokens))
                .map(|r| r.remaining)
                .min();
            // The tightest wins: replace only if the new one is tighter.
            if current_remaining.is_none() || new_remaining < current_remaining {
                headers.retain(|(n, _)| *n != name);
                headers.push((name, value));
            }
        }
        headers
    }

    fn report_calls(&self, global: &Global, tokens: Option<Tokens>) -> Vec<GrpcCall> {
        let Global::CheckReport { cluster, domain, timeout_ms, reservation, .. } = global else {
            return Vec::new();
        };
        let refused = matches!(self.outcome, Outcome::Refused(_));
        if refused {
            return Vec::new();
        }
        let held = |index: usize| {
            self.reserved.iter().position(|(i, _)| *i == index).and_then(|p| self.held.get(p)).copied().unwrap_or(false)
        };
        let groups = self.groups(|index, reserved| {
            let actual = self.actual(index, reserved, tokens);
            // `charge` counted the reservation already (if the service answered); `check` did not.
            let counted = if *reservation == Reservation::Charge && held(index) { reserved } else { 0 };
            Some((index, actual.saturating_sub(counted))).filter(|(_, rest)| *rest > 0)
        });
        groups
            .into_iter()
            .map(|(amount, indices)| GrpcCall {
                cluster: cluster.clone(),
                service: rls::KUADRANT_SERVICE,
                method: rls::REPORT,
                message: self.rls_message(domain, amount, &indices),
                timeout_ms: *timeout_ms,
                tag: 0,
                detached: true,
                stage: 0,
            })
            .collect()
    }
}

/// What a provider's usage costs, each kind of input apart.
fn tokens_of(usage: &crate::usage::Usage) -> Tokens {
    Tokens {
        input: usage.input,
        output: usage.output,
        cached_input: usage.cached_input,
        cache_creation: usage.cache_creation,
        cache_creation_long: usage.cache_creation_long,
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
            .or_else(|| self.config.tier(&self.consumer, None).map(str::to_string))
            // The access policy's tier (provider-rewrite ran first), when quota has one so named.
            .or_else(|| self.config.tier(&self.consumer, ex.tier.as_deref()).map(str::to_string));
        if !ex.route.kind.has_usage() {
            // A token count, an embedding without usage, the model list: nothing generated,
            // nothing to limit (an unknown caller is refused all the same). Its response still
            // shows where the consumer stands, from the local counters.
            if self.config.global.is_none() {
                self.outcome = Outcome::Unmetered;
            }
            return HeadersFlow::Continue;
        }
        if !self.config.hold_request_headers {
            // The body is held instead: a refusal resets an upstream request that saw headers only.
            return HeadersFlow::Continue;
        }
        // Nothing goes upstream (or to Envoy's rate-limit filter) before the reservation.
        HeadersFlow::Pause
    }

    fn needs_request_body(&self, ex: &Exchange, _head: &RequestHead) -> bool {
        ex.route.kind.has_usage()
    }

    fn request_body(
        &mut self,
        ex: &mut Exchange,
        body: &[u8],
        _splices: &mut Vec<Splice>,
        host: &dyn StageHost,
        out: &mut Outbox,
    ) -> Result<(), (Error, Dialect)> {
        if !ex.route.kind.has_usage() {
            return Ok(()); // not metered (see `request_headers`)
        }
        let config = self.config.clone();
        self.model = metrics::sanitize(ex.request_model().unwrap_or("unknown"));
        // One model per reservation: a batch mixing models would be charged to none of the
        // per-model limits (nor priced).
        if ex.parsed.as_ref().is_some_and(|p| p.info.mixed_models) && config.limits.iter().any(quota::Limit::per_model)
        {
            out.counter(metrics::name("quota.decisions", &[("limit", ""), ("outcome", "mixed_models")]), 1);
            if config.mode == Mode::Enforce {
                let message = "the requests of this batch name different models and quota limits here are per model: \
                               send one batch per model";
                return Err((Error::invalid("requests", message), ex.dialect()));
            }
        }
        let reserve = self.reserve_tokens(ex, body);
        self.reserve = reserve;
        // A batch is as many model requests as it holds.
        let requests = ex.parsed.as_ref().map_or(1, |p| p.info.requests);
        self.reserved = config
            .applicable(&self.model)
            .filter_map(|index| Some((index, config.amount(config.limits.get(index)?, &self.model, reserve, requests))))
            .collect();
        self.held = vec![false; self.reserved.len()];
        match &config.global {
            None => self.reserve_local(ex, host, out),
            Some(Global::EnvoyRatelimit { .. }) => {
                // Envoy's rate-limit filter builds the descriptors from these and charges the
                // reservation when this stage lets the request go.
                out.state("tollgate.quota.consumer", self.consumer.clone());
                out.state("tollgate.quota.tier", self.tier.clone().unwrap_or_else(|| "default".into()));
                out.state("tollgate.quota.model", self.model.clone());
                for (index, amount) in &self.reserved {
                    let name = self.limit_name(*index);
                    out.state(
                        format!("tollgate.quota.{name}.reserve"),
                        (*amount).min(quota::ENVOY_MAX_HITS).to_string(),
                    );
                }
                self.outcome = Outcome::Admitted(None);
                Ok(())
            }
            Some(global @ Global::CheckReport { .. }) => {
                let calls = self.reservation_calls(global);
                self.calls_pending = calls.len();
                out.calls.extend(calls);
                self.outcome = Outcome::Admitted(None);
                if self.calls_pending == 0 {
                    self.count_decisions(out, None, false);
                }
                Ok(())
            }
        }
    }

    fn grpc_response(
        &mut self,
        ex: &mut Exchange,
        tag: u32,
        response: Result<&[u8], GrpcFailure>,
        _host: &dyn StageHost,
        out: &mut Outbox,
    ) -> Result<(), (Error, Dialect)> {
        let failure_mode = match &self.config.global {
            Some(Global::CheckReport { failure_mode, .. }) => *failure_mode,
            _ => return Ok(()),
        };
        self.calls_pending = self.calls_pending.saturating_sub(1);
        let result = self.check_report_answer(ex, tag, response, failure_mode, out);
        if let (Ok(()), 0, Outcome::Admitted(shadow)) = (&result, self.calls_pending, self.outcome) {
            self.count_decisions(out, shadow, true);
        }
        result
    }

    fn response_headers(&mut self, ex: &Exchange, head: &ResponseHead, host: &dyn StageHost, out: &mut Outbox) {
        self.status = Some(head.status);
        if self.outcome == Outcome::Unmetered {
            self.headers = self.unmetered_headers(ex, host);
            for (name, value) in &self.headers {
                out.response_headers.push(HeaderEdit::Set(name, value.clone()));
            }
            return;
        }
        if let Some(Global::EnvoyRatelimit { .. }) = self.config.global {
            if self.outcome != Outcome::Idle {
                self.read_envoy_ratelimit(ex, head, host, out);
            }
            return;
        }
        if matches!(self.outcome, Outcome::Admitted(_)) {
            // A compressed stream is not metered (its text cannot be read without inflating).
            let sse =
                head.content_type.as_deref().is_some_and(|t| t.to_ascii_lowercase().starts_with("text/event-stream"))
                    && head.content_encoding.as_deref().is_none_or(|e| e.trim().eq_ignore_ascii_case("identity"));
            if self.config.stream_cut_off && self.config.mode == Mode::Enforce && head.status == 200 && sse {
                self.cut_off = OutputMeter::for_api(ex.route.kind).map(|meter| CutOff {
                    meter,
                    covered: self.reserve.output,
                    ended: false,
                    reset: false,
                    unmetered: false,
                });
            }
            for (name, value) in &self.headers {
                out.response_headers.push(HeaderEdit::Set(name, value.clone()));
            }
            if let Outcome::Admitted(Some(index)) = self.outcome {
                let value = format!("exhausted={}", self.limit_name(index));
                out.response_headers.push(HeaderEdit::Set("x-tollgate-quota-shadow", value));
            }
        }
    }

    fn response_chunk(
        &mut self,
        ex: &Exchange,
        chunk: &[u8],
        _end_of_stream: bool,
        now: &Now<'_>,
        host: &dyn StageHost,
        out: &mut Outbox,
    ) -> Option<Vec<u8>> {
        let mut cut = self.cut_off.take()?;
        let replaced = self.meter_chunk(&mut cut, ex, chunk, now, host, out);
        self.cut_off = Some(cut);
        replaced
    }

    fn done(&mut self, ex: &Exchange, completed: bool, now: &Now<'_>, host: &dyn StageHost, out: &mut Outbox) {
        if self.outcome == Outcome::Idle {
            return;
        }
        if self.outcome == Outcome::Unmetered {
            self.log_state(out);
            return;
        }
        let (tokens, settled) = self.usage(ex, completed);
        match &self.config.global {
            None => {
                if !matches!(self.outcome, Outcome::Admitted(_)) {
                    return;
                }
                self.settle_local(tokens, now.ns() / 1_000_000_000, host, out);
            }
            Some(Global::EnvoyRatelimit { refunds }) => self.settle_envoy_ratelimit(tokens, *refunds, out),
            Some(global @ Global::CheckReport { .. }) => out.calls.extend(self.report_calls(global, tokens)),
        }
        if matches!(self.outcome, Outcome::Admitted(_)) {
            let settled = SETTLED.iter().position(|s| *s == settled).and_then(|i| self.names.settlements.get(i));
            if let Some(name) = settled {
                out.counter(name.clone(), 1);
            }
        }
        self.log_state(out);
    }
}

/// Parses the quota section: the validated configuration.
pub fn parse(json: &[u8], prefix: &str) -> Result<Config, String> {
    Config::parse(json, prefix)
}
