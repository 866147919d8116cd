//! Choosing a key (acquire + report success) with 10, 1,000 and 10,000
//! keys across 20 models, a third of the keys exhausted per model.
//! `cargo bench -p gemini-proxy-core --features test-support --bench key_choice`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use proxy_core::UnixMillis;
use proxy_core::test_support::fake_keys;
use proxy_core::{KeyPool, Outcome, RateLimit, RateLimitScope};
use std::hint::black_box;

const MODELS: usize = 20;

fn pool(keys: usize, now: UnixMillis) -> (KeyPool, Vec<String>) {
    let mut p = KeyPool::new(fake_keys("BENCHkey", keys));
    let models: Vec<String> = (0..MODELS).map(|m| format!("gemini-model-{m}")).collect();
    let ids: Vec<_> = p.ids().cloned().collect();
    let day =
        Outcome::RateLimited(RateLimit { scope: RateLimitScope::PerDay, retry_after_ms: None, reason: "daily".into() });
    for (m, model) in models.iter().enumerate() {
        for (i, id) in ids.iter().enumerate() {
            if (i + m) % 3 == 0 {
                p.report(id, model, &day, now);
            }
        }
    }
    (p, models)
}

fn key_choice(c: &mut Criterion) {
    let now = UnixMillis(1_800_000_000_000);
    let mut group = c.benchmark_group("acquire+report");
    for keys in [10, 1_000, 10_000] {
        let (mut p, models) = pool(keys, now);
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(keys), &keys, |b, _| {
            b.iter(|| {
                i = i.wrapping_add(1);
                let model = &models[i % MODELS];
                let lease = p.acquire(black_box(model), &[], now).expect("a usable key");
                black_box(p.report(&lease.id, model, &Outcome::Success, now));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, key_choice);
criterion_main!(benches);
