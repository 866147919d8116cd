//! Admission: what a request is and whether it may pass. API requests go
//! through the API's checks (the proxy key, the declared body size); the
//! `/stat` routes through their own (the page's session cookie, a login
//! page for a browser without credentials, the reset's CSRF guard).

use crate::config::Config;
use crate::request::auth::Credentials;
use crate::request::headers;
use crate::request::login::Why;
use crate::request::route::{self, Forward, MAX_BODY_BYTES, MAX_UPLOAD_BYTES, Route, StatRoute};
use crate::request::session;
use crate::request::web;
use crate::wire::error::ProxyError;
use crate::wire::http::{Dialect, Lang};
use crate::wire::http::{Method, Response};
use crate::wire::keystore::Claim;
use crate::wire::keystore::StatsView;

/// Header the `/stat` page sends with its reset; a cross-site form cannot
/// set it, so a cookie alone never resets.
pub const ACTION_HEADER: &str = "x-gemini-proxy-action";

/// The largest login form body read.
pub const MAX_LOGIN_BODY_BYTES: u64 = 64 * 1024;

/// The longest request target (path and query) accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The most header bytes (names and values) a request may carry.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Why a request head is refused before anything else, if it is: a target
/// over [`MAX_URI_BYTES`] (414) or headers over [`MAX_HEADER_BYTES`] (431).
/// Hosts whose own machinery has smaller limits check this first, from the
/// sizes alone.
pub fn head_limit(uri_bytes: usize, header_bytes: usize) -> Option<ProxyError> {
    if uri_bytes > MAX_URI_BYTES {
        Some(ProxyError::UriTooLong { limit: MAX_URI_BYTES })
    } else if header_bytes > MAX_HEADER_BYTES {
        Some(ProxyError::HeadersTooLarge { limit: MAX_HEADER_BYTES })
    } else {
        None
    }
}

/// The answer to a head refused by [`head_limit`], in the caller's dialect.
pub fn refuse_head(path_and_query: &str, headers: &[(String, Vec<u8>)]) -> Option<Response> {
    let header_bytes = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    let e = head_limit(path_and_query.len(), header_bytes)?;
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    Some(e.to_response(route::fallback_dialect(path, &Credentials::from_request(headers, query))))
}

/// What a request is, once admitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Answer this, as it is.
    Respond(Response),
    /// Relay upstream, as the claim's client (none: the request carried the
    /// proxy key), which the key store admits ([`crate::store::clients`]).
    Forward(Forward, Option<Claim>),
    /// Show the statistics in this form.
    Stats(StatsView),
    /// Clear every mark and counter.
    Reset,
    /// The login form's post: its body holds the key.
    Login,
    /// An admin API request, from the admin.
    Admin(crate::request::route::AdminRoute),
    /// Decided by whether the proxy is open: without `PROXY_API_KEY`, only
    /// the key store knows whether a client key exists
    /// ([`crate::wire::keystore::AdminOp::Open`]).
    Gated {
        /// What it is when no client key exists (anyone may use the proxy).
        open: Box<Admission>,
        /// What it is once one does (every caller needs a key).
        closed: Box<Admission>,
    },
}

