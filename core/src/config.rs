//! Configuration, with the same variable names on every host.

pub mod aliases;

use crate::wire::secret::ApiKey;
use std::collections::HashSet;
use std::fmt;

/// Default for `GEMINI_UPSTREAM_URL`.
pub const DEFAULT_GEMINI_UPSTREAM: &str = "https://generativelanguage.googleapis.com/v1beta";
/// Default for `OPENAI_UPSTREAM_URL`.
pub const DEFAULT_OPENAI_UPSTREAM: &str = "https://generativelanguage.googleapis.com/v1beta/openai";

/// The shortest `ADMIN_API_KEY` accepted.
pub const MIN_ADMIN_KEY_CHARS: usize = 16;

/// A configuration variable that was missing or malformed. Its `Display`
/// is one line that names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {why}")]
pub struct ConfigError {
    /// The variable's name.
    pub var: &'static str,
    /// What is wrong with it.
    pub why: String,
}

/// URL scheme of an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (local fakes and tests).
    Http,
    /// HTTPS (Google).
    Https,
}

/// An upstream base URL: `scheme://authority/path`, without query or
/// fragment. Requests are only ever sent below this path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamBase {
    /// The scheme.
    pub scheme: Scheme,
    /// `host[:port]`.
    pub authority: String,
    /// The path prefix, without a trailing slash (may be empty).
    pub path: String,
}

impl UpstreamBase {
    /// Parses a base URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        };
        if rest.contains(['?', '#', '\\', ' ']) {
            return Err(format!("{url:?} must not have a query, fragment, backslash or space"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url:?} needs a host (and no user info)"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, Some(p)),
            _ => (authority, None),
        };
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c)) {
            return Err(format!("{url:?} has an invalid host"));
        }
        if let Some(p) = port
            && p.parse::<u16>().is_err()
        {
            return Err(format!("{url:?} has an invalid port"));
        }
        if path.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(format!("{url:?} has dot segments"));
        }
        Ok(Self { scheme, authority: authority.to_ascii_lowercase(), path: path.trim_end_matches('/').to_owned() })
    }

    /// The origin, `scheme://authority`.
    pub fn origin(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", self.authority)
    }
}

impl fmt::Display for UpstreamBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)
    }
}

/// How long a host waits on the upstream (`UPSTREAM_CONNECT_TIMEOUT`,
/// `UPSTREAM_FIRST_BYTE_TIMEOUT`, `UPSTREAM_IDLE_TIMEOUT`, in seconds). A
/// timeout before the response head fails over to another key like a 5xx;
/// after it, the client sees the break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// To open the connection (host-runner; a Worker's `fetch` has no
    /// separate connect phase, so there it is part of `first_byte_ms`).
    pub connect_ms: u64,
    /// From sending the request to the response head.
    pub first_byte_ms: u64,
    /// Between two pieces of the response body.
    pub idle_ms: u64,
    /// `NONSTREAM_KEEPALIVE_SECONDS`: how long a non-streamed call waits
    /// for its answer's head before the proxy commits a `200` and sends a
    /// whitespace byte, and again at each such interval until the answer
    /// comes ([`crate::exchange::KeepAlive`]); 0: never.
    pub keepalive_ms: u64,
}

impl UpstreamTimeouts {
    /// host-runner's defaults: a long non-streamed generation may take
    /// minutes before its first byte.
    pub const HOST_RUNNER: Self =
        Self { connect_ms: 10_000, first_byte_ms: 300_000, idle_ms: 120_000, keepalive_ms: 0 };
    /// The Worker's defaults: below the 100 s after which Cloudflare itself
    /// would answer 524, so that the proxy fails over or answers first; a
    /// non-streamed answer slower than 50 s is kept alive with whitespace.
    pub const WORKER: Self = Self { connect_ms: 10_000, first_byte_ms: 90_000, idle_ms: 90_000, keepalive_ms: 50_000 };
}

