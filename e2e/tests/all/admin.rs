//! The admin API on both hosts. Each scenario leaves the pool as the runner
//! configured it (the four `API_KEYS` keys, enabled, without a project).

use e2e::Target;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// Fake run-time keys of both formats Google issues.
const NEW_AIZA: &str = "AIzaSyE2EruntimeADDEDkey0123456789abcd";
const NEW_AQ: &str = "AQ.Ab8RN6e2eRUNTIMEaddedKEYnewFORMAT0123456789";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn error_of(v: &Value) -> String {
    v["error"]["message"].as_str().unwrap_or_default().to_owned()
}

async fn remove(t: &Target, key: &str) {
    let id = t.key_id(key).await;
    let (status, v) = t.admin(Method::DELETE, &format!("/admin/keys/{id}"), None).await;
    assert_eq!(status, 200, "{v}");
}

async fn add(t: &Target, keys: &[&str]) -> Value {
    let (status, v) = t.admin(Method::POST, "/admin/keys", Some(json!({"keys": keys.join("\n")}))).await;
    assert_eq!(status, 200, "{v}");
    v
}

fn requests_of(stats: &Value, model: &str) -> u64 {
    stats["keys"].as_array().expect("keys").iter().filter_map(|k| k["models"][model]["requests"].as_u64()).sum()
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn keys_added_at_run_time_serve_at_once_and_the_store_holds_no_key() {
    let t = Target::fresh_from_env().await;
    let added = add(&t, &[NEW_AIZA, NEW_AQ, NEW_AIZA]).await;
    assert_eq!(added["added"].as_array().map(Vec::len), Some(2), "{added}");
    assert_eq!(added["key_count"], t.keys.len() + 2);
    assert!(!added.to_string().contains(NEW_AIZA) && !added.to_string().contains(NEW_AQ), "a secret in {added}");
    for _ in 0..10 {
        assert_eq!(t.generate("e2e-admin-add").await.status(), 200);
    }
    let seen = t.keys_seen().await;
    assert!(seen.iter().any(|k| k == NEW_AIZA) && seen.iter().any(|k| k == NEW_AQ), "{seen:?}");

    // The store, every file read byte for byte: no key of either shape, no
    // tail of one, not the admin key, not the secret.
    let files = t.store_files();
    assert!(!files.is_empty(), "no key store under {}", t.store_dir.display());
    let mut secrets: Vec<&str> = vec![NEW_AIZA, NEW_AQ, &t.admin_key];
    secrets.extend(t.keys.iter().map(String::as_str));
    for (path, bytes) in &files {
        for s in &secrets {
            assert!(!contains(bytes, s), "a key in {}", path.display());
            assert!(!contains(bytes, &s[s.len() - 16..]), "a key's tail in {}", path.display());
        }
        assert!(!contains(bytes, "e2e-key-encryption-secret"), "the secret in {}", path.display());
    }
    remove(&t, NEW_AIZA).await;
    remove(&t, NEW_AQ).await;
    let before = t.upstream_requests().await.len();
    for _ in 0..6 {
        assert_eq!(t.generate("e2e-admin-add").await.status(), 200);
    }
    let seen = t.keys_seen().await;
    assert!(seen[before..].iter().all(|k| t.keys.contains(k)), "a removed key served: {seen:?}");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn removing_a_key_during_traffic_loses_no_request_and_no_count() {
    let t = Target::fresh_from_env().await;
    let model = "e2e-admin-remove";
    // The model tracked first (an accepted answer), so that its calls are
    // counted under its name.
    assert_eq!(t.generate(model).await.status(), 200);
    t.behave("*", "slow:400").await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let t = t.clone();
        calls.spawn(async move { t.generate(model).await.status().as_u16() });
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let gone = t.keys[0].clone();
    let id = t.key_id(&gone).await;
    let (status, v) = t.admin(Method::DELETE, &format!("/admin/keys/{id}"), None).await;
    assert_eq!((status, v["from_api_keys"].as_bool()), (200, Some(true)), "{v}");
    while let Some(done) = calls.join_next().await {
        assert_eq!(done.expect("task"), 200, "a request lost to the removal");
    }
    t.behave("*", "ok").await;
    let before = t.upstream_requests().await.len();
    for _ in 0..4 {
        assert_eq!(t.generate(model).await.status(), 200);
    }
    assert!(!t.keys_seen().await[before..].contains(&gone), "a removed key served");

    let sent = t.upstream_requests().await.len() as u64;
    let stats = t.stats_when(|s| requests_of(s, model) == sent).await;
    assert_eq!(requests_of(&stats, model), sent, "every upstream call counted: {stats}");
    let row = stats["keys"].as_array().expect("keys").iter().find(|k| k["id"] == id.as_str()).cloned();
    assert_eq!(row.expect("the removed key is shown with its counts")["removed"], true);

    // Added again, it serves again.
    let back = add(&t, &[&gone]).await;
    assert_eq!(back["key_count"], t.keys.len(), "{back}");
    let (_, list) = t.admin(Method::GET, "/admin/keys", None).await;
    assert!(list["keys"].as_array().expect("keys").iter().any(|k| k["id"] == id.as_str()), "{list}");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn a_per_project_429_sends_the_next_attempt_to_another_project() {
    let t = Target::fresh_from_env().await;
    let mut ids = Vec::new();
    for (key, project) in t.keys.iter().zip(["alpha", "alpha", "beta", "beta"]) {
        let id = t.key_id(key).await;
        let (status, v) = t.admin(Method::PATCH, &format!("/admin/keys/{id}"), Some(json!({"project": project}))).await;
        assert_eq!((status, v["project"].as_str()), (200, Some(project)), "{v}");
        ids.push(id);
    }
    let stats = t.stats().await;
    assert_eq!(t.key_row(&stats, &t.keys[2])["project"], "beta", "projects in /stat.json: {stats}");
    t.behave(&t.keys[0], "per-minute:600").await;
    assert_eq!(t.generate("e2e-project").await.status(), 200);
    assert_eq!(t.keys_seen().await, [t.keys[0].clone(), t.keys[2].clone()], "the retry stayed in project alpha");
    for _ in 0..3 {
        assert_eq!(t.generate("e2e-project").await.status(), 200);
    }
    assert!(!t.keys_seen().await.contains(&t.keys[1]), "a key of the cooled project served");
    let stats = t.stats().await;
    let cell = &t.key_row(&stats, &t.keys[1])["models"]["e2e-project"];
    assert_eq!(cell["state"], "cooling", "{stats}");
    assert!(cell["reason"].as_str().is_some_and(|r| r.starts_with("project alpha:")), "{stats}");
    for id in ids {
        let (status, v) = t.admin(Method::PATCH, &format!("/admin/keys/{id}"), Some(json!({"project": null}))).await;
        assert_eq!((status, v["project"].is_null()), (200, true), "{v}");
    }
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn checks_classify_dead_keys_and_disable_them() {
    let t = Target::fresh_from_env().await;
    let keys: Vec<String> = (0..4).map(|i| format!("AIzaSyE2EcheckedKEY000000000000000000c{i}")).collect();
    let kinds = [("leaked", "leaked"), ("wrong-type", "wrong-key-type"), ("invalid", "invalid"), ("ok", "works")];
    add(&t, &keys.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let mut ids = Vec::new();
    for (key, (behavior, _)) in keys.iter().zip(kinds) {
        t.behave(key, behavior).await;
        ids.push(t.key_id(key).await);
    }
    let (status, checked) = t.admin(Method::POST, "/admin/keys/check", Some(json!({"ids": ids}))).await;
    assert_eq!(status, 200, "{checked}");
    assert!(!checked.to_string().contains("AIzaSyE2E"), "a secret in {checked}");
    for (id, (_, want)) in ids.iter().zip(kinds) {
        let got = checked["checked"].as_array().expect("checked").iter().find(|c| c["id"] == id.as_str());
        assert_eq!(got.map(|c| c["status"].clone()), Some(json!(want)), "{checked}");
    }
    let reqs = t.upstream_requests().await;
    assert_eq!(reqs.len(), 4, "one call per key");
    assert!(reqs.iter().all(|r| r["method"] == "GET" && r["path"] == "/v1beta/models"), "checks are model lists");
    let stats = t.stats().await;
    for (key, (_, want)) in keys.iter().zip(kinds) {
        let row = t.key_row(&stats, key);
        assert_eq!(row["check"]["status"], want, "the check on /stat.json: {row}");
        assert_eq!(row["disabled"].is_null(), want == "works", "{row}");
    }
    for key in &keys {
        remove(&t, key).await;
    }
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn bad_admin_calls_get_clear_answers_and_lose_nothing() {
    let t = Target::fresh_from_env().await;
    for auth in ["", "AQ.notTHEadminKEY0123456789abcdefgh", t.proxy_key.as_str()] {
        let r = t.http.get(format!("{}/admin/keys", t.proxy)).bearer_auth(auth).send().await.expect("request");
        assert_eq!(r.status(), 401, "admin key {auth:?}");
        let v: Value = r.json().await.expect("a JSON error");
        assert!(error_of(&v).contains("ADMIN_API_KEY"), "{v}");
    }
    let r = t
        .http
        .post(format!("{}/admin/keys", t.proxy))
        .bearer_auth(&t.admin_key)
        .body("{\"keys\": [\"AIza")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("a JSON error");
    assert!(error_of(&v).contains("not valid JSON"), "{v}");
    let (status, v) = t.admin(Method::POST, "/admin/keys", Some(json!({"keys": {"a": 1}}))).await;
    assert_eq!(status, 400, "{v}");

    // A key already present is reported so, and changes nothing.
    let dup = add(&t, &[&t.keys[1]]).await;
    assert_eq!(
        (dup["added"].as_array().map(Vec::len), dup["already_present"].as_array().map(Vec::len)),
        (Some(0), Some(1))
    );
    assert_eq!(dup["key_count"], t.keys.len());
    let (status, _) = t.admin(Method::DELETE, "/admin/keys/k-doesnotexist", None).await;
    assert_eq!(status, 404);

    // The last key stays.
    for key in &t.keys[1..] {
        remove(&t, key).await;
    }
    let last = t.key_id(&t.keys[0]).await;
    let (status, v) = t.admin(Method::DELETE, &format!("/admin/keys/{last}"), None).await;
    assert_eq!(status, 409, "{v}");
    assert!(error_of(&v).contains("last key"), "{v}");
    assert_eq!(t.generate("e2e-admin-bad").await.status(), 200);
    let others: Vec<&str> = t.keys[1..].iter().map(String::as_str).collect();
    let back = add(&t, &others).await;
    assert_eq!(back["key_count"], t.keys.len(), "{back}");
    let (_, list) = t.admin(Method::GET, "/admin/keys", None).await;
    assert_eq!(list["keys"].as_array().map(Vec::len), Some(t.keys.len()), "{list}");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn model_aliases_set_at_run_time_hold_for_every_dialect_and_are_stored() {
    let t = Target::fresh_from_env().await;
    let table = "e2e-alias-model=gemini-2.5-flash-lite\ne2e-alias-*=models/gemini-2.5-flash";
    let (status, set) = t.admin(Method::PUT, "/admin/aliases", Some(json!({ "aliases": table }))).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["aliases"].as_array().map(Vec::len), Some(2), "{set}");

    // Every answer names the model as the client asked for it.
    let native = t.generate("e2e-alias-model").await;
    assert_eq!(native.status(), 200);
    assert_eq!(native.json::<Value>().await.expect("json")["modelVersion"], "e2e-alias-model");
    let chat = t.chat("e2e-alias-chat").await;
    assert_eq!(chat.status(), 200);
    assert_eq!(chat.json::<Value>().await.expect("json")["model"], "e2e-alias-chat");
    let messages = t
        .http
        .post(format!("{}/v1/messages", t.proxy))
        .header("x-api-key", &t.proxy_key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "e2e-alias-claude", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("messages");
    assert_eq!(messages.status(), 200);
    let answer: Value = messages.json().await.expect("json");
    assert_eq!(answer["model"], "e2e-alias-claude", "the answer names the model asked for");
    let upstream = t.upstream_requests().await;
    let paths: Vec<&str> = upstream.iter().filter_map(|r| r["path"].as_str()).collect();
    assert!(paths[0].ends_with("/models/gemini-2.5-flash-lite:generateContent"), "{paths:?}");
    assert_eq!(upstream[1]["model"], "gemini-2.5-flash", "{}", upstream[1]);
    assert!(paths[2].ends_with("/models/gemini-2.5-flash:generateContent"), "{paths:?}");
    t.assert_only_pool_keys_upstream().await;
    let stats = t.stats_when(|s| requests_of(s, "gemini-2.5-flash") >= 2).await;
    assert_eq!(requests_of(&stats, "gemini-2.5-flash-lite"), 1, "{stats}");
    assert_eq!(requests_of(&stats, "gemini-2.5-flash"), 2, "{stats}");
    assert!(!stats.to_string().contains("e2e-alias"), "counted under an alias: {stats}");

    // Kept by the store (SQLite, the Durable Object's storage).
    let stored = t.store_files().iter().any(|(_, bytes)| contains(bytes, "e2e-alias-model"));
    assert!(stored, "the aliases are not in the key store under {}", t.store_dir.display());

    // Cleared: the name goes to Google as it is.
    let (status, cleared) = t.admin(Method::PUT, "/admin/aliases", Some(json!({ "aliases": [] }))).await;
    assert_eq!(status, 200, "{cleared}");
    let (_, listed) = t.admin(Method::GET, "/admin/aliases", None).await;
    assert_eq!(listed["aliases"], json!([]), "{listed}");
    t.fake("reset", json!({})).await;
    t.generate("e2e-alias-model").await;
    let upstream = t.upstream_requests().await;
    assert!(upstream[0]["path"].as_str().is_some_and(|p| p.ends_with("/models/e2e-alias-model:generateContent")));
}

/// The request log's records for `query`, once `n` are there (a record
/// lands after its answer; on the Worker with the isolate's next key-store
/// request, or a second later).
async fn logged(t: &Target, query: &str, n: usize) -> Vec<Value> {
    let mut last = Value::Null;
    for _ in 0..60 {
        let (status, page) = t.admin(Method::GET, &format!("/admin/requests?{query}"), None).await;
        assert_eq!(status, 200, "{page}");
        if page["requests"].as_array().is_some_and(|r| r.len() >= n) {
            return page["requests"].as_array().cloned().unwrap_or_default();
        }
        last = page;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} records for {query:?}: {last}");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn a_failed_request_is_found_in_the_request_log_with_its_attempts_and_reasons() {
    let t = Target::fresh_from_env().await;
    let model = "e2e-request-log";
    assert_eq!(t.generate(model).await.status(), 200);
    t.behave("*", "5xx:503").await;
    let failed = t.generate(model).await;
    assert!(failed.status().is_server_error(), "{}", failed.status());
    t.behave("*", "ok").await;

    let records = logged(&t, &format!("model={model}&status=5xx"), 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!((r["method"].as_str(), r["dialect"].as_str()), (Some("POST"), Some("gemini")), "{r}");
    assert_eq!(r["path"], format!("/v1beta/models/{model}:generateContent"));
    assert_eq!(r["status"].as_u64(), Some(u64::from(failed.status().as_u16())));
    assert!(r["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{r}");
    let attempts = r["attempts"].as_array().unwrap_or_else(|| panic!("no attempts: {r}"));
    assert!(attempts.len() >= 2, "a failover on every key: {r}");
    let mut ids = Vec::new();
    for key in &t.keys {
        ids.push(t.key_id(key).await);
    }
    for a in attempts {
        assert!(ids.iter().any(|id| a["key"] == id.as_str()), "an attempt by a pool key's id: {a}");
        assert_eq!(a["outcome"], "upstream-error", "{a}");
        assert!(a["reason"].as_str().is_some_and(|why| why.starts_with("503")), "{a}");
    }
    assert!(r["error"].is_string() && r["reason"].is_string(), "{r}");
    assert!(r["ms"].as_u64().is_some() && r["at"].as_u64().is_some_and(|at| at > 1_700_000_000_000), "{r}");
    // The success before it, by the same filters' other class.
    let ok = logged(&t, &format!("model={model}&status=2xx"), 1).await;
    assert_eq!(ok[0]["attempts"][0]["outcome"], "success", "{ok:?}");
    let by_key = logged(&t, &format!("model={model}&key={}", attempts[0]["key"].as_str().unwrap_or_default()), 1).await;
    assert!(by_key.iter().any(|x| x["seq"] == r["seq"]), "{by_key:?}");
    let (status, v) = t.admin(Method::GET, "/admin/requests?status=6xx", None).await;
    assert_eq!(status, 400, "{v}");

    // No secret in any record; the admin's only.
    let (_, all) = t.admin(Method::GET, "/admin/requests?limit=200", None).await;
    let text = all.to_string();
    for secret in t.keys.iter().chain([&t.proxy_key, &t.admin_key]).filter(|s| !s.is_empty()) {
        assert!(!text.contains(secret.as_str()), "a secret in the request log");
    }
    let stranger = t.http.get(format!("{}/admin/requests", t.proxy)).send().await.expect("sent");
    assert_eq!(stranger.status(), 401);
}

/// A project's outbound proxy: on host-runner its keys' calls go through
/// it (a small CONNECT proxy this scenario starts, whose password shows
/// nowhere); the Worker, whose calls leave from Cloudflare, refuses one.
#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn a_projects_outbound_proxy_carries_its_keys_calls_on_host_runner_and_is_refused_on_the_worker() {
    use fake_upstream::proxies::{Kind, TestProxy};
    const PASSWORD: &str = "e2e-Pr0xy-pw-7Kq";
    let t = Target::fresh_from_env().await;
    let proxy = TestProxy::start(Kind::Connect, Some(("e2e", PASSWORD))).await.expect("proxy");
    let id = t.key_id(&t.keys[0]).await;
    let (status, _) = t.admin(Method::PATCH, &format!("/admin/keys/{id}"), Some(json!({"project": "proxied"}))).await;
    assert_eq!(status, 200);
    let body = json!({"project": "proxied", "proxy": proxy.url("http", Some(("e2e", PASSWORD)))});
    let (status, v) = t.admin(Method::PUT, "/admin/proxies", Some(body)).await;
    if std::env::var("E2E_HOST").as_deref() == Ok("wrangler") {
        assert_eq!(status, 400, "{v}");
        assert!(error_of(&v).contains("host-runner"), "{v}");
    } else {
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["projects"][0]["proxy"], format!("http://e2e:***@127.0.0.1:{}", proxy.port), "{v}");
        for k in &t.keys[1..] {
            t.behave(k, "5xx:503").await;
        }
        assert_eq!(t.generate("e2e-proxied").await.status(), 200);
        assert_eq!(t.keys_seen().await.last(), Some(&t.keys[0]));
        assert!(proxy.tunnels().iter().any(|tunnel| tunnel.admitted), "the call went through the proxy");
        let (_, listed) = t.admin(Method::GET, "/admin/proxies", None).await;
        let stats = t.stats().await;
        assert!(!listed.to_string().contains(PASSWORD) && !stats.to_string().contains(PASSWORD));
        let (status, _) =
            t.admin(Method::PUT, "/admin/proxies", Some(json!({"project": "proxied", "proxy": null}))).await;
        assert_eq!(status, 200);
    }
    let (status, _) = t.admin(Method::PATCH, &format!("/admin/keys/{id}"), Some(json!({"project": null}))).await;
    assert_eq!(status, 200);
    let log = std::fs::read(std::env::var("E2E_HOST_LOG").expect("the host's log")).unwrap_or_default();
    assert!(!contains(&log, PASSWORD), "the password in the host's log");
}
