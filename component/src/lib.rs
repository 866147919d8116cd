//! The gemini-proxy WASI 0.2 component: `wasi:http` glue around
//! `gemini-proxy-core`. It converts types and moves bytes; every decision is
//! `core`'s.
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
use bindings::gemini_proxy::host::key_store;
use bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use proxy_core::error::{Dialect, ProxyError};
use proxy_core::flow::{self, Attempts, Decision, Next};
use proxy_core::route::{Forward, MAX_BODY_BYTES};
use proxy_core::{Config, Report};
use std::sync::OnceLock;

struct Component;

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let config = match config() {
            Ok(c) => c,
            Err(e) => {
                let err = ProxyError::Internal(format!("bad configuration: {e}"));
                return http::respond(out, &err.to_response(Dialect::Gemini));
            }
        };
        let method = http::method_name(&request.method());
        let path_and_query = request.path_with_query().unwrap_or_else(|| "/".to_owned());
        let headers = http::header_list(&request.headers());
        match flow::decide(config, &method, &path_and_query, &headers) {
            Decision::Respond(r) => http::respond(out, &r),
            Decision::StatsJson => http::respond(out, &flow::stats_json(&convert::snapshot(key_store::snapshot()))),
            Decision::StatsPage => http::respond(out, &flow::stats_page(&convert::snapshot(key_store::snapshot()))),
            Decision::StatsReset => {
                key_store::reset();
                http::respond(out, &flow::reset_done());
            }
            Decision::StatsLogin => match http::read_request_body(request, http::content_length(&headers), 64 * 1024) {
                Ok(body) => http::respond(out, &flow::login(config, &headers, &body)),
                Err(e) => http::respond(out, &e.to_response(Dialect::Gemini)),
            },
            Decision::Forward(fwd) => forward(config, fwd, request, &headers, out),
        }
    }
}

/// The configuration, read from the environment once per instance (the host
/// may serve many requests with one instance; its environment never changes).
fn config() -> Result<&'static Config, &'static str> {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| Config::from_lookup(|var| std::env::var(var).ok()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(String::as_str)
}

/// Relays one request upstream, trying further keys while `core` says so.
fn forward(
    config: &Config,
    mut fwd: Forward,
    request: IncomingRequest,
    headers: &[(String, Vec<u8>)],
    out: ResponseOutparam,
) {
    let dialect = fwd.dialect;
    let fail = |out, e: ProxyError| http::respond(out, &e.to_response(dialect));
    let body = match http::read_request_body(request, http::content_length(headers), MAX_BODY_BYTES) {
        Ok(b) => b,
        Err(e) => return fail(out, e),
    };
    if let Err(e) = fwd.bind_body(&body) {
        return fail(out, e);
    }
    let model = fwd.model().to_owned();
    let mut attempts = Attempts::new();
    let mut settle: Option<Report> = None;
    loop {
        if !attempts.may_try_again() {
            if let Some(r) = settle.take() {
                key_store::report(&convert::report(&r));
            }
            return fail(out, attempts.give_up(&model, None));
        }
        let exclude: Vec<String> = attempts.tried().iter().map(|id| id.as_str().to_owned()).collect();
        let settled = settle.take().map(|r| convert::report(&r));
        let lease = match key_store::acquire(&model, &exclude, settled.as_ref()) {
            Ok(l) => convert::lease(l),
            Err(u) => return fail(out, attempts.give_up(&model, Some(convert::unavailable(u)))),
        };
        let upstream = flow::upstream_request(config, &fwd, headers, &lease, body.len());
        let response = match http::send(&upstream, &body) {
            Ok(r) => r,
            Err(reason) => {
                settle = Some(attempts.transport_failed(&lease, &model, &reason));
                continue;
            }
        };
        let status = response.status();
        if (200..300).contains(&status) {
            let report = flow::finished(&lease, &model, http::stream_response(response, out).err());
            key_store::report(&convert::report(&report));
            return;
        }
        let (resp_headers, error_body) = http::read_error_response(response, flow::MAX_ERROR_BODY_BYTES);
        match attempts.answered(&lease, &model, status, &error_body) {
            Next::Retry(report) => settle = Some(report),
            Next::Relay { report, body } => {
                key_store::report(&convert::report(&report));
                return http::relay(out, status, &resp_headers, body.into_bytes());
            }
        }
    }
}

/// The component's exports, as the bindings generate them.
mod export {
    #![expect(unsafe_code, reason = "the generated export glue is unsafe FFI")]
    use super::Component;
    crate::bindings::export!(Component with_types_in crate::bindings);
}
