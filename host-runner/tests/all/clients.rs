//! Client keys against the real component, the real SQLite file and the
//! fake upstream: each client's own models and daily quotas, its requests
//! and tokens counted as the answers report them, across a restart.

use crate::harness::{Harness, PROXY_KEY, pool_keys};
use reqwest::Method;
use serde_json::{Value, json};

/// Creates a client; its id and its secret (shown this once).
async fn create(h: &Harness, body: Value) -> (String, String) {
    let (status, v) = h.admin(Method::POST, "/admin/clients", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    let field = |f: &str| v.pointer(f).and_then(Value::as_str).expect("a field").to_owned();
    (field("/client/id"), field("/secret"))
}

async fn generate_as(h: &Harness, secret: &str, model: &str, stream: bool) -> reqwest::Response {
    let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
    h.http
        .post(h.url(&format!("/v1beta/models/{model}:{action}")))
        .header("x-goog-api-key", secret)
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .expect("request")
}

async fn chat_as(h: &Harness, secret: &str, model: &str) -> reqwest::Response {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": true,
        "stream_options": {"include_usage": true}});
    h.http.post(h.url("/v1/chat/completions")).bearer_auth(secret).json(&body).send().await.expect("request")
}

/// The client `id` in `/stat.json`.
fn client(stats: &Value, id: &str) -> Value {
    let all = stats["clients"].as_array().expect("clients");
    all.iter().find(|c| c["id"] == id).cloned().unwrap_or_else(|| panic!("no client {id} in {stats}"))
}

/// The quota tokens (prompt, output, thinking) the fake reported since
/// its `from`th request.
fn reported_tokens(h: &Harness, from: usize) -> (u64, [u64; 4]) {
    let mut quota = 0;
    let mut kinds = [0; 4];
    for u in h.fake.requests().iter().skip(from).filter_map(|r| r.usage) {
        quota += u.prompt + u.output + u.thinking;
        for (i, n) in [u.prompt, u.output, u.cached, u.thinking].into_iter().enumerate() {
            kinds[i] += n;
        }
    }
    (quota, kinds)
}

fn kinds(tokens: &Value) -> [u64; 4] {
    ["prompt", "output", "cached", "thinking"].map(|k| tokens[k].as_u64().expect("a count"))
}

/// `/stat.json` once the client `id` has `requests` today (a report lands
/// just after the answer's last byte).
async fn stats_when(h: &Harness, id: &str, requests: u64) -> Value {
    for _ in 0..100 {
        let stats = h.stats().await;
        if client(&stats, id)["today"]["requests"] == requests {
            return stats;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("client {id} never reached {requests} requests: {}", h.stats().await);
}

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.expect("a JSON error"))
}

