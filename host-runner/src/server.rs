//! The HTTP front: accepts connections, runs the component per request,
//! schedules the daily reset, and shuts down gracefully.

use crate::clock::Clock;
use crate::config::HostConfig;
use crate::conn::{Activity, ConnectionLimits, InFlight, Watched};
use crate::live::{self, LiveHost};
use crate::outbound::{OriginError, Outbound};
use crate::p3::P3Proxy;
use crate::proxy::{ProxyComponent, ProxyError as ComponentError, WasiHttp};
use crate::store::{KeyBackend, SqliteKeyStore, StoreError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use proxy_core::Dialect;
use proxy_core::cron::Cron;
use proxy_core::request::admit;
use proxy_core::wire::error::{ProxyError, chain};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// How the server is set up.
#[derive(Clone)]
#[expect(missing_debug_implementations, reason = "holds a clock trait object")]
pub struct ServerOptions {
    /// Address to listen on (port 0 for any).
    pub listen: SocketAddr,
    /// SQLite file of the key store.
    pub db: PathBuf,
    /// When the daily reset runs (UTC).
    pub reset_cron: Cron,
    /// Resolved configuration.
    pub config: HostConfig,
    /// The clock of the key store.
    pub clock: Arc<dyn Clock>,
    /// The component to serve.
    pub component_path: String,
    /// The `wasi:http` it is built for.
    pub wasi_http: WasiHttp,
    /// Where compiled machine code of the component is kept between starts
    /// (none: compile at every start).
    pub compile_cache: Option<PathBuf>,
    /// Client connection limits.
    pub limits: ConnectionLimits,
    /// TLS for the listener (none: plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether to read Google's models list with a pool key at start and
    /// after each daily reset ([`crate::listing`]); tests that count the
    /// upstream's requests leave it off.
    pub list_models: bool,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The component could not be prepared.
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// An upstream URL is not usable as an origin.
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    store: Arc<SqliteKeyStore>,
    component: Served,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the store, prepares the component and starts serving.
    pub async fn start(opts: ServerOptions) -> Result<Self, StartError> {
        let store = Arc::new(SqliteKeyStore::open(
            &opts.db,
            opts.config.api_keys.clone(),
            opts.clock.clone(),
            opts.config.vault.clone(),
            opts.config.proxy.request_log_size,
        )?);
        let origins = vec![opts.config.proxy.gemini_upstream.origin(), opts.config.proxy.openai_upstream.origin()];
        let backend: Arc<dyn KeyBackend> = store.clone();
        let outbound = Outbound::with_egress(&origins, opts.config.proxy.timeouts, opts.config.egress.clone())?
            .with_key_proxies(backend.clone());
        // The Live API's sessions run natively, beside the component, with
        // the configuration it reads (its own host name included).
        let mut live_config = opts.config.proxy.clone();
        if !opts.listen.ip().is_unspecified() {
            let ip = opts.listen.ip();
            live_config.listen_host = Some(if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() });
        }
        let live = LiveHost {
            config: Arc::new(live_config),
            store: backend.clone(),
            tls: outbound.tls(),
            outbound: outbound.clone(),
            sessions: Arc::new(Semaphore::new(opts.limits.max_connections)),
            max_sessions: opts.limits.max_connections,
        };
        let (path, mut env, cache) =
            (&opts.component_path, opts.config.component_env.clone(), opts.compile_cache.as_deref());
        // The address it listens on is a host name an open proxy answers.
        let ip = opts.listen.ip();
        if !ip.is_unspecified() {
            let host = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
            env.push(("GEMINI_PROXY_LISTEN".to_owned(), host));
        }
        // This host sends upstream calls through outbound proxies.
        env.push(("GEMINI_PROXY_OUTBOUND_PROXIES".to_owned(), "1".to_owned()));
        let component = match opts.wasi_http {
            WasiHttp::V0_2 => Served::P2(Arc::new(ProxyComponent::new(path, env, backend, outbound, cache)?)),
            WasiHttp::V0_3 => Served::P3(P3Proxy::new(path, env, backend, outbound, cache)?),
        };
        match component.loaded_from_cache() {
            Some(true) => tracing::info!("loaded the compiled component from the cache"),
            Some(false) => tracing::info!("compiled the component (kept in the cache for the next start)"),
            None => {}
        }
        let listener =
            TcpListener::bind(opts.listen).await.map_err(|source| StartError::Bind { addr: opts.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: opts.listen, source })?;
        let (stop, stopped) = watch::channel(false);
        let listing = opts.list_models.then(|| Listing {
            config: live.config.clone(),
            store: live.store.clone(),
            outbound: live.outbound.clone(),
        });
        if let Some(l) = listing.clone() {
            // Before the first request when Google answers at once (a
            // request then sees the names); in the background otherwise.
            let listed = tokio::spawn(l.run(opts.clock.now().0));
            let _ = tokio::time::timeout(Duration::from_secs(3), listed).await;
        }
        tokio::spawn(daily_reset_loop(
            store.clone(),
            opts.reset_cron.clone(),
            opts.clock.clone(),
            listing,
            stopped.clone(),
        ));
        if let Served::P2(c) = &component {
            tokio::spawn(trim_idle_loop(c.clone(), stopped.clone()));
        }
        tokio::spawn(request_log_loop(store.clone(), stopped.clone()));
        let tls = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(accept_loop(listener, component.clone(), live, tls, opts.limits, stopped));
        Ok(Self { addr, store, component, stop, task })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The key store.
    pub fn store(&self) -> &Arc<SqliteKeyStore> {
        &self.store
    }

    /// How many instances of the component were created so far (the rest of
    /// the requests reused one).
    pub fn instances_created(&self) -> u64 {
        self.component.instances_created()
    }

    /// How many instances of the component wait for a request (on 0.3:
    /// how many are alive, serving or not).
    pub fn idle_instances(&self) -> usize {
        match &self.component {
            Served::P2(c) => c.idle_instances(),
            Served::P3(c) => c.instances_alive(),
        }
    }

    /// Drops the idle instances unused for `unused_for` (beyond the few
    /// always kept), as the server does every few seconds; returns how many.
    /// On 0.3 an instance ends itself once idle for
    /// [`IDLE_INSTANCE_TTL`](crate::proxy::IDLE_INSTANCE_TTL): none here.
    pub fn trim_idle_instances(&self, unused_for: Duration) -> usize {
        match &self.component {
            Served::P2(c) => c.trim_idle(unused_for),
            Served::P3(_) => 0,
        }
    }

    /// Stops accepting, lets requests in flight finish (up to `grace`), and
    /// flushes the key store to disk.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(grace + Duration::from_secs(1), self.task).await.is_err() {
            tracing::warn!("connections still open after the grace period were dropped");
        }
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
}

