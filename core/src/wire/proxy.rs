//! An outbound proxy's address (`UPSTREAM_PROXY`, a project's proxy):
//! parsed once, shown only masked (its password never leaves it but to the
//! proxy itself).

use base64::Engine as _;

/// How a host words an outbound proxy's failure (`the outbound proxy
/// socks5://u:***@host:1080 refused the login`), so that the exchange
/// tells it from the upstream's: the call never reached Google, and the
/// key is not held to it.
pub const PROXY_FAILED: &str = "the outbound proxy ";

/// What a caller hears of a proxy's failure: that one failed, not which
/// (the request log, the admin's, names it, masked).
pub const PROXY_FAILED_TO_CALLER: &str = "an outbound proxy failed";

/// How the proxy is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyScheme {
    /// `http://`: an HTTP proxy, tunnelled through with `CONNECT`.
    Http,
    /// `https://`: the same over TLS to the proxy.
    Https,
    /// `socks5://`: SOCKS5, the upstream's name resolved here.
    Socks5,
    /// `socks5h://`: SOCKS5, the name resolved by the proxy.
    Socks5h,
}

impl ProxyScheme {
    fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::Socks5 => "socks5",
            Self::Socks5h => "socks5h",
        }
    }
}

/// An outbound proxy: `scheme://[user:password@]host[:port]`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyUrl {
    /// How it is spoken to.
    pub scheme: ProxyScheme,
    /// Its host (an IPv6 address without brackets).
    pub host: String,
    /// Its port (80, 443 or 1080 by default).
    pub port: u16,
    /// The user and password it asks for, if any.
    pub auth: Option<(String, String)>,
}

impl ProxyUrl {
    /// Parses a proxy URL; why not, in words that never hold its password.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let (scheme, rest) =
            url.split_once("://").ok_or("a proxy URL starts with http://, https://, socks5:// or socks5h://")?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => ProxyScheme::Http,
            "https" => ProxyScheme::Https,
            "socks5" => ProxyScheme::Socks5,
            "socks5h" => ProxyScheme::Socks5h,
            _ => return Err("a proxy URL's scheme is http, https, socks5 or socks5h".into()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a proxy URL has no path, query or spaces: scheme://[user:password@]host[:port]".into());
        }
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((auth, hostport)) => {
                let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
                (Some((unescape(user)?, unescape(password)?)), hostport)
            }
            None => (None, rest),
        };
        let default_port = match scheme {
            ProxyScheme::Http => 80,
            ProxyScheme::Https => 443,
            ProxyScheme::Socks5 | ProxyScheme::Socks5h => 1080,
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("an IPv6 proxy address needs its closing ]")?;
            match after.strip_prefix(':') {
                Some(p) => (host, p.parse().map_err(|_| "a proxy URL's port is a number".to_owned())?),
                None if after.is_empty() => (host, default_port),
                None => return Err("a proxy URL has scheme://[user:password@]host[:port]".into()),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| "a proxy URL's port is a number".to_owned())?),
                None => (hostport, default_port),
            }
        };
        if host.is_empty() || port == 0 {
            return Err("a proxy URL names its host (and a port above 0)".into());
        }
        if auth.as_ref().is_some_and(|(u, _)| u.is_empty()) {
            return Err("a proxy's credentials name a user".into());
        }
        Ok(Self { scheme, host: host.to_ascii_lowercase(), port, auth })
    }

    /// `host:port` (an IPv6 address in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL as it may be shown: its password masked.
    pub fn masked(&self) -> String {
        let user = match &self.auth {
            Some((user, _)) => format!("{}:***@", escape(user)),
            None => String::new(),
        };
        format!("{}://{user}{}", self.scheme.name(), self.authority())
    }

    /// The URL whole, password included, to hand the host that connects
    /// through it (never to show).
    pub fn expose(&self) -> String {
        let user = match &self.auth {
            Some((user, password)) => format!("{}:{}@", escape(user), escape(password)),
            None => String::new(),
        };
        format!("{}://{user}{}", self.scheme.name(), self.authority())
    }

    /// `Proxy-Authorization`'s value for an HTTP proxy (`Basic`), if it
    /// has credentials.
    pub fn basic_auth(&self) -> Option<String> {
        let (user, password) = self.auth.as_ref()?;
        Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))))
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

