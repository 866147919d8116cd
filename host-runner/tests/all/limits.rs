//! Limits under abuse and upstream faults: oversized heads, silent and
//! excess connections, hung upstreams, invented model names.

use crate::harness::Harness;
use fake_upstream::Behavior;
use host_runner::conn::ConnectionLimits;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn assert_no_internals(body: &str) {
    for internal in ["wasm", "backtrace", "wasmtime", "panicked", "component"] {
        assert!(!body.contains(internal), "internals ({internal}) in an answer: {body}");
    }
}

#[tokio::test]
async fn oversized_heads_get_431_or_414_in_the_callers_dialect() {
    let h = Harness::new(1).await;
    let body = json!({"contents": []});
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    // One 200 KB header.
    let r = h
        .http
        .post(h.url(path))
        .header("x-goog-api-key", "k")
        .header("x-big", "a".repeat(200_000))
        .json(&body)
        .send()
        .await;
    let r = r.expect("answered");
    assert_eq!(r.status(), 431);
    let text = r.text().await.expect("body");
    assert_no_internals(&text);
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    // 80 headers of 2 KB, from an OpenAI client.
    let mut req = h.http.post(h.url("/v1/chat/completions")).bearer_auth("k").json(&json!({"model": "m"}));
    for i in 0..80 {
        req = req.header(format!("x-h{i}"), "b".repeat(2048));
    }
    let r = req.send().await.expect("answered");
    assert_eq!(r.status(), 431);
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["error"]["code"], "headers_too_large");
    // A 20 KB URI.
    let long = format!("{path}?pad={}", "c".repeat(20_000));
    let r = h.http.post(h.url(&long)).header("x-goog-api-key", "k").json(&body).send().await.expect("answered");
    assert_eq!(r.status(), 414);
    assert_no_internals(&r.text().await.expect("body"));
    assert!(h.fake.requests().is_empty(), "refused before the upstream");
    // Just under the limits, it works.
    let r = h
        .http
        .post(h.url(path))
        .header("x-goog-api-key", "k")
        .header("x-big", "a".repeat(60_000))
        .json(&body)
        .send()
        .await;
    assert_eq!(r.expect("answered").status(), 200);
    let sent = &h.fake.requests()[0];
    assert!(sent.header_names.iter().any(|n| n == "x-big"));
}

/// Reads what the server sends until it closes, within `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn silent_connections_are_closed_and_the_excess_refused_cleanly() {
    let mut h = Harness::new(1).await;
    h.limits = ConnectionLimits {
        header_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        max_connections: 8,
    };
    h.restart().await;
    let addr = h.server.as_ref().expect("running").addr();
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // The ninth is over the cap: a 503, then closed.
    let mut ninth = TcpStream::connect(addr).await.expect("connect");
    let refused = read_until_closed(&mut ninth, Duration::from_secs(5)).await.expect("answered and closed");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("\"status\":\"UNAVAILABLE\"") && refused.contains("retry-after: 1"), "{refused}");
    // The silent ones are closed once their header timeout passes...
    let started = Instant::now();
    for s in &mut silent {
        assert_eq!(
            read_until_closed(s, Duration::from_secs(5)).await.as_deref(),
            Some(""),
            "a silent connection stayed open"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // ...and a client gets in again.
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    // A head sent byte by byte, too slowly, is cut too.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /stat.json HTTP/1.1\r\n").await.expect("write");
    assert_eq!(read_until_closed(&mut slow, Duration::from_secs(5)).await.as_deref(), Some(""));
}

#[tokio::test]
async fn a_stream_longer_than_every_connection_timeout_is_never_cut() {
    let mut h = Harness::new(1).await;
    h.limits = ConnectionLimits {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        max_connections: 64,
    };
    h.restart().await;
    h.fake.hold_streams(true);
    let mut r = h
        .http
        .post(h.url("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"))
        .header("x-goog-api-key", "k")
        .json(&json!({}))
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.expect("first chunk").expect("bytes");
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    // Five times the connection timeouts with nothing moving.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.fake.release();
    let mut rest = String::new();
    while let Some(c) = r.chunk().await.expect("the rest, unbroken") {
        rest.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(rest.contains("chunk 2"), "{rest}");
}

async fn with_timeouts(keys: usize) -> Harness {
    let mut h = Harness::new(keys).await;
    h.vars = vec![("UPSTREAM_FIRST_BYTE_TIMEOUT".into(), "0.5".into()), ("UPSTREAM_IDLE_TIMEOUT".into(), "0.5".into())];
    h.restart().await;
    h
}

#[tokio::test]
async fn a_hung_upstream_fails_over_and_all_hung_answers_504() {
    let h = with_timeouts(2).await;
    h.fake.set(&h.keys[0], Behavior::Stall);
    let started = Instant::now();
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200, "failed over to the second key");
    assert!(started.elapsed() < Duration::from_secs(5));
    h.fake.set_default(Behavior::Stall);
    let r = h.openai("/v1/chat/completions", json!({"model": "gemini-2.5-flash", "messages": []})).await;
    assert_eq!(r.status(), 504);
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["error"]["code"], "upstream_timeout");
    let stats = h.stats().await;
    for k in stats["keys"].as_array().expect("keys") {
        assert!(k["disabled"].is_null(), "a timeout disabled a key");
        assert_eq!(k["models"]["gemini-2.5-flash"]["state"], "ok");
    }
}

#[tokio::test]
async fn a_stream_that_stalls_is_broken_off_for_the_client_and_counted() {
    let h = with_timeouts(1).await;
    h.fake.set(&h.keys[0], Behavior::StallBody);
    let mut r = h
        .http
        .post(h.url("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"))
        .header("x-goog-api-key", "k")
        .json(&json!({}))
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 200);
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match r.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        }
    })
    .await
    .expect("the break reached the client in time");
    assert!(outcome.is_err(), "a stalled stream must not end cleanly");
    let mut cell = Value::Null;
    for _ in 0..50 {
        cell = h.stats().await["keys"][0]["models"]["gemini-2.5-flash"].clone();
        if cell["errors"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cell["errors"], 1, "{cell}");
}

#[tokio::test]
async fn invented_model_names_never_lock_out_real_ones_even_after_a_restart() {
    let mut h = Harness::new(2).await;
    for i in 0..600 {
        let r = h.generate(&format!("made-up-{i}")).await;
        assert_eq!(r.status(), 404, "Google's 404 is relayed");
    }
    assert_eq!(h.generate("gemini-2.5-flash-lite").await.status(), 200);
    h.restart().await;
    assert_eq!(h.generate("gemini-2.0-flash").await.status(), 200);
    let stats = h.stats().await;
    let models: Vec<&str> = stats["models"].as_object().expect("models").keys().map(String::as_str).collect();
    assert_eq!(models, ["(untracked models)", "gemini-2.0-flash", "gemini-2.5-flash-lite"]);
    assert_eq!(stats["models"]["(untracked models)"]["requests"], 600, "every call counted");
    assert_eq!(stats["totals"]["requests"], 602);
}
