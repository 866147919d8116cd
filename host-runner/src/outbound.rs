//! The component's outgoing HTTP: a pooled client (rustls for Google,
//! `TCP_NODELAY`), allowed to reach only the two configured upstream
//! origins, straight or through an outbound proxy: the project's of the
//! key a call carries (the admin's), else `UPSTREAM_PROXY`, else the
//! environment's ([`Egress`]). Each proxy has a pool of its own, so that
//! no connection made through one serves a call meant for another.

use crate::config::Egress;
use crate::store::KeyBackend;
use crate::via::ViaConnector;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use proxy_core::config::UpstreamTimeouts;
use proxy_core::wire::proxy::{PROXY_FAILED, ProxyUrl};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

type Pooled = Client<HttpsConnector<ViaConnector>, WasiBody>;

/// Outgoing HTTP for the component.
#[derive(Clone)]
pub struct Outbound {
    client: Pooled,
    /// A pool per outbound proxy, made at its first call.
    proxied: Arc<Mutex<HashMap<ProxyUrl, Pooled>>>,
    egress: Arc<Egress>,
    /// Where a key's project proxy is asked.
    keys: Option<Arc<dyn KeyBackend>>,
    allowed: Arc<Vec<(Scheme, Authority)>>,
    timeouts: UpstreamTimeouts,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").field("allowed", &self.allowed).finish_non_exhaustive()
    }
}

/// Why an origin could not be allowed.
#[derive(Debug, thiserror::Error)]
#[error("invalid upstream origin {0:?}")]
pub struct OriginError(String);

impl Outbound {
    /// A client that may reach only `origins` (`scheme://authority`),
    /// waiting on them no longer than `timeouts`.
    pub fn new(origins: &[String], timeouts: UpstreamTimeouts) -> Result<Self, OriginError> {
        Self::with_egress(origins, timeouts, Egress::default())
    }

