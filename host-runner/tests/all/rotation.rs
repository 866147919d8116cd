use crate::harness::Harness;
use fake_upstream::Behavior;
use host_runner::store::KeyBackend;
use proxy_core::wire::time::HOUR_MS;
use serde_json::{Value, json};

#[tokio::test]
async fn per_day_429_marks_the_key_until_pacific_midnight_and_retries() {
    let h = Harness::new(2).await;
    h.fake.set(&h.keys[0], Behavior::PerDay);
    for _ in 0..4 {
        assert_eq!(h.generate("gemini-2.5-pro").await.status(), 200);
    }
    let seen = h.keys_seen();
    assert_eq!(seen.iter().filter(|k| **k == h.keys[0]).count(), 1, "the exhausted key must not be tried again");
    let stats = h.stats().await;
    let text = stats.to_string();
    assert!(!text.contains(&h.keys[0]) && !text.contains(&h.keys[1]), "secrets in /stat.json");
    let cell = &stats["keys"][0]["models"]["gemini-2.5-pro"];
    assert_eq!(cell["state"], "exhausted");
    // Winter: the mark lasts until 08:00 UTC, not 07:00.
    assert_eq!(cell["until"], "2026-11-28T08:00:00Z");
    assert!(cell["reason"].as_str().is_some_and(|r| r.contains("exceeded your current quota")));
    // Other models still use the key.
    h.fake.set(&h.keys[0], Behavior::Ok);
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    assert!(h.keys_seen()[4..].contains(&h.keys[0]));
    // At 07:30 UTC the mark still holds; at 08:00 it expires by itself.
    h.clock.set(proxy_core::UnixMillis(crate::harness::start_time().0 + 21 * HOUR_MS + HOUR_MS / 2));
    let before = h.fake.requests().len();
    for _ in 0..2 {
        h.generate("gemini-2.5-pro").await;
    }
    assert!(!h.keys_seen()[before..].contains(&h.keys[0]));
    h.clock.advance(HOUR_MS / 2);
    let before = h.fake.requests().len();
    for _ in 0..2 {
        h.generate("gemini-2.5-pro").await;
    }
    assert!(h.keys_seen()[before..].contains(&h.keys[0]));
}

#[tokio::test]
async fn per_minute_429_cools_for_the_retry_delay() {
    let h = Harness::new(2).await;
    h.fake.set(&h.keys[0], Behavior::PerMinute(5));
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    let stats = h.stats().await;
    assert_eq!(stats["keys"][0]["models"]["gemini-2.5-flash"]["state"], "cooling");
    h.fake.set(&h.keys[0], Behavior::Ok);
    let before = h.fake.requests().len();
    h.generate("gemini-2.5-flash").await;
    h.generate("gemini-2.5-flash").await;
    assert!(!h.keys_seen()[before..].contains(&h.keys[0]), "cooling key used");
    h.clock.advance(5_000);
    let before = h.fake.requests().len();
    h.generate("gemini-2.5-flash").await;
    h.generate("gemini-2.5-flash").await;
    assert!(h.keys_seen()[before..].contains(&h.keys[0]), "cooled key not back");
}

#[tokio::test]
async fn invalid_and_suspended_keys_are_disabled_with_redacted_reasons() {
    let h = Harness::new(3).await;
    h.fake.set(&h.keys[0], Behavior::Invalid);
    h.fake.set(&h.keys[1], Behavior::Suspended);
    for _ in 0..5 {
        let r = h.openai("/v1/chat/completions", json!({"model": "gemini-2.5-flash", "messages": []})).await;
        assert_eq!(r.status(), 200);
    }
    let seen = h.keys_seen();
    assert_eq!(seen.iter().filter(|k| **k == h.keys[0]).count(), 1);
    assert_eq!(seen.iter().filter(|k| **k == h.keys[1]).count(), 1);
    // Disabled for every model.
    h.generate("gemini-2.5-pro").await;
    assert_eq!(h.keys_seen().last(), Some(&h.keys[2]));
    let stats = h.stats().await;
    let text = stats.to_string();
    for k in &h.keys {
        assert!(!text.contains(k.as_str()), "secret in /stat.json");
    }
    assert!(stats["keys"][0]["disabled"]["reason"].as_str().is_some_and(|r| r.contains("API key not valid")));
    assert!(stats["keys"][1]["disabled"]["reason"].as_str().is_some_and(|r| r.contains("suspended")));
    assert_eq!(stats["disabled_count"], 2);
}

