//! The forwarding driver: one request's whole exchange as a sans-IO state
//! machine. The host asks it what to do next ([`Exchange::resume`] returns
//! a [`Step`]), does that with plain I/O, and feeds back what happened (an
//! [`Event`]). Every policy of the exchange lives here, once for both
//! hosts: admission, body limits (the login form's too), which key to try
//! next and when to stop (at most [`MAX_ATTEMPTS`] keys, never one twice),
//! what an upstream answer means, which headers cross in each direction,
//! how much of an error body is read, what a key-store failure answers, and
//! which report each attempt leaves, a stream that broke off included.
//!
//! The host's loop:
//!
//! ```text
//! let mut event = Event::Start;
//! loop {
//!     event = match exchange.resume(event) {
//!         Step::ReadBody { limit, .. } => /* read ≤ limit */ Event::Body(bytes),
//!         Step::Acquire { .. } => Event::Acquired(store.acquire(..)),
//!         Step::Send(request) => /* send with exchange.body(), or pipe the client's */ Event::Head { .. },
//!         Step::ReadErrorBody { limit } => Event::ErrorBody(bytes),
//!         Step::Stream { pipe, .. } => /* each piece through the pipe to the client */ Event::Streamed(result),
//!         Step::Respond(_) | Step::Report(_) | Step::Stats(_) | Step::Reset | Step::Log(_) | Step::Note(_)
//!         | Step::Summary(_) => Event::Done,
//!         Step::Done => break,
//!     }
//! }
//! ```
//!
//! The exchange's state is a [`Phase`] whose variants own what they wait
//! with (a flow's data, the lease being tried, the key under check), so no
//! step can see another's leftovers. Each flow has its own file, an
//! `impl Exchange` of its own (the way Pingora splits its proxy): the relay
//! with retries ([`relay`]), merged listings ([`listing`]), the admin's
//! checks ([`admin`]); [`outgoing`] builds what goes upstream.

pub mod admin;
pub mod listing;
mod outgoing;
mod pipe;
mod relay;
#[cfg(test)]
mod tests;

use crate::config::Config;
use crate::google::stream::Seen;
use crate::request::admit::{self, Admission, MAX_LOGIN_BODY_BYTES};
use crate::request::auth::Credentials;
use crate::request::headers;
use crate::request::login;
use crate::request::route::{self};
use crate::request::web;
use crate::wire::error::ProxyError;
use crate::wire::http::Dialect;
use crate::wire::http::{Headers, Method, Response};
use crate::wire::keystore::Claim;
use crate::wire::keystore::StatsView;
use crate::wire::keystore::{AdminAnswer, AdminOp};
use crate::wire::keystore::{Lease, Report, Unavailable};
use crate::wire::resource::Resource;
use crate::wire::secret::KeyId;
pub use crate::wire::summary::{Attempt, Summary};
pub use outgoing::{BodyFrom, COMMITTED_WAIT_MS, KeepAlive, UpstreamRequest, upstream_request};
pub use pipe::Pipe;
pub(crate) use relay::runtime_aliases;
use std::collections::VecDeque;
use std::sync::Arc;

/// The path of the host's own request for Google's models list.
pub const MODELS_LISTING_PATH: &str = "/v1beta/models";

/// Its query: every model in one page.
pub const MODELS_LISTING_QUERY: &str = "pageSize=1000";

/// At most this many upstream attempts (so keys) per request.
pub const MAX_ATTEMPTS: usize = 5;

/// At most this many keys are asked for a resource the key store does not
/// know (created before the proxy, or elsewhere) before Google's 403 or
/// 404 is the answer.
pub const MAX_PROBES: usize = 16;

/// The largest upstream error body read for classification and relaying.
pub const MAX_ERROR_BODY_BYTES: usize = 1024 * 1024;

