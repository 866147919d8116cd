//! A scriptable fake of Google's Gemini API for tests and benchmarks.
//!
//! It speaks the native API (generateContent, both stream forms,
//! countTokens, embedContent, batchEmbedContents, models) and the
//! OpenAI-compatible routes under `/v1beta/openai`, in the shapes the
//! official SDKs parse. Every model exists but those whose name contains
//! `made-up`, which get Google's 404. What each key gets is scriptable ([`Behavior`]); every
//! request is recorded ([`Recorded`]); two credentials in one request get
//! Google's 400 "Multiple authentication credentials received".
//!
//! Remote control (for tests in other processes): `POST /_fake/behavior`
//! with `{"key": "...", "behavior": "per-day"}` (or `"key": "*"` for the
//! default), `GET /_fake/requests`, `POST /_fake/reset`, and `POST
//! /_fake/hold` / `POST /_fake/release` to hold streams after their first
//! chunk.
//!
//! Each key is a Google project of its own ([`projects`]): resumable
//! uploads to `/upload/v1beta/files`, `files` (get, list, delete) and
//! `cachedContents` (create, get) are seen by their project only, and a
//! prompt that names another project's file or cache gets Google's 403.
#![deny(missing_docs)]

mod live;
pub mod live_client;
pub mod projects;
pub mod proxies;
mod raw;
mod responses;
mod tools;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use std::collections::HashMap;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

/// What the fake answers a key with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behavior {
    /// A normal answer.
    Ok,
    /// 429 with a per-day `QuotaFailure`.
    PerDay,
    /// 429 with a per-minute `QuotaFailure` and `RetryInfo` of this many seconds.
    PerMinute(u32),
    /// 429 without details.
    Bare429,
    /// 400 `API_KEY_INVALID`.
    Invalid,
    /// 403 `CONSUMER_SUSPENDED`, with the key in `containerInfo` as Google does.
    Suspended,
    /// 403 "reported as leaked".
    Leaked,
    /// 401 `ACCESS_TOKEN_TYPE_UNSUPPORTED`: a credential of a kind the API
    /// does not take as a key.
    WrongType,
    /// 400 `FAILED_PRECONDITION` "User location is not supported".
    Location,
    /// This 5xx status.
    ServerError(u16),
    /// A 2xx stream that breaks off after the first chunk (which goes out
    /// first).
    CutMidStream,
    /// A 2xx head, then the connection closed before any body.
    CutAtHead,
    /// Headers only after this many milliseconds.
    SlowHeaders(u64),
    /// After this many milliseconds, a 503 (a slow answer that fails).
    SlowServerError(u64),
    /// A 500 whose body never ends (a proxy that reads error bodies whole
    /// never answers).
    EndlessError,
    /// No response head, for two minutes.
    Stall,
    /// A 2xx head and the first piece of the body, then nothing for two
    /// minutes.
    StallBody,
    /// A 2xx JSON answer that declares more bytes than it sends, then
    /// closes the connection.
    CutJson,
    /// The connection reset (RST) once the request is read.
    Reset,
    /// An answer that is not HTTP, or whose head is malformed, then the
    /// connection closed.
    Garbage(raw::Garbage),
}

impl Behavior {
    /// Parses `ok`, `per-day`, `per-minute[:SECS]`, `bare-429`, `invalid`,
    /// `suspended`, `leaked`, `wrong-type`, `location`, `5xx:STATUS`, `cut`, `slow:MS`, `slow-5xx:MS`, `endless-error`,
    /// `stall`, `stall-body`, `cut-json`, `cut-at-head`, `reset`, `garbage`
    /// (bytes that are not HTTP), `garbage:status` (`HTTP/1.1 abc OK`),
    /// `garbage:header` (a header line without a colon), `garbage:length`
    /// (`content-length: abc`).
    pub fn parse(s: &str) -> Option<Self> {
        let (name, arg) = s.split_once(':').map_or((s, None), |(a, b)| (a, Some(b)));
        Some(match name {
            "ok" => Self::Ok,
            "per-day" => Self::PerDay,
            "per-minute" => Self::PerMinute(arg.map_or(Some(30), |a| a.parse().ok())?),
            "bare-429" => Self::Bare429,
            "invalid" => Self::Invalid,
            "suspended" => Self::Suspended,
            "leaked" => Self::Leaked,
            "wrong-type" => Self::WrongType,
            "location" => Self::Location,
            "5xx" => Self::ServerError(arg.map_or(Some(503), |a| a.parse().ok())?),
            "cut" => Self::CutMidStream,
            "cut-at-head" => Self::CutAtHead,
            "slow" => Self::SlowHeaders(arg?.parse().ok()?),
            "slow-5xx" => Self::SlowServerError(arg?.parse().ok()?),
            "endless-error" => Self::EndlessError,
            "stall" => Self::Stall,
            "stall-body" => Self::StallBody,
            "cut-json" => Self::CutJson,
            "reset" => Self::Reset,
            "garbage" => Self::Garbage(match arg {
                None => raw::Garbage::NotHttp,
                Some("status") => raw::Garbage::Status,
                Some("header") => raw::Garbage::Header,
                Some("length") => raw::Garbage::Length,
                Some("status-open") => raw::Garbage::StatusOpen,
                Some(_) => return None,
            }),
            _ => return None,
        })
    }
}

