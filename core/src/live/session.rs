//! One Live session as a sans-IO state machine: the host asks what to do
//! next ([`Session::resume`] returns a [`Step`]), does it, and feeds back
//! what happened (an [`Event`]). After `setupComplete` the host relays
//! frames itself and shows the session each server message
//! ([`Session::upstream_message`]) and the end ([`Event::Ended`]).
//!
//! ```text
//! let mut event = Event::Start;
//! loop {
//!     event = match session.resume(event) {
//!         Step::Upgrade => /* answer 101 */ Event::Done,
//!         Step::Refuse(response) => /* answer it, no WebSocket */ Event::Done,
//!         Step::ReadSetup { limit, timeout_ms } => Event::Setup(first message) | Event::ClientGone(why),
//!         Step::Admin(op) => Event::Admin(store.admin(op)),
//!         Step::Acquire { .. } => Event::Acquired(store.acquire(..)),
//!         Step::Open(upstream) => /* connect, send upstream.setup, read one message */ Event::Opened { .. },
//!         Step::Check(request) => Event::Checked { status, body },
//!         Step::Relay { first, binary } => /* send first, then relay */ Event::Ended(end),
//!         Step::Close(close) => /* close the client's socket */ Event::Done,
//!         Step::Report(_) | Step::Log(_) | Step::Note(_) | Step::Summary(_) => Event::Done,
//!         Step::Done => break,
//!     }
//! }
//! ```

use super::{
    Close, MAX_SETUP_BYTES, OPEN_TIMEOUT_MS, SETUP_TIMEOUT_MS, Setup, Target, classify_close, read_server_message,
    read_setup, upstream_url,
};
use crate::config::Config;
use crate::exchange::admin::check_request;
use crate::exchange::{MAX_ATTEMPTS, UpstreamRequest};
use crate::google::errors::{self, Confirmation, Verdict};
use crate::wire::error::ProxyError;
use crate::wire::keystore::{AdminAnswer, AdminOp, Claim, Lease, Outcome, Owned, Report, Unavailable};
use crate::wire::resource::Resource;
use crate::wire::secret::{self, ApiKey, KeyId};
use crate::wire::summary::{Attempt, Summary};
use crate::wire::usage::TokenUsage;
use std::collections::VecDeque;
use std::sync::Arc;

/// The upstream session to open: connect to `url` with `headers` (the one
/// credential among them), send `setup` as a text message, and read
/// Google's first message (within `timeout_ms`).
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `wss://…/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent`:
    /// never a credential in it.
    pub url: String,
    /// The headers to send: the pool key (`x-goog-api-key`), or the
    /// ephemeral token (`authorization: Token …`).
    pub headers: Vec<(String, String)>,
    /// The client's setup, its model resolved.
    pub setup: String,
    /// How long the attempt may take, from connecting to Google's first
    /// message.
    pub timeout_ms: u64,
    /// The key the attempt is on (a token's session: the key that minted
    /// it), whose project's outbound proxy the host goes through.
    pub key: crate::wire::secret::KeyId,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Upstream").field("url", &self.url).field("headers", &names).finish_non_exhaustive()
    }
}

