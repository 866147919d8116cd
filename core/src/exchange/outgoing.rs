//! What goes upstream: the request built for a key, and which of the
//! upstream's headers come back to the client.

use crate::config::{Config, Scheme, UpstreamBase};
use crate::request::headers;
use crate::request::route::Forward;
use crate::wire::http::{Dialect, Method};
use crate::wire::keystore::Lease;
use crate::wire::secret;

/// An upstream request, ready to send.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// The method.
    pub method: Method,
    /// The upstream's scheme.
    pub scheme: Scheme,
    /// The upstream's `host[:port]`.
    pub authority: String,
    /// Path and query.
    pub path_and_query: String,
    /// Headers, the pool key as the one credential among them; every value
    /// visible ASCII.
    pub headers: Vec<(String, String)>,
    /// Where the body comes from (for a method with one).
    pub body: BodyFrom,
    /// For a non-streamed call that may take long: how the host keeps the
    /// client's connection alive while it waits for the answer's head.
    pub keep_alive: Option<KeepAlive>,
}

/// Keeping a slow non-streamed answer alive (`NONSTREAM_KEEPALIVE_SECONDS`),
/// for an edge that ends a response silent for too long (Cloudflare's,
/// after about 100 s).
///
/// The host waits for the answer's head at most `every_ms` at a time, and
/// each time that passes without one tells [`Event::Waiting`](super::Event::Waiting);
/// the exchange answers [`Step::KeepAlive`](super::Step::KeepAlive). Once the host sent a keep-alive
/// byte it waits for the head until `wait_ms` after sending (its own
/// first-byte timeout no longer holds: the client has its answer's head).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// How long to wait for the head before each keep-alive byte.
    pub every_ms: u64,
    /// How long, from sending, the head is waited for once the client's
    /// answer is committed.
    pub wait_ms: u64,
}

/// How long a committed answer waits for Google's head at most (Google
/// itself gives up on a generation after about ten minutes).
pub const COMMITTED_WAIT_MS: u64 = 600_000;

/// The body of an [`UpstreamRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFrom {
    /// [`Exchange::body`](super::Exchange::body), read before (empty for a method without one).
    Read,
    /// The client's request body, unread, piped upstream as it arrives:
    /// exactly this many bytes (its declared `content-length`). A client
    /// body that breaks off or ends short is [`Event::BodyFailed`](super::Event::BodyFailed), not a
    /// failure of the upstream's.
    Client(u64),
}

impl UpstreamRequest {
    /// The full URL.
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}{}", self.authority, self.path_and_query)
    }
}

impl std::fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the headers (the pool key) nor the query are shown.
        f.debug_struct("UpstreamRequest")
            .field("method", &self.method)
            .field("authority", &self.authority)
            .field("path", &self.path_and_query.split('?').next())
            .finish_non_exhaustive()
    }
}

/// Builds the upstream request for `fwd` with the leased key: the client's
/// headers minus every credential and hop-by-hop header, plus exactly one
/// credential, the pool key, in the upstream API's own form.
pub fn upstream_request(
    cfg: &Config,
    fwd: &Forward,
    client_headers: &[(String, Vec<u8>)],
    lease: &Lease,
    body: BodyFrom,
    body_len: u64,
) -> UpstreamRequest {
    let (base, credential): (&UpstreamBase, _) = match fwd.dialect {
        Dialect::Gemini | Dialect::Anthropic => {
            (&cfg.gemini_upstream, ("x-goog-api-key", lease.secret.expose().to_owned()))
        }
        Dialect::OpenAi => (&cfg.openai_upstream, ("authorization", format!("Bearer {}", lease.secret.expose()))),
    };
    let mut headers = headers::upstream_headers(client_headers);
    if fwd.foreign.is_some() {
        // A translated request's headers are its own API's (`anthropic-*`,
        // `x-stainless-*`): none is Google's business.
        headers.retain(|(name, _)| name == "user-agent");
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
    }
    headers.push((credential.0.to_owned(), credential.1));
    let method = fwd.method.clone();
    if method.has_body() {
        headers.push(("content-length".to_owned(), body_len.to_string()));
        if !headers.iter().any(|(n, _)| n == "content-type") {
            headers.push(("content-type".to_owned(), "application/json".to_owned()));
        }
    }
    let upload = if fwd.upload { "/upload" } else { "" };
    let mut path_and_query = format!("{upload}{}{}", versioned(&base.path, fwd.version.as_deref()), fwd.upstream_path);
    if !fwd.upstream_query.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&fwd.upstream_query);
    }
    UpstreamRequest {
        method,
        scheme: base.scheme,
        authority: base.authority.clone(),
        path_and_query,
        headers,
        body,
        keep_alive: None,
    }
}

/// The header of Google's answer to an upload's start that holds the URL
/// its chunks go to (lower-case, as [`headers::client_headers`] gives it).
pub(super) const UPLOAD_URL: &str = "x-goog-upload-url";

/// The header that may hold the URL to cancel or query an upload.
pub(super) const UPLOAD_CONTROL_URL: &str = "x-goog-upload-control-url";

/// The upstream base's path with its version (its last segment, when
/// that is one: `/v1beta`) replaced by `version`.
fn versioned<'a>(base: &'a str, version: Option<&str>) -> std::borrow::Cow<'a, str> {
    let Some(version) = version else { return base.into() };
    match base.rsplit_once('/') {
        Some((head, last)) if crate::request::route::is_version(last) && last != version => {
            format!("{head}/{version}").into()
        }
        _ => base.into(),
    }
}

/// The upstream's headers for the client ([`headers::client_headers`]),
/// with the pool key scrubbed from any value that carries it (an upload
/// URL with `key=` in its query, say).
pub(super) fn relayed_headers(
    upstream: &[(String, Vec<u8>)],
    drop_length: bool,
    lease: Option<&Lease>,
) -> Vec<(String, String)> {
    let mut out = headers::client_headers(upstream, drop_length);
    if let Some(lease) = lease {
        for (_, value) in out.iter_mut().filter(|(_, v)| v.contains(lease.secret.expose())) {
            *value = secret::redact(value, &[&lease.secret]);
        }
    }
    out
}
