use crate::harness::{Harness, PROXY_KEY, pool_keys};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn native_generate_carries_one_pool_key() {
    let h = Harness::new(2).await;
    let r = h
        .http
        .post(h.url("/v1beta/models/gemini-2.5-flash:generateContent?key=client-key&foo=bar"))
        .header("x-goog-api-key", "client-key")
        .header("authorization", "Bearer client-key")
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "Hello from the fake gemini-2.5-flash.");
    let seen = h.fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(seen[0].query.as_deref(), Some("foo=bar"));
    assert!(!seen[0].header_names.iter().any(|h| h == "cookie" || h == "connection"));
    h.assert_only_pool_keys_upstream();
}

#[tokio::test]
async fn every_native_operation_and_version() {
    let h = Harness::new(1).await;
    for version in ["v1beta", "v1"] {
        let r = h.gemini(&format!("/{version}/models/gemini-2.5-flash:countTokens"), json!({"contents": []})).await;
        assert_eq!(r.json::<Value>().await.expect("json")["totalTokens"], 7);
        let r = h
            .gemini(
                &format!("/{version}/models/gemini-embedding-001:embedContent"),
                json!({"content": {"parts": [{"text": "x"}]}}),
            )
            .await;
        assert!(r.json::<Value>().await.expect("json")["embedding"]["values"].is_array());
        let r = h
            .gemini(
                &format!("/{version}/models/gemini-embedding-001:batchEmbedContents"),
                json!({"requests": [{}, {}]}),
            )
            .await;
        assert_eq!(r.json::<Value>().await.expect("json")["embeddings"].as_array().map(Vec::len), Some(2));
        let r =
            h.http.get(h.url(&format!("/{version}/models"))).header("x-goog-api-key", "k").send().await.expect("list");
        assert_eq!(r.status(), 200);
        assert!(r.json::<Value>().await.expect("json")["models"].is_array());
        let r = h
            .http
            .get(h.url(&format!("/{version}/models/gemini-2.5-pro")))
            .header("x-goog-api-key", "k")
            .send()
            .await
            .expect("get");
        assert_eq!(r.json::<Value>().await.expect("json")["name"], "models/gemini-2.5-pro");
    }
    let paths: Vec<String> = h.fake.requests().iter().map(|r| r.path.clone()).collect();
    assert!(paths.iter().all(|p| p.starts_with("/v1beta/models")), "{paths:?}");
    h.assert_only_pool_keys_upstream();
}

#[tokio::test]
async fn openai_routes_use_bearer_pool_key() {
    let h = Harness::new(2).await;
    for path in ["/v1/chat/completions", "/chat/completions", "/v1beta/openai/chat/completions"] {
        let r =
            h.openai(path, json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["choices"][0]["message"]["content"], "Hello from the fake gemini-2.5-flash.");
    }
    let r = h
        .openai(
            "/v1/embeddings",
            json!({"model": "gemini-embedding-001", "input": ["a", "b"], "encoding_format": "base64"}),
        )
        .await;
    let v: Value = r.json().await.expect("json");
    assert!(v["data"][1]["embedding"].is_string());
    let r = h.http.get(h.url("/v1/models")).bearer_auth("client").send().await.expect("models");
    assert!(r.json::<Value>().await.expect("json")["data"].is_array());
    let seen = h.fake.requests();
    assert!(seen.iter().all(|r| r.path.starts_with("/v1beta/openai/")), "{seen:?}");
    assert_eq!(seen.last().map(|r| r.path.as_str()), Some("/v1beta/openai/models"));
    h.assert_only_pool_keys_upstream();
}

#[tokio::test]
async fn v1_models_is_decided_by_the_credential() {
    let h = Harness::new(1).await;
    h.http.get(h.url("/v1/models")).header("x-goog-api-key", "k").send().await.expect("gemini");
    h.http.get(h.url("/v1/models?key=k")).send().await.expect("gemini by query");
    h.http.get(h.url("/v1/models")).bearer_auth("k").send().await.expect("openai");
    let paths: Vec<String> = h.fake.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/v1beta/models", "/v1beta/models", "/v1beta/openai/models"]);
}