/// What the host does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Answer the upgrade with `101` (the caller may open a session);
    /// answer [`Event::Done`] once it is a WebSocket.
    Upgrade,
    /// Answer the upgrade with this refusal (no WebSocket); answer
    /// [`Event::Done`].
    Refuse(crate::wire::http::Response),
    /// Read the client's first message (at most `limit` bytes, within
    /// `timeout_ms`). Answer [`Event::Setup`], or [`Event::ClientGone`].
    ReadSetup {
        /// Most bytes taken.
        limit: usize,
        /// How long to wait.
        timeout_ms: u64,
    },
    /// Apply a key-store operation. Answer [`Event::Admin`] (or
    /// [`Event::StoreFailed`]); during a relay, send it without waiting.
    Admin(AdminOp),
    /// Hand out a key, as [`crate::exchange::Step::Acquire`]. Answer
    /// [`Event::Acquired`] or [`Event::StoreFailed`].
    Acquire {
        /// The model.
        model: String,
        /// Keys this session already tried.
        exclude: Vec<KeyId>,
        /// The previous attempt's report.
        settle: Option<Report>,
        /// Who the session claims to be (first attempt only).
        client: Option<Claim>,
        /// What it names (a resumption handle, an ephemeral token).
        resources: Vec<Resource>,
    },
    /// Open the upstream session. Answer [`Event::Opened`] with Google's
    /// first message, [`Event::Closed`] when Google closed before one,
    /// [`Event::Rejected`] when it refused the upgrade, or
    /// [`Event::Unreachable`].
    Open(Upstream),
    /// Send this key check (a models list with the key alone). Answer
    /// [`Event::Checked`] with at most
    /// [`CHECK_BODY_BYTES`](crate::exchange::admin::CHECK_BODY_BYTES) of its body, or
    /// [`Event::Unreachable`].
    Check(UpstreamRequest),
    /// The session is Google's: send `first` to the client (as a binary
    /// frame when `binary`), then relay every frame both ways until one
    /// side ends. Answer [`Event::Ended`].
    Relay {
        /// Google's first message (`setupComplete`).
        first: Vec<u8>,
        /// Whether it came as a binary frame.
        binary: bool,
    },
    /// Close the client's socket (the session never started).
    Close(Close),
    /// Send this report to the key store.
    Report(Report),
    /// Log a failure.
    Log(String),
    /// Log an event worth knowing.
    Note(String),
    /// The session, summed up.
    Summary(Summary),
    /// Nothing more.
    Done,
}

/// How a relayed session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client closed (or went away cleanly).
    ClientClosed,
    /// The client's connection broke.
    ClientGone(String),
    /// Google closed, with this code and reason.
    UpstreamClosed(u16, String),
    /// Google's connection broke (or stayed silent past the host's limit).
    UpstreamGone(String),
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Begin.
    Start,
    /// The client's first message.
    Setup(Vec<u8>),
    /// The client went away, or sent nothing in time, or sent too much.
    ClientGone(String),
    /// The key store's answer.
    Admin(AdminAnswer),
    /// The key store's choice.
    Acquired(Result<Lease, Unavailable>),
    /// The key store could not be asked.
    StoreFailed(String),
    /// Google accepted the session and sent this first message.
    Opened {
        /// The message.
        message: Vec<u8>,
        /// Whether it came as a binary frame.
        binary: bool,
    },
    /// Google closed the session before its first message.
    Closed {
        /// The close code (1005 when none was given).
        code: u16,
        /// Its reason.
        reason: String,
    },
    /// Google refused the upgrade with an HTTP answer.
    Rejected {
        /// Its status.
        status: u16,
        /// Its body (bounded).
        body: Vec<u8>,
    },
    /// Google could not be reached, or said nothing in time.
    Unreachable {
        /// What failed.
        reason: String,
    },
    /// A key check's answer.
    Checked {
        /// Its status.
        status: u16,
        /// Its body (bounded).
        body: Vec<u8>,
    },
    /// The relayed session ended.
    Ended(End),
    /// The step was done.
    Done,
}

/// What the session waits for.
#[derive(Debug)]
enum Phase {
    Start,
    /// The key store tells who the caller is, before the upgrade.
    Identify,
    Upgrading,
    Setup,
    Aliases,
    Lease,
    Opening(Lease),
    /// A policy close is being checked: the key, and the close to give
    /// the client if the key works.
    Checking(Lease, Close),
    Relaying(Lease),
    Over,
}

/// One Live session: see the [module](self).
#[derive(Debug)]
pub struct Session {
    cfg: Arc<Config>,
    target: Target,
    path: String,
    claim: Option<Claim>,
    token: Option<ApiKey>,
    request_id: Option<String>,
    phase: Phase,
    queue: VecDeque<Step>,
    /// The setup to send, its model resolved.
    setup: String,
    setup_read: Option<Setup>,
    /// The model counted (resolved).
    model: String,
    resources: Vec<Resource>,
    client: Option<String>,
    tried: Vec<KeyId>,
    attempts: Vec<Attempt>,
    last_failure: Option<Outcome>,
    all_rate_limited: bool,
    usage: Option<TokenUsage>,
    went_away: bool,
    started: bool,
    error: Option<&'static str>,
    /// The proxy's own refusal, in words.
    reason: Option<String>,
    /// The status of an HTTP refusal, before the upgrade.
    refused: Option<u16>,
    /// An open proxy's refusal of a foreign page or host, for a caller the
    /// key store finds to be no client.
    foreign: Option<ProxyError>,
}