/// What the host does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Read the request body, at most `limit` bytes (more is
    /// [`BodyError::TooLarge`]); `declared` is its `content-length`, when
    /// given, so that reading can stop there. Answer [`Event::Body`].
    ReadBody {
        /// Most bytes accepted.
        limit: u64,
        /// The declared length (never above `limit`).
        declared: Option<u64>,
    },
    /// Hand out a key for `model`, never one in `exclude`, after applying
    /// `settle` (the previous attempt's report), and after admitting the
    /// request's `client` on the first attempt ([`KeyPool::acquire_for`]).
    /// Answer [`Event::Acquired`], or [`Event::StoreFailed`].
    ///
    /// [`KeyPool::acquire_for`]: crate::KeyPool::acquire_for
    Acquire {
        /// The model to choose a key for.
        model: String,
        /// Keys this request already tried.
        exclude: Vec<KeyId>,
        /// The previous attempt's report, applied before choosing.
        settle: Option<Report>,
        /// Who the request claims to be, to admit (first attempt only;
        /// none: it carried the proxy key).
        client: Option<Claim>,
        /// The resources the request names: it goes to the key that owns
        /// those the key store knows, and to no other.
        resources: Vec<Resource>,
    },
    /// Send this request upstream with the body its [`UpstreamRequest::body`]
    /// names (for a method with a body). Answer [`Event::Head`] or
    /// [`Event::SendFailed`]; [`Event::BodyFailed`] when the client's piped
    /// body broke off.
    Send(UpstreamRequest),
    /// Read at most `limit` bytes of the upstream answer's body (an error to
    /// classify), then drop the rest. Answer [`Event::ErrorBody`].
    ReadErrorBody {
        /// Most bytes to read.
        limit: usize,
    },
    /// Stream the upstream's 2xx answer to the client. First wait (within
    /// the idle timeout) for the first piece of its body, sending nothing
    /// (of a committed answer, [`Step::KeepAlive`], only the body goes):
    /// if the body fails or stalls before it, answer
    /// [`Event::StreamFailedEarly`] (another key is tried, the client never
    /// knew). Then send this head and that piece, and the rest as it
    /// arrives, holding nothing back; an upstream failure on the way must
    /// reach the client as a broken response, never as a clean end. Answer
    /// [`Event::Streamed`].
    Stream {
        /// The upstream's status.
        status: u16,
        /// The headers for the client.
        headers: Vec<(String, String)>,
        /// What to do with each piece: note it (the usage, the first bytes
        /// of an answer that may create a resource) and send the client
        /// what [`Pipe::push`] gives, then [`Pipe::finish`]'s bytes at a
        /// clean end, or [`Pipe::broke`]'s before ending broken; tell
        /// [`Pipe::seen`] in [`Event::Streamed`].
        pipe: Pipe,
    },
    /// The upstream's head is slow to come ([`Event::Waiting`]): keep the
    /// client's connection alive. The first time, send the client this
    /// head (the answer is committed: from now on [`Step::Respond`] and
    /// [`Step::Stream`] send only their bodies, into this answer); each
    /// time, one whitespace byte (every JSON parser skips it). Then go on
    /// waiting for the same upstream head, as [`KeepAlive`] says, and
    /// answer as for [`Step::Send`].
    KeepAlive {
        /// The committed answer's status.
        status: u16,
        /// Its headers.
        headers: Vec<(String, String)>,
    },
    /// Send the client this answer. Answer [`Event::Done`].
    Respond(Response),
    /// End the answer a [`Step::KeepAlive`] committed with this body (in
    /// place of [`Step::Respond`]): cleanly when it is the answer, broken
    /// (the connection cut rather than the body ended) when it is an
    /// error, which a client then reads as one, since no SDK takes a `200`
    /// for a failure; a lenient reader still has the error's JSON. Answer
    /// [`Event::Done`].
    EndCommitted {
        /// The body.
        body: String,
        /// Whether the answer ends cleanly.
        clean: bool,
    },
    /// Apply this report to the key store (a host may batch reports, but
    /// loses none, and holds back none that [`Report::must_land_first`]).
    /// Answer [`Event::Done`].
    Report(Report),
    /// Answer the client with the key store's statistics in this view
    /// ([`StatsView::render`]). Answer [`Event::Done`], or
    /// [`Event::StoreFailed`] if there was nothing to show.
    Stats(StatsView),
    /// Clear every mark and counter in the key store. Answer
    /// [`Event::Done`] or [`Event::StoreFailed`].
    Reset,
    /// Record this failure in the host's log, once: the caller was (or will
    /// be) answered without the detail. Answer [`Event::Done`].
    Log(String),
    /// Record this note in the host's log: something the operator may want
    /// to know that is no failure (a tool a translation left out, a
    /// signature a client dropped). Answer [`Event::Done`].
    Note(String),
    /// Apply this admin operation in the key store ([`admin::apply`](crate::store::admin::apply)).
    /// Answer [`Event::Admin`], or [`Event::StoreFailed`].
    Admin(AdminOp),
    /// What the request came to, once, after its last answer and report
    /// (what a request log or an access log keeps). Log it as the host
    /// does, with what only the host knows (the time taken). Answer
    /// [`Event::Done`].
    Summary(Box<Summary>),
    /// The exchange is over.
    Done,
}

