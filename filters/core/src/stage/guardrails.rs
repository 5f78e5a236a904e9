//! guardrails: the request's text is checked before it leaves, the answer before the client
//! sees it (see [`crate::guard`] for the recognizers and the policy).
//!
//! Request headers: a compressed or non-JSON body on an AI route is refused (415) when the
//! policy fails closed (the default), never waved through; the answer is asked for uncompressed
//! (it is checked too); the headers wait for the body decision.
//! Request body (after the one parse): limits (messages, estimated prompt tokens: 400; bytes:
//! 413 by the pipeline), then every checked text (roles, history) is scanned. A `block` finding
//! refuses with 400 in the client's dialect naming the rule and entity (never the text). `mask`,
//! `redact` and `hash` rewrite the strings in place; the new body replaces the client's for the
//! stages after this one (provider-rewrite translates the masked request). `shadow` changes
//! nothing. Every finding is counted by direction, rule, entity and action; the response gets
//! `x-tollgate-guardrails: <decision>; entities=<names>`.
//! Response: a JSON answer is held whole, checked, masked and restored; an SSE answer is
//! guarded as it flows ([`crate::guard::stream`]). A block mid-stream ends it with one error
//! event; in a JSON answer the body becomes the dialect's error object (its status has already
//! gone out).

use super::{
    Exchange, HeaderEdit, HeadersFlow, Now, Outbox, RequestHead, ResponseHead, Stage, StageFactory, StageHost,
};
use crate::error::{Dialect, Error};
use crate::guard::message;
use crate::guard::policy::{Action, Decision, Failure, Masker, Mode, Policy};
use crate::guard::stream::{StreamGuard, Tally};
use crate::metrics;
use crate::request::Splice;
use crate::route::ApiKind;
use std::rc::Rc;

/// The response header that reports what the guardrails did.
pub const HEADER: &str = "x-tollgate-guardrails";
/// Largest JSON answer held for checking; a larger one ends in an error object (fail closed).
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

pub struct Guardrails {
    policy: Rc<Policy>,
}

impl Guardrails {
    pub fn new(policy: Policy) -> Self {
        Guardrails { policy: Rc::new(policy) }
    }
}

impl StageFactory for Guardrails {
    fn create(&self) -> Box<dyn Stage> {
        Box::new(GuardStream {
            policy: self.policy.clone(),
            profile: None,
            masker: self.policy.masker(),
            report: None,
            decided: Decision::Allow,
            answer: Answer::Off,
            signed: false,
            plain: false,
        })
    }
}

enum Answer {
    Off,
    /// A JSON answer, held until its end.
    Json(Vec<u8>),
    Stream(Box<StreamGuard>),
    Done,
}

struct GuardStream {
    policy: Rc<Policy>,
    /// The caller's tier profile (see `profiles`), chosen with the body.
    profile: Option<usize>,
    masker: Masker,
    /// The header value for the response (decision and entity names).
    report: Option<String>,
    /// The request's decision so far (a form's fields are checked one by one).
    decided: Decision,
    answer: Answer,
    /// A Bedrock request the client signed (AWS SigV4): its body cannot change.
    signed: bool,
    /// The answer is plain text (a transcript as `text`, `srt`, `vtt`), not JSON.
    plain: bool,
}

/// Every API with a request body (the model list has none). A form (a transcription's audio, an
/// image edit's images) is never held whole: its text fields are checked, and masked where they
/// are, as it passes (see `form_field`).
fn guarded(kind: ApiKind) -> bool {
    kind != ApiKind::OpenAiModels
}

fn count(out: &mut Outbox, direction: &str, tally: &Tally) {
    for (rule, entity, action) in tally {
        out.counter(
            metrics::name(
                "guardrails.findings",
                &[("direction", direction), ("rule", rule), ("entity", entity), ("action", action.name())],
            ),
            1,
        );
    }
}

fn decision_metric(out: &mut Outbox, direction: &str, decision: Decision) {
    out.counter(metrics::name("guardrails.decisions", &[("direction", direction), ("decision", decision.name())]), 1);
}

impl GuardStream {
    fn unreadable(
        &self,
        reason: &str,
        error: Error,
        dialect: Dialect,
        out: &mut Outbox,
    ) -> Result<(), (Error, Dialect)> {
        out.counter(metrics::name("guardrails.unchecked", &[("direction", "request"), ("reason", reason)]), 1);
        match self.policy.failure {
            Failure::Closed => Err((error, dialect)),
            Failure::Open => {
                out.log(
                    super::LogLevel::Warn,
                    format!("guardrails: request not checked ({reason}), failure policy open"),
                );
                Ok(())
            }
        }
    }
}

