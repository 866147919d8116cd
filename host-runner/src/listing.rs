//! Google's models list, fetched by the host itself with a pool key at
//! start and after each daily reset (as the Worker's cron does): each model
//! it names is then counted under its own name from its first call, an
//! outage's failures included. Core's exchange
//! ([`Exchange::models_listing`]) decides the request, the key and what
//! the answer means; this runs its steps natively, as the Live relay does,
//! with the component's outgoing client and key store.

use crate::outbound::Outbound;
use crate::store::KeyBackend;
use proxy_core::Config;
use proxy_core::exchange::{Event, Exchange, Step};
use std::sync::Arc;

/// The most of the listing's answer read (Google's is about 100 KiB).
const MAX_LISTING_BYTES: usize = 8 * 1024 * 1024;

/// Runs the host's own models listing to its end; logs how it went.
pub async fn list_models(config: Arc<Config>, store: Arc<dyn KeyBackend>, outbound: Outbound, now_ms: u64) {
    let mut exchange = Exchange::models_listing(config)
        .with_request_id(format!("models-listing-{now_ms:x}"))
        .with_now(proxy_core::UnixMillis(now_ms));
    let mut body: Option<Vec<u8>> = None;
    let mut event = Event::Start;
    let mut status = 0;
    for _ in 0..64 {
        event = match exchange.resume(event) {
            Step::ReadBody { .. } => Event::Body(Vec::new()),
            Step::Acquire { model, exclude, settle, client, resources } => {
                Event::Acquired(store.acquire(client.as_ref(), &model, &resources, &exclude, settle))
            }
            Step::Send(up) => match outbound.fetch(&up, MAX_LISTING_BYTES).await {
                Ok((s, headers, bytes)) => {
                    body = Some(bytes);
                    Event::Head { status: s, headers }
                }
                Err(reason) => Event::SendFailed { reason, timed_out: false },
            },
            Step::ReadErrorBody { limit } => {
                let mut bytes = body.take().unwrap_or_default();
                bytes.truncate(limit);
                Event::ErrorBody(bytes)
            }
            Step::Stream { status: s, mut pipe, .. } => {
                status = s;
                let bytes = body.take().unwrap_or_default();
                let _ = pipe.push(&bytes);
                let _ = pipe.finish();
                Event::Streamed(Ok(pipe.seen()))
            }
            Step::Respond(r) => {
                status = r.status;
                Event::Done
            }
            Step::Report(r) => {
                store.report(r);
                Event::Done
            }
            Step::Admin(op) => Event::Admin(store.admin(op)),
            Step::Stats(_) | Step::Reset => Event::StoreFailed("not a listing's step".into()),
            // A listing is never kept alive.
            Step::KeepAlive { .. } => Event::SendFailed { reason: "not a listing's step".into(), timed_out: false },
            Step::EndCommitted { .. } => Event::Done,
            Step::Log(line) => {
                tracing::warn!("{line}");
                Event::Done
            }
            Step::Note(line) => {
                tracing::info!("{line}");
                Event::Done
            }
            Step::Summary(_) => Event::Done,
            Step::Done => {
                tracing::info!(status, "read Google's models list with a pool key");
                return;
            }
        };
    }
    tracing::warn!("the models listing did not end");
}