/// The component, served on the `wasi:http` it was built for.
#[derive(Clone, Debug)]
enum Served {
    P2(Arc<ProxyComponent>),
    P3(P3Proxy),
}

impl Served {
    fn instances_created(&self) -> u64 {
        match self {
            Self::P2(c) => c.instances_created(),
            Self::P3(c) => c.instances_created(),
        }
    }

    fn loaded_from_cache(&self) -> Option<bool> {
        match self {
            Self::P2(c) => c.loaded_from_cache(),
            Self::P3(c) => c.loaded_from_cache(),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    component: Served,
    live: LiveHost,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnectionLimits,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut accept_warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, say: warn once a minute, not at every retry.
                if accept_warned.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(error = %e, "accept failed; retrying every 50 ms");
                    accept_warned = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let activity = Activity::new();
        let (component, live) = (component.clone(), live.clone());
        let watched = activity.clone();
        let service = hyper::service::service_fn(move |req| {
            let (component, live) = (component.clone(), live.clone());
            let in_flight = watched.request_started();
            async move { Ok::<_, std::convert::Infallible>(handle(component, live, req, in_flight).await) }
        });
        let stream = Watched::new(stream, activity.clone());
        let Some(tls) = tls.clone() else {
            let conn =
                graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned());
            tokio::spawn(async move {
                let _permit = permit;
                tokio::select! {
                    ended = conn => if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    },
                    () = activity.expired(&limits) => tracing::debug!(%peer, "closed a connection that sent no request in time"),
                }
            });
            continue;
        };
        // Over TLS: the handshake first (within the header timeout), then
        // the same service. These connections are not among those a
        // graceful shutdown waits for.
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(limits.header_timeout, tls.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "no TLS handshake in time"),
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                () = activity.expired(&limits) => tracing::debug!(%peer, "closed a connection that sent no request in time"),
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("gave up waiting for open connections");
        }
    }
}