/// How a request carried its credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// `x-goog-api-key`.
    GoogApiKey,
    /// `Authorization: Bearer`.
    Bearer,
    /// `?key=`.
    Query,
    /// `?access_token=` (an OAuth token, as Google takes it in a query).
    AccessToken,
}

/// One request as the fake received it.
#[derive(Clone, Debug, Serialize)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query, if any.
    pub query: Option<String>,
    /// Every credential received, by mechanism.
    pub credentials: Vec<(Mechanism, String)>,
    /// Model from the path or body.
    pub model: Option<String>,
    /// Header names received (lowercase).
    pub header_names: Vec<String>,
    /// The body (shown as JSON when it is JSON, else as `null`).
    #[serde(serialize_with = "json_or_null")]
    pub body: Vec<u8>,
    /// The token usage the answer reports, for a generation answered by a
    /// key that behaves (`ok`).
    pub usage: Option<responses::Usage>,
}

impl Recorded {
    /// The one key used, when exactly one credential was sent.
    pub fn key(&self) -> Option<&str> {
        match self.credentials.as_slice() {
            [(_, k)] => Some(k),
            _ => None,
        }
    }
}

#[derive(Default)]
struct State {
    behaviors: Mutex<HashMap<String, Behavior>>,
    default: Mutex<Option<Behavior>>,
    requests: Mutex<Vec<Recorded>>,
    hold: Mutex<bool>,
    release: Notify,
    stream_chunks: Mutex<usize>,
    projects: Mutex<projects::Projects>,
    origin: Mutex<String>,
    /// The thought signatures the fake issued ([`tools`]).
    signatures: Mutex<std::collections::HashSet<String>>,
    /// Live sessions' tokens and handles ([`live`]).
    live: Mutex<live::LiveState>,
}

fn json_or_null<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    v.serialize(s)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running fake upstream.
#[derive(Clone)]
pub struct FakeUpstream {
    addr: SocketAddr,
    state: Arc<State>,
}

impl std::fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUpstream").field("addr", &self.addr).finish()
    }
}

impl FakeUpstream {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        *lock(&state.stream_chunks) = 3;
        *lock(&state.origin) = format!("http://{addr}");
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move {
                    if st.raw_scripted() {
                        serve_inspected(st, stream).await;
                    } else {
                        serve(st, stream, true).await;
                    }
                });
            }
        });
        Ok(Self { addr, state })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The native API base, as `GEMINI_UPSTREAM_URL`.
    pub fn gemini_base(&self) -> String {
        format!("{}/v1beta", self.origin())
    }

    /// The OpenAI-compatible base, as `OPENAI_UPSTREAM_URL`.
    pub fn openai_base(&self) -> String {
        format!("{}/v1beta/openai", self.origin())
    }

    /// Scripts what `key` gets.
    pub fn set(&self, key: &str, behavior: Behavior) {
        lock(&self.state.behaviors).insert(key.to_owned(), behavior);
    }

    /// Scripts what keys without their own behavior get.
    pub fn set_default(&self, behavior: Behavior) {
        *lock(&self.state.default) = Some(behavior);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// Forgets the recorded requests only (the projects' resources stay).
    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }

    /// Forgets recorded requests and behaviors.
    pub fn reset(&self) {
        *lock(&self.state.projects) = projects::Projects::default();
        lock(&self.state.requests).clear();
        lock(&self.state.behaviors).clear();
        *lock(&self.state.default) = None;
    }

    /// While held, streams stop after their first chunk until [`Self::release`].
    pub fn hold_streams(&self, hold: bool) {
        *lock(&self.state.hold) = hold;
    }

    /// Lets held streams finish.
    pub fn release(&self) {
        *lock(&self.state.hold) = false;
        self.state.release.notify_waiters();
    }

    /// How many chunks each stream sends (default 3).
    pub fn set_stream_chunks(&self, n: usize) {
        *lock(&self.state.stream_chunks) = n.max(1);
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    full(status, "application/json; charset=UTF-8", v.to_string())
}

/// Serves one connection over HTTP, keeping it alive between requests or
/// not.
async fn serve<I>(st: Arc<State>, io: I, keep_alive: bool)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let st = st.clone();
        async move { handle(st, req).await }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(keep_alive);
    let _ = builder.serve_connection_with_upgrades(TokioIo::new(io), svc).await;
}