async fn first_chunk_arrives_before_upstream_finishes(h: &Harness, req: reqwest::RequestBuilder, marker: &str) {
    h.fake.hold_streams(true);
    let mut r = req.send().await.expect("stream");
    assert_eq!(r.status(), 200);
    let first =
        tokio::time::timeout(Duration::from_secs(10), r.chunk()).await.expect("first chunk in time").expect("chunk");
    let first = String::from_utf8(first.expect("some bytes").to_vec()).expect("utf8");
    assert!(first.contains(marker), "{first}");
    assert!(!first.contains("chunk 1"), "the proxy buffered: {first}");
    h.fake.release();
    let mut rest = String::new();
    while let Some(c) = r.chunk().await.expect("rest") {
        rest.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(rest.contains("chunk 2"), "{rest}");
}

#[tokio::test]
async fn streams_pass_through_unbuffered() {
    let h = Harness::new(1).await;
    let body = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let sse = h
        .http
        .post(h.url("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"))
        .header("x-goog-api-key", "k")
        .json(&body);
    first_chunk_arrives_before_upstream_finishes(&h, sse, "data: ").await;
    let array = h
        .http
        .post(h.url("/v1/models/gemini-2.5-flash:streamGenerateContent"))
        .header("x-goog-api-key", "k")
        .json(&body);
    first_chunk_arrives_before_upstream_finishes(&h, array, "[").await;
    let openai =
        h.http.post(h.url("/v1/chat/completions")).bearer_auth("k").json(
            &json!({"model": "gemini-2.5-flash", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        );
    first_chunk_arrives_before_upstream_finishes(&h, openai, "chat.completion.chunk").await;
}

#[tokio::test]
async fn a_stream_cut_upstream_aborts_the_client_response() {
    let h = Harness::new(1).await;
    h.fake.set(&h.keys[0], fake_upstream::Behavior::CutMidStream);
    // The client sees an error, before or after the head, never a clean end.
    let sent = h
        .http
        .post(h.url("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"))
        .header("x-goog-api-key", "k")
        .json(&json!({}))
        .send()
        .await;
    let outcome = match sent {
        Err(e) => Err(e),
        Ok(mut r) => loop {
            match r.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        },
    };
    assert!(outcome.is_err(), "a cut stream must not end cleanly");
}

#[tokio::test]
async fn proxy_key_guards_every_mechanism() {
    let h = Harness::with(pool_keys(1), Some(PROXY_KEY)).await;
    let body = json!({"contents": []});
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let r = h.http.post(h.url(path)).json(&body).send().await.expect("no key");
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
    let r = h
        .http
        .post(h.url("/v1/chat/completions"))
        .bearer_auth("wrong")
        .json(&json!({"model": "m"}))
        .send()
        .await
        .expect("wrong");
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert!(h.fake.requests().is_empty(), "the upstream must not be called without the proxy key");
    assert_eq!(h.http.get(h.url("/stat.json")).send().await.expect("stat").status(), 401);

    assert_eq!(
        h.http.post(h.url(path)).header("x-goog-api-key", PROXY_KEY).json(&body).send().await.expect("goog").status(),
        200
    );
    assert_eq!(
        h.http.post(h.url(&format!("{path}?key={PROXY_KEY}"))).json(&body).send().await.expect("query").status(),
        200
    );
    assert_eq!(h.http.post(h.url(path)).bearer_auth(PROXY_KEY).json(&body).send().await.expect("bearer").status(), 200);
    h.assert_only_pool_keys_upstream();
    for r in h.fake.requests() {
        assert!(r.query.as_deref().is_none_or(|q| !q.contains(PROXY_KEY)));
    }
}

#[tokio::test]
async fn the_proxys_own_errors_are_in_the_callers_dialect() {
    let h = Harness::new(1).await;
    let r =
        h.http.post(h.url("/v1/chat/completions")).bearer_auth("k").body("{not json").send().await.expect("bad json");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("not valid JSON")));

    let r = h
        .http
        .get(h.url("/v1beta/models/gemini-2.5-flash:generateContent"))
        .header("x-goog-api-key", "k")
        .send()
        .await
        .expect("405");
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], 405);

    // Not a Gemini path (a collection starts lower-case): the proxy's own 404.
    let r = h.http.get(h.url("/v1beta/Files")).header("x-goog-api-key", "k").send().await.expect("404");
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["status"], "NOT_FOUND");
    let r = h
        .http
        .get(h.url("/v1beta/models/..%2F..%2Fetc:generateContent"))
        .header("x-goog-api-key", "k")
        .send()
        .await
        .expect("404");
    assert_eq!(r.status(), 404);

    let big = vec![b'a'; 33 * 1024 * 1024];
    let r = h.http.post(h.url("/v1beta/models/m:generateContent")).header("x-goog-api-key", "k").body(big).send().await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    assert!(h.fake.requests().is_empty());
}

