//! The HTTP front: accepts connections, runs the component per request,
//! schedules the daily reset, and shuts down gracefully.

use crate::clock::Clock;
use crate::config::HostConfig;
use crate::outbound::{OriginError, Outbound};
use crate::proxy::{ProxyComponent, ProxyError as ComponentError};
use crate::store::{KeyBackend, SqliteKeyStore, StoreError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use proxy_core::Dialect;
use proxy_core::cron::Cron;
use proxy_core::error::{ProxyError, chain};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
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
    /// Where compiled machine code of the component is kept between starts
    /// (none: compile at every start).
    pub compile_cache: Option<PathBuf>,
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
    component: ProxyComponent,
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
        let store = Arc::new(SqliteKeyStore::open(&opts.db, opts.config.api_keys.clone(), opts.clock.clone())?);
        let origins = vec![opts.config.proxy.gemini_upstream.origin(), opts.config.proxy.openai_upstream.origin()];
        let outbound = Outbound::new(&origins)?;
        let backend: Arc<dyn KeyBackend> = store.clone();
        let component = ProxyComponent::new(
            &opts.component_path,
            opts.config.component_env.clone(),
            backend,
            outbound,
            opts.compile_cache.as_deref(),
        )?;
        match component.loaded_from_cache() {
            Some(true) => tracing::info!("loaded the compiled component from the cache"),
            Some(false) => tracing::info!("compiled the component (kept in the cache for the next start)"),
            None => {}
        }
        let listener =
            TcpListener::bind(opts.listen).await.map_err(|source| StartError::Bind { addr: opts.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: opts.listen, source })?;
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(daily_reset_loop(store.clone(), opts.reset_cron.clone(), opts.clock.clone(), stopped.clone()));
        tokio::spawn(trim_idle_loop(component.clone(), stopped.clone()));
        let task = tokio::spawn(accept_loop(listener, component.clone(), stopped));
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

    /// How many instances of the component wait for a request.
    pub fn idle_instances(&self) -> usize {
        self.component.idle_instances()
    }

    /// Drops the idle instances unused for `unused_for` (beyond the few
    /// always kept), as the server does every few seconds; returns how many.
    pub fn trim_idle_instances(&self, unused_for: Duration) -> usize {
        self.component.trim_idle(unused_for)
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

async fn accept_loop(listener: TcpListener, component: ProxyComponent, mut stopped: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let component = component.clone();
        let service = hyper::service::service_fn(move |req| {
            let component = component.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(component, req).await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
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

fn error_response(e: &ProxyError) -> hyper::Response<HyperOutgoingBody> {
    let r = e.to_response(Dialect::Gemini);
    let body = Full::new(Bytes::from(r.body)).map_err(|never| match never {}).boxed_unsync();
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

/// Runs one request through an instance of the component and logs one
/// line for it (method, path without the query, which can carry a key,
/// status, time to the response head).
async fn handle(component: ProxyComponent, req: hyper::Request<Incoming>) -> hyper::Response<HyperOutgoingBody> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = run_component(component, req).await;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "answered"
    );
    response
}

async fn run_component(component: ProxyComponent, req: hyper::Request<Incoming>) -> hyper::Response<HyperOutgoingBody> {
    let mut warm = match component.checkout().await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot instantiate the proxy component");
            return error_response(&ProxyError::Internal("the proxy is out of instances; try again".to_owned()));
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
            return error_response(&ProxyError::BadRequest(format!("malformed request: {e}")));
        }
    };
    let task = tokio::spawn(async move {
        let handled = warm.proxy.wasi_http_incoming_handler().call_handle(&mut warm.store, request, out).await;
        // A trapped instance is dropped; a clean one serves again.
        if handled.is_ok() {
            component.checkin(warm);
        }
        handled
    });
    match rx.await {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => {
            error_response(&ProxyError::Internal(format!("the component answered with an error: {code:?}")))
        }
        Err(_) => {
            let why = match task.await {
                Ok(Ok(())) => "the component returned without answering".to_owned(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => chain(&e),
            };
            tracing::error!(error = %why, "the proxy component failed");
            error_response(&ProxyError::Internal(format!("the proxy component failed: {why}")))
        }
    }
}

/// Gives back the memory of instances left idle after a burst.
async fn trim_idle_loop(component: ProxyComponent, mut stopped: watch::Receiver<bool>) {
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

async fn daily_reset_loop(
    store: Arc<SqliteKeyStore>,
    cron: Cron,
    clock: Arc<dyn Clock>,
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
    }
}
