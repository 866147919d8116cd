//! The request log (`GET /admin/requests`) against the real component, the
//! real SQLite file and the fake upstream.

use crate::harness::{ADMIN_KEY, Harness, PROXY_KEY, pool_keys};
use fake_upstream::Behavior;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

async fn logging_pool(keys: usize, vars: &[(&str, &str)]) -> Harness {
    let mut h = Harness::with(pool_keys(keys), Some(PROXY_KEY)).await;
    h.with_admin();
    h.vars.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    h.restart().await;
    h
}

/// The log's records for `query`, once `n` are there (a request's record
/// lands just after its answer).
async fn logged(h: &Harness, query: &str, n: usize) -> Vec<Value> {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, page) = h.admin(Method::GET, &format!("/admin/requests?{query}"), None).await;
        assert_eq!(status, 200, "{page}");
        if page["requests"].as_array().is_some_and(|r| r.len() >= n) {
            return page["requests"].as_array().cloned().unwrap_or_default();
        }
        last = page;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} records for {query:?}: {last}");
}

#[tokio::test]
async fn a_failed_request_is_found_with_its_attempts_and_reasons_and_kept_across_a_restart() {
    let mut h = logging_pool(2, &[]).await;
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    h.fake.set_default(Behavior::ServerError(503));
    let failed = h.generate("gemini-2.5-flash").await;
    assert!(failed.status().is_server_error(), "{}", failed.status());

    let records = logged(&h, "status=failed", 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r["model"], "gemini-2.5-flash");
    assert_eq!(r["dialect"], "gemini");
    assert_eq!(r["method"], "POST");
    assert_eq!(r["path"], "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(r["status"].as_u64(), Some(u64::from(failed.status().as_u16())));
    let id = r["request_id"].as_str().expect("a request id");
    assert_eq!(logged(&h, &format!("id={id}"), 1).await[0]["seq"], r["seq"]);
    let attempts = r["attempts"].as_array().unwrap_or_else(|| panic!("no attempts: {r}"));
    assert_eq!(attempts.len(), 2, "{r}");
    let mut keys: Vec<&str> = attempts.iter().map(|a| a["key"].as_str().expect("key id")).collect();
    keys.sort_unstable();
    let mut ids = vec![h.id_of(&h.keys[0]), h.id_of(&h.keys[1])];
    ids.sort_unstable();
    assert_eq!(keys, ids);
    for a in attempts {
        assert_eq!(a["outcome"], "upstream-error", "{a}");
        assert!(a["reason"].as_str().is_some_and(|why| why.starts_with("503")), "{a}");
    }
    assert!(r["error"].is_string() && r["reason"].is_string(), "{r}");
    assert!(r["at"].as_u64().is_some_and(|at| at > 1_700_000_000_000), "{r}");
    let (ttfb, ms) = (r["ttfb_ms"].as_u64().expect("ttfb"), r["ms"].as_u64().expect("ms"));
    assert!(ttfb <= ms, "{r}");

    // The other filters, and the one success.
    let ok = logged(&h, "status=2xx", 1).await;
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["attempts"][0]["outcome"], "success");
    assert!(ok[0]["tokens"].is_object(), "{}", ok[0]);
    let by_key = logged(&h, &format!("key={}", h.id_of(&h.keys[0])), 2).await;
    assert_eq!(by_key.len(), 2);
    assert!(logged(&h, "model=gemini-2.5-pro", 0).await.is_empty());
    let (status, _) = h.admin(Method::GET, "/admin/requests?status=6xx", None).await;
    assert_eq!(status, 400);

    // No secret in any record.
    let (_, all) = h.admin(Method::GET, "/admin/requests", None).await;
    let text = all.to_string();
    for secret in h.keys.iter().map(String::as_str).chain([PROXY_KEY, ADMIN_KEY]) {
        assert!(!text.contains(secret), "a secret in the log: {text}");
    }

    // The admin's only.
    let stranger = h.http.get(h.url("/admin/requests")).bearer_auth(PROXY_KEY).send().await.expect("sent");
    assert_eq!(stranger.status(), 401);

    // Kept across a restart (a real SQLite file, reopened), newer ones after.
    let seqs = |records: &[Value]| records.iter().map(|r| r["seq"].as_u64().expect("seq")).collect::<Vec<_>>();
    let before = seqs(&logged(&h, "", 2).await);
    h.restart().await;
    let after = seqs(&logged(&h, "", 2).await);
    assert_eq!(before, after);
    h.fake.set_default(Behavior::Ok);
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    let newest = seqs(&logged(&h, "", 3).await);
    assert!(newest[0] > before[0], "{newest:?} after {before:?}");
}

#[tokio::test]
async fn the_log_keeps_request_log_size_records_and_pages_with_a_cursor() {
    let mut h = logging_pool(1, &[("REQUEST_LOG_SIZE", "3")]).await;
    for _ in 0..5 {
        assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    }
    let all = logged(&h, "", 3).await;
    let seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, [5, 4, 3]);
    let (_, page) = h.admin(Method::GET, "/admin/requests?limit=2", None).await;
    assert_eq!(page["requests"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["size"], 3);
    let next = page["next"].as_str().expect("a cursor").to_owned();
    let (_, older) = h.admin(Method::GET, &format!("/admin/requests?limit=2&before={next}"), None).await;
    assert_eq!(older["requests"][0]["seq"], 3);
    assert!(older["next"].is_null(), "{older}");

    // The proxy's own pages are not in it.
    h.stats().await;
    h.restart().await;
    let kept = logged(&h, "", 3).await;
    assert_eq!(kept.len(), 3);
    assert!(kept.iter().all(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/v1beta/models/"))), "{kept:?}");
}
