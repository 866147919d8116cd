//! The cheapest forwarding guest on `wasi:http` 0.3.
//!
//! Every request goes to the authority in `UPSTREAM` (plain http), and the
//! upstream's answer is the answer. By default the guest retargets the
//! incoming request itself (scheme and authority; the host has already
//! taken out the hop-by-hop headers and `host`) and returns the upstream
//! response as it came: both bodies stay host streams end to end.
//!
//! With `REBUILD=1` it does what a proxy that rewrites a header must do at
//! least: a new request (a mutable copy of the headers, the method, path and
//! query, the incoming body stream) and a new response (the upstream's
//! status, a copy of its headers, its body stream). The body streams are
//! still untouched, so the host unwraps them again (`Body::new_guest`).

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "probe:guest-p3/forward",
        generate_all,
    });
}

use bindings::exports::wasi::http::handler::Guest;
use bindings::wasi::http::client;
use bindings::wasi::http::types::{ErrorCode, Request, Response, Scheme};
use bindings::wit_future;
use std::sync::OnceLock;

struct Forward;

bindings::export!(Forward with_types_in bindings);

impl Guest for Forward {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let config = config()?;
        if !config.rebuild {
            retarget(&request, &config.upstream)?;
            return client::send(request).await;
        }
        let headers = request.get_headers().clone();
        let method = request.get_method();
        let path = request.get_path_with_query();
        let (body, trailers) = Request::consume_body(request, wit_future::new(|| Ok(())).1);
        let (outgoing, _sent) = Request::new(headers, Some(body), trailers, None);
        outgoing
            .set_method(&method)
            .and_then(|()| outgoing.set_path_with_query(path.as_deref()))
            .map_err(|()| internal("cannot build the upstream request"))?;
        retarget(&outgoing, &config.upstream)?;
        let answer = client::send(outgoing).await?;
        let headers = answer.get_headers().clone();
        let status = answer.get_status_code();
        let (body, trailers) = Response::consume_body(answer, wit_future::new(|| Ok(())).1);
        let (response, _sent) = Response::new(headers, Some(body), trailers);
        response.set_status_code(status).map_err(|()| internal("bad upstream status"))?;
        Ok(response)
    }
}

/// Points `request` at the upstream, over plain http.
fn retarget(request: &Request, upstream: &str) -> Result<(), ErrorCode> {
    request
        .set_scheme(Some(&Scheme::Http))
        .and_then(|()| request.set_authority(Some(upstream)))
        .map_err(|()| internal("cannot point the request upstream (is UPSTREAM a host:port?)"))
}

struct Config {
    upstream: String,
    rebuild: bool,
}

/// `UPSTREAM` and `REBUILD`, read once per instance.
fn config() -> Result<&'static Config, ErrorCode> {
    static CONFIG: OnceLock<Option<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let upstream = std::env::var("UPSTREAM").ok()?;
            Some(Config { upstream, rebuild: std::env::var("REBUILD").is_ok_and(|v| v == "1") })
        })
        .as_ref()
        .ok_or_else(|| internal("UPSTREAM is not set"))
}

fn internal(message: &str) -> ErrorCode {
    ErrorCode::InternalError(Some(message.to_owned()))
}