impl std::fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Percent-decodes a URL's user or password.
fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("a proxy's credentials hold a bad %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a proxy's credentials hold a bad %-escape")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a proxy's credentials are not UTF-8".to_owned())
}

/// Percent-encodes what a URL's user or password cannot hold as is.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `host` is exempt from the environment's proxies by `no_proxy`
/// (`NO_PROXY`: comma-separated host names, domain suffixes with or
/// without a leading dot, IP addresses, `*` for all). Loopback hosts never
/// go through the environment's proxy either.
pub fn no_proxy(no_proxy: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>()
        && ip.is_loopback()
    {
        return true;
    }
    no_proxy.split(',').map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        let entry = entry.to_ascii_lowercase();
        // A port in an entry is not compared.
        let entry = match entry.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
            _ => entry,
        };
        let entry = entry.trim_start_matches('*');
        entry.is_empty() && !host.is_empty()
            || entry.strip_prefix('.').map_or(host == entry || host.ends_with(&format!(".{entry}")), |suffix| {
                host == suffix || host.ends_with(&format!(".{suffix}"))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_and_never_show_their_password() {
        let p = ProxyUrl::parse("socks5h://me:p%40ss%3Aw0rd@Proxy.Example:9050").expect("parses");
        assert_eq!((p.scheme, p.host.as_str(), p.port), (ProxyScheme::Socks5h, "proxy.example", 9050));
        assert_eq!(p.auth, Some(("me".into(), "p@ss:w0rd".into())));
        assert_eq!(p.masked(), "socks5h://me:***@proxy.example:9050");
        assert_eq!(format!("{p:?} {p}"), "socks5h://me:***@proxy.example:9050 socks5h://me:***@proxy.example:9050");
        assert_eq!(ProxyUrl::parse(&p.expose()).expect("round trip"), p);
        assert_eq!(ProxyUrl::parse("http://10.0.0.1").expect("http").port, 80);
        assert_eq!(ProxyUrl::parse("https://proxy.example/").expect("https").port, 443);
        assert_eq!(ProxyUrl::parse("socks5://[::1]:1081").expect("v6").authority(), "[::1]:1081");
        assert_eq!(
            ProxyUrl::parse("http://u:secret@h:3128").expect("auth").basic_auth().as_deref(),
            Some("Basic dTpzZWNyZXQ=")
        );
        for bad in [
            "ftp://h",
            "h:8080",
            "http://",
            "http://h:0",
            "http://h:x",
            "http://h/path",
            "http://:pw@h",
            "http://u:%zz@h",
        ] {
            let e = ProxyUrl::parse(bad).expect_err(bad);
            assert!(!e.contains("pw") && !e.contains("%zz"), "{e}");
        }
    }

    #[test]
    fn no_proxy_matches_hosts_domains_and_loopback() {
        assert!(no_proxy("", "127.0.0.1") && no_proxy("", "localhost") && no_proxy("", "[::1]"));
        assert!(!no_proxy("", "generativelanguage.googleapis.com"));
        assert!(no_proxy("example.com, .googleapis.com", "generativelanguage.googleapis.com"));
        assert!(no_proxy("googleapis.com", "generativelanguage.googleapis.com"));
        assert!(no_proxy("*.googleapis.com", "generativelanguage.googleapis.com"));
        assert!(!no_proxy("apis.com", "generativelanguage.googleapis.com"), "a suffix only at a dot");
        assert!(no_proxy("*", "anything.example"));
        assert!(no_proxy("10.1.2.3:443", "10.1.2.3"));
    }
}