#[tokio::test]
async fn browsers_get_cors_on_api_routes() {
    let h = Harness::with(pool_keys(1), Some("AQ.hostRUNNERcorsPROXYkey0123456789ab")).await;
    let r = h
        .http
        .request(reqwest::Method::OPTIONS, h.url("/v1/chat/completions"))
        .header("origin", "https://chat.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("preflight");
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(r.headers()["access-control-allow-headers"], "authorization, content-type");
    let r = h.openai("/v1/chat/completions", json!({"model": "gemini-2.5-flash", "messages": []})).await;
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(h.fake.requests().iter().all(|r| r.method != "OPTIONS"), "preflights stay at the proxy");
}

#[tokio::test]
async fn an_open_proxy_serves_only_its_own_names_and_listed_origins() {
    let mut h = Harness::new(1).await;
    h.vars.push(("CORS_ORIGINS".into(), "https://chat.example".into()));
    h.restart().await;
    let url = h.url("/v1beta/models/gemini-2.5-flash:generateContent");
    let body = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let post = |origin: Option<&str>, host: Option<&str>| {
        let mut req = h.http.post(&url).json(&body);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(host) = host {
            req = req.header("host", host);
        }
        req.send()
    };
    let r = post(Some("https://evil.example"), None).await.expect("foreign page");
    assert_eq!(r.status(), 403);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = post(None, Some("rebound.evil.example")).await.expect("rebound name");
    assert_eq!(r.status(), 421);
    assert!(h.fake.requests().is_empty(), "nothing refused went upstream");
    let r = post(Some("https://chat.example"), None).await.expect("listed page");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://chat.example");
    let port = url.split(':').nth(2).and_then(|p| p.split('/').next()).unwrap_or_default().to_owned();
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        assert_eq!(post(None, Some(&host)).await.expect("own name").status(), 200, "{host}");
    }
}

#[tokio::test]
async fn instances_serve_many_requests_of_every_kind() {
    let h = Harness::new(2).await;
    for round in 0..10 {
        let r = h.generate("gemini-2.5-flash").await;
        assert_eq!(r.status(), 200, "round {round}");
        let r = h.openai("/v1/chat/completions", json!({"model": "gemini-2.5-flash", "messages": []})).await;
        assert_eq!(r.status(), 200, "round {round}");
        let r = h.gemini("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", json!({})).await;
        assert_eq!(r.status(), 200);
        assert!(r.text().await.expect("stream").contains("data: "), "round {round}");
        let r = h.gemini("/v1beta/nowhere", json!({})).await;
        assert_eq!(r.status(), 404, "round {round}");
        assert_eq!(h.stats().await["keys"].as_array().map(Vec::len), Some(2));
    }
    let created = h.server.as_ref().expect("running").instances_created();
    // 50 requests one after another: an instance can still be finishing a
    // stream when the next request comes, so a few may exist, not 50.
    assert!(created <= 4, "{created} instances for 50 sequential requests");
}

#[tokio::test]
async fn an_instance_grown_by_a_large_body_is_not_kept_idle() {
    let h = Harness::new(1).await;
    let server = h.server.as_ref().expect("running");
    let settle = || tokio::time::sleep(Duration::from_millis(200));
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    settle().await;
    let idle = server.idle_instances();
    assert!(idle >= 1, "a small request leaves its instance idle");
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    settle().await;
    assert_eq!(server.idle_instances(), idle, "a small request's instance comes back");
    // 12 MiB of text: the guest's memory grows past the idle limit.
    let big = json!({"contents": [{"parts": [{"text": "x".repeat(12 << 20)}]}]});
    let r = h.gemini("/v1beta/models/gemini-2.5-flash:generateContent", big).await;
    assert_eq!(r.status(), 200);
    settle().await;
    assert_eq!(server.idle_instances(), idle - 1, "the grown instance was dropped");
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
}

#[tokio::test]
async fn a_burst_leaves_its_instances_until_they_are_trimmed() {
    let h = Harness::new(2).await;
    let server = h.server.as_ref().expect("running");
    // 48 streams held open upstream after their first chunk: 48 instances
    // are busy at once.
    h.fake.hold_streams(true);
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..48 {
        let req = h
            .http
            .post(h.url("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"))
            .header("x-goog-api-key", "k")
            .json(&json!({}));
        burst.spawn(async move { req.send().await.expect("request").text().await.expect("stream") });
    }
    while h.fake.requests().len() < 48 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.fake.release();
    while let Some(text) = burst.join_next().await {
        assert!(text.expect("task").contains("data: "));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.idle_instances(), 48, "the burst's instances wait for the next one");
    assert_eq!(server.trim_idle_instances(Duration::from_secs(3600)), 0, "none is old enough");
    assert_eq!(server.trim_idle_instances(Duration::ZERO), 48 - host_runner::proxy::MIN_IDLE_INSTANCES);
    assert_eq!(server.idle_instances(), host_runner::proxy::MIN_IDLE_INSTANCES);
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
}

/// A proxy that keeps non-streamed answers alive after a second.
async fn keeping_alive(keys: usize) -> Harness {
    let mut h = Harness::new(keys).await;
    h.vars.push(("NONSTREAM_KEEPALIVE_SECONDS".into(), "1".into()));
    h.vars.push(("UPSTREAM_FIRST_BYTE_TIMEOUT".into(), "30".into()));
    h.restart().await;
    h
}