/// One request per connection, its head read here: a key scripted to
/// misbehave below HTTP gets that on the raw socket; any other request is
/// replayed to the HTTP server.
async fn serve_inspected(st: Arc<State>, mut stream: tokio::net::TcpStream) {
    let Some((bytes, head)) = raw::read_head(&mut stream).await else { return };
    let (path, query) = match head.target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (head.target.clone(), None),
    };
    let creds = credentials(head.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())), query.as_deref());
    let behavior = match creds.as_slice() {
        [(_, key)] => st.behavior_of(key),
        _ => Behavior::Ok,
    };
    if !matches!(behavior, Behavior::Reset | Behavior::Garbage(_)) || path.starts_with("/_fake/") {
        return serve(st, raw::Prefixed::new(bytes, stream), false).await;
    }
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").map_or(bytes.len(), |i| i + 4);
    let length = head.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let body = raw::read_body(&mut stream, bytes[head_end..].to_vec(), length).await;
    let header_names = head.headers.iter().map(|(n, _)| n.clone()).collect();
    st.record(head.method.clone(), path, query, creds, header_names, body);
    match behavior {
        Behavior::Garbage(shape) => raw::garbage(stream, shape).await,
        _ => raw::reset(stream),
    }
}

fn credentials<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>, query: Option<&str>) -> Vec<(Mechanism, String)> {
    let mut out = Vec::new();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("x-goog-api-key") {
            out.push((Mechanism::GoogApiKey, value.to_owned()));
        } else if name.eq_ignore_ascii_case("authorization")
            && let Some(t) = value.strip_prefix("Bearer ")
        {
            out.push((Mechanism::Bearer, t.to_owned()));
        }
    }
    for pair in query.unwrap_or_default().split('&') {
        if let Some(v) = pair.strip_prefix("key=") {
            out.push((Mechanism::Query, v.to_owned()));
        } else if let Some(v) = pair.strip_prefix("access_token=") {
            out.push((Mechanism::AccessToken, v.to_owned()));
        }
    }
    out
}

/// The model a request names: in its path, or (OpenAI) in its body.
fn model_of(path: &str, body: &[u8]) -> Option<String> {
    if path.starts_with("/v1beta/openai/") {
        let body_json: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
        body_json
            .get("model")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .or_else(|| path.strip_prefix("/v1beta/openai/models/").map(str::to_owned))
    } else {
        let in_path = path.strip_prefix("/v1beta/models/").or_else(|| path.strip_prefix("/v1/models/"));
        match in_path {
            Some(rest) => Some(rest.split(':').next().unwrap_or(rest).to_owned()),
            // The Interactions API names its model in the body.
            None if path.ends_with("/interactions") => serde_json::from_slice::<serde_json::Value>(body)
                .ok()?
                .get("model")?
                .as_str()
                .map(|m| m.trim_start_matches("models/").to_owned()),
            None => None,
        }
    }
}

impl State {
    fn behavior_of(&self, key: &str) -> Behavior {
        lock(&self.behaviors).get(key).cloned().or_else(|| lock(&self.default).clone()).unwrap_or(Behavior::Ok)
    }

    /// Whether a misbehaviour below HTTP is scripted for any key.
    fn raw_scripted(&self) -> bool {
        let raw = |b: &Behavior| matches!(b, Behavior::Reset | Behavior::Garbage(_));
        lock(&self.behaviors).values().any(raw) || lock(&self.default).as_ref().is_some_and(raw)
    }

    fn record(
        &self,
        method: String,
        path: String,
        query: Option<String>,
        credentials: Vec<(Mechanism, String)>,
        header_names: Vec<String>,
        body: Vec<u8>,
    ) {
        let model = model_of(&path, &body);
        let chat = || {
            // A chat stream reports its usage only when asked to.
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            v["stream"] != true || v.pointer("/stream_options/include_usage") == Some(&serde_json::Value::Bool(true))
        };
        let generation = path.ends_with(":generateContent")
            || path.ends_with(":streamGenerateContent")
            || (path == "/v1beta/openai/chat/completions" && chat());
        let behaves = match credentials.as_slice() {
            [(_, key)] => self.behavior_of(key) == Behavior::Ok,
            _ => false,
        };
        let real = model.as_deref().is_some_and(|m| !m.contains("made-up"));
        let usage = (generation && behaves && real).then(|| responses::Usage::for_body(body.len()));
        lock(&self.requests).push(Recorded { method, path, query, credentials, model, header_names, body, usage });
    }
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, std::io::Error> {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_fake/") {
        return Ok(control(st, req).await);
    }
    if live::is_live(&path) {
        return Ok(live::upgrade(st, req));
    }
    let method = req.method().to_string();
    let method_name = method.clone();
    let query = req.uri().query().map(str::to_owned);
    let creds =
        credentials(req.headers().iter().filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))), req.uri().query());
    let header_names = req.headers().keys().map(|k| k.as_str().to_owned()).collect();
    let upload = UploadHeaders::of(req.headers());
    let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let body_json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let body_len = body.len();
    let model = model_of(&path, &body);
    // A multipart form (the OpenAI-style file upload) is read after the
    // record took the body.
    let form = if path == "/v1beta/openai/files" { body.clone() } else { Vec::new() };
    st.record(method, path.clone(), query.clone(), creds.clone(), header_names, body);
    if let [(_, key)] = creds.as_slice()
        && matches!(st.behavior_of(key), Behavior::Reset | Behavior::Garbage(_))
    {
        // A connection kept alive from before the misbehaviour was
        // scripted: closing it without an answer is the nearest thing.
        return Err(std::io::Error::other("scripted to misbehave below HTTP"));
    }
    // A chunk of a resumable upload: its upload id is its authority.
    let upload_id = query.as_deref().and_then(|q| q.split('&').find_map(|p| p.strip_prefix("upload_id=")));
    if path.starts_with("/upload/")
        && let Some(id) = upload_id
    {
        let command = upload.command.as_deref().unwrap_or("upload");
        let answer =
            lock(&st.projects).chunk(id, command, upload.offset, body_len as u64, std::time::SystemTime::now());
        return Ok(answer_of(answer));
    }
    let usage = responses::Usage::for_body(body_len);
    let req = Api {
        method: &method_name,
        path: &path,
        query: query.as_deref(),
        creds: &creds,
        body_json: &body_json,
        body: &form,
        upload: &upload,
    };
    Ok(respond(&st, &req, model, &usage).await)
}

