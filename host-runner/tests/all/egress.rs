//! Outbound proxies: `UPSTREAM_PROXY` for every upstream call, a project's
//! own proxy set by the admin, a proxy's failure never held against the
//! key, and its password shown nowhere.

use crate::harness::{Harness, pool_keys};
use fake_upstream::proxies::{Kind, TestProxy};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "pr0xy-pAss-9Zq";

/// The fake upstream's `host:port`, as a tunnel's target.
fn fake_authority(h: &Harness) -> String {
    h.fake.origin().trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn upstream_proxy_carries_every_call_through_connect_with_its_login() {
    let proxy = TestProxy::start(Kind::Connect, Some(("me", PASSWORD))).await.expect("proxy");
    let mut h = Harness::new(2).await;
    h.vars.push(("UPSTREAM_PROXY".into(), proxy.url("http", Some(("me", PASSWORD)))));
    h.restart().await;
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    let r = h.openai(
        "/chat/completions",
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.await.status(), 200);
    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty(), "the calls went through the proxy");
    assert!(tunnels.iter().all(|t| t.admitted && t.target == fake_authority(&h)), "{tunnels:?}");
    assert_eq!(h.fake.requests().len(), 2);
    // A wrong password: the proxy refuses, the call fails over (to the
    // same proxy: a 502 that names the proxy, masked), no key is blamed.
    let wrong = TestProxy::start(Kind::Connect, Some(("me", "another"))).await.expect("proxy");
    h.vars.retain(|(k, _)| k != "UPSTREAM_PROXY");
    h.vars.push(("UPSTREAM_PROXY".into(), wrong.url("http", Some(("me", PASSWORD)))));
    h.restart().await;
    let r = h.generate("gemini-2.5-flash").await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.expect("body");
    // The caller hears that a proxy failed, not which one (the request
    // log names it, masked, for the admin).
    assert!(text.contains("an outbound proxy failed") && !text.contains("127.0.0.1"), "{text}");
    assert!(!text.contains(PASSWORD));
    let stats = h.stats().await;
    assert!(!stats.to_string().contains(PASSWORD));
    let errors: u64 = stats["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["models"]["gemini-2.5-flash"]["errors"].as_u64())
        .sum();
    assert_eq!(errors, 0, "a proxy's failure is no key's: {stats}");
}

#[tokio::test]
async fn a_projects_proxy_carries_its_keys_calls_and_a_dead_one_fails_over_unblamed() {
    let socks = TestProxy::start(Kind::Socks5, Some(("me", PASSWORD))).await.expect("socks");
    let keys = pool_keys(2);
    let mut h = Harness::with(keys.clone(), None).await;
    h.with_admin();
    h.restart().await;
    let (status, v) =
        h.admin(Method::PATCH, &format!("/admin/keys/{}", h.id_of(&keys[0])), Some(json!({"project": "p1"}))).await;
    assert_eq!(status, 200, "{v}");
    let url = socks.url("socks5h", Some(("me", PASSWORD)));
    let (status, v) = h.admin(Method::PUT, "/admin/proxies", Some(json!({"project": "p1", "proxy": url}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["projects"][0]["proxy"], format!("socks5h://me:***@127.0.0.1:{}", socks.port));
    assert!(!v.to_string().contains(PASSWORD));
    // Only p1's key goes through the SOCKS5 server.
    h.fake.set(&keys[1], fake_upstream::Behavior::ServerError(503));
    for _ in 0..2 {
        assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    }
    let through: Vec<String> = h.fake.requests().iter().map(|r| r.credentials[0].1.clone()).collect();
    let tunnels = socks.tunnels();
    let via_socks = through.iter().filter(|k| **k == keys[0]).count();
    assert!(via_socks >= 2, "{through:?}");
    assert_eq!(tunnels.iter().filter(|t| t.admitted && t.target == fake_authority(&h)).count(), tunnels.len());
    assert!(!tunnels.is_empty());
    // Kept across a restart, sealed: the file never holds the password.
    h.restart().await;
    let (_, v) = h.admin(Method::GET, "/admin/proxies", None).await;
    assert_eq!(v["projects"][0]["proxy"], format!("socks5h://me:***@127.0.0.1:{}", socks.port));
    let db = std::fs::read(&h.db).expect("db");
    assert!(!String::from_utf8_lossy(&db).contains(PASSWORD), "the password is sealed at rest");
    // A dead proxy: p1's key is passed over, the other key answers, and
    // p1's key has no error counted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let (status, _) = h
        .admin(
            Method::PUT,
            "/admin/proxies",
            Some(json!({"project": "p1", "proxy": format!("socks5://127.0.0.1:{closed}")})),
        )
        .await;
    assert_eq!(status, 200);
    h.fake.set(&keys[1], fake_upstream::Behavior::Ok);
    for _ in 0..3 {
        assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    }
    let stats = h.stats().await;
    let id = h.id_of(&keys[0]);
    let row = stats["keys"].as_array().and_then(|k| k.iter().find(|k| k["id"] == id.as_str())).expect("p1's key");
    assert_eq!(row["models"]["gemini-2.5-flash"]["errors"].as_u64().unwrap_or(0), 0, "{stats}");
    let (_, log) = h.admin(Method::GET, "/admin/requests?limit=3", None).await;
    assert!(log.to_string().contains("proxy-failed"), "the request log tells: {log}");
    assert!(!log.to_string().contains(PASSWORD));
    // Cleared: straight again.
    let (status, v) = h.admin(Method::PUT, "/admin/proxies", Some(json!({"project": "p1", "proxy": null}))).await;
    assert_eq!((status, v["projects"][0]["proxy"].clone()), (200, Value::Null));
}

#[tokio::test]
async fn a_live_session_goes_through_the_upstream_proxy_too() {
    use fake_upstream::live_client::{BIDI, connect, setup, turn};
    let proxy = TestProxy::start(Kind::Socks5, None).await.expect("socks");
    let mut h = Harness::with(pool_keys(1), Some(crate::harness::PROXY_KEY)).await;
    h.vars.push(("UPSTREAM_PROXY".into(), proxy.url("socks5", None)));
    h.restart().await;
    let url = h.url(BIDI).replacen("http://", "ws://", 1);
    let mut ws = connect(&url, &[("x-goog-api-key", crate::harness::PROXY_KEY)]).await.expect("upgraded");
    let model = "gemini-live-2.5-flash-preview";
    assert_eq!(setup(&mut ws, model, json!({})).await, Ok(json!({"setupComplete": {}})));
    assert_eq!(turn(&mut ws, "hello").await.0, "Echo: hello");
    let tunnels = proxy.tunnels();
    assert!(tunnels.iter().any(|t| t.target == fake_authority(&h)), "the session went through the proxy: {tunnels:?}");
}