/// Reads a response's body piece by piece: the bytes, when the first came,
/// and whether it ended cleanly.
async fn read_timed(mut r: reqwest::Response, sent: std::time::Instant) -> (Vec<u8>, Duration, bool) {
    let mut body = Vec::new();
    let mut first = None;
    loop {
        match r.chunk().await {
            Ok(Some(piece)) => {
                first.get_or_insert_with(|| sent.elapsed());
                body.extend_from_slice(&piece);
            }
            Ok(None) => return (body, first.unwrap_or_default(), true),
            Err(_) => return (body, first.unwrap_or_default(), false),
        }
    }
}

#[tokio::test]
async fn keep_alive_sends_whitespace_while_a_slow_non_streamed_answer_comes() {
    let h = keeping_alive(2).await;
    h.fake.set_default(fake_upstream::Behavior::SlowHeaders(2_600));
    let sent = std::time::Instant::now();
    let r = h.generate("gemini-2.5-pro").await;
    let head = sent.elapsed();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap_or_default().starts_with("application/json"));
    assert!(head < Duration::from_millis(2_400), "the head waited for the answer: {head:?}");
    let (body, first, clean) = read_timed(r, sent).await;
    assert!(clean);
    assert!(first < Duration::from_millis(2_400), "no keep-alive byte before the answer: {first:?}");
    let text = String::from_utf8(body).expect("utf-8");
    let spaces = text.len() - text.trim_start().len();
    assert!((2..=3).contains(&spaces), "one space a second: {spaces} in {text:?}");
    let v: Value = serde_json::from_str(&text).expect("JSON after whitespace");
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "Hello from the fake gemini-2.5-pro.");
    assert_eq!(h.fake.requests().len(), 1);
    // OpenAI's chat too.
    let r = h
        .openai(
            "/chat/completions",
            json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let (body, first, clean) = read_timed(r, std::time::Instant::now()).await;
    assert!(clean && first < Duration::from_millis(2_400));
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
}

#[tokio::test]
async fn keep_alive_then_a_failure_ends_the_answer_broken_with_the_error_and_counts_it() {
    let h = keeping_alive(3).await;
    h.fake.set_default(fake_upstream::Behavior::SlowServerError(1_600));
    let sent = std::time::Instant::now();
    let r = h.generate("gemini-2.5-pro").await;
    assert_eq!(r.status(), 200, "committed before the failure");
    let (body, _, clean) = read_timed(r, sent).await;
    assert!(!clean, "the answer ends broken, so that a client sees a failure");
    let v: Value = serde_json::from_slice(&body).expect("the error's JSON after the whitespace");
    assert_eq!(v["error"]["code"], 502, "{v}");
    assert_eq!(h.fake.requests().len(), 1, "no other key after the commit");
    // Counted as the failure it was (under the untracked names: Google
    // never answered for this model).
    let stats = h.stats().await;
    let counted = &stats["models"]["(untracked models)"];
    assert_eq!((counted["requests"].as_u64(), counted["errors"].as_u64()), (Some(1), Some(1)), "{stats}");
    // A quick failure, before any keep-alive byte, still moves on.
    h.fake.set_default(fake_upstream::Behavior::Ok);
    h.fake.set(&h.keys[0], fake_upstream::Behavior::ServerError(503));
    h.fake.set(&h.keys[1], fake_upstream::Behavior::ServerError(503));
    let r = h.generate("gemini-2.5-flash").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert!(v["candidates"].is_array());
}

#[tokio::test]
async fn keep_alive_counts_its_interval_from_the_clients_last_byte_across_attempts() {
    let mut h = Harness::new(3).await;
    h.vars.push(("NONSTREAM_KEEPALIVE_SECONDS".into(), "2".into()));
    h.vars.push(("UPSTREAM_FIRST_BYTE_TIMEOUT".into(), "30".into()));
    h.restart().await;
    // Two keys fail after 1.5 s each, the third answers after 3 s: whatever
    // the order, the client gets its first byte two seconds after asking,
    // not two seconds after the last attempt began.
    h.fake.set(&h.keys[0], fake_upstream::Behavior::SlowServerError(1_500));
    h.fake.set(&h.keys[1], fake_upstream::Behavior::SlowServerError(1_500));
    h.fake.set(&h.keys[2], fake_upstream::Behavior::SlowHeaders(3_000));
    let sent = std::time::Instant::now();
    let r = h.generate("gemini-2.5-pro").await;
    let head = sent.elapsed();
    assert_eq!(r.status(), 200);
    assert!(head < Duration::from_millis(2_800), "the first byte waited for the attempt: {head:?}");
    let (body, _, clean) = read_timed(r, sent).await;
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    // Committed at 2 s, on the key that was waited on then: the answer is
    // that key's (an error if it was a failing one), never another's.
    assert!(v["candidates"].is_array() || (!clean && v["error"].is_object()), "{v}");
}
