//! The /stat page and /stat.json with hostile model names and reasons: the
//! page escapes them (no markup of theirs survives), the JSON parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::test_support::fake_keys;
use proxy_core::{KeyPool, Outcome, RateLimit, RateLimitScope, UnixMillis};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut p = KeyPool::new(fake_keys("PAGE", 2));
    let ids: Vec<_> = p.ids().cloned().collect();
    let now = UnixMillis(1_800_000_000_000);
    let hostile: Vec<&str> = text.split('\n').take(8).collect();
    for (i, piece) in hostile.iter().enumerate() {
        let model = format!("zq{i}{piece}qz");
        let id = &ids[i % 2];
        p.report(id, &model, &Outcome::Success, now);
        let rl = RateLimit { scope: RateLimitScope::PerDay, retry_after_ms: None, reason: (*piece).to_owned() };
        p.report(id, &model, &Outcome::RateLimited(rl), now);
        p.report(id, &model, &Outcome::UpstreamError { status: 503, reason: (*piece).to_owned() }, now);
    }
    let snapshot = p.snapshot(now);
    for lang in [proxy_core::wire::http::Lang::En, proxy_core::wire::http::Lang::Zh] {
        let html = proxy_core::view::page::render(&snapshot, false, lang);
        assert_eq!(html.matches("<script>").count(), 1, "only the page's own script");
        for (i, piece) in hostile.iter().enumerate() {
            if piece.contains(['<', '>', '"', '\'', '&']) {
                assert!(!html.contains(&format!("zq{i}{piece}qz")), "unescaped model name: {piece:?}");
            }
        }
    }
    let json = snapshot.to_json().to_string();
    assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
});
