//! The `key-store` WIT interface, implemented over a [`KeyBackend`]:
//! a Ctx, a View to reach it from the store's data, and `add_to_linker`.
//! Only conversions live here; the decisions are `core`'s.

use crate::proxy::bindings::gemini_proxy::host::key_store as wit;
use crate::proxy::bindings::gemini_proxy::host::log;
use crate::store::KeyBackend;
use proxy_core::stats::{KeyState, Snapshot};
use proxy_core::{KeyId, Outcome, RateLimit, RateLimitScope, Report, Unavailable};
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker};

/// Per-store state of the key-store interface.
#[expect(missing_debug_implementations, reason = "holds a trait object")]
pub struct KeyStoreCtx {
    backend: Arc<dyn KeyBackend>,
}

impl KeyStoreCtx {
    /// A context over `backend`.
    pub fn new(backend: Arc<dyn KeyBackend>) -> Self {
        Self { backend }
    }
}

/// Reaches the [`KeyStoreCtx`] in a store's data.
pub trait KeyStoreView {
    /// The context.
    fn key_store(&mut self) -> &mut KeyStoreCtx;
}

/// Adds `gemini-proxy:host/key-store` and `gemini-proxy:host/log` to
/// `linker`.
pub fn add_to_linker<T: KeyStoreView + Send + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<KeyStoreCtx>>(linker, |t| t.key_store())?;
    log::add_to_linker::<T, HasSelf<KeyStoreCtx>>(linker, |t| t.key_store())
}

impl log::Host for KeyStoreCtx {
    fn failure(&mut self, message: String) {
        tracing::error!(%message, "the proxy component answered a failure");
    }
}

impl wit::Host for KeyStoreCtx {
    fn acquire(
        &mut self,
        model: String,
        exclude: Vec<String>,
        settle: Option<wit::AttemptReport>,
    ) -> Result<wit::Lease, wit::Unavailable> {
        let exclude: Vec<KeyId> = exclude.into_iter().map(KeyId::from_string).collect();
        match self.backend.acquire(&model, &exclude, settle.map(report)) {
            Ok(lease) => Ok(wit::Lease { id: lease.id.as_str().to_owned(), secret: lease.secret.expose().to_owned() }),
            Err(Unavailable::AllLimited { until, retry_after_ms, keys }) => {
                Err(wit::Unavailable::AllLimited(wit::Limited {
                    until: until.0,
                    retry_after_ms,
                    keys: u32::try_from(keys).unwrap_or(u32::MAX),
                }))
            }
            Err(Unavailable::AllTried) => Err(wit::Unavailable::AllTried),
            Err(Unavailable::NoUsableKey { why }) => Err(wit::Unavailable::NoUsableKey(why)),
        }
    }

    fn report(&mut self, r: wit::AttemptReport) {
        self.backend.report(report(r));
    }

    fn reset(&mut self) {
        self.backend.reset();
    }

    fn snapshot(&mut self) -> wit::Stats {
        stats(self.backend.snapshot())
    }
}

fn report(r: wit::AttemptReport) -> Report {
    let outcome = match r.outcome {
        wit::Outcome::Success => Outcome::Success,
        wit::Outcome::RateLimited(rl) => Outcome::RateLimited(RateLimit {
            scope: match rl.scope {
                wit::RateLimitScope::PerMinute => RateLimitScope::PerMinute,
                wit::RateLimitScope::PerDay => RateLimitScope::PerDay,
                wit::RateLimitScope::Unknown => RateLimitScope::Unknown,
            },
            retry_after_ms: rl.retry_after_ms,
            reason: rl.reason,
        }),
        wit::Outcome::KeyRejected(reason) => Outcome::KeyRejected { reason },
        wit::Outcome::ClientError(status) => Outcome::ClientError { status },
        wit::Outcome::UpstreamError(e) => Outcome::UpstreamError { status: e.status, reason: e.reason },
        wit::Outcome::TransportError(reason) => Outcome::TransportError { reason },
        wit::Outcome::BrokenStream(reason) => Outcome::BrokenStream { reason },
    };
    Report { key: KeyId::from_string(r.key), model: r.model, outcome }
}

fn stats(s: Snapshot) -> wit::Stats {
    wit::Stats {
        now: s.now.0,
        next_quota_reset: s.next_quota_reset.0,
        keys: s
            .keys
            .into_iter()
            .map(|k| wit::KeyStats {
                id: k.id.as_str().to_owned(),
                masked: k.masked,
                disabled: k.disabled.map(|d| wit::Disabled { reason: d.reason, since: d.since.0 }),
                models: k
                    .models
                    .into_iter()
                    .map(|m| {
                        let (state, until) = match m.state {
                            KeyState::Ok => (wit::KeyState::Ok, None),
                            KeyState::Cooling { until } => (wit::KeyState::Cooling, Some(until.0)),
                            KeyState::Exhausted { until } => (wit::KeyState::Exhausted, Some(until.0)),
                            KeyState::Disabled => (wit::KeyState::Disabled, None),
                        };
                        wit::ModelStats {
                            model: m.model,
                            requests: m.requests,
                            successes: m.successes,
                            rate_limited: m.rate_limited,
                            errors: m.errors,
                            last_used: m.last_used.map(|t| t.0),
                            state,
                            until,
                            reason: m.reason,
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}
