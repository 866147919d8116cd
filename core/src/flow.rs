//! One request's path through the proxy, as the hosts drive it:
//! [`admit`] decides what the request is and whether it may pass;
//! [`Attempts`] remembers which keys it tried and decides when to stop;
//! [`upstream_request`] builds what goes upstream for a lease.

use crate::auth::{Credentials, percent_decode};
use crate::config::{Config, UpstreamBase};
use crate::error::{Dialect, ProxyError, Response};
use crate::headers::{self, forward_request_header};
use crate::pool::{Lease, Outcome, Report, Unavailable};
use crate::route::{self, Forward, MAX_BODY_BYTES, Routed, Target};
use crate::secret::{self, KeyId};
use crate::session;
use crate::upstream::{self, Verdict};

/// At most this many upstream attempts (so keys) per request.
pub const MAX_ATTEMPTS: usize = 5;

/// The largest upstream error body read for classification and relaying.
pub const MAX_ERROR_BODY_BYTES: usize = 1024 * 1024;

/// Decides what a request is and whether it may pass: routing, dialect,
/// authorisation, and the declared body size.
pub fn admit(
    cfg: &Config,
    method: &str,
    path_and_query: &str,
    headers: &[(String, Vec<u8>)],
) -> Result<Routed, (ProxyError, Dialect)> {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let creds = Credentials::from_request(headers, query);
    let routed = route::route(method, path, query, &creds);
    check(cfg, path, &creds, routed, headers)
}

/// The checks of [`admit`] on an already routed request: authorisation
/// first, then the routing outcome, then the declared body size.
fn check(
    cfg: &Config,
    path: &str,
    creds: &Credentials,
    routed: Result<Routed, ProxyError>,
    headers: &[(String, Vec<u8>)],
) -> Result<Routed, (ProxyError, Dialect)> {
    let dialect = match &routed {
        Ok(r) => r.dialect,
        Err(_) => route::fallback_dialect(path, creds),
    };
    creds.authorize(cfg.proxy_key.as_ref()).map_err(|e| (e, dialect))?;
    let routed = routed.map_err(|e| (e, dialect))?;
    if let Some(len) = headers::get(headers, "content-length") {
        match len.trim().parse::<u64>() {
            Ok(n) if n > MAX_BODY_BYTES => {
                return Err((ProxyError::PayloadTooLarge { limit: MAX_BODY_BYTES }, dialect));
            }
            Ok(_) => {}
            Err(_) => return Err((ProxyError::BadRequest("invalid content-length header".into()), dialect)),
        }
    }
    Ok(routed)
}

/// Header the `/stat` page sends with its reset; a cross-site form cannot
/// set it, so a cookie alone never resets.
pub const ACTION_HEADER: &str = "x-gemini-proxy-action";

/// What a host does with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Answer this, as it is.
    Respond(Response),
    /// Relay upstream.
    Forward(Forward),
    /// `/stat.json`: render the snapshot with [`stats_json`].
    StatsJson,
    /// `/stat`: render the snapshot with [`stats_page`].
    StatsPage,
    /// `POST /stat/reset`: reset the store, answer [`reset_done`].
    StatsReset,
    /// `POST /stat/login`: read the form body, answer [`login`].
    StatsLogin,
}