/// A request to the API, as `respond` reads it.
struct Api<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    creds: &'a [(Mechanism, String)],
    body_json: &'a serde_json::Value,
    /// The body as sent, for a multipart form (no JSON); else empty.
    body: &'a [u8],
    upload: &'a UploadHeaders,
}

/// The `X-Goog-Upload-*` headers of a request.
#[derive(Default)]
struct UploadHeaders {
    protocol: Option<String>,
    command: Option<String>,
    offset: Option<u64>,
    declared: Option<u64>,
    mime: Option<String>,
}

impl UploadHeaders {
    fn of(h: &http::HeaderMap) -> Self {
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_ascii_lowercase());
        Self {
            protocol: get("x-goog-upload-protocol"),
            command: get("x-goog-upload-command"),
            offset: get("x-goog-upload-offset").and_then(|v| v.parse().ok()),
            declared: get("x-goog-upload-header-content-length").and_then(|v| v.parse().ok()),
            mime: h.get("x-goog-upload-header-content-type").and_then(|v| v.to_str().ok()).map(str::to_owned),
        }
    }
}

fn answer_of(a: projects::Answer) -> Response<Body> {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = if a.body.is_null() { full(status, "text/plain", Bytes::new()) } else { json(status, &a.body) };
    for (name, value) in a.headers {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            r.headers_mut().insert(name, v);
        }
    }
    r
}

/// The answer of the fake's projects to a request for a resource (files,
/// uploads, cached contents), or a refusal of a prompt that names another
/// project's; `None` for any other request.
fn resources(st: &Arc<State>, key: &str, req: &Api<'_>) -> Option<Response<Body>> {
    let now = std::time::SystemTime::now();
    let mut projects = lock(&st.projects);
    let rest = req.path.strip_prefix("/v1beta/").or_else(|| req.path.strip_prefix("/v1/"));
    let param = |name: &str| {
        req.query.and_then(|q| q.split('&').find_map(|p| p.strip_prefix(name)?.strip_prefix('='))).map(percent_decoded)
    };
    let answer = match (req.path, rest) {
        ("/upload/v1beta/files" | "/upload/v1/files", _) => {
            if req.upload.protocol.as_deref() != Some("resumable") || req.upload.command.as_deref() != Some("start") {
                return Some(json(
                    StatusCode::BAD_REQUEST,
                    &responses::error(400, "The fake takes resumable uploads only.", "INVALID_ARGUMENT"),
                ));
            }
            let key_in_query = req.query.is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")));
            let origin = lock(&st.origin).clone();
            let start = projects::Start {
                declared: req.upload.declared,
                mime: req.upload.mime.as_deref(),
                body: req.body_json,
                origin: &origin,
                key_in_query,
            };
            projects.start_upload(key, &start, now)
        }
        (_, Some("files")) => {
            let size = param("pageSize").and_then(|s| s.parse().ok());
            projects.list_files(key, size, param("pageToken").as_deref(), now)
        }
        (_, Some(r)) if r.starts_with("files/") => {
            let id = projects::file_id(r).to_owned();
            if req.method == "DELETE" { projects.delete_file(key, &id, now) } else { projects.get_file(key, &id, now) }
        }
        (_, Some(r)) if r.starts_with("models/") && r.ends_with(":batchGenerateContent") => {
            let model = r.trim_start_matches("models/").trim_end_matches(":batchGenerateContent");
            projects.create_batch(key, model, req.body_json, now)
        }
        (_, Some(r)) if r.starts_with("batches/") => {
            let (name, action) =
                r.split_once(':').unwrap_or((r, if req.method == "DELETE" { "delete" } else { "get" }));
            projects.batch_call(key, name, action, now)
        }
        (_, Some("interactions")) if req.method == "POST" => {
            match projects.create_interaction(key, req.body_json, now) {
                Ok(projects::Made::Whole(v)) => projects::Answer { status: 200, body: v, headers: Vec::new() },
                Ok(projects::Made::Events(events)) => {
                    drop(projects);
                    return Some(stream(st.clone(), "text/event-stream", events, false));
                }
                Err(refused) => refused,
            }
        }
        (_, Some(r)) if r.starts_with("interactions/") => {
            let id = r.trim_start_matches("interactions/");
            projects.interaction_call(key, id, req.method == "DELETE", now)
        }
        ("/v1beta/openai/files", _) if req.method == "POST" => {
            projects.openai_create_file(key, multipart_filename(req.body).as_deref(), req.body.len() as u64, now)
        }
        ("/v1beta/openai/batches", _) if req.method == "POST" => projects.openai_create_batch(key, req.body_json, now),
        (p, _) if p.starts_with("/v1beta/openai/files/") => {
            projects.openai_get_file(key, &percent_slashes(&p["/v1beta/openai/files/".len()..]), now)
        }
        (p, _) if p.starts_with("/v1beta/openai/batches/") => {
            projects.openai_get_batch(key, &percent_slashes(&p["/v1beta/openai/batches/".len()..]), now)
        }
        (_, Some("cachedContents")) if req.method == "GET" => {
            let size = param("pageSize").and_then(|s| s.parse().ok());
            projects.list_caches(key, size, param("pageToken").as_deref(), now)
        }
        (_, Some("cachedContents")) => projects.create_cache(key, req.body_json, now),
        (_, Some("batches")) if req.method == "GET" => {
            let size = param("pageSize").and_then(|s| s.parse().ok());
            projects.list_batches(key, size, param("pageToken").as_deref(), now)
        }
        (_, Some(r)) if r.starts_with("cachedContents/") => projects.get_cache(key, r, now),
        (_, Some(r)) if r.contains(":generateContent") || r.contains(":streamGenerateContent") => {
            projects.refused_files(key, req.body_json, now)?
        }
        _ => return None,
    };
    Some(answer_of(answer))
}