impl Session {
    pub(super) fn new(
        cfg: Arc<Config>,
        target: Target,
        path: &str,
        claim: Option<Claim>,
        token: Option<ApiKey>,
    ) -> Self {
        let resources = token.iter().map(|t| Resource::auth_token(t.expose())).collect();
        Self {
            cfg,
            target,
            path: format!("/{}", path.trim_start_matches('/')),
            claim,
            token,
            request_id: None,
            phase: Phase::Start,
            queue: VecDeque::new(),
            setup: String::new(),
            setup_read: None,
            model: String::new(),
            resources,
            client: None,
            tried: Vec::new(),
            attempts: Vec::new(),
            last_failure: None,
            all_rate_limited: true,
            usage: None,
            went_away: false,
            started: false,
            error: None,
            reason: None,
            refused: None,
            foreign: None,
        }
    }

    pub(super) fn with_foreign(mut self, foreign: Option<ProxyError>) -> Self {
        self.foreign = foreign;
        self
    }

    /// The id the host logs this session under.
    pub fn with_request_id(mut self, id: String) -> Self {
        self.request_id = Some(id);
        self
    }

    /// Advances the session with what happened; what to do next.
    pub fn resume(&mut self, event: Event) -> Step {
        if let Some(step) = self.queue.pop_front() {
            return step;
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Over);
        match (phase, event) {
            // The proxy key's: upgraded at once. Any other caller is
            // known to the key store first (a client key, an ephemeral
            // token it minted, an open proxy's caller), so that a stranger
            // is refused before the upgrade.
            (Phase::Start, Event::Start) => match &self.claim {
                None => {
                    self.phase = Phase::Upgrading;
                    Step::Upgrade
                }
                Some(claim) => {
                    let resources = self.resources.iter().map(|r| r.name().to_owned()).collect();
                    self.phase = Phase::Identify;
                    Step::Admin(AdminOp::Identify { claim: claim.clone(), resources })
                }
            },
            (Phase::Identify, Event::Admin(answer)) if answer.status == 200 => {
                let client = serde_json::from_str::<serde_json::Value>(&answer.body)
                    .ok()
                    .is_some_and(|v| v["client"].is_string());
                if !client && let Some(e) = self.foreign.take() {
                    self.error = Some(e.kind());
                    self.reason = Some(e.to_string());
                    return self.finish([Step::Refuse(e.to_response(crate::wire::http::Dialect::Gemini))]);
                }
                self.phase = Phase::Upgrading;
                Step::Upgrade
            }
            (Phase::Identify, Event::Admin(answer)) => {
                let refusal = serde_json::from_str::<serde_json::Value>(&answer.body)
                    .ok()
                    .and_then(|v| serde_json::from_value::<crate::wire::keystore::Refusal>(v["refused"].clone()).ok());
                let e = match (refusal, &self.token) {
                    (_, Some(_)) => ProxyError::Unauthorized(
                        "the ephemeral token is not one this proxy minted, or it expired: mint one through the proxy (POST /v1alpha/auth_tokens)",
                    ),
                    (Some(refusal), None) => ProxyError::refused(refusal),
                    (None, None) => ProxyError::Unauthorized("the key presented opens no session on this proxy"),
                };
                self.error = Some(e.kind());
                self.reason = Some(e.to_string());
                self.finish([Step::Refuse(e.to_response(crate::wire::http::Dialect::Gemini))])
            }
            (Phase::Identify, Event::StoreFailed(why)) => {
                let e = ProxyError::KeyStoreUnavailable { request_id: self.request_id.clone() };
                self.error = Some(e.kind());
                let log = self.log(format!("the key store failed: {why}"));
                self.finish([log, Step::Refuse(e.to_response(crate::wire::http::Dialect::Gemini))])
            }
            (Phase::Upgrading, Event::Done) => {
                self.phase = Phase::Setup;
                Step::ReadSetup { limit: MAX_SETUP_BYTES, timeout_ms: SETUP_TIMEOUT_MS }
            }
            (Phase::Setup, Event::Setup(message)) => self.setup_read(&message),
            (Phase::Setup, Event::ClientGone(why)) => {
                self.error = Some("client-gone");
                self.finish([self.note(format!("the client sent no setup: {why}"))])
            }
            (Phase::Aliases, Event::Admin(answer)) => {
                let aliases = self.cfg.model_aliases.under(&crate::exchange::runtime_aliases(&answer));
                self.resolve(&aliases);
                self.acquire(None)
            }
            (Phase::Aliases, Event::StoreFailed(_)) => {
                let aliases = self.cfg.model_aliases.clone();
                self.resolve(&aliases);
                self.acquire(None)
            }
            (Phase::Lease, Event::Acquired(Ok(lease))) => self.open(lease),
            (Phase::Lease, Event::Acquired(Err(unavailable))) => self.give_up(None, Some(unavailable)),
            (Phase::Lease, Event::StoreFailed(why)) => {
                let e = ProxyError::KeyStoreUnavailable { request_id: self.request_id.clone() };
                self.refuse(&e, [self.log(format!("the key store failed: {why}"))])
            }
            (Phase::Opening(lease), Event::Opened { message, binary }) => {
                self.started = true;
                self.attempts.push(Attempt::of(&lease.id, &Outcome::Success));
                self.phase = Phase::Relaying(lease);
                Step::Relay { first: message, binary }
            }
            (Phase::Opening(lease), Event::Closed { code, reason }) => {
                let reason = secret::redact(&reason, &[&lease.secret]);
                match classify_close(code, &reason) {
                    Verdict::Retry(outcome) => self.retry(lease, outcome),
                    Verdict::Suspect => {
                        let check = check_request(&self.cfg, &lease);
                        self.phase = Phase::Checking(lease, Close::new(code, &reason));
                        Step::Check(check)
                    }
                    Verdict::Relay(outcome) => self.relay_close(lease, outcome, code, &reason),
                    Verdict::Success => self.relay_close(lease, Outcome::ClientError { status: 400 }, code, &reason),
                }
            }
            (Phase::Opening(lease), Event::Rejected { status, body }) => {
                let redact = |s: &str| secret::redact(s, &[&lease.secret]);
                match errors::classify(status, &body, redact) {
                    Verdict::Retry(outcome) => self.retry(lease, outcome),
                    Verdict::Suspect => {
                        let reason = errors::parse_google_error(&body).map(|e| e.message).unwrap_or_default();
                        let close = Close::new(1008, &secret::redact(&reason, &[&lease.secret]));
                        let check = check_request(&self.cfg, &lease);
                        self.phase = Phase::Checking(lease, close);
                        Step::Check(check)
                    }
                    verdict => {
                        let outcome = match verdict {
                            Verdict::Relay(outcome) => outcome,
                            _ => Outcome::UpstreamError { status, reason: "no WebSocket upgrade".to_owned() },
                        };
                        let reason = errors::parse_google_error(&body).map(|e| e.message).unwrap_or_default();
                        let reason = secret::redact(&reason, &[&lease.secret]);
                        let code = if status >= 500 { 1011 } else { 1008 };
                        self.relay_close(lease, outcome, code, &reason)
                    }
                }
            }
            (Phase::Opening(lease), Event::Unreachable { reason }) => {
                let reason = secret::redact(&reason, &[&lease.secret]);
                if reason.starts_with(crate::wire::proxy::PROXY_FAILED) {
                    return self.unreached(lease, reason);
                }
                self.retry(lease, Outcome::TransportError { reason })
            }
            (Phase::Checking(lease, close), Event::Checked { status, body }) => {
                match errors::confirm(status, &body, |s| secret::redact(s, &[&lease.secret])) {
                    Confirmation::KeyRejected(outcome) => self.retry(lease, outcome),
                    Confirmation::KeyWorks | Confirmation::Unknown => {
                        self.relay_close(lease, Outcome::ClientError { status: 400 }, close.code, &close.reason)
                    }
                }
            }
            (Phase::Checking(lease, close), Event::Unreachable { .. }) => {
                self.relay_close(lease, Outcome::ClientError { status: 400 }, close.code, &close.reason)
            }
            (Phase::Relaying(lease), Event::Ended(end)) => self.ended(lease, end),
            (Phase::Over, _) => Step::Done,
            (phase, event) => {
                let event = format!("{event:?}");
                let event = event.split(['(', ' ', '{']).next().unwrap_or_default();
                let phase = format!("{phase:?}");
                let phase = phase.split(['(', ' ', '{']).next().unwrap_or_default();
                let line = format!("a Live session got {event} while waiting in {phase}: a host bug");
                self.error = Some("internal");
                let close = Close::new(1011, "the proxy failed on this session");
                self.finish([self.log(line), Step::Close(close)])
            }
        }
    }

