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
//!         Step::Stream { .. } => /* pipe the upstream body to the client */ Event::Streamed(result),
//!         Step::Respond(_) | Step::Report(_) | Step::Stats(_) | Step::Reset | Step::Log(_) => Event::Done,
//!         Step::Done => break,
//!     }
//! }
//! ```

pub mod admin;
pub mod listing;

use crate::config::{Config, Scheme, UpstreamBase};
use crate::google::errors;
use crate::google::errors::{Confirmation, Verdict};
use crate::google::names;
use crate::google::stream::{HEAD_BYTES, Seen};
use crate::request::admin::MAX_ADMIN_BODY_BYTES;
use crate::request::admit::{self, Admission, MAX_LOGIN_BODY_BYTES};
use crate::request::auth::Credentials;
use crate::request::headers;
use crate::request::login;
use crate::request::route::AdminRoute;
use crate::request::route::{self, Forward, MAX_BODY_BYTES, Op, PIPED_UPLOAD_ABOVE};
use crate::request::web;
use crate::wire::error::ProxyError;
use crate::wire::http::Dialect;
use crate::wire::http::{Headers, Method, Response};
use crate::wire::keystore::CheckInfo;
use crate::wire::keystore::StatsView;
use crate::wire::keystore::WALK_KEYS;
use crate::wire::keystore::{AdminAnswer, AdminOp};
use crate::wire::keystore::{Claim, Refusal};
use crate::wire::keystore::{Lease, Outcome, Owned, Report, Unavailable};
use crate::wire::resource::Kind;
use crate::wire::resource::Resource;
use crate::wire::secret::{self, KeyId};
use listing::{Merge, Next};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

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
    /// the idle timeout) for the first piece of its body, sending nothing:
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
        /// How many of the answer's first bytes to keep and tell in
        /// [`Event::Streamed`] ([`crate::google::stream::UsageTail::keeping_head`]):
        /// 0 for most answers; some for those that may create a resource.
        head: usize,
    },
    /// Send the client this answer. Answer [`Event::Done`].
    Respond(Response),
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
    /// Apply this admin operation in the key store ([`admin::apply`]).
    /// Answer [`Event::Admin`], or [`Event::StoreFailed`].
    Admin(AdminOp),
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
    /// a [`crate::google::stream::UsageTail`] of every piece saw (the token usage,
    /// the first bytes asked for), or `Err` with why when it broke off.
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

/// An upstream request, ready to send.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// The method.
    pub method: Method,
    /// The upstream's scheme.
    pub scheme: Scheme,
    /// The upstream's `host[:port]`.
    pub authority: String,
    /// Path and query.
    pub path_and_query: String,
    /// Headers, the pool key as the one credential among them; every value
    /// visible ASCII.
    pub headers: Vec<(String, String)>,
    /// Where the body comes from (for a method with one).
    pub body: BodyFrom,
}

/// The body of an [`UpstreamRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFrom {
    /// [`Exchange::body`], read before (empty for a method without one).
    Read,
    /// The client's request body, unread, piped upstream as it arrives:
    /// exactly this many bytes (its declared `content-length`). A client
    /// body that breaks off or ends short is [`Event::BodyFailed`], not a
    /// failure of the upstream's.
    Client(u64),
}

impl UpstreamRequest {
    /// The full URL.
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}{}", self.authority, self.path_and_query)
    }
}

impl std::fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the headers (the pool key) nor the query are shown.
        f.debug_struct("UpstreamRequest")
            .field("method", &self.method)
            .field("authority", &self.authority)
            .field("path", &self.path_and_query.split('?').next())
            .finish_non_exhaustive()
    }
}

/// Builds the upstream request for `fwd` with the leased key: the client's
/// headers minus every credential and hop-by-hop header, plus exactly one
/// credential, the pool key, in the upstream API's own form.
pub fn upstream_request(
    cfg: &Config,
    fwd: &Forward,
    client_headers: &[(String, Vec<u8>)],
    lease: &Lease,
    body: BodyFrom,
    body_len: u64,
) -> UpstreamRequest {
    let (base, credential): (&UpstreamBase, _) = match fwd.dialect {
        Dialect::Gemini => (&cfg.gemini_upstream, ("x-goog-api-key", lease.secret.expose().to_owned())),
        Dialect::OpenAi => (&cfg.openai_upstream, ("authorization", format!("Bearer {}", lease.secret.expose()))),
    };
    let mut headers = headers::upstream_headers(client_headers);
    headers.push((credential.0.to_owned(), credential.1));
    let method = fwd.method.clone();
    if method.has_body() {
        headers.push(("content-length".to_owned(), body_len.to_string()));
        if !headers.iter().any(|(n, _)| n == "content-type") {
            headers.push(("content-type".to_owned(), "application/json".to_owned()));
        }
    }
    let upload = if fwd.upload { "/upload" } else { "" };
    let mut path_and_query = format!("{upload}{}{}", versioned(&base.path, fwd.version.as_deref()), fwd.upstream_path);
    if !fwd.upstream_query.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&fwd.upstream_query);
    }
    UpstreamRequest { method, scheme: base.scheme, authority: base.authority.clone(), path_and_query, headers, body }
}

/// The header of Google's answer to an upload's start that holds the URL
/// its chunks go to (lower-case, as [`headers::client_headers`] gives it).
const UPLOAD_URL: &str = "x-goog-upload-url";
/// The header that may hold the URL to cancel or query an upload.
const UPLOAD_CONTROL_URL: &str = "x-goog-upload-control-url";

/// The upstream base's path with its version (its last segment, when
/// that is one: `/v1beta`) replaced by `version`.
fn versioned<'a>(base: &'a str, version: Option<&str>) -> std::borrow::Cow<'a, str> {
    let Some(version) = version else { return base.into() };
    match base.rsplit_once('/') {
        Some((head, last)) if crate::request::route::is_version(last) && last != version => {
            format!("{head}/{version}").into()
        }
        _ => base.into(),
    }
}

/// The upstream's headers for the client ([`headers::client_headers`]),
/// with the pool key scrubbed from any value that carries it (an upload
/// URL with `key=` in its query, say).
fn relayed_headers(upstream: &[(String, Vec<u8>)], drop_length: bool, lease: Option<&Lease>) -> Vec<(String, String)> {
    let mut out = headers::client_headers(upstream, drop_length);
    if let Some(lease) = lease {
        for (_, value) in out.iter_mut().filter(|(_, v)| v.contains(lease.secret.expose())) {
            *value = secret::redact(value, &[&lease.secret]);
        }
    }
    out
}

/// The keys one request tried, and what happened.
#[derive(Debug, Default)]
struct Attempts {
    tried: Vec<KeyId>,
    last_failure: Option<Outcome>,
    all_rate_limited: bool,
    all_timed_out: bool,
}

impl Attempts {
    fn new() -> Self {
        Self { tried: Vec::new(), last_failure: None, all_rate_limited: true, all_timed_out: true }
    }

    /// Records a failed attempt that will be retried; returns its report.
    fn failed(&mut self, lease: &Lease, model: &str, outcome: Outcome, timed_out: bool) -> Report {
        self.all_rate_limited &= matches!(outcome, Outcome::RateLimited(_));
        self.all_timed_out &= timed_out;
        self.tried.push(lease.id.clone());
        self.last_failure = Some(outcome.clone());
        Report::of(lease, model, outcome)
    }

    /// The error to answer with once no further attempt is possible:
    /// `unavailable` is why the pool had no key (or `None` when the
    /// attempt limit was hit).
    fn give_up(&self, model: &str, unavailable: Option<Unavailable>) -> ProxyError {
        let last = || match &self.last_failure {
            Some(Outcome::RateLimited(rl)) => format!("rate-limited: {}", rl.reason),
            Some(Outcome::KeyRejected { reason }) => format!("key rejected: {reason}"),
            Some(Outcome::UpstreamError { status, reason }) => format!("HTTP {status}: {reason}"),
            Some(Outcome::TransportError { reason }) => format!("could not reach the upstream: {reason}"),
            Some(Outcome::BrokenStream { reason }) => format!("the answer broke off: {reason}"),
            Some(Outcome::Success | Outcome::ClientError { .. }) | None => "none".to_owned(),
        };
        match unavailable {
            Some(Unavailable::AllLimited { until, retry_after_ms, keys }) => {
                ProxyError::AllKeysLimited { model: model.to_owned(), keys, until, retry_after_ms }
            }
            Some(Unavailable::NoUsableKey { why }) => ProxyError::NoUsableKey { model: model.to_owned(), why },
            Some(Unavailable::Refused { refusal }) => ProxyError::refused(refusal),
            Some(Unavailable::Resource { refusal }) => ProxyError::resource(refusal, model),
            Some(Unavailable::AllTried) | None if self.all_rate_limited && !self.tried.is_empty() => {
                ProxyError::RateLimitedEverywhere { attempts: self.tried.len(), last: last() }
            }
            Some(Unavailable::AllTried) | None if self.all_timed_out && !self.tried.is_empty() => {
                ProxyError::UpstreamTimedOut { attempts: self.tried.len(), last: last() }
            }
            Some(Unavailable::AllTried) | None => {
                ProxyError::UpstreamFailed { attempts: self.tried.len(), last: last() }
            }
        }
    }
}

/// A request being relayed upstream.
#[derive(Debug)]
struct Relay {
    fwd: Forward,
    /// Who the request claims to be, until the first acquire admits it.
    claim: Option<Claim>,
    /// The client it was admitted as.
    client: Option<String>,
    attempts: Attempts,
    lease: Option<Lease>,
    status: u16,
    upstream_headers: Headers,
    /// The resources the request names ([`affinity`]).
    resources: Vec<Resource>,
    /// The one its path names, if any (also in `resources`).
    in_path: Option<Resource>,
    /// Google's 403 or 404 for a resource no key was known to own, kept
    /// while other keys are asked: the answer if none can see it.
    not_seen: Option<Response>,
    /// Whether this answer ended the upload it continued (its status is
    /// `final`): the upload is forgotten, the file it made remembered.
    upload_over: bool,
    /// The declared length of an upload body piped from the client
    /// ([`BodyFrom::Client`]): it can be sent once, so to one key.
    piped: Option<u64>,
    /// A listing merged across the pool ([`listing`]), and the reports of
    /// the keys it asked so far.
    merge: Option<(Merge, Vec<Report>)>,
    /// A key whose refusal may be the caller's doing, being checked alone.
    suspect: Option<Suspect>,
    /// When a client lists a collection: the names of its own resources
    /// there, the only items it is shown.
    own: Option<HashSet<String>>,
    /// What waits for those names.
    pending: Option<Pending>,
    /// Whether the body names more resources than are checked
    /// ([`names::MAX_NAMED`]): refused to a client, which may name only
    /// its own.
    names_more: bool,
}

/// What a client's listing does once its names are known.
#[derive(Debug)]
enum Pending {
    /// Goes on with the keys of its first walk (a merged listing).
    Walk(Vec<Lease>),
    /// Sends the request with this key.
    Send(Lease),
}

/// The start of the names a listing of `fwd`'s lists (`files/`,
/// `models/veo-3/operations/`), when it is a `GET` of a collection that
/// names no resource (`in_path`: one named was checked to be the asker's,
/// and what is below it is its too).
fn listed_prefix(fwd: &Forward, in_path: Option<&Resource>) -> Option<String> {
    let path = fwd.upstream_path.strip_prefix('/')?;
    let last = path.rsplit('/').next().unwrap_or_default();
    let collection = !last.is_empty() && last.bytes().all(|b| b.is_ascii_alphanumeric());
    (fwd.op == Op::Resource && fwd.method == Method::Get && collection && in_path.is_none()).then(|| format!("{path}/"))
}

/// A key under check ([`Verdict::Suspect`]): the answer it gave the caller
/// (its status and headers stay in the [`Relay`]), and its check's status.
#[derive(Debug)]
struct Suspect {
    lease: Lease,
    body: Vec<u8>,
    check_status: u16,
}

impl Relay {
    fn model(&self) -> &str {
        self.fwd.model()
    }
}

/// What an exchange waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Start,
    LoginBody,
    ForwardBody,
    Lease,
    Head,
    ErrorBody,
    Stream,
    Stats,
    Reset,
    /// The keys of a merged listing.
    Walk,
    /// A key's page of a merged listing.
    ListPage,
    AdminBody,
    AdminAnswer,
    CheckHead,
    CheckBody,
    /// The head of a suspect key's check.
    ConfirmHead,
    /// The body of a suspect key's check.
    ConfirmBody,
    /// A listing client's own names.
    Names,
    /// Whether the proxy is open ([`Admission::Gated`]).
    Gate,
    /// The answer to a queued step.
    Queued,
    Over,
}

/// An admin request in progress.
#[derive(Debug)]
struct AdminWork {
    route: AdminRoute,
    /// Keys still to check, the one being checked, what was found.
    pending: VecDeque<Lease>,
    current: Option<(Lease, u16)>,
    results: Vec<(KeyId, CheckInfo)>,
    remaining: usize,
    /// Whether the answer awaited records checks (the last step).
    recording: bool,
}