/// A query value with its `%XX` escapes decoded (a malformed one kept).
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `%2F` (as the OpenAI SDK escapes the `/` of an id such as
/// `batches/x` in a path) as `/`.
fn percent_slashes(s: &str) -> String {
    s.replace("%2F", "/").replace("%2f", "/")
}

/// The `filename` of a multipart form's file part.
fn multipart_filename(body: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let at = head.find("filename=\"")? + "filename=\"".len();
    head[at..].split('"').next().map(str::to_owned)
}

/// The answer to a recorded API request.
async fn respond(st: &Arc<State>, req: &Api<'_>, model: Option<String>, usage: &responses::Usage) -> Response<Body> {
    let (path, query, creds, body_json) = (req.path, req.query, req.creds, req.body_json);
    let openai = path.starts_with("/v1beta/openai/");
    let st = st.clone();
    let path = path.to_owned();
    let query = query.map(str::to_owned);

    let wrap = |v: serde_json::Value| if openai { serde_json::Value::Array(vec![v]) } else { v };
    let key = match creds {
        [] => {
            return json(
                StatusCode::FORBIDDEN,
                &wrap(responses::error(
                    403,
                    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                    "PERMISSION_DENIED",
                )),
            );
        }
        [(_, k)] => k.clone(),
        _ => {
            return json(
                StatusCode::BAD_REQUEST,
                &wrap(responses::error(
                    400,
                    "Multiple authentication credentials received. Please pass only one.",
                    "INVALID_ARGUMENT",
                )),
            );
        }
    };
    let behavior = lock(&st.behaviors).get(&key).cloned().or_else(|| lock(&st.default).clone()).unwrap_or(Behavior::Ok);
    let model_name = model.clone().unwrap_or_else(|| "gemini-2.5-flash".to_owned());
    let failure = match &behavior {
        Behavior::PerDay => Some((429, responses::per_day(&model_name))),
        Behavior::PerMinute(s) => Some((429, responses::per_minute(*s))),
        Behavior::Bare429 => {
            Some((429, responses::error(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED")))
        }
        Behavior::Invalid => Some((400, responses::invalid_key())),
        Behavior::Suspended => Some((403, responses::suspended(&key))),
        Behavior::Leaked => Some((403, responses::leaked())),
        Behavior::WrongType => Some((401, responses::wrong_key_type())),
        Behavior::Location => {
            Some((400, responses::error(400, "User location is not supported for the API use.", "FAILED_PRECONDITION")))
        }
        Behavior::ServerError(s) => {
            Some((*s, responses::error(*s, "The model is overloaded. Please try again later.", "UNAVAILABLE")))
        }
        Behavior::SlowHeaders(ms) => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            None
        }
        Behavior::SlowServerError(ms) => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            Some((503, responses::error(503, "The model is overloaded. Please try again later.", "UNAVAILABLE")))
        }
        Behavior::EndlessError => return endless_error(),
        Behavior::Stall => {
            tokio::time::sleep(STALL).await;
            Some((500, responses::error(500, "stalled", "INTERNAL")))
        }
        Behavior::StallBody => return stall_body(),
        Behavior::CutJson => return cut_json(&model_name, &key),
        Behavior::CutAtHead => return cut_at_head(),
        Behavior::Ok | Behavior::CutMidStream | Behavior::Reset | Behavior::Garbage(_) => None,
    };
    if let Some((status, body)) = failure {
        return json(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &wrap(body));
    }
    // Google echoes the names it does not know (a caller's words).
    if let Some(body) = responses::unknown_name(req.method, &path, query.as_deref(), body_json) {
        return json(StatusCode::BAD_REQUEST, &wrap(body));
    }
    // Google's answer to a model it does not have (the fake has every model
    // but those whose name says they are made up).
    if model_name.contains("made-up") {
        let message = format!(
            "models/{model_name} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."
        );
        return json(StatusCode::NOT_FOUND, &wrap(responses::error(404, &message, "NOT_FOUND")));
    }
    if req.method == "POST" && path.ends_with("/auth_tokens") {
        return json(StatusCode::OK, &live::mint(&st, &key, body_json));
    }
    if let Some(answer) = resources(&st, &key, req) {
        return answer;
    }
    let cut = behavior == Behavior::CutMidStream;
    let chunks = *lock(&st.stream_chunks);
    let sse = query.as_deref().is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
    let action = path.rsplit_once(':').map(|(_, a)| a.to_owned());
    if openai {
        let rest = path.trim_start_matches("/v1beta/openai");
        if rest == "/chat/completions"
            && let Some(answer) = chat_with_tools(&st, &model_name, body_json, usage)
        {
            return answer;
        }
        return match rest {
            "/chat/completions" if body_json.get("stream").and_then(|s| s.as_bool()) == Some(true) => {
                let include =
                    body_json.pointer("/stream_options/include_usage").and_then(|v| v.as_bool()) == Some(true);
                let events = responses::openai_chat_stream(&model_name, chunks, include.then_some(usage));
                stream(st, "text/event-stream", events, cut)
            }
            "/chat/completions" => json(StatusCode::OK, &responses::openai_chat(&model_name, usage)),
            "/embeddings" => json(StatusCode::OK, &responses::openai_embeddings(&model_name, body_json)),
            "/models" => json(StatusCode::OK, &responses::openai_models()),
            r if r.starts_with("/models/") => json(StatusCode::OK, &responses::openai_model(&model_name)),
            _ => json(StatusCode::NOT_FOUND, &wrap(responses::error(404, "Not found", "NOT_FOUND"))),
        };
    }
    if let Some(answer) = with_tools(&st, action.as_deref(), &model_name, body_json, usage, sse) {
        return answer;
    }
    match action.as_deref() {
        Some("generateContent") => json(StatusCode::OK, &responses::generate(&model_name, usage)),
        Some("streamGenerateContent") if sse => {
            let events = (0..chunks)
                .map(|i| format!("data: {}\r\n\r\n", responses::generate_chunk(&model_name, i, chunks, usage)))
                .collect();
            stream(st, "text/event-stream", events, cut)
        }
        Some("streamGenerateContent") => {
            let mut parts: Vec<String> = (0..chunks)
                .map(|i| {
                    format!(
                        "{}{}",
                        if i == 0 { "[" } else { ",\r\n" },
                        responses::generate_chunk(&model_name, i, chunks, usage)
                    )
                })
                .collect();
            parts.push("]".into());
            stream(st, "application/json; charset=UTF-8", parts, cut)
        }
        Some("countTokens") => json(
            StatusCode::OK,
            &serde_json::json!({"totalTokens": 7, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 7}]}),
        ),
        Some("embedContent") => {
            json(StatusCode::OK, &serde_json::json!({"embedding": {"values": responses::vector(&model_name, 0)}}))
        }
        Some("batchEmbedContents") => {
            let n = body_json.get("requests").and_then(|r| r.as_array()).map_or(1, Vec::len);
            let embeddings: Vec<_> =
                (0..n).map(|i| serde_json::json!({"values": responses::vector(&model_name, i)})).collect();
            json(StatusCode::OK, &serde_json::json!({"embeddings": embeddings}))
        }
        None if path == "/v1beta/models" => json(StatusCode::OK, &responses::models()),
        None if path.starts_with("/v1beta/models/") => json(StatusCode::OK, &responses::model(&model_name)),
        _ => json(StatusCode::NOT_FOUND, &responses::error(404, "Requested entity was not found.", "NOT_FOUND")),
    }
}