/// Answers a connection over the limit with a 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, limit: usize) {
    use tokio::io::AsyncWriteExt;
    let r = ProxyError::TooManyConnections { limit }.to_response(Dialect::Gemini);
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        r.body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(r.body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

type Answer = hyper::Response<Guarded<HyperOutgoingBody>>;

fn respond(r: &proxy_core::wire::http::Response) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(r.body.clone())).map_err(|never| match never {}).boxed_unsync();
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &r.headers {
        if let (Ok(n), Ok(v)) =
            (hyper::header::HeaderName::try_from(name.as_str()), hyper::header::HeaderValue::try_from(value.as_str()))
        {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

fn error_response(e: &ProxyError) -> hyper::Response<HyperOutgoingBody> {
    respond(&e.to_response(Dialect::Gemini))
}

/// A request id: unique in this process, not guessable across processes.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static EPOCH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    format!("{:x}-{:x}", epoch & 0xffff_ffff, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs one request through an instance of the component and logs one
/// line for it (method, path without the query, which can carry a key,
/// status, time to the response head). A head over core's limits is
/// answered here, before the component: Wasmtime's own header limits are
/// lower than what a client can send.
async fn handle(component: Served, live: LiveHost, mut req: hyper::Request<Incoming>, in_flight: InFlight) -> Answer {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let id = request_id();
    let uri_bytes = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let header_bytes = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    let response = if admit::head_limit(uri_bytes, header_bytes).is_some() {
        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let headers: Vec<(String, Vec<u8>)> =
            req.headers().iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
        admit::refuse_head(pq, &headers)
            .map_or_else(|| error_response(&ProxyError::internal("", Some(&id))), |r| respond(&r))
    } else {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&id) {
            req.headers_mut().insert(proxy_core::request::headers::REQUEST_ID, v);
        }
        if proxy_core::live::is_live_path(&path) {
            // A Live session: served natively (wasi:http has no WebSocket).
            respond(&live::serve(&live, req, &id).await)
        } else {
            match component {
                Served::P2(c) => run_component(c, req, &id).await,
                Served::P3(c) => run_p3(&c, req, &id).await,
            }
        }
    };
    // Each request's record is the request log's (and, with
    // `--access-log json`, a line on standard output): a line here only at
    // debug level, and for the proxy's own failures.
    let status = response.status().as_u16();
    let elapsed_us = started.elapsed().as_micros() as u64;
    if status >= 500 {
        tracing::info!(%method, path, status, elapsed_us, request_id = %id, "answered");
    } else {
        tracing::debug!(%method, path, status, elapsed_us, request_id = %id, "answered");
    }
    response.map(|body| Guarded { body, _in_flight: in_flight })
}

async fn run_component(
    component: Arc<ProxyComponent>,
    req: hyper::Request<Incoming>,
    id: &str,
) -> hyper::Response<HyperOutgoingBody> {
    let internal = |message: &str| error_response(&ProxyError::internal(message, Some(id)));
    let mut warm = match component.checkout().await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(request_id = %id, error = %format!("{e:#}"), "cannot instantiate the proxy component");
            return internal("the proxy is out of instances; try again");
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut http = warm.store.data_mut().http();
    let prepared = http.new_incoming_request(Scheme::Http, req).and_then(|r| Ok((r, http.new_response_outparam(tx)?)));
    let (request, out) = match prepared {
        Ok(p) => p,
        // Nothing was handed to the guest: the instance stays clean.
        Err(e) => {
            component.checkin(warm);
            tracing::warn!(request_id = %id, error = %format!("{e:#}"), "a request the component cannot take");
            return error_response(&ProxyError::BadRequest("the request's head could not be read".into()));
        }
    };
    let request_id = id.to_owned();
    let task = tokio::spawn(async move {
        let handled = warm.proxy.wasi_http0_2_12_incoming_handler().call_handle(&mut warm.store, request, out).await;
        // A trapped instance is dropped; a clean one serves again.
        match &handled {
            Ok(()) => component.checkin(warm),
            // A trap after the answer's head went is told nowhere else.
            Err(e) => tracing::error!(request_id, error = %format!("{e:#}"), "the proxy component trapped"),
        }
        handled
    });
    match rx.await {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => {
            tracing::error!(request_id = %id, error = ?code, "the proxy component answered with an error code");
            internal("the proxy failed on this request")
        }
        Err(_) => {
            let why = match task.await {
                Ok(Ok(())) => "the component returned without answering".to_owned(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => chain(&e),
            };
            tracing::error!(request_id = %id, error = %why, "the proxy component failed");
            internal("the proxy failed on this request")
        }
    }
}

/// Runs one request through the 0.3 component. The request's URI names
/// its authority (HTTP/2's `:authority`, else `host`) as 0.2's incoming
/// request does.
async fn run_p3(component: &P3Proxy, req: hyper::Request<Incoming>, id: &str) -> hyper::Response<HyperOutgoingBody> {
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| parts.headers.get(hyper::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned));
    let uri = authority.and_then(|authority| {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        hyper::Uri::builder().scheme("http").authority(authority).path_and_query(pq).build().ok()
    });
    let Some(uri) = uri else {
        tracing::warn!(request_id = %id, "a request without a usable host header");
        return error_response(&ProxyError::BadRequest("the request's head could not be read".into()));
    };
    parts.uri = uri;
    let body = body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync();
    match component.handle(hyper::Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(request_id = %id, error = %format!("{e:#}"), "the proxy component failed");
            error_response(&ProxyError::internal("the proxy failed on this request", Some(id)))
        }
    }
}