/// Decides what to do with a request: the API routes through [`admit`];
/// the `/stat` routes also accept the page's session cookie, answer a
/// browser without credentials with the login page, and turn a `?key=`
/// visit into a session and a redirect to the clean URL.
pub fn decide(cfg: &Config, method: &str, path_and_query: &str, headers: &[(String, Vec<u8>)]) -> Decision {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    if method.eq_ignore_ascii_case("OPTIONS") && !path.starts_with("/stat") {
        let mut r = Response::json(204, String::new());
        r.headers = headers::preflight(headers);
        return Decision::Respond(r);
    }
    let creds = Credentials::from_request(headers, query);
    // Routed once: API routes (and routing errors) go through the API
    // checks, the /stat routes through their own rules below.
    let (target, dialect) = match route::route(method, path, query, &creds) {
        Ok(Routed { target, dialect }) if !matches!(target, Target::Forward(_)) => (target, dialect),
        routed => {
            return match check(cfg, path, &creds, routed, headers) {
                Ok(Routed { target: Target::Forward(f), .. }) => Decision::Forward(f),
                Ok(Routed { dialect, .. }) => Decision::Respond(
                    ProxyError::Internal("a /stat route reached the API checks".into()).to_response(dialect),
                ),
                Err((e, d)) => Decision::Respond(e.to_response(d)),
            };
        }
    };
    let key = cfg.proxy_key.as_ref();
    let by_credential = creds.authorize(key).is_ok();
    let by_cookie = key.is_some_and(|k| session::is_valid(headers, k));
    let unauthorized = |why| Decision::Respond(ProxyError::Unauthorized(why).to_response(dialect));
    match target {
        Target::StatsPage => match (key, &creds.query_key) {
            (Some(k), Some(q)) if k.matches(q) => {
                let mut r = Response::redirect("/stat");
                r.headers.push(("set-cookie".into(), session::set_cookie(k, session::is_https(headers))));
                Decision::Respond(r)
            }
            _ if by_credential || by_cookie => Decision::StatsPage,
            _ => {
                let error = creds.query_key.is_some().then_some("That is not this proxy's key.");
                Decision::Respond(Response::html(401, crate::page::login(error)))
            }
        },
        Target::StatsJson if by_credential || by_cookie => Decision::StatsJson,
        Target::StatsJson => unauthorized("this proxy needs its access key (PROXY_API_KEY) for /stat.json"),
        Target::StatsReset => {
            let header_credential = creds.bearer.is_some() || creds.goog_api_key.is_some();
            let from_page = headers::get(headers, ACTION_HEADER).is_some_and(|v| v == "reset");
            if !(by_credential || by_cookie) {
                unauthorized("this proxy needs its access key (PROXY_API_KEY) to reset")
            } else if (by_credential && header_credential) || from_page {
                Decision::StatsReset
            } else {
                Decision::Respond(
                    ProxyError::Forbidden(
                        "a reset needs the key in a header (Authorization: Bearer or x-goog-api-key) or the /stat page's button",
                    )
                    .to_response(dialect),
                )
            }
        }
        Target::StatsLogin => Decision::StatsLogin,
        Target::Forward(f) => Decision::Forward(f),
    }
}

/// Answers the login form (`key=…`, form-encoded): a session and a
/// redirect to `/stat`, or the login page again.
pub fn login(cfg: &Config, headers: &[(String, Vec<u8>)], body: &[u8]) -> Response {
    let form = String::from_utf8_lossy(body);
    let given = form
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "key")
        .map(|(_, v)| percent_decode(v))
        .unwrap_or_default();
    match &cfg.proxy_key {
        None => Response::redirect("/stat"),
        Some(k) if k.matches(&given) => {
            let mut r = Response::redirect("/stat");
            r.headers.push(("set-cookie".into(), session::set_cookie(k, session::is_https(headers))));
            r
        }
        Some(_) => Response::html(401, crate::page::login(Some("That is not this proxy's key."))),
    }
}

/// The `/stat.json` answer.
pub fn stats_json(snapshot: &crate::stats::Snapshot) -> Response {
    let mut r = Response::json(200, snapshot.to_json().to_string());
    r.headers.push(("cache-control".into(), "no-store".into()));
    r
}

/// The `/stat` answer.
pub fn stats_page(snapshot: &crate::stats::Snapshot) -> Response {
    Response::html(200, crate::page::render(snapshot))
}

/// The answer to a reset.
pub fn reset_done() -> Response {
    Response::json(200, r#"{"reset":true}"#.to_owned())
}

/// What to do after an upstream answer that is not a 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try another key; send this report along with the next acquire.
    Retry(Report),
    /// Relay the answer, with this redacted body, and send the report.
    Relay {
        /// The attempt's report.
        report: Report,
        /// The upstream body, redacted.
        body: String,
    },
}

/// The report of the attempt that ended a request with a 2xx: a success, or
/// a transport error when the stream broke off on the way.
pub fn finished(lease: &Lease, model: &str, stream_error: Option<String>) -> Report {
    let outcome = match stream_error {
        None => Outcome::Success,
        Some(reason) => Outcome::TransportError { reason: secret::redact(&reason, &[&lease.secret]) },
    };
    Report { key: lease.id.clone(), model: model.to_owned(), outcome }
}

/// The keys one request tried, and what happened.
#[derive(Debug, Default)]
pub struct Attempts {
    tried: Vec<KeyId>,
    last_failure: Option<Outcome>,
    all_rate_limited: bool,
}