/// Hands each text of a request (under the policy's scope) to a checker that may rewrite it.
type TextWalk<'a> = dyn FnMut(&Policy, &mut dyn FnMut(&mut String)) + 'a;

impl GuardStream {
    /// Checks the request's texts `walk` hands to its checker (which masks them in enforce mode):
    /// counts the findings, records the decision, refuses a block — or a mask the body cannot
    /// take, the client having signed it. `Ok(true)` when a text was changed.
    fn check_request(
        &mut self,
        ex: &Exchange,
        out: &mut Outbox,
        walk: &mut TextWalk<'_>,
    ) -> Result<bool, (Error, Dialect)> {
        let base = self.policy.clone();
        let policy = base.profile(self.profile);
        let enforce = policy.mode == Mode::Enforce;
        let mut tally = Tally::new();
        let mut decision = Decision::Allow;
        let mut changed = false;
        let mut blocked: Option<(String, String)> = None;
        let masker = &mut self.masker;
        walk(policy, &mut |text| {
            let mut findings = Vec::new();
            policy.scan(text, &mut findings);
            if findings.is_empty() {
                return;
            }
            decision = decision.max(policy.decide(&findings));
            tally.extend(findings.iter().map(|f| (f.rule.to_string(), f.entity.to_string(), f.action)));
            if blocked.is_none() {
                if let Some(f) = findings.iter().find(|f| f.action == Action::Block) {
                    blocked = Some((f.rule.to_string(), f.entity.to_string()));
                }
            }
            if enforce {
                if let Some(masked) = masker.apply(text, &findings) {
                    *text = masked;
                    changed = true;
                }
            }
        });
        self.masker.freeze();
        count(out, "request", &tally);
        decision_metric(out, "request", decision);
        self.decided = self.decided.max(decision);
        out.state("tollgate.guardrails.decision", self.decided.name());
        if decision == Decision::Allow {
            return Ok(false);
        }
        let mut entities: Vec<&str> = tally.iter().map(|(_, e, _)| e.as_str()).collect();
        entities.sort_unstable();
        entities.dedup();
        self.report = Some(format!("{}; entities={}", decision.name(), entities.join(",")));
        out.log(super::LogLevel::Info, format!("guardrails: request {} ({} findings)", decision.name(), tally.len()));
        let dialect = ex.dialect();
        match (decision, blocked) {
            (Decision::Block, Some((rule, entity))) => Err((Error::Blocked { rule, entity: Some(entity) }, dialect)),
            _ if changed && self.signed => {
                out.counter(metrics::name("guardrails.refusals", &[("reason", "signed_request")]), 1);
                let message = format!(
                    "guardrails must mask {} in this request, but the client signed it (AWS SigV4) and AWS refuses a \
                     signed body that was changed: send it with a Bedrock API key (authorization: Bearer), or to \
                     the gateway's OpenAI or Anthropic API with a Bedrock backend, which signs after masking",
                    entities.join(",")
                );
                Err((Error::InvalidRequest { param: None, message }, dialect))
            }
            _ => Ok(changed),
        }
    }
}

impl Stage for GuardStream {
    fn request_headers(
        &mut self,
        ex: &mut Exchange,
        head: &RequestHead,
        host: &dyn StageHost,
        out: &mut Outbox,
    ) -> HeadersFlow {
        if !guarded(ex.route.kind) || !head.has_body {
            return HeadersFlow::Continue;
        }
        let dialect = ex.dialect();
        // SigV4 signs the payload's hash: AWS refuses a signed body that was changed on the way.
        // (A Bedrock API key, `authorization: Bearer`, signs nothing.)
        self.signed = ex.route.provider == "bedrock"
            && host.request_header("authorization").is_some_and(|a| a.trim_start().starts_with("AWS4-HMAC-SHA256"));
        // (A form is read as a form: its content type is not JSON.)
        let form = ex.route.kind.reads_form();
        let unreadable =
            super::unreadable_by_headers(host).filter(|(reason, _)| !form || *reason != "request_not_json");
        if let Some((reason, error)) = unreadable {
            if let Err(refusal) = self.unreadable(reason, error, dialect, out) {
                return refusal.into();
            }
        }
        if self.policy.response.enabled && !self.signed {
            // The answer is checked: it must arrive uncompressed. (Not a signed request's: its
            // signature may cover `accept-encoding`, as the Anthropic SDK's Bedrock client signs
            // every header; an answer compressed anyway is counted unchecked.)
            out.request_headers.push(HeaderEdit::Remove("accept-encoding"));
        }
        if !self.policy.hold_request_headers {
            // Headers go on now; the body is held and may be rewritten, so Envoy re-frames it.
            out.request_headers.push(HeaderEdit::Remove("content-length"));
            return HeadersFlow::Continue;
        }
        HeadersFlow::Pause
    }

