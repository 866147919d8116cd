//! APIs Google does not offer, served from Gemini: Anthropic's Messages and
//! OpenAI's Responses.

use e2e::Target;
use serde_json::{Value, json};
use std::time::Duration;

fn messages(t: &Target, body: Value) -> reqwest::RequestBuilder {
    t.http
        .post(format!("{}/v1/messages?beta=true", t.proxy))
        .header("x-api-key", &t.proxy_key)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14")
        .json(&body)
}

/// The requests of `model` a key row's cells count.
fn requests_of(stats: &Value, model: &str) -> u64 {
    let keys = stats["keys"].as_array().into_iter().flatten();
    keys.filter_map(|k| k["models"][model]["requests"].as_u64()).sum()
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn anthropic_messages_are_gemini_calls_counted_under_the_gemini_model() {
    let t = Target::fresh_from_env().await;
    let body = json!({
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"user_id": "e2e"}
    });
    let r = messages(&t, body.clone()).send().await.expect("messages");
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.expect("json");
    assert_eq!(m["content"][0]["text"], "Hello from the fake gemini-3-flash-preview.");
    assert_eq!(
        (m["model"].as_str(), m["stop_reason"].as_str()),
        (Some("claude-sonnet-4-5-20250929"), Some("end_turn"))
    );

    // A stream: each Gemini event goes out as it arrives.
    t.fake("hold", json!({})).await;
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let mut r = messages(&t, streamed).send().await.expect("stream");
    assert_eq!(r.status(), 200);
    let mut seen = String::new();
    while !seen.contains("text_delta") {
        let chunk =
            tokio::time::timeout(Duration::from_secs(10), r.chunk()).await.expect("an event while the upstream holds");
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("chunk").expect("bytes")));
    }
    assert!(seen.starts_with("event: message_start\n") && !seen.contains("chunk 1"), "{seen}");
    t.fake("release", json!({})).await;
    while let Some(c) = r.chunk().await.expect("rest") {
        seen.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(
        seen.contains("chunk 2") && seen.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{seen}"
    );

    let r = t
        .http
        .post(format!("{}/v1/messages/count_tokens", t.proxy))
        .bearer_auth(&t.proxy_key)
        .json(&json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("count");
    assert_eq!(r.json::<Value>().await.expect("json"), json!({"input_tokens": 7}));
    let reqs = t.upstream_requests().await;
    let paths: Vec<&str> = reqs.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1beta/models/gemini-3-flash-preview:generateContent",
            "/v1beta/models/gemini-3-flash-preview:streamGenerateContent",
            "/v1beta/models/gemini-3-flash-preview:countTokens"
        ]
    );
    for r in &reqs {
        let names: Vec<&str> = r["header_names"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        assert!(!names.iter().any(|n| n.starts_with("anthropic") || *n == "x-api-key"), "{names:?}");
    }
    t.assert_only_pool_keys_upstream().await;
    let stats = t.stats_when(|s| requests_of(s, "gemini-3-flash-preview") == 3).await;
    assert_eq!(requests_of(&stats, "gemini-3-flash-preview"), 3, "{stats}");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn anthropic_errors_are_anthropic_s() {
    let t = Target::fresh_from_env().await;
    t.behave("*", "per-day").await;
    let body =
        json!({"model": "gemini-2.0-flash-e2e-all", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let r = messages(&t, body).send().await.expect("messages");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.expect("json");
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("rate_limit_error")));
    let r = t
        .http
        .post(format!("{}/v1/messages/batches", t.proxy))
        .header("x-api-key", &t.proxy_key)
        .send()
        .await
        .expect("batches");
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "not_found_error");
    assert!(t.upstream_requests().await.len() <= 5, "the batches call never went upstream");
}

fn responses(t: &Target, body: Value) -> reqwest::RequestBuilder {
    t.http.post(format!("{}/v1/responses", t.proxy)).bearer_auth(&t.proxy_key).json(&body)
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn responses_calls_are_gemini_calls_counted_under_the_gemini_model() {
    let t = Target::fresh_from_env().await;
    let body = json!({
        "model": "gpt-5-codex",
        "instructions": "Be brief.",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "store": false, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "e2e"
    });
    let r = responses(&t, body.clone()).send().await.expect("responses");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!((v["object"].as_str(), v["model"].as_str()), (Some("response"), Some("gpt-5-codex")));
    assert_eq!(v["output"][0]["content"][0]["text"], "Hello from the fake gemini-3-flash-preview.");
    assert!(v["created_at"].as_u64().is_some_and(|t| t > 1_700_000_000), "{v}");

    // A stream: each Gemini event goes out as it arrives.
    t.fake("hold", json!({})).await;
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let mut r = responses(&t, streamed).send().await.expect("stream");
    assert_eq!(r.status(), 200);
    let mut seen = String::new();
    while !seen.contains("response.output_text.delta") {
        let chunk =
            tokio::time::timeout(Duration::from_secs(10), r.chunk()).await.expect("an event while the upstream holds");
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("chunk").expect("bytes")));
    }
    assert!(seen.starts_with("event: response.created\n") && !seen.contains("chunk 1"), "{seen}");
    t.fake("release", json!({})).await;
    while let Some(c) = r.chunk().await.expect("rest") {
        seen.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(seen.contains("chunk 2") && seen.contains("event: response.completed\n"), "{seen}");

    let reqs = t.upstream_requests().await;
    let paths: Vec<&str> = reqs.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1beta/models/gemini-3-flash-preview:generateContent",
            "/v1beta/models/gemini-3-flash-preview:streamGenerateContent"
        ]
    );
    t.assert_only_pool_keys_upstream().await;
    let stats = t.stats_when(|s| requests_of(s, "gemini-3-flash-preview") == 2).await;
    assert_eq!(requests_of(&stats, "gemini-3-flash-preview"), 2, "{stats}");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn responses_errors_are_openai_s() {
    let t = Target::fresh_from_env().await;
    t.behave("*", "per-day").await;
    let r = responses(&t, json!({"model": "gemini-2.0-flash-e2e-responses", "input": "hi"})).send().await.expect("429");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    let before = t.upstream_requests().await.len();
    for (method, path) in
        [(reqwest::Method::POST, "/v1/responses/compact"), (reqwest::Method::GET, "/v1/responses/resp_1")]
    {
        let r =
            t.http.request(method, format!("{}{path}", t.proxy)).bearer_auth(&t.proxy_key).send().await.expect("404");
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().await.expect("json");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("keeps no responses")), "{v}");
    }
    let r = responses(&t, json!({"model": "gemini-2.5-flash", "input": "hi", "previous_response_id": "resp_1"}))
        .send()
        .await
        .expect("400");
    assert_eq!(r.status(), 400);
    assert_eq!(t.upstream_requests().await.len(), before, "nothing of these went upstream");
}
