//! A scriptable fake of Google's Gemini API for tests and benchmarks.
//!
//! It speaks the native API (generateContent, both stream forms,
//! countTokens, embedContent, batchEmbedContents, models) and the
//! OpenAI-compatible routes under `/v1beta/openai`, in the shapes the
//! official SDKs parse. What each key gets is scriptable ([`Behavior`]); every
//! request is recorded ([`Recorded`]); two credentials in one request get
//! Google's 400 "Multiple authentication credentials received".
//!
//! Remote control (for tests in other processes): `POST /_fake/behavior`
//! with `{"key": "...", "behavior": "per-day"}` (or `"key": "*"` for the
//! default), `GET /_fake/requests`, `POST /_fake/reset`, and `POST
//! /_fake/hold` / `POST /_fake/release` to hold streams after their first
//! chunk.
#![deny(missing_docs)]

mod responses;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use std::collections::HashMap;
use std::convert::Infallible;
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
    /// 400 `FAILED_PRECONDITION` "User location is not supported".
    Location,
    /// This 5xx status.
    ServerError(u16),
    /// A 2xx stream that breaks off after the first chunk.
    CutMidStream,
    /// Headers only after this many milliseconds.
    SlowHeaders(u64),
    /// A 500 whose body never ends (a proxy that reads error bodies whole
    /// never answers).
    EndlessError,
}

impl Behavior {
    /// Parses `ok`, `per-day`, `per-minute[:SECS]`, `bare-429`, `invalid`,
    /// `suspended`, `location`, `5xx:STATUS`, `cut`, `slow:MS`, `endless-error`.
    pub fn parse(s: &str) -> Option<Self> {
        let (name, arg) = s.split_once(':').map_or((s, None), |(a, b)| (a, Some(b)));
        Some(match name {
            "ok" => Self::Ok,
            "per-day" => Self::PerDay,
            "per-minute" => Self::PerMinute(arg.map_or(Some(30), |a| a.parse().ok())?),
            "bare-429" => Self::Bare429,
            "invalid" => Self::Invalid,
            "suspended" => Self::Suspended,
            "location" => Self::Location,
            "5xx" => Self::ServerError(arg.map_or(Some(503), |a| a.parse().ok())?),
            "cut" => Self::CutMidStream,
            "slow" => Self::SlowHeaders(arg?.parse().ok()?),
            "endless-error" => Self::EndlessError,
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
    /// The body.
    #[serde(skip)]
    pub body: Vec<u8>,
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
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(st, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
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

    /// Forgets recorded requests and behaviors.
    pub fn reset(&self) {
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

fn credentials(req: &Request<Incoming>) -> Vec<(Mechanism, String)> {
    let mut out = Vec::new();
    if let Some(v) = req.headers().get("x-goog-api-key").and_then(|v| v.to_str().ok()) {
        out.push((Mechanism::GoogApiKey, v.to_owned()));
    }
    if let Some(v) = req.headers().get("authorization").and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        out.push((Mechanism::Bearer, t.to_owned()));
    }
    if let Some(q) = req.uri().query() {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("key=") {
                out.push((Mechanism::Query, v.to_owned()));
            }
        }
    }
    out
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_fake/") {
        return control(st, req).await;
    }
    let method = req.method().to_string();
    let query = req.uri().query().map(str::to_owned);
    let creds = credentials(&req);
    let header_names = req.headers().keys().map(|k| k.as_str().to_owned()).collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let body_json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let openai = path.starts_with("/v1beta/openai/");
    let model = if openai {
        body_json
            .get("model")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .or_else(|| path.strip_prefix("/v1beta/openai/models/").map(str::to_owned))
    } else {
        path.strip_prefix("/v1beta/models/").map(|rest| rest.split(':').next().unwrap_or(rest).to_owned())
    };
    let record = Recorded {
        method,
        path: path.clone(),
        query: query.clone(),
        credentials: creds.clone(),
        model: model.clone(),
        header_names,
        body,
    };
    lock(&st.requests).push(record);

    let wrap = |v: serde_json::Value| if openai { serde_json::Value::Array(vec![v]) } else { v };
    let key = match creds.as_slice() {
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
        Behavior::EndlessError => return endless_error(),
        Behavior::Ok | Behavior::CutMidStream => None,
    };
    if let Some((status, body)) = failure {
        return json(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &wrap(body));
    }
    let cut = behavior == Behavior::CutMidStream;
    let chunks = *lock(&st.stream_chunks);
    let sse = query.as_deref().is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
    let action = path.rsplit_once(':').map(|(_, a)| a.to_owned());
    if openai {
        let rest = path.trim_start_matches("/v1beta/openai");
        return match rest {
            "/chat/completions" if body_json.get("stream").and_then(|s| s.as_bool()) == Some(true) => {
                let events = responses::openai_chat_stream(&model_name, chunks);
                stream(st, "text/event-stream", events, cut)
            }
            "/chat/completions" => json(StatusCode::OK, &responses::openai_chat(&model_name, &key)),
            "/embeddings" => json(StatusCode::OK, &responses::openai_embeddings(&model_name, &body_json)),
            "/models" => json(StatusCode::OK, &responses::openai_models()),
            r if r.starts_with("/models/") => json(StatusCode::OK, &responses::openai_model(&model_name)),
            _ => json(StatusCode::NOT_FOUND, &wrap(responses::error(404, "Not found", "NOT_FOUND"))),
        };
    }
    match action.as_deref() {
        Some("generateContent") => json(StatusCode::OK, &responses::generate(&model_name, &key)),
        Some("streamGenerateContent") if sse => {
            let events = (0..chunks)
                .map(|i| format!("data: {}\r\n\r\n", responses::generate_chunk(&model_name, i, chunks)))
                .collect();
            stream(st, "text/event-stream", events, cut)
        }
        Some("streamGenerateContent") => {
            let mut parts: Vec<String> = (0..chunks)
                .map(|i| {
                    format!(
                        "{}{}",
                        if i == 0 { "[" } else { ",\r\n" },
                        responses::generate_chunk(&model_name, i, chunks)
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

/// Sends `parts` as separate chunks; while streams are held, waits after
/// the first; when `cut`, breaks off after the first.
fn stream(st: Arc<State>, content_type: &str, parts: Vec<String>, cut: bool) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::spawn(async move {
        for (i, part) in parts.into_iter().enumerate() {
            if i == 1 {
                if cut {
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
