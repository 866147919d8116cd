//! Serving the component built for `wasi:http` 0.3 (`--wasi-http 0.3`).
//!
//! Wasmtime's own driver for 0.3 ([`ProxyHandler`]) runs each instance as a
//! worker task that owns its store and its event loop: the loop keeps
//! running after the guest has answered, so that the guest can pump a
//! streamed body and file its reports. An instance takes one request at a
//! time (until the guest is done with it, not only until it answered),
//! serves up to [`MAX_REQUESTS_PER_INSTANCE`], and is dropped after
//! [`IDLE_INSTANCE_TTL`] unused, after a trap, or once its memory grew past
//! [`MAX_IDLE_MEMORY_BYTES`](crate::proxy::MAX_IDLE_MEMORY_BYTES).

use crate::outbound::Outbound;
use crate::proxy::{
    IDLE_INSTANCE_TTL, MAX_REQUESTS_PER_INSTANCE, MemoryWatch, ProxyError, RequestState, WasiHttp, linked,
};
use crate::store::KeyBackend;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use wasmtime::component::GuestTaskId;
use wasmtime::{Cache, Engine, Store, StoreContextMut};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};

/// The 0.3 component, compiled and pre-linked, with Wasmtime's handler
/// over its instances.
#[derive(Clone)]
pub struct P3Proxy {
    handler: ProxyHandler<Instances>,
}

impl std::fmt::Debug for P3Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P3Proxy").finish_non_exhaustive()
    }
}

/// What every new instance is made from, and how many there are.
struct Instances {
    engine: Engine,
    pre: ProxyPre<RequestState>,
    env: Vec<(String, String)>,
    backend: Arc<dyn KeyBackend>,
    outbound: Outbound,
    cache: Option<Cache>,
    created: AtomicU64,
    live: Arc<AtomicUsize>,
}

impl P3Proxy {
    /// Compiles the 0.3 component at `path` and links it as
    /// [`ProxyComponent::new`](crate::proxy::ProxyComponent::new) does the
    /// 0.2 one.
    pub fn new(
        path: &str,
        env: Vec<(String, String)>,
        backend: Arc<dyn KeyBackend>,
        outbound: Outbound,
        compile_cache: Option<&Path>,
    ) -> Result<Self, ProxyError> {
        let (pre, cache) = linked(path, compile_cache, WasiHttp::V0_3)?;
        let engine = pre.engine().clone();
        let pre = wasmtime_wasi_http::p3::bindings::ServicePre::new(pre)?;
        let instances = Instances {
            engine,
            pre: ProxyPre::P3(pre),
            env,
            backend,
            outbound,
            cache,
            created: AtomicU64::new(0),
            live: Arc::new(AtomicUsize::new(0)),
        };
        Ok(Self { handler: ProxyHandler::new(instances) })
    }

    /// Runs one request through an instance.
    pub async fn handle(&self, request: wasmtime_wasi_http::handler::Request) -> wasmtime::Result<Response> {
        self.handler.handle((), request).await
    }

    /// With a compile cache: whether this start loaded the machine code from
    /// it (rather than compiling).
    pub fn loaded_from_cache(&self) -> Option<bool> {
        self.handler.state().cache.as_ref().map(|c| c.cache_hits() > 0)
    }

    /// How many instances have been created so far.
    pub fn instances_created(&self) -> u64 {
        self.handler.state().created.load(Ordering::Relaxed)
    }

    /// How many instances are alive (serving, or waiting for a request).
    pub fn instances_alive(&self) -> usize {
        self.handler.state().live.load(Ordering::Relaxed)
    }
}

/// A response of the 0.3 handler.
pub type Response = wasmtime_wasi_http::handler::Response;

impl HandlerState for Instances {
    type StoreData = RequestState;
    type WorkerExpiration = IdleExpiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<RequestState, IdleExpiry, Worker>> {
        let mut store = RequestState::store(&self.engine, &self.env, &self.backend, &self.outbound);
        let memory = store.data().memory().clone();
        let idle = Arc::new(AtomicBool::new(true));
        let proxy = self.pre.instantiate_async(&mut store).await?;
        self.created.fetch_add(1, Ordering::Relaxed);
        self.live.fetch_add(1, Ordering::Relaxed);
        Ok(Instance {
            store,
            proxy,
            view: <RequestState as WasiHttpView>::http,
            expiration: IdleExpiry { idle: idle.clone(), timer: None },
            state: Worker { memory, idle, live: self.live.clone() },
        })
    }
}

/// One instance: one request at a time, as on 0.2, until the guest has
/// done all it does for it (a request leaves Wasmtime's count once it has
/// answered, while the guest may still pump its stream and file its
/// reports); and not once it grew too large. (Letting an instance take 8 or
/// 64 requests at once served no more of them in a quick wrk run.)
struct Worker {
    memory: MemoryWatch,
    /// Whether the instance has nothing left to do, told by [`IdleExpiry`].
    idle: Arc<AtomicBool>,
    live: Arc<AtomicUsize>,
}

impl WorkerState for Worker {
    type StoreData = RequestState;
    type RequestData = ();

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= MAX_REQUESTS_PER_INSTANCE as usize || self.memory.too_large() {
            ShouldAccept::Never
        } else if concurrent > 0 || !self.idle.load(Ordering::Relaxed) {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _: StoreContextMut<'_, RequestState>,
        (): (),
        _: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        self.idle.store(false, Ordering::Relaxed);
        // No deadline of its own: the upstream's timeouts are the host's.
        Box::pin(std::future::pending())
    }

    fn drop(&self, store: Store<RequestState>, result: wasmtime::Result<()>) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = result {
            tracing::error!(error = %format!("{e:#}"), "a proxy instance failed and was dropped");
        }
        drop(store);
    }
}

/// Tells the [`Worker`] when its instance has nothing left to do, and ends
/// an instance left idle for [`IDLE_INSTANCE_TTL`].
struct IdleExpiry {
    idle: Arc<AtomicBool>,
    timer: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
}

impl WorkerExpiration for IdleExpiry {
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>, status: WorkerStatus, since: Instant) -> Poll<()> {
        if status != WorkerStatus::Idle {
            self.timer = None;
            return Poll::Pending;
        }
        if !self.idle.swap(true, Ordering::Relaxed) {
            // Newly idle: the handler asks the worker again whether it
            // takes a request only when it is polled again.
            cx.waker().wake_by_ref();
        }
        if self.timer.as_ref().is_none_or(|(at, _)| *at != since) {
            let deadline = tokio::time::Instant::from_std(since + IDLE_INSTANCE_TTL);
            self.timer = Some((since, Box::pin(tokio::time::sleep_until(deadline))));
        }
        match &mut self.timer {
            Some((_, sleep)) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}
