//! The gemini-proxy WASI component: `wasi:http` glue around
//! `gemini-proxy-core`. It runs core's [`Exchange`] with plain I/O (the
//! request, the key store, the upstream, the response); every decision is
//! core's. Built for `wasi:http` 0.2 by default, for 0.3 with the `p3`
//! feature (the same exchange, driven by `p3.rs`).
#![deny(missing_docs)]

mod convert;
#[cfg(not(feature = "p3"))]
mod http;
#[cfg(feature = "p3")]
mod p3;
mod wasi;

/// Bindings generated from the WIT world in `../wit`.
#[cfg(not(feature = "p3"))]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "gemini-proxy:host/proxy",
        generate_all,
    });
}

/// Bindings generated from the WIT world in `../wit`, on `wasi:http` 0.3.
#[cfg(feature = "p3")]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "gemini-proxy:host/proxy-p3",
        generate_all,
    });
}

/// `wasi:http` of the world built (both versions are in `../wit`, so the
/// bindings name each by its version).
#[cfg(not(feature = "p3"))]
use bindings::wasi::http0_2_12 as wasi_http;
#[cfg(feature = "p3")]
use bindings::wasi::http0_3_0 as wasi_http;

use bindings::gemini_proxy::host::{key_store, log};
use proxy_core::exchange::{Event, Exchange, Step};
use proxy_core::wire::http::{Headers, Method, Response};
use proxy_core::{Config, Dialect, ProxyError};
use std::sync::{Arc, OnceLock};

