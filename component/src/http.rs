//! Moving requests and bodies through `wasi:http`.

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, IncomingResponse, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use proxy_core::config::Scheme as CoreScheme;
use proxy_core::error::{ProxyError, Response};
use proxy_core::flow::UpstreamRequest;
use proxy_core::headers::{self, CORS, forward_response_header};

/// Most bytes one `blocking-write-and-flush` takes.
const WRITE_CHUNK: usize = 4096;
/// Most bytes moved per read or splice.
const READ_CHUNK: u64 = 64 * 1024;

pub fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(s) => s.to_ascii_uppercase(),
    }
}

pub fn header_list(fields: &Fields) -> Vec<(String, Vec<u8>)> {
    fields.entries()
}

fn cors() -> impl Iterator<Item = (String, Vec<u8>)> {
    CORS.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
}

fn fields_from(headers: &[(String, Vec<u8>)]) -> Fields {
    // One host call for the whole list; only if the host refuses one of the
    // headers (forbidden or malformed) are they added one by one, dropping
    // the refused ones.
    if let Ok(fields) = Fields::from_list(headers) {
        return fields;
    }
    let fields = Fields::new();
    for (name, value) in headers {
        let _ = fields.append(name, value);
    }
    fields
}

/// Sends a response the proxy made itself.
pub fn respond(out: ResponseOutparam, r: &Response) {
    let mut headers: Vec<(String, Vec<u8>)> =
        r.headers.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
    headers.push(("content-type".into(), r.content_type.as_bytes().to_vec()));
    send_buffered(out, r.status, &headers, r.body.as_bytes());
}

/// Relays an upstream error answer (already read and redacted).
pub fn relay(out: ResponseOutparam, status: u16, upstream_headers: &[(String, Vec<u8>)], body: Vec<u8>) {
    let mut headers: Vec<(String, Vec<u8>)> = upstream_headers
        .iter()
        .filter(|(n, _)| forward_response_header(n) && !n.eq_ignore_ascii_case("content-length"))
        .cloned()
        .collect();
    headers.extend(cors());
    send_buffered(out, status, &headers, &body);
}

