//! Serves one forwarding guest, on `wasi:http` 0.2 or 0.3, with Wasmtime 48.
//!
//! ```text
//! probe-host (--p2 | --p3) GUEST.wasm --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT
//!            [--reuse N] [--rebuild]
//! ```
//!
//! Both interfaces go through the same machinery, the one `wasmtime serve`
//! uses: `wasmtime_wasi_http::handler::ProxyHandler`. For 0.2 it makes the
//! `incoming-request` and `response-outparam` and calls `handle`; for 0.3 it
//! makes the request with `p3::Request::from_http`, calls `handle` inside
//! `Store::run_concurrent` and turns the answer into an `http::Response`
//! with `Response::into_http`. Each instance (a new store, instantiated from
//! a pre-instance with the pooling allocator) serves one request at a time
//! and `--reuse N` requests in all (default 1: a fresh instance for every
//! request). Outgoing requests from both go through one pooled keep-alive
//! hyper client, as nginx's `keepalive` does.

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use wasmtime::component::{Component, GuestTaskId, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Result, Store, StoreContextMut};
use wasmtime::{bail, format_err};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// How many instances may exist at once (the pooling allocator's slots).
const MAX_INSTANCES: u32 = 1000;

#[derive(Clone, Copy, PartialEq)]
enum Wasi {
    P2,
    P3,
}

struct Args {
    wasi: Wasi,
    guest: PathBuf,
    listen: SocketAddr,
    upstream: String,
    reuse: usize,
    rebuild: bool,
}

fn parse_args() -> Result<Args> {
    const USAGE: &str =
        "usage: probe-host (--p2 | --p3) GUEST.wasm --listen ADDR --upstream HOST:PORT [--reuse N] [--rebuild]";
    let (mut wasi, mut listen, mut upstream, mut reuse, mut rebuild) = (None, None, None, 1, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format_err!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--p2" => wasi = Some((Wasi::P2, PathBuf::from(value()?))),
            "--p3" => wasi = Some((Wasi::P3, PathBuf::from(value()?))),
            "--listen" => listen = Some(value()?.parse::<SocketAddr>().context("--listen takes an IP:PORT")?),
            "--upstream" => upstream = Some(value()?),
            "--reuse" => reuse = value()?.parse::<usize>().context("--reuse takes a number of requests")?,
            "--rebuild" => rebuild = true,
            _ => bail!("unknown argument {arg}\n{USAGE}"),
        }
    }
    let Some((wasi, guest)) = wasi else { bail!("--p2 or --p3 is needed\n{USAGE}") };
    Ok(Args {
        wasi,
        guest,
        listen: listen.ok_or_else(|| format_err!("--listen is needed\n{USAGE}"))?,
        upstream: upstream.ok_or_else(|| format_err!("--upstream is needed\n{USAGE}"))?,
        reuse: reuse.max(1),
        rebuild,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let mut config = Config::new();
    config.wasm_component_model_async(true);
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_component_instances(MAX_INSTANCES)
        .total_core_instances(MAX_INSTANCES * 4)
        .total_memories(MAX_INSTANCES)
        .total_tables(MAX_INSTANCES * 4)
        .max_memory_size(64 << 20);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    let engine = Engine::new(&config)?;

    let started = Instant::now();
    let component = Component::from_file(&engine, &args.guest)
        .with_context(|| format!("cannot load the guest {}", args.guest.display()))?;
    let mut linker = Linker::<Host>::new(&engine);
    // Both guests are built for wasm32-wasip2, whose std uses WASI 0.2
    // (the environment, for `UPSTREAM`); the 0.3 guest adds 0.3's http.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    let pre = match args.wasi {
        Wasi::P2 => {
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
            ProxyPre::P2(wasmtime_wasi_http::p2::bindings::ProxyPre::new(linker.instantiate_pre(&component)?)?)
        }
        Wasi::P3 => {
            wasmtime_wasi::p3::add_to_linker(&mut linker)?;
            wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
            ProxyPre::P3(wasmtime_wasi_http::p3::bindings::ServicePre::new(linker.instantiate_pre(&component)?)?)
        }
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let mut env = vec![("UPSTREAM".to_owned(), args.upstream.clone())];
    if args.rebuild {
        env.push(("REBUILD".to_owned(), "1".to_owned()));
    }
    let handler = ProxyHandler::new(Probe { engine, pre, client, env, reuse: args.reuse });

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let wasi = if args.wasi == Wasi::P2 { "wasi:http 0.2" } else { "wasi:http 0.3" };
    eprintln!(
        "{wasi} guest {} compiled in {:.1} s, {} request(s) per instance{}; listening on http://{}",
        args.guest.display(),
        started.elapsed().as_secs_f64(),
        args.reuse,
        if args.rebuild { ", rebuild" } else { "" },
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| serve(handler.clone(), request));
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                eprintln!("connection failed: {e}");
            }
        });
    }
}