    /// What a server message tells: its usage is counted, and a new
    /// resumption handle is its key's at once (the client may resume
    /// before the session ends): the operation the host sends to the key
    /// store, without waiting for its answer.
    pub fn upstream_message(&mut self, message: &[u8]) -> Option<AdminOp> {
        let told = read_server_message(message);
        if let Some(u) = told.usage {
            self.usage.get_or_insert_with(TokenUsage::default).add(&u);
        }
        self.went_away |= told.go_away;
        let Phase::Relaying(lease) = &self.phase else { return None };
        let handle = told.handle?;
        let owned = vec![Owned { name: Resource::live_handle(&handle).name().to_owned(), expires: None }];
        Some(AdminOp::Own { key: lease.id.clone(), client: self.client.clone(), owned })
    }

    /// The close the client gets when Google closed with `code` and
    /// `reason`: the same, the reason redacted; a code no close frame may
    /// carry (1005, 1006, 1015) as 1000 or 1011.
    pub fn upstream_close(&self, code: u16, reason: &str) -> Close {
        let known: Vec<&ApiKey> = match &self.phase {
            Phase::Relaying(lease) => vec![&lease.secret],
            _ => Vec::new(),
        };
        let reason = secret::redact(reason, &known);
        match code {
            1005 => Close::new(1000, &reason),
            1006 | 1015 => Close::new(1011, "the upstream connection broke off"),
            1000..=4999 => Close::new(code, &reason),
            _ => Close::new(1011, &reason),
        }
    }