impl Attempts {
    /// A fresh context.
    pub fn new() -> Self {
        Self { tried: Vec::new(), last_failure: None, all_rate_limited: true }
    }

    /// The keys not to hand out again.
    pub fn tried(&self) -> &[KeyId] {
        &self.tried
    }

    /// Whether another attempt is allowed.
    pub fn may_try_again(&self) -> bool {
        self.tried.len() < MAX_ATTEMPTS
    }

    /// Records a failed attempt that will be retried.
    pub fn failed(&mut self, id: KeyId, outcome: Outcome) {
        self.all_rate_limited &= matches!(outcome, Outcome::RateLimited(_));
        self.tried.push(id);
        self.last_failure = Some(outcome);
    }

    /// An attempt that could not reach the upstream: recorded, to be retried;
    /// returns its report.
    pub fn transport_failed(&mut self, lease: &Lease, model: &str, reason: &str) -> Report {
        let outcome = Outcome::TransportError { reason: secret::redact(reason, &[&lease.secret]) };
        self.failed(lease.id.clone(), outcome.clone());
        Report { key: lease.id.clone(), model: model.to_owned(), outcome }
    }

    /// Classifies a non-2xx answer from its (bounded) body: a failed
    /// attempt to retry, or an answer to relay, redacted.
    pub fn answered(&mut self, lease: &Lease, model: &str, status: u16, body: &[u8]) -> Next {
        let redact = |text: &str| secret::redact(text, &[&lease.secret]);
        let report = |outcome| Report { key: lease.id.clone(), model: model.to_owned(), outcome };
        let relay = |outcome| Next::Relay { report: report(outcome), body: redact(&String::from_utf8_lossy(body)) };
        match upstream::classify(status, body, redact) {
            Verdict::Retry(outcome) => {
                self.failed(lease.id.clone(), outcome.clone());
                Next::Retry(report(outcome))
            }
            Verdict::Relay(outcome) => relay(outcome),
            Verdict::Success => relay(Outcome::Success),
        }
    }

    /// Records the key of an attempt that succeeded or is relayed.
    pub fn used(&mut self, id: KeyId) {
        self.tried.push(id);
    }

    /// The error to answer with once no further attempt is possible:
    /// `unavailable` is why the pool had no key (or `None` when the
    /// attempt limit was hit).
    pub fn give_up(&self, model: &str, unavailable: Option<Unavailable>) -> ProxyError {
        let last = || match &self.last_failure {
            Some(Outcome::RateLimited(rl)) => format!("rate-limited: {}", rl.reason),
            Some(Outcome::KeyRejected { reason }) => format!("key rejected: {reason}"),
            Some(Outcome::UpstreamError { status, reason }) => format!("HTTP {status}: {reason}"),
            Some(Outcome::TransportError { reason }) => format!("could not reach the upstream: {reason}"),
            Some(Outcome::Success | Outcome::ClientError { .. }) | None => "none".to_owned(),
        };
        match unavailable {
            Some(Unavailable::AllLimited { until, retry_after_ms, keys }) => {
                ProxyError::AllKeysLimited { model: model.to_owned(), keys, until, retry_after_ms }
            }
            Some(Unavailable::NoUsableKey { why }) => ProxyError::NoUsableKey { model: model.to_owned(), why },
            Some(Unavailable::AllTried) | None if self.all_rate_limited && !self.tried.is_empty() => {
                ProxyError::RateLimitedEverywhere { attempts: self.tried.len(), last: last() }
            }
            Some(Unavailable::AllTried) | None => {
                ProxyError::UpstreamFailed { attempts: self.tried.len(), last: last() }
            }
        }
    }
}

/// An upstream request, ready to send.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamRequest<'a> {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The upstream (scheme and authority).
    pub base: &'a UpstreamBase,
    /// Path and query, below the base path.
    pub path_and_query: String,
    /// Headers, including the pool key as the one credential.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for UpstreamRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither headers (the pool key) nor the query are shown.
        f.debug_struct("UpstreamRequest")
            .field("method", &self.method)
            .field("base", &self.base.to_string())
            .field("path", &self.path_and_query.split('?').next())
            .finish_non_exhaustive()
    }
}