/// The answer to a generation that uses tools or asks for thoughts
/// ([`tools`]), or Google's 400 for a signature that did not come back;
/// `None`: the plain answer.
fn with_tools(
    st: &Arc<State>,
    action: Option<&str>,
    model: &str,
    body: &serde_json::Value,
    usage: &responses::Usage,
    sse: bool,
) -> Option<Response<Body>> {
    if !matches!(action, Some("generateContent" | "streamGenerateContent")) {
        return None;
    }
    if let Some(refusal) = tools::check_signatures(model, body, &lock(&st.signatures)) {
        return Some(json(StatusCode::BAD_REQUEST, &refusal));
    }
    let thought = tools::thought(body);
    let answer = tools::answer(model, body, || {
        let mut issued = lock(&st.signatures);
        // Base64, with the characters a URL would escape.
        let signature = format!("EtYDCtMDAdHtim{:06}Xq+/zLp0=", issued.len());
        issued.insert(signature.clone());
        signature
    });
    if thought.is_none() && answer.is_none() {
        return None;
    }
    let chunks = *lock(&st.stream_chunks);
    Some(match action {
        Some("generateContent") => {
            let text = serde_json::json!({"text": responses::text(model)});
            let parts = thought.into_iter().chain([answer.unwrap_or(text)]).collect();
            json(StatusCode::OK, &responses::generate_parts(model, usage, parts))
        }
        _ => {
            // A thought, then the answer's part, or the usual chunks.
            let mut events: Vec<serde_json::Value> =
                thought.map(|t| responses::stream_parts(model, usage, vec![t])).unwrap_or_default();
            for e in &mut events {
                e["candidates"][0].as_object_mut().map(|c| c.remove("finishReason"));
            }
            match answer {
                Some(part) => events.extend(responses::stream_parts(model, usage, vec![part])),
                None => events.extend((0..chunks).map(|i| responses::generate_chunk(model, i, chunks, usage))),
            }
            let chunks = if sse {
                events.iter().map(|e| format!("data: {e}\r\n\r\n")).collect()
            } else {
                vec![serde_json::Value::Array(events).to_string()]
            };
            let content_type = if sse { "text/event-stream" } else { "application/json; charset=UTF-8" };
            stream(st.clone(), content_type, chunks, false)
        }
    })
}

