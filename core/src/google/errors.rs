//! What an upstream answer means: for the request (retry on another key, or
//! relay) and for the key (counted, cooling, exhausted, disabled).
//!
//! Google's error bodies are `{"error":{"code","message","status","details"}}`
//! on the native API and the same wrapped in an array on the
//! OpenAI-compatible routes; `details` come in any order.

use crate::wire::keystore::{Outcome, RateLimit, RateLimitScope};
use serde_json::Value;

/// The fields of a Google error that matter here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoogleError {
    /// `error.message`.
    pub message: String,
    /// `error.status`.
    pub status: Option<String>,
    /// `ErrorInfo.reason` of every detail.
    pub reasons: Vec<String>,
    /// `QuotaFailure.violations[].quotaId`.
    pub quota_ids: Vec<String>,
    /// `RetryInfo.retryDelay`, in milliseconds.
    pub retry_delay_ms: Option<u64>,
}

/// Parses a Google error body (object or array form). `None` when the
/// body is not one.
pub fn parse_google_error(body: &[u8]) -> Option<GoogleError> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let err = match &v {
        Value::Array(items) => items.iter().find_map(|i| i.get("error"))?,
        Value::Object(_) => v.get("error")?,
        _ => return None,
    };
    let mut out = GoogleError {
        message: match err.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => err.as_str().map(str::to_owned).unwrap_or_default(),
        },
        status: err.get("status").and_then(Value::as_str).map(str::to_owned),
        ..Default::default()
    };
    for d in err.get("details").and_then(Value::as_array).into_iter().flatten() {
        let kind = d.get("@type").and_then(Value::as_str).unwrap_or_default();
        if kind.ends_with("google.rpc.ErrorInfo") {
            if let Some(r) = d.get("reason").and_then(Value::as_str) {
                out.reasons.push(r.to_owned());
            }
        } else if kind.ends_with("google.rpc.QuotaFailure") {
            for v in d.get("violations").and_then(Value::as_array).into_iter().flatten() {
                if let Some(q) = v.get("quotaId").and_then(Value::as_str) {
                    out.quota_ids.push(q.to_owned());
                }
            }
        } else if kind.ends_with("google.rpc.RetryInfo") {
            out.retry_delay_ms = d.get("retryDelay").and_then(Value::as_str).and_then(parse_duration_ms);
        }
    }
    Some(out)
}

/// Parses a protobuf JSON duration such as `"37s"` or `"1.5s"`.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let secs = s.trim().strip_suffix('s')?;
    let value: f64 = secs.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| (value * 1000.0).ceil() as u64)
}

/// What to do with an upstream answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: stream it to the client.
    Success,
    /// The key failed; report the outcome and try another key.
    Retry(Outcome),
    /// The caller's own problem (or one no other key would fix): relay the
    /// answer as it is, after reporting the outcome.
    Relay(Outcome),
    /// A refusal that may be the key's or the caller's doing (a 401, a 403
    /// `PERMISSION_DENIED` that names no key reason): the key is checked
    /// alone ([`Confirmation`]) before anything is held against it.
    Suspect,
}

/// The `ErrorInfo.reason`s by which Google says that a key itself cannot
/// be used (invalid, expired, suspended, its project's service off, or a
/// restriction that no request through the proxy can meet). Only these
/// structured words disable a key: a message can echo the caller's own
/// text (unknown field names, invalid values, prompt text).
pub const KEY_REASONS: &[&str] = &[
    "API_KEY_INVALID",
    "API_KEY_EXPIRED",
    "CONSUMER_SUSPENDED",
    "SERVICE_DISABLED",
    "API_KEY_SERVICE_BLOCKED",
    "API_KEY_HTTP_REFERRER_BLOCKED",
    "API_KEY_IP_ADDRESS_BLOCKED",
    "API_KEY_ANDROID_APP_BLOCKED",
    "API_KEY_IOS_APP_BLOCKED",
    "BILLING_DISABLED",
];

/// Whether Google's structured word says the key is unusable.
fn names_a_key_reason(err: &GoogleError) -> bool {
    err.reasons.iter().any(|r| KEY_REASONS.contains(&r.as_str()))
}