fn send_buffered(out: ResponseOutparam, status: u16, headers: &[(String, Vec<u8>)], body: &[u8]) {
    let mut headers = headers.to_vec();
    if status != 204 && status != 304 {
        headers.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let response = OutgoingResponse::new(fields_from(&headers));
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    if write_all(&outgoing, body).is_ok() {
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

fn write_all(body: &OutgoingBody, mut bytes: &[u8]) -> Result<(), StreamError> {
    let Ok(stream) = body.write() else { return Err(StreamError::Closed) };
    while !bytes.is_empty() {
        let n = bytes.len().min(WRITE_CHUNK);
        stream.blocking_write_and_flush(&bytes[..n])?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// The request's `content-length`, if it has one.
pub fn content_length(headers: &[(String, Vec<u8>)]) -> Option<usize> {
    headers::get(headers, "content-length")?.trim().parse().ok()
}

/// Reads the whole request body, refusing more than `limit` bytes. With a
/// `declared` length (`content-length`), it stops once that many bytes are in
/// rather than asking the host again to learn that the stream ended.
pub fn read_request_body(request: IncomingRequest, declared: Option<usize>, limit: u64) -> Result<Vec<u8>, ProxyError> {
    if declared.is_some_and(|n| n as u64 > limit) {
        return Err(ProxyError::PayloadTooLarge { limit });
    }
    let body = request.consume().map_err(|()| ProxyError::Internal("request body was already consumed".into()))?;
    let stream = body.stream().map_err(|()| ProxyError::Internal("request body stream unavailable".into()))?;
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    while declared.is_none_or(|n| buf.len() < n) {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                buf.extend_from_slice(&chunk);
                if buf.len() as u64 > limit {
                    return Err(ProxyError::PayloadTooLarge { limit });
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(ProxyError::BadRequest(format!(
                    "reading the request body failed: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    Ok(buf)
}

/// Sends an upstream request and waits for its response head.
pub fn send(up: &UpstreamRequest<'_>, body: &[u8]) -> Result<IncomingResponse, String> {
    let request = OutgoingRequest::new(fields_from(&up.headers));
    let method = if up.method == "GET" { Method::Get } else { Method::Post };
    let scheme = match up.base.scheme {
        CoreScheme::Http => Scheme::Http,
        CoreScheme::Https => Scheme::Https,
    };
    let set = request.set_method(&method).is_ok()
        && request.set_scheme(Some(&scheme)).is_ok()
        && request.set_authority(Some(&up.base.authority)).is_ok()
        && request.set_path_with_query(Some(&up.path_and_query)).is_ok();
    if !set {
        return Err("the upstream request could not be built".into());
    }
    let outgoing = request.body().map_err(|()| "request body unavailable".to_owned())?;
    // No request-options: the timeouts are the host's (host-runner: 10 s to
    // connect, 300 s to the first byte). wasmtime 48 also keeps a passed
    // request-options resource in the store's table for good, which would
    // stop the host from reusing this instance.
    let pending = outgoing_handler::handle(request, None).map_err(|e| describe(&e))?;
    if up.method == "POST" {
        write_all(&outgoing, body).map_err(|_| "sending the request body upstream failed".to_owned())?;
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| describe(&e))?;
    // The head is rarely there yet: wait first, then take it.
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(response))) => Ok(response),
        Some(Ok(Err(e))) => Err(describe(&e)),
        Some(Err(())) => Err("the upstream response was already taken".into()),
        None => Err("the upstream response was not ready after waiting for it".into()),
    }
}

fn describe(e: &ErrorCode) -> String {
    match e {
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTimeout => "connection timed out".into(),
        ErrorCode::ConnectionTerminated => "connection closed by the upstream".into(),
        ErrorCode::HttpResponseTimeout => "the upstream did not answer in time".into(),
        ErrorCode::HttpRequestDenied => "the host refused the upstream request (origin not allowed)".into(),
        ErrorCode::DnsError(_) => "DNS lookup failed".into(),
        ErrorCode::TlsCertificateError | ErrorCode::TlsProtocolError => "TLS handshake failed".into(),
        other => format!("{other:?}"),
    }
}

/// Reads an upstream error answer: its headers and up to `limit` bytes of
/// body.
pub fn read_error_response(response: IncomingResponse, limit: usize) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let headers = response.headers().entries();
    let mut buf = Vec::new();
    if let Ok(body) = response.consume()
        && let Ok(stream) = body.stream()
    {
        while buf.len() < limit {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => buf.extend_from_slice(&chunk),
                Err(_) => break,
            }
        }
    }
    buf.truncate(limit);
    (headers, buf)
}

/// Streams a 2xx upstream answer to the client as it arrives. On an
/// upstream failure mid-stream the client's response is aborted (not ended
/// cleanly), so the client sees the truncation.
pub fn stream_response(response: IncomingResponse, out: ResponseOutparam) -> Result<(), String> {
    let status = response.status();
    let mut headers: Vec<(String, Vec<u8>)> =
        response.headers().entries().into_iter().filter(|(n, _)| forward_response_header(n)).collect();
    headers.extend(cors());
    let outgoing_response = OutgoingResponse::new(fields_from(&headers));
    let _ = outgoing_response.set_status_code(status);
    let Ok(outgoing) = outgoing_response.body() else { return Err("response body unavailable".into()) };
    ResponseOutparam::set(out, Ok(outgoing_response));
    let Ok(incoming) = response.consume() else { return Err("upstream body unavailable".into()) };
    let (Ok(src), Ok(dst)) = (incoming.stream(), outgoing.write()) else {
        return Err("body streams unavailable".into());
    };
    let result = loop {
        match dst.blocking_splice(&src, READ_CHUNK) {
            Ok(_) => {}
            Err(StreamError::Closed) => break Ok(()),
            Err(StreamError::LastOperationFailed(e)) => {
                break Err(format!("stream broke off: {}", e.to_debug_string()));
            }
        }
    };
    drop(src);
    drop(dst);
    match result {
        // The upstream body is dropped rather than finished: trailers are
        // not relayed, and finishing would cost two more host calls.
        Ok(()) => {
            let _ = dst_finish(outgoing);
            drop(incoming);
            Ok(())
        }
        // Dropping the outgoing body unfinished aborts the client's response.
        Err(e) => Err(e),
    }
}

fn dst_finish(body: OutgoingBody) -> Result<(), ErrorCode> {
    OutgoingBody::finish(body, None)
}
