//! The Live API (a WebSocket) through either host: a text session on a
//! pool key counted under its key and model with Google's tokens, a
//! quota close failing over, the upgrade refused without the proxy key,
//! large frames intact.

use e2e::Target;
use fake_upstream::live_client::{self, BIDI, Ws, turn};
use futures_util::StreamExt;
use serde_json::{Value, json};

const MODEL: &str = "gemini-live-e2e";

async fn connect(t: &Target, key: Option<&str>) -> Result<Ws, u16> {
    let url = format!("{}{BIDI}", t.proxy.replacen("http://", "ws://", 1));
    let headers: Vec<(&str, &str)> = key.map(|k| ("x-goog-api-key", k)).into_iter().collect();
    live_client::connect(&url, &headers).await
}

async fn setup(ws: &mut Ws) -> Result<Value, (u16, String)> {
    live_client::setup(ws, MODEL, json!({})).await
}

async fn sessions(t: &Target) -> Vec<Value> {
    t.upstream_requests().await.into_iter().filter(|r| r["method"] == "WS").collect()
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn a_live_session_runs_on_a_pool_key_and_is_counted_with_its_tokens() {
    let t = Target::fresh_from_env().await;
    let mut ws = connect(&t, Some(&t.proxy_key)).await.expect("upgraded");
    assert_eq!(setup(&mut ws).await, Ok(json!({"setupComplete": {}})));
    let big = "x".repeat(100 * 1024);
    let (text, end) = turn(&mut ws, &big).await;
    assert_eq!(text, format!("Echo: {big}"), "a 100 KiB frame each way, intact");
    let prompt = end.pointer("/usageMetadata/promptTokenCount").and_then(Value::as_u64).expect("usage");
    ws.close(None).await.expect("close");
    while ws.next().await.is_some() {}
    let seen = sessions(&t).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["credentials"][0][0], "goog-api-key", "the key in a header: {}", seen[0]);
    assert!(seen[0]["query"].is_null(), "no key in the URL");
    t.assert_only_pool_keys_upstream().await;
    let key = seen[0]["credentials"][0][1].as_str().expect("key").to_owned();
    let stats = t.stats_when(|s| !t.key_row(s, &key)["models"][MODEL].is_null()).await;
    let cell = &t.key_row(&stats, &key)["models"][MODEL];
    assert_eq!(cell["requests"], 1, "{cell}");
    assert_eq!(cell["tokens"]["prompt"], prompt, "{cell}");
    // The access log (ACCESS_LOG=json) has the session's line: no key in it.
    let log = std::env::var("E2E_HOST_LOG").expect("E2E_HOST_LOG: the host's log, which scripts/e2e keeps");
    let mut line = None;
    for _ in 0..50 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        line = text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l.get(l.find('{')?..)?).ok())
            .find(|v| v["dialect"] == "live" && v["model"] == MODEL && v.get("client").is_none());
        if line.is_some() {
            assert!(!t.keys.iter().chain([&t.proxy_key]).any(|k| text.contains(k.as_str())), "a key in the log");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let line = line.expect("the session's access-log line");
    assert_eq!(line["status"], 101, "{line}");
    assert_eq!(line["tokens"]["prompt"], prompt, "{line}");
    assert!(line["attempts"][0]["key"].as_str().is_some_and(|k| k.starts_with("k-")), "{line}");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn a_live_session_on_a_used_up_key_fails_over_and_marks_it() {
    let t = Target::fresh_from_env().await;
    for k in &t.keys[..t.keys.len() - 1] {
        t.behave(k, "per-day").await;
    }
    let mut ws = connect(&t, Some(&t.proxy_key)).await.expect("upgraded");
    assert_eq!(setup(&mut ws).await, Ok(json!({"setupComplete": {}})));
    assert_eq!(turn(&mut ws, "hi").await.0, "Echo: hi");
    ws.close(None).await.expect("close");
    let seen = sessions(&t).await;
    let last = t.keys.last().expect("a key");
    assert_eq!(seen.last().map(|s| s["credentials"][0][1].clone()), Some(json!(last)));
    let tried: Vec<String> =
        seen.iter().map(|s| s["credentials"][0][1].as_str().unwrap_or_default().to_owned()).collect();
    let marked =
        |s: &Value| tried.iter().filter(|k| *k != last).all(|k| t.key_row(s, k)["models"][MODEL]["state"] == "cooling");
    let stats = t.stats_when(marked).await;
    assert!(marked(&stats), "{stats}");
    // Without the proxy key: refused at the upgrade, nothing upstream.
    t.fake("reset", json!({})).await;
    if !t.proxy_key.is_empty() {
        assert_eq!(connect(&t, None).await.err(), Some(401));
        assert!(t.upstream_requests().await.is_empty());
    }
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn a_client_over_its_quota_is_refused_at_setup_and_a_stranger_at_the_upgrade() {
    let t = Target::fresh_from_env().await;
    let name = format!("live-quota-{}", std::process::id());
    let (status, v) =
        t.admin(reqwest::Method::POST, "/admin/clients", Some(json!({"name": name, "daily_requests": 1}))).await;
    assert_eq!(status, 201, "{v}");
    let secret = v["secret"].as_str().expect("secret").to_owned();
    let id = v.pointer("/client/id").and_then(Value::as_str).expect("id").to_owned();
    // Its one request of the day: a session.
    let mut ws = connect(&t, Some(&secret)).await.expect("a client key is let in");
    assert_eq!(setup(&mut ws).await, Ok(json!({"setupComplete": {}})));
    ws.close(None).await.expect("close");
    while ws.next().await.is_some() {}
    // Counted (the Worker's report lands a moment later), then refused.
    let counted = |s: &Value| {
        s["clients"].as_array().into_iter().flatten().any(|c| c["id"] == id.as_str() && c["today"]["requests"] == 1)
    };
    let stats = t.stats_when(counted).await;
    assert!(counted(&stats), "{stats}");
    let mut ws = connect(&t, Some(&secret)).await.expect("upgraded");
    let (code, reason) = setup(&mut ws).await.expect_err("over its quota");
    assert_eq!(code, 1011, "{reason}");
    assert!(reason.contains(&name), "{reason}");
    assert_eq!(sessions(&t).await.len(), 1, "the refused session reached no key");
    // A key that is no client's: refused before the upgrade.
    assert_eq!(connect(&t, Some("AIzaSyE2EstrangerKEY00000000000000000000")).await.err(), Some(401));
    let (status, _) = t.admin(reqwest::Method::DELETE, &format!("/admin/clients/{id}"), None).await;
    assert_eq!(status, 200);
}