/// Classifies an upstream answer. `redact` scrubs secrets from the reason
/// kept; `body` is the (bounded) error body, ignored for 2xx. The key is
/// judged by the status, `error.status` and `ErrorInfo.reason` only, never
/// by the message's words.
pub fn classify(status: u16, body: &[u8], redact: impl Fn(&str) -> String) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Success;
    }
    let err = parse_google_error(body);
    let reason = || error_reason(status, err.as_ref(), body, &redact);
    match status {
        429 => {
            let e = err.clone().unwrap_or_default();
            let scope = if e.quota_ids.iter().any(|q| q.contains("PerDay")) {
                RateLimitScope::PerDay
            } else if e.quota_ids.iter().any(|q| q.contains("PerMinute")) {
                RateLimitScope::PerMinute
            } else {
                RateLimitScope::Unknown
            };
            Verdict::Retry(Outcome::RateLimited(RateLimit {
                scope,
                retry_after_ms: e.retry_delay_ms,
                reason: reason(),
            }))
        }
        400 | 401 | 403 if err.as_ref().is_some_and(names_a_key_reason) => {
            Verdict::Retry(Outcome::KeyRejected { reason: reason() })
        }
        // Also a 401 that says how the credential was presented
        // (`ACCESS_TOKEN_TYPE_UNSUPPORTED`): that depends on the endpoint,
        // which the caller chose.
        401 => Verdict::Suspect,
        403 if err.as_ref().is_none_or(|e| e.status.as_deref().is_none_or(|s| s == "PERMISSION_DENIED")) => {
            Verdict::Suspect
        }
        500 | 502 | 503 | 504 => Verdict::Retry(Outcome::UpstreamError { status, reason: reason() }),
        s if s >= 500 => Verdict::Relay(Outcome::UpstreamError { status, reason: reason() }),
        s => Verdict::Relay(Outcome::ClientError { status: s }),
    }
}

/// The reason kept for an error answer: Google's message, else the status
/// and the body's start; redacted.
fn error_reason(status: u16, err: Option<&GoogleError>, body: &[u8], redact: &impl Fn(&str) -> String) -> String {
    let text = match err {
        Some(e) if !e.message.is_empty() => e.message.clone(),
        _ => format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]).trim()),
    };
    redact(&text)
}

/// What the check of a suspect key found: the answer to a call that
/// carries nothing of the caller's (one models list with that key alone,
/// [`crate::exchange::admin::check_request`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The key works: the refusal was the caller's doing; relay it.
    KeyWorks,
    /// The key was refused again: it is disabled, with Google's reason
    /// from this answer.
    KeyRejected(Outcome),
    /// Nothing can be told (a 429, a 5xx, no answer): the key is left
    /// alone and the caller gets the first answer.
    Unknown,
}

