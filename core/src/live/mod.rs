//! The Live API (`BidiGenerateContent`, a WebSocket) through the pool: a
//! second sans-IO driver beside [`crate::exchange`], for sessions rather
//! than requests.
//!
//! A session differs from a request in four ways: the model comes in the
//! client's first message (`{"setup": {"model": …}}`), so the key is chosen
//! then; messages flow both ways for minutes; usage comes in server messages
//! (`usageMetadata`); and the end, and every refusal, is a close code, not
//! an HTTP status. So:
//! - [`admit`] decides, from the upgrade request alone, whether the caller
//!   may open a session (the proxy key, a client key, or an ephemeral
//!   token the proxy minted for a constrained one) and answers a refusal
//!   as the HTTP answer to the upgrade;
//! - the [`Session`] it returns drives the rest ([`Session::resume`]): it
//!   reads the setup, admits the client for the model, asks for a key,
//!   has the host open the upstream session with it (the key in a header),
//!   and reads what a close before `setupComplete` means for the key (a
//!   used-up quota marks it and the same setup goes to the next key; a
//!   policy close has the key checked alone before it is held against it);
//! - once Google said `setupComplete`, the host passes every frame through
//!   as it is, and shows the session only what Google sends
//!   ([`Session::upstream_message`]: usage, resumption handles), then how
//!   it ended ([`Event::Ended`]): one call of its key × model × client,
//!   with the tokens Google reported.
//!
//! `wasi:http` has no WebSocket, so both hosts do this I/O natively
//! (host-runner outside its component, the Worker with a `WebSocketPair`);
//! every decision is here.

mod session;
#[cfg(test)]
mod tests;

pub use session::{End, Event, Session, Step, Upstream};

use crate::config::{Config, Scheme};
use crate::google::errors::Verdict;
use crate::request::admit;
use crate::request::auth::{Credentials, query_param};
use crate::request::headers;
use crate::request::web;
use crate::wire::error::ProxyError;
use crate::wire::http::{Dialect, Response};
use crate::wire::keystore::{Claim, Outcome, RateLimit, RateLimitScope};
use crate::wire::secret::ApiKey;
use crate::wire::usage::TokenUsage;
use serde_json::Value;
use std::sync::Arc;

/// Where every Live path starts (after the SDKs' doubled slash).
pub const PATH_PREFIX: &str = "/ws/google.ai.generativelanguage.";

/// The largest first message (the setup: system instruction and tools
/// included) read.
pub const MAX_SETUP_BYTES: usize = 4 * 1024 * 1024;

/// How long the client has to send its setup.
pub const SETUP_TIMEOUT_MS: u64 = 30_000;

/// The longest an attempt may take to open Google's session and hear its
/// `setupComplete` (less when `UPSTREAM_FIRST_BYTE_TIMEOUT` is shorter):
/// the client waits through every attempt, and Python's websockets gives
/// up on a peer that answers no ping for 40 s.
pub const OPEN_TIMEOUT_MS: u64 = 10_000;

/// How long a relayed session may stay silent both ways before it is
/// ended (a client that stops reading included).
pub const IDLE_TIMEOUT_MS: u64 = 600_000;

/// The longest close reason a close frame carries (125 bytes of payload,
/// two of them the code).
pub const MAX_CLOSE_REASON: usize = 123;

/// A close: its code and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    /// The code.
    pub code: u16,
    /// The reason, at most [`MAX_CLOSE_REASON`] bytes.
    pub reason: String,
}

impl Close {
    /// A close with `reason` cut to fit a close frame.
    pub fn new(code: u16, reason: &str) -> Self {
        Self { code: sendable(code), reason: fit_reason(reason) }
    }

    /// The close that tells a client of the proxy's refusal `e`: a policy
    /// close (1008) for what the caller must change, Google's own 1011 for
    /// a quota or an upstream failure (as Google closes a session whose
    /// quota is used up), so that a client reads both alike.
    pub fn refusal(e: &ProxyError) -> Self {
        let code = match e.status() {
            429 | 500.. => 1011,
            _ => 1008,
        };
        Self::new(code, &e.to_string())
    }
}

/// A close code a close frame may carry: 1005, 1006 and 1015 only tell
/// that none came (1000 and 1011 in their place), and codes outside the
/// registered ranges are 1011.
pub fn sendable(code: u16) -> u16 {
    match code {
        1005 => 1000,
        1006 | 1015 => 1011,
        1000..=1003 | 1007..=1014 | 3000..=4999 => code,
        _ => 1011,
    }
}

/// `reason` cut at a character boundary to [`MAX_CLOSE_REASON`] bytes.
pub fn fit_reason(reason: &str) -> String {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason.to_owned();
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// Which Live method a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The API version (`v1beta`, `v1alpha`).
    pub version: String,
    /// `BidiGenerateContentConstrained`: opened with an ephemeral token.
    pub constrained: bool,
}

impl Target {
    fn method(&self) -> &'static str {
        if self.constrained { "BidiGenerateContentConstrained" } else { "BidiGenerateContent" }
    }
}

