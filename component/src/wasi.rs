//! What both interfaces spell alike: the generated `wasi:http` types of
//! 0.2 and of 0.3 share these names and shapes, so one copy serves either
//! world the crate is built for.

use crate::wasi_http::types::{ErrorCode, Fields, Method, Scheme};
use proxy_core::wire::http::{Method as CoreMethod, Response};

/// The request's method in core's terms.
pub fn core_method(m: &Method) -> CoreMethod {
    match m {
        Method::Get => CoreMethod::Get,
        Method::Head => CoreMethod::Head,
        Method::Post => CoreMethod::Post,
        Method::Put => CoreMethod::Put,
        Method::Patch => CoreMethod::Patch,
        Method::Delete => CoreMethod::Delete,
        Method::Options => CoreMethod::Options,
        Method::Connect => CoreMethod::Other("CONNECT".into()),
        Method::Trace => CoreMethod::Other("TRACE".into()),
        Method::Other(s) => CoreMethod::parse(s),
    }
}

/// Headers as `wasi:http` fields.
pub fn fields_from(headers: &[(String, String)]) -> Fields {
    let headers: Vec<(String, Vec<u8>)> = headers.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
    // One host call for the whole list; only if the host refuses one of the
    // headers (forbidden or malformed) are they added one by one, dropping
    // the refused ones.
    if let Ok(fields) = Fields::from_list(&headers) {
        return fields;
    }
    let fields = Fields::new();
    for (name, value) in &headers {
        let _ = fields.append(name, value);
    }
    fields
}

/// The head of an answer the exchange made and that is sent whole: its
/// headers and, but on a 204 or 304, its `content-length`.
pub fn answer_fields(r: &Response) -> Fields {
    let mut headers = r.headers.clone();
    if r.status != 204 && r.status != 304 {
        headers.push(("content-length".into(), r.body.len().to_string()));
    }
    fields_from(&headers)
}

/// A request's scheme, as core names it.
pub fn scheme_name(scheme: Option<Scheme>) -> &'static str {
    match scheme {
        Some(Scheme::Https) => "https",
        _ => "http",
    }
}

/// Why an upstream request failed, and whether it timed out.
pub fn describe(e: &ErrorCode) -> (String, bool) {
    let timed_out = matches!(
        e,
        ErrorCode::ConnectionTimeout
            | ErrorCode::HttpResponseTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
    );
    let why = match e {
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTimeout => "connection timed out".into(),
        ErrorCode::ConnectionTerminated => "connection closed by the upstream".into(),
        ErrorCode::HttpResponseTimeout => "the upstream did not answer in time".into(),
        ErrorCode::HttpRequestDenied => "the host refused the upstream request (origin not allowed)".into(),
        ErrorCode::DnsError(_) => "DNS lookup failed".into(),
        ErrorCode::TlsCertificateError | ErrorCode::TlsProtocolError => "TLS handshake failed".into(),
        // The host's own words (an outbound proxy's failure, say).
        ErrorCode::InternalError(Some(why)) => why.clone(),
        other => format!("{other:?}"),
    };
    (why, timed_out)
}

/// Core's method as `wasi:http`'s.
pub fn wasi_method(m: &CoreMethod) -> Method {
    match m {
        CoreMethod::Get => Method::Get,
        CoreMethod::Head => Method::Head,
        CoreMethod::Post => Method::Post,
        CoreMethod::Put => Method::Put,
        CoreMethod::Patch => Method::Patch,
        CoreMethod::Delete => Method::Delete,
        CoreMethod::Options => Method::Options,
        CoreMethod::Other(name) => Method::Other(name.clone()),
    }
}
