//! The admin's requests: parsed into an operation the key store applies,
//! and key checks, each one cheap upstream call that tells whether a key
//! works, whose findings go back to the key store.

use super::{BodyFrom, Event, Exchange, Phase, Step, UpstreamRequest};
use crate::google::errors;
use crate::request::admin::{self, MAX_ADMIN_BODY_BYTES};
use crate::request::admit;
use crate::request::route::AdminRoute;
use crate::wire::error::ProxyError;
use crate::wire::keystore::CheckInfo;
use crate::wire::keystore::Lease;
use crate::wire::keystore::{AdminAnswer, AdminOp};
use crate::wire::secret;
use crate::wire::secret::ApiKey;
use crate::wire::secret::KeyId;
use std::collections::VecDeque;
/// What one check found, from the upstream's answer to a models list (the
/// store stamps it with its time).
pub fn classify_check(status: u16, body: &[u8], secret: &ApiKey) -> CheckInfo {
    let err = errors::parse_google_error(body);
    let message = err.as_ref().map(|e| e.message.to_ascii_lowercase()).unwrap_or_default();
    let reasons: Vec<&str> = err.as_ref().map(|e| e.reasons.iter().map(String::as_str).collect()).unwrap_or_default();
    let has = |r: &str| reasons.contains(&r);
    let found = match status {
        200..=299 => "works",
        429 => "rate-limited",
        401 if has("ACCESS_TOKEN_TYPE_UNSUPPORTED") || message.contains("expected oauth 2 access token") => {
            "wrong-key-type"
        }
        _ if message.contains("reported as leaked") => "leaked",
        _ if has("CONSUMER_SUSPENDED") || message.contains("suspended") => "suspended",
        _ if has("API_KEY_INVALID") || message.contains("api key not valid") || status == 401 => "invalid",
        _ => "error",
    };
    let reason = (found != "works").then(|| {
        let text = err.map(|e| e.message).filter(|m| !m.is_empty()).unwrap_or_else(|| format!("HTTP {status}"));
        secret::redact(&text, &[secret])
    });
    CheckInfo { status: found.to_owned(), at: 0, reason }
}

/// The most of a key check's answer read.
pub const CHECK_BODY_BYTES: usize = 64 * 1024;

/// The check of `lease`: one models list, the cheapest call (no generation
/// quota spent).
pub fn check_request(cfg: &crate::config::Config, lease: &Lease) -> UpstreamRequest {
    let base = &cfg.gemini_upstream;
    UpstreamRequest {
        method: crate::wire::http::Method::Get,
        scheme: base.scheme,
        authority: base.authority.clone(),
        path_and_query: format!("{}/models?pageSize=1", base.path),
        headers: vec![("x-goog-api-key".to_owned(), lease.secret.expose().to_owned())],
        body: BodyFrom::Read,
        keep_alive: None,
    }
}

/// An admin request in progress: its route, and the keys a check call has
/// still to check, with what was found.
#[derive(Debug)]
pub(super) struct Checks {
    route: AdminRoute,
    pending: VecDeque<Lease>,
    results: Vec<(KeyId, CheckInfo)>,
    remaining: usize,
}

/// What an admin request waits for, with what it waits with.
#[derive(Debug)]
pub(super) enum Awaiting {
    /// The request body.
    Body,
    /// The key store's answer; `recording`: to the checks' findings.
    Answer { recording: bool },
    /// The head of this key's check.
    CheckHead(Lease),
    /// The body of this key's check, after its status.
    CheckBody(Lease, u16),
}

impl Awaiting {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::Body => "the admin's request body",
            Self::Answer { .. } => "the key store's admin answer",
            Self::CheckHead(_) => "a key check's head",
            Self::CheckBody(..) => "a key check's body",
        }
    }
}

impl Exchange {
    /// Serves an admin route: reads its body if it has one, then asks the
    /// key store.
    pub(super) fn admin(&mut self, route: AdminRoute) -> Step {
        let reads_body = route.reads_body();
        let checks = Checks { route, pending: VecDeque::new(), results: Vec::new(), remaining: 0 };
        if !reads_body {
            return self.admin_op(checks, &[]);
        }
        match admit::declared_length(&self.headers) {
            Ok(Some(n)) if n > MAX_ADMIN_BODY_BYTES => {
                self.fail(ProxyError::PayloadTooLarge { limit: MAX_ADMIN_BODY_BYTES })
            }
            Ok(declared) => {
                self.phase = Phase::Admin(checks, Awaiting::Body);
                Step::ReadBody { limit: MAX_ADMIN_BODY_BYTES, declared }
            }
            Err(e) => self.fail(e),
        }
    }

