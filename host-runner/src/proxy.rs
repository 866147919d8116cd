//! The component, compiled once; its instances are kept warm between
//! requests (one request at a time per instance) and replaced after
//! [`MAX_REQUESTS_PER_INSTANCE`] requests or any trap.

use crate::key_store::{KeyStoreCtx, KeyStoreView};
use crate::outbound::Outbound;
use crate::store::KeyBackend;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Cache, CacheConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Bindings generated from the WIT world in `../wit`.
#[expect(missing_docs, reason = "bindgen-generated code")]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "gemini-proxy:host/proxy",
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// Errors preparing the component.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Wasmtime refused the configuration, the component or the linking.
    #[error("cannot prepare the proxy component")]
    Wasmtime(#[source] wasmtime::Error),
}

impl From<wasmtime::Error> for ProxyError {
    fn from(e: wasmtime::Error) -> Self {
        Self::Wasmtime(e)
    }
}

/// Which `wasi:http` the component is built for and served with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WasiHttp {
    /// `wasi:http` 0.2: `incoming-handler`, a response outparam, and
    /// `wasi:io` streams (the default).
    #[default]
    V0_2,
    /// `wasi:http` 0.3: an async `handler` and `stream<u8>` bodies.
    V0_3,
}

impl WasiHttp {
    /// The component built (by `build.rs`) for this version.
    pub fn component_path(self) -> &'static str {
        match self {
            Self::V0_2 => crate::COMPONENT_PATH,
            Self::V0_3 => crate::COMPONENT_P3_PATH,
        }
    }
}

impl std::fmt::Display for WasiHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V0_2 => "0.2",
            Self::V0_3 => "0.3",
        })
    }
}

impl std::str::FromStr for WasiHttp {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "0.2" => Ok(Self::V0_2),
            "0.3" => Ok(Self::V0_3),
            other => Err(format!("{other:?} is not a wasi:http version this host serves (0.2 or 0.3)")),
        }
    }
}

/// Per-request state of a store.
#[expect(missing_debug_implementations, reason = "holds WASI contexts that are not Debug")]
pub struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    keys: KeyStoreCtx,
    outbound: Outbound,
    memory: MemoryWatch,
}

/// Records the largest linear memory an instance asked for (wasm memory
/// never shrinks), so that an instance grown by one big request is not
/// kept idle with that memory.
#[derive(Debug, Default, Clone)]
pub(crate) struct MemoryWatch {
    largest: Arc<AtomicUsize>,
}

impl MemoryWatch {
    /// Whether the instance grew too large to be kept for another request.
    pub(crate) fn too_large(&self) -> bool {
        self.largest.load(Ordering::Relaxed) > MAX_IDLE_MEMORY_BYTES
    }
}

