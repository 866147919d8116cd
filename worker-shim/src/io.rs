//! Moving requests, bodies and answers through the Workers runtime.

use futures_util::StreamExt;
use proxy_core::forward::{BodyError, Event, UpstreamRequest};
use proxy_core::http::Response as CoreResponse;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::{ByteStream, Fetch, Headers, Method, Request, RequestInit, Response, ResponseBody, js_sys};

fn headers_of(list: &[(String, String)]) -> worker::Result<Headers> {
    let headers = Headers::new();
    for (k, v) in list {
        headers.append(k, v)?;
    }
    Ok(headers)
}

/// An answer of core's as the runtime's response.
pub fn to_response(r: &CoreResponse) -> worker::Result<Response> {
    // A 204 must not have a body, not even an empty one.
    let response =
        if r.body.is_empty() { Response::empty()? } else { Response::from_bytes(r.body.clone().into_bytes())? };
    Ok(response.with_status(r.status).with_headers(headers_of(&r.headers)?))
}

/// The request body, at most `limit` bytes, as the exchange's event.
pub async fn read_request_body(request: Option<&mut Request>, limit: u64) -> Event {
    match request.map(Request::stream) {
        Some(Ok(body)) => match read_up_to(body, usize::try_from(limit).unwrap_or(usize::MAX)).await {
            Ok((bytes, false)) => Event::Body(bytes),
            Ok((_, true)) => Event::BodyFailed(BodyError::TooLarge),
            Err((_, why)) => Event::BodyFailed(BodyError::Broken(why)),
        },
        // No body at all.
        Some(Err(_)) | None => Event::Body(Vec::new()),
    }
}

/// Up to `limit` bytes of an upstream error body (what arrived before a
/// break is still classified); the rest is dropped.
pub async fn read_error_body(upstream: Option<Response>, limit: usize) -> Event {
    match upstream.and_then(|mut r| r.stream().ok()) {
        Some(body) => Event::ErrorBody(read_up_to(body, limit).await.map_or_else(|(b, _)| b, |(b, _)| b)),
        None => Event::ErrorBody(Vec::new()),
    }
}

/// A body read up to a limit: the bytes, and whether more followed.
async fn read_up_to(mut body: ByteStream, limit: usize) -> Result<(Vec<u8>, bool), (Vec<u8>, String)> {
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return Err((buf, e.to_string())),
        };
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, false))
}

/// Sends an upstream request; its response, and the head as the
/// exchange's event (or why it failed).
pub async fn send(up: &UpstreamRequest, body: &[u8]) -> (Option<Response>, Event) {
    match fetch(up, body).await {
        Ok(r) => {
            let headers = r.headers().entries().map(|(k, v)| (k, v.into_bytes())).collect();
            let status = r.status_code();
            (Some(r), Event::Head { status, headers })
        }
        Err(e) => (None, Event::SendFailed(e.to_string())),
    }
}

async fn fetch(up: &UpstreamRequest, body: &[u8]) -> worker::Result<Response> {
    let mut init = RequestInit::new();
    init.with_method(Method::from(up.method.as_str().to_owned())).with_headers(headers_of(&up.headers)?);
    if up.method.has_body() {
        init.with_body(Some(js_sys::Uint8Array::from(body).into()));
    }
    Fetch::Request(Request::new_with_init(&up.url(), &init)?).send().await
}

/// The upstream body handed to the client as it is (no chunk passes
/// through wasm), piped through an identity stream whose end tells how the
/// stream ended.
pub fn pass_through(
    upstream: Response,
    status: u16,
    headers: &[(String, String)],
) -> worker::Result<(Response, Option<JsFuture>)> {
    let headers = headers_of(headers)?;
    let (_, body) = upstream.into_parts();
    let (body, pipe) = match body {
        ResponseBody::Stream(stream) => {
            let identity = web_sys::TransformStream::new().map_err(worker::Error::from)?;
            let pipe = JsFuture::from(stream.pipe_to(&identity.writable()));
            let readable: web_sys::ReadableStream = identity.readable().unchecked_into();
            (ResponseBody::Stream(readable), Some(pipe))
        }
        other => (other, None),
    };
    Ok((Response::from_body(body)?.with_status(status).with_headers(headers), pipe))
}