    pub(super) fn admin_event(&mut self, checks: Checks, awaiting: Awaiting, event: Event) -> Step {
        match (awaiting, event) {
            (Awaiting::Body, Event::Body(body)) => self.admin_op(checks, &body),
            (Awaiting::Body, Event::BodyFailed(e)) => self.body_failed(e, MAX_ADMIN_BODY_BYTES),
            (Awaiting::Answer { recording }, Event::Admin(answer)) => self.admin_answered(checks, recording, answer),
            (Awaiting::Answer { .. }, Event::StoreFailed(why)) => self.store_failed(&why),
            (Awaiting::CheckHead(lease), Event::Head { status, .. }) => {
                self.phase = Phase::Admin(checks, Awaiting::CheckBody(lease, status));
                Step::ReadErrorBody { limit: CHECK_BODY_BYTES }
            }
            (Awaiting::CheckHead(lease), Event::SendFailed { reason, .. }) => {
                self.check_found(checks, lease, CheckInfo { status: "error".into(), at: 0, reason: Some(reason) })
            }
            (Awaiting::CheckBody(lease, status), Event::ErrorBody(body)) => {
                let found = classify_check(status, &body, &lease.secret);
                self.check_found(checks, lease, found)
            }
            (awaiting, event) => self.host_bug(awaiting.name(), &event),
        }
    }

    fn admin_op(&mut self, checks: Checks, body: &[u8]) -> Step {
        if checks.route == AdminRoute::ProxySet && !self.cfg.outbound_proxies {
            return self.fail(ProxyError::BadRequest(
                "this host cannot send through an outbound proxy (a Cloudflare Worker's fetch leaves from Cloudflare); set projects' proxies on host-runner".into(),
            ));
        }
        match admin::parse(&checks.route, body) {
            Ok(op) => {
                self.phase = Phase::Admin(checks, Awaiting::Answer { recording: false });
                Step::Admin(op)
            }
            Err(e) => self.fail(e),
        }
    }

    fn admin_answered(&mut self, mut checks: Checks, recording: bool, answer: AdminAnswer) -> Step {
        let is_plan = matches!(checks.route, AdminRoute::Check) && !recording;
        if is_plan && answer.status == 200 {
            checks.remaining = serde_json::from_str::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| v["remaining"].as_u64())
                .unwrap_or(0) as usize;
            checks.pending = answer.leases.into();
            return self.next_check(checks);
        }
        let body = match checks.route {
            AdminRoute::Aliases | AdminRoute::AliasesSet if answer.status == 200 => self.alias_table(&answer.body),
            _ => answer.body,
        };
        self.emit([Step::Respond(admin::response(answer.status, body))])
    }

    /// The admin's view of the model aliases: the key store's (the
    /// admin's, consulted first), then `MODEL_ALIASES`'s, then the default
    /// table's.
    fn alias_table(&self, stored: &str) -> String {
        let pairs = |entries: &[(String, String)]| -> Vec<serde_json::Value> {
            entries.iter().map(|(from, to)| serde_json::json!({"from": from, "to": to})).collect()
        };
        let mut table: serde_json::Value = serde_json::from_str(stored).unwrap_or_else(|_| serde_json::json!({}));
        let configured = &self.cfg.model_aliases;
        table["configured"] = pairs(configured.own()).into();
        table["defaults"] = pairs(configured.defaults()).into();
        table.to_string()
    }

    /// Checks the next key, or records what the checks found.
    fn next_check(&mut self, mut checks: Checks) -> Step {
        match checks.pending.pop_front() {
            Some(lease) => {
                let request = check_request(&self.cfg, &lease);
                self.phase = Phase::Admin(checks, Awaiting::CheckHead(lease));
                Step::Send(request)
            }
            None => {
                let results = std::mem::take(&mut checks.results);
                let remaining = checks.remaining;
                self.phase = Phase::Admin(checks, Awaiting::Answer { recording: true });
                Step::Admin(AdminOp::Checked { results, remaining })
            }
        }
    }

    fn check_found(&mut self, mut checks: Checks, lease: Lease, found: CheckInfo) -> Step {
        let found = CheckInfo { reason: found.reason.map(|r| secret::redact(&r, &[&lease.secret])), ..found };
        checks.results.push((lease.id, found));
        self.next_check(checks)
    }
}
