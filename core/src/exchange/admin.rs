//! A key check: the one cheap upstream call that tells whether a key works,
//! and what its answer means.

use crate::google::errors;
use crate::wire::keystore::CheckInfo;
use crate::wire::keystore::Lease;
use crate::wire::secret;
use crate::wire::secret::ApiKey;
/// What one check found, from the upstream's answer to a models list (the
/// store stamps it with its time).
pub fn classify_check(status: u16, body: &[u8], secret: &ApiKey) -> CheckInfo {
    let err = errors::parse_google_error(body);
    let message = err.as_ref().map(|e| e.message.to_ascii_lowercase()).unwrap_or_default();
    let reasons: Vec<&str> = err.as_ref().map(|e| e.reasons.iter().map(String::as_str).collect()).unwrap_or_default();
    let has = |r: &str| reasons.contains(&r);
    let found = match status {
        200..=299 => "works",
        429 => "rate-limited",
        401 if has("ACCESS_TOKEN_TYPE_UNSUPPORTED") || message.contains("expected oauth 2 access token") => {
            "wrong-key-type"
        }
        _ if message.contains("reported as leaked") => "leaked",
        _ if has("CONSUMER_SUSPENDED") || message.contains("suspended") => "suspended",
        _ if has("API_KEY_INVALID") || message.contains("api key not valid") || status == 401 => "invalid",
        _ => "error",
    };
    let reason = (found != "works").then(|| {
        let text = err.map(|e| e.message).filter(|m| !m.is_empty()).unwrap_or_else(|| format!("HTTP {status}"));
        secret::redact(&text, &[secret])
    });
    CheckInfo { status: found.to_owned(), at: 0, reason }
}

/// The most of a key check's answer read.
pub const CHECK_BODY_BYTES: usize = 64 * 1024;

/// The check of `lease`: one models list, the cheapest call (no generation
/// quota spent).
pub fn check_request(cfg: &crate::config::Config, lease: &Lease) -> crate::exchange::UpstreamRequest {
    let base = &cfg.gemini_upstream;
    crate::exchange::UpstreamRequest {
        method: crate::wire::http::Method::Get,
        scheme: base.scheme,
        authority: base.authority.clone(),
        path_and_query: format!("{}/models?pageSize=1", base.path),
        headers: vec![("x-goog-api-key".to_owned(), lease.secret.expose().to_owned())],
        body: crate::exchange::BodyFrom::Read,
    }
}