/// A response body that ends its connection's request when it is dropped
/// (finished, or abandoned by a client that went away).
#[derive(Debug)]
pub struct Guarded<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: http_body::Body + Unpin> http_body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Writes the request log's unfinished chunk every two seconds.
async fn request_log_loop(store: Arc<SqliteKeyStore>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stopped.changed() => return,
        }
        store.write_waiting_requests();
    }
}

/// Gives back the memory of instances left idle after a burst.
async fn trim_idle_loop(component: Arc<ProxyComponent>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stopped.changed() => return,
        }
        let dropped = component.trim_idle(crate::proxy::IDLE_INSTANCE_TTL);
        if dropped > 0 {
            tracing::debug!(dropped, "dropped idle instances");
        }
    }
}

/// The host's models listing ([`crate::listing`]), with what it needs.
#[derive(Clone)]
struct Listing {
    config: Arc<proxy_core::Config>,
    store: Arc<dyn KeyBackend>,
    outbound: Outbound,
}

impl Listing {
    async fn run(self, now_ms: u64) {
        crate::listing::list_models(self.config, self.store, self.outbound, now_ms).await;
    }
}

async fn daily_reset_loop(
    store: Arc<SqliteKeyStore>,
    cron: Cron,
    clock: Arc<dyn Clock>,
    listing: Option<Listing>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let now = clock.now();
        let Some(next) = cron.next_after(now) else {
            tracing::warn!(%cron, "the reset schedule never fires");
            return;
        };
        let wait = Duration::from_millis(now.until(next));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => return,
        }
        let store = store.clone();
        let _ = tokio::task::spawn_blocking(move || store.daily_reset()).await;
        tracing::info!(%cron, "daily reset done");
        // Google's models list, with a pool key: one call a day.
        if let Some(l) = listing.clone() {
            l.run(clock.now().0).await;
        }
    }
}