/// What happened, as the host tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The request arrived: the first event.
    Start,
    /// The request body, read within the step's limit.
    Body(Vec<u8>),
    /// The request body could not be read.
    BodyFailed(BodyError),
    /// The key store's answer to an acquire.
    Acquired(Result<Lease, Unavailable>),
    /// The key store could not be reached, or failed; why (for the log).
    StoreFailed(String),
    /// The upstream's response head.
    Head {
        /// Status.
        status: u16,
        /// Headers.
        headers: Headers,
    },
    /// A request sent with a [`KeepAlive`] has no response head after its
    /// interval: answered by [`Step::KeepAlive`].
    Waiting,
    /// The upstream request failed before a response head arrived.
    SendFailed {
        /// Why (for the key's statistics; redacted).
        reason: String,
        /// Whether it was a timeout (connecting, or waiting for the head).
        timed_out: bool,
    },
    /// The upstream error body, at most the step's limit.
    ErrorBody(Vec<u8>),
    /// How a streamed answer ended, once its head went to the client: what
    /// its [`Pipe`] saw (the token usage, the first bytes asked for), or
    /// `Err` with why when it broke off.
    Streamed(Result<Seen, String>),
    /// A 2xx answer failed before its first piece, so before anything went
    /// to the client.
    StreamFailedEarly {
        /// Why.
        reason: String,
        /// Whether it stalled (the idle timeout).
        timed_out: bool,
    },
    /// The key store's answer to an admin operation.
    Admin(AdminAnswer),
    /// A step that needs no answer was carried out.
    Done,
}

/// Why a request body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// It is longer than the step's limit.
    TooLarge,
    /// Reading it failed (the client went away, a malformed chunk); why.
    Broken(String),
}

/// What an exchange waits for, each phase owning what it waits with.
#[derive(Debug)]
enum Phase {
    /// [`Event::Start`].
    Start,
    /// Whether the proxy is open ([`Admission::Gated`]): what the admission
    /// becomes when it is, and when not.
    Gate { open: Box<Admission>, closed: Box<Admission> },
    /// The login form.
    LoginBody,
    /// The statistics answered.
    Stats,
    /// The reset done.
    Reset,
    /// An admin request ([`admin`]).
    Admin(admin::Checks, admin::Awaiting),
    /// A request relayed upstream ([`relay`], [`listing`]).
    Relay(Box<relay::Relay>, relay::Awaiting),
    /// The answer to a queued step.
    Queued,
    /// Nothing: the exchange is over.
    Over,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Self::Start => "the start",
            Self::Gate { .. } => "whether the proxy is open",
            Self::LoginBody => "the login form",
            Self::Stats => "the statistics",
            Self::Reset => "a reset",
            Self::Admin(_, awaiting) => awaiting.name(),
            Self::Relay(_, awaiting) => awaiting.name(),
            Self::Queued => "a queued step",
            Self::Over => "nothing",
        }
    }
}

/// What the summary of a request is made of, gathered as its steps go by.
#[derive(Debug, Default)]
struct Record {
    /// The model the caller named.
    model_asked: Option<String>,
    model: Option<String>,
    status: u16,
    streamed: bool,
    attempts: Vec<Attempt>,
    tokens: Option<crate::wire::usage::TokenUsage>,
    error: Option<&'static str>,
    /// The proxy's own error message, when it answered with one.
    reason: Option<String>,
    /// Whether the request was for the proxy's own pages or API.
    own: bool,
    summed_up: bool,
}