    /// [`Outbound::new`], sending through `egress`'s proxies.
    pub fn with_egress(origins: &[String], timeouts: UpstreamTimeouts, egress: Egress) -> Result<Self, OriginError> {
        let mut allowed = Vec::new();
        for o in origins {
            let uri: http::Uri = o.parse().map_err(|_| OriginError(o.clone()))?;
            let (Some(s), Some(a)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
                return Err(OriginError(o.clone()));
            };
            allowed.push((s, a));
        }
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|_| OriginError("TLS configuration".into()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = Arc::new(tls);
        let client = pooled(None, timeouts, &tls);
        Ok(Self {
            client,
            proxied: Arc::default(),
            egress: Arc::new(egress),
            keys: None,
            allowed: Arc::new(allowed),
            timeouts,
            tls,
        })
    }

    /// Sends a key's calls through its project's proxy, as `keys` tells.
    #[must_use]
    pub fn with_key_proxies(self, keys: Arc<dyn KeyBackend>) -> Self {
        Self { keys: Some(keys), ..self }
    }

    /// The proxy a call leaves through: its key's project's, else the
    /// configuration's for its host.
    pub fn route(&self, uri: &http::Uri, headers: &http::HeaderMap) -> Option<ProxyUrl> {
        let key = || {
            let goog = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok());
            goog.or_else(|| {
                let bearer = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())?;
                bearer.strip_prefix("Bearer ")
            })
        };
        if let (Some(keys), Some(secret)) = (&self.keys, key())
            && let Some(proxy) = keys.proxy_for_key(secret.trim())
        {
            return Some(proxy);
        }
        self.egress_route(uri)
    }

    /// The configuration's proxy for a call to `uri` (`https://` and
    /// `wss://` go over TLS), if any.
    pub fn egress_route(&self, uri: &http::Uri) -> Option<ProxyUrl> {
        if self.egress.is_empty() {
            return None;
        }
        let tls = matches!(uri.scheme_str(), Some("https" | "wss"));
        self.egress.route(tls, uri.host().unwrap_or_default()).cloned()
    }

    /// The pool for calls through `proxy` (none: straight).
    fn client_for(&self, proxy: Option<ProxyUrl>) -> Pooled {
        let Some(proxy) = proxy else { return self.client.clone() };
        let mut proxied = self.proxied.lock().unwrap_or_else(|p| p.into_inner());
        proxied.entry(proxy).or_insert_with_key(|p| pooled(Some(p.clone()), self.timeouts, &self.tls)).clone()
    }

    /// The TLS configuration to Google (Mozilla's roots, ring), for the
    /// host's own connections (a Live session's WebSocket).
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls.clone()
    }

    /// Sends a body-less request the host makes itself (the models
    /// listing): its status, headers, and at most `limit` bytes of its body;
    /// only to a configured upstream.
    pub async fn fetch(
        &self,
        req: &proxy_core::exchange::UpstreamRequest,
        limit: usize,
    ) -> Result<(u16, Vec<(String, Vec<u8>)>, Vec<u8>), String> {
        let uri: http::Uri = req.url().parse().map_err(|e| format!("the URL: {e}"))?;
        if !self.is_allowed(&uri) {
            return Err("not a configured upstream".into());
        }
        let mut request = http::Request::get(uri);
        for (name, value) in &req.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let empty = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        let request = request.body(empty).map_err(|e| format!("the request: {e}"))?;
        let client = self.client_for(self.route(request.uri(), request.headers()));
        let first_byte = Duration::from_millis(self.timeouts.first_byte_ms);
        let response = match tokio::time::timeout(first_byte, client.request(request)).await {
            Err(_) => return Err("no answer in time".into()),
            Ok(Err(e)) if let Some(why) = proxy_failure(&e) => return Err(why),
            Ok(Err(e)) => return Err(format!("could not reach the upstream: {e}")),
            Ok(Ok(r)) => r,
        };
        let status = response.status().as_u16();
        let headers = response.headers().iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
        let body = http_body_util::Limited::new(response.into_body(), limit).collect();
        match tokio::time::timeout(Duration::from_millis(self.timeouts.idle_ms), body).await {
            Ok(Ok(b)) => Ok((status, headers, b.to_bytes().to_vec())),
            _ => Err("the answer broke off".into()),
        }
    }

    /// Sends a body-less request the host makes itself (a key's check
    /// for a Live session): its status and at most
    /// [`CHECK_BODY_BYTES`](proxy_core::exchange::admin::CHECK_BODY_BYTES)
    /// of its body; only to a configured upstream.
    pub async fn check(&self, req: &proxy_core::exchange::UpstreamRequest) -> Result<(u16, Vec<u8>), String> {
        let limit = proxy_core::exchange::admin::CHECK_BODY_BYTES;
        self.fetch(req, limit).await.map(|(status, _, body)| (status, body))
    }

    fn is_allowed(&self, uri: &http::Uri) -> bool {
        match (uri.scheme(), uri.authority()) {
            (Some(s), Some(a)) => {
                self.allowed.iter().any(|(os, oa)| os == s && oa.as_str().eq_ignore_ascii_case(a.as_str()))
            }
            _ => false,
        }
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), HttpError>> + Send>),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        if !self.is_allowed(request.uri()) {
            tracing::warn!(
                path = request.uri().path(),
                "blocked an outgoing request to an origin that is not a configured upstream"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let client = self.client_for(self.route(request.uri(), request.headers()));
        let first_byte =
            options.and_then(|o| o.first_byte_timeout).unwrap_or(Duration::from_millis(self.timeouts.first_byte_ms));
        let idle = Duration::from_millis(self.timeouts.idle_ms);
        Box::new(async move {
            let response = match tokio::time::timeout(first_byte, client.request(request)).await {
                Err(_) => return Err(HttpError::HttpResponseTimeout),
                // A proxy's failure in its own words: the exchange tells it
                // from Google's (the call never reached Google).
                Ok(Err(e)) if let Some(why) = proxy_failure(&e) => return Err(HttpError::InternalError(Some(why))),
                Ok(Err(e)) if e.is_connect() && timed_out(&e) => return Err(HttpError::ConnectionTimeout),
                Ok(Err(e)) if e.is_connect() => return Err(HttpError::ConnectionRefused),
                Ok(Err(_)) => return Err(HttpError::ConnectionTerminated),
                Ok(Ok(r)) => r,
            };
            let response = response.map(|body| {
                let body = body.map_err(HttpError::Hyper).map_frame(|f| f.map_data(Bytes::from));
                IdleTimeout { body, idle, timer: Box::pin(tokio::time::sleep(idle)) }.boxed_unsync()
            });
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

/// A client's pool: straight, or through `proxy`.
fn pooled(proxy: Option<ProxyUrl>, timeouts: UpstreamTimeouts, tls: &Arc<rustls::ClientConfig>) -> Pooled {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.set_connect_timeout(Some(Duration::from_millis(timeouts.connect_ms)));
    let via = ViaConnector::new(proxy, http, Duration::from_millis(timeouts.connect_ms), tls.clone());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((**tls).clone())
        .https_or_http()
        // HTTP/1.1 only, as wasmtime's own sender: wasi-http hands over a
        // `host` header, which HTTP/2 has no place for.
        .enable_http1()
        .wrap_connector(via);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https)
}

/// An outbound proxy's failure ([`PROXY_FAILED`]) down a client error's
/// chain, in its words (the proxy's URL masked).
fn proxy_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if text.starts_with(PROXY_FAILED) {
            return Some(text);
        }
        cur = err.source();
    }
    None
}

/// Whether a client error was a timeout somewhere down its chain.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// An upstream body that fails when no piece of it arrives for `idle`: a
/// stream that stalls reaches the guest (and so the client) as a break.
struct IdleTimeout<B> {
    body: B,
    idle: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes, Error = HttpError> + Unpin,
{
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + self.idle;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(frame)
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_origins_are_allowed() {
        let o = Outbound::new(
            &["https://generativelanguage.googleapis.com".into(), "http://127.0.0.1:8080".into()],
            UpstreamTimeouts::HOST_RUNNER,
        )
        .expect("origins");
        for ok in ["https://generativelanguage.googleapis.com/v1beta/models", "http://127.0.0.1:8080/x"] {
            assert!(o.is_allowed(&ok.parse().expect("uri")), "{ok}");
        }
        for bad in [
            "http://generativelanguage.googleapis.com/v1beta",
            "https://evil.example/v1beta",
            "http://127.0.0.1:8081/x",
            "/relative",
        ] {
            assert!(!o.is_allowed(&bad.parse().expect("uri")), "{bad}");
        }
    }
}