    fn setup_read(&mut self, message: &[u8]) -> Step {
        let (value, setup) = match read_setup(message) {
            Ok(read) => read,
            Err(why) => {
                self.error = Some("bad-request");
                return self.finish([Step::Close(Close::new(1007, why))]);
            }
        };
        if let Some(handle) = &setup.handle {
            self.resources.push(Resource::live_handle(handle));
        }
        self.model = setup.model.clone();
        self.setup = value.to_string();
        self.setup_read = Some(setup);
        // The admin's aliases first (an edit holds from the next session).
        self.phase = Phase::Aliases;
        Step::Admin(AdminOp::Aliases)
    }

    /// The model asked for, resolved; the setup names the model served.
    fn resolve(&mut self, aliases: &crate::config::aliases::Aliases) {
        let Some(setup) = &self.setup_read else { return };
        if let Some(to) = aliases.resolve(&setup.model) {
            let to = to.to_owned();
            if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&self.setup) {
                v["setup"]["model"] = serde_json::Value::String(format!("models/{to}"));
                self.setup = v.to_string();
            }
            self.model = to;
        }
    }

    fn acquire(&mut self, settle: Option<Report>) -> Step {
        self.phase = Phase::Lease;
        Step::Acquire {
            model: self.model.clone(),
            exclude: self.tried.clone(),
            settle,
            client: if self.tried.is_empty() { self.claim.clone() } else { None },
            resources: self.resources.clone(),
        }
    }

    fn open(&mut self, lease: Lease) -> Step {
        if self.tried.is_empty() {
            self.client = lease.client.clone();
        }
        let credential = match &self.token {
            // A constrained session goes with its token, as it came.
            Some(token) => ("authorization".to_owned(), format!("Token {}", token.expose())),
            None => ("x-goog-api-key".to_owned(), lease.secret.expose().to_owned()),
        };
        let upstream = Upstream {
            url: upstream_url(&self.cfg, &self.target),
            headers: vec![credential],
            setup: self.setup.clone(),
            timeout_ms: OPEN_TIMEOUT_MS.min(self.cfg.timeouts.first_byte_ms),
            key: lease.id.clone(),
        };
        self.phase = Phase::Opening(lease);
        Step::Open(upstream)
    }

    /// The attempt with `lease` failed as `outcome`: reported, and the
    /// same setup goes to the next key (a constrained session's token
    /// opens its own key's project only).
    /// The attempt never reached Google (its outbound proxy failed): the
    /// next key is tried, and this one is not held to it (no report).
    fn unreached(&mut self, lease: Lease, reason: String) -> Step {
        self.all_rate_limited = false;
        self.tried.push(lease.id.clone());
        let outcome = "proxy-failed".to_owned();
        // The request log names the proxy (masked); the client hears only
        // that one failed, as a relayed request's caller does.
        self.attempts.push(Attempt { key: lease.id, outcome, reason: Some(reason) });
        let reason = crate::wire::proxy::PROXY_FAILED_TO_CALLER.to_owned();
        self.last_failure = Some(Outcome::TransportError { reason });
        if self.tried.len() >= MAX_ATTEMPTS || self.token.is_some() {
            return self.give_up(None, None);
        }
        self.acquire(None)
    }

    fn retry(&mut self, lease: Lease, outcome: Outcome) -> Step {
        // A constrained session's credential upstream is the client's
        // token, not the key: a refusal of it is the client's to hear.
        if self.token.is_some()
            && let Outcome::KeyRejected { reason } = &outcome
        {
            let reason = reason.clone();
            return self.relay_close(lease, Outcome::ClientError { status: 401 }, 1008, &reason);
        }
        self.all_rate_limited &= matches!(outcome, Outcome::RateLimited(_));
        self.tried.push(lease.id.clone());
        self.attempts.push(Attempt::of(&lease.id, &outcome));
        self.last_failure = Some(outcome.clone());
        let report = Report::of(&lease, &self.model, outcome);
        if self.tried.len() >= MAX_ATTEMPTS || self.token.is_some() {
            return self.give_up(Some(report), None);
        }
        self.acquire(Some(report))
    }

    /// Google's close of the attempt is the client's to see (its setup,
    /// its model): reported as `outcome`, and relayed.
    fn relay_close(&mut self, lease: Lease, outcome: Outcome, code: u16, reason: &str) -> Step {
        self.attempts.push(Attempt::of(&lease.id, &outcome));
        self.error = Some("refused-upstream");
        let report = Report { client: self.client.clone(), ..Report::of(&lease, &self.model, outcome) };
        self.finish([Step::Report(report), Step::Close(Close::new(code, reason))])
    }

    /// No attempt is left: the client is told why, the last report counts
    /// the session against its client.
    fn give_up(&mut self, settle: Option<Report>, unavailable: Option<Unavailable>) -> Step {
        let last = || match &self.last_failure {
            Some(Outcome::RateLimited(rl)) => format!("rate-limited: {}", rl.reason),
            Some(Outcome::KeyRejected { reason }) => format!("key rejected: {reason}"),
            Some(Outcome::UpstreamError { reason, .. }) => format!("closed: {reason}"),
            Some(Outcome::TransportError { reason }) => format!("could not reach the upstream: {reason}"),
            Some(other) => other.kind().to_owned(),
            None => "none".to_owned(),
        };
        let model = self.model.clone();
        let e = match unavailable {
            Some(Unavailable::AllLimited { until, retry_after_ms, keys }) => {
                ProxyError::AllKeysLimited { model, keys, until, retry_after_ms }
            }
            Some(Unavailable::NoUsableKey { why }) => ProxyError::NoUsableKey { model, why },
            Some(Unavailable::Refused { refusal }) => ProxyError::refused(refusal),
            Some(Unavailable::Resource { refusal }) => ProxyError::resource(refusal, &model),
            Some(Unavailable::AllTried) | None if self.all_rate_limited && !self.tried.is_empty() => {
                ProxyError::RateLimitedEverywhere { attempts: self.tried.len(), last: last() }
            }
            Some(Unavailable::AllTried) | None => {
                ProxyError::UpstreamFailed { attempts: self.tried.len(), last: last() }
            }
        };
        let mut steps = Vec::new();
        if let Some(mut report) = settle {
            report.client = self.client.clone();
            steps.push(Step::Report(report));
        }
        self.refuse(&e, steps)
    }

    /// Closes the client's socket with the proxy's refusal `e`, after
    /// `before`.
    fn refuse(&mut self, e: &ProxyError, before: impl IntoIterator<Item = Step>) -> Step {
        self.error = Some(e.kind());
        self.reason = Some(secret::redact(&e.to_string(), &[]));
        let close = Close::refusal(e);
        let steps: Vec<Step> = before.into_iter().chain([Step::Close(close)]).collect();
        self.finish(steps)
    }

    /// The relayed session ended: one call of its key, with its tokens.
    fn ended(&mut self, lease: Lease, end: End) -> Step {
        let outcome = match &end {
            End::ClientClosed | End::ClientGone(_) => Outcome::Success,
            End::UpstreamClosed(code, reason) => match (code, {
                // Google's words are redacted before they go anywhere (the
                // report, the request log).
                let known: Vec<&ApiKey> = std::iter::once(&lease.secret).chain(self.token.as_ref()).collect();
                classify_close(*code, &secret::redact(reason, &known))
            }) {
                (1000 | 1001 | 1005, _) => Outcome::Success,
                (1006 | 1015, _) => Outcome::BrokenStream { reason: format!("the connection dropped ({code})") },
                (_, Verdict::Retry(outcome)) => outcome,
                // A policy close mid-session: what the client sent.
                _ => Outcome::ClientError { status: 400 },
            },
            End::UpstreamGone(reason) => Outcome::BrokenStream { reason: secret::redact(reason, &[&lease.secret]) },
        };
        if let Some(last) = self.attempts.last_mut() {
            *last = Attempt::of(&lease.id, &outcome);
        }
        if !matches!(outcome, Outcome::Success) {
            self.error = Some(outcome.kind());
        }
        let report =
            Report { usage: self.usage, client: self.client.clone(), ..Report::of(&lease, &self.model, outcome) };
        let mut steps = vec![Step::Report(report)];
        if self.went_away {
            steps.push(self.note("Google sent goAway: the session neared its time limit".to_owned()));
        }
        self.finish(steps)
    }

    /// Queues `steps`, then the summary and the end.
    fn finish(&mut self, steps: impl IntoIterator<Item = Step>) -> Step {
        self.phase = Phase::Over;
        for step in steps {
            if let Step::Refuse(r) = &step {
                self.refused = Some(r.status);
            }
            self.queue.push_back(step);
        }
        let summary = self.summary();
        self.queue.push_back(Step::Summary(summary));
        self.queue.push_back(Step::Done);
        self.queue.pop_front().unwrap_or(Step::Done)
    }

    fn summary(&self) -> Summary {
        Summary {
            request_id: self.request_id.clone(),
            method: "GET".to_owned(),
            path: self.path.clone(),
            dialect: "live".to_owned(),
            client: self.client.clone(),
            model_asked: self.setup_read.as_ref().map(|s| s.model.clone()).filter(|asked| *asked != self.model),
            model: (!self.model.is_empty()).then(|| self.model.clone()),
            status: match (self.started, self.refused) {
                (true, _) => 101,
                (false, refused) => refused.unwrap_or(0),
            },
            streamed: true,
            attempts: self.attempts.clone(),
            tokens: self.usage,
            error: self.error.map(str::to_owned),
            reason: self.reason.clone().or_else(|| {
                let failed = self.error.is_some();
                failed.then(|| self.attempts.last()?.reason.clone()).flatten()
            }),
            ..Summary::default()
        }
    }

    fn log(&self, line: String) -> Step {
        Step::Log(self.tagged(line))
    }

    fn note(&self, line: String) -> Step {
        Step::Note(self.tagged(line))
    }

    fn tagged(&self, line: String) -> String {
        match &self.request_id {
            Some(id) => format!("live session {id}: {line}"),
            None => format!("live session: {line}"),
        }
    }
}