/// One request's exchange. See the [module](self) documentation.
#[derive(Debug)]
pub struct Exchange {
    cfg: Arc<Config>,
    method: Method,
    path_and_query: String,
    headers: Headers,
    dialect: Dialect,
    phase: Phase,
    queue: VecDeque<Step>,
    answered: bool,
    /// Whether a [`Step::KeepAlive`] committed the client's answer (a `200`
    /// whose body is still to come): no other key is tried after that.
    committed: bool,
    body: Vec<u8>,
    request_id: Option<String>,
    /// The request's own scheme and authority, as the host received it.
    origin: Option<(String, String)>,
    /// Whether the request needed a key (the proxy has `PROXY_API_KEY`, the
    /// admin's, or client keys exist): its answer may go to any origin.
    keyed: bool,
    /// The client the key store admitted the request as.
    client: Option<String>,
    /// The model aliases, the admin's before the configured ones, once the
    /// key store told them.
    aliases: Option<crate::config::aliases::Aliases>,
    /// When the request came, as the host's clock tells it.
    now: Option<crate::wire::time::UnixMillis>,
    /// Whether it is the host's own request ([`Exchange::models_listing`]).
    internal: bool,
    record: Record,
}

impl Exchange {
    /// The exchange of a request, before anything is decided.
    pub fn new(cfg: Arc<Config>, method: Method, path_and_query: String, headers: Headers) -> Self {
        let (path, query) = path_and_query.split_once('?').unwrap_or((&path_and_query, ""));
        let dialect = route::fallback_dialect(path, &Credentials::from_request(&headers, query));
        let request_id = headers::get(&headers, headers::REQUEST_ID).map(str::to_owned);
        Self {
            cfg,
            method,
            path_and_query,
            headers,
            dialect,
            phase: Phase::Start,
            queue: VecDeque::new(),
            answered: false,
            committed: false,
            body: Vec::new(),
            request_id,
            origin: None,
            keyed: false,
            client: None,
            aliases: None,
            now: None,
            internal: false,
            record: Record::default(),
        }
    }

    /// When the request came, by the host's clock (a translated answer
    /// that tells its time, a Responses `created_at`, tells this one).
    pub fn with_now(mut self, now: crate::wire::time::UnixMillis) -> Self {
        self.now = Some(now);
        self
    }

    /// The id the host logs this request under (else the one the host put in
    /// the request's [`headers::REQUEST_ID`] header): it goes into every log
    /// line and internal error answer of the exchange.
    pub fn with_request_id(mut self, id: String) -> Self {
        self.request_id = Some(id);
        self
    }

    /// The scheme and authority the host received the request on: the
    /// proxy's own URL when neither `PUBLIC_URL` nor `X-Forwarded-Host`
    /// tells it.
    pub fn with_origin(mut self, scheme: &str, authority: &str) -> Self {
        // A host that hands the authority over apart from the headers
        // (wasi:http) leaves no `Host` among them: it is the request's.
        if headers::get(&self.headers, "host").is_none() && !authority.is_empty() {
            self.headers.push(("host".to_owned(), authority.as_bytes().to_vec()));
        }
        self.origin = Some((scheme.to_owned(), authority.to_owned()));
        self
    }

    /// The proxy's URL as this client reaches it, for the URLs handed out:
    /// `PUBLIC_URL`, else `X-Forwarded-Proto` and `X-Forwarded-Host` (the
    /// first of each), else the request's own origin or `Host`.
    fn public_base(&self) -> Option<String> {
        if let Some(url) = &self.cfg.public_url {
            return Some(url.to_string());
        }
        let first = |name: &str| {
            let value = headers::get(&self.headers, name)?.split(',').next()?.trim();
            (!value.is_empty()).then_some(value)
        };
        let is_host = |h: &&str| {
            !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        };
        let origin = self.origin.as_ref();
        let host = first("x-forwarded-host")
            .filter(is_host)
            .or_else(|| origin.map(|(_, a)| a.as_str()).filter(is_host))
            .or_else(|| first("host").filter(is_host))?;
        let scheme = first("x-forwarded-proto")
            .filter(|p| matches!(*p, "http" | "https"))
            .or_else(|| origin.map(|(s, _)| s.as_str()).filter(|s| matches!(*s, "http" | "https")))
            .unwrap_or("http");
        Some(format!("{scheme}://{}", host.to_ascii_lowercase()))
    }

