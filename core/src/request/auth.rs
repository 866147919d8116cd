//! Client credentials: where they are found and whether they open the proxy.

use crate::request::headers;
use crate::wire::error::ProxyError;
use crate::wire::keystore::Claim;
use crate::wire::keystore::hash_secret;
use crate::wire::secret::ApiKey;

/// The name of the cookie the `/stat` page's login form sets.
pub const SESSION_COOKIE: &str = "gp_session";

/// Credentials a client presented, by mechanism.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `Authorization: Bearer …`.
    pub bearer: Option<String>,
    /// `x-goog-api-key: …`.
    pub goog_api_key: Option<String>,
    /// `?key=…` (percent-decoded).
    pub query_key: Option<String>,
    /// `x-api-key: …` (Anthropic's clients).
    pub x_api_key: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("bearer", &self.bearer.is_some())
            .field("goog_api_key", &self.goog_api_key.is_some())
            .field("query_key", &self.query_key.is_some())
            .field("x_api_key", &self.x_api_key.is_some())
            .finish()
    }
}

impl Credentials {
    /// Collects the credentials of a request. An empty one counts as absent
    /// (gemini-cli's gateway mode sends `x-goog-api-key: ''` when it has no
    /// key).
    pub fn from_request(headers: &[(String, Vec<u8>)], query: &str) -> Self {
        let present = |v: String| (!v.is_empty()).then_some(v);
        let bearer = headers::get(headers, "authorization").and_then(|v| {
            let v = v.trim();
            let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned()).and_then(present)
        });
        let goog_api_key = headers::get(headers, "x-goog-api-key").map(|v| v.trim().to_owned()).and_then(present);
        let query_key = query_param(query, "key").map(|v| v.trim().to_owned()).and_then(present);
        let x_api_key = headers::get(headers, "x-api-key").map(|v| v.trim().to_owned()).and_then(present);
        Self { bearer, goog_api_key, query_key, x_api_key }
    }

    /// Whether the client sent a Gemini-style credential (`x-goog-api-key`
    /// or `?key=`), which is what tells a Gemini `/v1/models` call from an
    /// OpenAI one.
    pub fn is_gemini_style(&self) -> bool {
        self.goog_api_key.is_some() || self.query_key.is_some()
    }

    /// Checks the credentials against the proxy key. With no proxy key the
    /// proxy is open and every request passes.
    pub fn authorize(&self, proxy_key: Option<&ApiKey>) -> Result<(), ProxyError> {
        let Some(expected) = proxy_key else { return Ok(()) };
        let presented = [&self.bearer, &self.goog_api_key, &self.query_key, &self.x_api_key];
        let mut any = false;
        let mut ok = false;
        for candidate in presented.into_iter().flatten() {
            any = true;
            // Every candidate is compared, so timing says nothing about which matched.
            ok |= expected.matches(candidate);
        }
        match (any, ok) {
            (_, true) => Ok(()),
            (false, _) => Err(ProxyError::Unauthorized(
                "this proxy needs its access key (PROXY_API_KEY): send it as `Authorization: Bearer <key>`, `x-goog-api-key: <key>`, `x-api-key: <key>` or `?key=<key>`",
            )),
            (true, false) => Err(ProxyError::Unauthorized(
                "the key presented is not this proxy's access key (PROXY_API_KEY); check the API key your client is configured with",
            )),
        }
    }
}

/// Decodes `%XX` escapes and `+` (as a space) of a query component.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of query parameter `name`, decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| percent_decode(k) == name)
        .map(|(_, v)| percent_decode(v))
}

/// Query parameters that Google reads as a credential, a billed project, a
/// method or a JSONP wrapper (its "system parameters"); a caller's are never
/// sent upstream, where the pool key is the one credential. Matched after
/// percent-decoding, case-insensitively, with or without Google's `$`.
const SYSTEM_PARAMS: &[&str] =
    &["key", "access_token", "oauth_token", "bearer_token", "userproject", "httpmethod", "callback", "quotauser"];