/// A chat completion with tools on Google's OpenAI layer, which checks and
/// answers the Gemini request it becomes ([`tools::chat_contents`]): a
/// Gemini 3 turn that sends a call back without the signature the layer
/// gave it (`extra_content`) is refused as Google refuses it; a call is
/// answered with its signature in `extra_content`. `None` for a chat with
/// no tools, or none to call.
fn chat_with_tools(
    st: &Arc<State>,
    model: &str,
    body: &serde_json::Value,
    usage: &responses::Usage,
) -> Option<Response<Body>> {
    if body.get("tools").and_then(|t| t.as_array()).is_none_or(|t| t.is_empty()) {
        return None;
    }
    let gemini = tools::chat_contents(body);
    if let Some(refusal) = tools::check_signatures(model, &gemini, &lock(&st.signatures)) {
        return Some(json(StatusCode::BAD_REQUEST, &serde_json::Value::Array(vec![refusal])));
    }
    let mut part = tools::answer(model, &gemini, || {
        let mut issued = lock(&st.signatures);
        let signature = format!("EtYDCtMDAdHtim{:06}Xq+/zLp0=", issued.len());
        issued.insert(signature.clone());
        signature
    })?;
    // What a model that got its earlier reasoning back (the signature it
    // issued) says apart from one that got Google's placeholder: a test
    // can tell a signature recalled from one stood in for.
    let last_call =
        gemini["contents"].as_array().into_iter().flatten().rev().find_map(|c| {
            c["parts"].as_array().into_iter().flatten().find(|p| p.get("functionCall").is_some()).cloned()
        });
    let signed = last_call.as_ref().and_then(|c| c["thoughtSignature"].as_str());
    if let (Some(text), Some(sig)) = (part["text"].as_str(), signed) {
        let kept = if lock(&st.signatures).contains(sig) { "reasoning kept" } else { "reasoning lost" };
        part["text"] = format!("{text} ({kept})").into();
    }
    let id = format!("function-call-{}", 1000 + lock(&st.signatures).len());
    let message = tools::chat_message(&part, &id);
    let finish = if part.get("functionCall").is_some() { "tool_calls" } else { "stop" };
    let base = serde_json::json!({"id": "chatcmpl-fake", "created": 1_764_000_000, "model": model});
    if body.get("stream").and_then(|s| s.as_bool()) != Some(true) {
        let mut answer = base;
        answer["object"] = "chat.completion".into();
        answer["choices"] = serde_json::json!([{"index": 0, "message": message, "finish_reason": finish}]);
        answer["usage"] = usage.openai();
        return Some(json(StatusCode::OK, &answer));
    }
    // Google's layer streams each call whole, in one chunk, with no
    // `index` (the SDKs' accumulators cope; the proxy reads it so).
    let delta = message;
    let chunk = |choice: serde_json::Value| {
        let mut c = base.clone();
        c["object"] = "chat.completion.chunk".into();
        c["choices"] = serde_json::json!([choice]);
        format!("data: {c}\n\n")
    };
    let events = vec![
        chunk(serde_json::json!({"index": 0, "delta": delta, "finish_reason": null})),
        chunk(serde_json::json!({"index": 0, "delta": {}, "finish_reason": finish})),
        "data: [DONE]\n\n".to_owned(),
    ];
    Some(stream(st.clone(), "text/event-stream", events, false))
}