    fn log(&self, line: String) -> Step {
        match &self.request_id {
            Some(id) => Step::Log(format!("request {id}: {line}")),
            None => Step::Log(line),
        }
    }

    fn note(&self, line: String) -> Step {
        match &self.request_id {
            Some(id) => Step::Note(format!("request {id}: {line}")),
            None => Step::Note(line),
        }
    }

    /// The request body, once read (empty before, and for methods without one).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The client's request headers.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// Whether the client has been answered (or is being streamed to).
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Feeds what happened; returns what to do next.
    pub fn resume(&mut self, event: Event) -> Step {
        let step = self.advance(event);
        // Every attempt's report, for the summary: those that settle with
        // the next acquire as well as those sent alone.
        if let Step::Report(report) | Step::Acquire { settle: Some(report), .. } = &step {
            self.recorded(report);
        }
        step
    }

    fn advance(&mut self, event: Event) -> Step {
        match (std::mem::replace(&mut self.phase, Phase::Over), event) {
            (Phase::Start, Event::Start) => self.admit(),
            (Phase::Gate { open, closed }, Event::Admin(answer)) => self.gated(&answer, *open, *closed),
            (Phase::LoginBody, Event::Body(body)) => {
                self.emit([Step::Respond(login::login(&self.cfg, &self.headers, &body))])
            }
            (Phase::LoginBody, Event::BodyFailed(e)) => self.body_failed(e, MAX_LOGIN_BODY_BYTES),
            (Phase::Admin(checks, awaiting), event) => self.admin_event(checks, awaiting, event),
            (Phase::Relay(relay, awaiting), event) => self.relay_event(relay, awaiting, event),
            (Phase::Gate { .. } | Phase::Stats | Phase::Reset, Event::StoreFailed(why)) => self.store_failed(&why),
            (Phase::Stats, Event::Done) => {
                // The host answered with the statistics.
                self.answered = true;
                self.record.status = 200;
                self.finish()
            }
            (Phase::Reset, Event::Done) => self.emit([Step::Respond(login::reset_done())]),
            (Phase::Queued, Event::Done) => self.next_queued(),
            // A store write the exchange does not wait on (the signatures
            // an answer carried): its answer, or why it failed, for the log.
            (Phase::Queued, Event::Admin(_)) => self.next_queued(),
            (Phase::Queued, Event::StoreFailed(why)) => {
                let log = self.log(format!("the key store failed to keep what an answer carried: {why}"));
                self.queue.push_front(log);
                self.next_queued()
            }
            (Phase::Over, Event::Done) => Step::Done,
            (phase, event) => self.host_bug(phase.name(), &event),
        }
    }

    fn admit(&mut self) -> Step {
        self.keyed = self.cfg.proxy_key.is_some();
        if self.internal {
            // The host's own request: Google's models list, with a pool
            // key, as the proxy key's request (no client's, no quota).
            return match route::route(&Method::Get, MODELS_LISTING_PATH, MODELS_LISTING_QUERY, &Credentials::default())
            {
                Ok(route::Route::Api(fwd)) => self.admitted(Admission::Forward(fwd, None)),
                _ => self.fail(ProxyError::internal("the models listing has no route", self.request_id.as_deref())),
            };
        }
        let admission = admit::decide(&self.cfg, &self.method, &self.path_and_query, &self.headers);
        self.admitted(admission)
    }

