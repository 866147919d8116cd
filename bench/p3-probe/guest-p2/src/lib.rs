//! The cheapest forwarding guest on `wasi:http` 0.2.
//!
//! Every request goes to the authority in `UPSTREAM` (plain http) with its
//! method, path and query, headers (the host has already taken out the
//! hop-by-hop ones and `host`) and body; the answer's status, headers and
//! body come back. Bodies move with `splice`, from one host stream to the
//! other: no body byte enters the guest's memory. What is left is the shape
//! of 0.2 itself: a new outgoing request and response built field by field,
//! and a guest that keeps running until both bodies are copied.

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "probe:guest-p2/forward",
        generate_all,
    });
}

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::wasi::http::outgoing_handler;
use bindings::wasi::http::types::{
    ErrorCode, IncomingBody, IncomingRequest, IncomingResponse, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use bindings::wasi::io::streams::StreamError;
use std::sync::OnceLock;

struct Forward;

bindings::export!(Forward with_types_in bindings);

impl Guest for Forward {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let answer = match send(request) {
            Ok(answer) => answer,
            Err(code) => return ResponseOutparam::set(out, Err(code)),
        };
        let response = OutgoingResponse::new(answer.headers().clone());
        let body = match response.set_status_code(answer.status()).and_then(|()| response.body()) {
            Ok(body) => body,
            Err(()) => return ResponseOutparam::set(out, Err(internal("cannot build the response"))),
        };
        ResponseOutparam::set(out, Ok(response));
        // A body that fails on its way is dropped unfinished: the client sees it break off.
        if answer.consume().is_ok_and(|from| pump(&from, &body).is_ok()) {
            let _ = OutgoingBody::finish(body, None);
        }
    }
}

/// Sends `request` upstream, its body after it, and waits for the answer's head.
fn send(request: IncomingRequest) -> Result<IncomingResponse, ErrorCode> {
    let outgoing = OutgoingRequest::new(request.headers().clone());
    outgoing
        .set_method(&request.method())
        .and_then(|()| outgoing.set_path_with_query(request.path_with_query().as_deref()))
        .and_then(|()| outgoing.set_scheme(Some(&Scheme::Http)))
        .and_then(|()| outgoing.set_authority(Some(upstream()?)))
        .map_err(|()| internal("cannot build the upstream request (is UPSTREAM a host:port?)"))?;
    let body = outgoing.body().map_err(|()| internal("the upstream request has no body"))?;
    let pending = outgoing_handler::handle(outgoing, None)?;
    let from = request.consume().map_err(|()| internal("the request body was taken"))?;
    pump(&from, &body).map_err(|e| internal(&format!("request body: {e:?}")))?;
    OutgoingBody::finish(body, None)?;
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(answer)) => answer,
        _ => Err(internal("the upstream answer was lost")),
    }
}

/// Copies all of `from`'s stream into `to`'s, host side. `Closed` ends the
/// copy, whichever side closed: an upstream may answer (and stop reading)
/// before the request body is all sent, and its answer is still the answer.
fn pump(from: &IncomingBody, to: &OutgoingBody) -> Result<(), StreamError> {
    let input = from.stream().map_err(|()| StreamError::Closed)?;
    let output = to.write().map_err(|()| StreamError::Closed)?;
    loop {
        match output.blocking_splice(&input, u64::MAX) {
            Ok(_) => {}
            Err(StreamError::Closed) => break,
            Err(e) => return Err(e),
        }
    }
    match output.blocking_flush() {
        Ok(()) | Err(StreamError::Closed) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `UPSTREAM`, read once per instance.
fn upstream() -> Result<&'static str, ()> {
    static UPSTREAM: OnceLock<Option<String>> = OnceLock::new();
    UPSTREAM.get_or_init(|| std::env::var("UPSTREAM").ok()).as_deref().ok_or(())
}

fn internal(message: &str) -> ErrorCode {
    ErrorCode::InternalError(Some(message.to_owned()))
}