impl wasmtime::ResourceLimiter for MemoryWatch {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.largest.fetch_max(desired, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, _desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

impl RequestState {
    /// A fresh store for one instance: its environment `env`, the key store
    /// `backend`, the upstream client `outbound`.
    pub(crate) fn store(
        engine: &Engine,
        env: &[(String, String)],
        backend: &Arc<dyn KeyBackend>,
        outbound: &Outbound,
    ) -> Store<Self> {
        let mut wasi = WasiCtx::builder();
        wasi.envs(env);
        // ACCESS_LOG=json: the component writes each request's summary to
        // its standard output, which is this process's.
        if env.iter().any(|(k, v)| k == "ACCESS_LOG" && v.trim().eq_ignore_ascii_case("json")) {
            wasi.inherit_stdout();
        }
        let state = Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            keys: KeyStoreCtx::new(backend.clone()),
            outbound: outbound.clone(),
            memory: MemoryWatch::default(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.memory);
        store
    }

    /// The instance's memory watch.
    pub(crate) fn memory(&self) -> &MemoryWatch {
        &self.memory
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}

impl KeyStoreView for RequestState {
    fn key_store(&mut self) -> &mut KeyStoreCtx {
        &mut self.keys
    }
}

/// The compiled, pre-linked component, what each store needs, and the
/// instances waiting for their next request.
#[derive(Clone)]
pub struct ProxyComponent {
    pre: bindings::ProxyPre<RequestState>,
    env: Arc<Vec<(String, String)>>,
    backend: Arc<dyn KeyBackend>,
    outbound: Outbound,
    /// Least recently used first, each with when it came back.
    idle: Arc<Mutex<Vec<(Warm, Instant)>>>,
    created: Arc<AtomicU64>,
    cache: Option<Cache>,
}

/// An instance of the component with its store, serving one request at a time.
#[expect(missing_debug_implementations, reason = "holds a wasmtime store")]
pub struct Warm {
    /// The store (its data holds the WASI contexts and the resource table).
    pub store: Store<RequestState>,
    /// The instance's exports.
    pub proxy: bindings::Proxy,
    served: u32,
}

impl std::fmt::Debug for ProxyComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyComponent").finish_non_exhaustive()
    }
}

/// Most requests in flight at once (pooling allocator slots).
pub const MAX_CONCURRENT_INSTANCES: u32 = 1000;

/// Idle instances kept for the next requests: a burst of up to this many
/// concurrent requests leaves its instances for the next burst (beyond it,
/// the extra instances are dropped after their request).
pub const MAX_IDLE_INSTANCES: usize = 256;

/// Idle instances always kept, however long unused.
pub const MIN_IDLE_INSTANCES: usize = 8;

/// How long an idle instance beyond [`MIN_IDLE_INSTANCES`] is kept unused
/// before [`ProxyComponent::trim_idle`] drops it and its memory.
pub const IDLE_INSTANCE_TTL: Duration = Duration::from_secs(10);

/// An instance whose linear memory grew past this (a large request body)
/// is dropped after its request instead of being kept idle.
pub const MAX_IDLE_MEMORY_BYTES: usize = 8 << 20;

/// Requests one instance serves before it is replaced by a fresh one, which
/// bounds whatever a guest might accumulate (heap fragmentation, a leak).
pub const MAX_REQUESTS_PER_INSTANCE: u32 = 10_000;

impl ProxyComponent {
    /// Compiles the component at `path` and links it against WASI, wasi:http
    /// (through `outbound`) and the key store `backend`. `env` is the
    /// component's environment (its configuration). With `compile_cache`,
    /// the machine code is kept in that directory and a later start with the
    /// same component and Wasmtime loads it instead of compiling: faster, and
    /// the compiler's working memory never becomes part of the process.
    pub fn new(
        path: &str,
        env: Vec<(String, String)>,
        backend: Arc<dyn KeyBackend>,
        outbound: Outbound,
        compile_cache: Option<&Path>,
    ) -> Result<Self, ProxyError> {
        let (pre, cache) = linked(path, compile_cache, WasiHttp::V0_2)?;
        let pre = bindings::ProxyPre::new(pre)?;
        Ok(Self {
            pre,
            env: Arc::new(env),
            backend,
            outbound,
            idle: Arc::new(Mutex::new(Vec::with_capacity(MAX_IDLE_INSTANCES))),
            created: Arc::new(AtomicU64::new(0)),
            cache,
        })
    }

    /// An instance for one request: the most recently used idle one, or a
    /// new one.
    pub async fn checkout(&self) -> wasmtime::Result<Warm> {
        if let Some((warm, _)) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(warm);
        }
        let mut store = self.new_store();
        let proxy = self.pre.instantiate_async(&mut store).await?;
        self.created.fetch_add(1, Ordering::Relaxed);
        Ok(Warm { store, proxy, served: 0 })
    }

    /// Returns an instance whose request ended without a trap. It is kept
    /// only if the guest released every resource it was handed (so nothing
    /// of one request reaches the next), it has not reached
    /// [`MAX_REQUESTS_PER_INSTANCE`] nor [`MAX_IDLE_MEMORY_BYTES`], and the
    /// idle list has room.
    pub fn checkin(&self, mut warm: Warm) {
        warm.served += 1;
        let state = warm.store.data();
        if warm.served >= MAX_REQUESTS_PER_INSTANCE || !state.table.is_empty() || state.memory.too_large() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_INSTANCES {
            idle.push((warm, Instant::now()));
        }
    }

    /// Drops the idle instances unused for `unused_for`, least recently used
    /// first, keeping [`MIN_IDLE_INSTANCES`]; returns how many it dropped.
    pub fn trim_idle(&self, unused_for: Duration) -> usize {
        // Taken out under the lock, dropped (stores freed) after it.
        let stale: Vec<(Warm, Instant)> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let removable = idle.len().saturating_sub(MIN_IDLE_INSTANCES);
            let n = idle.iter().take(removable).take_while(|(_, at)| at.elapsed() >= unused_for).count();
            idle.drain(..n).collect()
        };
        stale.len()
    }

    /// With a compile cache: whether this start loaded the machine code from
    /// it (rather than compiling).
    pub fn loaded_from_cache(&self) -> Option<bool> {
        self.cache.as_ref().map(|c| c.cache_hits() > 0)
    }

    /// How many instances wait for a request.
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// How many instances have been created so far.
    pub fn instances_created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// A fresh store for one instance.
    pub fn new_store(&self) -> Store<RequestState> {
        RequestState::store(self.pre.engine(), &self.env, &self.backend, &self.outbound)
    }

    /// The pre-instantiated component.
    pub fn pre(&self) -> &bindings::ProxyPre<RequestState> {
        &self.pre
    }
}