/// Decides what a request is and whether it may pass.
pub fn decide(cfg: &Config, method: &Method, path_and_query: &str, headers: &[(String, Vec<u8>)]) -> Admission {
    if let Some(refused) = refuse_head(path_and_query, headers) {
        return Admission::Respond(refused);
    }
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let creds = Credentials::from_request(headers, query);
    if *method == Method::Options && !path.starts_with("/stat") {
        let granted =
            Admission::Respond(Response { status: 204, headers: headers::preflight(headers), body: String::new() });
        if cfg.proxy_key.is_some() {
            return granted;
        }
        // An open proxy grants a preflight only to the origins it serves;
        // once client keys exist, to any (the page must hold one).
        let open = unless_foreign(cfg, headers, route::fallback_dialect(path, &creds), granted.clone());
        return Admission::Gated { open: Box::new(open), closed: Box::new(granted) };
    }
    let routed = route::route(method, path, query, &creds);
    let dialect = match &routed {
        Ok(Route::Api(f)) => f.dialect,
        _ => route::fallback_dialect(path, &creds),
    };
    let respond = |e: ProxyError| Admission::Respond(e.to_response(dialect));
    match routed {
        Ok(Route::Stat(stat)) => admit_stat(cfg, stat, &creds, headers, dialect, session::lang(query, headers)),
        Ok(Route::Admin(route)) => admit_admin(cfg, route, &creds, headers),
        // A routing error under /admin answers the admin (a wrong method
        // or path, with the admin key, is a 405 or 404, not a 401).
        Err(e) if path == "/admin" || path.starts_with("/admin/") => {
            if is_admin(cfg, &creds, headers) {
                respond(e)
            } else {
                admit_admin(cfg, crate::request::route::AdminRoute::List, &creds, headers)
            }
        }
        // A routing error answers only a caller the proxy lets in.
        Err(e) => respond(creds.authorize(cfg.proxy_key.as_ref()).err().unwrap_or(e)),
        Ok(Route::Api(f)) => {
            // The proxy key lets a request in at once, and one without any
            // credential is refused at once where the proxy needs a key; any
            // other credential may be a client key's, which the key store
            // knows (as it knows whether an open proxy has client keys).
            let claim = match (&cfg.proxy_key, creds.authorize(cfg.proxy_key.as_ref())) {
                (Some(_), Ok(())) => None,
                // A resumable upload's chunk may come without any: its
                // upload id, handed out to the client that started it, is
                // its authority once the key store knows the upload.
                (Some(_), Err(_)) if creds == Credentials::default() && is_upload_chunk(&f, headers) => {
                    Some(Claim { hashes: Vec::new(), open: false })
                }
                (Some(_), Err(e)) if creds == Credentials::default() => return respond(e),
                (Some(_), Err(_)) => Some(Claim::of(&creds, false)),
                (None, _) => Some(Claim::of(&creds, true)),
            };
            let limit = if f.upload { MAX_UPLOAD_BYTES } else { MAX_BODY_BYTES };
            match declared_length(headers) {
                Ok(Some(n)) if n > limit => respond(ProxyError::PayloadTooLarge { limit }),
                Ok(_) => Admission::Forward(f, claim),
                Err(e) => respond(e),
            }
        }
    }
}

/// Whether `f` continues a resumable upload: a `POST` or `PUT` that names
/// its upload and whose `X-Goog-Upload-Command` uploads, finalizes, queries
/// or cancels (never one that starts an upload).
fn is_upload_chunk(f: &Forward, headers: &[(String, Vec<u8>)]) -> bool {
    let continues = headers::get(headers, "x-goog-upload-command").is_some_and(|c| {
        c.split(',').map(str::trim).all(|part| matches!(part, "upload" | "finalize" | "query" | "cancel"))
    });
    f.upload
        && matches!(f.method, Method::Post | Method::Put)
        && continues
        && crate::google::names::upload_in_query(&f.upstream_query).is_some()
}

/// The request's declared body length, if any.
pub fn declared_length(headers: &[(String, Vec<u8>)]) -> Result<Option<u64>, ProxyError> {
    match headers::get(headers, "content-length") {
        None => Ok(None),
        Some(len) => len
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ProxyError::BadRequest("invalid content-length header".into())),
    }
}

/// Whether the request comes from the admin: `ADMIN_API_KEY` in a header
/// (a script), or the admin session with the page's action header (a
/// cross-site form can set neither).
fn is_admin(cfg: &Config, creds: &Credentials, headers: &[(String, Vec<u8>)]) -> bool {
    let Some(admin) = cfg.admin_key.as_ref() else { return false };
    let from_page = session::is_admin(headers, admin) && headers::get(headers, ACTION_HEADER) == Some("admin");
    admin_in_header(cfg, creds) || from_page
}

/// Whether the request carries `ADMIN_API_KEY` in a header.
fn admin_in_header(cfg: &Config, creds: &Credentials) -> bool {
    let admin = cfg.admin_key.as_ref();
    admin.is_some_and(|a| [&creds.bearer, &creds.goog_api_key].into_iter().flatten().any(|c| a.matches(c)))
}

/// `admission` for an open proxy, unless the request comes from the web
/// ([`web::refusal`]): then its refusal in `dialect`.
fn unless_foreign(cfg: &Config, headers: &[(String, Vec<u8>)], dialect: Dialect, admission: Admission) -> Admission {
    match web::refusal(cfg, headers) {
        Some(e) => Admission::Respond(e.to_response(dialect)),
        None => admission,
    }
}

fn admit_admin(
    cfg: &Config,
    route: crate::request::route::AdminRoute,
    creds: &Credentials,
    headers: &[(String, Vec<u8>)],
) -> Admission {
    let refuse = |e: ProxyError| Admission::Respond(e.to_response(Dialect::Gemini));
    match &cfg.admin_key {
        None => refuse(ProxyError::Forbidden("the admin API is off: set ADMIN_API_KEY to turn it on")),
        Some(_) if is_admin(cfg, creds, headers) => Admission::Admin(route),
        Some(admin) if session::is_admin(headers, admin) => {
            refuse(ProxyError::Forbidden("an admin action from a browser needs the /stat page's buttons"))
        }
        Some(_) => refuse(ProxyError::Unauthorized(
            "the admin API needs ADMIN_API_KEY: send it as `Authorization: Bearer <key>` or `x-goog-api-key: <key>`",
        )),
    }
}