/// What the request handler needs: everything but the key pool itself
/// (which the host's key store holds).
#[derive(Clone, Debug)]
pub struct Config {
    /// The key clients must present, if any.
    pub proxy_key: Option<ApiKey>,
    /// The key of the admin API (`ADMIN_API_KEY`); none: the admin API is
    /// off.
    pub admin_key: Option<ApiKey>,
    /// Where Gemini-native requests go.
    pub gemini_upstream: UpstreamBase,
    /// Where OpenAI-style requests go.
    pub openai_upstream: UpstreamBase,
    /// How long to wait on the upstream.
    pub timeouts: UpstreamTimeouts,
    /// `PUBLIC_URL`: the proxy's own URL as its clients reach it (behind a
    /// reverse proxy, with its path prefix), for the URLs it hands out (an
    /// upload's). Unset: from the request's `X-Forwarded-Proto` and
    /// `X-Forwarded-Host`, else its own origin.
    pub public_url: Option<UpstreamBase>,
    /// `CORS_ORIGINS`: the web origins (`scheme://host[:port]`, lower-case;
    /// `*` for any, `null` for pages without one) an open proxy serves and
    /// grants CORS to. A proxy with a key grants any origin: its callers
    /// send the key in a header, never a cookie.
    pub cors_origins: Vec<String>,
    /// `ALLOWED_HOSTS`: host names (lower-case, no port) an open proxy
    /// answers besides `localhost`, the loopback addresses, its listen
    /// address and `PUBLIC_URL`'s host.
    pub allowed_hosts: Vec<String>,
    /// Whether an open proxy checks a request's `Host` (the defence against
    /// DNS rebinding). On by default; the Worker turns it off unless
    /// `ALLOWED_HOSTS` is set (its host names are Cloudflare's to route).
    pub check_host: bool,
    /// The host host-runner listens on (`GEMINI_PROXY_LISTEN`, set by
    /// host-runner for its component, not by users), a `Host` it answers.
    pub listen_host: Option<String>,
    /// Whether the host sends upstream calls through outbound proxies
    /// (`GEMINI_PROXY_OUTBOUND_PROXIES`, set by host-runner for its
    /// component): a project's proxy can be set only then.
    pub outbound_proxies: bool,
    /// `ACCESS_LOG=json`: each request's summary
    /// ([`crate::exchange::Step::Summary`]) written as a JSON line to the
    /// host's standard output (the Worker's log). Off by default.
    pub access_log: bool,
    /// `REQUEST_LOG_SIZE`: how many requests the request log keeps
    /// ([`crate::store::requests`]; 0: none). 10,000 by default.
    pub request_log_size: usize,
    /// `MODEL_ALIASES` before the default table ([`aliases::DEFAULTS`]):
    /// the Gemini model that serves a client's model name.
    pub model_aliases: aliases::Aliases,
}

/// How many requests the request log keeps unless `REQUEST_LOG_SIZE` says.
pub const DEFAULT_REQUEST_LOG_SIZE: usize = crate::wire::summary::DEFAULT_LOG_SIZE;

/// The most requests `REQUEST_LOG_SIZE` may ask the request log to keep.
pub const MAX_REQUEST_LOG_SIZE: usize = 1_000_000;

/// `REQUEST_LOG_SIZE` (a whole number up to [`MAX_REQUEST_LOG_SIZE`]; 0
/// turns the request log off), read alone: the key store needs nothing
/// else of the configuration.
pub fn request_log_size(lookup: impl Fn(&str) -> Option<String>) -> Result<usize, ConfigError> {
    match lookup("REQUEST_LOG_SIZE").map(|v| v.trim().replace(['_', ','], "")).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_REQUEST_LOG_SIZE),
        Some(v) => v.parse::<usize>().ok().filter(|n| *n <= MAX_REQUEST_LOG_SIZE).ok_or_else(|| ConfigError {
            var: "REQUEST_LOG_SIZE",
            why: format!("{v:?} is not a number of requests from 0 to {MAX_REQUEST_LOG_SIZE}"),
        }),
    }
}

