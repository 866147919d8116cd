//! Measures what every request pays before the component runs: a fresh
//! store (WASI and HTTP contexts) and an instance from the pre-instantiated
//! component. `cargo run --release -p host-runner --example instantiate`.

use host_runner::clock::SystemClock;
use host_runner::outbound::Outbound;
use host_runner::proxy::ProxyComponent;
use host_runner::store::SqliteKeyStore;
use proxy_core::ApiKey;
use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let keys = vec![ApiKey::new("AIzaSyBENCHbenchBENCHbenchBENCHbench0001")];
    let store = Arc::new(SqliteKeyStore::open(&dir.path().join("k.sqlite3"), keys, Arc::new(SystemClock), None, 100)?);
    let outbound =
        Outbound::new(&["http://127.0.0.1:9".to_owned()], proxy_core::config::UpstreamTimeouts::HOST_RUNNER)?;
    let started = Instant::now();
    let component = ProxyComponent::new(host_runner::COMPONENT_PATH, Vec::new(), store, outbound, None)?;
    let compile = started.elapsed();
    let run = |n: usize| {
        let component = component.clone();
        async move {
            let t = Instant::now();
            for _ in 0..n {
                let mut s = component.new_store();
                component.pre().instantiate_async(&mut s).await.map_err(|e| anyhow::anyhow!("{e:#}"))?;
            }
            anyhow::Ok(t.elapsed())
        }
    };
    run(200).await?;
    let n = 5_000;
    let elapsed = run(n).await?;
    let size = std::fs::metadata(host_runner::COMPONENT_PATH)?.len();
    #[expect(clippy::print_stdout, reason = "a benchmark prints its figures")]
    {
        println!("component: {size} bytes, compiled in {:.0} ms", compile.as_secs_f64() * 1e3);
        println!("store + instantiation: {:.1} µs per request ({n} runs)", elapsed.as_secs_f64() * 1e6 / n as f64);
    }
    Ok(())
}
