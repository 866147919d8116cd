//! What a proxy without `PROXY_API_KEY` lets in from the web.
//!
//! A proxy that anyone who can reach its port may use is also reachable by
//! every web page its user visits: a page of another origin can spend the
//! pool with a "simple" request (no preflight), and by DNS rebinding reach
//! it under a name of its own. So while the proxy is open (no
//! `PROXY_API_KEY` and no client key; the key store knows the second), it
//! answers only requests addressed to one of its own host names
//! ([`host_allowed`]) and sent by no page of another origin than those in
//! `CORS_ORIGINS` ([`origin_allowed`]), and grants CORS only to those.
//! A proxy with a key grants CORS to any origin, as browser apps need: the
//! key travels in a header, never a cookie, so a page cannot use it unless
//! it holds it.

use crate::config::{Config, host_of};
use crate::request::headers;
use crate::wire::error::ProxyError;

/// Host names an open proxy always answers to (loopback).
const LOOPBACK: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// The CORS grant of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// This origin only (and `Vary: Origin`).
    Origin(String),
    /// None: the browser keeps the answer from the page.
    Refused,
}

/// Whether the request's `Host` is one of the proxy's own names.
pub fn host_allowed(cfg: &Config, request_headers: &[(String, Vec<u8>)]) -> bool {
    if !cfg.check_host {
        return true;
    }
    // A request without a Host (HTTP/1.0, or a host that gives the
    // authority alone) is no browser's.
    let Some(host) = headers::get(request_headers, "host").map(|h| host_of(h.trim())) else { return true };
    LOOPBACK.contains(&host.as_str())
        || cfg.allowed_hosts.contains(&host)
        || cfg.listen_host.as_deref() == Some(host.as_str())
        || cfg.public_url.as_ref().is_some_and(|u| host_of(&u.authority) == host)
}

/// The request's `Origin`, lower-case.
fn origin(request_headers: &[(String, Vec<u8>)]) -> Option<String> {
    headers::get(request_headers, "origin").map(|o| o.trim().to_ascii_lowercase())
}

/// Whether `origin` is listed in `CORS_ORIGINS` (or `*` is).
fn listed(cfg: &Config, origin: &str) -> bool {
    cfg.cors_origins.iter().any(|o| o == "*" || o == origin)
}

/// Whether a page of the request's origin may use an open proxy: no page
/// sent it (no `Origin`, and no cross-site `Sec-Fetch-Site`), or the page is
/// the proxy's own (same host and port), or its origin is listed.
pub fn origin_allowed(cfg: &Config, request_headers: &[(String, Vec<u8>)]) -> bool {
    match origin(request_headers) {
        Some(origin) => {
            let same = headers::get(request_headers, "host").is_some_and(|host| {
                let authority = origin.split_once("://").map_or("", |(_, a)| a);
                authority == host.trim().to_ascii_lowercase()
            });
            same || listed(cfg, &origin)
        }
        None => {
            let site = headers::get(request_headers, "sec-fetch-site").unwrap_or("none");
            matches!(site.trim(), "none" | "same-origin") || cfg.cors_origins.iter().any(|o| o == "*")
        }
    }
}

/// Why an open proxy refuses the request, if it does: a foreign `Host`
/// (421), or a page of another origin (403).
pub fn refusal(cfg: &Config, request_headers: &[(String, Vec<u8>)]) -> Option<ProxyError> {
    if !host_allowed(cfg, request_headers) {
        let host = headers::get(request_headers, "host").unwrap_or_default();
        return Some(ProxyError::MisdirectedHost { host: host.chars().take(100).collect() });
    }
    (!origin_allowed(cfg, request_headers)).then_some(ProxyError::Forbidden(
        "this proxy is open (no PROXY_API_KEY, no client key) and serves no web page of another origin: list the page's origin in CORS_ORIGINS, or set PROXY_API_KEY",
    ))
}

/// The CORS grant for an answer to this request: any origin when the
/// proxy is not open (`keyed`: it has a `PROXY_API_KEY`, or the request was
/// let in by a client key); else the request's origin when listed.
pub fn grant(cfg: &Config, request_headers: &[(String, Vec<u8>)], keyed: bool) -> Grant {
    if keyed || cfg.cors_origins.iter().any(|o| o == "*") {
        return Grant::Any;
    }
    match origin(request_headers) {
        Some(origin) if listed(cfg, &origin) => Grant::Origin(origin),
        _ => Grant::Refused,
    }
}

