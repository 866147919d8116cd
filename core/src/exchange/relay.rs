//! The relay: a request sent upstream with one key after another until one
//! answers (at most [`MAX_ATTEMPTS`] keys, never one twice), each attempt
//! reported; a resource's request sent to the key that owns it (others
//! asked for one no key is known to own); a key whose refusal may be the
//! caller's doing checked alone before it is held against it; a client's
//! listing shown only its own.

use super::listing::Merged;
use super::outgoing::{UPLOAD_CONTROL_URL, UPLOAD_URL, relayed_headers};
use super::{
    BodyError, BodyFrom, COMMITTED_WAIT_MS, Event, Exchange, KeepAlive, MAX_ATTEMPTS, MAX_ERROR_BODY_BYTES, MAX_PROBES,
    Phase, Pipe, Step, upstream_request,
};
use crate::exchange::admin::{CHECK_BODY_BYTES, check_request};
use crate::exchange::listing::{self, Merge};
use crate::google::errors::{self, Confirmation, Verdict};
use crate::google::names;
use crate::google::stream::{HEAD_BYTES, Seen};
use crate::request::admit;
use crate::request::headers;
use crate::request::route::{Forward, MAX_BODY_BYTES, Op, PIPED_UPLOAD_ABOVE};
use crate::translate::recall;
use crate::translate::rename::Rename;
use crate::translate::{self, Reply, Streamer};
use crate::wire::error::ProxyError;
use crate::wire::http::{Dialect, Headers, Method, Response};
use crate::wire::keystore::{AdminAnswer, AdminOp, Claim, Lease, Outcome, Owned, Report, Unavailable};
use crate::wire::resource::{Kind, Resource};
use crate::wire::secret::{self, KeyId};
use std::collections::HashSet;

/// The keys one request tried, and what happened.
#[derive(Debug, Default)]
pub(super) struct Attempts {
    pub(super) tried: Vec<KeyId>,
    last_failure: Option<Outcome>,
    all_rate_limited: bool,
    all_timed_out: bool,
}

impl Attempts {
    fn new() -> Self {
        Self { tried: Vec::new(), last_failure: None, all_rate_limited: true, all_timed_out: true }
    }

    /// Records a failed attempt that will be retried; returns its report.
    pub(super) fn failed(&mut self, lease: &Lease, model: &str, outcome: Outcome, timed_out: bool) -> Report {
        self.all_rate_limited &= matches!(outcome, Outcome::RateLimited(_));
        self.all_timed_out &= timed_out;
        self.tried.push(lease.id.clone());
        self.last_failure = Some(outcome.clone());
        Report::of(lease, model, outcome)
    }

    /// Records an attempt that never reached the upstream (its outbound
    /// proxy failed): tried, and told if nothing else is, but no report:
    /// the key is not held to it.
    pub(super) fn unreached(&mut self, lease: &Lease) {
        self.all_rate_limited = false;
        self.all_timed_out = false;
        self.tried.push(lease.id.clone());
        let reason = crate::wire::proxy::PROXY_FAILED_TO_CALLER.to_owned();
        self.last_failure = Some(Outcome::TransportError { reason });
    }

