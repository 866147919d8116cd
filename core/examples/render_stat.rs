//! Prints how long rendering `/stat` takes for 200 keys × 10 models.
//! `cargo run --release -p gemini-proxy-core --features test-support --example render_stat`

use proxy_core::UnixMillis;
use proxy_core::test_support::fake_keys;
use proxy_core::{KeyPool, Outcome, RateLimit, RateLimitScope};
use std::time::Instant;

fn main() {
    let mut p = KeyPool::new(fake_keys("RENDERkey", 200));
    let now = UnixMillis(1_800_000_000_000);
    let ids: Vec<_> = p.ids().cloned().collect();
    for (i, id) in ids.iter().enumerate() {
        for m in 0..10 {
            let model = format!("gemini-model-{m}");
            p.report(id, &model, &Outcome::Success, now);
            if (i + m) % 5 == 0 {
                let scope = if i % 2 == 0 { RateLimitScope::PerDay } else { RateLimitScope::PerMinute };
                p.report(
                    id,
                    &model,
                    &Outcome::RateLimited(RateLimit { scope, retry_after_ms: None, reason: "quota".into() }),
                    now,
                );
            }
        }
    }
    let snapshot = p.snapshot(now);
    let runs = 2_000;
    let mut bytes = 0;
    let t = Instant::now();
    for _ in 0..runs {
        bytes =
            std::hint::black_box(proxy_core::view::page::render(&snapshot, false, proxy_core::wire::http::Lang::En))
                .len();
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / runs as f64;
    let t = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(p.snapshot(now));
    }
    let snap = t.elapsed().as_secs_f64() * 1e6 / runs as f64;
    #[expect(clippy::print_stdout, reason = "a measurement prints its figures")]
    {
        println!("render /stat, 200 keys x 10 models: {per:.1} µs per page ({bytes} bytes); snapshot: {snap:.1} µs");
    }
}
