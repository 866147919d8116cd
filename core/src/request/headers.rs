//! Header filtering: what crosses the proxy in each direction.

use crate::wire::http::CORS;
/// The first value of header `name` (case-insensitive), as text.
pub fn get<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and others that must not be
/// relayed verbatim in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "host",
];

/// Client headers never forwarded upstream, besides hop-by-hop ones: every
/// credential (the upstream gets exactly one: the pool key), a billed
/// project or method override, the headers a key's restrictions read (so
/// that a caller cannot make a restricted pool key fail), the browser's
/// origin, the proxy's own cookie, and `accept-encoding`, so that error
/// bodies arrive readable for classification. `content-length` is set anew
/// for the body sent.
const REQUEST_DROP: &[&str] = &[
    REQUEST_ID,
    "authorization",
    "x-goog-api-key",
    "x-api-key",
    "x-goog-user-project",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "referer",
    "origin",
    "x-android-package",
    "x-android-cert",
    "x-ios-bundle-identifier",
    "cookie",
    "accept-encoding",
    "content-length",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// The header a host puts on a request (replacing any the client sent) to
/// tell the component the id it logs the request under. Never forwarded.
pub const REQUEST_ID: &str = "x-gemini-proxy-request-id";

/// Whether a client request header is relayed to the upstream.
pub fn forward_request_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !HOP_BY_HOP.iter().chain(REQUEST_DROP).any(|h| lower == *h)
        && !lower.starts_with("cf-")
        // Google's IAM credentials and delegation.
        && !lower.starts_with("x-goog-iam-")
        && !lower.starts_with("x-goog-authenticated-user")
}

/// Whether an upstream response header is relayed to the client. The
/// proxy sets its own CORS headers ([`CORS`]).
pub fn forward_response_header(name: &str) -> bool {
    !HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        && !name.eq_ignore_ascii_case("set-cookie")
        && !name.eq_ignore_ascii_case("alt-svc")
        && !name.to_ascii_lowercase().starts_with("access-control-")
}

/// A header value either host can send as it is: visible ASCII, spaces
/// and tabs. Anything else (obs-text, control bytes) is dropped on both
/// hosts alike: a Worker sees header values only as strings, so a byte the
/// component would pass unchanged could reach a Worker's upstream changed.
pub fn sendable_value(value: &[u8]) -> Option<&str> {
    let ok = value.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    ok.then(|| std::str::from_utf8(value).ok()).flatten()
}

/// The client's headers that go upstream: every header [`forward_request_header`]
/// keeps, names lower-cased, values [`sendable_value`].
pub fn upstream_headers(client: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    client
        .iter()
        .filter(|(name, _)| forward_request_header(name))
        .filter_map(|(n, v)| Some((n.to_ascii_lowercase(), sendable_value(v)?.to_owned())))
        .collect()
}

/// The upstream's response headers the client gets, plus [`CORS`]. With
/// `drop_length`, `content-length` is left out (the proxy sends a body of
/// its own length, such as a redacted error).
pub fn client_headers(upstream: &[(String, Vec<u8>)], drop_length: bool) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = upstream
        .iter()
        .filter(|(n, _)| forward_response_header(n) && !(drop_length && n.eq_ignore_ascii_case("content-length")))
        .filter_map(|(n, v)| Some((n.to_ascii_lowercase(), sendable_value(v)?.to_owned())))
        .collect();
    out.extend(CORS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    out
}

/// The answer to a CORS preflight (`OPTIONS`) on an API route: any origin,
/// the methods the API uses, and the headers the browser asked for.
pub fn preflight(headers: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    let requested = get(headers, "access-control-request-headers")
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b", -_".contains(&b)))
        .unwrap_or("authorization, content-type, x-goog-api-key, x-goog-api-client");
    vec![
        ("access-control-allow-origin".into(), "*".into()),
        ("access-control-allow-methods".into(), "GET, POST, PUT, PATCH, DELETE, OPTIONS".into()),
        ("access-control-allow-headers".into(), requested.to_owned()),
        ("access-control-max-age".into(), "86400".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_never_forwarded() {
        for h in [
            "Authorization",
            "x-goog-api-key",
            "X-Goog-Api-Key",
            "Host",
            "Connection",
            "Transfer-Encoding",
            "Cookie",
            "TE",
            "X-Goog-User-Project",
            "X-HTTP-Method-Override",
            "Referer",
            "Origin",
            "X-Android-Package",
            "X-Android-Cert",
            "X-Ios-Bundle-Identifier",
            "X-Goog-IAM-Authorization-Token",
            "X-Goog-Iam-Authority-Selector",
        ] {
            assert!(!forward_request_header(h), "{h}");
        }
        for h in ["content-type", "user-agent", "x-goog-api-client", "accept"] {
            assert!(forward_request_header(h), "{h}");
        }
        assert!(forward_response_header("content-type"));
        assert!(!forward_response_header("transfer-encoding"));
        assert!(!forward_response_header("Set-Cookie"));
    }

    #[test]
    fn values_either_host_can_send() {
        assert_eq!(sendable_value(b"application/json; charset=utf-8"), Some("application/json; charset=utf-8"));
        assert_eq!(sendable_value(b"a\tb"), Some("a\tb"));
        for bad in [&b"caf\xc3\xa9"[..], b"\xff", b"a\r\nb", b"\x00"] {
            assert_eq!(sendable_value(bad), None, "{bad:?}");
        }
        let client = vec![("X-Odd".to_owned(), b"\xfe".to_vec()), ("User-Agent".to_owned(), b"sdk/1".to_vec())];
        assert_eq!(upstream_headers(&client), [("user-agent".to_owned(), "sdk/1".to_owned())]);
        let up =
            vec![("Content-Length".to_owned(), b"5".to_vec()), ("Content-Type".to_owned(), b"text/plain".to_vec())];
        let relayed = client_headers(&up, true);
        assert!(relayed.iter().all(|(n, _)| n != "content-length") && relayed.iter().any(|(n, _)| n == "content-type"));
        assert!(relayed.contains(&("access-control-allow-origin".to_owned(), "*".to_owned())));
        assert!(client_headers(&up, false).iter().any(|(n, _)| n == "content-length"));
    }

    #[test]
    fn get_is_case_insensitive() {
        let h: Vec<(String, Vec<u8>)> = vec![("X-Goog-Api-Key".into(), b"abc".to_vec())];
        assert_eq!(get(&h, "x-goog-api-key"), Some("abc"));
        assert_eq!(get(&h, "authorization"), None);
    }
}