    fn reads_client_answer(&self) -> bool {
        true
    }

    fn needs_request_body(&self, ex: &Exchange, head: &RequestHead) -> bool {
        guarded(ex.route.kind) && head.has_body
    }

    fn request_body(
        &mut self,
        ex: &mut Exchange,
        body: &[u8],
        _splices: &mut Vec<Splice>,
        _host: &dyn StageHost,
        out: &mut Outbox,
    ) -> Result<(), (Error, Dialect)> {
        if !guarded(ex.route.kind) {
            return Ok(());
        }
        let dialect = ex.dialect();
        const UNREADABLE: &str = "the guarded request body is not a readable request";
        let Some(parsed) = ex.parsed.as_ref() else {
            let reason = ex.unparsed_reason.unwrap_or("request_malformed_json");
            return self.unreadable(reason, ex.unreadable_error(UNREADABLE), dialect, out);
        };
        let limits = &self.policy.limits;
        // Per model request: each request of a batch is held to them, not their sum.
        let (messages, estimated) = parsed.info.largest_request();
        let which = if parsed.info.largest.is_some() { "a request of this batch has " } else { "" };
        if let Some(max) = limits.max_messages {
            if messages > max {
                out.counter(metrics::name("guardrails.limits", &[("reason", "messages")]), 1);
                return Err((
                    Error::InvalidRequest {
                        param: Some("messages".into()),
                        message: format!("{which}{messages} messages; this route allows at most {max}"),
                    },
                    dialect,
                ));
            }
        }
        if let Some(max) = limits.max_prompt_tokens {
            if estimated > max {
                out.counter(metrics::name("guardrails.limits", &[("reason", "prompt_tokens")]), 1);
                return Err((
                    Error::InvalidRequest {
                        param: Some("messages".into()),
                        message: format!("{which}about {estimated} prompt tokens; this route allows at most {max}"),
                    },
                    dialect,
                ));
            }
        }
        // The tier an auth-driven access policy resolved (at request headers) picks the profile.
        self.profile = self.policy.profile_index(ex.tier.as_deref());
        if self.profile.is_some() {
            self.masker = self.policy.profile(self.profile).masker();
            out.state("tollgate.guardrails.profile", ex.tier.clone().unwrap_or_default());
        }
        if ex.route.kind.reads_form() {
            return Ok(()); // its text fields come to `form_field`, as the form passes
        }
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return self.unreadable(
                "request_malformed_json",
                Error::InvalidJson { detail: UNREADABLE.into() },
                dialect,
                out,
            );
        };
        let kind = ex.route.kind;
        let changed = self.check_request(ex, out, &mut |policy, check| {
            message::for_each_text(&mut value, kind, &policy.request, &mut |_, text| check(text));
        })?;
        if !changed {
            return Ok(());
        }
        if ex.injected_include_usage {
            // token-counter's splice was on the client's bytes: carry it over.
            if let Some(object) = value.as_object_mut() {
                let options = object.entry("stream_options").or_insert_with(|| serde_json::json!({}));
                if let Some(options) = options.as_object_mut() {
                    options.insert("include_usage".into(), serde_json::Value::Bool(true));
                }
            }
        }
        let bytes = serde_json::to_vec(&value)
            .map_err(|_| (Error::Internal { detail: "re-serialising the masked request".into() }, dialect))?;
        ex.replacement = Some(bytes);
        Ok(())
    }

    fn reads_form_fields(&self, ex: &Exchange) -> Option<bool> {
        guarded(ex.route.kind).then_some(self.policy.profile(self.profile).mode == Mode::Enforce)
    }

    fn form_field(
        &mut self,
        ex: &mut Exchange,
        name: &str,
        value: &[u8],
        out: &mut Outbox,
    ) -> Result<Option<Vec<u8>>, (Error, Dialect)> {
        let kind = ex.route.kind;
        let policy = self.policy.profile(self.profile);
        if !message::form_field_is_text(kind, name, &policy.request) {
            return Ok(None);
        }
        let Ok(text) = std::str::from_utf8(value) else {
            let error = Error::InvalidRequest {
                param: Some(name.to_string()),
                message: "this text field of the form is not UTF-8, so guardrails cannot check it".into(),
            };
            return self.unreadable("form_field_not_utf8", error, ex.dialect(), out).map(|()| None);
        };
        let mut text = text.to_string();
        let changed = self.check_request(ex, out, &mut |_, check| check(&mut text))?;
        Ok(changed.then(|| text.into_bytes()))
    }

    fn form_unreadable(
        &mut self,
        ex: &Exchange,
        reason: &'static str,
        out: &mut Outbox,
    ) -> Result<(), (Error, Dialect)> {
        let message = match reason {
            "form_field_too_long" => format!(
                "a text field of the form is over {} KiB, more than guardrails reads to check it",
                crate::form::MAX_FIELD / 1024
            ),
            _ => "the multipart form cannot be read to its end (a part or the closing boundary is missing or \
                  malformed), so guardrails cannot check its text fields"
                .to_string(),
        };
        self.unreadable(reason, Error::InvalidRequest { param: None, message }, ex.dialect(), out)
    }

    fn response_headers(&mut self, ex: &Exchange, head: &ResponseHead, _host: &dyn StageHost, out: &mut Outbox) {
        if let Some(report) = &self.report {
            out.response_headers.push(HeaderEdit::Set(HEADER, report.clone()));
        }
        if !self.policy.response.enabled
            || !guarded(ex.route.kind)
            || !ex.route.kind.answers_with_text()
            || !head.has_body
            || !(200..300).contains(&head.status)
        {
            return;
        }
        if head.content_encoding.as_deref().is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
            out.counter(
                metrics::name("guardrails.unchecked", &[("direction", "response"), ("reason", "response_compressed")]),
                1,
            );
            return;
        }
        // The client's format, not the backend's: provider-rewrite (if any) translates the
        // answer before this stage reads it.
        self.answer = if ex.streaming() {
            let holdback = self.policy.profile(self.profile).response.holdback_chars;
            let guard = match ex.route.kind {
                ApiKind::OpenAiChat | ApiKind::OpenAiCompletions | ApiKind::AnthropicMessages => {
                    Some(StreamGuard::new(ex.dialect(), holdback))
                }
                // A transcription's `transcript.text.delta`/`.done` are Responses-like events.
                ApiKind::OpenAiResponses | ApiKind::OpenAiTranscription => Some(StreamGuard::responses(holdback)),
                ApiKind::GeminiGenerate { .. } if has_type(head, "text/event-stream") => {
                    Some(StreamGuard::gemini(holdback))
                }
                // Without `alt=sse`: a JSON array, its elements as they are generated.
                ApiKind::GeminiGenerate { .. } => Some(StreamGuard::gemini_array(holdback)),
                ApiKind::BedrockConverse { .. } if has_type(head, "application/vnd.amazon.eventstream") => {
                    Some(StreamGuard::bedrock(holdback))
                }
                // The families whose events inside the frames are read; the others' are not.
                ApiKind::BedrockInvoke { .. }
                    if has_type(head, "application/vnd.amazon.eventstream")
                        && ex.route.path_model.as_deref().is_some_and(|m| {
                            ["anthropic.claude", "amazon.nova", "meta.llama", "amazon.titan-text", "mistral."]
                                .iter()
                                .any(|family| m.contains(family))
                        }) =>
                {
                    Some(StreamGuard::bedrock_invoke(holdback))
                }
                _ => None,
            };
            if let Some(guard) = guard {
                out.response_headers.push(HeaderEdit::Remove("content-length"));
                Answer::Stream(Box::new(guard))
            } else {
                out.counter(
                    metrics::name("guardrails.unchecked", &[("direction", "response"), ("reason", "stream_format")]),
                    1,
                );
                Answer::Off
            }
        } else {
            out.response_headers.push(HeaderEdit::Remove("content-length"));
            // A transcript as `text`, `srt` or `vtt` is the body itself.
            self.plain = ex.route.kind == ApiKind::OpenAiTranscription && !has_type(head, "application/json");
            Answer::Json(Vec::new())
        };
    }

    fn response_chunk(
        &mut self,
        ex: &Exchange,
        chunk: &[u8],
        end_of_stream: bool,
        _now: &Now<'_>,
        _host: &dyn StageHost,
        out: &mut Outbox,
    ) -> Option<Vec<u8>> {
        let base = self.policy.clone();
        let policy = base.profile(self.profile);
        let dialect = ex.dialect();
        match &mut self.answer {
            Answer::Off => None,
            Answer::Done => Some(Vec::new()),
            Answer::Json(held) => {
                held.extend_from_slice(chunk);
                if held.len() > MAX_ANSWER_BYTES {
                    self.answer = Answer::Done;
                    out.counter(
                        metrics::name(
                            "guardrails.unchecked",
                            &[("direction", "response"), ("reason", "answer_too_large")],
                        ),
                        1,
                    );
                    return Some(Error::Blocked { rule: "response_too_large".into(), entity: None }.body(dialect));
                }
                if !end_of_stream {
                    return Some(Vec::new());
                }
                let held = std::mem::take(held);
                self.answer = Answer::Done;
                Some(self.json_answer(policy, held, dialect, out))
            }
            Answer::Stream(guard) => {
                let mut bytes = Vec::with_capacity(chunk.len() + 64);
                let mut tally = Tally::new();
                let mut result = guard.push(chunk, policy, &mut self.masker, &mut tally, &mut bytes);
                if result.is_ok() && end_of_stream {
                    result = guard.finish(policy, &mut self.masker, &mut tally, &mut bytes);
                }
                count(out, "response", &tally);
                if let Err(blocked) = result {
                    decision_metric(out, "response", Decision::Block);
                    out.log(
                        super::LogLevel::Info,
                        format!("guardrails: answer ended by {} ({})", blocked.rule, blocked.entity),
                    );
                }
                Some(bytes)
            }
        }
    }
}

