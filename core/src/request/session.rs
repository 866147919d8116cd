//! The `/stat` page's browser sessions: a cookie holding a token derived
//! from the proxy key (never the key itself), HttpOnly and SameSite=Strict;
//! and, for an admin who signed in with `ADMIN_API_KEY`, a second one for
//! the page's admin actions (which a cookie alone never triggers: they also
//! need the page's action header).

use crate::request::auth::SESSION_COOKIE;
use crate::request::headers;
use crate::wire::secret::ApiKey;
use sha2::{Digest, Sha256};

/// Session lifetime.
pub const MAX_AGE_SECS: u64 = 30 * 24 * 3600;

/// The session token for `proxy_key`.
pub fn token(proxy_key: &ApiKey) -> String {
    let digest = Sha256::digest(format!("gemini-proxy stat session v1\0{}", proxy_key.expose()).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The name of the admin's session cookie.
pub const ADMIN_COOKIE: &str = "gp_admin";

/// The admin session token for `admin_key`.
pub fn admin_token(admin_key: &ApiKey) -> String {
    let digest = Sha256::digest(format!("gemini-proxy admin session v1\0{}", admin_key.expose()).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn cookie_named(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The language a `/stat` page request asks for
/// ([`crate::wire::http::Lang::of_request`]): `?lang=`, the switch's cookie,
/// `Accept-Language`.
pub fn lang(query: &str, headers: &[(String, Vec<u8>)]) -> crate::wire::http::Lang {
    let asked = crate::request::auth::query_param(query, "lang");
    let cookie = cookie_named(headers, crate::wire::http::LANG_COOKIE);
    let accept = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("accept-language"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok());
    crate::wire::http::Lang::of_request(asked.as_deref(), cookie.as_deref(), accept)
}

/// The session cookie's value in a request, if any.
pub fn cookie(headers: &[(String, Vec<u8>)]) -> Option<String> {
    cookie_named(headers, SESSION_COOKIE)
}

/// Whether the request carries a valid admin session for `admin_key`.
pub fn is_admin(headers: &[(String, Vec<u8>)], admin_key: &ApiKey) -> bool {
    let expected = ApiKey::new(admin_token(admin_key));
    cookie_named(headers, ADMIN_COOKIE).is_some_and(|c| expected.matches(&c))
}

/// The `Set-Cookie` value that opens an admin session (for the `/stat`
/// page and the `/admin` routes it calls).
pub fn set_admin_cookie(admin_key: &ApiKey, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{ADMIN_COOKIE}={}; Path=/; Max-Age={MAX_AGE_SECS}; HttpOnly; SameSite=Strict{secure}",
        admin_token(admin_key)
    )
}

/// Whether the request carries a valid session for `proxy_key`.
pub fn is_valid(headers: &[(String, Vec<u8>)], proxy_key: &ApiKey) -> bool {
    let expected = ApiKey::new(token(proxy_key));
    cookie(headers).is_some_and(|c| expected.matches(&c))
}

/// The `Set-Cookie` value that opens a session. `secure` when the page is
/// served over HTTPS.
pub fn set_cookie(proxy_key: &ApiKey, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={}; Path=/stat; Max-Age={MAX_AGE_SECS}; HttpOnly; SameSite=Strict{secure}",
        token(proxy_key)
    )
}

/// Whether the request came over HTTPS, as far as the headers tell.
pub fn is_https(headers: &[(String, Vec<u8>)]) -> bool {
    headers::get(headers, "x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_round_trip_without_the_key() {
        let key = ApiKey::new("proxy-key-abcdefgh");
        let set = set_cookie(&key, false);
        assert!(!set.contains("proxy-key-abcdefgh"));
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        let value = set.split(';').next().and_then(|p| p.split_once('=')).map(|(_, v)| v.to_owned()).expect("value");
        let headers = vec![("Cookie".to_owned(), format!("other=1; {SESSION_COOKIE}={value}").into_bytes())];
        assert!(is_valid(&headers, &key));
        assert!(!is_valid(&headers, &ApiKey::new("another-key-123456")));
        assert!(!is_valid(&[], &key));
    }
}