    /// The error to answer with once no further attempt is possible:
    /// `unavailable` is why the pool had no key (or `None` when the
    /// attempt limit was hit).
    pub(super) fn give_up(&self, model: &str, unavailable: Option<Unavailable>) -> ProxyError {
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

/// The headers of a translated answer: its content type and the CORS
/// headers every API answer carries (then narrowed by the request's grant).
fn translated_headers(reply: &Reply, stream: bool) -> Vec<(String, String)> {
    let cors = crate::wire::http::CORS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    std::iter::once(("content-type".to_owned(), reply.content_type(stream).to_owned())).chain(cors).collect()
}

/// The start of the names a listing of `fwd`'s lists (`files/`,
/// `models/veo-3/operations/`), when it is a `GET` of a collection that
/// names no resource (`in_path`: one named was checked to be the asker's,
/// and what is below it is its too).
pub(super) fn listed_prefix(fwd: &Forward, in_path: Option<&Resource>) -> Option<String> {
    let path = fwd.upstream_path.strip_prefix('/')?;
    let last = path.rsplit('/').next().unwrap_or_default();
    let collection = !last.is_empty() && last.bytes().all(|b| b.is_ascii_alphanumeric());
    (fwd.op == Op::Resource && fwd.method == Method::Get && collection && in_path.is_none()).then(|| format!("{path}/"))
}

/// A request being relayed upstream: what holds from one attempt to the
/// next.
#[derive(Debug)]
pub(super) struct Relay {
    pub(super) fwd: Forward,
    /// Who the request claims to be, until the first acquire admits it.
    pub(super) claim: Option<Claim>,
    pub(super) attempts: Attempts,
    /// The resources the request names ([`names`]).
    resources: Vec<Resource>,
    /// The one its path names, if any (also in `resources`).
    in_path: Option<Resource>,
    /// Google's 403 or 404 for a resource no key was known to own, kept
    /// while other keys are asked: the answer if none can see it.
    not_seen: Option<Response>,
    /// The declared length of an upload body piped from the client
    /// ([`BodyFrom::Client`]): it can be sent once, so to one key.
    piped: Option<u64>,
    /// When a client lists a collection: the names of its own resources
    /// there, the only items it is shown.
    pub(super) own: Option<HashSet<String>>,
    /// Whether the body names more resources than are checked
    /// ([`names::MAX_NAMED`]): refused to a client, which may name only
    /// its own.
    names_more: bool,
    /// How the answer goes back to a client of an API Google does not
    /// offer ([`translate`]).
    reply: Option<Reply>,
    /// A chat request's tool calls that came back unsigned: their
    /// signatures are asked of the key store before it goes ([`recall`]).
    recall: Vec<String>,
    /// Whether the answer (a chat completion with tools) is read for the
    /// signatures of its calls, which the key store keeps.
    watch: bool,
}

impl Relay {
    pub(super) fn model(&self) -> &str {
        self.fwd.model()
    }
}

/// An upstream answer's head.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) status: u16,
    pub(super) headers: Headers,
}

/// What a relayed request waits for, with what it waits with.
#[derive(Debug)]
pub(super) enum Awaiting {
    /// The request body.
    Body,
    /// The admin's model aliases, before the body (kept here) is bound.
    Aliases(Vec<u8>),
    /// The signatures of the unsigned tool calls a chat request sends
    /// back, before it goes with this key.
    Recall(Lease),
    /// A key.
    Lease,
    /// The head of this key's answer.
    Head(Lease),
    /// The body of this key's answer, read whole (an error, an upload's
    /// start, a client's listing).
    Answer(Lease, Head),
    /// The end of this key's answer, streamed to the client.
    Stream {
        lease: Lease,
        status: u16,
        /// Whether the answer ends the upload it continued (its status is
        /// `final`): the upload is forgotten, the file it made remembered.
        upload_over: bool,
    },
    /// A listing client's own names, and what goes on once they are known.
    Names(Pending),
    /// The head of a suspect key's check.
    ConfirmHead(Box<Suspect>),
    /// The body of a suspect key's check.
    ConfirmBody(Box<Suspect>),
    /// The keys of a merged listing.
    Walk(Box<Merged>),
    /// The head of a key's page of a merged listing.
    ListHead(Box<Merged>, Lease),
    /// The body of that page.
    ListPage(Box<Merged>, Lease, Head),
}

impl Awaiting {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::Body => "the request body",
            Self::Aliases(_) => "the model aliases",
            Self::Recall(_) => "the tool calls' signatures",
            Self::Lease => "a key",
            Self::Head(_) => "an upstream head",
            Self::Answer(..) => "an upstream answer's body",
            Self::Stream { .. } => "a stream's end",
            Self::Names(_) => "a client's names",
            Self::ConfirmHead(_) => "a suspect key's check",
            Self::ConfirmBody(_) => "a suspect key's check's body",
            Self::Walk(_) => "the keys of a listing",
            Self::ListHead(..) => "the head of a listing's page",
            Self::ListPage(..) => "a listing's page",
        }
    }
}

/// What a client's listing does once its names are known.
#[derive(Debug)]
pub(super) enum Pending {
    /// Goes on with the keys of its first walk (a merged listing).
    Walk(Box<Merged>, Vec<Lease>),
    /// Sends the request with this key.
    Send(Lease),
}

/// A key under check ([`Verdict::Suspect`]): the answer it gave the
/// caller, its check's status, and the merged listing it was asked for, if
/// it was.
#[derive(Debug)]
pub(super) struct Suspect {
    pub(super) lease: Lease,
    pub(super) head: Head,
    pub(super) body: Vec<u8>,
    pub(super) check_status: u16,
    pub(super) merged: Option<Box<Merged>>,
}