/// Judges the answer to a suspect key's check. The call carried no input
/// of the caller's, so any refusal of it (400, 401, 403) is the key's.
pub fn confirm(status: u16, body: &[u8], redact: impl Fn(&str) -> String) -> Confirmation {
    match status {
        200..=299 => Confirmation::KeyWorks,
        400 | 401 | 403 => {
            let err = parse_google_error(body);
            Confirmation::KeyRejected(Outcome::KeyRejected {
                reason: error_reason(status, err.as_ref(), body, &redact),
            })
        }
        _ => Confirmation::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::secret::redact;

    fn r(s: &str) -> String {
        redact(s, &[])
    }

    const PER_DAY: &str = r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.Help","links":[{"description":"Learn more","url":"https://ai.google.dev/gemini-api/docs/rate-limits"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"21s"},{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-pro"},"quotaValue":"50"}]}]}}"#;
    const PER_MINUTE: &str = r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_input_token_count","quotaId":"GenerateContentInputTokensPerModelPerMinute-FreeTier","quotaValue":"250000"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37.5s"}]}}"#;
    const INVALID: &str = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}},{"@type":"type.googleapis.com/google.rpc.LocalizedMessage","locale":"en-US","message":"API key not valid. Please pass a valid API key."}]}}"#;
    const SUSPENDED: &str = r#"{"error":{"code":403,"message":"Permission denied: Consumer 'api_key:AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW' has been suspended.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"CONSUMER_SUSPENDED","domain":"googleapis.com","metadata":{"containerInfo":"AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW","consumer":"projects/12345","service":"generativelanguage.googleapis.com"}}]}}"#;
    const LEAKED: &str = r#"{"error":{"code":403,"message":"Your API key was reported as leaked. Please use another API key.","status":"PERMISSION_DENIED"}}"#;
    const LOCATION: &str = r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#;

    #[test]
    fn per_day_429() {
        match classify(429, PER_DAY.as_bytes(), r) {
            Verdict::Retry(Outcome::RateLimited(rl)) => {
                assert_eq!(rl.scope, RateLimitScope::PerDay);
                assert_eq!(rl.retry_after_ms, Some(21_000));
                assert!(rl.reason.starts_with("You exceeded your current quota"));
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn per_minute_429_with_details_in_any_order() {
        match classify(429, PER_MINUTE.as_bytes(), r) {
            Verdict::Retry(Outcome::RateLimited(rl)) => {
                assert_eq!(rl.scope, RateLimitScope::PerMinute);
                assert_eq!(rl.retry_after_ms, Some(37_500));
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn bare_429_cools_with_unknown_scope() {
        for body in [
            &b""[..],
            b"Too Many Requests",
            br#"{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}"#,
        ] {
            match classify(429, body, r) {
                Verdict::Retry(Outcome::RateLimited(rl)) => {
                    assert_eq!(rl.scope, RateLimitScope::Unknown);
                    assert_eq!(rl.retry_after_ms, None);
                }
                v => panic!("{v:?}"),
            }
        }
    }

    #[test]
    fn openai_array_form() {
        let wrapped = format!("[{PER_DAY}]");
        assert!(matches!(
            classify(429, wrapped.as_bytes(), r),
            Verdict::Retry(Outcome::RateLimited(RateLimit { scope: RateLimitScope::PerDay, .. }))
        ));
        let wrapped = format!("[{INVALID}]");
        assert!(matches!(classify(400, wrapped.as_bytes(), r), Verdict::Retry(Outcome::KeyRejected { .. })));
    }

    #[test]
    fn keys_are_rejected_on_googles_structured_reason_with_a_redacted_reason() {
        for (status, body) in [(400, INVALID), (403, SUSPENDED)] {
            match classify(status, body.as_bytes(), r) {
                Verdict::Retry(Outcome::KeyRejected { reason }) => {
                    assert!(!reason.contains("AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"), "{reason}");
                }
                v => panic!("{status}: {v:?}"),
            }
        }
        let wrong_type = r#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"ACCESS_TOKEN_TYPE_UNSUPPORTED"}]}}"#;
        assert_eq!(classify(401, wrong_type.as_bytes(), r), Verdict::Suspect, "it depends on the endpoint");
    }

    #[test]
    fn a_leaked_key_a_bare_401_and_a_bare_permission_denied_are_confirmed_first() {
        assert_eq!(classify(403, LEAKED.as_bytes(), r), Verdict::Suspect);
        assert_eq!(classify(401, b"", r), Verdict::Suspect);
        let unauthenticated = br#"{"error":{"code":401,"message":"API key not valid","status":"UNAUTHENTICATED"}}"#;
        assert_eq!(classify(401, unauthenticated, r), Verdict::Suspect);
        let denied = br#"{"error":{"code":403,"message":"You do not have permission to access the tuned model","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(classify(403, denied, r), Verdict::Suspect);
    }

    /// Google echoes unknown field and parameter names, invalid values and
    /// prompt text: none of it may read as a key's fault.
    #[test]
    fn the_callers_words_echoed_by_google_never_reject_a_key() {
        let unknown_field = r#"{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"consumer_suspended\": Cannot find field.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"description":"Invalid JSON payload received. Unknown name \"consumer_suspended\": Cannot find field."}]}]}}"#;
        let unknown_param = r#"{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"api key not valid\": Cannot bind query parameter. Field 'api key not valid' could not be found in request message.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"description":"Invalid JSON payload received. Unknown name \"api key not valid\""}]}]}}"#;
        let invalid_value = r#"{"error":{"code":400,"message":"Invalid value at 'contents[0].role' (TYPE_STRING), \"Your API key was reported as leaked. has been suspended\"","status":"INVALID_ARGUMENT"}}"#;
        let echoed_in_openai = format!("[{unknown_field}]");
        for body in [unknown_field, unknown_param, invalid_value, echoed_in_openai.as_str(), LOCATION] {
            assert_eq!(
                classify(400, body.as_bytes(), r),
                Verdict::Relay(Outcome::ClientError { status: 400 }),
                "{body}"
            );
        }
        // A 403 of another kind than PERMISSION_DENIED is the caller's.
        let other = br#"{"error":{"code":403,"message":"API key not valid: consumer_suspended","status":"FAILED_PRECONDITION"}}"#;
        assert_eq!(classify(403, other, r), Verdict::Relay(Outcome::ClientError { status: 403 }));
    }

    #[test]
    fn a_suspect_keys_check_decides() {
        assert_eq!(confirm(200, b"{}", r), Confirmation::KeyWorks);
        match confirm(403, LEAKED.as_bytes(), r) {
            Confirmation::KeyRejected(Outcome::KeyRejected { reason }) => {
                assert!(reason.contains("leaked"), "{reason}")
            }
            c => panic!("{c:?}"),
        }
        assert!(matches!(confirm(401, b"", r), Confirmation::KeyRejected(_)));
        for status in [429, 500, 503] {
            assert_eq!(confirm(status, b"", r), Confirmation::Unknown, "{status}");
        }
    }

    #[test]
    fn caller_problems_are_relayed_and_key_untouched() {
        assert_eq!(classify(400, LOCATION.as_bytes(), r), Verdict::Relay(Outcome::ClientError { status: 400 }));
        assert_eq!(classify(404, b"{}", r), Verdict::Relay(Outcome::ClientError { status: 404 }));
    }

    #[test]
    fn server_errors_retry() {
        for s in [500, 502, 503, 504] {
            assert!(matches!(classify(s, b"oops", r), Verdict::Retry(Outcome::UpstreamError { .. })), "{s}");
        }
        assert!(matches!(classify(501, b"", r), Verdict::Relay(Outcome::UpstreamError { status: 501, .. })));
        assert_eq!(classify(200, b"", r), Verdict::Success);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("37s"), Some(37_000));
        assert_eq!(parse_duration_ms("0.001s"), Some(1));
        assert_eq!(parse_duration_ms("x"), None);
        assert_eq!(parse_duration_ms("-1s"), None);
    }
}
