//! The Live API through host-runner: real WebSocket sessions (the host's
//! native relay, core's session driver) against the fake upstream's Live
//! protocol, the key store in its real SQLite file.

use crate::harness::{Harness, PROXY_KEY, pool_keys};
use fake_upstream::live_client::{self, BIDI, CONSTRAINED, Ws, connect, next, turn};
use fake_upstream::{Behavior, Mechanism};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const MODEL: &str = "gemini-live-2.5-flash-preview";

fn ws_url(h: &Harness, path: &str) -> String {
    h.url(path).replacen("http://", "ws://", 1)
}

async fn setup(ws: &mut Ws, extra: Value) -> Result<Value, (u16, String)> {
    live_client::setup(ws, MODEL, extra).await
}

fn live_sessions(h: &Harness) -> Vec<fake_upstream::Recorded> {
    h.fake.requests().into_iter().filter(|r| r.method == "WS").collect()
}

#[tokio::test]
async fn a_text_session_runs_on_a_pool_key_and_is_counted_with_its_tokens() {
    let h = Harness::with(pool_keys(2), Some(PROXY_KEY)).await;
    let mut ws = connect(&ws_url(&h, BIDI), &[("x-goog-api-key", PROXY_KEY)]).await.expect("upgraded");
    assert_eq!(setup(&mut ws, json!({})).await, Ok(json!({"setupComplete": {}})));
    let (text, end) = turn(&mut ws, "hello").await;
    assert_eq!(text, "Echo: hello");
    let (text2, end2) = turn(&mut ws, "again").await;
    assert_eq!(text2, "Echo: again");
    ws.close(None).await.expect("close");
    // The proxy answers the close (a clean end, not a dropped connection).
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await.expect("in time");
    assert!(matches!(answer, Some(Ok(Message::Close(_)))), "{answer:?}");
    while ws.next().await.is_some() {}
    let sessions = live_sessions(&h);
    assert_eq!(sessions.len(), 1);
    assert!(h.keys.contains(&sessions[0].key().expect("one credential").to_owned()));
    assert_eq!(sessions[0].credentials[0].0, Mechanism::GoogApiKey, "the key in a header");
    assert!(sessions[0].query.is_none(), "never a key in the URL");
    // Counted once the session ended: one call, the tokens Google reported.
    let n = |v: &Value, k: &str| v.pointer(&format!("/usageMetadata/{k}")).and_then(Value::as_u64).expect("count");
    let prompt = n(&end, "promptTokenCount") + n(&end2, "promptTokenCount");
    let output = n(&end, "responseTokenCount") + n(&end2, "responseTokenCount");
    let mut counted = Value::Null;
    for _ in 0..50 {
        let stats = h.stats().await;
        let used = stats["keys"].as_array().expect("keys").iter().find(|k| !k["models"][MODEL].is_null()).cloned();
        if let Some(k) = used {
            counted = k["models"][MODEL].clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(counted["requests"], 1, "{counted}");
    assert_eq!(counted["tokens"]["prompt"], prompt, "{counted}");
    assert_eq!(counted["tokens"]["output"], output, "{counted}");
}

#[tokio::test]
async fn without_the_proxy_key_the_upgrade_is_refused_and_nothing_reaches_google() {
    let h = Harness::with(pool_keys(2), Some(PROXY_KEY)).await;
    assert_eq!(connect(&ws_url(&h, BIDI), &[]).await.err(), Some(401));
    // A key that is no client's either: refused before the upgrade too.
    let stranger = [("x-goog-api-key", "AIzaSyNOTthePROXYkey00000000000000000")];
    assert_eq!(connect(&ws_url(&h, BIDI), &stranger).await.err(), Some(401));
    assert!(h.fake.requests().is_empty(), "nothing reached the upstream");
    // A plain GET of the path is no session.
    let r = h.http.get(h.url(BIDI)).header("x-goog-api-key", PROXY_KEY).send().await.expect("get");
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_used_up_key_is_marked_and_the_session_fails_over() {
    let h = Harness::with(pool_keys(3), Some(PROXY_KEY)).await;
    h.fake.set(&h.keys[0], Behavior::PerDay);
    h.fake.set(&h.keys[1], Behavior::PerDay);
    let mut ws = connect(&ws_url(&h, &format!("{BIDI}?key={PROXY_KEY}")), &[]).await.expect("upgraded");
    assert_eq!(setup(&mut ws, json!({})).await, Ok(json!({"setupComplete": {}})));
    assert_eq!(turn(&mut ws, "hi").await.0, "Echo: hi");
    let sessions = live_sessions(&h);
    assert_eq!(sessions.last().and_then(|s| s.key()), Some(h.keys[2].as_str()));
    assert!(sessions.len() <= 3);
    let stats = h.stats().await;
    for k in &stats["keys"].as_array().expect("keys")[..2] {
        let tried = sessions.iter().any(|s| h.id_of(s.key().expect("key")) == k["id"].as_str().unwrap_or_default());
        if tried {
            let cell = &k["models"][MODEL];
            assert_eq!(cell["state"], "cooling", "{cell}");
            assert!(cell["reason"].as_str().is_some_and(|r| r.contains("exceeded your current quota")), "{cell}");
        }
    }
    // Every key used up: the client hears it as Google would say it.
    h.fake.set(&h.keys[2], Behavior::PerDay);
    let mut ws = connect(&ws_url(&h, BIDI), &[("x-goog-api-key", PROXY_KEY)]).await.expect("upgraded");
    let (code, reason) = setup(&mut ws, json!({})).await.expect_err("no key left");
    assert_eq!(code, 1011);
    assert!(reason.len() <= 123 && !reason.contains("AIza"), "{reason}");
}

#[tokio::test]
async fn a_dead_key_is_disabled_on_its_check_and_a_bad_model_reaches_the_client() {
    let h = Harness::with(pool_keys(2), Some(PROXY_KEY)).await;
    h.fake.set(&h.keys[0], Behavior::Invalid);
    for _ in 0..2 {
        let mut ws = connect(&ws_url(&h, BIDI), &[("x-goog-api-key", PROXY_KEY)]).await.expect("upgraded");
        assert_eq!(setup(&mut ws, json!({})).await, Ok(json!({"setupComplete": {}})));
    }
    let stats = h.stats().await;
    let dead = stats["keys"].as_array().expect("keys").iter().find(|k| k["id"] == h.id_of(&h.keys[0])).cloned();
    assert!(dead.is_some_and(|k| k["disabled"]["reason"].as_str().is_some_and(|r| r.contains("API key not valid"))));
    let mut ws = connect(&ws_url(&h, BIDI), &[("x-goog-api-key", PROXY_KEY)]).await.expect("upgraded");
    let (code, reason) = setup(&mut ws, json!({"model": "models/gemini-made-up-live"})).await.expect_err("no model");
    assert_eq!(code, 1008);
    assert!(reason.contains("not found"), "{reason}");
    let stats = h.stats().await;
    assert!(stats["keys"].as_array().expect("keys").iter().filter(|k| k["disabled"].is_null()).count() == 1);
}

#[tokio::test]
async fn large_frames_pass_intact_and_a_resumed_session_goes_back_to_its_key() {
    let h = Harness::with(pool_keys(4), Some(PROXY_KEY)).await;
    let mut ws = connect(&ws_url(&h, BIDI), &[("x-goog-api-key", PROXY_KEY)]).await.expect("upgraded");
    assert!(setup(&mut ws, json!({"sessionResumption": {}})).await.is_ok());
    let big: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    assert_eq!(turn(&mut ws, &big).await.0, format!("Echo: {big}"), "200 KB each way, intact");
    let update = next(&mut ws).await.expect("a handle");
    let handle =
        update.pointer("/sessionResumptionUpdate/newHandle").and_then(Value::as_str).expect("handle").to_owned();
    // Audio chunks, binary-safe base64, each echoed.
    let chunk = "AAECAwQF".repeat(400);
    for _ in 0..20 {
        let m = json!({"realtimeInput": {"audio": {"data": chunk, "mimeType": "audio/pcm;rate=16000"}}});
        ws.send(Message::text(m.to_string())).await.expect("send audio");
        let echo = next(&mut ws).await.expect("echo");
        assert_eq!(echo.pointer("/serverContent/modelTurn/parts/0/inlineData/data"), Some(&json!(chunk)));
    }
    ws.close(None).await.expect("close");
    while ws.next().await.is_some() {}
    let first_key = live_sessions(&h)[0].key().expect("key").to_owned();
    // Resumed (many times, so that a random key would be caught): always its key.
    for _ in 0..6 {
        let mut ws = connect(&ws_url(&h, BIDI), &[("x-goog-api-key", PROXY_KEY)]).await.expect("upgraded");
        let resumed = setup(&mut ws, json!({"sessionResumption": {"handle": handle}})).await;
        assert_eq!(resumed, Ok(json!({"setupComplete": {}})));
        ws.close(None).await.expect("close");
    }
    assert!(live_sessions(&h).iter().all(|s| s.key() == Some(first_key.as_str())));
}

#[tokio::test]
async fn a_client_over_its_quota_is_refused_at_setup_and_a_minted_token_opens_a_constrained_session() {
    let mut h = Harness::with(pool_keys(3), Some(PROXY_KEY)).await;
    h.with_admin();
    h.restart().await;
    let (status, v) =
        h.admin(Method::POST, "/admin/clients", Some(json!({"name": "voice-app", "daily_requests": 2}))).await;
    assert_eq!(status, 201, "{v}");
    let secret = v["secret"].as_str().expect("secret").to_owned();
    // A token minted through the proxy by the client, on a pool key.
    let r = h
        .http
        .post(h.url("/v1alpha/auth_tokens"))
        .header("x-goog-api-key", &secret)
        .json(&json!({"uses": 1}))
        .send()
        .await
        .expect("mint");
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.expect("json")["name"].as_str().expect("name").to_owned();
    let minter = h.fake.requests().last().and_then(|r| r.key().map(str::to_owned)).expect("minted on a key");
    let url = format!("{}?access_token={token}", ws_url(&h, CONSTRAINED));
    let mut ws = connect(&url, &[]).await.expect("the token is the authority");
    assert_eq!(setup(&mut ws, json!({})).await, Ok(json!({"setupComplete": {}})));
    ws.close(None).await.expect("close");
    while ws.next().await.is_some() {}
    let session = live_sessions(&h).pop().expect("a session");
    assert_eq!(session.credentials, vec![(Mechanism::AccessToken, token.clone())], "the token as is, no pool key");
    assert!(session.path.ends_with("BidiGenerateContentConstrained"));
    // Counted against the key that minted the token.
    let mut cell = Value::Null;
    for _ in 0..50 {
        let stats = h.stats().await;
        let keys = stats["keys"].as_array().expect("keys").clone();
        cell =
            keys.iter().find(|k| k["id"] == h.id_of(&minter)).map(|k| k["models"][MODEL].clone()).unwrap_or_default();
        if !cell.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(cell["requests"], 1, "{cell}");
    // The client's two requests of the day are used (the mint, the session).
    let mut ws = connect(&ws_url(&h, BIDI), &[("x-goog-api-key", &secret)]).await.expect("upgraded");
    let (code, reason) = setup(&mut ws, json!({})).await.expect_err("over its quota");
    assert_eq!(code, 1011);
    assert!(reason.contains("voice-app"), "{reason}");
    // An unknown token on a keyed proxy: refused, nothing sent.
    let before = live_sessions(&h).len();
    let unknown = connect(&format!("{}?access_token=auth_tokens/nope", ws_url(&h, CONSTRAINED)), &[]).await;
    assert_eq!(unknown.err(), Some(401));
    assert_eq!(live_sessions(&h).len(), before);
}

#[tokio::test]
async fn over_tls_a_wss_client_holds_a_session() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let mut h = Harness::with(pool_keys(1), Some(PROXY_KEY)).await;
    h.tls = Some(host_runner::tls::server_config(&dir.join("cert.pem"), &dir.join("key.pem")).expect("tls"));
    h.restart().await;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(dir.join("cert.pem")).expect("cert");
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("cert")).expect("root");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = h.url(BIDI).replacen("http://127.0.0.1", "wss://localhost", 1);
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert("x-goog-api-key", PROXY_KEY.parse().expect("header"));
    let connector = tokio_tungstenite::Connector::Rustls(Arc::new(tls));
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(connector)).await.expect("wss");
    assert_eq!(setup(&mut ws, json!({})).await, Ok(json!({"setupComplete": {}})));
    assert_eq!(turn(&mut ws, "secure").await.0, "Echo: secure");
    // Plain HTTP on the TLS port is no way in.
    let plain = h.http.get(h.url("/v1beta/models")).bearer_auth(PROXY_KEY).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));
}
