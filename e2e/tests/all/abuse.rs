//! Callers who try to hurt the pool or get past their limits, on both
//! hosts: words echoed by Google never disable a key, a dead key is still
//! disabled once its check confirms it, only the pool key reaches Google,
//! and a client kept to some models stays on them.

use e2e::Target;
use serde_json::{Value, json};

/// The keys `/stat.json` shows disabled.
fn disabled(stats: &Value) -> Vec<String> {
    let keys = stats["keys"].as_array().expect("keys");
    keys.iter().filter(|k| !k["disabled"].is_null()).map(|k| k["key"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn words_echoed_by_google_never_disable_a_key() {
    let t = Target::fresh_from_env().await;
    let url = format!("{}/v1beta/models/e2e-echo:generateContent", t.proxy);
    for word in ["consumer_suspended", "api key not valid", "reported as leaked"] {
        let body = json!({"contents": [{"parts": [{"text": "hi"}]}], word: true});
        let r = t.http.post(&url).header("x-goog-api-key", &t.proxy_key).json(&body).send().await.expect("generate");
        assert_eq!(r.status(), 400, "{word}");
        let v: Value = r.json().await.expect("json");
        assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains(word)), "Google's answer relayed: {v}");
    }
    let r = t
        .http
        .get(format!("{}/v1beta/files?consumer_suspended=1", t.proxy))
        .header("x-goog-api-key", &t.proxy_key)
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 400, "a listing relays Google's answer to its query");
    let reqs = t.upstream_requests().await;
    assert_eq!(reqs.len(), 4, "one call each, no retry on another key, no check: {reqs:?}");
    assert_eq!(disabled(&t.stats().await), Vec::<String>::new());
    assert_eq!(t.generate("e2e-echo").await.status(), 200, "the pool still serves");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn a_leaked_key_is_disabled_once_its_check_confirms_it() {
    let t = Target::fresh_from_env().await;
    t.behave(&t.keys[1], "leaked").await;
    for _ in 0..4 {
        assert_eq!(t.generate("e2e-leaked").await.status(), 200);
    }
    let reqs = t.upstream_requests().await;
    let checks: Vec<&Value> = reqs.iter().filter(|r| r["path"] == "/v1beta/models").collect();
    assert_eq!(checks.len(), 1, "one check of the suspect key alone: {reqs:?}");
    assert_eq!(checks[0]["credentials"][0][1], t.keys[1].as_str());
    let stats = t.stats_when(|s| !disabled(s).is_empty()).await;
    let reason = &t.key_row(&stats, &t.keys[1])["disabled"]["reason"];
    assert!(reason.as_str().is_some_and(|r| r.contains("leaked")), "{reason}");
    assert_eq!(disabled(&stats).len(), 1);
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn only_the_pool_key_reaches_google() {
    let t = Target::fresh_from_env().await;
    let r = t
        .http
        .post(format!(
            "{}/v1beta/models/e2e-creds:generateContent?access_token=ya29.a0e2eCALLERtoken&alt=json",
            t.proxy
        ))
        .header("x-goog-api-key", &t.proxy_key)
        .header("referer", "https://evil.example/")
        .header("x-android-package", "com.evil")
        .header("x-android-cert", "00:11")
        .header("x-ios-bundle-identifier", "com.evil")
        .header("x-goog-user-project", "someone-elses-project")
        .header("x-http-method-override", "DELETE")
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .expect("generate");
    assert_eq!(r.status(), 200);
    let reqs = t.upstream_requests().await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0]["query"], "alt=json");
    assert_eq!(reqs[0]["credentials"].as_array().map(Vec::len), Some(1));
    let names: Vec<String> = reqs[0]["header_names"]
        .as_array()
        .expect("header names")
        .iter()
        .map(|n| n.as_str().unwrap_or_default().to_ascii_lowercase())
        .collect();
    for h in [
        "referer",
        "x-android-package",
        "x-android-cert",
        "x-ios-bundle-identifier",
        "x-goog-user-project",
        "x-http-method-override",
        "authorization",
    ] {
        assert!(!names.contains(&h.to_owned()), "{h} reached the upstream: {names:?}");
    }
    t.assert_only_pool_keys_upstream().await;
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn a_client_kept_to_some_models_stays_on_them() {
    let t = Target::fresh_from_env().await;
    let (id, secret) =
        crate::clients::create(&t, json!({"name": "e2e kept to one model", "models": ["e2e-allowed"]})).await;
    let post = |path: &str, body: Value| {
        t.http.post(format!("{}{path}", t.proxy)).header("x-goog-api-key", &secret).json(&body)
    };
    // An OpenAI-style batch names its models in its file: refused.
    let r = t
        .http
        .post(format!("{}/v1/batches", t.proxy))
        .bearer_auth(&secret)
        .json(&json!({"input_file_id": "files/x", "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .send()
        .await
        .expect("openai batch");
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "permission_error", "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("batch")), "{v}");
    // A native batch, a cache and an interaction of another model.
    let r = post("/v1beta/models/e2e-other:batchGenerateContent", json!({"batch": {}})).send().await.expect("batch");
    assert_eq!(r.status(), 403);
    let r = post("/v1beta/cachedContents", json!({"model": "models/e2e-other", "contents": []})).send().await;
    assert_eq!(r.expect("cache").status(), 403);
    let r = post("/v1beta/interactions", json!({"model": "e2e-other", "input": "hi"})).send().await;
    assert_eq!(r.expect("interaction").status(), 403);
    let r = post("/v1beta/models/e2e-other:countTokens", json!({"contents": []})).send().await;
    assert_eq!(r.expect("count").status(), 403);
    // `model` twice: one for the proxy's check, one for Google's?
    let twice = r#"{"model": "models/e2e-allowed", "contents": [], "model": "models/e2e-other"}"#;
    let r = t
        .http
        .post(format!("{}/v1beta/cachedContents", t.proxy))
        .header("x-goog-api-key", &secret)
        .header("content-type", "application/json")
        .body(twice)
        .send()
        .await
        .expect("cache, model twice");
    assert_eq!(r.status(), 400);
    assert!(t.upstream_requests().await.is_empty(), "nothing refused went upstream");
    // Its own model works.
    assert_eq!(crate::clients::generate_as(&t, &secret, "e2e-allowed", false).await.status(), 200);
    crate::clients::revoke(&t, &id).await;
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn clients_cannot_see_each_others_files_caches_and_batches() {
    let t = Target::fresh_from_env().await;
    let (alice, a) = crate::clients::create(&t, json!({"name": "e2e alice"})).await;
    let (bob, b) = crate::clients::create(&t, json!({"name": "e2e bob"})).await;
    let call = |key: &str, method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = t.http.request(method, format!("{}{path}", t.proxy)).header("x-goog-api-key", key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send()
    };
    let file = t.upload_file_as(&a, 64, "text/plain").await.name;
    let r = call(
        &a,
        reqwest::Method::POST,
        "/v1beta/cachedContents",
        Some(json!({"model": "models/e2e-cache", "contents": []})),
    );
    let r = r.await.expect("cache");
    assert_eq!(r.status(), 200);
    let cache = r.json::<Value>().await.expect("json")["name"].as_str().expect("a name").to_owned();
    let batch_body = json!({"batch": {"inputConfig": {"requests": {"requests": [{"request": {"contents": []}}]}}}});
    let r = call(&a, reqwest::Method::POST, "/v1beta/models/e2e-batch:batchGenerateContent", Some(batch_body));
    let r = r.await.expect("batch");
    assert_eq!(r.status(), 200);
    let batch = r.json::<Value>().await.expect("json")["name"].as_str().expect("a name").to_owned();
    let before = t.upstream_requests().await.len();

    // Bob: every one is missing, and nothing goes upstream.
    let prompt =
        |name: &str| json!({"contents": [{"parts": [{"fileData": {"fileUri": name, "mimeType": "text/plain"}}]}]});
    let tries = [
        (reqwest::Method::GET, format!("/v1beta/{file}"), None),
        (reqwest::Method::DELETE, format!("/v1beta/{file}"), None),
        (reqwest::Method::POST, "/v1beta/models/e2e-x:generateContent".to_owned(), Some(prompt(&file))),
        (reqwest::Method::GET, format!("/v1beta/{cache}"), None),
        (reqwest::Method::DELETE, format!("/v1beta/{cache}"), None),
        (
            reqwest::Method::POST,
            "/v1beta/models/e2e-x:generateContent".to_owned(),
            Some(json!({"cachedContent": cache, "contents": []})),
        ),
        (reqwest::Method::GET, format!("/v1beta/{batch}"), None),
        (reqwest::Method::POST, format!("/v1beta/{batch}:cancel"), None),
    ];
    for (method, path, body) in tries {
        let r = call(&b, method.clone(), &path, body).await.expect("bob");
        assert_eq!(r.status(), 404, "{method} {path}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"]["status"], "NOT_FOUND", "{v}");
    }
    assert_eq!(t.upstream_requests().await.len(), before, "nothing of Bob's went upstream");
    // Listings: Bob sees none of Alice's; Alice sees hers; the proxy key all.
    let names = |v: &Value, member: &str| -> Vec<String> {
        v[member].as_array().into_iter().flatten().filter_map(|i| i["name"].as_str().map(str::to_owned)).collect()
    };
    for (key, sees) in [(&b, false), (&a, true), (&t.proxy_key, true)] {
        for (path, member, name) in [
            ("/v1beta/files?pageSize=100", "files", &file),
            ("/v1beta/cachedContents?pageSize=100", "cachedContents", &cache),
            ("/v1beta/batches?pageSize=100", "operations", &batch),
        ] {
            let r = call(key, reqwest::Method::GET, path, None).await.expect("list");
            assert_eq!(r.status(), 200, "{path}");
            let v: Value = r.json().await.expect("json");
            assert_eq!(names(&v, member).contains(name), sees, "{path}: {v}");
        }
    }
    // Alice reads and deletes her own; her finished batch's tokens (3 + 4
    // for its one request) count once, however often she reads it.
    for _ in 0..2 {
        assert_eq!(call(&a, reqwest::Method::GET, &format!("/v1beta/{batch}"), None).await.expect("get").status(), 200);
    }
    let stats = t.stats_when(|s| crate::clients::client(s, &alice)["today"]["tokens"] == 7).await;
    assert_eq!(crate::clients::client(&stats, &alice)["today"]["tokens"], 7, "{stats}");
    assert_eq!(call(&a, reqwest::Method::GET, &format!("/v1beta/{file}"), None).await.expect("get").status(), 200);
    assert_eq!(call(&a, reqwest::Method::DELETE, &format!("/v1beta/{cache}"), None).await.expect("del").status(), 200);
    crate::clients::revoke(&t, &alice).await;
    crate::clients::revoke(&t, &bob).await;
}