#[tokio::test]
async fn two_clients_run_into_their_own_quotas_while_the_other_keeps_working_and_counts_survive_a_restart() {
    let mut h = Harness::with(pool_keys(2), Some(PROXY_KEY)).await;
    h.with_admin();
    h.restart().await;
    let (a, a_secret) = create(&h, json!({"name": "three a day", "daily_requests": 3})).await;
    let (b, b_secret) = create(&h, json!({"name": "few tokens", "daily_tokens": 1})).await;
    let (c, c_secret) = create(&h, json!({"name": "pro only", "models": ["gemini-2.5-pro"]})).await;

    // A: three requests (plain, SSE, an OpenAI stream), then its quota.
    let before_a = h.fake.requests().len();
    assert_eq!(generate_as(&h, &a_secret, "gemini-2.5-flash", false).await.status(), 200);
    let sse = generate_as(&h, &a_secret, "gemini-2.5-flash", true).await.text().await.expect("sse");
    assert!(sse.contains("data:"), "{sse}");
    assert!(chat_as(&h, &a_secret, "gemini-2.5-pro").await.text().await.expect("chat").contains("[DONE]"));
    stats_when(&h, &a, 3).await;
    let upstream_calls = h.fake.requests().len();
    let (status, v) = error_of(chat_as(&h, &a_secret, "gemini-2.5-pro").await).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "client_quota_exceeded", "{v}");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("three a day") && message.contains("3 requests") && message.contains("resets at"), "{v}");
    assert_eq!(h.fake.requests().len(), upstream_calls, "a refused request goes nowhere");
    let (a_tokens_quota, a_kinds) = reported_tokens(&h, before_a);
    assert!(a_tokens_quota > 0);

    // B keeps working until its own (token) quota is used up.
    let before_b = h.fake.requests().len();
    assert_eq!(generate_as(&h, &b_secret, "gemini-2.5-flash", false).await.status(), 200);
    stats_when(&h, &b, 1).await;
    let (status, v) = error_of(generate_as(&h, &b_secret, "gemini-2.5-flash", false).await).await;
    assert_eq!((status, v["error"]["status"].as_str()), (429, Some("RESOURCE_EXHAUSTED")), "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("1 tokens")), "{v}");
    let (b_tokens_quota, b_kinds) = reported_tokens(&h, before_b);

    // C may use its model only; the proxy key has no quota; a made-up key
    // is no client's.
    let (status, v) = error_of(generate_as(&h, &c_secret, "gemini-2.5-flash", false).await).await;
    assert_eq!((status, v["error"]["status"].as_str()), (403, Some("PERMISSION_DENIED")), "{v}");
    assert_eq!(generate_as(&h, &c_secret, "gemini-2.5-pro", false).await.status(), 200);
    assert_eq!(generate_as(&h, PROXY_KEY, "gemini-2.5-flash", false).await.status(), 200);
    let (status, _) =
        error_of(generate_as(&h, "AIzaSyNOTaCLIENTkey000000000000000000000", "gemini-2.5-flash", false).await).await;
    assert_eq!(status, 401);
    h.assert_only_pool_keys_upstream();

    // Counted as the answers reported, per client.
    let stats = stats_when(&h, &c, 1).await;
    let (sa, sb) = (client(&stats, &a), client(&stats, &b));
    assert_eq!(sa["today"]["requests"], 3);
    assert_eq!(sa["today"]["tokens"].as_u64(), Some(a_tokens_quota));
    assert_eq!(kinds(&sa["tokens"]), a_kinds);
    assert_eq!(sa["models"]["gemini-2.5-flash"]["requests"], 2);
    // And per upstream key × model, as the fake saw them served.
    let mut by_key = std::collections::BTreeMap::<(String, String), (u64, [u64; 4])>::new();
    for r in &h.fake.requests()[before_a..upstream_calls] {
        let model = r.model.clone().expect("a model");
        let row = by_key.entry((h.id_of(r.key().expect("a key")), model)).or_default();
        let u = r.usage.expect("usage");
        row.0 += 1;
        for (i, n) in [u.prompt, u.output, u.cached, u.thinking].into_iter().enumerate() {
            row.1[i] += n;
        }
    }
    let mut counted = std::collections::BTreeMap::new();
    for (key, models) in sa["keys"].as_object().expect("keys") {
        for (model, u) in models.as_object().expect("models") {
            counted.insert((key.clone(), model.clone()), (u["requests"].as_u64().expect("n"), kinds(&u["tokens"])));
        }
    }
    assert_eq!(counted, by_key, "client × key × model as served");
    assert_eq!(sb["today"]["tokens"].as_u64(), Some(b_tokens_quota));
    assert_eq!(kinds(&sb["tokens"]), b_kinds);
    let text = stats.to_string();
    for secret in [&a_secret, &b_secret, &c_secret] {
        assert!(!text.contains(secret.as_str()), "a client secret in /stat.json");
    }

    // A reset leaves the clients' counts (and the proxy key may reset).
    let r = h.http.post(h.url("/stat/reset")).bearer_auth(PROXY_KEY).send().await.expect("reset");
    assert_eq!(r.status(), 200);
    assert_eq!(client(&h.stats().await, &a), sa, "a reset wipes no client's count");

    // Counts and quotas survive a restart.
    h.restart().await;
    let after = h.stats().await;
    assert_eq!(client(&after, &a), sa);
    assert_eq!(client(&after, &b), sb);
    assert_eq!(generate_as(&h, &a_secret, "gemini-2.5-flash", false).await.status(), 429);
    assert_eq!(generate_as(&h, &b_secret, "gemini-2.5-flash", false).await.status(), 429);
    assert_eq!(generate_as(&h, &c_secret, "gemini-2.5-pro", false).await.status(), 200);
    let page =
        h.http.get(h.url("/stat")).bearer_auth(PROXY_KEY).send().await.expect("page").text().await.expect("html");
    assert!(page.contains("three a day") && page.contains("3 / 3"), "the page shows use against quota");

    // Lifting a quota lets the client in again; revoking shuts it out.
    let (status, v) =
        h.admin(Method::PATCH, &format!("/admin/clients/{a}"), Some(json!({"daily_requests": null}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(generate_as(&h, &a_secret, "gemini-2.5-flash", false).await.status(), 200);
    let rows_of = |table: &str| -> i64 {
        let db = rusqlite::Connection::open_with_flags(&h.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("db");
        db.query_row(&format!("SELECT COUNT(*) FROM {table} WHERE client = ?1"), [&a], |r| r.get(0)).expect("count")
    };
    // The store writes in batches: wait for the rows to be as expected.
    let settled = |want_rows: bool| async move {
        for _ in 0..100 {
            let rows = (rows_of("client_key_usage"), rows_of("client_usage"));
            if if want_rows { rows.0 > 0 && rows.1 > 0 } else { rows == (0, 0) } {
                return rows;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        (rows_of("client_key_usage"), rows_of("client_usage"))
    };
    let stored = settled(true).await;
    assert!(stored.0 > 0 && stored.1 > 0, "A's rows are stored: {stored:?}");
    let (status, _) = h.admin(Method::DELETE, &format!("/admin/clients/{a}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(settled(false).await, (0, 0), "revoking deletes A's rows");
    assert_eq!(generate_as(&h, &a_secret, "gemini-2.5-flash", false).await.status(), 401);
    h.restart().await;
    assert_eq!(generate_as(&h, &a_secret, "gemini-2.5-flash", false).await.status(), 401, "revoked for good");
    let mut db = Vec::new();
    for suffix in ["", "-wal", "-journal"] {
        let mut path = h.db.clone().into_os_string();
        path.push(suffix);
        db.extend(std::fs::read(&path).unwrap_or_default());
    }
    assert!(!db.is_empty(), "no database");
    for secret in [&a_secret, &b_secret, &c_secret] {
        assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()), "a client secret in the database");
    }
}

#[tokio::test]
async fn an_open_proxy_takes_only_client_keys_once_it_has_one() {
    let mut h = Harness::with(pool_keys(1), None).await;
    h.with_admin();
    h.restart().await;
    assert_eq!(generate_as(&h, "", "gemini-2.5-flash", false).await.status(), 200, "open: no key needed");
    let (_, secret) = create(&h, json!({"name": "the only one"})).await;
    let (status, v) = error_of(generate_as(&h, "", "gemini-2.5-flash", false).await).await;
    assert_eq!(status, 401, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("client key")), "{v}");
    assert_eq!(generate_as(&h, &secret, "gemini-2.5-flash", false).await.status(), 200);
}
