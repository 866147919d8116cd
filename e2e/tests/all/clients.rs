//! Client keys on both hosts: each client's models and daily quotas, its
//! requests and tokens counted as the answers report them. Each scenario
//! revokes the clients it created.

use e2e::Target;
use reqwest::Method;
use serde_json::{Value, json};

/// Creates a client: its id and its secret (shown this once).
pub async fn create(t: &Target, body: Value) -> (String, String) {
    let (status, v) = t.admin(Method::POST, "/admin/clients", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    let field = |f: &str| v.pointer(f).and_then(Value::as_str).expect("a field").to_owned();
    (field("/client/id"), field("/secret"))
}

pub async fn revoke(t: &Target, id: &str) {
    let (status, v) = t.admin(Method::DELETE, &format!("/admin/clients/{id}"), None).await;
    assert_eq!(status, 200, "{v}");
}

/// A Gemini generateContent (or its SSE stream) with `secret`.
pub async fn generate_as(t: &Target, secret: &str, model: &str, stream: bool) -> reqwest::Response {
    let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
    t.http
        .post(format!("{}/v1beta/models/{model}:{action}", t.proxy))
        .header("x-goog-api-key", secret)
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .expect("generate")
}

/// An OpenAI chat stream with usage, with `secret`.
async fn chat_as(t: &Target, secret: &str, model: &str) -> reqwest::Response {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": true,
        "stream_options": {"include_usage": true}});
    t.http.post(format!("{}/v1/chat/completions", t.proxy)).bearer_auth(secret).json(&body).send().await.expect("chat")
}

/// The client `id` in `/stat.json`.
pub fn client(stats: &Value, id: &str) -> Value {
    let all = stats["clients"].as_array().expect("clients");
    all.iter().find(|c| c["id"] == id).cloned().unwrap_or_else(|| panic!("no client {id} in {stats}"))
}

/// The tokens the fake reported for its requests from the `from`th on:
/// the quota's count (prompt, output, thinking) and each kind.
async fn reported(t: &Target, from: usize) -> (u64, [u64; 4]) {
    let mut quota = 0;
    let mut kinds = [0; 4];
    for r in t.upstream_requests().await.iter().skip(from) {
        let u = &r["usage"];
        if u.is_null() {
            continue;
        }
        let n = |k: &str| u[k].as_u64().expect("a count");
        quota += n("prompt") + n("output") + n("thinking");
        for (i, k) in ["prompt", "output", "cached", "thinking"].into_iter().enumerate() {
            kinds[i] += n(k);
        }
    }
    (quota, kinds)
}

fn kinds(tokens: &Value) -> [u64; 4] {
    ["prompt", "output", "cached", "thinking"].map(|k| tokens[k].as_u64().expect("a count"))
}