/// Builds the upstream request for `fwd` with the leased key: the client's
/// headers minus every credential and hop-by-hop header, plus exactly one
/// credential, the pool key, in the upstream API's own form.
pub fn upstream_request<'a>(
    cfg: &'a Config,
    fwd: &Forward,
    client_headers: &[(String, Vec<u8>)],
    lease: &Lease,
    body_len: usize,
) -> UpstreamRequest<'a> {
    let (base, cred_name, cred_value) = match fwd.dialect {
        Dialect::Gemini => (&cfg.gemini_upstream, "x-goog-api-key", lease.secret.expose().to_owned()),
        Dialect::OpenAi => (&cfg.openai_upstream, "authorization", format!("Bearer {}", lease.secret.expose())),
    };
    let mut headers: Vec<(String, Vec<u8>)> = client_headers
        .iter()
        .filter(|(name, _)| forward_request_header(name))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    headers.push((cred_name.to_owned(), cred_value.into_bytes()));
    let method = fwd.op.method();
    if method == "POST" {
        headers.push(("content-length".to_owned(), body_len.to_string().into_bytes()));
        if headers::get(&headers, "content-type").is_none() {
            headers.push(("content-type".to_owned(), b"application/json".to_vec()));
        }
    }
    let mut path_and_query = format!("{}{}", base.path, fwd.upstream_path);
    if !fwd.upstream_query.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&fwd.upstream_query);
    }
    UpstreamRequest { method, base, path_and_query, headers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{RateLimit, RateLimitScope};
    use crate::route::Target;
    use crate::secret::ApiKey;
    use crate::time::UnixMillis;

    fn cfg(proxy_key: Option<&str>) -> Config {
        Config::from_lookup(|v| match v {
            "PROXY_API_KEY" => proxy_key.map(str::to_owned),
            "GEMINI_UPSTREAM_URL" => Some("http://127.0.0.1:9/v1beta".into()),
            "OPENAI_UPSTREAM_URL" => Some("http://127.0.0.1:9/v1beta/openai/".into()),
            _ => None,
        })
        .expect("config")
    }
    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect()
    }
    fn lease() -> Lease {
        let secret = ApiKey::new("AIzaSyPOOLKEYpoolkeyPOOLKEYpoolkey00001");
        Lease { id: secret.id(), secret }
    }
    fn forward(r: Routed) -> Forward {
        match r.target {
            Target::Forward(f) => f,
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn auth_is_checked_before_anything_else() {
        let c = cfg(Some("proxy-key-123456"));
        let (e, d) =
            admit(&c, "POST", "/v1/chat/completions", &h(&[("authorization", "Bearer wrong")])).expect_err("401");
        assert_eq!((e.status(), d), (401, Dialect::OpenAi));
        let (e, d) = admit(&c, "POST", "/v1beta/models/m:generateContent", &[]).expect_err("401");
        assert_eq!((e.status(), d), (401, Dialect::Gemini));
        let (e, _) = admit(&c, "GET", "/nope", &[]).expect_err("401 first");
        assert_eq!(e.status(), 401);
        assert!(admit(&c, "POST", "/v1beta/models/m:generateContent?key=proxy-key-123456", &[]).is_ok());
        assert!(
            admit(&c, "POST", "/v1beta/models/m:generateContent", &h(&[("x-goog-api-key", "proxy-key-123456")]))
                .is_ok()
        );
        let (e, _) = admit(&cfg(None), "GET", "/nope", &[]).expect_err("404");
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn oversized_bodies_are_refused_by_header() {
        let (e, _) = admit(&cfg(None), "POST", "/v1/chat/completions", &h(&[("content-length", "99999999999")]))
            .expect_err("413");
        assert_eq!(e.status(), 413);
    }

    #[test]
    fn upstream_gets_exactly_one_credential_the_pool_key() {
        let c = cfg(None);
        let client = h(&[
            ("Authorization", "Bearer client-secret"),
            ("X-Goog-Api-Key", "client-secret"),
            ("Host", "proxy.local"),
            ("Connection", "keep-alive"),
            ("Content-Type", "application/json"),
            ("User-Agent", "google-genai-sdk/1.0"),
            ("Cookie", "gp_session=x"),
        ]);
        let f = forward(
            admit(&c, "POST", "/v1/models/gemini-2.5-flash:generateContent?key=client-secret&alt=sse", &client)
                .expect("ok"),
        );
        let up = upstream_request(&c, &f, &client, &lease(), 10);
        assert_eq!(up.path_and_query, "/v1beta/models/gemini-2.5-flash:generateContent?alt=sse");
        assert_eq!(up.method, "POST");
        let creds: Vec<&str> = up
            .headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n == "authorization" || *n == "x-goog-api-key")
            .collect();
        assert_eq!(creds, ["x-goog-api-key"]);
        assert_eq!(headers::get(&up.headers, "x-goog-api-key"), Some("AIzaSyPOOLKEYpoolkeyPOOLKEYpoolkey00001"));
        for gone in ["host", "connection", "cookie"] {
            assert!(headers::get(&up.headers, gone).is_none(), "{gone}");
        }
        assert!(!format!("{up:?}").contains("AIzaSyPOOL"));
        assert!(!format!("{up:?}").contains("alt=sse"));

        let mut f = forward(admit(&c, "POST", "/v1/chat/completions", &client).expect("ok"));
        f.bind_body(br#"{"model":"gemini-2.5-flash"}"#).expect("body");
        let up = upstream_request(&c, &f, &client, &lease(), 28);
        assert_eq!(up.path_and_query, "/v1beta/openai/chat/completions");
        assert_eq!(headers::get(&up.headers, "authorization"), Some("Bearer AIzaSyPOOLKEYpoolkeyPOOLKEYpoolkey00001"));
        assert!(headers::get(&up.headers, "x-goog-api-key").is_none());

        let f = forward(admit(&c, "GET", "/v1/models", &h(&[("authorization", "Bearer x")])).expect("ok"));
        let up = upstream_request(&c, &f, &[], &lease(), 0);
        assert_eq!((up.method, up.path_and_query.as_str()), ("GET", "/v1beta/openai/models"));
    }

    #[test]
    fn stat_routes_take_credentials_or_the_session() {
        let c = cfg(Some("proxy-key-123456"));
        let key = c.proxy_key.clone().expect("key");
        // A browser without anything: the login page.
        match decide(&c, "GET", "/stat", &[]) {
            Decision::Respond(r) => {
                assert_eq!(r.status, 401);
                assert!(r.content_type.starts_with("text/html") && r.body.contains("/stat/login"));
            }
            d => panic!("{d:?}"),
        }
        // ?key= opens a session and redirects to the clean URL.
        match decide(&c, "GET", "/stat?key=proxy-key-123456", &[]) {
            Decision::Respond(r) => {
                assert_eq!(r.status, 303);
                assert!(r.headers.contains(&("location".into(), "/stat".into())));
                let cookie = &r.headers.iter().find(|(k, _)| k == "set-cookie").expect("cookie").1;
                assert!(cookie.contains("HttpOnly") && !cookie.contains("proxy-key-123456"));
            }
            d => panic!("{d:?}"),
        }
        let session = h(&[("cookie", &format!("gp_session={}", session::token(&key)))]);
        assert_eq!(decide(&c, "GET", "/stat", &session), Decision::StatsPage);
        assert_eq!(decide(&c, "GET", "/stat.json", &session), Decision::StatsJson);
        assert_eq!(
            decide(&c, "GET", "/stat", &h(&[("authorization", "Bearer proxy-key-123456")])),
            Decision::StatsPage
        );
        assert_eq!(decide(&c, "GET", "/stat", &h(&[("x-goog-api-key", "proxy-key-123456")])), Decision::StatsPage);
        // Reset: a cookie alone is not enough (cross-site forms carry none of the header).
        match decide(&c, "POST", "/stat/reset", &session) {
            Decision::Respond(r) => assert_eq!(r.status, 403),
            d => panic!("{d:?}"),
        }
        let mut from_page = session.clone();
        from_page.push((ACTION_HEADER.into(), b"reset".to_vec()));
        assert_eq!(decide(&c, "POST", "/stat/reset", &from_page), Decision::StatsReset);
        assert_eq!(
            decide(&c, "POST", "/stat/reset", &h(&[("authorization", "Bearer proxy-key-123456")])),
            Decision::StatsReset
        );
        match decide(&c, "POST", "/stat/reset", &[]) {
            Decision::Respond(r) => assert_eq!(r.status, 401),
            d => panic!("{d:?}"),
        }
        // The login form.
        let r = login(&c, &[], b"key=proxy-key-123456");
        assert_eq!(r.status, 303);
        assert!(r.headers.iter().any(|(k, v)| k == "set-cookie" && v.contains(&session::token(&key))));
        assert_eq!(login(&c, &[], b"key=wrong").status, 401);
        // API routes still answer JSON.
        match decide(&c, "POST", "/v1/chat/completions", &[]) {
            Decision::Respond(r) => assert!(r.content_type.starts_with("application/json")),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn browsers_get_cors() {
        let c = cfg(Some("proxy-key-123456"));
        match decide(
            &c,
            "OPTIONS",
            "/v1/chat/completions",
            &h(&[("access-control-request-headers", "authorization, content-type")]),
        ) {
            Decision::Respond(r) => {
                assert_eq!(r.status, 204);
                assert!(r.headers.contains(&("access-control-allow-origin".into(), "*".into())));
                assert!(
                    r.headers.contains(&("access-control-allow-headers".into(), "authorization, content-type".into()))
                );
            }
            d => panic!("{d:?}"),
        }
        match decide(&c, "POST", "/v1/chat/completions", &[]) {
            Decision::Respond(r) => assert!(r.headers.contains(&("access-control-allow-origin".into(), "*".into()))),
            d => panic!("{d:?}"),
        }
        // The /stat page stays same-origin.
        assert!(!matches!(decide(&c, "OPTIONS", "/stat/reset", &[]), Decision::Respond(r) if r.status == 204));
    }

    #[test]
    fn no_input_panics() {
        // A deterministic spray of hostile request lines through admission
        // and body binding.
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
        let c = cfg(Some("k-123456789012"));
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut path = String::new();
            for _ in 0..(seed % 9) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                path.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            for method in ["GET", "POST", "DELETE", ""] {
                let headers = h(&[("x-goog-api-key", "k-123456789012"), ("content-length", "12")]);
                if let Ok(Routed { target: Target::Forward(mut f), .. }) = admit(&c, method, &path, &headers) {
                    let _ = f.bind_body(path.as_bytes());
                    let _ = upstream_request(&c, &f, &headers, &lease(), path.len());
                }
            }
        }
    }

    #[test]
    fn answers_are_classified_recorded_and_redacted() {
        let l = lease();
        let mut a = Attempts::new();
        let per_day = br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}"#;
        match a.answered(&l, "m", 429, per_day) {
            Next::Retry(r) => assert!(matches!(r.outcome, Outcome::RateLimited(_)) && r.key == l.id && r.model == "m"),
            n => panic!("{n:?}"),
        }
        assert_eq!(a.tried(), std::slice::from_ref(&l.id));
        let leaky = format!(
            r#"{{"error":{{"code":403,"message":"no access to tuned model for {}","status":"PERMISSION_DENIED"}}}}"#,
            l.secret.expose()
        );
        match a.answered(&l, "m", 403, leaky.as_bytes()) {
            Next::Relay { report, body } => {
                assert_eq!(report.outcome, Outcome::ClientError { status: 403 });
                assert!(!body.contains(l.secret.expose()), "{body}");
            }
            n => panic!("{n:?}"),
        }
        let r = a.transport_failed(&l, "m", &format!("refused for {}", l.secret.expose()));
        assert!(matches!(&r.outcome, Outcome::TransportError { reason } if !reason.contains(l.secret.expose())));
        assert_eq!(finished(&l, "m", None).outcome, Outcome::Success);
        assert!(matches!(finished(&l, "m", Some("cut".into())).outcome, Outcome::TransportError { .. }));
    }

    #[test]
    fn attempts_are_bounded_and_explain_themselves() {
        let mut a = Attempts::new();
        let rl = Outcome::RateLimited(RateLimit {
            scope: RateLimitScope::PerMinute,
            retry_after_ms: None,
            reason: "slow down".into(),
        });
        for i in 0..MAX_ATTEMPTS {
            assert!(a.may_try_again());
            a.failed(KeyId::from_string(format!("k{i}")), rl.clone());
        }
        assert!(!a.may_try_again());
        assert_eq!(a.give_up("m", None).status(), 429);
        let mut b = Attempts::new();
        b.failed(KeyId::from_string("k"), Outcome::UpstreamError { status: 503, reason: "overloaded".into() });
        let e = b.give_up("m", Some(Unavailable::AllTried));
        assert_eq!(e.status(), 502);
        assert!(e.to_string().contains("overloaded"));
        let e = Attempts::new()
            .give_up("m", Some(Unavailable::AllLimited { until: UnixMillis(5_000), retry_after_ms: 1_000, keys: 2 }));
        assert_eq!(e.status(), 429);
        let e = Attempts::new().give_up("m", Some(Unavailable::NoUsableKey { why: "all disabled".into() }));
        assert_eq!(e.status(), 503);
    }
}