/// The component at `path`, compiled (or loaded from `compile_cache`) and
/// linked against WASI, `wasi:http` `version` and the key store.
pub(crate) fn linked(
    path: &str,
    compile_cache: Option<&Path>,
    version: WasiHttp,
) -> Result<(InstancePre<RequestState>, Option<Cache>), ProxyError> {
    let (engine, cache) = engine(compile_cache, version == WasiHttp::V0_3)?;
    let component = Component::from_file(&engine, path)?;
    let mut linker = Linker::<RequestState>::new(&engine);
    // Rust's std on wasm32-wasip2 imports WASI 0.2 (the environment, the
    // clocks) whichever wasi:http the component is built for.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    match version {
        WasiHttp::V0_2 => wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?,
        WasiHttp::V0_3 => {
            // 0.3's http types use 0.3's clocks.
            wasmtime_wasi::p3::add_to_linker(&mut linker)?;
            wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        }
    }
    crate::key_store::add_to_linker(&mut linker)?;
    Ok((linker.instantiate_pre(&component)?, cache))
}

/// The engine both `wasi:http` versions run on: compiled code kept in
/// `compile_cache` (when given), instances from a pooling allocator, and
/// the component model's async ABI when `component_model_async` (0.3).
fn engine(compile_cache: Option<&Path>, component_model_async: bool) -> Result<(Engine, Option<Cache>), ProxyError> {
    let mut config = wasmtime::Config::new();
    let cache = match compile_cache {
        Some(dir) => {
            let mut c = CacheConfig::new();
            c.with_directory(dir);
            Some(Cache::new(c)?)
        }
        None => None,
    };
    config.cache(cache.clone());
    // The async ABI only for 0.3: with it on (Wasmtime's default once the
    // crate feature is built in), every 0.2 call too would go through the
    // concurrent event loop.
    config.concurrency_support(component_model_async);
    config.wasm_component_model_async(component_model_async);
    // For `perf`: names the guest's compiled functions in /tmp/perf-PID.map.
    if std::env::var_os("GEMINI_PROXY_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(MAX_CONCURRENT_INSTANCES)
        .total_core_instances(MAX_CONCURRENT_INSTANCES * 4)
        .total_memories(MAX_CONCURRENT_INSTANCES)
        .total_tables(MAX_CONCURRENT_INSTANCES * 4)
        .max_memory_size(256 << 20);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Ok((Engine::new(&config)?, cache))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::p3::P3Proxy;
    use crate::store::SqliteKeyStore;

    /// A key store in `dir` and an upstream client, for preparing a component.
    fn parts(dir: &Path) -> (Arc<dyn KeyBackend>, Outbound) {
        let clock = Arc::new(ManualClock::new(proxy_core::UnixMillis(1_800_000_000_000)));
        let store: Arc<dyn KeyBackend> =
            Arc::new(SqliteKeyStore::open(&dir.join("k.sqlite3"), Vec::new(), clock, None, 100).expect("store"));
        let outbound =
            Outbound::new(&["http://127.0.0.1:9".to_owned()], proxy_core::config::UpstreamTimeouts::HOST_RUNNER)
                .expect("outbound");
        (store, outbound)
    }

    #[test]
    fn each_version_serves_only_the_component_built_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, outbound) = parts(dir.path());
        let (p2, p3) = (WasiHttp::V0_2.component_path(), WasiHttp::V0_3.component_path());
        assert_ne!(p2, p3);
        assert!(P3Proxy::new(p3, Vec::new(), store.clone(), outbound.clone(), None).is_ok());
        assert!(P3Proxy::new(p2, Vec::new(), store.clone(), outbound.clone(), None).is_err());
        assert!(ProxyComponent::new(p3, Vec::new(), store.clone(), outbound.clone(), None).is_err());
        assert!(ProxyComponent::new(p2, Vec::new(), store, outbound, None).is_ok());
    }

    #[test]
    fn a_second_start_loads_the_compiled_component_from_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, outbound) = parts(dir.path());
        let cache = dir.path().join("compiled");
        let start = || {
            let c =
                ProxyComponent::new(crate::COMPONENT_PATH, Vec::new(), store.clone(), outbound.clone(), Some(&cache))
                    .expect("component");
            c.loaded_from_cache()
        };
        assert_eq!(start(), Some(false));
        assert_eq!(start(), Some(true));
    }
}