/// One request through the guest; a failure is a bare 502.
async fn serve(
    handler: ProxyHandler<Probe>,
    request: hyper::Request<Incoming>,
) -> Result<http::Response<WasiBody>, Infallible> {
    let request = request.map(|body| body.map_err(Error::from).boxed_unsync());
    match handler.handle((), request).await {
        Ok(response) => Ok(response),
        Err(e) => {
            eprintln!("request failed: {e:?}");
            let mut response = http::Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
            *response.status_mut() = http::StatusCode::BAD_GATEWAY;
            Ok(response)
        }
    }
}

/// What every new instance is made from.
struct Probe {
    engine: Engine,
    pre: ProxyPre<Host>,
    client: Client<HttpConnector, WasiBody>,
    env: Vec<(String, String)>,
    reuse: usize,
}

impl HandlerState for Probe {
    type StoreData = Host;
    type WorkerExpiration = NoExpiry;
    type WorkerState = OneAtATime;

    async fn instantiate(&self) -> Result<Instance<Host, NoExpiry, OneAtATime>> {
        let host = Host {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder().envs(&self.env).build(),
            http: WasiHttpCtx::new(),
            hooks: Outbound { client: self.client.clone() },
        };
        let mut store = Store::new(&self.engine, host);
        let proxy = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy,
            view: <Host as WasiHttpView>::http,
            expiration: NoExpiry,
            state: OneAtATime { reuse: self.reuse },
        })
    }
}

/// An instance takes one request at a time (a 0.2 one cannot take more; the
/// 0.3 one is held to the same), `reuse` in all.
struct OneAtATime {
    reuse: usize,
}

impl WorkerState for OneAtATime {
    type StoreData = Host;
    type RequestData = ();

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse {
            ShouldAccept::Never
        } else if concurrent > 0 {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _: StoreContextMut<'_, Host>,
        (): (),
        _: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        Box::pin(std::future::pending())
    }

    fn drop(&self, store: Store<Host>, result: Result<()>) {
        if let Err(e) = result {
            eprintln!("instance failed: {e:?}");
        }
        drop(store);
    }
}

/// Neither requests nor idle instances time out.
struct NoExpiry;

impl WorkerExpiration for NoExpiry {
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>, _: WorkerStatus, _: Instant) -> Poll<()> {
        Poll::Pending
    }
}

/// One instance's store data.
struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: Outbound,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Sends the guests' requests through the shared keep-alive client.
struct Outbound {
    client: Client<HttpConnector, WasiBody>,
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _: Option<RequestOptions>,
        _: IoFuture,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        let client = self.client.clone();
        Box::new(async move {
            let response = client.request(request).await.map_err(|e| {
                if e.is_connect() { Error::ConnectionRefused } else { Error::InternalError(Some(format!("{e:#}"))) }
            })?;
            // The client's connection tasks do the I/O: nothing to wait for.
            let io: IoFuture = Box::new(async { Ok(()) });
            Ok((response.map(|body| body.map_err(Error::from).boxed_unsync()), io))
        })
    }
}