impl Config {
    /// Reads the configuration through `lookup` (an environment, a Worker's
    /// `env`, …), with host-runner's timeouts as defaults. Empty values count
    /// as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_lookup_with(UpstreamTimeouts::HOST_RUNNER, lookup)
    }

    /// [`Config::from_lookup`] with a host's own default timeouts.
    ///
    /// (The key store reads `REQUEST_LOG_SIZE` alone: [`request_log_size`].)
    pub fn from_lookup_with(
        defaults: UpstreamTimeouts,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
        let base = |var: &'static str, default: &str| {
            UpstreamBase::parse(&get(var).unwrap_or_else(|| default.to_owned())).map_err(|why| ConfigError { var, why })
        };
        let seconds = |var: &'static str, default_ms: u64| match get(var) {
            None => Ok(default_ms),
            Some(v) => parse_seconds_ms(&v).ok_or_else(|| ConfigError {
                var,
                why: format!("{v:?} is not a number of seconds between 0.001 and 86400 (e.g. 30 or 1.5)"),
            }),
        };
        let proxy_key = get("PROXY_API_KEY").map(ApiKey::new);
        let admin_key = get("ADMIN_API_KEY").map(ApiKey::new);
        if let Some(a) = &admin_key
            && a.expose().chars().count() < MIN_ADMIN_KEY_CHARS
        {
            return Err(ConfigError {
                var: "ADMIN_API_KEY",
                why: format!(
                    "is shorter than {MIN_ADMIN_KEY_CHARS} characters: the admin key manages every key, choose a long random one"
                ),
            });
        }
        if let (Some(p), Some(a)) = (&proxy_key, &admin_key)
            && p.matches(a.expose())
        {
            return Err(ConfigError {
                var: "ADMIN_API_KEY",
                why: "must differ from PROXY_API_KEY (the admin key manages keys; clients never get it)".into(),
            });
        }
        Ok(Self {
            proxy_key,
            admin_key,
            gemini_upstream: base("GEMINI_UPSTREAM_URL", DEFAULT_GEMINI_UPSTREAM)?,
            openai_upstream: base("OPENAI_UPSTREAM_URL", DEFAULT_OPENAI_UPSTREAM)?,
            public_url: match get("PUBLIC_URL") {
                None => None,
                Some(url) => Some(UpstreamBase::parse(&url).map_err(|why| ConfigError { var: "PUBLIC_URL", why })?),
            },
            timeouts: UpstreamTimeouts {
                connect_ms: seconds("UPSTREAM_CONNECT_TIMEOUT", defaults.connect_ms)?,
                first_byte_ms: seconds("UPSTREAM_FIRST_BYTE_TIMEOUT", defaults.first_byte_ms)?,
                idle_ms: seconds("UPSTREAM_IDLE_TIMEOUT", defaults.idle_ms)?,
                keepalive_ms: match get("NONSTREAM_KEEPALIVE_SECONDS").map(|v| v.trim().to_ascii_lowercase()) {
                    Some(v) if v == "0" || v == "off" => 0,
                    _ => seconds("NONSTREAM_KEEPALIVE_SECONDS", defaults.keepalive_ms)?,
                },
            },
            cors_origins: match get("CORS_ORIGINS") {
                None => Vec::new(),
                Some(v) => parse_origins(&v).map_err(|why| ConfigError { var: "CORS_ORIGINS", why })?,
            },
            allowed_hosts: match get("ALLOWED_HOSTS") {
                None => Vec::new(),
                Some(v) => parse_hosts(&v).map_err(|why| ConfigError { var: "ALLOWED_HOSTS", why })?,
            },
            check_host: true,
            listen_host: get("GEMINI_PROXY_LISTEN").map(|l| host_of(l.trim()).to_owned()),
            outbound_proxies: get("GEMINI_PROXY_OUTBOUND_PROXIES").is_some(),
            access_log: match get("ACCESS_LOG").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
                None | Some("off") => false,
                Some("json") => true,
                Some(other) => {
                    return Err(ConfigError {
                        var: "ACCESS_LOG",
                        why: format!("{other:?} is not a log format (`json`, or `off`)"),
                    });
                }
            },
            request_log_size: request_log_size(&lookup)?,
            model_aliases: match get("MODEL_ALIASES") {
                None => aliases::Aliases::default(),
                Some(v) => aliases::Aliases::parse(&v).map_err(|why| ConfigError { var: "MODEL_ALIASES", why })?,
            },
        })
    }
}

/// The host of `host[:port]` (`[v6]` kept in brackets), lower-case.
pub fn host_of(authority: &str) -> String {
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) => h,
        _ => authority,
    };
    host.to_ascii_lowercase()
}

/// Parses `CORS_ORIGINS`: comma-separated origins (`scheme://host[:port]`),
/// `*`, or `null`.
fn parse_origins(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        let valid = origin == "*"
            || origin == "null"
            || (UpstreamBase::parse(&origin).is_ok_and(|b| b.path.is_empty())
                && (origin.starts_with("http://") || origin.starts_with("https://")));
        if !valid {
            return Err(format!("{origin:?} is not an origin (scheme://host[:port], `null` or `*`)"));
        }
        out.push(origin);
    }
    Ok(out)
}

/// Parses `ALLOWED_HOSTS`: comma-separated host names or addresses (a port
/// is ignored).
fn parse_hosts(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for host in value.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c)) {
            return Err(format!("{host:?} is not a host name (give names like proxy.example.com or 192.168.1.5)"));
        }
        out.push(host_of(host));
    }
    Ok(out)
}

/// `"30"` or `"1.5"` seconds as milliseconds, within 1 ms and a day.
fn parse_seconds_ms(v: &str) -> Option<u64> {
    let secs: f64 = v.trim().parse().ok()?;
    let ms = (secs * 1000.0).round();
    (ms.is_finite() && (1.0..=86_400_000.0).contains(&ms)).then_some(ms as u64)
}