impl Exchange {
    /// Relays `fwd`: reads its body (unless it is piped upstream), then
    /// asks for a key.
    pub(super) fn relay(&mut self, fwd: Forward, claim: Option<Claim>) -> Step {
        let has_body = fwd.method.has_body();
        // Admission refused a declared length over the limit.
        let declared = admit::declared_length(&self.headers).ok().flatten();
        let piped = declared.filter(|&n| has_body && fwd.upload && n > PIPED_UPLOAD_ABOVE);
        let relay = Box::new(Relay {
            fwd,
            claim,
            attempts: Attempts::new(),
            resources: Vec::new(),
            in_path: None,
            not_seen: None,
            piped,
            own: None,
            names_more: false,
            reply: None,
            recall: Vec::new(),
            watch: false,
        });
        if !has_body || piped.is_some() {
            return self.bind(relay, Vec::new());
        }
        self.phase = Phase::Relay(relay, Awaiting::Body);
        Step::ReadBody { limit: MAX_BODY_BYTES, declared }
    }

    pub(super) fn relay_event(&mut self, relay: Box<Relay>, awaiting: Awaiting, event: Event) -> Step {
        match (awaiting, event) {
            (Awaiting::Body, Event::Body(body)) => self.bind(relay, body),
            (Awaiting::Body, Event::BodyFailed(e)) => self.body_failed(e, MAX_BODY_BYTES),
            (Awaiting::Lease, Event::Acquired(Ok(lease))) => self.send(relay, lease),
            (Awaiting::Lease, Event::Acquired(Err(unavailable))) => self.give_up(relay, None, Some(unavailable)),
            (Awaiting::Aliases(body), Event::Admin(answer)) => {
                self.aliases = Some(self.cfg.model_aliases.under(&runtime_aliases(&answer)));
                self.bind(relay, body)
            }
            (
                Awaiting::Aliases(_) | Awaiting::Lease | Awaiting::Walk(_) | Awaiting::Names(_),
                Event::StoreFailed(why),
            ) => self.store_failed(&why),
            (Awaiting::Recall(lease), Event::Admin(answer)) => self.recalled(relay, lease, Some(&answer)),
            (Awaiting::Recall(lease), Event::StoreFailed(why)) => {
                let log = self.log(format!("the key store failed to recall tool call signatures: {why}"));
                self.queue.push_back(log);
                self.recalled(relay, lease, None)
            }
            (Awaiting::Head(lease), Event::Head { status, headers }) => {
                self.head(relay, lease, Head { status, headers })
            }
            (Awaiting::Head(lease), Event::SendFailed { reason, timed_out })
            | (Awaiting::Stream { lease, .. }, Event::StreamFailedEarly { reason, timed_out }) => {
                self.transport_failed(relay, lease, &reason, timed_out)
            }
            (Awaiting::Head(lease), Event::BodyFailed(e)) => self.piped_body_failed(&relay, &lease, e),
            (Awaiting::Head(lease), Event::Waiting) => self.keep_alive(relay, lease),
            (Awaiting::Answer(lease, head), Event::ErrorBody(body)) => self.classify(relay, lease, head, &body),
            (Awaiting::Stream { lease, status, upload_over }, Event::Streamed(result)) => {
                self.streamed(&relay, &lease, status, upload_over, result)
            }
            (Awaiting::Names(pending), Event::Admin(answer)) => self.names(relay, pending, &answer),
            (Awaiting::ConfirmHead(mut suspect), Event::Head { status, .. }) => {
                suspect.check_status = status;
                self.phase = Phase::Relay(relay, Awaiting::ConfirmBody(suspect));
                Step::ReadErrorBody { limit: CHECK_BODY_BYTES }
            }
            (Awaiting::ConfirmHead(suspect), Event::SendFailed { .. }) => self.confirmed(relay, *suspect, None),
            (Awaiting::ConfirmBody(suspect), Event::ErrorBody(body)) => self.confirmed(relay, *suspect, Some(&body)),
            (Awaiting::Walk(merged), Event::Admin(answer)) => self.walked(relay, merged, answer),
            (Awaiting::ListHead(merged, lease), Event::Head { status, headers }) => {
                self.phase = Phase::Relay(relay, Awaiting::ListPage(merged, lease, Head { status, headers }));
                Step::ReadErrorBody { limit: listing::MAX_PAGE_BYTES }
            }
            (Awaiting::ListHead(merged, lease), Event::SendFailed { reason, timed_out }) => {
                self.list_transport_failed(relay, merged.reports, &lease, &reason, timed_out)
            }
            // A listing has no body: a host's mistake, answered as a failed
            // call, with every report of the keys asked so far.
            (Awaiting::ListHead(merged, lease), Event::BodyFailed(_)) => {
                self.list_transport_failed(relay, merged.reports, &lease, "the request could not be sent", false)
            }
            (Awaiting::ListPage(merged, lease, head), Event::ErrorBody(body)) => {
                self.listed(relay, merged, lease, head, &body)
            }
            (awaiting, event) => self.host_bug(awaiting.name(), &event),
        }
    }