    /// The host's own request for Google's models list, whose names the
    /// key store keeps ([`crate::wire::keystore::AdminOp::ModelsListed`]):
    /// the Worker runs it after each daily reset, and drops its answer.
    pub fn models_listing(cfg: Arc<Config>) -> Self {
        let path = format!("{MODELS_LISTING_PATH}?{MODELS_LISTING_QUERY}");
        let mut ex = Self::new(cfg, Method::Get, path, Vec::new());
        ex.internal = true;
        // The proxy's own call: counted on /stat, not a client's request.
        ex.record.own = true;
        ex
    }

    /// Whether the proxy is open decided a gated admission.
    fn gated(&mut self, answer: &AdminAnswer, open: Admission, closed: Admission) -> Step {
        let is_open = answer.status == 200
            && serde_json::from_str::<serde_json::Value>(&answer.body).is_ok_and(|v| v["open"].as_bool() == Some(true));
        if is_open {
            self.admitted(open)
        } else {
            self.keyed = true;
            self.admitted(closed)
        }
    }

    /// Why an open proxy refuses the request from the web, if it does: a
    /// request let in without a key (`client`: none) on a proxy without
    /// `PROXY_API_KEY` ([`web::refusal`]). Checked once the key store
    /// answered, before anything goes upstream.
    fn web_refusal(&self, client: Option<&str>) -> Option<ProxyError> {
        (self.cfg.proxy_key.is_none() && client.is_none()).then(|| web::refusal(&self.cfg, &self.headers)).flatten()
    }

    /// The CORS grant of this request's answers ([`web::grant`]) applied
    /// to `headers`.
    fn cors(&self, headers: &mut Vec<(String, String)>) {
        web::apply(&web::grant(&self.cfg, &self.headers, self.keyed || self.client.is_some()), headers);
    }

    fn admitted(&mut self, admission: Admission) -> Step {
        self.record.own |= matches!(admission, Admission::Login);
        match admission {
            Admission::Gated { open, closed } => {
                self.phase = Phase::Gate { open, closed };
                Step::Admin(AdminOp::Open)
            }
            Admission::Respond(r) => {
                // A refusal is the log's; a preflight, a page is not.
                self.record.own = r.status < 400;
                self.emit([Step::Respond(r)])
            }
            Admission::Stats(view) => {
                self.record.own = true;
                self.phase = Phase::Stats;
                Step::Stats(view)
            }
            Admission::Reset => {
                self.record.own = true;
                self.phase = Phase::Reset;
                Step::Reset
            }
            Admission::Admin(route) => {
                self.record.own = true;
                self.dialect = Dialect::Gemini;
                self.keyed = true;
                self.admin(route)
            }
            Admission::Login => match admit::declared_length(&self.headers) {
                Ok(Some(n)) if n > MAX_LOGIN_BODY_BYTES => {
                    self.fail(ProxyError::PayloadTooLarge { limit: MAX_LOGIN_BODY_BYTES })
                }
                Ok(declared) => {
                    self.phase = Phase::LoginBody;
                    Step::ReadBody { limit: MAX_LOGIN_BODY_BYTES, declared }
                }
                Err(e) => self.fail(e),
            },
            Admission::Forward(fwd, claim) => {
                self.dialect = fwd.client_dialect();
                self.record.model = Some(fwd.model().to_owned());
                self.record.model_asked = Some(fwd.model().to_owned());
                self.relay(fwd, claim)
            }
        }
    }

    fn body_failed(&mut self, e: BodyError, limit: u64) -> Step {
        match e {
            BodyError::TooLarge => self.fail(ProxyError::PayloadTooLarge { limit }),
            BodyError::Broken(why) => {
                self.fail(ProxyError::BadRequest(format!("reading the request body failed: {why}")))
            }
        }
    }

    /// The key store failed: the caller gets a 503, the log why.
    fn store_failed(&mut self, why: &str) -> Step {
        let log = self.log(format!("the key store failed: {why}"));
        let e = ProxyError::KeyStoreUnavailable { request_id: self.request_id.clone() };
        let response = self.error_response(&e);
        self.emit([log, Step::Respond(response)])
    }

    /// `e` as an answer in the caller's dialect, its kind kept for the
    /// summary.
    fn error_response(&mut self, e: &ProxyError) -> Response {
        self.record.error = Some(e.kind());
        self.record.reason = Some(crate::wire::secret::redact(&e.to_string(), &[]));
        e.to_response(self.dialect)
    }