/// One request's exchange. See the [module](self) documentation.
#[derive(Debug)]
pub struct Exchange {
    cfg: Arc<Config>,
    method: Method,
    path_and_query: String,
    headers: Headers,
    dialect: Dialect,
    waiting: Waiting,
    queue: VecDeque<Step>,
    answered: bool,
    body: Vec<u8>,
    relay: Option<Relay>,
    admin: Option<AdminWork>,
    request_id: Option<String>,
    /// The request's own scheme and authority, as the host received it.
    origin: Option<(String, String)>,
    /// What a gated admission becomes when the proxy is open, and when not.
    gate: Option<(Admission, Admission)>,
    /// Whether the request needed a key (the proxy has `PROXY_API_KEY`, the
    /// admin's, or client keys exist): its answer may go to any origin.
    keyed: bool,
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
            waiting: Waiting::Start,
            queue: VecDeque::new(),
            answered: false,
            body: Vec::new(),
            relay: None,
            admin: None,
            request_id,
            origin: None,
            gate: None,
            keyed: false,
        }
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
        let waiting = std::mem::replace(&mut self.waiting, Waiting::Over);
        match (waiting, event) {
            (Waiting::Start, Event::Start) => self.admit(),
            (Waiting::LoginBody, Event::Body(body)) => {
                self.emit([Step::Respond(login::login(&self.cfg, &self.headers, &body))])
            }
            (Waiting::ForwardBody, Event::Body(body)) => self.bind(body),
            (Waiting::LoginBody, Event::BodyFailed(e)) => self.body_failed(e, MAX_LOGIN_BODY_BYTES),
            (Waiting::ForwardBody, Event::BodyFailed(e)) => self.body_failed(e, MAX_BODY_BYTES),
            (Waiting::Lease, Event::Acquired(Ok(lease))) => self.send(lease),
            (Waiting::Lease, Event::Acquired(Err(unavailable))) => self.give_up(None, Some(unavailable)),
            (Waiting::AdminBody, Event::Body(body)) => self.admin_op(&body),
            (Waiting::AdminBody, Event::BodyFailed(e)) => self.body_failed(e, MAX_ADMIN_BODY_BYTES),
            (Waiting::AdminAnswer, Event::Admin(answer)) => self.admin_answered(answer),
            (Waiting::CheckHead, Event::Head { status, .. }) => self.check_head(status),
            (Waiting::CheckHead, Event::SendFailed { reason, .. }) => {
                self.check_found(CheckInfo { status: "error".into(), at: 0, reason: Some(reason) })
            }
            (Waiting::CheckBody, Event::ErrorBody(body)) => self.check_body(&body),
            (Waiting::ConfirmHead, Event::Head { status, .. }) => self.confirm_head(status),
            (Waiting::ConfirmHead, Event::SendFailed { .. }) => self.confirmed(None),
            (Waiting::ConfirmBody, Event::ErrorBody(body)) => self.confirmed(Some(&body)),
            (Waiting::Walk, Event::Admin(answer)) => self.walked(answer),
            (Waiting::Gate, Event::Admin(answer)) => self.gated(&answer),
            (Waiting::Names, Event::Admin(answer)) => self.names(&answer),
            (Waiting::ListPage, Event::ErrorBody(body)) => self.listed(&body),
            (
                Waiting::Lease
                | Waiting::Stats
                | Waiting::Reset
                | Waiting::AdminAnswer
                | Waiting::Walk
                | Waiting::Gate
                | Waiting::Names,
                Event::StoreFailed(why),
            ) => {
                let log = self.log(format!("the key store failed: {why}"));
                let e = ProxyError::KeyStoreUnavailable { request_id: self.request_id.clone() };
                self.emit([log, Step::Respond(e.to_response(self.dialect))])
            }
            (Waiting::Stats, Event::Done) => {
                self.answered = true;
                Step::Done
            }
            (Waiting::Reset, Event::Done) => self.emit([Step::Respond(login::reset_done())]),
            (Waiting::Head, Event::Head { status, headers }) => self.head(status, headers),
            (Waiting::Head, Event::SendFailed { reason, timed_out }) => self.transport_failed(&reason, timed_out),
            (Waiting::Head, Event::BodyFailed(e)) => self.piped_body_failed(e),
            (Waiting::ErrorBody, Event::ErrorBody(body)) => self.classify(&body),
            (Waiting::Stream, Event::Streamed(result)) => self.streamed(result),
            (Waiting::Stream, Event::StreamFailedEarly { reason, timed_out }) => {
                self.transport_failed(&reason, timed_out)
            }
            (Waiting::Queued, Event::Done) => self.next_queued(),
            (Waiting::Over, Event::Done) => Step::Done,
            (waiting, event) => self.host_bug(waiting, &event),
        }
    }

    fn admit(&mut self) -> Step {
        self.keyed = self.cfg.proxy_key.is_some();
        let admission = admit::decide(&self.cfg, &self.method, &self.path_and_query, &self.headers);
        self.admitted(admission)
    }

    /// Whether the proxy is open decided a gated admission.
    fn gated(&mut self, answer: &AdminAnswer) -> Step {
        let Some((open, closed)) = self.gate.take() else { return self.host_bug(Waiting::Gate, &Event::Done) };
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
        let client = self.relay.as_ref().is_some_and(|r| r.client.is_some());
        web::apply(&web::grant(&self.cfg, &self.headers, self.keyed || client), headers);
    }

    fn admitted(&mut self, admission: Admission) -> Step {
        match admission {
            Admission::Gated { open, closed } => {
                self.gate = Some((*open, *closed));
                self.waiting = Waiting::Gate;
                Step::Admin(AdminOp::Open)
            }
            Admission::Respond(r) => self.emit([Step::Respond(r)]),
            Admission::Stats(view) => {
                self.waiting = Waiting::Stats;
                Step::Stats(view)
            }
            Admission::Reset => {
                self.waiting = Waiting::Reset;
                Step::Reset
            }
            Admission::Admin(route) => {
                self.dialect = Dialect::Gemini;
                self.keyed = true;
                let reads_body = route.reads_body();
                self.admin = Some(AdminWork {
                    route,
                    pending: VecDeque::new(),
                    current: None,
                    results: Vec::new(),
                    remaining: 0,
                    recording: false,
                });
                if !reads_body {
                    return self.admin_op(&[]);
                }
                match admit::declared_length(&self.headers) {
                    Ok(Some(n)) if n > MAX_ADMIN_BODY_BYTES => {
                        self.fail(ProxyError::PayloadTooLarge { limit: MAX_ADMIN_BODY_BYTES })
                    }
                    Ok(declared) => {
                        self.waiting = Waiting::AdminBody;
                        Step::ReadBody { limit: MAX_ADMIN_BODY_BYTES, declared }
                    }
                    Err(e) => self.fail(e),
                }
            }
            Admission::Login => match admit::declared_length(&self.headers) {
                Ok(Some(n)) if n > MAX_LOGIN_BODY_BYTES => {
                    self.fail(ProxyError::PayloadTooLarge { limit: MAX_LOGIN_BODY_BYTES })
                }
                Ok(declared) => {
                    self.waiting = Waiting::LoginBody;
                    Step::ReadBody { limit: MAX_LOGIN_BODY_BYTES, declared }
                }
                Err(e) => self.fail(e),
            },
            Admission::Forward(fwd, claim) => {
                self.dialect = fwd.dialect;
                let has_body = fwd.method.has_body();
                // Admission refused a declared length over the limit.
                let declared = admit::declared_length(&self.headers).ok().flatten();
                let piped = declared.filter(|&n| has_body && fwd.upload && n > PIPED_UPLOAD_ABOVE);
                self.relay = Some(Relay {
                    fwd,
                    claim,
                    client: None,
                    attempts: Attempts::new(),
                    lease: None,
                    status: 0,
                    upstream_headers: Vec::new(),
                    resources: Vec::new(),
                    in_path: None,
                    not_seen: None,
                    upload_over: false,
                    piped,
                    merge: None,
                    suspect: None,
                    own: None,
                    pending: None,
                    names_more: false,
                });
                if !has_body || piped.is_some() {
                    return self.bind(Vec::new());
                }
                self.waiting = Waiting::ForwardBody;
                Step::ReadBody { limit: MAX_BODY_BYTES, declared }
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

    fn bind(&mut self, body: Vec<u8>) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::ForwardBody, &Event::Done) };
        if relay.fwd.upload {
            // An upload's body is the file's bytes (or its metadata, then
            // the bytes): never read for a model or for names. A chunk
            // names its upload, in its query.
            let in_path = names::in_upstream_path(&relay.fwd.upstream_path, false);
            relay.in_path.clone_from(&in_path);
            relay.resources = in_path.into_iter().chain(names::upload_in_query(&relay.fwd.upstream_query)).collect();
        } else {
            match Merge::of(&relay.fwd) {
                Ok(Some(merge)) => {
                    let from = merge.walk_from();
                    let (claim, model) = (relay.claim.take(), relay.model().to_owned());
                    relay.merge = Some((merge, Vec::new()));
                    self.waiting = Waiting::Walk;
                    return Step::Admin(AdminOp::Walk { from, count: WALK_KEYS, claim, model });
                }
                Ok(None) => {}
                Err(e) => return self.fail(e),
            }
            if let Err(e) = relay.fwd.bind_body(&body) {
                return self.fail(e);
            }
            // An OpenAI-style call names Google's resources too (its
            // files and batches, by their Google names); a JSON body (a
            // batch's, a chat's `file_id` part) is scanned as well, never a
            // form (a file's bytes, on their way to `files`).
            let openai = relay.fwd.dialect == Dialect::OpenAi;
            let in_path = names::in_upstream_path(&relay.fwd.upstream_path, openai);
            relay.in_path.clone_from(&in_path);
            let json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            let (in_body, more) = if openai && !json { (Vec::new(), false) } else { names::named_in_body(&body) };
            relay.resources = in_path.into_iter().chain(in_body).collect();
            relay.resources.dedup();
            relay.names_more = more;
        }
        self.body = body;
        self.next_attempt(None)
    }

    /// Asks for the next key, or gives up once [`MAX_ATTEMPTS`] were made
    /// (applying the last attempt's report first).
    fn next_attempt(&mut self, settle: Option<Report>) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::Lease, &Event::Done) };
        let limit = match (relay.piped, &relay.not_seen) {
            // A piped body went with the first attempt.
            (Some(_), _) => 1,
            (None, Some(_)) => MAX_PROBES,
            (None, None) => MAX_ATTEMPTS,
        };
        if relay.attempts.tried.len() >= limit {
            return self.give_up(settle, None);
        }
        self.waiting = Waiting::Lease;
        let client = relay.claim.take();
        let (model, exclude, resources) =
            (relay.model().to_owned(), relay.attempts.tried.clone(), relay.resources.clone());
        Step::Acquire { model, exclude, settle, client, resources }
    }

    /// Answers with why no further attempt is possible; `settle`, the last
    /// attempt's report, ends the client's request.
    fn give_up(&mut self, settle: Option<Report>, unavailable: Option<Unavailable>) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::Lease, &Event::Done) };
        let respond = match (relay.not_seen.take(), unavailable) {
            (_, Some(Unavailable::Resource { refusal })) => {
                Step::Respond(ProxyError::resource(refusal, relay.model()).to_response(self.dialect))
            }
            // No key that was asked could see the resource: Google's
            // answer. When keys were left unasked because they are
            // rate-limited, the caller gets the 429 and retries.
            (Some(not_seen), None | Some(Unavailable::AllTried | Unavailable::NoUsableKey { .. })) => {
                Step::Respond(not_seen)
            }
            (_, unavailable) => {
                Step::Respond(relay.attempts.give_up(relay.model(), unavailable).to_response(self.dialect))
            }
        };
        match settle {
            Some(report) => {
                let report = Report { client: relay.client.clone(), ..report };
                self.emit([Step::Report(report), respond])
            }
            None => self.emit([respond]),
        }
    }

    fn send(&mut self, lease: Lease) -> Step {
        let first = self.relay.as_ref().is_some_and(|r| r.attempts.tried.is_empty());
        if first && let Some(e) = self.web_refusal(lease.client.as_deref()) {
            return self.fail(e);
        }
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::Lease, &Event::Done) };
        if first {
            relay.client.clone_from(&lease.client);
        }
        if first && relay.names_more && lease.client.is_some() {
            let e = ProxyError::BadRequest(format!(
                "the request names more than {} files, caches or other resources; a client key may name at most that many",
                names::MAX_NAMED
            ));
            return self.fail(e);
        }
        // A client's listing shows only its own: their names first.
        let prefix = listed_prefix(&relay.fwd, relay.in_path.as_ref());
        if let (true, None, None, Some(client), Some(prefix)) =
            (first, &relay.own, &relay.merge, lease.client.clone(), prefix)
        {
            return self.ask_names(Pending::Send(lease), client, prefix);
        }
        let (from, len) = match relay.piped {
            Some(n) => (BodyFrom::Client(n), n),
            None => (BodyFrom::Read, self.body.len() as u64),
        };
        let request = upstream_request(&self.cfg, &relay.fwd, &self.headers, &lease, from, len);
        relay.lease = Some(lease);
        self.waiting = Waiting::Head;
        Step::Send(request)
    }

    fn head(&mut self, status: u16, upstream_headers: Headers) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::Head, &Event::Done) };
        if relay.merge.is_some() {
            relay.status = status;
            relay.upstream_headers = upstream_headers;
            self.waiting = Waiting::ListPage;
            return Step::ReadErrorBody { limit: listing::MAX_PAGE_BYTES };
        }
        let success = (200..300).contains(&status);
        // An upload's start is read whole (its body is empty), so that the
        // key store knows the upload before the client has the URL its
        // chunks go to.
        let starts_upload = relay.fwd.upload && headers::get(&upstream_headers, UPLOAD_URL).is_some();
        // A client's listing is read whole, to show it only its own.
        if success && relay.own.is_some() {
            relay.status = status;
            relay.upstream_headers = upstream_headers;
            self.waiting = Waiting::ErrorBody;
            return Step::ReadErrorBody { limit: listing::MAX_PAGE_BYTES };
        }
        if success && !starts_upload {
            self.waiting = Waiting::Stream;
            let headers = relayed_headers(&upstream_headers, false, relay.lease.as_ref());
            relay.upload_over = relay.fwd.upload
                && headers::get(&upstream_headers, "x-goog-upload-status")
                    .is_some_and(|s| matches!(s.trim(), "final" | "cancelled"));
            // An answer that may create a resource is read for its name.
            let content_type = headers::get(&upstream_headers, "content-type").unwrap_or_default();
            let readable = ["application/json", "text/event-stream"].iter().any(|t| content_type.starts_with(t));
            let head = if relay.fwd.op == Op::Resource && readable { HEAD_BYTES } else { 0 };
            let mut headers = headers;
            self.cors(&mut headers);
            return Step::Stream { status, headers, head };
        }
        relay.status = status;
        relay.upstream_headers = upstream_headers;
        self.waiting = Waiting::ErrorBody;
        Step::ReadErrorBody { limit: MAX_ERROR_BODY_BYTES }
    }

    fn transport_failed(&mut self, reason: &str, timed_out: bool) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::Head, &Event::Done) };
        let Some(lease) = relay.lease.take() else { return self.host_bug(Waiting::Head, &Event::Done) };
        let outcome = Outcome::TransportError { reason: secret::redact(reason, &[&lease.secret]) };
        let model = relay.model().to_owned();
        let report = relay.attempts.failed(&lease, &model, outcome, timed_out);
        if relay.merge.is_some() {
            // Another key cannot list this one's resources.
            return self.list_failed(report);
        }
        self.next_attempt(Some(report))
    }

    /// The client's body broke off (or ended short) while it was piped
    /// upstream: the client's failure, not the key's.
    fn piped_body_failed(&mut self, e: BodyError) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::Head, &Event::Done) };
        if relay.merge.is_some() {
            // A listing has no body: a host's mistake, answered as a failed
            // call, with every report of the keys asked so far.
            return self.transport_failed("the request could not be sent", false);
        }
        let Some(lease) = relay.lease.take() else { return self.host_bug(Waiting::Head, &Event::Done) };
        let error = match e {
            BodyError::TooLarge => ProxyError::PayloadTooLarge { limit: relay.piped.unwrap_or(MAX_BODY_BYTES) },
            BodyError::Broken(why) => ProxyError::BadRequest(format!("reading the request body failed: {why}")),
        };
        let response = error.to_response(self.dialect);
        relay.attempts.tried.push(lease.id.clone());
        let outcome = Outcome::ClientError { status: response.status };
        let report = Report { client: relay.client.clone(), ..Report::of(&lease, relay.model(), outcome) };
        self.emit([Step::Report(report), Step::Respond(response)])
    }

    fn classify(&mut self, body: &[u8]) -> Step {
        // Only an upload's answer hands out a URL of the proxy's own.
        let public = self.relay.as_ref().is_some_and(|r| r.fwd.upload).then(|| self.public_base()).flatten();
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::ErrorBody, &Event::Done) };
        let Some(lease) = relay.lease.take() else { return self.host_bug(Waiting::ErrorBody, &Event::Done) };
        let model = relay.model().to_owned();
        let redact = |text: &str| secret::redact(text, &[&lease.secret]);
        let status = relay.status;
        let outcome = match errors::classify(status, body, redact) {
            Verdict::Retry(outcome) => {
                let report = relay.attempts.failed(&lease, &model, outcome, false);
                return self.next_attempt(Some(report));
            }
            // A 403 for a resource another key may own is no sign against
            // this one (the owner is looked for below).
            Verdict::Suspect if status != 403 || relay.resources.is_empty() => {
                return self.confirm_key(lease, body.to_vec());
            }
            Verdict::Suspect => Outcome::ClientError { status },
            Verdict::Relay(outcome) => outcome,
            Verdict::Success => Outcome::Success,
        };
        self.answer(lease, public, body, outcome)
    }

    /// Relays the upstream's answer (`body`, read whole) to the client,
    /// after the report of `lease`'s attempt: an upload's URLs made the
    /// proxy's, a resource another key may own looked for there.
    fn answer(&mut self, lease: Lease, public: Option<String>, body: &[u8], outcome: Outcome) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::ErrorBody, &Event::Done) };
        let model = relay.model().to_owned();
        let status = relay.status;
        let mut body = secret::redact(&String::from_utf8_lossy(body), &[&lease.secret]);
        if let (true, Some(own)) = ((200..300).contains(&status), &relay.own) {
            match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(mut page) => {
                    names::keep_own(&mut page, own);
                    body = page.to_string();
                }
                // Nothing of another's is shown, whatever came.
                Err(_) => body = "{}".to_owned(),
            }
        }
        let mut headers = relayed_headers(&relay.upstream_headers, true, Some(&lease));
        let mut report = Report::of(&lease, &model, outcome);
        if let (true, Some(public)) = ((200..300).contains(&status) && relay.fwd.upload, public) {
            // The chunks come to the proxy, which sends them to this key.
            let urls = headers.iter_mut().filter(|(n, _)| [UPLOAD_URL, UPLOAD_CONTROL_URL].contains(&n.as_str()));
            for (_, value) in urls {
                if let Some((url, upload)) = names::proxied_upload_url(value, &public) {
                    *value = url;
                    report.own(upload.name(), None);
                }
            }
        }
        let gone = matches!(status, 403 | 404) && !relay.resources.is_empty();
        if gone && lease.pinned {
            // The owner no longer sees it (deleted, expired): forgotten, so
            // that a resource of the same name is looked for again. Only the
            // one the answer concerns: the path's, else those Google's
            // answer names.
            let concerns = |r: &&Resource| match &relay.in_path {
                Some(in_path) => *r == in_path,
                None => r.name().rsplit('/').next().is_some_and(|id| !id.is_empty() && body.contains(id)),
            };
            report.deleted = relay.resources.iter().filter(concerns).map(|r| r.name().to_owned()).collect();
        }
        let response = Response { status, headers, body };
        relay.attempts.tried.push(lease.id.clone());
        if gone && !lease.pinned {
            // Another key may own it: asked next; this key is fine.
            relay.not_seen = Some(response);
            return self.next_attempt(Some(report));
        }
        report.client = relay.client.clone();
        self.emit([Step::Report(report), Step::Respond(response)])
    }

    fn streamed(&mut self, result: Result<Seen, String>) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::Stream, &Event::Done) };
        let Some(lease) = relay.lease.take() else { return self.host_bug(Waiting::Stream, &Event::Done) };
        relay.attempts.tried.push(lease.id.clone());
        self.answered = true;
        let (outcome, seen) = match result {
            Ok(seen) => (Outcome::Success, seen),
            Err(reason) => {
                (Outcome::BrokenStream { reason: secret::redact(&reason, &[&lease.secret]) }, Seen::default())
            }
        };
        let mut report =
            Report { usage: seen.usage, client: relay.client.clone(), ..Report::of(&lease, relay.model(), outcome) };
        if relay.fwd.method == Method::Delete {
            // A resource deleted is forgotten.
            report.deleted = relay.resources.iter().map(|r| r.name().to_owned()).collect();
            return self.emit([Step::Report(report)]);
        }
        // The key could see the resource the path named: its own (and a
        // use of it renews the registry's entry). Names in a request body
        // are never taken (a caller could name another's), only what
        // answers create or list.
        report.owned = relay.in_path.iter().map(|r| Owned { name: r.name().to_owned(), expires: None }).collect();
        if relay.upload_over {
            let over = relay.resources.iter().filter(|r| r.kind() == Kind::Upload);
            report.deleted = over.map(|r| r.name().to_owned()).collect();
            report.owned.retain(|o| !report.deleted.contains(&o.name));
        }
        // What the answer created (or listed) is this key's too, until the
        // expiry it gives.
        let interaction = relay.fwd.upstream_path.split('/').any(|s| s == "interactions");
        let told = names::told_of_head(&seen.head, seen.whole, interaction);
        // The tokens of a batch's or an interaction's finished work count
        // once, however often it is read (a batch's: its inline responses',
        // summed; what the answer's tail reported is one of them).
        let work = relay
            .in_path
            .iter()
            .chain(told.iter().map(|(r, _)| r))
            .find(|r| matches!(r.kind(), Kind::Batch | Kind::Interaction));
        if let Some(r) = work {
            if r.kind() == Kind::Batch {
                report.usage = if seen.whole { crate::wire::usage::batch_usage(&seen.head) } else { None };
            }
            report.usage_of = Some(r.name().to_owned());
        }
        for (r, expires) in told {
            report.own(r.name(), expires);
        }
        self.emit([Step::Report(report)])
    }

    /// The keys of a merged listing, or why there are none.
    fn walked(&mut self, answer: AdminAnswer) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::Walk, &Event::Done) };
        let said: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
        if answer.status != 200 {
            let e = match serde_json::from_value::<Refusal>(said["refused"].clone()) {
                Ok(refusal) => ProxyError::refused(refusal),
                Err(_) => ProxyError::NoUsableKey {
                    model: relay.fwd.model().to_owned(),
                    why: said["unavailable"].as_str().unwrap_or("no key can list").to_owned(),
                },
            };
            return self.fail(e);
        }
        // The body names the client (a host may carry leases bare); a
        // later walk admits no one.
        if let Some(client) = said["client"].as_str() {
            relay.client = Some(client.to_owned());
        }
        let client = relay.client.clone();
        if let Some(e) = self.web_refusal(client.as_deref()) {
            return self.fail(e);
        }
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::Walk, &Event::Done) };
        if let (Some(client), None, Some(prefix)) = (client, &relay.own, listed_prefix(&relay.fwd, None)) {
            return self.ask_names(Pending::Walk(answer.leases), client, prefix);
        }
        self.walk_on(answer.leases)
    }

    /// Goes on with a merged listing's keys.
    fn walk_on(&mut self, leases: Vec<Lease>) -> Step {
        let Some((merge, _)) = self.relay.as_mut().and_then(|r| r.merge.as_mut()) else {
            return self.host_bug(Waiting::Walk, &Event::Done);
        };
        let next = merge.walked(leases);
        self.list_next(next)
    }

    /// Asks the key store for a listing client's own names; `pending`
    /// goes on once they are known ([`Self::names`]).
    fn ask_names(&mut self, pending: Pending, client: String, prefix: String) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::Names, &Event::Done) };
        relay.pending = Some(pending);
        self.waiting = Waiting::Names;
        Step::Admin(AdminOp::Names { client, prefix })
    }

    /// A listing client's own names ([`AdminOp::Names`]): the listing goes
    /// on, showing only those (none, if the key store could not tell).
    fn names(&mut self, answer: &AdminAnswer) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::Names, &Event::Done) };
        let said: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
        let names = said["names"].as_array().into_iter().flatten().filter_map(|n| n.as_str().map(str::to_owned));
        relay.own = Some(if answer.status == 200 { names.collect() } else { HashSet::new() });
        match relay.pending.take() {
            Some(Pending::Walk(leases)) => self.walk_on(leases),
            Some(Pending::Send(lease)) => self.send(lease),
            None => self.host_bug(Waiting::Names, &Event::Done),
        }
    }

    /// Asks the next key for its page, or answers with the merged page.
    fn list_next(&mut self, next: Next) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::ListPage, &Event::Done) };
        match next {
            Next::Fetch { lease, query } => {
                let fwd = Forward { upstream_query: query, ..relay.fwd.clone() };
                let request = upstream_request(&self.cfg, &fwd, &self.headers, &lease, BodyFrom::Read, 0);
                relay.lease = Some(lease);
                self.waiting = Waiting::Head;
                Step::Send(request)
            }
            Next::Walk(from) => {
                let model = relay.model().to_owned();
                self.waiting = Waiting::Walk;
                Step::Admin(AdminOp::Walk { from, count: WALK_KEYS, claim: None, model })
            }
            Next::Answer(response) => self.list_over(None, response),
        }
    }

    /// Ends a merged listing with `response`, after the reports of every
    /// key it asked (and `last`'s).
    fn list_over(&mut self, last: Option<Report>, response: Response) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::ListPage, &Event::Done) };
        let mut reports = relay.merge.take().map(|(_, reports)| reports).unwrap_or_default();
        reports.extend(last);
        // The request counts against its client once, on its last call.
        if let Some(report) = reports.last_mut() {
            report.client.clone_from(&relay.client);
        }
        self.queue.extend(reports.into_iter().map(Step::Report));
        self.emit([Step::Respond(response)])
    }

    /// A merged listing cannot go on past a key that failed (its resources
    /// would be missing): the caller gets why, and may ask again with the
    /// same page token.
    fn list_failed(&mut self, report: Report) -> Step {
        let Some(relay) = self.relay.as_ref() else { return self.host_bug(Waiting::ListPage, &Event::Done) };
        let response = relay.attempts.give_up(relay.model(), None).to_response(self.dialect);
        self.list_over(Some(report), response)
    }

    /// A key that cannot list (it is dead, `report` says why): its
    /// resources are out of reach, and the keys after it are listed.
    fn list_skip(&mut self, report: Report) -> Step {
        let Some((merge, reports)) = self.relay.as_mut().and_then(|r| r.merge.as_mut()) else {
            return self.host_bug(Waiting::ListPage, &Event::Done);
        };
        reports.push(report);
        let next = merge.skip();
        self.list_next(next)
    }

    /// Ends a merged listing with `lease`'s error answer (`body`, its status
    /// and headers in the relay), relayed redacted, as `outcome`.
    fn list_relay(&mut self, lease: &Lease, body: &[u8], outcome: Outcome) -> Step {
        let Some(relay) = self.relay.as_ref() else { return self.host_bug(Waiting::ListPage, &Event::Done) };
        let headers = relayed_headers(&relay.upstream_headers, true, Some(lease));
        let body = secret::redact(&String::from_utf8_lossy(body), &[&lease.secret]);
        let response = Response { status: relay.status, headers, body };
        let report = Report::of(lease, relay.model(), outcome);
        self.list_over(Some(report), response)
    }

    /// A key's page of a merged listing.
    fn listed(&mut self, body: &[u8]) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::ListPage, &Event::Done) };
        let Some(lease) = relay.lease.take() else { return self.host_bug(Waiting::ListPage, &Event::Done) };
        let model = relay.model().to_owned();
        let redact = |text: &str| secret::redact(text, &[&lease.secret]);
        let status = relay.status;
        match errors::classify(status, body, redact) {
            Verdict::Success => {}
            Verdict::Retry(outcome @ Outcome::KeyRejected { .. }) => {
                let report = relay.attempts.failed(&lease, &model, outcome, false);
                return self.list_skip(report);
            }
            Verdict::Retry(outcome) => {
                let report = relay.attempts.failed(&lease, &model, outcome, false);
                return self.list_failed(report);
            }
            Verdict::Suspect => return self.confirm_key(lease, body.to_vec()),
            // The caller's own mistake (a malformed filter, say): Google's
            // answer.
            Verdict::Relay(outcome) => return self.list_relay(&lease, body, outcome),
        }
        let page = serde_json::from_slice::<serde_json::Value>(body).ok().filter(|p| p.is_object());
        let Some(page) = page.filter(|_| body.len() < listing::MAX_PAGE_BYTES) else {
            let report = Report::of(&lease, &model, Outcome::Success);
            let e = ProxyError::UpstreamFailed {
                attempts: relay.attempts.tried.len() + 1,
                last: format!(
                    "a key's page of the listing was not JSON, or over {} MiB: ask for a smaller pageSize",
                    listing::MAX_PAGE_BYTES >> 20
                ),
            };
            return self.list_over(Some(report), e.to_response(self.dialect));
        };
        let mut report = Report { listed: true, ..Report::of(&lease, &model, Outcome::Success) };
        for (r, expires) in names::told_of(&page, false) {
            report.own(r.name(), expires);
        }
        let mut page = page;
        if let Some(own) = &relay.own {
            names::keep_own(&mut page, own);
        }
        let Some((merge, reports)) = relay.merge.as_mut() else {
            return self.host_bug(Waiting::ListPage, &Event::Done);
        };
        reports.push(report);
        let next = merge.fetched(&page);
        self.list_next(next)
    }

    /// Checks a suspect key alone ([`Verdict::Suspect`]) with a call that
    /// carries nothing of the caller's, before its refusal is held
    /// against it; `body` is the answer it gave the caller.
    fn confirm_key(&mut self, lease: Lease, body: Vec<u8>) -> Step {
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::ErrorBody, &Event::Done) };
        let request = admin::check_request(&self.cfg, &lease);
        relay.suspect = Some(Suspect { lease, body, check_status: 0 });
        self.waiting = Waiting::ConfirmHead;
        Step::Send(request)
    }

    fn confirm_head(&mut self, status: u16) -> Step {
        let Some(suspect) = self.relay.as_mut().and_then(|r| r.suspect.as_mut()) else {
            return self.host_bug(Waiting::ConfirmHead, &Event::Done);
        };
        suspect.check_status = status;
        self.waiting = Waiting::ConfirmBody;
        Step::ReadErrorBody { limit: admin::CHECK_BODY_BYTES }
    }

    /// What a suspect key's check found (`None`: it could not be sent):
    /// refused again, the key is out and the request goes on with another
    /// (a listing with the keys after it); otherwise the caller gets the
    /// key's first answer and the key is left alone.
    fn confirmed(&mut self, check_body: Option<&[u8]>) -> Step {
        let public = self.relay.as_ref().is_some_and(|r| r.fwd.upload).then(|| self.public_base()).flatten();
        let Some(relay) = self.relay.as_mut() else { return self.host_bug(Waiting::ConfirmBody, &Event::Done) };
        let Some(Suspect { lease, body, check_status }) = relay.suspect.take() else {
            return self.host_bug(Waiting::ConfirmBody, &Event::Done);
        };
        let redact = |text: &str| secret::redact(text, &[&lease.secret]);
        let found = check_body.map_or(Confirmation::Unknown, |b| errors::confirm(check_status, b, redact));
        let status = relay.status;
        let model = relay.model().to_owned();
        let listing = relay.merge.is_some();
        match found {
            Confirmation::KeyRejected(outcome) => {
                let report = relay.attempts.failed(&lease, &model, outcome, false);
                if listing { self.list_skip(report) } else { self.next_attempt(Some(report)) }
            }
            Confirmation::KeyWorks | Confirmation::Unknown if listing => {
                self.list_relay(&lease, &body, Outcome::ClientError { status })
            }
            Confirmation::KeyWorks | Confirmation::Unknown => {
                self.answer(lease, public, &body, Outcome::ClientError { status })
            }
        }
    }

    fn admin_op(&mut self, body: &[u8]) -> Step {
        let Some(work) = self.admin.as_ref() else { return self.host_bug(Waiting::AdminBody, &Event::Done) };
        match crate::request::admin::parse(&work.route, body) {
            Ok(op) => {
                self.waiting = Waiting::AdminAnswer;
                Step::Admin(op)
            }
            Err(e) => self.fail(e),
        }
    }

    fn admin_answered(&mut self, answer: AdminAnswer) -> Step {
        let Some(work) = self.admin.as_mut() else { return self.host_bug(Waiting::AdminAnswer, &Event::Done) };
        let is_plan = matches!(work.route, AdminRoute::Check) && !work.recording;
        if is_plan && answer.status == 200 {
            work.remaining = serde_json::from_str::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| v["remaining"].as_u64())
                .unwrap_or(0) as usize;
            work.pending = answer.leases.into();
            return self.next_check();
        }
        self.emit([Step::Respond(crate::request::admin::response(answer.status, answer.body))])
    }

    /// Checks the next key, or records what the checks found.
    fn next_check(&mut self) -> Step {
        let Some(work) = self.admin.as_mut() else { return self.host_bug(Waiting::CheckHead, &Event::Done) };
        match work.pending.pop_front() {
            Some(lease) => {
                let request = admin::check_request(&self.cfg, &lease);
                work.current = Some((lease, 0));
                self.waiting = Waiting::CheckHead;
                Step::Send(request)
            }
            None => {
                work.recording = true;
                let results = std::mem::take(&mut work.results);
                self.waiting = Waiting::AdminAnswer;
                Step::Admin(AdminOp::Checked { results, remaining: work.remaining })
            }
        }
    }

    fn check_head(&mut self, status: u16) -> Step {
        let Some((_, s)) = self.admin.as_mut().and_then(|w| w.current.as_mut()) else {
            return self.host_bug(Waiting::CheckHead, &Event::Done);
        };
        *s = status;
        self.waiting = Waiting::CheckBody;
        Step::ReadErrorBody { limit: admin::CHECK_BODY_BYTES }
    }

    fn check_body(&mut self, body: &[u8]) -> Step {
        let Some((lease, status)) = self.admin.as_ref().and_then(|w| w.current.clone()) else {
            return self.host_bug(Waiting::CheckBody, &Event::Done);
        };
        self.check_found(admin::classify_check(status, body, &lease.secret))
    }

    fn check_found(&mut self, found: CheckInfo) -> Step {
        let Some(work) = self.admin.as_mut() else { return self.host_bug(Waiting::CheckBody, &Event::Done) };
        if let Some((lease, _)) = work.current.take() {
            let found = CheckInfo { reason: found.reason.map(|r| secret::redact(&r, &[&lease.secret])), ..found };
            work.results.push((lease.id, found));
        }
        self.next_check()
    }

    /// Answers with `e` in the caller's dialect.
    fn fail(&mut self, e: ProxyError) -> Step {
        let response = e.to_response(self.dialect);
        self.emit([Step::Respond(response)])
    }

    /// An event the exchange did not ask for: a host bug. The caller gets a
    /// 500 if nothing was sent yet; the detail goes to the log.
    fn host_bug(&mut self, waiting: Waiting, event: &Event) -> Step {
        self.queue.clear();
        let what = match event {
            Event::Start => "start",
            Event::Body(_) => "a request body",
            Event::BodyFailed(_) => "a failed request body",
            Event::Acquired(_) => "a lease",
            Event::StoreFailed(_) => "a key-store failure",
            Event::Head { .. } => "a response head",
            Event::SendFailed { .. } => "a send failure",
            Event::ErrorBody(_) => "an error body",
            Event::Streamed(_) => "a stream's end",
            Event::Admin(_) => "an admin answer",
            Event::StreamFailedEarly { .. } => "a stream's early failure",
            Event::Done => "done",
        };
        let log = self.log(format!("host bug: the exchange got {what} while waiting for {waiting:?}"));
        if self.answered {
            self.emit([log])
        } else {
            let e = ProxyError::internal("the proxy lost track of this request", self.request_id.as_deref());
            self.emit([log, Step::Respond(e.to_response(self.dialect))])
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
                    self.cors(&mut response.headers);
                }
                self.waiting = Waiting::Queued;
                step
            }
            None => {
                self.waiting = Waiting::Over;
                Step::Done
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pool::KeyPool;
    use crate::test_support::{config, fake_keys, h};
    use crate::wire::keystore::RateLimitScope;
    use crate::wire::secret::ApiKey;
    use crate::wire::time::UnixMillis;
    use crate::wire::usage::TokenUsage;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::Value;

    /// What the scripted upstream answers, attempt by attempt.
    #[derive(Clone, Copy)]
    enum Answer {
        Status(u16, &'static str),
        Unreachable,
        Stalled,
        Stream(Result<Option<TokenUsage>, &'static str>),
        EarlyBreak,
        /// An upload's last chunk answered: 200, this body, and
        /// `x-goog-upload-status: final`.
        Final(&'static str),
    }

    const PER_MINUTE: &str = r#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]}]}}"#;
    const OVERLOADED: &str = r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#;
    const LOCATION: &str = r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#;

    /// Everything a run did, as the host saw it.
    #[derive(Default)]
    struct Trace {
        sent: Vec<(KeyId, UpstreamRequest)>,
        reports: Vec<Report>,
        settled: Vec<Report>,
        streamed: Option<(u16, Vec<(String, String)>)>,
        response: Option<Response>,
        logs: Vec<String>,
        body_limits: Vec<u64>,
        steps: usize,
        /// The reports and answers, in order (`report`, `respond`).
        order: Vec<&'static str>,
    }

    impl Trace {
        fn json(&self) -> Value {
            serde_json::from_str(&self.response.as_ref().expect("a response").body).expect("json")
        }
        fn keys_sent(&self) -> Vec<KeyId> {
            self.sent.iter().map(|(k, _)| k.clone()).collect()
        }
    }

    /// A host: a real key pool as the store (or a failing one), and a
    /// scripted upstream.
    struct Host {
        pool: KeyPool,
        store_fails: bool,
        upstream: VecDeque<Answer>,
        body: Result<Vec<u8>, BodyError>,
        cfg: Config,
        /// Whether the upstream's heads carry an upload URL with the key
        /// in its query, as Google's do for a key sent in the query.
        key_in_upload_url: bool,
        /// What piping the client's body upstream ([`BodyFrom::Client`])
        /// meets: the client's body breaking off, instead of the upstream.
        piped_body_breaks: bool,
    }

    impl Host {
        fn new(keys: usize, upstream: &[Answer]) -> Self {
            Self {
                pool: KeyPool::new(fake_keys("DRIVER", keys)),
                store_fails: false,
                upstream: upstream.iter().cloned().collect(),
                body: Ok(br#"{"contents":[]}"#.to_vec()),
                cfg: config(None),
                key_in_upload_url: false,
                piped_body_breaks: false,
            }
        }

        fn run(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Trace {
            let cfg = Arc::new(self.cfg.clone());
            let now = UnixMillis(1_800_000_000_000);
            let mut ex = Exchange::new(cfg, Method::parse(method), path.to_owned(), h(headers));
            let mut trace = Trace::default();
            let mut current: Option<Answer> = None;
            let mut event = Event::Start;
            loop {
                trace.steps += 1;
                assert!(trace.steps < 100, "the exchange does not end");
                event = match ex.resume(event) {
                    Step::ReadBody { limit, .. } => {
                        trace.body_limits.push(limit);
                        match self.body.clone() {
                            Ok(b) => Event::Body(b),
                            Err(e) => Event::BodyFailed(e),
                        }
                    }
                    Step::Acquire { model, exclude, settle, client, resources } => {
                        if self.store_fails {
                            Event::StoreFailed("the Durable Object is overloaded".into())
                        } else {
                            if let Some(r) = settle {
                                self.pool.apply(&r, now);
                                trace.settled.push(r);
                            }
                            Event::Acquired(self.pool.acquire_for(client.as_ref(), &model, &resources, &exclude, now))
                        }
                    }
                    Step::Send(request) => {
                        let secret = request
                            .headers
                            .iter()
                            .find(|(n, _)| n == "x-goog-api-key" || n == "authorization")
                            .map(|(_, v)| v.trim_start_matches("Bearer ").to_owned())
                            .expect("a credential");
                        let piped = matches!(request.body, BodyFrom::Client(_));
                        trace.sent.push((crate::wire::secret::ApiKey::new(&secret).id(), request));
                        if piped && self.piped_body_breaks {
                            event = Event::BodyFailed(BodyError::Broken("the client went away".into()));
                            continue;
                        }
                        let answer = self.upstream.pop_front().unwrap_or(Answer::Status(200, "{}"));
                        let upload_url = format!("https://up.example/upload/v1beta/files?key={secret}&upload_id=u1");
                        let head = |pairs: &[(&str, &str)]| {
                            let mut headers = h(pairs);
                            if self.key_in_upload_url {
                                headers.push(("X-Goog-Upload-URL".into(), upload_url.clone().into_bytes()));
                            }
                            headers
                        };
                        let event = match &answer {
                            Answer::Status(s, _) => Event::Head {
                                status: *s,
                                headers: head(&[("content-type", "application/json"), ("content-length", "99")]),
                            },
                            Answer::Final(_) => Event::Head {
                                status: 200,
                                headers: head(&[
                                    ("content-type", "application/json"),
                                    ("x-goog-upload-status", "final"),
                                ]),
                            },
                            Answer::Stream(_) | Answer::EarlyBreak => {
                                Event::Head { status: 200, headers: head(&[("content-type", "text/event-stream")]) }
                            }
                            Answer::Unreachable => {
                                Event::SendFailed { reason: "connection refused".into(), timed_out: false }
                            }
                            Answer::Stalled => {
                                Event::SendFailed { reason: "no response head in time".into(), timed_out: true }
                            }
                        };
                        current = Some(answer);
                        event
                    }
                    Step::ReadErrorBody { limit } => match current.take() {
                        Some(Answer::Status(_, body)) => {
                            Event::ErrorBody(body.as_bytes()[..body.len().min(limit)].to_vec())
                        }
                        _ => panic!("an error body without an error"),
                    },
                    Step::Stream { status, headers, head } => match current.take() {
                        Some(Answer::EarlyBreak) => {
                            Event::StreamFailedEarly { reason: "closed before the body".into(), timed_out: false }
                        }
                        Some(Answer::Stream(r)) => {
                            trace.streamed = Some((status, headers));
                            Event::Streamed(r.map(Seen::usage).map_err(str::to_owned))
                        }
                        answer => {
                            trace.streamed = Some((status, headers));
                            let mut tail = crate::google::stream::UsageTail::keeping_head(head);
                            if let Some(Answer::Status(_, body) | Answer::Final(body)) = answer {
                                tail.push(body.as_bytes());
                            }
                            Event::Streamed(Ok(tail.seen()))
                        }
                    },
                    Step::Respond(r) => {
                        trace.order.push("respond");
                        assert!(trace.response.is_none(), "answered twice");
                        trace.response = Some(r);
                        Event::Done
                    }
                    Step::Report(r) => {
                        trace.order.push("report");
                        self.pool.apply(&r, now);
                        trace.reports.push(r);
                        Event::Done
                    }
                    Step::Stats(_) | Step::Reset => {
                        if self.store_fails {
                            Event::StoreFailed("storage error".into())
                        } else {
                            Event::Done
                        }
                    }
                    Step::Log(line) => {
                        trace.logs.push(line);
                        Event::Done
                    }
                    Step::Admin(op) => {
                        let vault = crate::store::vault::Vault::from_secret("a long random secret for the tests").ok();
                        let applied =
                            crate::store::admin::apply(&mut self.pool, vault.as_ref(), op, now, &mut || [9; 24]);
                        Event::Admin(AdminAnswer::from(&applied))
                    }
                    Step::Done => break,
                };
            }
            trace
        }
    }

    fn generate(host: &mut Host) -> Trace {
        host.run("POST", "/v1beta/models/gemini-2.5-flash:generateContent", &[("x-goog-api-key", "client")])
    }

    #[test]
    fn a_listing_is_merged_across_the_keys_in_the_order_of_their_ids() {
        const KEY_REJECTED: &str = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
        let answers = [
            Answer::Status(200, r#"{"files":[{"name":"files/a","expirationTime":"2027-02-01T00:00:00Z"}]}"#),
            Answer::Status(200, r#"{"files":[{"name":"files/b"}],"nextPageToken":"t+1"}"#),
            Answer::Status(200, r#"{"files":[{"name":"files/c"},{"name":"files/d"}]}"#),
            // The third key is dead: its files are out of reach.
            Answer::Status(400, KEY_REJECTED),
            Answer::Status(200, "{}"),
        ];
        let mut host = Host::new(5, &answers);
        let t = host.run("GET", "/v1beta/files?pageSize=3&key=client", &[]);
        let mut ids: Vec<KeyId> = fake_keys("DRIVER", 5).iter().map(ApiKey::id).collect();
        ids.sort();
        assert_eq!(t.keys_sent(), [&ids[0], &ids[1], &ids[1], &ids[2], &ids[3], &ids[4]].map(Clone::clone));
        let queries: Vec<&str> = t.sent.iter().map(|(_, r)| r.path_and_query.as_str()).collect();
        assert_eq!(
            queries,
            [
                "/v1beta/files?pageSize=3",
                "/v1beta/files?pageSize=2",
                "/v1beta/files?pageSize=1&pageToken=t%2B1",
                // The page is full: is there more after it?
                "/v1beta/files?pageSize=1",
                "/v1beta/files?pageSize=1",
                "/v1beta/files?pageSize=1",
            ]
        );
        let response = t.response.as_ref().expect("an answer");
        assert_eq!(response.status, 200);
        let page = t.json();
        let names: Vec<&str> =
            page["files"].as_array().expect("files").iter().filter_map(|f| f["name"].as_str()).collect();
        assert_eq!(names, ["files/a", "files/b", "files/c", "files/d"]);
        assert_eq!(page.get("nextPageToken"), None, "no key has more");
        // Every key asked counts a call; what it listed is its own.
        assert_eq!(t.reports.len(), 6);
        assert!(matches!(t.reports[3].outcome, Outcome::KeyRejected { .. }));
        let owned: Vec<(&KeyId, &str)> =
            t.reports.iter().flat_map(|r| r.owned.iter().map(move |o| (&r.key, o.name.as_str()))).collect();
        assert_eq!(owned, [(&ids[0], "files/a"), (&ids[1], "files/b"), (&ids[1], "files/c"), (&ids[1], "files/d")]);
        assert!(t.reports[0].owned[0].expires.is_some(), "with the expiry Google gave");
        assert_eq!(t.order.last(), Some(&"respond"), "the registry knows the files before the client does");

        // A key that fails on the way (a 429) stops the page: the caller
        // gets why, not a page with that key's files missing.
        let mut host =
            Host::new(2, &[Answer::Status(200, r#"{"files":[{"name":"files/a"}]}"#), Answer::Status(429, PER_MINUTE)]);
        let t = host.run("GET", "/v1beta/files?key=client", &[]);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(429));
        assert_eq!(t.sent.len(), 2, "no key is asked for another's list");

        // The next page starts where the token says, with Google's token.
        let mut host = Host::new(3, &[Answer::Status(200, r#"{"files":[{"name":"files/x"}]}"#)]);
        let mut ids: Vec<KeyId> = fake_keys("DRIVER", 3).iter().map(ApiKey::id).collect();
        ids.sort();
        let token = format!("gp1.k.{}.{}", ids[1], URL_SAFE_NO_PAD.encode("next/1"));
        let t = host.run("GET", &format!("/v1beta/files?pageToken={token}&pageSize=5&key=client"), &[]);
        assert_eq!(t.sent[0].0, ids[1]);
        assert_eq!(t.sent[0].1.path_and_query, "/v1beta/files?pageSize=5&pageToken=next%2F1");
        let t = host.run("GET", "/v1beta/files?pageToken=CgZmaWxlcy8&key=client", &[]);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(400), "not a token of the proxy's");
        assert!(t.sent.is_empty());
    }

    #[test]
    fn a_resource_call_keeps_its_method_and_path_and_never_shows_the_key() {
        let mut host = Host::new(2, &[Answer::Status(200, "{}")]);
        host.key_in_upload_url = true;
        let t = host.run("DELETE", "/v1beta/files/abc-123?key=client", &[]);
        assert!(t.body_limits.is_empty(), "a DELETE has no body to read");
        let (_, sent) = &t.sent[0];
        assert_eq!((&sent.method, sent.path_and_query.as_str()), (&Method::Delete, "/v1beta/files/abc-123"));
        assert!(!sent.headers.iter().any(|(n, _)| n == "content-length"));
        assert_eq!(t.reports[0].model, "(files)");
        let (status, headers) = t.streamed.as_ref().expect("streamed");
        assert_eq!(*status, 200);
        let url = &headers.iter().find(|(n, _)| n == "x-goog-upload-url").expect("relayed").1;
        assert!(url.starts_with("https://up.example/upload/v1beta/files?key=") && url.ends_with("&upload_id=u1"));
        let secrets = fake_keys("DRIVER", 2);
        assert!(secrets.iter().all(|k| !url.contains(k.expose())), "the key leaked: {url}");

        // An upload start goes below Google's /upload prefix, with its body;
        // an error answer's headers are scrubbed too.
        let mut host = Host::new(1, &[Answer::Status(400, LOCATION)]);
        host.key_in_upload_url = true;
        host.body = Ok(br#"{"file":{"displayName":"a.pdf"}}"#.to_vec());
        let t = host.run("POST", "/upload/v1alpha/files", &[("x-goog-api-key", "client")]);
        assert_eq!(t.sent[0].1.path_and_query, "/upload/v1alpha/files", "with the version asked for");
        let response = t.response.as_ref().expect("relayed");
        assert_eq!(response.status, 400);
        let url = &response.headers.iter().find(|(n, _)| n == "x-goog-upload-url").expect("relayed").1;
        assert!(!url.contains(fake_keys("DRIVER", 1)[0].expose()), "the key leaked: {url}");
    }

    #[test]
    fn a_429_a_5xx_and_a_transport_failure_each_move_on_to_another_key() {
        let mut host =
            Host::new(4, &[Answer::Status(429, PER_MINUTE), Answer::Status(503, OVERLOADED), Answer::Unreachable]);
        let t = generate(&mut host);
        let keys = t.keys_sent();
        assert_eq!(keys.len(), 4);
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 4, "a key was tried twice: {keys:?}");
        // Each failure rode on the next acquire; the success came after the stream.
        assert_eq!(t.settled.len(), 3);
        assert!(matches!(&t.settled[0].outcome, Outcome::RateLimited(rl) if rl.scope == RateLimitScope::PerMinute));
        assert!(matches!(t.settled[1].outcome, Outcome::UpstreamError { status: 503, .. }));
        assert!(matches!(t.settled[2].outcome, Outcome::TransportError { .. }));
        assert_eq!(
            t.reports,
            [Report {
                key: keys[3].clone(),
                model: "gemini-2.5-flash".into(),
                outcome: Outcome::Success,
                usage: None,
                client: None,
                owned: Vec::new(),
                deleted: Vec::new(),
                listed: false,
                usage_of: None,
            }]
        );
        assert_eq!(t.streamed.as_ref().map(|(s, _)| *s), Some(200));
        assert!(t.response.is_none() && t.logs.is_empty());
    }

    #[test]
    fn timeouts_fail_over_and_all_timeouts_answer_504_without_blaming_the_keys() {
        let mut host = Host::new(3, &[Answer::Stalled, Answer::Status(200, "{}")]);
        let t = generate(&mut host);
        assert_eq!(t.sent.len(), 2, "a timeout before the head fails over");
        assert!(t.streamed.is_some());
        let mut host = Host::new(2, &[Answer::Stalled, Answer::Stalled]);
        let t = generate(&mut host);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(504));
        assert_eq!(t.json()["error"]["status"], "DEADLINE_EXCEEDED");
        let mut host = Host::new(2, &[Answer::Stalled, Answer::Unreachable]);
        assert_eq!(generate(&mut host).response.map(|r| r.status), Some(502), "not every failure was a timeout");
        let s = host.pool.snapshot(UnixMillis(0));
        assert!(
            s.keys
                .iter()
                .all(|k| k.disabled.is_none()
                    && k.models.iter().all(|m| m.state == crate::store::snapshot::KeyState::Ok))
        );
    }

    #[test]
    fn log_lines_and_internal_answers_carry_the_request_id() {
        let mut ex = Exchange::new(
            Arc::new(config(None)),
            Method::Get,
            "/v1beta/models".into(),
            h(&[(headers::REQUEST_ID, "r-42")]),
        );
        assert!(matches!(ex.resume(Event::Start), Step::Acquire { .. }));
        assert!(
            matches!(ex.resume(Event::StoreFailed("down".into())), Step::Log(l) if l.starts_with("request r-42: "))
        );
        match ex.resume(Event::Done) {
            Step::Respond(r) => assert!(r.body.contains("request id r-42"), "{}", r.body),
            s => panic!("{s:?}"),
        }
        let ex =
            Exchange::new(Arc::new(config(None)), Method::Get, "/".into(), Vec::new()).with_request_id("w-1".into());
        assert_eq!(ex.request_id.as_deref(), Some("w-1"));
    }

    #[test]
    fn at_most_five_keys_and_the_last_report_is_flushed_on_giving_up() {
        let mut host = Host::new(8, &[Answer::Status(503, OVERLOADED); 8]);
        let t = generate(&mut host);
        assert_eq!(t.sent.len(), MAX_ATTEMPTS);
        assert_eq!(t.settled.len(), MAX_ATTEMPTS - 1);
        assert_eq!(t.reports.len(), 1, "the fifth failure is reported before the answer");
        assert!(matches!(t.reports[0].outcome, Outcome::UpstreamError { status: 503, .. }));
        assert_eq!(t.reports[0].key, t.sent[4].0);
        let r = t.response.as_ref().expect("an answer");
        assert_eq!(r.status, 502);
        assert!(t.json()["error"]["message"].as_str().is_some_and(|m| m.contains("overloaded")));
        // Every attempt is counted in the pool.
        let counted: u64 =
            host.pool.snapshot(UnixMillis(0)).keys.iter().flat_map(|k| &k.models).map(|m| m.errors).sum();
        assert_eq!(counted, 5);
    }

    const NOT_YOURS: &str = r#"{"error":{"code":403,"message":"You do not have permission to access the File abc or it may not exist.","status":"PERMISSION_DENIED"}}"#;

    /// A prompt naming `files/abc` (by its URI, as SDKs send it).
    fn with_file(host: &mut Host, names: &[&str]) {
        let parts: Vec<String> = names
            .iter()
            .map(|n| format!(r#"{{"fileData":{{"fileUri":"https://generativelanguage.googleapis.com/v1beta/{n}"}}}}"#))
            .collect();
        host.body = Ok(format!(r#"{{"contents":[{{"parts":[{}]}}]}}"#, parts.join(",")).into_bytes());
    }

    #[test]
    fn a_resource_is_looked_for_once_then_its_owner_serves_it_alone() {
        let mut host =
            Host::new(4, &[Answer::Status(403, NOT_YOURS), Answer::Status(403, NOT_YOURS), Answer::Status(200, "{}")]);
        with_file(&mut host, &["files/abc"]);
        let t = generate(&mut host);
        let keys = t.keys_sent();
        assert_eq!(keys.len(), 3, "asked until a key could see it");
        assert!(t.response.is_none(), "the third key's answer streamed");
        // The keys that could not see it are fine.
        assert!(t.settled.iter().all(|r| r.outcome == Outcome::ClientError { status: 403 }), "{:?}", t.settled);
        let owner = keys[2].clone();
        // A name in a request body is never taken as the key's: the next
        // prompt looks again. A get of the file itself tells.
        assert!(t.reports[0].owned.is_empty(), "{:?}", t.reports[0].owned);
        host.upstream = [Answer::Status(403, NOT_YOURS), Answer::Status(403, NOT_YOURS), Answer::Status(200, "{}")]
            .into_iter()
            .collect();
        let t = host.run("GET", "/v1beta/files/abc", &[("x-goog-api-key", "client")]);
        assert_eq!(t.keys_sent().last(), Some(&owner));
        assert_eq!(t.reports[0].owned, [Owned { name: "files/abc".into(), expires: None }]);

        // From now on, only the owner; Google's 403 from it is final.
        for _ in 0..3 {
            let t = generate(&mut host);
            assert_eq!(t.keys_sent(), std::slice::from_ref(&owner));
        }
        host.upstream = [Answer::Status(429, PER_MINUTE)].into_iter().collect();
        let t = generate(&mut host);
        assert_eq!(t.keys_sent(), std::slice::from_ref(&owner), "never a key that cannot see it");
        let r = t.response.as_ref().expect("an answer");
        assert_eq!(r.status, 429);
        assert!(r.headers.iter().any(|(n, _)| n == "retry-after"), "{:?}", r.headers);
        let message = t.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains("files/abc") && message.contains("rate-limited"), "{message}");

        // Two resources of two keys: a 400, nothing sent.
        let mut host = Host::new(2, &[]);
        let one = host.run("GET", "/v1beta/files/one", &[("x-goog-api-key", "client")]).keys_sent();
        let two = host.run("GET", "/v1beta/files/two", &[("x-goog-api-key", "client")]).keys_sent();
        assert_ne!(one, two, "the ring moved on: owned by different keys");
        with_file(&mut host, &["files/one", "files/two"]);
        let t = generate(&mut host);
        assert!(t.sent.is_empty());
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(400));
        assert!(t.json()["error"]["message"].as_str().is_some_and(|m| m.contains("files/one and files/two")));
    }

    const FILE_MADE: &str = r#"{"file":{"name":"files/made-1","uri":"https://generativelanguage.googleapis.com/v1beta/files/made-1","expirationTime":"2027-02-01T00:00:00Z"}}"#;

    #[test]
    fn an_upload_url_points_at_the_proxy_and_its_chunks_go_to_the_key_that_started_it() {
        let mut host = Host::new(4, &[]);
        host.cfg = config(Some("proxy-key-0123456789"));
        host.key_in_upload_url = true;
        let start = [("x-goog-api-key", "proxy-key-0123456789"), ("host", "proxy.local:8080")];
        let t = host.run("POST", "/upload/v1beta/files", &start);
        let owner = t.keys_sent()[0].clone();
        let response = t.response.as_ref().expect("read whole, then answered");
        let url = &response.headers.iter().find(|(n, _)| n == "x-goog-upload-url").expect("relayed").1;
        assert_eq!(url, "http://proxy.local:8080/upload/v1beta/files?upload_id=u1", "no key in it");
        assert!(t.reports[0].owned.iter().any(|o| o.name == "uploads/u1"), "{:?}", t.reports[0].owned);
        // The upload is known before the client has its URL: a host that
        // holds reports back sends this one at once.
        assert_eq!(t.order, ["report", "respond"]);
        assert!(t.reports[0].must_land_first());
        host.key_in_upload_url = false;

        // The chunks carry no credential (the Python SDK sends none): the
        // upload id lets them in, to the key that started it, which the
        // ring would not have chosen next.
        host.upstream = [Answer::Status(200, "{}"), Answer::Final(FILE_MADE)].into_iter().collect();
        let chunk = [("x-goog-upload-command", "upload"), ("x-goog-upload-offset", "0")];
        let t = host.run("POST", "/upload/v1beta/files?upload_id=u1&upload_protocol=resumable", &chunk);
        assert!(t.response.is_none(), "{:?}", t.response);
        assert_eq!(t.keys_sent(), std::slice::from_ref(&owner));
        let sent = &t.sent[0].1;
        assert_eq!(sent.path_and_query, "/upload/v1beta/files?upload_id=u1&upload_protocol=resumable");
        assert!(sent.headers.iter().any(|(n, v)| n == "x-goog-upload-command" && v == "upload"));
        // Only a chunk gets in so: not a start, nor a GET, with that id.
        for (method, command) in [("POST", "start"), ("GET", "upload")] {
            let t = host.run(method, "/upload/v1beta/files?upload_id=u1", &[("x-goog-upload-command", command)]);
            assert_eq!(t.response.as_ref().map(|r| r.status), Some(401), "{method} {command}");
        }
        // The file's bytes are not read: names in them (a batch's input)
        // pin nothing, and a model named there is not the call's.
        host.body = Ok(br#"{"model":"gemini-x","fileUri":"files/of-another-key"}"#.to_vec());
        let t = host.run("POST", "/upload/v1beta/files?upload_id=u1&upload_protocol=resumable", &chunk);
        assert_eq!(t.keys_sent(), std::slice::from_ref(&owner));
        assert_eq!(t.reports[0].model, "(files)");
        // The last answer names the file, with its expiry: the owner's; the
        // upload is over, and forgotten.
        assert_eq!(t.reports[0].deleted, ["uploads/u1"]);
        let made = t.reports[0].owned.iter().find(|o| o.name == "files/made-1").expect("the file is told of");
        assert_eq!(made.expires, crate::wire::time::parse_rfc3339("2027-02-01T00:00:00Z"));
        for _ in 0..3 {
            with_file(&mut host, &["files/made-1"]);
            let t = host.run(
                "POST",
                "/v1beta/models/gemini-2.5-flash:generateContent",
                &[("x-goog-api-key", "proxy-key-0123456789")],
            );
            assert_eq!(t.keys_sent(), std::slice::from_ref(&owner), "no search: its owner is known");
        }

        // An upload id the proxy never handed out needs the proxy key.
        let t = host.run("POST", "/upload/v1beta/files?upload_id=other", &chunk);
        assert!(t.sent.is_empty());
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(401));
        let t = host.run("POST", "/upload/v1beta/files", &[]);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(401), "a start needs a key");
        let t = host.run("POST", "/upload/v1beta/files?upload_id=u1", &chunk);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(401), "an upload over needs the key again");
    }

    #[test]
    fn a_large_upload_body_is_piped_once_and_never_read() {
        let mut host = Host::new(4, &[]);
        host.cfg.allowed_hosts = vec!["proxy.local".into()];
        host.key_in_upload_url = true;
        let start = [("x-goog-upload-protocol", "resumable"), ("host", "proxy.local")];
        let t = host.run("POST", "/upload/v1beta/files", &start);
        assert_eq!(t.body_limits, [MAX_BODY_BYTES], "a start is read");
        assert!(t.reports[0].owned.iter().any(|o| o.name == "uploads/u1"));
        let owner = t.keys_sent()[0].clone();
        host.key_in_upload_url = false;

        // 200 MiB of chunk: piped with its declared length, never read.
        let len = (200u64 << 20).to_string();
        let chunk =
            [("x-goog-upload-command", "upload, finalize"), ("x-goog-upload-offset", "0"), ("content-length", &len)];
        host.upstream = [Answer::Final(FILE_MADE)].into_iter().collect();
        let t = host.run("POST", "/upload/v1beta/files?upload_id=u1", &chunk);
        assert!(t.body_limits.is_empty(), "read: {:?}", t.body_limits);
        assert_eq!(t.keys_sent(), std::slice::from_ref(&owner));
        let sent = &t.sent[0].1;
        assert_eq!(sent.body, BodyFrom::Client(200 << 20));
        let lengths: Vec<&str> =
            sent.headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str()).collect();
        assert_eq!(lengths, [len.as_str()]);
        assert!(t.reports[0].owned.iter().any(|o| o.name == "files/made-1"));

        // A piped body goes with one attempt: a multipart upload that meets
        // an overloaded upstream is not sent again to another key (a read
        // one is), and over the Files API's size it is refused unsent.
        let form = |len: &str| {
            [("x-goog-upload-protocol", "multipart"), ("content-length", len)].map(|(n, v)| (n, v.to_owned()))
        };
        for (len, tries) in [((5u64 << 20).to_string(), 1), ("1000".to_owned(), 2)] {
            host.upstream = [Answer::Status(503, OVERLOADED), Answer::Status(200, "{}")].into_iter().collect();
            let headers = form(&len);
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let t = host.run("POST", "/upload/v1beta/files", &headers);
            assert_eq!(t.sent.len(), tries, "{len} bytes");
            let status = t.response.as_ref().map_or(200, |r| r.status);
            assert_eq!(status == 200, tries == 2, "{len} bytes: {status}");
        }
        let headers = form(&(3u64 << 30).to_string());
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let t = host.run("POST", "/upload/v1beta/files", &headers);
        assert!(t.sent.is_empty());
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(413));

        // A client body that breaks off on its way is the client's failure:
        // a 400 for it, and a key in good standing.
        host.piped_body_breaks = true;
        let t = host.run("POST", "/upload/v1beta/files?upload_id=u1", &chunk);
        assert_eq!(t.keys_sent(), std::slice::from_ref(&owner));
        let response = t.response.as_ref().expect("an answer");
        assert_eq!(response.status, 400);
        assert!(response.body.contains("the client went away"), "{}", response.body);
        assert_eq!(t.reports[0].outcome, Outcome::ClientError { status: 400 });
    }

    #[test]
    fn the_proxy_url_comes_from_public_url_forwarded_headers_or_the_origin() {
        let upload_url = |cfg: Config, origin: Option<(&str, &str)>, headers: &[(&str, &str)]| {
            let mut ex = Exchange::new(Arc::new(cfg), Method::Post, "/upload/v1beta/files".into(), h(headers));
            if let Some((scheme, authority)) = origin {
                ex = ex.with_origin(scheme, authority);
            }
            ex.public_base()
        };
        let public = Config { public_url: UpstreamBase::parse("https://ai.example/gemini/").ok(), ..config(None) };
        let forwarded = [("x-forwarded-host", "edge.example, inner"), ("x-forwarded-proto", "https"), ("host", "x")];
        assert_eq!(upload_url(public, None, &forwarded).as_deref(), Some("https://ai.example/gemini"));
        assert_eq!(upload_url(config(None), None, &forwarded).as_deref(), Some("https://edge.example"));
        let origin = Some(("https", "w.example.workers.dev"));
        assert_eq!(
            upload_url(config(None), origin, &[("host", "x")]).as_deref(),
            Some("https://w.example.workers.dev")
        );
        assert_eq!(upload_url(config(None), None, &[("host", "Local:8080")]).as_deref(), Some("http://local:8080"));
        assert_eq!(upload_url(config(None), None, &[("host", "a/b@c")]), None, "no such host");
        assert_eq!(upload_url(config(None), None, &[]), None);
    }

    #[test]
    fn answers_that_create_a_resource_make_it_their_keys() {
        const CACHE: &str =
            r#"{"name":"cachedContents/c-1","model":"models/gemini-2.5-flash","expireTime":"2027-02-01T00:00:00Z"}"#;
        let mut host = Host::new(4, &[Answer::Status(200, CACHE)]);
        host.body = Ok(br#"{"model":"models/gemini-2.5-flash","contents":[]}"#.to_vec());
        let t = host.run("POST", "/v1beta/cachedContents", &[("x-goog-api-key", "client")]);
        let owner = t.keys_sent()[0].clone();
        assert_eq!(t.reports[0].owned.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["cachedContents/c-1"]);
        for _ in 0..3 {
            host.body = Ok(br#"{"cachedContent":"cachedContents/c-1","contents":[]}"#.to_vec());
            assert_eq!(generate(&mut host).keys_sent(), std::slice::from_ref(&owner));
        }
        // A generation's answer is not read for names: nothing is told of.
        host.upstream = [Answer::Status(200, r#"{"name":"cachedContents/c-2"}"#)].into_iter().collect();
        host.body = Ok(br#"{"contents":[]}"#.to_vec());
        assert!(generate(&mut host).reports[0].owned.is_empty());

        // An interaction, streamed: its first event names it.
        const EVENTS: &str = "data: {\"event_type\":\"interaction.created\",\"interaction\":{\"id\":\"v1_it-9\",\"status\":\"in_progress\"}}\n\ndata: {\"event_type\":\"step.delta\",\"id\":\"not-it\"}\n\n";
        host.upstream = [Answer::Status(200, EVENTS)].into_iter().collect();
        host.body = Ok(br#"{"model":"gemini-2.5-flash","input":"hi","stream":true}"#.to_vec());
        let t = host.run("POST", "/v1beta/interactions?alt=sse", &[("x-goog-api-key", "client")]);
        let names: Vec<&str> = t.reports[0].owned.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["interactions/v1_it-9"]);
        let it = t.keys_sent()[0].clone();
        host.body = Ok(br#"{"model":"gemini-2.5-flash","input":"more","previous_interaction_id":"v1_it-9"}"#.to_vec());
        for _ in 0..3 {
            let t = host.run("POST", "/v1beta/interactions", &[("x-goog-api-key", "client")]);
            assert_eq!(t.keys_sent(), std::slice::from_ref(&it));
        }
    }

    #[test]
    fn openai_files_and_batches_stay_with_their_file_and_a_form_is_never_scanned() {
        let mut host = Host::new(4, &[Answer::Status(200, r#"{"id":"files/in1","object":"file","bytes":9}"#)]);
        // The file's bytes name another file: a form is never read for names.
        host.body = Ok(b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n{\"file_id\":\"files/other\"}\r\n--b--".to_vec());
        let t = host.run(
            "POST",
            "/v1/files",
            &[("authorization", "Bearer client"), ("content-type", "multipart/form-data; boundary=b")],
        );
        let owned: Vec<&str> = t.reports[0].owned.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(owned, ["files/in1"], "only what the answer created");
        let owner = t.keys_sent()[0].clone();
        for _ in 0..3 {
            host.upstream =
                [Answer::Status(200, r#"{"id":"batches/b1","object":"batch","input_file_id":"files/in1"}"#)]
                    .into_iter()
                    .collect();
            host.body =
                Ok(br#"{"input_file_id":"files/in1","endpoint":"/v1/chat/completions","completion_window":"24h"}"#
                    .to_vec());
            let t = host.run("POST", "/v1/batches", &[("authorization", "Bearer client")]);
            assert_eq!(t.keys_sent(), std::slice::from_ref(&owner), "the batch goes where its file is");
        }
        host.body = Ok(Vec::new());
        for path in ["/v1/batches/batches%2Fb1", "/v1/files/files%2Fin1/content"] {
            let t = host.run("GET", path, &[("authorization", "Bearer client")]);
            assert_eq!(t.keys_sent(), std::slice::from_ref(&owner), "{path}");
        }
    }

    fn res(name: &str) -> Resource {
        Resource::parse(name).expect("a resource")
    }

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    #[test]
    fn no_key_sees_it_google_answers_and_a_deleted_resource_is_forgotten() {
        // No key sees it: Google's 403, after every key was asked once.
        let mut host = Host::new(3, &[Answer::Status(403, NOT_YOURS); 3]);
        with_file(&mut host, &["files/gone"]);
        let t = generate(&mut host);
        assert_eq!(t.keys_sent().len(), 3);
        let r = t.response.as_ref().expect("an answer");
        assert_eq!((r.status, t.json()["error"]["status"].as_str()), (403, Some("PERMISSION_DENIED")));
        assert!(host.pool.acquire_naming("m", &[res("files/gone")], &[], NOW).is_ok_and(|l| !l.pinned));

        // Found, then deleted through the proxy: forgotten.
        let mut host = Host::new(3, &[Answer::Status(403, NOT_YOURS), Answer::Status(200, "{}")]);
        let owner = host.run("GET", "/v1beta/files/abc", &[("x-goog-api-key", "client")]).keys_sent()[1].clone();
        let lease = host.pool.acquire_naming("m", &[res("files/abc")], &[], NOW).expect("owner");
        assert!(lease.pinned && lease.id == owner);
        let t = host.run("DELETE", "/v1beta/files/abc", &[("x-goog-api-key", "client")]);
        assert_eq!(t.keys_sent(), [owner]);
        assert_eq!(t.reports[0].deleted, ["files/abc"]);
        assert!(!host.pool.acquire_naming("m", &[res("files/abc")], &[], NOW).expect("any").pinned);
    }

    #[test]
    fn caller_errors_are_relayed_redacted_and_leave_the_key_alone() {
        let leaky: &'static str = Box::leak(
            format!(
                r#"{{"error":{{"code":400,"message":"bad request for {}","status":"INVALID_ARGUMENT"}}}}"#,
                fake_keys("DRIVER", 1)[0].expose()
            )
            .into_boxed_str(),
        );
        for body in [LOCATION, leaky] {
            let mut host = Host::new(2, &[Answer::Status(400, body)]);
            let t = generate(&mut host);
            assert_eq!(t.sent.len(), 1, "a caller error is not retried");
            assert_eq!(t.reports.len(), 1);
            assert_eq!(t.reports[0].outcome, Outcome::ClientError { status: 400 });
            let r = t.response.as_ref().expect("relayed");
            assert_eq!(r.status, 400);
            assert!(!r.body.contains(fake_keys("DRIVER", 1)[0].expose()), "{}", r.body);
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("content-length"), None, "the body changed length");
            // An open proxy grants no page CORS (none asked here).
            assert_eq!(r.header("access-control-allow-origin"), None);
            assert!(host.pool.snapshot(UnixMillis(0)).keys.iter().all(|k| k.disabled.is_none()));
        }
    }

    #[test]
    fn a_2xx_that_breaks_before_its_first_byte_fails_over_unseen() {
        let mut host = Host::new(2, &[Answer::EarlyBreak, Answer::Stream(Ok(None))]);
        let t = host.run(
            "POST",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            &[("x-goog-api-key", "client")],
        );
        assert_eq!(t.sent.len(), 2);
        assert!(matches!(t.settled[0].outcome, Outcome::TransportError { .. }));
        assert_eq!(t.reports.len(), 1);
        assert_eq!(t.reports[0].outcome, Outcome::Success);
        assert!(t.streamed.is_some() && t.response.is_none());
    }

    #[test]
    fn a_stream_that_breaks_off_is_reported() {
        let mut host = Host::new(1, &[Answer::Stream(Err("upstream reset the connection"))]);
        let t = host.run(
            "POST",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            &[("x-goog-api-key", "client")],
        );
        assert_eq!(t.reports.len(), 1);
        assert!(matches!(&t.reports[0].outcome, Outcome::BrokenStream { reason } if reason.contains("reset")));
        let (status, headers) = t.streamed.expect("streamed");
        assert_eq!(status, 200);
        assert!(headers.contains(&("content-type".into(), "text/event-stream".into())));
        assert!(t.response.is_none());
    }

    #[test]
    fn a_key_store_failure_answers_503_in_the_callers_dialect_and_is_logged_once() {
        let mut host = Host::new(1, &[]);
        host.store_fails = true;
        host.body = Ok(br#"{"model":"gemini-2.5-flash","messages":[]}"#.to_vec());
        let t = host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer client")]);
        let r = t.response.as_ref().expect("answered");
        assert_eq!(r.status, 503);
        assert_eq!(t.json()["error"]["type"], "server_error");
        assert_eq!(t.json()["error"]["code"], "key_store_unavailable");
        assert!(!r.body.contains("Durable Object"), "internals in the answer: {}", r.body);
        assert_eq!(t.logs.len(), 1);
        assert!(t.logs[0].contains("Durable Object is overloaded"));
        let t = host.run("GET", "/stat.json", &[]);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(503));
        assert_eq!(t.json()["error"]["code"], "key_store_unavailable");
        assert_eq!(t.logs.len(), 1);
    }

    #[test]
    fn bodies_are_bounded_the_login_form_too() {
        let mut host = Host::new(1, &[]);
        host.body = Err(BodyError::TooLarge);
        let t = host.run("POST", "/stat/login", &[]);
        assert_eq!(t.body_limits, [MAX_LOGIN_BODY_BYTES]);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(413));
        let t = host.run("POST", "/stat/login", &[("content-length", "70000")]);
        assert!(t.body_limits.is_empty(), "a declared length over the limit is refused unread");
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(413));
        let t = generate(&mut host);
        assert_eq!(t.body_limits, [MAX_BODY_BYTES]);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(413));
        assert!(t.sent.is_empty());
        host.body = Err(BodyError::Broken("the client went away".into()));
        assert_eq!(generate(&mut host).response.map(|r| r.status), Some(400));
        // A GET has no body to read.
        host.body = Ok(Vec::new());
        let t = host.run("GET", "/v1beta/models", &[("x-goog-api-key", "client")]);
        assert!(t.body_limits.is_empty());
        assert_eq!(t.sent.len(), 1);
    }

    #[test]
    fn exhausted_pools_answer_429_with_retry_after() {
        let mut host = Host::new(2, &[Answer::Status(429, PER_MINUTE), Answer::Status(429, PER_MINUTE)]);
        let t = generate(&mut host);
        assert_eq!(t.sent.len(), 2);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(429));
        // An OpenAI body must name its model.
        let t = host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer c")]);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(400));
        assert_eq!(t.json()["error"]["type"], "invalid_request_error");
        // Both keys cool now: no upstream call, a 429 that says when.
        host.body = Ok(br#"{"model":"gemini-2.5-flash","messages":[]}"#.to_vec());
        let t = host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer c")]);
        let r = t.response.as_ref().expect("answer");
        assert_eq!(r.status, 429);
        assert!(r.header("retry-after").is_some());
        assert_eq!(t.json()["error"]["type"], "rate_limit_error");
        assert!(t.sent.is_empty(), "no upstream call when every key is cooling");
    }

    #[test]
    fn upstream_gets_exactly_one_credential_the_pool_key() {
        let c = config(None);
        let client = h(&[
            ("Authorization", "Bearer client-secret"),
            ("X-Goog-Api-Key", "client-secret"),
            ("Host", "proxy.local"),
            ("Connection", "keep-alive"),
            ("Content-Type", "application/json"),
            ("User-Agent", "google-genai-sdk/1.0"),
            ("Cookie", "gp_session=x"),
            ("X-Odd", "caf\u{e9}"),
        ]);
        let admitted = |method: &str, pq: &str| match admit::decide(&c, &Method::parse(method), pq, &client) {
            Admission::Forward(f, _) => f,
            a => panic!("{a:?}"),
        };
        let lease = crate::test_support::lease(1);
        let f = admitted("POST", "/v1/models/gemini-2.5-flash:generateContent?key=client-secret&alt=sse");
        let up = upstream_request(&c, &f, &client, &lease, BodyFrom::Read, 10);
        assert_eq!(up.path_and_query, "/v1beta/models/gemini-2.5-flash:generateContent?alt=sse");
        assert_eq!(up.method, Method::Post);
        assert_eq!(up.url(), "http://127.0.0.1:9/v1beta/models/gemini-2.5-flash:generateContent?alt=sse");
        let creds: Vec<&str> = up
            .headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n == "authorization" || *n == "x-goog-api-key")
            .collect();
        assert_eq!(creds, ["x-goog-api-key"]);
        assert!(up.headers.contains(&("x-goog-api-key".into(), lease.secret.expose().to_owned())));
        for gone in ["host", "connection", "cookie", "x-odd"] {
            assert!(up.headers.iter().all(|(n, _)| n != gone), "{gone}");
        }
        assert!(!format!("{up:?}").contains(lease.secret.expose()));
        assert!(!format!("{up:?}").contains("alt=sse"));

        let mut f = admitted("POST", "/v1/chat/completions");
        f.bind_body(br#"{"model":"gemini-2.5-flash"}"#).expect("body");
        let up = upstream_request(&c, &f, &client, &lease, BodyFrom::Read, 28);
        assert_eq!(up.path_and_query, "/v1beta/openai/chat/completions");
        assert!(up.headers.contains(&("authorization".into(), format!("Bearer {}", lease.secret.expose()))));
        assert!(up.headers.iter().all(|(n, _)| n != "x-goog-api-key"));
        let f = admitted("GET", "/v1/models");
        let up = upstream_request(&c, &f, &[], &lease, BodyFrom::Read, 0);
        assert_eq!((up.method, up.path_and_query.as_str()), (Method::Get, "/v1beta/models"));
        assert!(up.headers.iter().all(|(n, _)| n != "content-length"));
    }

    #[test]
    fn the_admin_checks_keys_through_the_exchange() {
        const INVALID: &str = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
        let mut host = Host::new(2, &[Answer::Status(200, r#"{"models":[]}"#), Answer::Status(400, INVALID)]);
        host.cfg = crate::test_support::config_with(None, Some("admin-key-0123456789"));
        host.body = Ok(b"{}".to_vec());
        let admin = [("authorization", "Bearer admin-key-0123456789")];
        let t = host.run("POST", "/admin/keys/check", &admin);
        assert_eq!(t.sent.len(), 2);
        assert!(t.sent.iter().all(|(_, r)| r.method == Method::Get && r.path_and_query.starts_with("/v1beta/models")));
        let v = t.json();
        let statuses: Vec<&str> =
            v["checked"].as_array().expect("checked").iter().filter_map(|c| c["status"].as_str()).collect();
        assert_eq!(statuses, ["works", "invalid"]);
        let s = host.pool.snapshot(UnixMillis(0));
        assert!(s.keys[1].disabled.is_some() && s.keys[0].disabled.is_none());
        // The answer never shows a secret.
        assert!(!t.response.as_ref().expect("answered").body.contains("AIzaSy"));
        // A wrong key, and the admin API off.
        let t = host.run("GET", "/admin/keys", &[("authorization", "Bearer wrong")]);
        assert_eq!(t.response.map(|r| r.status), Some(401));
        host.cfg = config(None);
        let t = host.run("GET", "/admin/keys", &admin);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(403));
        assert!(t.json()["error"]["message"].as_str().is_some_and(|m| m.contains("ADMIN_API_KEY")));
    }

    #[test]
    fn hostile_requests_end_in_one_answer_and_never_panic() {
        // A deterministic spray of hostile request lines through the whole
        // exchange.
        let pieces = [
            "/",
            "v1",
            "v1beta",
            "models",
            "openai",
            "..",
            ".",
            "%2e",
            "%2F",
            "%",
            "%%",
            ":",
            "::",
            "gemini-2.5-flash",
            ":generateContent",
            "?",
            "&",
            "key=",
            "=",
            "\\",
            "é",
            "\u{0}",
            "//",
            "stat",
            "chat",
            "completions",
            "*",
        ];
        let mut host = Host::new(2, &[]);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..3_000 {
            let mut path = String::new();
            for _ in 0..(seed % 9) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                path.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            host.body = Ok(path.clone().into_bytes());
            let method = ["GET", "POST", "DELETE", "OPTIONS", ""][round % 5];
            let t = host.run(method, &path, &[("x-goog-api-key", "k"), ("content-length", "12")]);
            assert!(t.response.is_some() || t.streamed.is_some(), "{method} {path:?} got no answer");
            assert!(t.logs.is_empty(), "{method} {path:?}: {:?}", t.logs);
        }
    }

    #[test]
    fn an_event_out_of_turn_is_a_500_for_the_caller_and_a_log_line() {
        let mut ex =
            Exchange::new(Arc::new(config(None)), Method::Get, "/v1beta/models".into(), h(&[("x-goog-api-key", "k")]));
        assert!(matches!(ex.resume(Event::Start), Step::Acquire { .. }));
        assert!(matches!(ex.resume(Event::ErrorBody(Vec::new())), Step::Log(l) if l.contains("host bug")));
        match ex.resume(Event::Done) {
            Step::Respond(r) => {
                assert_eq!(r.status, 500);
                assert!(!r.body.contains("Waiting"), "internals in the answer");
            }
            s => panic!("{s:?}"),
        }
        assert_eq!(ex.resume(Event::Done), Step::Done);
        assert_eq!(ex.resume(Event::Done), Step::Done);
    }

    #[test]
    fn stats_and_reset_are_the_hosts_to_render_and_apply() {
        let mut ex = Exchange::new(Arc::new(config(None)), Method::Get, "/stat.json".into(), Vec::new());
        // An open proxy asks the key store whether it is still open.
        assert_eq!(ex.resume(Event::Start), Step::Admin(AdminOp::Open));
        let open = AdminAnswer { status: 200, body: r#"{"open":true}"#.into(), leases: Vec::new() };
        assert_eq!(ex.resume(Event::Admin(open)), Step::Stats(StatsView::Json));
        assert_eq!(ex.resume(Event::Done), Step::Done);
        assert!(ex.answered());
        let mut ex = Exchange::new(
            Arc::new(config(None)),
            Method::Post,
            "/stat/reset".into(),
            h(&[("authorization", "Bearer k")]),
        );
        assert_eq!(ex.resume(Event::Start), Step::Admin(AdminOp::Open));
        let open = AdminAnswer { status: 200, body: r#"{"open":true}"#.into(), leases: Vec::new() };
        assert_eq!(ex.resume(Event::Admin(open)), Step::Reset);
        assert!(matches!(ex.resume(Event::Done), Step::Respond(r) if r.status == 200));
        assert_eq!(ex.resume(Event::Done), Step::Done);
    }

    #[test]
    fn the_key_store_admits_client_keys_with_their_models_and_quotas() {
        use crate::wire::keystore::ClientSettings;
        let mut host = Host::new(2, &[]);
        host.cfg = config(Some("proxy-key-123456"));
        let now = UnixMillis(1_800_000_000_000);
        let settings = |name: &str, models: Option<Vec<String>>, requests| ClientSettings {
            name: Some(name.into()),
            models,
            daily_requests: Some(requests),
            daily_tokens: None,
        };
        let alpha = host.pool.clients_mut().create("gpc-alpha-0123456789", settings("alpha", None, Some(1)), now);
        let alpha = alpha.expect("alpha");
        let beta = settings("beta", Some(vec!["gemini-2.5-pro".into()]), None);
        host.pool.clients_mut().create("gpc-beta-0123456789", beta, now).expect("beta");
        let usage = TokenUsage { prompt: 5, output: 7, cached: 1, thinking: 2 };
        host.upstream = [Answer::Stream(Ok(Some(usage)))].into_iter().collect();
        let path = "/v1beta/models/gemini-2.5-flash:generateContent";
        let t = host.run("POST", path, &[("x-goog-api-key", "gpc-alpha-0123456789")]);
        assert_eq!(t.streamed.as_ref().map(|(s, _)| *s), Some(200));
        assert_eq!(t.reports[0].client.as_deref(), Some(alpha.id.as_str()), "the last report names the client");
        assert_eq!(host.pool.clients().today(&alpha.id, now), (1, 14));
        // Its second request of the day is over its quota: a 429 in its
        // dialect, before any key is used.
        host.body = Ok(br#"{"model":"gemini-2.5-flash","messages":[]}"#.to_vec());
        let t = host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer gpc-alpha-0123456789")]);
        let r = t.response.as_ref().expect("an answer");
        assert_eq!(r.status, 429);
        assert!(r.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)));
        let v = t.json();
        assert_eq!(v["error"]["code"], "client_quota_exceeded");
        let message = v["error"]["message"].as_str().expect("message");
        assert!(
            message.contains("alpha") && message.contains("quota of 1 requests") && message.contains("resets at"),
            "{message}"
        );
        assert!(t.sent.is_empty() && t.reports.is_empty());
        // A reset of the pool's marks and counters leaves the client's count.
        host.pool.reset_all();
        let t = host.run("POST", "/v1/chat/completions", &[("authorization", "Bearer gpc-alpha-0123456789")]);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(429), "a reset wipes no quota");
        // A model the client may not use: a 403; an unknown key: a 401.
        host.body = Ok(br#"{"contents":[]}"#.to_vec());
        let t = host.run("POST", path, &[("x-goog-api-key", "gpc-beta-0123456789")]);
        assert_eq!((t.response.as_ref().map(|r| r.status), t.sent.len()), (Some(403), 0));
        assert_eq!(t.json()["error"]["status"], "PERMISSION_DENIED");
        let t = host.run("POST", path, &[("x-goog-api-key", "gpc-nobody")]);
        assert_eq!((t.response.as_ref().map(|r| r.status), t.sent.len()), (Some(401), 0));
        // The proxy key is no client's and has no quota.
        let t = host.run("POST", path, &[("x-goog-api-key", "proxy-key-123456")]);
        assert_eq!(t.streamed.as_ref().map(|(s, _)| *s), Some(200));
        assert_eq!(t.reports[0].client, None);
    }

    const LEAKED: &str = r#"{"error":{"code":403,"message":"Your API key was reported as leaked. Please use another API key.","status":"PERMISSION_DENIED"}}"#;
    const UNKNOWN_FIELD: &str = r#"{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"consumer_suspended\": Cannot find field.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"description":"Unknown name \"consumer_suspended\""}]}]}}"#;

    fn disabled_keys(host: &Host) -> usize {
        let snapshot = host.pool.snapshot(UnixMillis(1_800_000_000_000));
        snapshot.keys.iter().filter(|k| k.disabled.is_some()).count()
    }

    #[test]
    fn the_callers_words_in_googles_answer_never_disable_a_key() {
        let mut host = Host::new(3, &[Answer::Status(400, UNKNOWN_FIELD)]);
        let t = generate(&mut host);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(400));
        assert_eq!(t.sent.len(), 1, "no retry, no check");
        assert_eq!(t.reports[0].outcome, Outcome::ClientError { status: 400 });
        // A listing relays Google's answer to its query, and moves on to no
        // other key.
        host.upstream = [Answer::Status(400, UNKNOWN_FIELD)].into_iter().collect();
        let t = host.run("GET", "/v1beta/files?consumer_suspended=1", &[("x-goog-api-key", "client")]);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(400));
        assert!(t.json()["error"]["message"].as_str().is_some_and(|m| m.contains("consumer_suspended")));
        assert_eq!(t.sent.len(), 1);
        assert_eq!(disabled_keys(&host), 0);
    }

    #[test]
    fn a_suspect_key_is_checked_alone_and_disabled_only_when_refused_again() {
        // Leaked: refused again by its check, so out; the next key serves.
        let mut host = Host::new(3, &[Answer::Status(403, LEAKED), Answer::Status(403, LEAKED)]);
        let t = generate(&mut host);
        assert_eq!(t.streamed.as_ref().map(|(s, _)| *s), Some(200));
        assert_eq!(t.sent.len(), 3);
        assert_eq!(t.sent[1].0, t.sent[0].0, "the check is the suspect key's");
        assert!(t.sent[1].1.path_and_query.ends_with("/models?pageSize=1"), "{:?}", t.sent[1].1.path_and_query);
        assert_eq!(t.sent[1].1.method, Method::Get);
        assert!(t.sent[1].1.headers.iter().all(|(n, _)| n == "x-goog-api-key"), "nothing of the caller's");
        assert!(matches!(&t.settled[0].outcome, Outcome::KeyRejected { reason } if reason.contains("leaked")));
        assert_eq!(disabled_keys(&host), 1);
        // The caller's own 403: the key works alone, so Google's answer is
        // relayed and the key left alone.
        let denied = r#"{"error":{"code":403,"message":"You do not have permission to access the tuned model","status":"PERMISSION_DENIED"}}"#;
        for check in [Answer::Status(200, "{}"), Answer::Unreachable, Answer::Status(429, PER_MINUTE)] {
            host.upstream = [Answer::Status(403, denied), check].into_iter().collect();
            let t = generate(&mut host);
            assert_eq!(t.response.as_ref().map(|r| r.status), Some(403));
            assert_eq!(t.sent.len(), 2);
            assert_eq!(t.reports.last().map(|r| &r.outcome), Some(&Outcome::ClientError { status: 403 }));
            assert_eq!(disabled_keys(&host), 1);
        }
        // A bare 401 is checked too.
        host.upstream = [Answer::Status(401, ""), Answer::Status(200, "{}")].into_iter().collect();
        let t = generate(&mut host);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(401));
        assert_eq!(disabled_keys(&host), 1);
        // In a listing, a key refused again is skipped; the others list.
        let mut host = Host::new(2, &[Answer::Status(403, LEAKED), Answer::Status(403, LEAKED)]);
        let t = host.run("GET", "/v1beta/files", &[("x-goog-api-key", "client")]);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(200));
        assert_eq!(t.sent.len(), 3, "the page, the check, the other key's page");
        assert_eq!(disabled_keys(&host), 1);
    }

    #[test]
    fn an_open_proxy_serves_no_page_of_another_origin_and_no_foreign_host() {
        let mut host = Host::new(2, &[]);
        let path = "/v1beta/models/gemini-2.5-flash:generateContent";
        for (headers, status) in [
            (&[("origin", "https://evil.example")][..], 403),
            (&[("host", "rebound.evil.example:8787")][..], 421),
            (&[("sec-fetch-site", "cross-site")][..], 403),
        ] {
            let t = host.run("POST", path, headers);
            let r = t.response.as_ref().expect("refused");
            assert_eq!(r.status, status, "{headers:?}");
            assert!(r.header("access-control-allow-origin").is_none());
            assert!(t.sent.is_empty(), "nothing upstream");
            let t = host.run("GET", "/v1beta/files", headers);
            assert_eq!(t.response.as_ref().map(|r| r.status), Some(status), "a listing, {headers:?}");
            assert!(t.sent.is_empty());
        }
        let preflight = [("origin", "https://evil.example"), ("access-control-request-method", "POST")];
        let t = host.run("OPTIONS", path, &preflight);
        assert!(t.response.as_ref().expect("answered").header("access-control-allow-origin").is_none());
        // The proxy's own page, and a tool, are served; without a grant for
        // any other origin.
        let t = host.run("POST", path, &[("host", "127.0.0.1:8787"), ("origin", "http://127.0.0.1:8787")]);
        assert_eq!(t.streamed.as_ref().map(|(s, _)| *s), Some(200));
        // A listed origin is served and granted.
        host.cfg.cors_origins = vec!["https://chat.example".into()];
        let t = host.run("POST", path, &[("origin", "https://chat.example")]);
        let (status, headers) = t.streamed.expect("streamed");
        assert_eq!(status, 200);
        assert!(headers.contains(&("access-control-allow-origin".into(), "https://chat.example".into())));
        let t = host.run("OPTIONS", path, &[("origin", "https://chat.example")]);
        assert_eq!(t.response.expect("preflight").header("access-control-allow-origin"), Some("https://chat.example"));
    }

    #[test]
    fn once_a_client_key_exists_the_statistics_need_the_admin_key_and_pages_get_cors() {
        use crate::wire::keystore::ClientSettings;
        let mut host = Host::new(2, &[]);
        host.cfg = crate::test_support::config_with(None, Some("admin-key-0123456789"));
        let t = host.run("GET", "/stat.json", &[]);
        assert!(t.response.is_none(), "open: the statistics, rendered by the host");
        let settings =
            ClientSettings { name: Some("c".into()), models: None, daily_requests: None, daily_tokens: None };
        let now = UnixMillis(1_800_000_000_000);
        host.pool.clients_mut().create("gpc-client-0123456789", settings, now).expect("client");
        for path in ["/stat.json", "/metrics", "/stat"] {
            for headers in [&[][..], &[("x-goog-api-key", "gpc-client-0123456789")][..]] {
                let t = host.run("GET", path, headers);
                assert_eq!(t.response.as_ref().map(|r| r.status), Some(401), "{path} {headers:?}");
            }
            let t = host.run("GET", path, &[("x-goog-api-key", "admin-key-0123456789")]);
            assert!(t.response.is_none(), "{path}: the statistics, rendered by the host");
        }
        let t = host.run("POST", "/stat/reset", &[("x-gemini-proxy-action", "reset")]);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(401));
        // A page of any origin with a client key is served, with CORS.
        let path = "/v1beta/models/gemini-2.5-flash:generateContent";
        let t = host.run("OPTIONS", path, &[("origin", "https://chat.example")]);
        assert_eq!(t.response.expect("preflight").header("access-control-allow-origin"), Some("*"));
        let t =
            host.run("POST", path, &[("origin", "https://chat.example"), ("x-goog-api-key", "gpc-client-0123456789")]);
        let (_, headers) = t.streamed.expect("served");
        assert!(headers.contains(&("access-control-allow-origin".into(), "*".into())));
    }

    #[test]
    fn a_batch_names_its_output_file_and_an_owners_404_forgets_only_what_it_concerns() {
        const DONE: &str = r#"{"name":"batches/b-1","done":true,"metadata":{"@type":"type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch","output":{"responsesFile":"files/batch-out-1"}},"response":{"responsesFile":"files/batch-out-1"}}"#;
        let mut host = Host::new(3, &[Answer::Status(200, DONE)]);
        let t = host.run("GET", "/v1beta/batches/b-1", &[("x-goog-api-key", "client")]);
        let names: Vec<&str> = t.reports[0].owned.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["batches/b-1", "files/batch-out-1"]);
        let owner = t.keys_sent()[0].clone();
        let t = host.run("GET", "/v1beta/files/batch-out-1", &[("x-goog-api-key", "client")]);
        assert_eq!(t.keys_sent(), std::slice::from_ref(&owner), "straight to its owner");
        // A prompt naming the file and the batch: the owner's 404 names the
        // file, which alone is forgotten.
        let gone = r#"{"error":{"code":404,"message":"File batch-out-1 was not found.","status":"NOT_FOUND"}}"#;
        host.upstream = [Answer::Status(404, gone)].into_iter().collect();
        host.body = Ok(
            br#"{"contents":[{"parts":[{"fileData":{"fileUri":"files/batch-out-1"}}]}],"cachedContent":"batches/b-1"}"#
                .to_vec(),
        );
        let t = generate(&mut host);
        assert_eq!(t.reports[0].deleted, ["files/batch-out-1"]);
        // Names in a request body are never registered.
        host.body = Ok(br#"{"contents":[{"parts":[{"fileData":{"fileUri":"files/someone-elses"}}]}]}"#.to_vec());
        host.upstream = [Answer::Status(200, "{}")].into_iter().collect();
        let t = generate(&mut host);
        assert!(t.reports[0].owned.is_empty(), "{:?}", t.reports[0].owned);
    }

    #[test]
    fn clients_see_only_their_own_resources() {
        use crate::wire::keystore::ClientSettings;
        let mut host = Host::new(2, &[]);
        host.cfg = config(Some("proxy-key-123456"));
        let now = UnixMillis(1_800_000_000_000);
        let settings = |name: &str| ClientSettings { name: Some(name.into()), ..ClientSettings::default() };
        let alice = host.pool.clients_mut().create("gpc-alice-0123456789", settings("alice"), now).expect("alice");
        host.pool.clients_mut().create("gpc-bob-0123456789", settings("bob"), now).expect("bob");
        let (a, b) =
            (&[("x-goog-api-key", "gpc-alice-0123456789")][..], &[("x-goog-api-key", "gpc-bob-0123456789")][..]);
        const CACHE: &str =
            r#"{"name":"cachedContents/c-1","model":"models/gemini-2.5-flash","expireTime":"2027-02-01T00:00:00Z"}"#;
        host.upstream = [Answer::Status(200, CACHE)].into_iter().collect();
        host.body = Ok(br#"{"model":"models/gemini-2.5-flash","contents":[]}"#.to_vec());
        let t = host.run("POST", "/v1beta/cachedContents", a);
        assert_eq!(t.reports[0].client.as_deref(), Some(alice.id.as_str()));

        // Bob cannot read, use, delete or cancel it: a 404, nothing sent.
        host.body = Ok(br#"{"cachedContent":"cachedContents/c-1","contents":[]}"#.to_vec());
        for (method, path) in [
            ("GET", "/v1beta/cachedContents/c-1"),
            ("DELETE", "/v1beta/cachedContents/c-1"),
            ("PATCH", "/v1beta/cachedContents/c-1"),
            ("POST", "/v1beta/models/gemini-2.5-flash:generateContent"),
            ("GET", "/v1beta/files/never-made"),
        ] {
            let t = host.run(method, path, b);
            assert!(t.sent.is_empty(), "{method} {path}");
            let r = t.response.as_ref().expect("refused");
            assert_eq!(r.status, 404, "{method} {path}");
            assert_eq!(t.json()["error"]["status"], "NOT_FOUND");
        }
        // Alice can.
        host.upstream = [Answer::Status(200, CACHE)].into_iter().collect();
        assert_eq!(host.run("GET", "/v1beta/cachedContents/c-1", a).sent.len(), 1);

        // Listings: each client sees its own; the proxy key, everything.
        const PAGE: &str = r#"{"cachedContents":[{"name":"cachedContents/c-1"},{"name":"cachedContents/other"}]}"#;
        let listed = |host: &mut Host, headers: &[(&str, &str)]| {
            host.upstream = [Answer::Status(200, PAGE), Answer::Status(200, "{}")].into_iter().collect();
            let t = host.run("GET", "/v1beta/cachedContents", headers);
            let v = t.json();
            let items = v["cachedContents"].as_array().cloned().unwrap_or_default();
            items.iter().map(|i| i["name"].as_str().unwrap_or_default().to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(listed(&mut host, a), ["cachedContents/c-1"]);
        assert!(listed(&mut host, b).is_empty());
        let all = listed(&mut host, &[("x-goog-api-key", "proxy-key-123456")]);
        assert_eq!(all, ["cachedContents/c-1", "cachedContents/other"]);
        // What a listing found is the proxy's, not the lister's.
        assert!(!host.pool.names_of(&alice.id, "cachedContents/", now).contains(&"cachedContents/other".to_owned()));
        // An OpenAI-style list is read whole and kept to the client's own.
        const FILES: &str = r#"{"object":"list","data":[{"object":"file","id":"files/theirs","filename":"x"}]}"#;
        host.upstream = [Answer::Status(200, FILES)].into_iter().collect();
        let t = host.run("GET", "/v1/files", &[("authorization", "Bearer gpc-bob-0123456789")]);
        assert_eq!(t.json()["data"], serde_json::json!([]));
        assert_eq!(t.json()["object"], "list");
        // A list below a model names no resource: kept to the client's own.
        const OPS: &str = r#"{"operations":[{"name":"models/veo-3/operations/theirs"}]}"#;
        host.upstream = [Answer::Status(200, OPS)].into_iter().collect();
        let t = host.run("GET", "/v1beta/models/veo-3/operations", b);
        assert_eq!(t.json()["operations"], serde_json::json!([]));
        // More names than are checked: refused to a client, not to the proxy key.
        let lease = host.pool.acquire("gemini-2.5-flash", &[], now).expect("a key");
        let mut made = Report { client: Some(alice.id.clone()), ..Report::of(&lease, "(files)", Outcome::Success) };
        for i in 0..names::MAX_NAMED {
            made.own(&format!("files/f{i}"), None);
        }
        host.pool.apply(&made, now);
        // Alice's 64, then one of no one's past the scan's bound.
        let many: Vec<String> = (0..=names::MAX_NAMED).map(|i| format!(r#"{{"fileUri":"files/f{i}"}}"#)).collect();
        host.body = Ok(format!(r#"{{"contents":[{{"parts":[{}]}}]}}"#, many.join(",")).into_bytes());
        let t = host.run("POST", "/v1beta/models/gemini-2.5-flash:generateContent", a);
        assert_eq!(t.response.as_ref().map(|r| r.status), Some(400));
        assert!(t.sent.is_empty());
    }

    #[test]
    fn a_batchs_and_an_interactions_tokens_count_once_however_often_they_are_read() {
        use crate::wire::keystore::ClientSettings;
        let mut host = Host::new(1, &[]);
        host.cfg = config(Some("proxy-key-123456"));
        let now = UnixMillis(1_800_000_000_000);
        let settings = ClientSettings { name: Some("c".into()), ..ClientSettings::default() };
        let c = host.pool.clients_mut().create("gpc-batcher-0123456789", settings, now).expect("client");
        let me = &[("x-goog-api-key", "gpc-batcher-0123456789")][..];
        const MADE: &str = r#"{"name":"batches/b-9","metadata":{"state":"BATCH_STATE_PENDING"}}"#;
        const DONE: &str = r#"{"name":"batches/b-9","done":true,"metadata":{"output":{"inlinedResponses":{"inlinedResponses":[
            {"response":{"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5}}},
            {"response":{"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":7,"thoughtsTokenCount":3}}}]}}}}"#;
        host.upstream = [Answer::Status(200, MADE)].into_iter().collect();
        host.body = Ok(br#"{"batch":{"inputConfig":{"requests":{"requests":[]}}}}"#.to_vec());
        host.run("POST", "/v1beta/models/gemini-2.5-flash:batchGenerateContent", me);
        for _ in 0..3 {
            host.upstream = [Answer::Status(200, DONE)].into_iter().collect();
            let t = host.run("GET", "/v1beta/batches/b-9", me);
            assert_eq!(t.reports[0].usage_of.as_deref(), Some("batches/b-9"));
        }
        assert_eq!(host.pool.clients().today(&c.id, now), (4, 45), "4 requests; 10+5+20+7+3 tokens, once");
        const IT: &str =
            r#"{"id":"v1_it-4","status":"completed","usage":{"total_input_tokens":8,"total_output_tokens":2}}"#;
        host.upstream = [Answer::Status(200, IT)].into_iter().collect();
        host.body = Ok(br#"{"model":"gemini-2.5-flash","input":"hi"}"#.to_vec());
        host.run("POST", "/v1beta/interactions", me);
        host.upstream = [Answer::Status(200, IT)].into_iter().collect();
        host.run("GET", "/v1beta/interactions/v1_it-4", me);
        assert_eq!(host.pool.clients().today(&c.id, now), (6, 55));
    }
}