    fn bind(&mut self, mut relay: Box<Relay>, mut body: Vec<u8>) -> Step {
        // A call that names a model first learns the admin's aliases (the
        // key store keeps them: an edit holds from the next request on).
        if self.aliases.is_none() && relay.fwd.aliasable() {
            self.phase = Phase::Relay(relay, Awaiting::Aliases(body));
            return Step::Admin(AdminOp::Aliases);
        }
        let aliases = self.aliases.as_ref().unwrap_or(&self.cfg.model_aliases);
        if let Some(foreign) = relay.fwd.foreign {
            // From here on, the Gemini call it is.
            let translated = match translate::request(foreign, &body, aliases) {
                Ok(t) => t,
                Err(e) => return self.fail(e),
            };
            let (path, query) = translated.upstream_path();
            relay.fwd.op = translated.op;
            relay.fwd.streaming = translated.streams();
            relay.fwd.model = Some(translated.model);
            relay.fwd.upstream_path = path;
            relay.fwd.upstream_query = query;
            let mut reply = translated.reply;
            if let (Reply::Responses(r), Some(now)) = (&mut reply, self.now) {
                r.created_at = now.0 / 1000;
            }
            relay.reply = Some(reply);
            let notes: Vec<Step> = translated.notes.into_iter().map(|n| self.note(n)).collect();
            self.queue.extend(notes);
            body = translated.body;
        }
        if relay.fwd.upload {
            // An upload's body is the file's bytes (or its metadata, then
            // the bytes): never read for a model or for names. A chunk
            // names its upload, in its query.
            let in_path = names::in_upstream_path(&relay.fwd.upstream_path, false);
            relay.in_path.clone_from(&in_path);
            relay.resources = in_path.into_iter().chain(names::upload_in_query(&relay.fwd.upstream_query)).collect();
        } else {
            match Merge::of(&relay.fwd) {
                Ok(Some(merge)) => return self.list(relay, merge),
                Ok(None) => {}
                Err(e) => return self.fail(e),
            }
            if let Err(e) = relay.fwd.bind_body(&body) {
                return self.fail(e);
            }
            if relay.fwd.foreign.is_none() {
                let aliases = self.aliases.as_ref().unwrap_or(&self.cfg.model_aliases);
                relay.fwd.alias(aliases, &mut body);
            }
            self.record.model = Some(relay.model().to_owned());
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
            // A chat on Google's OpenAI layer: the signatures of its tool
            // calls are kept, and put back where a client dropped them.
            if relay.fwd.op == Op::ChatCompletions && relay.fwd.foreign.is_none() {
                relay.recall = recall::missing(&body);
                relay.watch = recall::declares_tools(&body);
            }
        }
        self.body = body;
        self.next_attempt(relay, None)
    }

    /// Asks for the next key, or gives up once [`MAX_ATTEMPTS`] were made
    /// (applying the last attempt's report first).
    fn next_attempt(&mut self, mut relay: Box<Relay>, settle: Option<Report>) -> Step {
        if self.committed {
            // The client has its answer's head: what failed is its answer.
            return self.give_up(relay, settle, None);
        }
        let limit = match (relay.piped, &relay.not_seen) {
            // A piped body went with the first attempt.
            (Some(_), _) => 1,
            (None, Some(_)) => MAX_PROBES,
            (None, None) => MAX_ATTEMPTS,
        };
        if relay.attempts.tried.len() >= limit {
            return self.give_up(relay, settle, None);
        }
        let client = relay.claim.take();
        let (model, exclude, resources) =
            (relay.model().to_owned(), relay.attempts.tried.clone(), relay.resources.clone());
        self.phase = Phase::Relay(relay, Awaiting::Lease);
        Step::Acquire { model, exclude, settle, client, resources }
    }