    /// Answers with `e` in the caller's dialect.
    fn fail(&mut self, e: ProxyError) -> Step {
        let response = self.error_response(&e);
        self.emit([Step::Respond(response)])
    }

    /// An event the exchange did not ask for, while it waited for `awaited`:
    /// a host bug. The caller gets a 500 if nothing was sent yet; the
    /// detail goes to the log.
    fn host_bug(&mut self, awaited: &str, event: &Event) -> Step {
        self.queue.clear();
        let what = match event {
            Event::Start => "start",
            Event::Body(_) => "a request body",
            Event::BodyFailed(_) => "a failed request body",
            Event::Acquired(_) => "a lease",
            Event::StoreFailed(_) => "a key-store failure",
            Event::Head { .. } => "a response head",
            Event::SendFailed { .. } => "a send failure",
            Event::Waiting => "a wait for a head",
            Event::ErrorBody(_) => "an error body",
            Event::Streamed(_) => "a stream's end",
            Event::Admin(_) => "an admin answer",
            Event::StreamFailedEarly { .. } => "a stream's early failure",
            Event::Done => "done",
        };
        let log = self.log(format!("host bug: the exchange got {what} while waiting for {awaited}"));
        // A committed answer still ends (cut, with the error).
        if self.answered && !self.committed {
            self.emit([log])
        } else {
            let e = ProxyError::internal("the proxy lost track of this request", self.request_id.as_deref());
            let response = self.error_response(&e);
            self.emit([log, Step::Respond(response)])
        }
    }

    /// Queues steps that need only [`Event::Done`] and hands out the first.
    fn emit<const N: usize>(&mut self, steps: [Step; N]) -> Step {
        self.queue.extend(steps);
        self.next_queued()
    }

    fn next_queued(&mut self) -> Step {
        match self.queue.pop_front() {
            Some(mut step) => {
                if let Step::Respond(response) = &mut step {
                    self.answered = true;
                    self.record.status = response.status;
                    self.cors(&mut response.headers);
                    if self.committed {
                        let clean = (200..300).contains(&response.status);
                        step = Step::EndCommitted { body: std::mem::take(&mut response.body), clean };
                    }
                }
                self.phase = Phase::Queued;
                step
            }
            None => self.finish(),
        }
    }

    /// Keeps what a report tells of its attempt for the summary.
    fn recorded(&mut self, report: &Report) {
        self.record.attempts.push(Attempt::of(&report.key, &report.outcome));
        if let Some(usage) = report.usage {
            self.record.tokens.get_or_insert_default().add(&usage);
        }
    }

    /// The request's summary, once, then the end.
    fn finish(&mut self) -> Step {
        self.phase = Phase::Over;
        if std::mem::replace(&mut self.record.summed_up, true) {
            return Step::Done;
        }
        let record = std::mem::take(&mut self.record);
        let failed = record.status >= 400 || record.status == 0;
        let error = record.error.map(str::to_owned).or_else(|| {
            let last = record.attempts.last().map(|a| a.outcome.clone());
            failed.then(|| last.unwrap_or_else(|| "refused".to_owned()))
        });
        let reason = record.reason.or_else(|| failed.then(|| record.attempts.last()?.reason.clone()).flatten());
        // The model asked for shows only where an alias served another.
        let model_asked = record.model_asked.filter(|asked| record.model.as_ref() != Some(asked));
        let path = self.path_and_query.split('?').next().unwrap_or_default().to_owned();
        let summary = Summary {
            request_id: self.request_id.clone(),
            method: self.method.as_str().to_owned(),
            path,
            dialect: self.dialect.name().to_owned(),
            client: self.client.clone(),
            model_asked,
            model: record.model,
            status: record.status,
            streamed: record.streamed,
            attempts: record.attempts,
            tokens: record.tokens,
            error,
            reason,
            own: record.own,
            ..Summary::default()
        };
        self.record.summed_up = true;
        self.phase = Phase::Queued;
        Step::Summary(Box::new(summary))
    }
}
