//! The `/stat` login: the form, its answer (a session cookie), and the
//! answer to a reset.

use crate::config::Config;
use crate::request::auth::percent_decode;
use crate::request::session;
use crate::wire::http::Response;

/// The `/stat` page's style sheet, which the login page shares.
const STYLE: &str = include_str!("../view/page/stat.css");

/// The page shown without valid credentials: a login form posting the
/// proxy key to `/stat/login`, with the proxy's own words on why (text of
/// its own, never a caller's, so it needs no escaping).
pub fn page(error: Option<&'static str>) -> String {
    let mut out = String::from(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><meta name="referrer" content="no-referrer"><title>gemini-proxy · sign in</title><style>"#,
    );
    out.push_str(STYLE);
    out.push_str(r#"</style></head><body><form class="login" method="post" action="/stat/login"><h1>gemini-proxy</h1><label for="key">Proxy key (PROXY_API_KEY)</label><input id="key" name="key" type="password" autocomplete="current-password" required autofocus>"#);
    if let Some(e) = error {
        out.push_str(r#"<p class="err">"#);
        out.push_str(e);
        out.push_str("</p>");
    }
    out.push_str(r#"<button type="submit">Sign in</button></form></body></html>"#);
    out
}

/// Answers the login form (`key=…`, form-encoded): a session (an admin's,
/// for `ADMIN_API_KEY`) and a redirect to `/stat`, or the login page again.
pub fn login(cfg: &Config, headers: &[(String, Vec<u8>)], body: &[u8]) -> Response {
    let form = String::from_utf8_lossy(body);
    let given = form
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "key")
        .map(|(_, v)| percent_decode(v))
        .unwrap_or_default();
    let https = session::is_https(headers);
    match (&cfg.proxy_key, &cfg.admin_key) {
        (_, Some(a)) if a.matches(&given) => {
            Response::redirect("/stat").with_header("set-cookie", session::set_admin_cookie(a, https))
        }
        (Some(k), _) if k.matches(&given) => {
            Response::redirect("/stat").with_header("set-cookie", session::set_cookie(k, https))
        }
        (None, None) => Response::redirect("/stat"),
        _ => Response::html(401, crate::request::login::page(Some("That is not this proxy's key."))),
    }
}

/// The answer to a reset.
pub fn reset_done() -> Response {
    Response::json(200, r#"{"reset":true}"#.to_owned())
}