    /// Answers with why no further attempt is possible; `settle`, the last
    /// attempt's report, ends the client's request.
    fn give_up(&mut self, mut relay: Box<Relay>, settle: Option<Report>, unavailable: Option<Unavailable>) -> Step {
        let respond = match (relay.not_seen.take(), unavailable) {
            (_, Some(Unavailable::Resource { refusal })) => {
                Step::Respond(self.error_response(&ProxyError::resource(refusal, relay.model())))
            }
            // No key that was asked could see the resource: Google's
            // answer. When keys were left unasked because they are
            // rate-limited, the caller gets the 429 and retries.
            (Some(not_seen), None | Some(Unavailable::AllTried | Unavailable::NoUsableKey { .. })) => {
                Step::Respond(not_seen)
            }
            (_, unavailable) => {
                let e = relay.attempts.give_up(relay.model(), unavailable);
                Step::Respond(self.error_response(&e))
            }
        };
        match settle {
            Some(report) => {
                let report = Report { client: self.client.clone(), ..report };
                self.emit([Step::Report(report), respond])
            }
            None => self.emit([respond]),
        }
    }

    fn send(&mut self, relay: Box<Relay>, lease: Lease) -> Step {
        let first = relay.attempts.tried.is_empty();
        if first && let Some(e) = self.web_refusal(lease.client.as_deref()) {
            return self.fail(e);
        }
        if first {
            self.client.clone_from(&lease.client);
        }
        if first && !relay.recall.is_empty() {
            let (client, ids) = (lease.client.clone(), relay.recall.clone());
            self.phase = Phase::Relay(relay, Awaiting::Recall(lease));
            return Step::Admin(AdminOp::Signatures { client, ids });
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
        if let (true, None, Some(client), Some(prefix)) = (first, &relay.own, lease.client.clone(), prefix) {
            return self.ask_names(relay, Pending::Send(lease), client, prefix);
        }
        let (from, len) = match relay.piped {
            Some(n) => (BodyFrom::Client(n), n),
            None => (BodyFrom::Read, self.body.len() as u64),
        };
        let mut request = upstream_request(&self.cfg, &relay.fwd, &self.headers, &lease, from, len);
        request.keep_alive = self.keep_alive_of(&relay);
        self.phase = Phase::Relay(relay, Awaiting::Head(lease));
        Step::Send(request)
    }

    /// Whether (and how) the host keeps the client's connection alive
    /// while `relay`'s answer is slow to come: a non-streamed generation
    /// (Gemini's, OpenAI's chat, an image's, and the translated APIs') when
    /// `NONSTREAM_KEEPALIVE_SECONDS` is set. Never a listing shown in part,
    /// nor an upload.
    fn keep_alive_of(&self, relay: &Relay) -> Option<KeepAlive> {
        let every_ms = self.cfg.timeouts.keepalive_ms;
        let slow =
            matches!(relay.fwd.op, Op::GenerateContent | Op::ChatCompletions | Op::Predict | Op::ImagesGenerations);
        let whole = !relay.fwd.streaming && !relay.fwd.upload && relay.own.is_none() && relay.piped.is_none();
        (every_ms > 0 && slow && whole && !self.answered)
            .then(|| KeepAlive { every_ms, wait_ms: self.cfg.timeouts.first_byte_ms.max(COMMITTED_WAIT_MS) })
    }

    /// The head is slow to come: the client's answer is committed (a `200`
    /// with the JSON type of its API), kept alive, and waited on.
    fn keep_alive(&mut self, relay: Box<Relay>, lease: Lease) -> Step {
        let content_type = relay.reply.as_ref().map_or("application/json; charset=UTF-8", |r| r.content_type(false));
        let cors = crate::wire::http::CORS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        let mut headers: Vec<(String, String)> =
            std::iter::once(("content-type".to_owned(), content_type.to_owned())).chain(cors).collect();
        headers.push(("cache-control".to_owned(), "no-store".to_owned()));
        self.cors(&mut headers);
        self.committed = true;
        self.answered = true;
        self.record.status = 200;
        self.phase = Phase::Relay(relay, Awaiting::Head(lease));
        Step::KeepAlive { status: 200, headers }
    }

    fn head(&mut self, relay: Box<Relay>, lease: Lease, head: Head) -> Step {
        let success = (200..300).contains(&head.status);
        // An upload's start is read whole (its body is empty), so that the
        // key store knows the upload before the client has the URL its
        // chunks go to. A client's listing is read whole, to show it only
        // its own.
        let starts_upload = relay.fwd.upload && headers::get(&head.headers, UPLOAD_URL).is_some();
        if let (true, Some(reply)) = (success, &relay.reply) {
            // A translated answer: a stream event by event, else read whole
            // and answered in the client's shape ([`Self::answer`]).
            if relay.fwd.streaming {
                let mut headers = translated_headers(reply, true);
                headers.push(("cache-control".to_owned(), "no-cache".to_owned()));
                self.cors(&mut headers);
                let (status, pipe) = (head.status, Pipe::translating(reply.streamer()));
                self.phase = Phase::Relay(relay, Awaiting::Stream { lease, status, upload_over: false });
                return Step::Stream { status, headers, pipe };
            }
            self.phase = Phase::Relay(relay, Awaiting::Answer(lease, head));
            return Step::ReadErrorBody { limit: MAX_BODY_BYTES as usize };
        }
        if success && !starts_upload && relay.own.is_none() {
            // An aliased call's answer names the model as the client asked.
            let rename = relay.fwd.asked.as_deref().map(|asked| Rename::new(relay.model(), asked));
            let mut headers = relayed_headers(&head.headers, rename.is_some(), Some(&lease));
            let upload_over = relay.fwd.upload
                && headers::get(&head.headers, "x-goog-upload-status")
                    .is_some_and(|s| matches!(s.trim(), "final" | "cancelled"));
            // An answer that may create a resource is read for its name.
            let content_type = headers::get(&head.headers, "content-type").unwrap_or_default();
            let readable = ["application/json", "text/event-stream"].iter().any(|t| content_type.starts_with(t));
            // So is a models listing, for the names Google serves.
            let listing = matches!(relay.fwd.op, Op::Resource | Op::ListModels);
            let keep = if listing && readable { HEAD_BYTES } else { 0 };
            self.cors(&mut headers);
            let status = head.status;
            let watch = relay.watch.then_some(relay.fwd.streaming);
            self.phase = Phase::Relay(relay, Awaiting::Stream { lease, status, upload_over });
            let pipe = match rename {
                Some(rename) => Pipe::translating(Streamer::Rename(rename)),
                None => Pipe::relay(keep),
            };
            let pipe = match watch {
                Some(stream) => pipe.watching(stream),
                None => pipe,
            };

            return Step::Stream { status, headers, pipe };
        }
        let limit = if success && relay.own.is_some() { listing::MAX_PAGE_BYTES } else { MAX_ERROR_BODY_BYTES };
        self.phase = Phase::Relay(relay, Awaiting::Answer(lease, head));
        Step::ReadErrorBody { limit }
    }

    fn transport_failed(&mut self, mut relay: Box<Relay>, lease: Lease, reason: &str, timed_out: bool) -> Step {
        let reason = secret::redact(reason, &[&lease.secret]);
        if reason.starts_with(crate::wire::proxy::PROXY_FAILED) {
            // Never reached Google: another key goes (through its own
            // project's proxy, or none), and this one is not held to it.
            relay.attempts.unreached(&lease);
            let outcome = "proxy-failed".to_owned();
            self.record.attempts.push(crate::wire::summary::Attempt { key: lease.id, outcome, reason: Some(reason) });
            return self.next_attempt(relay, None);
        }
        let outcome = Outcome::TransportError { reason };
        let model = relay.model().to_owned();
        let report = relay.attempts.failed(&lease, &model, outcome, timed_out);
        self.next_attempt(relay, Some(report))
    }

    /// The client's body broke off (or ended short) while it was piped
    /// upstream: the client's failure, not the key's.
    fn piped_body_failed(&mut self, relay: &Relay, lease: &Lease, e: BodyError) -> Step {
        let error = match e {
            BodyError::TooLarge => ProxyError::PayloadTooLarge { limit: relay.piped.unwrap_or(MAX_BODY_BYTES) },
            BodyError::Broken(why) => ProxyError::BadRequest(format!("reading the request body failed: {why}")),
        };
        let response = self.error_response(&error);
        let outcome = Outcome::ClientError { status: response.status };
        let report = Report { client: self.client.clone(), ..Report::of(lease, relay.model(), outcome) };
        self.emit([Step::Report(report), Step::Respond(response)])
    }

    fn classify(&mut self, mut relay: Box<Relay>, lease: Lease, head: Head, body: &[u8]) -> Step {
        let model = relay.model().to_owned();
        let status = head.status;
        let verdict = errors::classify(status, body, |text: &str| secret::redact(text, &[&lease.secret]));
        let outcome = match verdict {
            Verdict::Retry(outcome) => {
                let report = relay.attempts.failed(&lease, &model, outcome, false);
                return self.next_attempt(relay, Some(report));
            }
            // A 403 for a resource another key may own is no sign against
            // this one (the owner is looked for below).
            Verdict::Suspect if status != 403 || relay.resources.is_empty() => {
                let suspect = Suspect { lease, head, body: body.to_vec(), check_status: 0, merged: None };
                return self.confirm_key(relay, suspect);
            }
            Verdict::Suspect => Outcome::ClientError { status },
            Verdict::Relay(outcome) => outcome,
            Verdict::Success => Outcome::Success,
        };
        self.answer(relay, lease, head, body, outcome)
    }

    /// Relays the upstream's answer (`body`, read whole) to the client,
    /// after the report of `lease`'s attempt: an upload's URLs made the
    /// proxy's, a resource another key may own looked for there.
    fn answer(&mut self, mut relay: Box<Relay>, lease: Lease, head: Head, body: &[u8], outcome: Outcome) -> Step {
        // Only an upload's answer hands out a URL of the proxy's own.
        let public = if relay.fwd.upload { self.public_base() } else { None };
        let model = relay.model().to_owned();
        let mut status = head.status;
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
        let mut headers = relayed_headers(&head.headers, true, Some(&lease));
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
        if let Some(reply) = &relay.reply {
            (status, headers, body) = self.translated_answer(reply, status, &body, &mut report);
        }
        let response = Response { status, headers, body };
        relay.attempts.tried.push(lease.id.clone());
        if gone && !lease.pinned {
            // Another key may own it: asked next; this key is fine.
            relay.not_seen = Some(response);
            return self.next_attempt(relay, Some(report));
        }
        report.client = self.client.clone();
        self.emit([Step::Report(report), Step::Respond(response)])
    }

    fn streamed(
        &mut self,
        relay: &Relay,
        lease: &Lease,
        status: u16,
        upload_over: bool,
        result: Result<Seen, String>,
    ) -> Step {
        self.answered = true;
        self.record.status = status;
        self.record.streamed = true;
        let (outcome, seen) = match result {
            Ok(seen) => (Outcome::Success, seen),
            Err(reason) => {
                (Outcome::BrokenStream { reason: secret::redact(&reason, &[&lease.secret]) }, Seen::default())
            }
        };
        let mut report =
            Report { usage: seen.usage, client: self.client.clone(), ..Report::of(lease, relay.model(), outcome) };
        // A listing of Google's models: each is counted under its own name
        // from its first call on (an outage's failures included).
        if relay.fwd.op == Op::ListModels && (200..300).contains(&status) {
            let names = names::listed_models(&seen.head);
            if !names.is_empty() {
                self.queue.push_back(Step::Admin(AdminOp::ModelsListed { names }));
            }
        }
        // The signatures of the calls the answer carried are kept first,
        // for the client's next turn.
        if !seen.signatures.is_empty() {
            let keep = AdminOp::SignaturesKeep { client: self.client.clone(), pairs: seen.signatures };
            self.queue.push_back(Step::Admin(keep));
        }
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
        if upload_over {
            let over = relay.resources.iter().filter(|r| r.kind() == Kind::Upload);
            report.deleted = over.map(|r| r.name().to_owned()).collect();
            report.owned.retain(|o| !report.deleted.contains(&o.name));
        }
        // What the answer created (or listed) is this key's too, until the
        // expiry it gives.
        let interaction = relay.fwd.upstream_path.split('/').any(|s| s == "interactions");
        // (A models listing names models, no resource of the key's.)
        let told = match relay.fwd.op {
            Op::ListModels => Vec::new(),
            _ => names::told_of_head(&seen.head, seen.whole, interaction),
        };
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

    /// The key store's answer about the signatures of a chat request's
    /// unsigned tool calls (none: it failed): those it kept go back in,
    /// Google's placeholder where none is known on Gemini 3; then the
    /// request goes with `lease`.
    fn recalled(&mut self, mut relay: Box<Relay>, lease: Lease, answer: Option<&AdminAnswer>) -> Step {
        relay.recall.clear();
        let said: serde_json::Value =
            answer.filter(|a| a.status == 200).and_then(|a| serde_json::from_str(&a.body).ok()).unwrap_or_default();
        let found: std::collections::HashMap<String, String> = said["signatures"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(id, sig)| Some((id.clone(), sig.as_str()?.to_owned())))
            .collect();
        let gemini_3 = translate::is_gemini_3_or_newer(relay.model());
        if let Some((body, done)) = recall::restore(&self.body, &found, gemini_3) {
            self.body = body;
            if done.placeholders > 0 {
                let note = self.note(format!(
                    "{} tool call turn(s) came back without a thought signature the proxy knows: Google's placeholder stands in",
                    done.placeholders
                ));
                self.queue.push_back(note);
            }
        }
        // Logs and notes queued wait for the exchange's end.
        self.send(relay, lease)
    }

    /// Asks the key store for a listing client's own names; `pending`
    /// goes on once they are known ([`Self::names`]).
    pub(super) fn ask_names(&mut self, relay: Box<Relay>, pending: Pending, client: String, prefix: String) -> Step {
        self.phase = Phase::Relay(relay, Awaiting::Names(pending));
        Step::Admin(AdminOp::Names { client, prefix })
    }

    /// A listing client's own names ([`AdminOp::Names`]): the listing goes
    /// on, showing only those (none, if the key store could not tell).
    fn names(&mut self, mut relay: Box<Relay>, pending: Pending, answer: &AdminAnswer) -> Step {
        let said: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
        let names = said["names"].as_array().into_iter().flatten().filter_map(|n| n.as_str().map(str::to_owned));
        relay.own = Some(if answer.status == 200 { names.collect() } else { HashSet::new() });
        match pending {
            Pending::Walk(merged, leases) => self.walk_on(relay, merged, leases),
            Pending::Send(lease) => self.send(relay, lease),
        }
    }

    /// Checks a suspect key alone ([`Verdict::Suspect`]) with a call that
    /// carries nothing of the caller's, before its refusal is held
    /// against it.
    pub(super) fn confirm_key(&mut self, relay: Box<Relay>, suspect: Suspect) -> Step {
        let request = check_request(&self.cfg, &suspect.lease);
        self.phase = Phase::Relay(relay, Awaiting::ConfirmHead(Box::new(suspect)));
        Step::Send(request)
    }

    /// What a suspect key's check found (`None`: it could not be sent):
    /// refused again, the key is out and the request goes on with another
    /// (a listing with the keys after it); otherwise the caller gets the
    /// key's first answer and the key is left alone.
    fn confirmed(&mut self, mut relay: Box<Relay>, suspect: Suspect, check_body: Option<&[u8]>) -> Step {
        let Suspect { lease, head, body, check_status, merged } = suspect;
        let redact = |text: &str| secret::redact(text, &[&lease.secret]);
        let found = check_body.map_or(Confirmation::Unknown, |b| errors::confirm(check_status, b, redact));
        let status = head.status;
        let model = relay.model().to_owned();
        match (found, merged) {
            (Confirmation::KeyRejected(outcome), merged) => {
                let report = relay.attempts.failed(&lease, &model, outcome, false);
                match merged {
                    Some(merged) => self.list_skip(relay, merged, report),
                    None => self.next_attempt(relay, Some(report)),
                }
            }
            (Confirmation::KeyWorks | Confirmation::Unknown, Some(merged)) => {
                self.list_relay(&relay, merged.reports, &lease, &head, &body, Outcome::ClientError { status })
            }
            (Confirmation::KeyWorks | Confirmation::Unknown, None) => {
                self.answer(relay, lease, head, &body, Outcome::ClientError { status })
            }
        }
    }

    /// Google's answer (`body`, read whole and redacted) in a translated
    /// API's shape: the status, headers and body for the client; a 2xx
    /// answer's token usage goes into `report`.
    fn translated_answer(
        &mut self,
        reply: &Reply,
        status: u16,
        body: &str,
        report: &mut Report,
    ) -> (u16, Vec<(String, String)>, String) {
        let mut headers = translated_headers(reply, false);
        if !(200..300).contains(&status) {
            crate::wire::error::anthropic_retry_after(status, &mut headers);
            return (status, headers, reply.error(status, body));
        }
        report.usage = crate::wire::usage::usage_of(body.as_bytes());
        match reply.answer(body.as_bytes()) {
            Ok(answer) => (status, headers, answer),
            Err(why) => {
                let e = ProxyError::UpstreamFailed { attempts: 1, last: why };
                let response = self.error_response(&e);
                (response.status, response.headers, response.body)
            }
        }
    }
}

/// The admin's model aliases from the key store's answer
/// ([`AdminOp::Aliases`]); an answer that holds none (or is not one) adds
/// none.
pub(crate) fn runtime_aliases(answer: &AdminAnswer) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Entry {
        from: String,
        to: String,
    }
    #[derive(serde::Deserialize)]
    struct Table {
        aliases: Vec<Entry>,
    }
    if answer.status != 200 {
        return Vec::new();
    }
    serde_json::from_str::<Table>(&answer.body)
        .map(|t| t.aliases.into_iter().map(|e| (e.from, e.to)).collect())
        .unwrap_or_default()
}