/// The statistics routes. On a proxy without `PROXY_API_KEY`, what anyone
/// may see while the proxy is open needs the admin key once a client key
/// exists (the clients would see each other's use), and an open proxy shows
/// it only under its own host names, to no other origin's page.
fn admit_stat(
    cfg: &Config,
    stat: StatRoute,
    creds: &Credentials,
    headers: &[(String, Vec<u8>)],
    dialect: Dialect,
    lang: Lang,
) -> Admission {
    let page = stat == StatRoute::Page;
    let admitted = admit_stat_route(cfg, stat, creds, headers, dialect, lang);
    let admin = cfg.admin_key.as_ref();
    let by_admin = admin_in_header(cfg, creds) || admin.is_some_and(|a| session::is_admin(headers, a));
    if cfg.proxy_key.is_some() || by_admin || !matches!(admitted, Admission::Stats(_) | Admission::Reset) {
        return admitted;
    }
    let why = match admin {
        Some(_) => Why::NeedAdminKey,
        None => Why::SetAdminKey,
    };
    let closed = if page {
        Response::html(401, crate::request::login::page(Some(why), lang))
    } else {
        ProxyError::Unauthorized(why.text(Lang::En)).to_response(dialect)
    };
    let open = unless_foreign(cfg, headers, dialect, admitted);
    Admission::Gated { open: Box::new(open), closed: Box::new(Admission::Respond(closed)) }
}

