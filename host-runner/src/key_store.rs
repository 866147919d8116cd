//! The `key-store` WIT interface, implemented over a [`KeyBackend`]:
//! a Ctx, a View to reach it from the store's data, and `add_to_linker`.
//! Only conversions live here; the decisions are `core`'s.

use crate::proxy::bindings::gemini_proxy::host::key_store as wit;
use crate::proxy::bindings::gemini_proxy::host::log;
use crate::store::KeyBackend;
use proxy_core::wire::keystore::Claim;
use proxy_core::wire::keystore::Owned;
use proxy_core::wire::keystore::StatsView;
use proxy_core::wire::keystore::{AdminAnswer, AdminOp};
use proxy_core::wire::resource::Resource;
use proxy_core::{KeyId, Outcome, RateLimit, RateLimitScope, Report, Unavailable, UnixMillis};
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

    fn note(&mut self, message: String) {
        tracing::info!(%message, "the proxy component noted");
    }
}

impl wit::Host for KeyStoreCtx {
    fn acquire(
        &mut self,
        model: String,
        exclude: Vec<String>,
        settle: Option<wit::AttemptReport>,
        client: Option<wit::ClientClaim>,
        resources: Vec<String>,
    ) -> Result<wit::Lease, wit::Unavailable> {
        let exclude: Vec<KeyId> = exclude.into_iter().map(KeyId::from_string).collect();
        let claim = client.map(|c| Claim { hashes: c.hashes, open: c.open });
        let resources: Vec<Resource> = resources.iter().filter_map(|n| Resource::stored(n)).collect();
        match self.backend.acquire(claim.as_ref(), &model, &resources, &exclude, settle.map(report)) {
            Ok(lease) => Ok(wit::Lease {
                id: lease.id.as_str().to_owned(),
                secret: lease.secret.expose().to_owned(),
                client: lease.client,
                pinned: lease.pinned,
            }),
            Err(Unavailable::AllLimited { until, retry_after_ms, keys }) => {
                Err(wit::Unavailable::AllLimited(wit::Limited {
                    until: until.0,
                    retry_after_ms,
                    keys: u32::try_from(keys).unwrap_or(u32::MAX),
                }))
            }
            Err(Unavailable::AllTried) => Err(wit::Unavailable::AllTried),
            Err(Unavailable::NoUsableKey { why }) => Err(wit::Unavailable::NoUsableKey(why)),
            Err(Unavailable::Refused { refusal }) => {
                Err(wit::Unavailable::Refused(serde_json::to_string(&refusal).unwrap_or_default()))
            }
            Err(Unavailable::Resource { refusal }) => {
                Err(wit::Unavailable::ResourceRefused(serde_json::to_string(&refusal).unwrap_or_default()))
            }
        }
    }

    fn report(&mut self, r: wit::AttemptReport) {
        self.backend.report(report(r));
    }

    fn reset(&mut self) {
        self.backend.reset();
    }

    fn log_request(&mut self, s: wit::RequestSummary) {
        let tokens = s.tokens.map(|u| proxy_core::wire::usage::TokenUsage {
            prompt: u.prompt,
            output: u.output,
            cached: u.cached,
            thinking: u.thinking,
        });
        let attempts = s
            .attempts
            .into_iter()
            .map(|a| proxy_core::wire::summary::Attempt {
                key: KeyId::from_string(a.key),
                outcome: a.outcome,
                reason: a.reason,
            })
            .collect();
        self.backend.log_request(proxy_core::wire::summary::Summary {
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
            attempts,
            tokens,
            error: s.error,
            reason: s.reason,
            ttfb_ms: s.ttfb_ms,
            ms: s.ms,
            ..proxy_core::wire::summary::Summary::default()
        });
    }

    fn stats(&mut self, view: wit::StatsView) -> wit::Rendered {
        let view = match view {
            wit::StatsView::Json => StatsView::Json,
            wit::StatsView::Page(lang) => StatsView::Page(page_lang(lang)),
            wit::StatsView::AdminPage(lang) => StatsView::AdminPage(page_lang(lang)),
            wit::StatsView::Metrics => StatsView::Metrics,
        };
        let r = self.backend.stats(view);
        wit::Rendered { status: r.status, headers: r.headers, body: r.body }
    }

    fn admin(&mut self, op: String) -> wit::AdminAnswer {
        let answer = match serde_json::from_str::<AdminOp>(&op) {
            Ok(op) => self.backend.admin(op),
            Err(e) => {
                tracing::error!(error = %e, "the component sent an admin operation this host cannot read");
                let e = proxy_core::ProxyError::BadRequest("the admin operation could not be read".into());
                let r = e.to_response(proxy_core::Dialect::Gemini);
                AdminAnswer { status: r.status, body: r.body, leases: Vec::new() }
            }
        };
        let leases = answer
            .leases
            .into_iter()
            .map(|l| wit::Lease {
                id: l.id.as_str().to_owned(),
                secret: l.secret.expose().to_owned(),
                client: None,
                pinned: false,
            })
            .collect();
        wit::AdminAnswer { status: answer.status, body: answer.body, leases }
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
    let usage = r.usage.map(|u| proxy_core::wire::usage::TokenUsage {
        prompt: u.prompt,
        output: u.output,
        cached: u.cached,
        thinking: u.thinking,
    });
    let owned = r.owned.into_iter().map(|o| Owned { name: o.name, expires: o.expires.map(UnixMillis) }).collect();
    Report {
        key: KeyId::from_string(r.key),
        model: r.model,
        outcome,
        usage,
        client: r.client,
        owned,
        deleted: r.deleted,
        listed: r.listed,
        usage_of: r.usage_of,
    }
}

fn page_lang(lang: wit::PageLang) -> proxy_core::wire::http::Lang {
    match lang {
        wit::PageLang::En => proxy_core::wire::http::Lang::En,
        wit::PageLang::Zh => proxy_core::wire::http::Lang::Zh,
    }
}
