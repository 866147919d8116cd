//! `cargo run -p host-runner`: serves gemini-proxy on 127.0.0.1:8787.

use anyhow::Context;
use clap::Parser;
use host_runner::clock::SystemClock;
use host_runner::config::HostConfig;
use host_runner::conn::ConnectionLimits;
use host_runner::proxy::WasiHttp;
use host_runner::server::{Server, ServerOptions};
use proxy_core::cron::Cron;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// gemini-proxy on Wasmtime: one endpoint for a pool of Gemini API keys.
///
/// Configuration comes from the environment (API_KEYS, PROXY_API_KEY,
/// GEMINI_UPSTREAM_URL, OPENAI_UPSTREAM_URL), then `.dev.vars` and the
/// `vars` of `wrangler.jsonc` in the working directory.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// SQLite file of the key store.
    #[arg(long, default_value = ".gemini-proxy/keys.sqlite3")]
    db: PathBuf,
    /// When quota marks are cleared each day (5-field cron, UTC).
    #[arg(long, default_value = "0 7 * * *")]
    reset_cron: Cron,
    /// Seconds a connection may take to send a complete request head (from
    /// its start, or from the first byte of a later request).
    #[arg(long, default_value = "10", value_parser = seconds)]
    header_timeout: Duration,
    /// Seconds a kept-alive connection may wait for its next request. A
    /// request in flight (a long stream included) is never cut.
    #[arg(long, default_value = "60", value_parser = seconds)]
    idle_timeout: Duration,
    /// The wasi:http the proxy component runs on: 0.2 or 0.3 (the same
    /// component, built for either).
    #[arg(long, env = "GEMINI_PROXY_WASI_HTTP", default_value = "0.2")]
    wasi_http: WasiHttp,
    /// Most client connections open at once; more are answered 503 and
    /// closed. Lowered, with a warning, to fit the open-file limit.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Serve TLS with this PEM certificate chain (with --tls-key): the
    /// Python SDK's Live client always connects with wss://.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Do not read Google's models list with a pool key at start and after
    /// each daily reset (one call each; it lets a listed model's outage be
    /// counted under its own name).
    #[arg(long)]
    no_models_listing: bool,
    /// Write each request's record (the request log's) to standard output
    /// as one JSON line: `json`, or `off`. Overrides ACCESS_LOG.
    #[arg(long, value_parser = ["json", "off"])]
    access_log: Option<String>,
}

fn seconds(v: &str) -> Result<Duration, String> {
    let s: f64 = v.parse().map_err(|_| format!("{v:?} is not a number of seconds"))?;
    if s.is_finite() && s > 0.0 && s <= 86_400.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(format!("{v} s is not between 0 and 86400"))
    }
}

/// Raises the open-file limit and fits the connection cap under it
/// (keeping room for upstream connections, the database and the logs).
fn connection_limits(args: &Args) -> ConnectionLimits {
    const RESERVED_FILES: u64 = 256;
    let mut max_connections = args.max_connections.max(1);
    if let Some((before, after)) = host_runner::conn::raise_open_file_limit() {
        if after > before {
            tracing::info!(before, after, "raised the open-file limit to its hard limit");
        }
        let fit = usize::try_from(after.saturating_sub(RESERVED_FILES).max(16)).unwrap_or(usize::MAX);
        if max_connections > fit {
            tracing::warn!(
                requested = max_connections,
                used = fit,
                open_files = after,
                "--max-connections lowered to fit the open-file limit"
            );
            max_connections = fit;
        }
    }
    ConnectionLimits { header_timeout: args.header_timeout, idle_timeout: args.idle_timeout, max_connections }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Log lines go to stderr from a background thread, so that a request
    // never waits on the terminal or the pipe (see BENCHMARKS.md). The queue
    // holds 8,192 lines (the default 128,000 preallocates 4 MiB); when it is
    // full, logging waits rather than dropping lines. Lines that queue up
    // together leave in one write.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8192)
        .lossy(false)
        .finish(std::io::BufWriter::new(std::io::stderr()));
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "host_runner=info,warn".into()),
        )
        .init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut env: HashMap<String, String> = std::env::vars().collect();
    if let Some(format) = &args.access_log {
        env.insert("ACCESS_LOG".to_owned(), format.clone());
    }
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let config = HostConfig::load(&env, &cwd)?;
    if config.proxy.proxy_key.is_none() {
        tracing::warn!("PROXY_API_KEY is not set: anyone who can reach this port can use your keys");
    }
    let keys = config.api_keys.len();
    let (gemini, openai) = (config.proxy.gemini_upstream.to_string(), config.proxy.openai_upstream.to_string());
    // A relative --db is relative to the working directory; everything
    // after this line sees absolute paths (Wasmtime's cache insists on one).
    let db = absolute(&cwd, &args.db);
    let compile_cache = db.parent().unwrap_or(&cwd).join("compiled");
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(host_runner::tls::server_config(&absolute(&cwd, cert), &absolute(&cwd, key))?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = Server::start(ServerOptions {
        listen: args.listen,
        db: db.clone(),
        reset_cron: args.reset_cron.clone(),
        config,
        clock: Arc::new(SystemClock),
        component_path: args.wasi_http.component_path().to_owned(),
        wasi_http: args.wasi_http,
        compile_cache: Some(compile_cache.clone()),
        limits: connection_limits(&args),
        tls,
        list_models: !args.no_models_listing,
    })
    .await?;
    tracing::info!(
        addr = %server.addr(), keys, db = %db.display(), compile_cache = %compile_cache.display(),
        reset_cron = %args.reset_cron, %gemini, %openai, wasi_http = %args.wasi_http,
        "gemini-proxy listening on {scheme}://{}", server.addr()
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

/// `path` resolved against `cwd` when relative, with `.` segments dropped
/// (the file may not exist yet, so it is not canonicalised).
fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    let joined = if path.is_absolute() { path.to_path_buf() } else { cwd.join(path) };
    joined.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect()
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::absolute;
    use std::path::Path;

    #[test]
    fn relative_paths_resolve_against_the_working_directory() {
        let cwd = Path::new("/home/u/clone");
        assert_eq!(
            absolute(cwd, Path::new(".gemini-proxy/keys.sqlite3")),
            Path::new("/home/u/clone/.gemini-proxy/keys.sqlite3")
        );
        assert_eq!(absolute(cwd, Path::new("./x/./k.db")), Path::new("/home/u/clone/x/k.db"));
        assert_eq!(absolute(cwd, Path::new("/var/lib/k.db")), Path::new("/var/lib/k.db"));
    }
}