/// Applies `grant` to an answer's headers (which carry the blanket grant
/// of [`CORS`](crate::wire::http::CORS), or a preflight's).
pub fn apply(grant: &Grant, answer: &mut Vec<(String, String)>) {
    match grant {
        Grant::Any => {}
        Grant::Origin(origin) => {
            for (name, value) in answer.iter_mut() {
                if name.eq_ignore_ascii_case("access-control-allow-origin") {
                    value.clone_from(origin);
                }
            }
            if answer.iter().any(|(n, _)| n.eq_ignore_ascii_case("access-control-allow-origin")) {
                answer.push(("vary".into(), "Origin".into()));
            }
        }
        Grant::Refused => answer.retain(|(n, _)| !n.to_ascii_lowercase().starts_with("access-control-")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::h;
    use crate::wire::http::CORS;

    fn cfg(vars: &[(&str, &str)]) -> Config {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())).expect("config")
    }

    #[test]
    fn an_open_proxy_answers_its_own_names_only() {
        let c = cfg(&[("PUBLIC_URL", "https://proxy.example/gemini"), ("ALLOWED_HOSTS", "lan-box, 192.168.1.5:8787")]);
        for host in
            ["127.0.0.1:8787", "localhost", "LOCALHOST:1", "[::1]:8787", "proxy.example", "lan-box:80", "192.168.1.5"]
        {
            assert!(host_allowed(&c, &h(&[("host", host)])), "{host}");
        }
        for host in ["evil.example", "evil.example:8787", "127.0.0.1.evil.example", "[::2]:8787"] {
            assert!(!host_allowed(&c, &h(&[("host", host)])), "{host}");
            assert_eq!(refusal(&c, &h(&[("host", host)])).map(|e| e.status()), Some(421), "{host}");
        }
        let listen = cfg(&[("GEMINI_PROXY_LISTEN", "10.0.0.7:8787")]);
        assert!(host_allowed(&listen, &h(&[("host", "10.0.0.7:8787")])));
        let worker = Config { check_host: false, ..cfg(&[]) };
        assert!(host_allowed(&worker, &h(&[("host", "my.workers.dev")])));
    }

    #[test]
    fn pages_of_other_origins_are_refused_unless_listed() {
        let c = cfg(&[("CORS_ORIGINS", "https://chat.example, null")]);
        let from = |origin: &str| h(&[("host", "127.0.0.1:8787"), ("origin", origin)]);
        assert!(origin_allowed(&c, &h(&[("host", "127.0.0.1:8787")])), "no page");
        assert!(origin_allowed(&c, &from("http://127.0.0.1:8787")), "its own page");
        assert!(origin_allowed(&c, &from("https://chat.example")));
        assert!(origin_allowed(&c, &from("null")));
        assert!(!origin_allowed(&c, &from("https://evil.example")));
        assert!(!origin_allowed(&c, &from("http://127.0.0.1:9999")));
        let cross = h(&[("host", "127.0.0.1:8787"), ("sec-fetch-site", "cross-site")]);
        assert!(!origin_allowed(&c, &cross), "a cross-site request without an Origin");
        assert_eq!(refusal(&c, &from("https://evil.example")).map(|e| e.status()), Some(403));
        assert_eq!(refusal(&c, &from("https://chat.example")), None);
    }

    #[test]
    fn cors_goes_to_listed_origins_on_an_open_proxy_and_to_any_with_a_key() {
        let c = cfg(&[("CORS_ORIGINS", "https://chat.example")]);
        let from = |origin: &str| h(&[("origin", origin)]);
        assert_eq!(grant(&c, &from("https://evil.example"), true), Grant::Any);
        assert_eq!(grant(&c, &from("https://evil.example"), false), Grant::Refused);
        assert_eq!(grant(&c, &from("https://chat.example"), false), Grant::Origin("https://chat.example".into()));
        assert_eq!(grant(&cfg(&[("CORS_ORIGINS", "*")]), &from("https://evil.example"), false), Grant::Any);

        let blanket = || CORS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>();
        let mut refused = blanket();
        apply(&Grant::Refused, &mut refused);
        assert!(refused.is_empty());
        let mut one = blanket();
        apply(&Grant::Origin("https://chat.example".into()), &mut one);
        assert!(one.contains(&("access-control-allow-origin".into(), "https://chat.example".into())));
        assert!(one.contains(&("vary".into(), "Origin".into())));
    }

    #[test]
    fn bad_settings_name_their_variable() {
        let vars = [("CORS_ORIGINS", "chat.example/path")];
        let e = Config::from_lookup(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| (*v).to_owned()));
        assert_eq!(e.err().map(|e| e.var), Some("CORS_ORIGINS"));
        let vars = [("ALLOWED_HOSTS", "evil host")];
        let e = Config::from_lookup(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| (*v).to_owned()));
        assert_eq!(e.err().map(|e| e.var), Some("ALLOWED_HOSTS"));
    }
}