/// A request's exchange, or the answer when the proxy cannot run one (its
/// configuration is unreadable). `origin` is the request's scheme and
/// authority, when it names them.
fn exchange(
    method: Method,
    path_and_query: String,
    headers: Headers,
    origin: Option<(&str, String)>,
) -> Result<Exchange, Response> {
    let config = match config() {
        Ok(c) => c.clone(),
        Err(e) => {
            log::failure(&format!("bad configuration: {e}"));
            let err = ProxyError::internal("the proxy is misconfigured; see its log", None);
            return Err(err.to_response(Dialect::Gemini));
        }
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let exchange =
        Exchange::new(config, method, path_and_query, headers).with_now(proxy_core::wire::time::UnixMillis(now));
    Ok(match origin {
        Some((scheme, authority)) => exchange.with_origin(scheme, &authority),
        None => exchange,
    })
}

/// Carries out a step that only calls the key store (or its log), the
/// same on either `wasi:http`.
fn key_store_step(step: Step) -> Event {
    match step {
        Step::Acquire { model, exclude, settle, client, resources } => {
            let exclude: Vec<String> = exclude.iter().map(|id| id.as_str().to_owned()).collect();
            let settled = settle.as_ref().map(convert::report);
            let claim = client.as_ref().map(convert::claim);
            let resources: Vec<String> = resources.iter().map(|r| r.name().to_owned()).collect();
            Event::Acquired(
                key_store::acquire(&model, &exclude, settled.as_ref(), claim.as_ref(), &resources)
                    .map(convert::lease)
                    .map_err(convert::unavailable),
            )
        }
        Step::Report(r) => {
            key_store::report(&convert::report(&r));
            Event::Done
        }
        Step::Reset => {
            key_store::reset();
            Event::Done
        }
        Step::Log(line) => {
            log::failure(&line);
            Event::Done
        }
        Step::Note(line) => {
            log::note(&line);
            Event::Done
        }
        Step::Admin(op) => Event::Admin(convert::admin_answer(key_store::admin(&convert::admin_op(&op)))),
        // The drivers hand over only the steps above.
        _ => Event::StoreFailed("the proxy took a step for the key store that is not one".into()),
    }
}

/// When a request came and when its answer's head went out, for its
/// summary.
pub(crate) struct Timing {
    pub(crate) started: std::time::Instant,
    /// Ms since the epoch.
    at: u64,
    head: std::cell::Cell<Option<std::time::Instant>>,
}

impl Timing {
    pub(crate) fn start() -> Self {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self { started: std::time::Instant::now(), at, head: std::cell::Cell::new(None) }
    }

    /// The answer's head is going out now (the first time counts).
    pub(crate) fn answered(&self) {
        if self.head.get().is_none() {
            self.head.set(Some(std::time::Instant::now()));
        }
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A request's summary, timed: to the request log (the key store's), and
/// to standard output as one JSON line when the proxy keeps an access log
/// (`ACCESS_LOG=json`; host-runner passes the component's output on).
fn summed_up(summary: proxy_core::exchange::Summary, timing: &Timing) -> Event {
    let ttfb = timing.head.get().map(|head| ms(head.duration_since(timing.started)));
    let summary = summary.timed(timing.at, ttfb, ms(timing.started.elapsed()));
    if config().is_ok_and(|c| c.access_log) {
        use std::io::Write as _;
        // A log line that cannot be written is not the caller's failure.
        let _ = writeln!(std::io::stdout().lock(), "{}", summary.line());
    }
    if !summary.own {
        key_store::log_request(&convert::summary(summary));
    }
    Event::Done
}

/// The configuration, read from the environment once per instance (the host
/// may serve many requests with one instance; its environment never changes).
fn config() -> Result<&'static Arc<Config>, &'static str> {
    static CONFIG: OnceLock<Result<Arc<Config>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| Config::from_lookup(|var| std::env::var(var).ok()).map(Arc::new).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(String::as_str)
}

#[cfg(not(feature = "p3"))]
use p2::Component;
#[cfg(feature = "p3")]
use p3::Component;

/// The component's exports, as the bindings generate them.
mod export {
    #![expect(unsafe_code, reason = "the generated export glue is unsafe FFI")]
    use super::Component;
    crate::bindings::export!(Component with_types_in crate::bindings);
}

/// The `wasi:http` 0.2 handler.
#[cfg(not(feature = "p3"))]
mod p2 {
    use crate::bindings::exports::wasi::http0_2_12::incoming_handler::Guest;
    use crate::bindings::gemini_proxy::host::key_store;
    use crate::wasi_http::types::{IncomingRequest, IncomingResponse, ResponseOutparam};
    use crate::{convert, http};
    use proxy_core::exchange::{BodyError, BodyFrom, Event, Exchange, Step};

    pub(crate) struct Component;

    impl Guest for Component {
        fn handle(request: IncomingRequest, out: ResponseOutparam) {
            let origin = request.authority().map(|authority| (crate::wasi::scheme_name(request.scheme()), authority));
            let path_and_query = request.path_with_query().unwrap_or_else(|| "/".to_owned());
            match crate::exchange(
                crate::wasi::core_method(&request.method()),
                path_and_query,
                request.headers().entries(),
                origin,
            ) {
                Ok(exchange) => drive(exchange, request, out),
                Err(answer) => http::respond(out, &answer),
            }
        }
    }

    /// Carries out the exchange's steps until it is over.
    fn drive(mut exchange: Exchange, request: IncomingRequest, out: ResponseOutparam) {
        let timing = crate::Timing::start();
        let (mut request, mut out) = (Some(request), Some(out));
        let mut upstream: Option<IncomingResponse> = None;
        // A request whose head is slow to come, and the client's answer a
        // keep-alive committed.
        let mut waiting: Option<http::Sent> = None;
        let mut committed: Option<http::Committed> = None;
        // When the client last got a byte (a keep-alive's interval runs
        // from it, across attempts).
        let mut quiet_since = timing.started;
        let mut event = Event::Start;
        loop {
            event = match exchange.resume(event) {
                step @ (Step::Acquire { .. }
                | Step::Report(_)
                | Step::Reset
                | Step::Log(_)
                | Step::Note(_)
                | Step::Admin(_)) => crate::key_store_step(step),
                Step::ReadBody { limit, declared } => match request.take() {
                    Some(r) => http::read_request_body(r, declared, limit).map_or_else(Event::BodyFailed, Event::Body),
                    None => Event::BodyFailed(BodyError::Broken("the body was already read".into())),
                },
                Step::Send(up) => {
                    let client = matches!(up.body, BodyFrom::Client(_)).then(|| request.take()).flatten();
                    head(http::send(&up, exchange.body(), client, quiet_since), &mut upstream, &mut waiting)
                }
                Step::KeepAlive { status, headers } => {
                    if committed.is_none()
                        && let Some(out) = out.take()
                    {
                        timing.answered();
                        committed = http::Committed::new(out, status, &headers);
                    }
                    if let Some(c) = &committed {
                        c.keep_alive();
                    }
                    quiet_since = std::time::Instant::now();
                    match waiting.take() {
                        Some(sent) => head(http::wait(sent, true, quiet_since), &mut upstream, &mut waiting),
                        None => Event::SendFailed { reason: "no request was waiting".into(), timed_out: false },
                    }
                }
                Step::ReadErrorBody { limit } => {
                    Event::ErrorBody(upstream.take().map(|r| http::read_body(r, limit)).unwrap_or_default())
                }
                Step::Stream { status, headers, pipe } => match upstream.take() {
                    Some(response) => {
                        http::stream_response(response, &mut out, &mut committed, status, &headers, pipe, &timing)
                    }
                    None => Event::Streamed(Err("nothing to stream".into())),
                },
                Step::EndCommitted { body, clean } => {
                    if let Some(answer) = committed.take() {
                        answer.end(body.as_bytes(), clean);
                    }
                    Event::Done
                }
                Step::Respond(r) => {
                    if let Some(out) = out.take() {
                        timing.answered();
                        http::respond(out, &r);
                    }
                    Event::Done
                }
                Step::Stats(view) => {
                    if let Some(out) = out.take() {
                        timing.answered();
                        http::respond(out, &convert::rendered(key_store::stats(convert::stats_view(view))));
                    }
                    Event::Done
                }
                Step::Summary(summary) => crate::summed_up(*summary, &timing),
                Step::Done => return,
            };
        }
    }

    /// The event of where a sent request stands; its response, or the
    /// request itself while it waits, kept for the next step.
    fn head(head: http::Head, upstream: &mut Option<IncomingResponse>, waiting: &mut Option<http::Sent>) -> Event {
        match head {
            http::Head::Came(response) => {
                let event = Event::Head { status: response.status(), headers: response.headers().entries() };
                *upstream = Some(response);
                event
            }
            http::Head::Waiting(sent) => {
                *waiting = Some(sent);
                Event::Waiting
            }
            http::Head::Failed(event) => event,
        }
    }
}