/// Whether `path` is a Live API path (`/ws/…`, however many slashes lead:
/// the SDKs join their base URL and the path with a second one). The host
/// sends such a request to [`admit`], never to the HTTP proxy.
pub fn is_live_path(path: &str) -> bool {
    path.trim_start_matches('/').starts_with("ws/")
}

/// The Live method `path` names, if any.
pub fn target(path: &str) -> Option<Target> {
    let path = format!("/{}", path.trim_start_matches('/'));
    let rest = path.strip_prefix(PATH_PREFIX)?;
    let (version, method) = rest.split_once(".GenerativeService.")?;
    let version_ok = version.len() <= 12
        && version.starts_with('v')
        && version.as_bytes().get(1).is_some_and(u8::is_ascii_digit)
        && version.bytes().all(|b| b.is_ascii_alphanumeric());
    let constrained = match method {
        "BidiGenerateContent" => false,
        "BidiGenerateContentConstrained" => true,
        _ => return None,
    };
    version_ok.then(|| Target { version: version.to_owned(), constrained })
}

/// Whether the request asks to become a WebSocket (`Upgrade: websocket`;
/// `Connection` is hop-by-hop, which an edge in front may drop).
fn is_upgrade(request_headers: &[(String, Vec<u8>)]) -> bool {
    headers::get(request_headers, "upgrade").is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// The ephemeral token a constrained session presents: `?access_token=`
/// (the JS SDK) or `Authorization: Token …` (the Python SDK).
fn ephemeral_token(request_headers: &[(String, Vec<u8>)], query: &str) -> Option<String> {
    let from_header = headers::get(request_headers, "authorization").and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("token").then(|| token.trim().to_owned())
    });
    // Only what a header can carry on (Google's tokens are `auth_tokens/…`
    // in URL-safe characters).
    from_header
        .or_else(|| query_param(query, "access_token"))
        .filter(|t| !t.is_empty() && t.len() <= 4096 && t.bytes().all(|b| b.is_ascii_graphic()))
}

/// Decides whether the upgrade request may open a session: the answer to
/// it when it may not (in Gemini's error shape, before any upgrade).
///
/// Who may: on a proxy with `PROXY_API_KEY`, a caller with that key or a
/// client key (`?key=`, `x-goog-api-key` or a bearer token; the key store
/// admits a client key at setup, for the model); on one without, anyone
/// while no client key exists, but never a page of another origin nor a
/// request under a foreign host name (a WebSocket is not kept from a page
/// by CORS); a constrained session, whoever holds an ephemeral token the
/// proxy minted (it is the authority, as an upload's id is).
pub fn admit(
    cfg: Arc<Config>,
    path_and_query: &str,
    request_headers: &[(String, Vec<u8>)],
) -> Result<Session, Response> {
    let refuse = |e: ProxyError| e.to_response(Dialect::Gemini);
    if let Some(refused) = admit::refuse_head(path_and_query, request_headers) {
        return Err(refused);
    }
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let Some(target) = target(path) else {
        return Err(refuse(ProxyError::NotFound { method: "GET".to_owned(), path: path.to_owned() }));
    };
    if !is_upgrade(request_headers) {
        return Err(refuse(ProxyError::BadRequest(
            "the Live API is a WebSocket: connect with `Upgrade: websocket` (wss:// or ws://)".into(),
        )));
    }
    let creds = Credentials::from_request(request_headers, query);
    // An open proxy serves no page of another origin and no foreign host
    // name (a WebSocket is not kept from a page by CORS): refused now when
    // nothing could make the caller a client, else once the key store says
    // it is none. An ephemeral token is Google's credential upstream: a
    // page holding one spends no pool key.
    let foreign =
        if cfg.proxy_key.is_none() && !target.constrained { web::refusal(&cfg, request_headers) } else { None };
    if let Some(e) = &foreign
        && creds == Credentials::default()
    {
        return Err(refuse(e.clone()));
    }
    let token = if target.constrained {
        match ephemeral_token(request_headers, query) {
            Some(t) => Some(ApiKey::new(t)),
            None => {
                return Err(refuse(ProxyError::Unauthorized(
                    "a constrained Live session needs its ephemeral token: `?access_token=<token>` or `Authorization: Token <token>`",
                )));
            }
        }
    } else {
        None
    };
    let claim = match (&token, &cfg.proxy_key, creds.authorize(cfg.proxy_key.as_ref())) {
        // The token is the authority: the key store knows who minted it.
        (Some(_), _, _) => Some(Claim { hashes: Vec::new(), open: cfg.proxy_key.is_none() }),
        (None, Some(_), Ok(())) => None,
        (None, Some(_), Err(e)) if creds == Credentials::default() => return Err(refuse(e)),
        (None, Some(_), Err(_)) => Some(Claim::of(&creds, false)),
        (None, None, _) => Some(Claim::of(&creds, true)),
    };
    Ok(Session::new(cfg, target, path, claim, token).with_foreign(foreign))
}