/// The query without any parameter that would carry a credential (or
/// another [`SYSTEM_PARAMS`] entry) upstream.
pub fn strip_key_param(query: &str) -> String {
    let dropped = |name: &str| {
        let name = percent_decode(name).to_ascii_lowercase();
        SYSTEM_PARAMS.contains(&name.trim().trim_start_matches('$'))
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !dropped(pair.split_once('=').map_or(*pair, |(k, _)| k)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Claim {
    /// The claim of a request's credentials.
    pub fn of(creds: &Credentials, open: bool) -> Self {
        let presented = [&creds.bearer, &creds.goog_api_key, &creds.query_key, &creds.x_api_key];
        let mut hashes: Vec<String> = presented.into_iter().flatten().map(|c| hash_secret(c)).collect();
        hashes.dedup();
        Self { hashes, open }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn finds_each_mechanism() {
        let c = Credentials::from_request(&h(&[("Authorization", "Bearer  abc ")]), "");
        assert_eq!(c.bearer.as_deref(), Some("abc"));
        assert!(!c.is_gemini_style());
        let c = Credentials::from_request(&h(&[("X-Goog-Api-Key", "g")]), "alt=sse");
        assert_eq!(c.goog_api_key.as_deref(), Some("g"));
        assert!(c.is_gemini_style());
        let c = Credentials::from_request(&[], "alt=sse&key=a%2Bb");
        assert_eq!(c.query_key.as_deref(), Some("a+b"));
        assert!(c.is_gemini_style());
        let c = Credentials::from_request(&h(&[("authorization", "Basic xyz")]), "");
        assert_eq!(c.bearer, None);
    }

    #[test]
    fn empty_credentials_count_as_absent() {
        let c = Credentials::from_request(&h(&[("x-goog-api-key", ""), ("authorization", "Bearer")]), "key=");
        assert_eq!(c, Credentials::default());
        assert!(!c.is_gemini_style());
        let key = ApiKey::new("proxy-key-0123456789");
        // With a proxy key: "needs its key", not "the wrong key".
        assert!(matches!(c.authorize(Some(&key)), Err(ProxyError::Unauthorized(m)) if m.contains("needs")));
        assert!(c.authorize(None).is_ok());
        let c = Credentials::from_request(
            &h(&[("x-goog-api-key", ""), ("authorization", "Bearer proxy-key-0123456789")]),
            "",
        );
        assert!(c.authorize(Some(&key)).is_ok(), "the bearer token counts, the empty header does not");
    }

    #[test]
    fn authorization_rules() {
        let key = ApiKey::new("proxy-key-0123456789");
        let open = Credentials::default();
        assert!(open.authorize(None).is_ok());
        assert!(matches!(open.authorize(Some(&key)), Err(ProxyError::Unauthorized(m)) if m.contains("needs")));
        let wrong = Credentials { bearer: Some("nope".into()), ..Default::default() };
        assert!(
            matches!(wrong.authorize(Some(&key)), Err(ProxyError::Unauthorized(m)) if m.contains("not this proxy"))
        );
        for c in [
            Credentials { bearer: Some("proxy-key-0123456789".into()), ..Default::default() },
            Credentials { goog_api_key: Some("proxy-key-0123456789".into()), ..Default::default() },
            Credentials { query_key: Some("proxy-key-0123456789".into()), ..Default::default() },
            Credentials {
                bearer: Some("other".into()),
                query_key: Some("proxy-key-0123456789".into()),
                ..Default::default()
            },
        ] {
            assert!(c.authorize(Some(&key)).is_ok(), "{c:?}");
        }
    }

    #[test]
    fn query_handling() {
        assert_eq!(strip_key_param("alt=sse&key=abc"), "alt=sse");
        assert_eq!(strip_key_param("key=abc"), "");
        assert_eq!(strip_key_param("k%65y=abc&pageSize=5&"), "pageSize=5");
        assert_eq!(
            strip_key_param("access_token=ya29.x&alt=sse&$userProject=p&Callback=f&oauth_token=t&%24key=k&quotaUser=u"),
            "alt=sse"
        );
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
        assert_eq!(percent_decode("%41%42"), "AB");
    }

    #[test]
    fn debug_hides_values() {
        let c = Credentials { bearer: Some("secret".into()), ..Default::default() };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