async fn today_requests(t: &Target, id: &str, n: u64) -> Value {
    let stats = t.stats_when(|s| client(s, id)["today"]["requests"] == n).await;
    assert_eq!(client(&stats, id)["today"]["requests"], n, "{stats}");
    stats
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn clients_run_into_their_own_quotas_while_the_others_keep_working() {
    let t = Target::fresh_from_env().await;
    let (a, a_secret) = create(&t, json!({"name": "e2e two a day", "daily_requests": 2})).await;
    let (b, b_secret) = create(&t, json!({"name": "e2e few tokens", "daily_tokens": 1})).await;
    let (c, c_secret) = create(&t, json!({"name": "e2e pro only", "models": ["e2e-pro"]})).await;

    // A: a plain answer and an OpenAI stream, then its request quota.
    assert_eq!(generate_as(&t, &a_secret, "e2e-clients", false).await.status(), 200);
    let chat = chat_as(&t, &a_secret, "e2e-clients").await.text().await.expect("chat");
    assert!(chat.contains("[DONE]"), "{chat}");
    today_requests(&t, &a, 2).await;
    let sent = t.upstream_requests().await.len();
    let r = chat_as(&t, &a_secret, "e2e-clients").await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.expect("an OpenAI error");
    assert_eq!(v["error"]["code"], "client_quota_exceeded", "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("e2e two a day") && m.contains("2 requests")));
    assert_eq!(t.upstream_requests().await.len(), sent, "a refused request goes nowhere");
    let (a_quota, a_kinds) = reported(&t, 0).await;

    // B keeps working until its token quota is used up (by an SSE stream).
    let from = t.upstream_requests().await.len();
    let sse = generate_as(&t, &b_secret, "e2e-clients", true).await.text().await.expect("sse");
    assert!(sse.contains("data:"), "{sse}");
    today_requests(&t, &b, 1).await;
    let r = generate_as(&t, &b_secret, "e2e-clients", false).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.expect("a Gemini error");
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED", "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("1 tokens")), "{v}");
    let (b_quota, b_kinds) = reported(&t, from).await;

    // C only for its model; the proxy key without a quota; any other key
    // is no client's.
    assert_eq!(generate_as(&t, &c_secret, "e2e-clients", false).await.status(), 403);
    assert_eq!(generate_as(&t, &c_secret, "e2e-pro", false).await.status(), 200);
    assert_eq!(t.generate("e2e-clients").await.status(), 200);
    assert_eq!(generate_as(&t, "AIzaSyE2EnotACLIENTkey0000000000000000", "e2e-clients", false).await.status(), 401);
    t.assert_only_pool_keys_upstream().await;

    // Counted as the fake reported, client by client; no secret shown.
    let stats = today_requests(&t, &c, 1).await;
    let (sa, sb) = (client(&stats, &a), client(&stats, &b));
    assert_eq!((sa["today"]["tokens"].as_u64(), kinds(&sa["tokens"])), (Some(a_quota), a_kinds), "{sa}");
    assert_eq!((sb["today"]["tokens"].as_u64(), kinds(&sb["tokens"])), (Some(b_quota), b_kinds), "{sb}");
    // A's use per upstream key × model, as the fake served it.
    let mut served = std::collections::BTreeMap::<(String, String), (u64, [u64; 4])>::new();
    for r in &t.upstream_requests().await[..sent] {
        let key = t.key_id(r["credentials"][0][1].as_str().expect("a key")).await;
        let row = served.entry((key, r["model"].as_str().expect("a model").to_owned())).or_default();
        row.0 += 1;
        for (i, k) in ["prompt", "output", "cached", "thinking"].into_iter().enumerate() {
            row.1[i] += r["usage"][k].as_u64().expect("a count");
        }
    }
    let mut counted = std::collections::BTreeMap::new();
    for (key, models) in sa["keys"].as_object().expect("keys") {
        for (model, u) in models.as_object().expect("models") {
            counted.insert((key.clone(), model.clone()), (u["requests"].as_u64().expect("n"), kinds(&u["tokens"])));
        }
    }
    assert_eq!(counted, served, "client × key × model as served: {sa}");
    // The hour's buckets: the client's requests, the model's calls.
    let this_hour = |dim: &str, name: &str| -> u64 {
        let rows = stats["hourly"][dim][name].as_array().cloned().unwrap_or_default();
        rows.last().and_then(|r| r[1].as_u64()).unwrap_or_default()
    };
    assert_eq!(this_hour("client", &a), 2, "{}", stats["hourly"]);
    assert_eq!(this_hour("model", "e2e-clients"), 4, "{}", stats["hourly"]);
    let text = stats.to_string();
    assert!(![&a_secret, &b_secret, &c_secret].iter().any(|s| text.contains(s.as_str())), "a secret in /stat.json");
    let metrics = t
        .http
        .get(format!("{}/metrics", t.proxy))
        .bearer_auth(&t.proxy_key)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains(&format!("gemini_proxy_client_requests_total{{client_id=\"{a}\"")), "{metrics}");
    for id in [a, b, c] {
        revoke(&t, &id).await;
    }
    assert_eq!(generate_as(&t, &c_secret, "e2e-pro", false).await.status(), 401, "revoked");
}