/// The URL of Google's Live method `target` for `cfg`'s upstream: its
/// origin as `wss://` (`ws://` for a plain-HTTP fake), its path without the
/// API version the REST base ends in.
fn upstream_url(cfg: &Config, target: &Target) -> String {
    let base = &cfg.gemini_upstream;
    let scheme = match base.scheme {
        Scheme::Https => "wss",
        Scheme::Http => "ws",
    };
    let root = match base.path.rsplit_once('/') {
        Some((root, last)) if last.starts_with('v') && last.as_bytes().get(1).is_some_and(u8::is_ascii_digit) => root,
        _ => base.path.as_str(),
    };
    format!("{scheme}://{}{root}{PATH_PREFIX}{}.GenerativeService.{}", base.authority, target.version, target.method())
}

/// What a client's setup says.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Setup {
    /// The model, without `models/`.
    model: String,
    /// The resumption handle of a session it resumes.
    handle: Option<String>,
}

/// Reads the client's first message: a `setup` that names a model.
fn read_setup(message: &[u8]) -> Result<(Value, Setup), &'static str> {
    const NOT_SETUP: &str =
        "the first message of a Live session must be its setup: {\"setup\": {\"model\": \"models/…\"}}";
    let v: Value = serde_json::from_slice(message).map_err(|_| NOT_SETUP)?;
    let setup = v.get("setup").filter(|s| s.is_object()).ok_or(NOT_SETUP)?;
    let model = setup.get("model").and_then(Value::as_str).unwrap_or_default();
    let model = model.strip_prefix("models/").unwrap_or(model);
    let model_ok = !model.is_empty()
        && model.len() <= 200
        && model.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._@".contains(&b));
    if !model_ok {
        return Err("the Live session's setup must name its model: {\"setup\": {\"model\": \"models/…\"}}");
    }
    let resumption = setup.get("sessionResumption").or_else(|| setup.get("session_resumption"));
    let handle = resumption.and_then(|r| r.get("handle")).and_then(Value::as_str).filter(|h| !h.is_empty());
    let setup = Setup { model: model.to_owned(), handle: handle.map(str::to_owned) };
    Ok((v, setup))
}

/// What a server message tells the session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Told {
    usage: Option<TokenUsage>,
    handle: Option<String>,
    go_away: bool,
}

/// Reads a server message for what the session keeps: its usage, a new
/// resumption handle, a `goAway`. Audio chunks (most messages) are passed
/// over by a byte search, unparsed.
fn read_server_message(message: &[u8]) -> Told {
    use memchr::memmem::find;
    let wanted = [&b"usageMetadata"[..], b"sessionResumptionUpdate", b"goAway"];
    if !wanted.iter().any(|w| find(message, w).is_some()) {
        return Told::default();
    }
    let Ok(v) = serde_json::from_slice::<Value>(message) else { return Told::default() };
    let usage = v.get("usageMetadata").filter(|u| u.is_object()).map(|u| {
        let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
        TokenUsage {
            prompt: n("promptTokenCount"),
            // Live says `responseTokenCount` where generateContent says
            // `candidatesTokenCount`.
            output: n("responseTokenCount").max(n("candidatesTokenCount")),
            cached: n("cachedContentTokenCount"),
            thinking: n("thoughtsTokenCount"),
        }
    });
    let update = v.get("sessionResumptionUpdate");
    let handle = update
        .filter(|u| u.get("resumable").and_then(Value::as_bool) != Some(false))
        .and_then(|u| u.get("newHandle"))
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .map(str::to_owned);
    Told { usage, handle, go_away: v.get("goAway").is_some() }
}

/// Whether a close reason says a quota is used up.
fn says_quota(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    ["quota", "resource_exhausted", "resource has been exhausted", "rate limit"].iter().any(|w| r.contains(w))
}

/// What Google's close of an attempt means for the key: before
/// `setupComplete`, a used-up quota (1011 that says so) is a 429 (per day
/// or per minute as its words say; Google gives no structured word here),
/// another 1011 or a "try again" (1012–1014) a 5xx, a policy close (1008:
/// a bad key, or a model the session cannot use) a refusal whose cause is
/// checked, and anything else the caller's to see.
fn classify_close(code: u16, reason: &str) -> Verdict {
    match code {
        1011 if says_quota(reason) => {
            let r = reason.to_ascii_lowercase();
            let scope = if r.contains("per day") || r.contains("perday") || r.contains("daily") {
                RateLimitScope::PerDay
            } else if r.contains("per minute") || r.contains("perminute") {
                RateLimitScope::PerMinute
            } else {
                RateLimitScope::Unknown
            };
            Verdict::Retry(Outcome::RateLimited(RateLimit { scope, retry_after_ms: None, reason: reason.to_owned() }))
        }
        1011..=1014 => Verdict::Retry(Outcome::UpstreamError { status: 503, reason: reason.to_owned() }),
        // No close frame (the connection dropped, or TLS failed), or one
        // without a code: the attempt's transport failed.
        1005 | 1006 | 1015 => Verdict::Retry(Outcome::TransportError {
            reason: if reason.is_empty() { format!("closed ({code}) without a word") } else { reason.to_owned() },
        }),
        1008 => Verdict::Suspect,
        _ => Verdict::Relay(Outcome::ClientError { status: 400 }),
    }
}