/// Parses `API_KEYS`: comma- or newline-separated, trimmed, empty entries
/// and duplicates dropped, order kept. At least one key is required.
pub fn parse_api_keys(value: Option<&str>) -> Result<Vec<ApiKey>, ConfigError> {
    let err = |why: &str| ConfigError { var: "API_KEYS", why: why.to_owned() };
    let value = value.ok_or_else(|| err("not set; give one or more Gemini API keys, comma- or newline-separated"))?;
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    for part in value.split([',', '\n', '\r']) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        if part.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("an entry contains whitespace; separate keys with commas or newlines"));
        }
        if seen.insert(part.to_owned()) {
            keys.push(ApiKey::new(part));
        }
    }
    if keys.is_empty() {
        return Err(err("holds no key; give one or more Gemini API keys, comma- or newline-separated"));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_with_separators_and_duplicates() {
        let keys = parse_api_keys(Some(" a1,b2\n\nc3 ,a1\r\n")).expect("keys");
        let v: Vec<&str> = keys.iter().map(|k| k.expose()).collect();
        assert_eq!(v, ["a1", "b2", "c3"]);
    }

    #[test]
    fn no_keys_names_the_variable() {
        for v in [None, Some(""), Some(" , \n")] {
            let e = parse_api_keys(v).expect_err("no keys");
            assert_eq!(e.var, "API_KEYS");
            assert!(e.to_string().starts_with("API_KEYS: "));
        }
        assert!(parse_api_keys(Some("a b")).is_err());
    }

    #[test]
    fn defaults_and_bad_urls() {
        let c = Config::from_lookup(|_| None).expect("defaults");
        assert_eq!(c.gemini_upstream.to_string(), DEFAULT_GEMINI_UPSTREAM);
        assert_eq!(c.openai_upstream.path, "/v1beta/openai");
        assert!(c.proxy_key.is_none());
        let e = Config::from_lookup(|v| (v == "OPENAI_UPSTREAM_URL").then(|| "ftp://x".to_owned())).expect_err("bad");
        assert_eq!(e.var, "OPENAI_UPSTREAM_URL");
        let e = Config::from_lookup(|v| (v == "GEMINI_UPSTREAM_URL").then(|| "not a url".to_owned())).expect_err("bad");
        assert_eq!(e.var, "GEMINI_UPSTREAM_URL");
    }

    #[test]
    fn timeouts_have_host_defaults_and_parse_seconds() {
        let c = Config::from_lookup(|_| None).expect("defaults");
        assert_eq!(c.timeouts, UpstreamTimeouts::HOST_RUNNER);
        let w = Config::from_lookup_with(UpstreamTimeouts::WORKER, |_| None).expect("defaults");
        assert!(w.timeouts.first_byte_ms < 100_000, "below Cloudflare's own 100 s");
        let c = Config::from_lookup(|v| (v == "UPSTREAM_FIRST_BYTE_TIMEOUT").then(|| "1.5".to_owned())).expect("1.5");
        assert_eq!(c.timeouts.first_byte_ms, 1_500);
        for bad in ["0", "-1", "soon", "1e12"] {
            let e = Config::from_lookup(|v| (v == "UPSTREAM_IDLE_TIMEOUT").then(|| bad.to_owned())).expect_err(bad);
            assert_eq!(e.var, "UPSTREAM_IDLE_TIMEOUT");
        }
    }

    #[test]
    fn the_public_url_is_checked() {
        let c = Config::from_lookup(|v| (v == "PUBLIC_URL").then(|| "https://ai.example/gemini/".to_owned()));
        assert_eq!(c.expect("valid").public_url.map(|u| u.to_string()).as_deref(), Some("https://ai.example/gemini"));
        let e = Config::from_lookup(|v| (v == "PUBLIC_URL").then(|| "ai.example".to_owned())).expect_err("bad");
        assert_eq!(e.var, "PUBLIC_URL");
    }

    #[test]
    fn a_short_admin_key_is_refused() {
        let e = Config::from_lookup(|v| (v == "ADMIN_API_KEY").then(|| "admin".to_owned())).expect_err("short");
        assert_eq!(e.var, "ADMIN_API_KEY");
        let long = Config::from_lookup(|v| (v == "ADMIN_API_KEY").then(|| "a".repeat(MIN_ADMIN_KEY_CHARS)));
        assert!(long.is_ok_and(|c| c.admin_key.is_some()));
    }

    #[test]
    fn base_urls() {
        let b = UpstreamBase::parse("http://127.0.0.1:8080/v1beta/").expect("ok");
        assert_eq!((b.scheme, b.authority.as_str(), b.path.as_str()), (Scheme::Http, "127.0.0.1:8080", "/v1beta"));
        for bad in ["http://", "http://a:99999/", "http://u@h/", "https://h/x?y", "https://h/../x", "h/x"] {
            assert!(UpstreamBase::parse(bad).is_err(), "{bad}");
        }
    }
}