#[tokio::test]
async fn server_errors_retry_on_another_key_and_never_disable() {
    let h = Harness::new(2).await;
    h.fake.set(&h.keys[0], Behavior::ServerError(503));
    for _ in 0..3 {
        assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    }
    let stats = h.stats().await;
    assert!(stats["keys"][0]["disabled"].is_null());
    assert!(stats["keys"][0]["models"]["gemini-2.5-flash"]["errors"].as_u64() >= Some(1));
    // Every key failing: a 502 in the caller's dialect.
    h.fake.set(&h.keys[1], Behavior::ServerError(500));
    let r = h.openai("/v1/chat/completions", json!({"model": "gemini-2.5-flash", "messages": []})).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "server_error");
}

#[tokio::test]
async fn all_keys_exhausted_answers_429_with_when() {
    let h = Harness::new(2).await;
    h.fake.set_default(Behavior::PerDay);
    let r = h.generate("gemini-2.5-pro").await;
    assert_eq!(r.status(), 429);
    let before = h.fake.requests().len();
    assert_eq!(before, 2);
    let r = h.generate("gemini-2.5-pro").await;
    assert_eq!(r.status(), 429);
    assert_eq!(h.fake.requests().len(), before, "no upstream call when every key is exhausted");
    let retry_after: u64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert_eq!(retry_after, 22 * 3600);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("2026-11-28T08:00:00Z")));
    let r = h.openai("/v1/chat/completions", json!({"model": "gemini-2.5-pro", "messages": []})).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.json::<Value>().await.expect("json")["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn retries_stop_after_five_keys() {
    let h = Harness::new(8).await;
    h.fake.set_default(Behavior::ServerError(503));
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 502);
    let seen = h.keys_seen();
    assert_eq!(seen.len(), 5);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5, "a key was tried twice");
}

#[tokio::test]
async fn caller_errors_are_relayed_and_leave_the_key_alone() {
    let h = Harness::new(2).await;
    h.fake.set_default(Behavior::Location);
    let r = h.generate("gemini-2.5-flash").await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["status"], "FAILED_PRECONDITION");
    assert_eq!(h.fake.requests().len(), 1, "a caller error is not retried");
    let stats = h.stats().await;
    assert!(stats["keys"].as_array().expect("keys").iter().all(|k| k["disabled"].is_null()));
}

#[tokio::test]
async fn reset_clears_marks_and_the_daily_job_keeps_disabled_keys() {
    let h = Harness::new(2).await;
    h.fake.set(&h.keys[0], Behavior::PerDay);
    h.fake.set(&h.keys[1], Behavior::Invalid);
    h.generate("gemini-2.5-pro").await;
    h.generate("gemini-2.5-pro").await;
    // The daily job at 07:00 UTC in winter: marks not yet expired stay, disabled keys stay.
    let store = h.server.as_ref().expect("server").store().clone();
    h.clock.set(proxy_core::UnixMillis(crate::harness::start_time().0 + 21 * HOUR_MS));
    store.daily_reset();
    let s = h.stats().await;
    assert_eq!(s["keys"][0]["models"]["gemini-2.5-pro"]["state"], "exhausted");
    assert_eq!(s["keys"][0]["models"]["gemini-2.5-pro"]["requests"], 0);
    assert!(!s["keys"][1]["disabled"].is_null());
    // A bare POST (what a cross-site form can send) is refused, even on an open proxy.
    let r = h.http.post(h.url("/stat/reset")).send().await.expect("reset");
    assert_eq!(r.status(), 403);
    // POST /stat/reset with a header credential clears everything.
    let r = h.http.post(h.url("/stat/reset")).bearer_auth("any").send().await.expect("reset");
    assert_eq!(r.status(), 200);
    let s = h.stats().await;
    assert!(s["keys"][0]["models"].as_object().is_some_and(|m| m.is_empty()));
    assert!(s["keys"][1]["disabled"].is_null());
    assert_eq!(h.http.get(h.url("/stat/reset")).send().await.expect("get").status(), 405);
}