impl GuardStream {
    fn json_answer(&mut self, policy: &Policy, held: Vec<u8>, dialect: Dialect, out: &mut Outbox) -> Vec<u8> {
        let parsed = match (self.plain, std::str::from_utf8(&held)) {
            // The whole body is the one text (its changes are written back as text below).
            (true, Ok(text)) => Ok(serde_json::Value::String(text.to_string())),
            (true, Err(_)) => Err(()),
            (false, _) => serde_json::from_slice::<serde_json::Value>(&held).map_err(|_| ()),
        };
        let Ok(mut value) = parsed else {
            out.counter(
                metrics::name("guardrails.unchecked", &[("direction", "response"), ("reason", "response_unreadable")]),
                1,
            );
            return match policy.failure {
                Failure::Closed => {
                    Error::UpstreamInvalid { detail: "the answer is not readable JSON".into() }.body(dialect)
                }
                Failure::Open => held,
            };
        };
        let enforce = policy.mode == Mode::Enforce;
        let restore = policy.response.restore;
        let mut tally = Tally::new();
        let mut decision = Decision::Allow;
        let mut changed = false;
        let masker = &mut self.masker;
        let mut check = |text: &mut String| {
            let mut findings = Vec::new();
            policy.scan(text, &mut findings);
            decision = decision.max(policy.decide(&findings));
            tally.extend(findings.iter().map(|f| (f.rule.to_string(), f.entity.to_string(), f.action)));
            if enforce {
                if let Some(masked) = masker.apply(text, &findings) {
                    *text = masked;
                    changed = true;
                }
            }
            if restore {
                if let Some(restored) = masker.restore(text) {
                    *text = restored;
                    changed = true;
                }
            }
        };
        match &mut value {
            serde_json::Value::String(text) if self.plain => check(text),
            value => message::for_each_answer_text(value, &mut check),
        }
        count(out, "response", &tally);
        if !tally.is_empty() {
            decision_metric(out, "response", decision);
        }
        if decision == Decision::Block {
            let (rule, entity) =
                tally.iter().find(|t| t.2 == Action::Block).map(|t| (t.0.clone(), t.1.clone())).unwrap_or_default();
            return Error::Blocked { rule, entity: Some(entity) }.body(dialect);
        }
        if !changed {
            return held;
        }
        match value {
            serde_json::Value::String(text) if self.plain => text.into_bytes(),
            value => serde_json::to_vec(&value).unwrap_or(held),
        }
    }
}

/// Whether the answer's media type (parameters aside) is `mime`.
fn has_type(head: &ResponseHead, mime: &str) -> bool {
    head.content_type
        .as_deref()
        .is_some_and(|t| t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case(mime)))
}

/// Parses the guardrails configuration (JSON); errors name the field.
pub fn parse(json: &[u8], prefix: &str) -> Result<Policy, String> {
    Policy::from_json(json, prefix)
}
