//! What an upstream answer means: for the request (retry on another key, or
//! relay) and for the key (counted, cooling, exhausted, disabled).
//!
//! Google's error bodies are `{"error":{"code","message","status","details"}}`
//! on the native API and the same wrapped in an array on the
//! OpenAI-compatible routes; `details` come in any order.

use crate::outcome::{Outcome, RateLimit, RateLimitScope};
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
}

const KEY_REASONS: &[&str] = &[
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

const KEY_MESSAGES: &[&str] = &[
    "api key not valid",
    "api key expired",
    "reported as leaked",
    "has been suspended",
    "consumer_suspended",
    "permission denied: consumer",
    "api key not found",
    "invalid api key",
    "has not been used in project",
];

fn is_key_problem(status: u16, err: &GoogleError) -> bool {
    let msg = err.message.to_ascii_lowercase();
    let by_reason = err.reasons.iter().any(|r| KEY_REASONS.contains(&r.as_str()));
    let by_message = KEY_MESSAGES.iter().any(|m| msg.contains(m));
    match status {
        400 | 403 => by_reason || by_message,
        401 => true,
        _ => false,
    }
}

/// Classifies an upstream answer. `redact` scrubs secrets from the reason
/// kept; `body` is the (bounded) error body, ignored for 2xx.
pub fn classify(status: u16, body: &[u8], redact: impl Fn(&str) -> String) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Success;
    }
    let err = parse_google_error(body);
    let reason = || {
        let text = match &err {
            Some(e) if !e.message.is_empty() => e.message.clone(),
            _ => format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]).trim()),
        };
        redact(&text)
    };
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
        400 | 401 | 403 if err.as_ref().is_some_and(|e| is_key_problem(status, e)) => {
            Verdict::Retry(Outcome::KeyRejected { reason: reason() })
        }
        500 | 502 | 503 | 504 => Verdict::Retry(Outcome::UpstreamError { status, reason: reason() }),
        s if s >= 500 => Verdict::Relay(Outcome::UpstreamError { status, reason: reason() }),
        s => Verdict::Relay(Outcome::ClientError { status: s }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::redact;

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
    fn invalid_suspended_and_leaked_keys_are_rejected_with_redacted_reason() {
        for (status, body) in [(400, INVALID), (403, SUSPENDED), (403, LEAKED)] {
            match classify(status, body.as_bytes(), r) {
                Verdict::Retry(Outcome::KeyRejected { reason }) => {
                    assert!(!reason.contains("AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"), "{reason}");
                }
                v => panic!("{status}: {v:?}"),
            }
        }
    }

    #[test]
    fn caller_problems_are_relayed_and_key_untouched() {
        assert_eq!(classify(400, LOCATION.as_bytes(), r), Verdict::Relay(Outcome::ClientError { status: 400 }));
        assert_eq!(classify(404, b"{}", r), Verdict::Relay(Outcome::ClientError { status: 404 }));
        let other403 = br#"{"error":{"code":403,"message":"You do not have permission to access the tuned model","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(classify(403, other403, r), Verdict::Relay(Outcome::ClientError { status: 403 }));
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