fn admit_stat_route(
    cfg: &Config,
    stat: StatRoute,
    creds: &Credentials,
    headers: &[(String, Vec<u8>)],
    dialect: Dialect,
    lang: Lang,
) -> Admission {
    let key = cfg.proxy_key.as_ref();
    let admin = cfg.admin_key.as_ref();
    let admin_header = admin_in_header(cfg, creds);
    let admin_cookie = admin.is_some_and(|a| session::is_admin(headers, a));
    let by_credential = creds.authorize(key).is_ok() || admin_header;
    let by_cookie = key.is_some_and(|k| session::is_valid(headers, k)) || admin_cookie;
    let unauthorized = |why| Admission::Respond(ProxyError::Unauthorized(why).to_response(dialect));
    let https = session::is_https(headers);
    match stat {
        StatRoute::Page => match (key, admin, &creds.query_key) {
            (Some(k), _, Some(q)) if k.matches(q) => {
                Admission::Respond(Response::redirect("/stat").with_header("set-cookie", session::set_cookie(k, https)))
            }
            (_, Some(a), Some(q)) if a.matches(q) => Admission::Respond(
                Response::redirect("/stat").with_header("set-cookie", session::set_admin_cookie(a, https)),
            ),
            _ if admin_cookie || admin_header => Admission::Stats(StatsView::AdminPage(lang)),
            _ if by_credential || by_cookie => Admission::Stats(StatsView::Page(lang)),
            _ => {
                let error = creds.query_key.is_some().then_some(Why::WrongKey);
                Admission::Respond(Response::html(401, crate::request::login::page(error, lang)))
            }
        },
        StatRoute::Json if by_credential || by_cookie => Admission::Stats(StatsView::Json),
        StatRoute::Json => unauthorized("this proxy needs its access key (PROXY_API_KEY) for /stat.json"),
        StatRoute::Metrics if by_credential || by_cookie => Admission::Stats(StatsView::Metrics),
        StatRoute::Metrics => unauthorized("this proxy needs its access key (PROXY_API_KEY) for /metrics"),
        StatRoute::Reset => {
            let header_credential = creds.bearer.is_some() || creds.goog_api_key.is_some() || creds.x_api_key.is_some();
            let from_page = headers::get(headers, ACTION_HEADER).is_some_and(|v| v == "reset");
            if !(by_credential || by_cookie) {
                unauthorized("this proxy needs its access key (PROXY_API_KEY) to reset")
            } else if (by_credential && header_credential) || from_page {
                Admission::Reset
            } else {
                Admission::Respond(
                    ProxyError::Forbidden(
                        "a reset needs the key in a header (Authorization: Bearer or x-goog-api-key) or the /stat page's button",
                    )
                    .to_response(dialect),
                )
            }
        }
        StatRoute::Login => Admission::Login,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::login::login;
    use crate::test_support::{config, h};
    use crate::wire::http::{Dialect, Lang};

    fn decide(c: &Config, method: &str, pq: &str, headers: &[(String, Vec<u8>)]) -> Admission {
        super::decide(c, &Method::parse(method), pq, headers)
    }
    fn error(a: Admission) -> (u16, serde_json::Value) {
        match a {
            Admission::Respond(r) => (r.status, serde_json::from_str(&r.body).unwrap_or_default()),
            a => panic!("{a:?}"),
        }
    }

    #[test]
    fn auth_is_checked_before_anything_else() {
        let c = config(Some("proxy-key-123456"));
        // A key that is not the proxy's may be a client key's: the key
        // store decides (see the forwarding driver's tests).
        let wrong = decide(&c, "POST", "/v1/chat/completions", &h(&[("authorization", "Bearer wrong")]));
        match wrong {
            Admission::Forward(_, Some(claim)) => {
                assert_eq!(claim, Claim { hashes: vec![crate::wire::keystore::hash_secret("wrong")], open: false })
            }
            a => panic!("{a:?}"),
        }
        let (status, v) = error(decide(&c, "POST", "/v1beta/models/m:generateContent", &[]));
        assert_eq!((status, v["error"]["status"].as_str()), (401, Some("UNAUTHENTICATED")));
        assert_eq!(error(decide(&c, "GET", "/nope", &[])).0, 401, "401 before 404");
        let ok = |a: Admission| matches!(a, Admission::Forward(..));
        assert!(ok(decide(&c, "POST", "/v1beta/models/m:generateContent?key=proxy-key-123456", &[])));
        assert!(ok(decide(
            &c,
            "POST",
            "/v1beta/models/m:generateContent",
            &h(&[("x-goog-api-key", "proxy-key-123456")])
        )));
        assert_eq!(error(decide(&config(None), "GET", "/nope", &[])).0, 404);
    }

    #[test]
    fn oversized_heads_are_refused_first_in_the_callers_dialect() {
        let c = config(Some("proxy-key-123456"));
        let long = format!("/v1beta/models/m:generateContent?x={}", "a".repeat(MAX_URI_BYTES));
        let (status, v) = error(decide(&c, "POST", &long, &[]));
        assert_eq!((status, v["error"]["status"].as_str()), (414, Some("INVALID_ARGUMENT")));
        let big = "b".repeat(MAX_HEADER_BYTES);
        let (status, v) =
            error(decide(&c, "POST", "/v1/chat/completions", &h(&[("authorization", "Bearer k"), ("x-big", &big)])));
        assert_eq!((status, v["error"]["code"].as_str()), (431, Some("headers_too_large")));
        let many: Vec<(String, Vec<u8>)> = (0..80).map(|i| (format!("x-h{i}"), vec![b'v'; 2048])).collect();
        assert_eq!(error(decide(&c, "GET", "/v1beta/models", &many)).0, 431, "80 headers of 2 KB");
        assert!(head_limit(100, 1000).is_none());
    }

    #[test]
    fn wrong_methods_and_paths_under_admin_answer_the_admin_only() {
        let c = crate::test_support::config_with(Some("proxy-key-123456"), Some("admin-key-123456"));
        let admin = h(&[("authorization", "Bearer admin-key-123456")]);
        assert_eq!(error(decide(&c, "PUT", "/admin/keys", &admin)).0, 405);
        assert_eq!(error(decide(&c, "GET", "/admin/nothing", &admin)).0, 404);
        // Anyone else learns nothing about the routes: the admin key is asked for.
        let proxy = h(&[("authorization", "Bearer proxy-key-123456")]);
        for headers in [&proxy[..], &[]] {
            let (status, v) = error(decide(&c, "PUT", "/admin/keys", headers));
            assert_eq!(status, 401);
            assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("ADMIN_API_KEY")), "{v}");
        }
    }

    #[test]
    fn oversized_bodies_are_refused_by_header() {
        let a = decide(&config(None), "POST", "/v1/chat/completions", &h(&[("content-length", "99999999999")]));
        assert_eq!(error(a).0, 413);
        let a = decide(&config(None), "POST", "/v1/chat/completions", &h(&[("content-length", "ten")]));
        assert_eq!(error(a).0, 400);
    }

    #[test]
    fn stat_routes_take_credentials_or_the_session() {
        let c = config(Some("proxy-key-123456"));
        let key = c.proxy_key.clone().expect("key");
        // A browser without anything: the login page.
        match decide(&c, "GET", "/stat", &[]) {
            Admission::Respond(r) => {
                assert_eq!(r.status, 401);
                assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/html")));
                assert!(r.body.contains("/stat/login"));
            }
            d => panic!("{d:?}"),
        }
        // ?key= opens a session and redirects to the clean URL.
        match decide(&c, "GET", "/stat?key=proxy-key-123456", &[]) {
            Admission::Respond(r) => {
                assert_eq!(r.status, 303);
                assert_eq!(r.header("location"), Some("/stat"));
                let cookie = r.header("set-cookie").expect("cookie");
                assert!(cookie.contains("HttpOnly") && !cookie.contains("proxy-key-123456"));
            }
            d => panic!("{d:?}"),
        }
        let session = h(&[("cookie", &format!("gp_session={}", session::token(&key)))]);
        assert_eq!(decide(&c, "GET", "/stat", &session), Admission::Stats(StatsView::Page(Lang::En)));
        assert_eq!(decide(&c, "GET", "/stat.json", &session), Admission::Stats(StatsView::Json));
        let bearer = h(&[("authorization", "Bearer proxy-key-123456")]);
        assert_eq!(decide(&c, "GET", "/stat", &bearer), Admission::Stats(StatsView::Page(Lang::En)));
        assert_eq!(decide(&c, "GET", "/metrics", &bearer), Admission::Stats(StatsView::Metrics));
        assert_eq!(error(decide(&c, "GET", "/metrics", &[])).0, 401);
        assert_eq!(error(decide(&c, "POST", "/metrics", &bearer)).0, 405);
        assert_eq!(
            decide(&c, "GET", "/stat", &h(&[("x-goog-api-key", "proxy-key-123456")])),
            Admission::Stats(StatsView::Page(Lang::En))
        );
        // Reset: a cookie alone is not enough (cross-site forms carry none of the header).
        assert_eq!(error(decide(&c, "POST", "/stat/reset", &session)).0, 403);
        let mut from_page = session.clone();
        from_page.push((ACTION_HEADER.into(), b"reset".to_vec()));
        assert_eq!(decide(&c, "POST", "/stat/reset", &from_page), Admission::Reset);
        assert_eq!(decide(&c, "POST", "/stat/reset", &bearer), Admission::Reset);
        assert_eq!(error(decide(&c, "POST", "/stat/reset", &[])).0, 401);
        assert_eq!(error(decide(&c, "GET", "/stat/reset", &bearer)).0, 405);
        // The login form.
        let r = login(&c, &[], b"key=proxy-key-123456");
        assert_eq!(r.status, 303);
        assert!(r.header("set-cookie").is_some_and(|v| v.contains(&session::token(&key))));
        assert_eq!(login(&c, &[], b"key=wrong").status, 401);
        assert_eq!(decide(&c, "POST", "/stat/login", &[]), Admission::Login);
        // API routes still answer JSON.
        match decide(&c, "POST", "/v1/chat/completions", &[]) {
            Admission::Respond(r) => {
                assert!(r.header("content-type").is_some_and(|t| t.starts_with("application/json")))
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn browsers_get_cors() {
        let c = config(Some("proxy-key-123456"));
        let preflight = h(&[("access-control-request-headers", "authorization, content-type")]);
        match decide(&c, "OPTIONS", "/v1/chat/completions", &preflight) {
            Admission::Respond(r) => {
                assert_eq!(r.status, 204);
                assert_eq!(r.header("access-control-allow-origin"), Some("*"));
                assert_eq!(r.header("access-control-allow-headers"), Some("authorization, content-type"));
            }
            d => panic!("{d:?}"),
        }
        match decide(&c, "POST", "/v1/chat/completions", &[]) {
            Admission::Respond(r) => assert_eq!(r.header("access-control-allow-origin"), Some("*")),
            d => panic!("{d:?}"),
        }
        // The /stat page stays same-origin.
        assert!(!matches!(decide(&c, "OPTIONS", "/stat/reset", &[]), Admission::Respond(r) if r.status == 204));
    }

    #[test]
    fn errors_follow_the_callers_dialect() {
        let c = config(None);
        let (_, v) = error(decide(&c, "POST", "/nothing", &h(&[("authorization", "Bearer k")])));
        assert_eq!(v["error"]["code"], "not_found");
        let (_, v) = error(decide(&c, "POST", "/v1/No-thing", &h(&[("authorization", "Bearer k")])));
        assert_eq!(v["error"]["code"], "not_found");
        let (_, v) = error(decide(&c, "POST", "/v1beta/No-thing", &[]));
        assert_eq!(v["error"]["status"], "NOT_FOUND");
        assert_eq!(route::fallback_dialect("/v1/x:y", &Credentials::default()), Dialect::Gemini);
    }
}
