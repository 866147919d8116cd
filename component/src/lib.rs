//! The gemini-proxy WASI 0.2 component: `wasi:http` glue around
//! `gemini-proxy-core`. It runs core's [`Exchange`] with plain I/O (the
//! request, the key store, the upstream, the response); every decision is
//! core's.
#![deny(missing_docs)]

mod convert;
mod http;

/// Bindings generated from the WIT world in `../wit`.
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "gemini-proxy:host/proxy",
        generate_all,
    });
}

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::gemini_proxy::host::{key_store, log};
use bindings::wasi::http::types::{IncomingRequest, IncomingResponse, ResponseOutparam, Scheme};
use proxy_core::forward::{BodyError, BodyFrom, Event, Exchange, Step};
use proxy_core::{Config, Dialect, ProxyError};
use std::sync::{Arc, OnceLock};

struct Component;

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let config = match config() {
            Ok(c) => c.clone(),
            Err(e) => {
                log::failure(&format!("bad configuration: {e}"));
                let err = ProxyError::internal("the proxy is misconfigured; see its log", None);
                return http::respond(out, &err.to_response(Dialect::Gemini));
            }
        };
        let method = http::core_method(&request.method());
        let path_and_query = request.path_with_query().unwrap_or_else(|| "/".to_owned());
        let mut exchange = Exchange::new(config, method, path_and_query, request.headers().entries());
        if let Some(authority) = request.authority() {
            let scheme = match request.scheme() {
                Some(Scheme::Https) => "https",
                _ => "http",
            };
            exchange = exchange.with_origin(scheme, &authority);
        }
        drive(exchange, request, out);
    }
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

/// Carries out the exchange's steps until it is over.
fn drive(mut exchange: Exchange, request: IncomingRequest, out: ResponseOutparam) {
    let (mut request, mut out) = (Some(request), Some(out));
    let mut upstream: Option<IncomingResponse> = None;
    let mut event = Event::Start;
    loop {
        event = match exchange.resume(event) {
            Step::ReadBody { limit, declared } => match request.take() {
                Some(r) => http::read_request_body(r, declared, limit).map_or_else(Event::BodyFailed, Event::Body),
                None => Event::BodyFailed(BodyError::Broken("the body was already read".into())),
            },
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
            Step::Send(up) => {
                let client = matches!(up.body, BodyFrom::Client(_)).then(|| request.take()).flatten();
                match http::send(&up, exchange.body(), client) {
                    Ok(response) => {
                        let head = Event::Head { status: response.status(), headers: response.headers().entries() };
                        upstream = Some(response);
                        head
                    }
                    Err(failed) => failed,
                }
            }
            Step::ReadErrorBody { limit } => {
                Event::ErrorBody(upstream.take().map(|r| http::read_body(r, limit)).unwrap_or_default())
            }
            Step::Stream { status, headers, head } => match upstream.take() {
                Some(response) => http::stream_response(response, &mut out, status, &headers, head),
                None => Event::Streamed(Err("nothing to stream".into())),
            },
            Step::Respond(r) => {
                if let Some(out) = out.take() {
                    http::respond(out, &r);
                }
                Event::Done
            }
            Step::Stats(view) => {
                if let Some(out) = out.take() {
                    http::respond(out, &convert::rendered(key_store::stats(convert::stats_view(view))));
                }
                Event::Done
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
            Step::Admin(op) => Event::Admin(convert::admin_answer(key_store::admin(&convert::admin_op(&op)))),
            Step::Done => return,
        };
    }
}

/// The component's exports, as the bindings generate them.
mod export {
    #![expect(unsafe_code, reason = "the generated export glue is unsafe FFI")]
    use super::Component;
    crate::bindings::export!(Component with_types_in crate::bindings);
}
