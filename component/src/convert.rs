//! Conversions between the WIT `key-store` types and `core`'s.

use crate::bindings::gemini_proxy::host::key_store as ks;
use proxy_core::wire::http::Response;
use proxy_core::wire::keystore::Claim;
use proxy_core::wire::keystore::StatsView;
use proxy_core::wire::keystore::{AdminAnswer, AdminOp};
use proxy_core::{ApiKey, KeyId, UnixMillis};
use proxy_core::{Lease, Outcome, RateLimitScope, Report, Unavailable};

pub fn admin_op(op: &AdminOp) -> String {
    serde_json::to_string(op).unwrap_or_default()
}

pub fn admin_answer(a: ks::AdminAnswer) -> AdminAnswer {
    AdminAnswer { status: a.status, body: a.body, leases: a.leases.into_iter().map(lease).collect() }
}

pub fn lease(l: ks::Lease) -> Lease {
    Lease { id: KeyId::from_string(l.id), secret: ApiKey::new(l.secret), client: l.client, pinned: l.pinned }
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
        ks::Unavailable::Refused(json) => match serde_json::from_str(&json) {
            Ok(refusal) => Unavailable::Refused { refusal },
            Err(e) => Unavailable::NoUsableKey { why: format!("the key store's refusal is unreadable: {e}") },
        },
        ks::Unavailable::ResourceRefused(json) => match serde_json::from_str(&json) {
            Ok(refusal) => Unavailable::Resource { refusal },
            Err(e) => Unavailable::NoUsableKey { why: format!("the key store's refusal is unreadable: {e}") },
        },
    }
}

pub fn summary(s: proxy_core::wire::summary::Summary) -> ks::RequestSummary {
    let tokens =
        s.tokens.map(|u| ks::TokenUsage { prompt: u.prompt, output: u.output, cached: u.cached, thinking: u.thinking });
    ks::RequestSummary {
        at: s.at,
        request_id: s.request_id,
        method: s.method,
        path: s.path,
        dialect: s.dialect,
        client: s.client,
        model_asked: s.model_asked,
        model: s.model,
        status: s.status,
        streamed: s.streamed,
        attempts: s
            .attempts
            .into_iter()
            .map(|a| ks::RequestAttempt { key: a.key.as_str().to_owned(), outcome: a.outcome, reason: a.reason })
            .collect(),
        tokens,
        error: s.error,
        reason: s.reason,
        ttfb_ms: s.ttfb_ms,
        ms: s.ms,
    }
}

pub fn claim(c: &Claim) -> ks::ClientClaim {
    ks::ClientClaim { hashes: c.hashes.clone(), open: c.open }
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
    let usage =
        r.usage.map(|u| ks::TokenUsage { prompt: u.prompt, output: u.output, cached: u.cached, thinking: u.thinking });
    ks::AttemptReport {
        key: r.key.as_str().to_owned(),
        model: r.model.clone(),
        outcome,
        usage,
        client: r.client.clone(),
        owned: r
            .owned
            .iter()
            .map(|o| ks::OwnedResource { name: o.name.clone(), expires: o.expires.map(|e| e.0) })
            .collect(),
        deleted: r.deleted.clone(),
        listed: r.listed,
        usage_of: r.usage_of.clone(),
    }
}

pub fn stats_view(v: StatsView) -> ks::StatsView {
    match v {
        StatsView::Json => ks::StatsView::Json,
        StatsView::Page(lang) => ks::StatsView::Page(page_lang(lang)),
        StatsView::AdminPage(lang) => ks::StatsView::AdminPage(page_lang(lang)),
        StatsView::Metrics => ks::StatsView::Metrics,
    }
}

fn page_lang(lang: proxy_core::wire::http::Lang) -> ks::PageLang {
    match lang {
        proxy_core::wire::http::Lang::En => ks::PageLang::En,
        proxy_core::wire::http::Lang::Zh => ks::PageLang::Zh,
    }
}

pub fn rendered(r: ks::Rendered) -> Response {
    Response { status: r.status, headers: r.headers, body: r.body }
}