/// Sends `parts` as separate chunks; while streams are held, waits after
/// the first; when `cut`, breaks off after the first.
fn stream(st: Arc<State>, content_type: &str, parts: Vec<String>, cut: bool) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        for (i, part) in parts.into_iter().enumerate() {
            if i == 1 {
                if cut {
                    // The first event reaches the client before the break.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = tx.send(Err(std::io::Error::other("upstream cut the stream"))).await;
                    return;
                }
                let release = st.release.notified();
                if *lock(&st.hold) {
                    release.await;
                }
            }
            if tx.send(Ok(Frame::data(Bytes::from(part)))).await.is_err() {
                return;
            }
        }
    });
    let body = ChannelBody(rx).boxed();
    let mut r = Response::new(body);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// How long a stalling answer stalls.
const STALL: Duration = Duration::from_secs(120);

/// A 2xx stream whose first event comes at once and the next never (for
/// [`STALL`]).
fn stall_body() -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    tokio::spawn(async move {
        let first = format!(
            "data: {}\r\n\r\n",
            responses::generate_chunk("gemini-2.5-flash", 0, 3, &responses::Usage::default())
        );
        if tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_ok() {
            tokio::time::sleep(STALL).await;
        }
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/event-stream"));
    r
}

/// A 2xx head, then a break before any byte of the body.
fn cut_at_head() -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    tokio::spawn(async move {
        let _ = tx.send(Err(std::io::Error::other("cut at the head"))).await;
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/event-stream"));
    r
}

/// A 2xx JSON answer that declares its whole length, sends half of it and
/// breaks off.
fn cut_json(model: &str, key: &str) -> Response<Body> {
    let whole = responses::generate(model, &responses::Usage::for_body(key.len())).to_string().into_bytes();
    let half = Bytes::from(whole[..whole.len() / 2].to_vec());
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    tokio::spawn(async move {
        if tx.send(Ok(Frame::data(half))).await.is_ok() {
            // The half goes out before the break.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send(Err(std::io::Error::other("cut short"))).await;
        }
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&whole.len().to_string()) {
        r.headers_mut().insert(hyper::header::CONTENT_LENGTH, v);
    }
    r
}

/// A 500 that starts like Google's error and never ends: 64 KiB of padding
/// after padding, for as long as the reader reads.
fn endless_error() -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    tokio::spawn(async move {
        let head = r#"{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL","padding":""#;
        if tx.send(Ok(Frame::data(Bytes::from_static(head.as_bytes())))).await.is_err() {
            return;
        }
        let pad = Bytes::from(vec![b'x'; 64 * 1024]);
        while tx.send(Ok(Frame::data(pad.clone()))).await.is_ok() {}
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// A body fed by a channel; an `Err` item breaks the stream off.
struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}

async fn control(st: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    match path.as_str() {
        "/_fake/requests" => {
            let v = serde_json::to_value(&*lock(&st.requests)).unwrap_or_default();
            json(StatusCode::OK, &v)
        }
        "/_fake/reset" => {
            *lock(&st.projects) = projects::Projects::default();
            *lock(&st.live) = live::LiveState::default();
            lock(&st.requests).clear();
            lock(&st.behaviors).clear();
            *lock(&st.default) = None;
            *lock(&st.hold) = false;
            st.release.notify_waiters();
            json(StatusCode::OK, &serde_json::json!({"ok": true}))
        }
        "/_fake/hold" => {
            *lock(&st.hold) = true;
            json(StatusCode::OK, &serde_json::json!({"ok": true}))
        }
        "/_fake/release" => {
            *lock(&st.hold) = false;
            st.release.notify_waiters();
            json(StatusCode::OK, &serde_json::json!({"ok": true}))
        }
        "/_fake/behavior" => {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let (Some(key), Some(b)) = (
                v.get("key").and_then(|k| k.as_str()),
                v.get("behavior").and_then(|b| b.as_str()).and_then(Behavior::parse),
            ) else {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "want {\"key\": ..., \"behavior\": ...}"}),
                );
            };
            if key == "*" {
                *lock(&st.default) = Some(b);
            } else {
                lock(&st.behaviors).insert(key.to_owned(), b);
            }
            json(StatusCode::OK, &serde_json::json!({"ok": true}))
        }
        _ => json(StatusCode::NOT_FOUND, &serde_json::json!({"error": "unknown control path"})),
    }
}
