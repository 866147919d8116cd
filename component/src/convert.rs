//! Conversions between the WIT `key-store` types and `core`'s.

use crate::bindings::gemini_proxy::host::key_store as ks;
use proxy_core::stats::{DisabledInfo, KeyState, KeyStats, ModelStats, Snapshot};
use proxy_core::{ApiKey, KeyId, UnixMillis};
use proxy_core::{Lease, Outcome, RateLimitScope, Report, Unavailable};

pub fn lease(l: ks::Lease) -> Lease {
    Lease { id: KeyId::from_string(l.id), secret: ApiKey::new(l.secret) }
}

pub fn unavailable(u: ks::Unavailable) -> Unavailable {
    match u {
        ks::Unavailable::AllLimited(l) => Unavailable::AllLimited {
            until: UnixMillis(l.until),
            retry_after_ms: l.retry_after_ms,
            keys: l.keys as usize,
        },
        ks::Unavailable::AllTried => Unavailable::AllTried,
        ks::Unavailable::NoUsableKey(why) => Unavailable::NoUsableKey { why },
    }
}

pub fn report(r: &Report) -> ks::AttemptReport {
    let outcome = match &r.outcome {
        Outcome::Success => ks::Outcome::Success,
        Outcome::RateLimited(rl) => ks::Outcome::RateLimited(ks::RateLimit {
            scope: match rl.scope {
                RateLimitScope::PerMinute => ks::RateLimitScope::PerMinute,
                RateLimitScope::PerDay => ks::RateLimitScope::PerDay,
                RateLimitScope::Unknown => ks::RateLimitScope::Unknown,
            },
            retry_after_ms: rl.retry_after_ms,
            reason: rl.reason.clone(),
        }),
        Outcome::KeyRejected { reason } => ks::Outcome::KeyRejected(reason.clone()),
        Outcome::ClientError { status } => ks::Outcome::ClientError(*status),
        Outcome::UpstreamError { status, reason } => {
            ks::Outcome::UpstreamError(ks::UpstreamError { status: *status, reason: reason.clone() })
        }
        Outcome::TransportError { reason } => ks::Outcome::TransportError(reason.clone()),
        Outcome::BrokenStream { reason } => ks::Outcome::BrokenStream(reason.clone()),
    };
    ks::AttemptReport { key: r.key.as_str().to_owned(), model: r.model.clone(), outcome }
}

pub fn snapshot(s: ks::Stats) -> Snapshot {
    Snapshot {
        now: UnixMillis(s.now),
        next_quota_reset: UnixMillis(s.next_quota_reset),
        keys: s
            .keys
            .into_iter()
            .map(|k| KeyStats {
                id: KeyId::from_string(k.id),
                masked: k.masked,
                disabled: k.disabled.map(|d| DisabledInfo { reason: d.reason, since: UnixMillis(d.since) }),
                models: k
                    .models
                    .into_iter()
                    .map(|m| ModelStats {
                        state: match (m.state, m.until) {
                            (ks::KeyState::Cooling, Some(u)) => KeyState::Cooling { until: UnixMillis(u) },
                            (ks::KeyState::Exhausted, Some(u)) => KeyState::Exhausted { until: UnixMillis(u) },
                            (ks::KeyState::Disabled, _) => KeyState::Disabled,
                            _ => KeyState::Ok,
                        },
                        model: m.model,
                        requests: m.requests,
                        successes: m.successes,
                        rate_limited: m.rate_limited,
                        errors: m.errors,
                        last_used: m.last_used.map(UnixMillis),
                        reason: m.reason,
                    })
                    .collect(),
            })
            .collect(),
    }
}
