//! The scenario list, run by `scripts/e2e` against one running host at a
//! time. Every scenario needs that proxy, so each is `#[ignore]`d for a plain
//! `cargo test` (which reports it as ignored, not passed) and the runner
//! passes `--ignored`; run without the runner's environment, a scenario
//! fails loudly. Scenarios that apply to one host only sit in modules the
//! runner filters by name (`worker_only::`), and the restart scenario's
//! phases in `phases::`, run one at a time around a restart.

mod abuse;
mod admin;
mod clients;
mod live;
mod translate;

use e2e::Target;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn native_and_openai_requests_carry_one_pool_key() {
    let t = Target::fresh_from_env().await;
    let r = t.generate("e2e-basic").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "Hello from the fake e2e-basic.");
    let r = t.chat("e2e-basic").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from the fake e2e-basic.");
    let reqs = t.upstream_requests().await;
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0]["path"], "/v1beta/models/e2e-basic:generateContent");
    assert_eq!(reqs[0]["credentials"][0][0], "goog-api-key");
    assert_eq!(reqs[1]["path"], "/v1beta/openai/chat/completions");
    assert_eq!(reqs[1]["credentials"][0][0], "bearer");
    t.assert_only_pool_keys_upstream().await;
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn v1_models_follows_the_credential() {
    let t = Target::fresh_from_env().await;
    t.http.get(format!("{}/v1/models", t.proxy)).header("x-goog-api-key", &t.proxy_key).send().await.expect("gemini");
    t.http.get(format!("{}/v1/models", t.proxy)).bearer_auth(&t.proxy_key).send().await.expect("openai");
    let paths: Vec<String> =
        t.upstream_requests().await.iter().map(|r| r["path"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(paths, ["/v1beta/models", "/v1beta/openai/models"]);
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn streams_arrive_before_the_upstream_finishes() {
    let t = Target::fresh_from_env().await;
    t.fake("hold", json!({})).await;
    let mut r = t
        .http
        .post(format!("{}/v1beta/models/e2e-stream:streamGenerateContent?alt=sse", t.proxy))
        .header("x-goog-api-key", &t.proxy_key)
        .json(&json!({"contents": []}))
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status(), 200);
    let first =
        tokio::time::timeout(Duration::from_secs(10), r.chunk()).await.expect("first chunk while the upstream holds");
    let first = String::from_utf8(first.expect("chunk").expect("bytes").to_vec()).expect("utf8");
    assert!(first.starts_with("data: ") && !first.contains("chunk 1"), "{first}");
    t.fake("release", json!({})).await;
    let mut rest = String::new();
    while let Some(c) = r.chunk().await.expect("rest") {
        rest.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(rest.contains("chunk 2"));
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn per_day_429_rotates_and_marks_the_key() {
    let t = Target::fresh_from_env().await;
    t.behave(&t.keys[0], "per-day").await;
    for _ in 0..4 {
        assert_eq!(t.generate("e2e-day").await.status(), 200);
    }
    let seen = t.keys_seen().await;
    assert_eq!(seen.iter().filter(|k| **k == t.keys[0]).count(), 1, "the exhausted key was tried again: {seen:?}");
    let stats = t.stats().await;
    let cell = &t.key_row(&stats, &t.keys[0])["models"]["e2e-day"];
    assert_eq!(cell["state"], "exhausted");
    assert!(cell["reason"].as_str().is_some_and(|r| r.contains("quota")));
    assert!(!stats.to_string().contains(&t.keys[0]), "a secret in /stat.json");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn per_minute_429_cools_the_key() {
    let t = Target::fresh_from_env().await;
    t.behave(&t.keys[0], "per-minute:600").await;
    for _ in 0..3 {
        assert_eq!(t.generate("e2e-minute").await.status(), 200);
    }
    let stats = t.stats().await;
    assert_eq!(t.key_row(&stats, &t.keys[0])["models"]["e2e-minute"]["state"], "cooling");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn invalid_keys_are_disabled() {
    let t = Target::fresh_from_env().await;
    t.behave(&t.keys[1], "invalid").await;
    for _ in 0..4 {
        assert_eq!(t.chat("e2e-invalid").await.status(), 200);
    }
    let seen = t.keys_seen().await;
    assert_eq!(seen.iter().filter(|k| **k == t.keys[1]).count(), 1);
    let stats = t.stats().await;
    assert!(
        t.key_row(&stats, &t.keys[1])["disabled"]["reason"].as_str().is_some_and(|r| r.contains("API key not valid"))
    );
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn all_keys_exhausted_answer_429_in_the_callers_dialect() {
    let t = Target::fresh_from_env().await;
    t.behave("*", "per-day").await;
    let r = t.generate("e2e-all").await;
    assert_eq!(r.status(), 429);
    let r = t.chat("e2e-all").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn the_proxy_key_is_required() {
    let t = Target::fresh_from_env().await;
    let r = t
        .http
        .post(format!("{}/v1beta/models/e2e-auth:generateContent", t.proxy))
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
    let r = t.http.get(format!("{}/stat.json", t.proxy)).send().await.expect("stats");
    assert_eq!(r.status(), 401);
    let r = t
        .http
        .post(format!("{}/v1beta/models/e2e-auth:generateContent?key={}", t.proxy, t.proxy_key))
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let reqs = t.upstream_requests().await;
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0]["query"].is_null(), "the client's ?key= went upstream");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn the_stat_page_speaks_chinese_by_accept_language_query_or_cookie() {
    let t = Target::fresh_from_env().await;
    let page = |lang: &'static str, extra: Option<(&'static str, &'static str)>, path: &'static str| {
        let mut r = t.http.get(format!("{}{path}", t.proxy)).header("accept-language", lang);
        if let Some((name, value)) = extra {
            r = r.header(name, value);
        }
        if !t.proxy_key.is_empty() {
            r = r.bearer_auth(&t.proxy_key);
        }
        r
    };
    let zh = page("zh-CN,zh;q=0.9,en;q=0.8", None, "/stat").send().await.expect("page").text().await.expect("html");
    assert!(zh.contains(r#"<html lang="zh-CN">"#) && zh.contains("刷新") && zh.contains("每小时调用次数"), "{zh}");
    assert!(!zh.contains(">Refresh<"));
    let en = page("en-US,en;q=0.9", None, "/stat").send().await.expect("page").text().await.expect("html");
    assert!(en.contains(r#"<html lang="en">"#) && en.contains(">Refresh<"));
    // The switch's cookie, and the query, win over the browser's wish.
    let kept = page("zh-CN", Some(("cookie", "stat_lang=en")), "/stat").send().await.expect("page");
    assert!(kept.text().await.expect("html").contains(r#"<html lang="en">"#));
    let asked = page("en", None, "/stat?lang=zh-CN").send().await.expect("page");
    assert!(asked.text().await.expect("html").contains(r#"<html lang="zh-CN">"#));
    // The sign-in form too.
    let login = t.http.get(format!("{}/stat", t.proxy)).header("accept-language", "zh-CN").send().await.expect("form");
    if !t.proxy_key.is_empty() {
        assert_eq!(login.status(), 401);
        assert!(login.text().await.expect("html").contains("代理密钥"));
    }
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn the_stat_page_shows_marks_and_reasons_without_secrets() {
    let t = Target::fresh_from_env().await;
    t.behave(&t.keys[0], "per-day").await;
    for _ in 0..3 {
        t.generate("e2e-page").await;
    }
    let r = t.http.get(format!("{}/stat", t.proxy)).send().await.expect("page");
    assert_eq!(r.status(), 401);
    assert!(r.text().await.expect("text").contains(r#"action="/stat/login""#), "the login form");
    let r = t.http.get(format!("{}/stat", t.proxy)).bearer_auth(&t.proxy_key).send().await.expect("page");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap_or_default().starts_with("text/html"));
    let html = r.text().await.expect("html");
    let masked = e2e::masked(&t.keys[0]);
    assert!(html.contains(&format!("<code>{masked}</code>")));
    assert!(html.contains(r#"class="mark exhausted""#));
    assert!(html.contains("e2e-page"));
    assert!(html.contains("exceeded your current quota"));
    for k in t.keys.iter().chain([&t.proxy_key]) {
        assert!(!html.contains(k.as_str()), "a secret in /stat");
    }
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn browser_apps_get_cors() {
    let t = Target::fresh_from_env().await;
    let r = t
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1beta/models/e2e-cors:generateContent", t.proxy))
        .header("origin", "https://chat.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-goog-api-key, content-type")
        .send()
        .await
        .expect("preflight");
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = t.generate("e2e-cors").await;
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn an_endless_error_body_is_read_only_up_to_the_bound() {
    let t = Target::fresh_from_env().await;
    t.behave(&t.keys[0], "endless-error").await;
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(20), t.generate("e2e-endless"))
            .await
            .expect("an answer while the upstream's error body is still coming");
        assert_eq!(r.status(), 200);
    }
    // A 5xx does not take the key out of rotation: each time it served, it
    // failed, was counted, and the request moved on.
    let seen = t.keys_seen().await;
    let failed = seen.iter().filter(|k| **k == t.keys[0]).count();
    assert!(failed >= 1, "{seen:?}");
    let stats = t.stats().await;
    assert_eq!(t.key_row(&stats, &t.keys[0])["models"]["e2e-endless"]["errors"], failed, "{stats}");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn a_stream_that_breaks_off_counts_against_the_key() {
    let t = Target::fresh_from_env().await;
    for k in &t.keys {
        t.behave(k, "cut").await;
    }
    // The cut stream goes on a connection of its own, never put back in the
    // pool: in `wrangler dev` the dev server's proxy ends the broken body
    // as if it were whole, and a later request on that same connection
    // could wait on it (once in CI, /stat.json timed out after 30 s).
    let alone =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(0).build().expect("client");
    let r = alone
        .post(format!("{}/v1beta/models/e2e-cut:streamGenerateContent?alt=sse", t.proxy))
        .header("x-goog-api-key", &t.proxy_key)
        .json(&json!({"contents": []}))
        .send()
        .await;
    let ended_cleanly = match r {
        Ok(mut r) => loop {
            match r.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => break true,
                Err(_) => break false,
            }
        },
        Err(_) => false,
    };
    // host-runner aborts the client's response. In `wrangler dev` the
    // client sees a clean end whatever the Worker does: the dev server's
    // proxy in front of the Worker ends a body that broke off (measured
    // with the body piped and passed through as it is alike), so only the
    // report is checked there.
    if t.host == "host-runner" {
        assert!(!ended_cleanly, "a cut stream must not end cleanly");
    }
    // The report lands a moment after the stream's end: poll for it. In
    // `wrangler dev` a request sent just after a cut stream can stall in
    // the dev server in front of the Worker: measured once in about 180
    // runs here and twice in CI, the /stat.json request never reached the
    // Worker (its inspector log shows no call to the key store), whose
    // report had landed. So each poll goes on a connection of its own, with
    // a short timeout, and a stall there is polled again (a few at most);
    // on host-runner a stall fails the scenario.
    let polls =
        reqwest::Client::builder().timeout(Duration::from_secs(5)).pool_max_idle_per_host(0).build().expect("client");
    let mut stalls = 0;
    let mut cell = Value::Null;
    for _ in 0..100 {
        let sent = polls.get(format!("{}/stat.json", t.proxy)).bearer_auth(&t.proxy_key).send().await;
        let stats: Value = match sent {
            Ok(r) => {
                assert_eq!(r.status(), 200, "/stat.json");
                r.json().await.expect("/stat.json")
            }
            Err(e) if e.is_timeout() && t.host != "host-runner" && stalls < 3 => {
                stalls += 1;
                continue;
            }
            Err(e) => panic!("/stat.json after {stalls} stalls: {e}"),
        };
        let served = t.keys_seen().await;
        cell = t.key_row(&stats, &served[0])["models"]["e2e-cut"].clone();
        if cell["errors"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cell["errors"], 1, "the break was not reported: {cell}");
    assert_eq!(cell["successes"], 0, "{cell}");
    assert_eq!(cell["requests"], 1, "{cell}");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn the_login_form_body_is_bounded() {
    let t = Target::fresh_from_env().await;
    let big = format!("key={}", "x".repeat(100_000));
    let r = t
        .http
        .post(format!("{}/stat/login", t.proxy))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.expect("a JSON error");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("limit")), "{v}");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn header_values_only_one_host_could_send_are_dropped_on_both() {
    let t = Target::fresh_from_env().await;
    let odd = reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").expect("obs-text is a valid header value");
    let r = t
        .http
        .post(format!("{}/v1beta/models/e2e-headers:generateContent", t.proxy))
        .header("x-goog-api-key", &t.proxy_key)
        .header("x-plain", "ok")
        .header("x-odd", odd)
        .json(&json!({"contents": []}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let reqs = t.upstream_requests().await;
    let names: Vec<&str> =
        reqs[0]["header_names"].as_array().expect("names").iter().filter_map(Value::as_str).collect();
    assert!(names.contains(&"x-plain"), "{names:?}");
    assert!(!names.contains(&"x-odd"), "{names:?}");
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn oversized_heads_are_refused_in_the_callers_dialect() {
    let t = Target::fresh_from_env().await;
    let r = t
        .http
        .post(format!("{}/v1beta/models/e2e-head:generateContent", t.proxy))
        .header("x-goog-api-key", &t.proxy_key)
        .header("x-big", "a".repeat(100_000))
        .json(&json!({"contents": []}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 431);
    let v: Value = r.json().await.expect("a JSON error");
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{v}");
    let r = t
        .http
        .post(format!("{}/v1beta/models/e2e-head:generateContent?pad={}", t.proxy, "u".repeat(12_000)))
        .header("x-goog-api-key", &t.proxy_key)
        .json(&json!({"contents": []}))
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 414);
    assert!(t.upstream_requests().await.is_empty());
}

/// During an outage (a 5xx on every key), the calls of a model Google's
/// listing named count under its own name, not `(untracked models)`.
#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn an_outage_counts_under_a_listed_models_own_name() {
    const LISTED: &str = "gemini-2.5-flash-preview-09-2025";
    let t = Target::fresh_from_env().await;
    let r = t.http.get(format!("{}/v1beta/models", t.proxy)).header("x-goog-api-key", &t.proxy_key).send().await;
    assert_eq!(r.expect("the listing").status(), 200);
    t.behave("*", "5xx:503").await;
    for _ in 0..2 {
        assert!(t.generate(LISTED).await.status().is_server_error());
    }
    // An invented name still waits in the bucket.
    assert!(t.generate("gemini-e2e-never-listed").await.status().is_server_error());
    let stats = t.stats_when(|s| s["models"][LISTED]["requests"].as_u64().is_some_and(|n| n >= 2)).await;
    assert!(stats["models"][LISTED]["requests"].as_u64().is_some_and(|n| n >= 2), "{}", stats["models"]);
    assert!(stats["models"].get("gemini-e2e-never-listed").is_none(), "{}", stats["models"]);
}

/// Each fault before the response head fails over to another key in
/// time; a 2xx that breaks off reaches the client as a break. The runner
/// starts the hosts with 2 s upstream timeouts.
#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn faulty_upstreams_fail_over_or_break_off_in_time() {
    let t = Target::fresh_from_env().await;
    let faults = [
        "garbage",
        "garbage:status",
        "garbage:header",
        "garbage:length",
        "garbage:status-open",
        "reset",
        "stall",
        "5xx:503",
        "cut-at-head",
    ];
    for fault in faults {
        t.fresh().await;
        t.behave(&t.keys[0], fault).await;
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), t.generate("e2e-fault"))
            .await
            .unwrap_or_else(|_| panic!("no answer within 10 s with a {fault} upstream"));
        assert_eq!(r.status(), 200, "{fault}: not failed over");
        let seen = t.keys_seen().await;
        assert_eq!(seen.first(), Some(&t.keys[0]), "{fault}: the faulty key went first");
        assert!(seen.len() >= 2, "{fault}: {seen:?}");
        #[expect(clippy::print_stderr, reason = "the measured figure, shown with --nocapture")]
        {
            eprintln!("{fault}: answered in {} ms", started.elapsed().as_millis());
        }
    }
    // A malformed answer head fails over the same way for a chat and a
    // stream, and reaches no client as a hang or a 500.
    for fault in ["garbage:status", "garbage:header", "garbage:status-open"] {
        for call in ["chat", "stream"] {
            t.fresh().await;
            t.behave(&t.keys[0], fault).await;
            let sent = async {
                match call {
                    "chat" => t.chat("e2e-fault").await,
                    _ => t
                        .http
                        .post(format!("{}/v1beta/models/e2e-fault:streamGenerateContent?alt=sse", t.proxy))
                        .header("x-goog-api-key", &t.proxy_key)
                        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
                        .send()
                        .await
                        .expect("stream"),
                }
            };
            let r = tokio::time::timeout(Duration::from_secs(10), sent)
                .await
                .unwrap_or_else(|_| panic!("no answer within 10 s to a {call} with a {fault} upstream"));
            assert_eq!(r.status(), 200, "{call} with {fault}: not failed over");
            assert!(!r.text().await.expect("a body").is_empty(), "{call} with {fault}");
            let seen = t.keys_seen().await;
            assert!(seen.first() == Some(&t.keys[0]) && seen.len() >= 2, "{call} with {fault}: {seen:?}");
        }
    }
    // Every key hangs: a 504, in time.
    t.fresh().await;
    t.behave("*", "stall").await;
    let r = tokio::time::timeout(Duration::from_secs(20), t.chat("e2e-fault")).await.expect("an answer in time");
    assert_eq!(r.status(), 504);
    let v: Value = r.json().await.expect("a JSON error");
    assert_eq!(v["error"]["code"], "upstream_timeout", "{v}");
    // A JSON answer cut short after its head: the client sees a broken body.
    t.fresh().await;
    t.behave("*", "cut-json").await;
    let body = tokio::time::timeout(Duration::from_secs(10), async { t.generate("e2e-fault").await.bytes().await })
        .await
        .expect("the break in time");
    if t.host == "host-runner" {
        assert!(body.is_err(), "a cut body must not end cleanly");
    } else if let Ok(b) = body {
        // wrangler dev's proxy ends a broken body cleanly (see the stream
        // scenario); what arrived is at least not the whole answer.
        assert!(serde_json::from_slice::<Value>(&b).is_err(), "the whole answer arrived");
    }
}

#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn invented_model_names_never_lock_out_a_real_model() {
    let t = Target::fresh_from_env().await;
    // More made-up names than the proxy tracks, answered 404 upstream.
    let mut calls = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let t = t.clone();
        calls.spawn(async move {
            for i in 0..65 {
                let r = t.generate(&format!("made-up-{worker}-{i}")).await;
                assert_eq!(r.status(), 404);
            }
        });
    }
    while let Some(done) = calls.join_next().await {
        done.expect("the junk calls");
    }
    assert_eq!(t.generate("gemini-2.5-flash-lite").await.status(), 200);
    // The reports of the last calls land a moment later on the Worker.
    let stats = t.stats_when(|s| s["models"]["(untracked models)"]["requests"] == 520).await;
    let models: Vec<&str> = stats["models"].as_object().expect("models").keys().map(String::as_str).collect();
    assert_eq!(models, ["(untracked models)", "gemini-2.5-flash-lite"], "{stats}");
    assert_eq!(stats["models"]["(untracked models)"]["requests"], 520, "every call counted");
}

/// Concurrent mixed traffic while the keys' behaviours keep changing among
/// 429s, 5xx, resets, garbage, stalls and broken streams: every client gets
/// an answer, `/stat.json` stays quick, and afterwards its counts equal the
/// fake upstream's log, key by key and model by model.
#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn load_and_faults_lose_nothing() {
    let t = Target::fresh_from_env().await;
    let models = ["e2e-load-a", "e2e-load-b"];
    // Each model tracked first (an accepted answer), so that its calls are
    // counted under its name.
    for m in models {
        assert_eq!(t.generate(m).await.status(), 200);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chaos = {
        let (t, stop) = (t.clone(), stop.clone());
        tokio::spawn(async move {
            let faults = [
                "ok",
                "5xx:503",
                "per-minute:1",
                "reset",
                "garbage",
                "stall",
                "cut",
                "garbage:status",
                "cut-json",
                "bare-429",
            ];
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for (k, key) in t.keys.iter().enumerate() {
                    t.behave(key, faults[(i + 3 * k) % faults.len()]).await;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    let stat_latency = {
        let (t, stop) = (t.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ms = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let started = std::time::Instant::now();
                t.stats().await;
                ms.push(started.elapsed().as_millis() as u64);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ms
        })
    };
    // The clients open a connection per request. After an answer that broke
    // off (the cut faults), wrangler dev's proxy ends the body as if it were
    // complete and closes the connection a moment later, so a pooled client
    // may send its next request into that close and meet a reset before any
    // proxy saw the request (measured with 16 keep-alive clients, 320 cut
    // answers: 12 resets; one connection per request: none).
    let fresh_connections = Target {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(0)
            .build()
            .expect("client"),
        ..t.clone()
    };
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..32 {
        let t = fresh_connections.clone();
        clients.spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..6 {
                let model = models[(c + i) % 2];
                let sent = match (c + i) % 3 {
                    0 => t.generate(model).await,
                    1 => t.chat(model).await,
                    _ => t
                        .http
                        .post(format!("{}/v1beta/models/{model}:streamGenerateContent?alt=sse", t.proxy))
                        .header("x-goog-api-key", &t.proxy_key)
                        .json(&json!({"contents": []}))
                        .send()
                        .await
                        .expect("a stream's head"),
                };
                let status = sent.status().as_u16();
                let _ = sent.bytes().await;
                statuses.push(status);
            }
            statuses
        });
    }
    let mut answered = 0;
    while let Some(done) = clients.join_next().await {
        let statuses = done.expect("a client got an answer to every request");
        assert!(statuses.iter().all(|s| matches!(s, 200 | 429 | 502 | 503 | 504)), "{statuses:?}");
        answered += statuses.len();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    chaos.await.expect("chaos");
    let mut latency = stat_latency.await.expect("latency");
    assert_eq!(answered, 32 * 6);
    latency.sort_unstable();
    let p50 = latency[latency.len() / 2];
    let max = *latency.last().expect("samples");
    #[expect(clippy::print_stderr, reason = "the measured figure, shown with --nocapture")]
    {
        eprintln!("{}: /stat.json under load: {} samples, p50 {p50} ms, max {max} ms", t.host, latency.len());
    }
    assert!(max < 5_000, "/stat.json took {max} ms under load");
    // Reports land a moment after each answer: poll until they all have.
    let expected = |log: &[Value]| {
        let mut by: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for r in log {
            let key = r["credentials"][0][1].as_str().unwrap_or_default().to_owned();
            let model = r["model"].as_str().unwrap_or_default().to_owned();
            *by.entry((key, model)).or_default() += 1;
        }
        by
    };
    let counted = |stats: &Value| {
        let mut by: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for key in &t.keys {
            for (model, cell) in t.key_row(stats, key)["models"].as_object().into_iter().flatten() {
                by.insert((key.clone(), model.clone()), cell["requests"].as_u64().unwrap_or(0));
            }
        }
        by
    };
    let log = t.upstream_requests().await;
    let want = expected(&log);
    let mut got = counted(&t.stats().await);
    for _ in 0..200 {
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        got = counted(&t.stats().await);
    }
    assert_eq!(got, want, "/stat.json's counts against the upstream's log");
}

/// With `ACCESS_LOG=json` (scripts/e2e sets it), each request leaves one
/// JSON line in the host's log (`E2E_HOST_LOG`): its path without the
/// query, status, model, each attempt's key by id and outcome, tokens;
/// never a key.
#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn each_request_leaves_one_access_log_line() {
    let t = Target::fresh_from_env().await;
    let log = std::env::var("E2E_HOST_LOG").expect("E2E_HOST_LOG: the host's log, which scripts/e2e keeps");
    // Every key but the last answers 429 per minute: one attempt or more.
    for key in &t.keys[..t.keys.len() - 1] {
        t.behave(key, "per-minute").await;
    }
    let model = "e2e-access-log";
    let r = t
        .http
        .post(format!("{}/v1beta/models/{model}:generateContent?key={}", t.proxy, t.proxy_key))
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .expect("generate");
    assert_eq!(r.status(), 200);
    let mut lines = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        lines = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l.get(l.find('{')?..)?).ok())
            .filter(|v| v["model"] == model)
            .collect();
        if !lines.is_empty() {
            for key in t.keys.iter().chain([&t.proxy_key]) {
                assert!(!text.contains(key.as_str()), "a key in the host's log");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lines.len(), 1, "one line for the request: {lines:?}");
    let line = &lines[0];
    assert_eq!(line["path"], format!("/v1beta/models/{model}:generateContent"), "{line}");
    assert_eq!((line["status"].as_u64(), line["method"].as_str()), (Some(200), Some("POST")), "{line}");
    let outcomes: Vec<&str> =
        line["attempts"].as_array().into_iter().flatten().filter_map(|a| a["outcome"].as_str()).collect();
    let (last, before) = outcomes.split_last().expect("an attempt");
    assert!(*last == "success" && before.iter().all(|o| *o == "rate-limited"), "{line}");
    assert!(line["attempts"][0]["key"].as_str().is_some_and(|k| k.starts_with("k-")), "keys by id: {line}");
    assert!(line["tokens"]["prompt"].as_u64().is_some(), "{line}");
    assert!(line["ms"].as_u64().is_some() && line.get("error").is_none(), "{line}");
    t.fresh().await;
}

/// The restart scenario, one phase per run of the runner: it runs
/// `before_restart`, restarts the host, runs `after_restart`, and on the
/// Worker fires the cron trigger and runs `after_cron`.
mod phases {
    use e2e::Target;
    use reqwest::Method;
    use serde_json::{Value, json};

    /// A run-time key added before the restart.
    const RESTART_KEY: &str = "AQ.Ab8RN6e2eKEPTacrossRESTARTSkey0123456789";

    /// Phase 1 of the restart scenario: leaves a mark.
    #[tokio::test]
    #[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
    async fn before_restart() {
        let t = Target::fresh_from_env().await;
        t.behave(&t.keys[0], "per-day").await;
        for _ in 0..3 {
            t.generate("e2e-persist").await;
        }
        let stats = t.stats().await;
        assert_eq!(t.key_row(&stats, &t.keys[0])["models"]["e2e-persist"]["state"], "exhausted");
        // Admin changes: a run-time key with a project, a key disabled with a note.
        let (status, v) =
            t.admin(Method::POST, "/admin/keys", Some(json!({"keys": RESTART_KEY, "project": "kept"}))).await;
        assert_eq!(status, 200, "{v}");
        let id = t.key_id(&t.keys[1]).await;
        let (status, v) = t
            .admin(Method::POST, &format!("/admin/keys/{id}/disable"), Some(json!({"note": "kept across restarts"})))
            .await;
        assert_eq!(status, 200, "{v}");
        // A client that used up its quota of one request.
        let (client, secret) = crate::clients::create(&t, json!({"name": "e2e kept", "daily_requests": 1})).await;
        assert_eq!(crate::clients::generate_as(&t, &secret, "e2e-persist-client", false).await.status(), 200);
        let stats = t.stats_when(|s| crate::clients::client(s, &client)["today"]["requests"] == 1).await;
        assert_eq!(crate::clients::client(&stats, &client)["today"]["requests"], 1, "{stats}");
        std::fs::write(kept_client(&t), format!("{client}\n{secret}")).expect("the client's secret, for phase 2");
        // A Gemini 3 tool call relayed from Google's OpenAI layer: its
        // signature is kept for the client's next turn, after the restart.
        let call = signed_chat_call(&t).await;
        std::fs::write(t.store_dir.with_extension("call"), call).expect("the call id, for phase 2");
        // A model alias set at run time.
        let aliases = json!({"aliases": "e2e-kept-alias=gemini-2.5-flash-lite"});
        let (status, v) = t.admin(Method::PUT, "/admin/aliases", Some(aliases)).await;
        assert_eq!(status, 200, "{v}");
    }

    const CHAT_TOOLS: &str =
        r#"[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]"#;

    /// A chat completion on Gemini 3 that calls a tool; its call id.
    async fn signed_chat_call(t: &Target) -> String {
        let tools: Value = serde_json::from_str(CHAT_TOOLS).expect("tools");
        let body = json!({"model": "gemini-3-flash-preview", "tools": tools,
                          "messages": [{"role": "user", "content": "CALL get_weather {\"city\": \"Oslo\"}"}]});
        let r = t.http.post(format!("{}/v1/chat/completions", t.proxy)).bearer_auth(&t.proxy_key).json(&body);
        let v: Value = r.send().await.expect("chat").json().await.expect("json");
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert!(call.pointer("/extra_content/google/thought_signature").is_some(), "{v}");
        call["id"].as_str().expect("a call id").to_owned()
    }

    /// The follow-up turn of `call` as a client that drops Google's
    /// `extra_content` sends it: Google's layer answers it only with the
    /// signature the proxy kept.
    async fn chat_follow_up(t: &Target, call: &str) -> (u16, Value) {
        let tools: Value = serde_json::from_str(CHAT_TOOLS).expect("tools");
        let body = json!({"model": "gemini-3-flash-preview", "tools": tools, "messages": [
            {"role": "user", "content": "CALL get_weather {\"city\": \"Oslo\"}"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": call, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": call, "content": "snow"}
        ]});
        let r = t.http.post(format!("{}/v1/chat/completions", t.proxy)).bearer_auth(&t.proxy_key).json(&body);
        let r = r.send().await.expect("chat");
        (r.status().as_u16(), r.json().await.expect("json"))
    }

    /// Where phase 1 leaves the client it created for phase 2.
    fn kept_client(t: &Target) -> std::path::PathBuf {
        t.store_dir.with_extension("client")
    }

    /// Phase 2: the mark and counts survived.
    #[tokio::test]
    #[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
    async fn after_restart() {
        let t = Target::from_env();
        // The tool call's signature survived: the client's next turn,
        // without it, is answered with the model's reasoning kept.
        let call = std::fs::read_to_string(t.store_dir.with_extension("call")).expect("phase 1's call");
        let (status, v) = chat_follow_up(&t, &call).await;
        assert_eq!(status, 200, "{v}");
        let text = v["choices"][0]["message"]["content"].as_str().unwrap_or_default();
        assert!(text.contains("snow") && text.contains("(reasoning kept)"), "{v}");
        let stats = t.stats().await;
        // The client's count and quota survived.
        let kept = std::fs::read_to_string(kept_client(&t)).expect("phase 1's client");
        let (client, secret) = kept.split_once('\n').expect("id and secret");
        let kept_client = crate::clients::client(&stats, client);
        assert_eq!(kept_client["today"]["requests"], 1, "{stats}");
        // Its use per key × model too (the store's own table).
        let per_key: Vec<_> = kept_client["keys"].as_object().expect("keys").values().collect();
        assert_eq!(per_key.len(), 1, "{kept_client}");
        assert_eq!(per_key[0]["e2e-persist-client"]["requests"], 1, "{kept_client}");
        assert_eq!(crate::clients::generate_as(&t, secret, "e2e-persist-client", false).await.status(), 429);
        crate::clients::revoke(&t, client).await;
        let cell = &t.key_row(&stats, &t.keys[0])["models"]["e2e-persist"];
        assert_eq!(cell["state"], "exhausted", "{stats}");
        assert_eq!(cell["requests"], 1);
        // The request log kept phase 1's calls, the per-day 429 among them.
        let (status, log) = t.admin(Method::GET, "/admin/requests?model=e2e-persist", None).await;
        assert_eq!(status, 200, "{log}");
        let records = log["requests"].as_array().cloned().unwrap_or_default();
        assert_eq!(records.len(), 3, "{log}");
        assert!(
            records
                .iter()
                .flat_map(|r| r["attempts"].as_array().cloned().unwrap_or_default())
                .any(|a| a["outcome"] == "rate-limited"),
            "{log}"
        );
        // The admin changes survived, and the run-time key serves.
        let (_, list) = t.admin(Method::GET, "/admin/keys", None).await;
        let row = |key: &str| {
            let masked = e2e::masked(key);
            list["keys"].as_array().expect("keys").iter().find(|k| k["key"] == masked.as_str()).cloned()
        };
        let runtime = row(RESTART_KEY).unwrap_or_else(|| panic!("the run-time key is gone: {list}"));
        assert_eq!((&runtime["source"], &runtime["project"]), (&json!("runtime"), &json!("kept")), "{list}");
        let disabled = row(&t.keys[1]).expect("key 1");
        assert!(disabled["disabled"]["reason"].as_str().is_some_and(|r| r.contains("kept across restarts")), "{list}");
        t.fake("reset", json!({})).await;
        for _ in 0..4 {
            assert_eq!(t.generate("e2e-persist-admin").await.status(), 200);
        }
        assert!(t.keys_seen().await.iter().any(|k| k == RESTART_KEY), "the run-time key does not serve");
        // The model alias holds after the restart.
        t.fake("reset", json!({})).await;
        assert_eq!(t.generate("e2e-kept-alias").await.status(), 200);
        let upstream = t.upstream_requests().await;
        assert!(
            upstream[0]["path"].as_str().is_some_and(|p| p.ends_with("/models/gemini-2.5-flash-lite:generateContent"))
        );
        let (status, _) = t.admin(Method::PUT, "/admin/aliases", Some(json!({"aliases": ""}))).await;
        assert_eq!(status, 200);
        // Undone, for the phases that follow.
        let (status, _) = t.admin(Method::DELETE, &format!("/admin/keys/{}", t.key_id(RESTART_KEY).await), None).await;
        assert_eq!(status, 200);
        let (status, _) =
            t.admin(Method::POST, &format!("/admin/keys/{}/enable", t.key_id(&t.keys[1]).await), None).await;
        assert_eq!(status, 200);
    }

    /// With a key store that cannot load (the runner restarted the Worker
    /// with an empty API_KEYS): every request gets a 503 in its own
    /// dialect, with no internals.
    #[tokio::test]
    #[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
    async fn key_store_down() {
        let t = Target::from_env();
        t.fake("reset", serde_json::json!({})).await;
        let r = t.generate("e2e-down").await;
        assert_eq!(r.status(), 503);
        let v: Value = r.json().await.expect("a JSON error");
        assert_eq!(v["error"]["status"], "UNAVAILABLE", "{v}");
        let r = t.chat("e2e-down").await;
        assert_eq!(r.status(), 503);
        let v: Value = r.json().await.expect("a JSON error");
        assert_eq!(v["error"]["code"], "key_store_unavailable", "{v}");
        assert!(!v.to_string().contains("Durable"), "internals in the answer: {v}");
        let r = t.http.get(format!("{}/stat.json", t.proxy)).bearer_auth(&t.proxy_key).send().await.expect("stats");
        assert_eq!(r.status(), 503);
        assert!(t.upstream_requests().await.is_empty());
    }

    /// On an open proxy (the runner started it without PROXY_API_KEY):
    /// requests with no credential, or an empty one as gemini-cli's gateway
    /// mode sends it, are served with pool keys; the admin API still wants
    /// its key.
    #[tokio::test]
    #[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
    async fn open_proxy() {
        let t = Target::fresh_from_env().await;
        assert!(t.proxy_key.is_empty(), "the runner starts this phase on an open proxy");
        let url = format!("{}/v1beta/models/e2e-open:generateContent", t.proxy);
        let body = json!({"contents": [{"parts": [{"text": "hi"}]}]});
        let r = t.http.post(&url).json(&body).send().await.expect("no credential");
        assert_eq!(r.status(), 200);
        let r = t.http.post(&url).header("x-goog-api-key", "").json(&body).send().await.expect("empty key");
        assert_eq!(r.status(), 200);
        let r = t.http.post(&url).header("authorization", "Bearer ").json(&body).send().await.expect("empty bearer");
        assert_eq!(r.status(), 200);
        let r = t
            .http
            .post(format!("{}/v1/chat/completions", t.proxy))
            .json(&json!({"model": "e2e-open", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("openai, no credential");
        assert_eq!(r.status(), 200);
        t.assert_only_pool_keys_upstream().await;
        assert_eq!(t.stats().await["keys"].as_array().map(Vec::len), Some(t.keys.len()));
        let r = t.http.get(format!("{}/admin/keys", t.proxy)).send().await.expect("admin");
        assert_eq!(r.status(), 401);
        web_pages_cannot_use_an_open_proxy(&t).await;
    }

    /// A browser's CORS preflight of a POST to `url` from `origin`.
    async fn preflight(t: &Target, url: &str, origin: &str, headers: &str) -> reqwest::Response {
        t.http
            .request(Method::OPTIONS, url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", headers)
            .send()
            .await
            .expect("preflight")
    }

    /// An open proxy and the web: no CORS grant and no service to a page of
    /// another origin, no answer under a foreign host name (DNS rebinding;
    /// the Worker leaves host names to Cloudflare unless ALLOWED_HOSTS is
    /// set), and once a client key exists, /stat needs the admin key.
    async fn web_pages_cannot_use_an_open_proxy(t: &Target) {
        let before = t.upstream_requests().await.len();
        let url = format!("{}/v1beta/models/e2e-web:generateContent", t.proxy);
        let r = preflight(t, &url, "https://evil.example", "content-type").await;
        assert!(!r.headers().contains_key("access-control-allow-origin"), "a grant to a foreign origin");
        let body = json!({"contents": [{"parts": [{"text": "hi"}]}]});
        // A "simple" request a page can send without a preflight.
        let r = t
            .http
            .post(&url)
            .header("origin", "https://evil.example")
            .header("content-type", "text/plain")
            .body(body.to_string())
            .send()
            .await
            .expect("a page's simple request");
        assert_eq!(r.status(), 403);
        assert!(!r.headers().contains_key("access-control-allow-origin"));
        let r = t.http.get(format!("{}/v1beta/files", t.proxy)).header("sec-fetch-site", "cross-site").send().await;
        assert_eq!(r.expect("a cross-site listing").status(), 403);
        if t.host == "host-runner" {
            let port = t.proxy.rsplit(':').next().unwrap_or_default();
            let r = t.http.post(&url).header("host", format!("rebound.evil.example:{port}")).json(&body).send().await;
            assert_eq!(r.expect("a rebound name").status(), 421);
            let r = t.http.get(format!("{}/stat.json", t.proxy)).header("host", "rebound.evil.example").send().await;
            assert_eq!(r.expect("stat under a rebound name").status(), 421);
        }
        assert_eq!(t.upstream_requests().await.len(), before, "nothing refused went upstream");
        // The proxy's own page is served (wrangler dev hands the Worker a
        // Host of its own, so there only tools are).
        if t.host == "host-runner" {
            let own = t.http.post(&url).header("origin", t.proxy.as_str()).json(&body).send().await.expect("own page");
            assert_eq!(own.status(), 200);
        }
        assert_eq!(t.http.post(&url).json(&body).send().await.expect("a tool").status(), 200);
        // Once a client key exists, the statistics need the admin key.
        assert_eq!(t.http.get(format!("{}/stat.json", t.proxy)).send().await.expect("stat").status(), 200);
        let (id, secret) = crate::clients::create(t, json!({"name": "e2e closes the open proxy"})).await;
        for path in ["/stat.json", "/metrics"] {
            let r = t.http.get(format!("{}{path}", t.proxy)).send().await.expect("stat");
            assert_eq!(r.status(), 401, "{path} without the admin key");
            let r = t.http.get(format!("{}{path}", t.proxy)).bearer_auth(&secret).send().await.expect("stat");
            assert_eq!(r.status(), 401, "{path} with a client key");
            let r = t.http.get(format!("{}{path}", t.proxy)).bearer_auth(&t.admin_key).send().await.expect("stat");
            assert_eq!(r.status(), 200, "{path} with the admin key");
        }
        // A page of another origin with a client key is served, with CORS.
        let r = preflight(t, &url, "https://chat.example", "x-goog-api-key, content-type").await;
        assert_eq!(r.headers().get("access-control-allow-origin").map(|v| v.as_bytes()), Some(&b"*"[..]));
        let r = t
            .http
            .post(&url)
            .header("origin", "https://chat.example")
            .header("x-goog-api-key", &secret)
            .json(&body)
            .send()
            .await
            .expect("a page with a client key");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers().get("access-control-allow-origin").map(|v| v.as_bytes()), Some(&b"*"[..]));
        crate::clients::revoke(t, &id).await;
    }

    /// Ten thousand keys in one paste: added, reported, and the proxy
    /// keeps serving and showing its stats.
    #[tokio::test]
    #[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
    async fn bulk_paste() {
        let t = Target::fresh_from_env().await;
        let paste: Vec<String> = (0..10_000).map(|i| format!("AIzaSyE2EbulkPASTEkey{i:019}")).collect();
        let started = std::time::Instant::now();
        let (status, v) = t.admin(Method::POST, "/admin/keys", Some(json!({"keys": paste.join("\n")}))).await;
        let took = started.elapsed();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["added"].as_array().map(Vec::len), Some(10_000));
        assert_eq!(v["key_count"], 10_000 + t.keys.len());
        let started = std::time::Instant::now();
        for _ in 0..5 {
            assert_eq!(t.generate("e2e-bulk").await.status(), 200);
        }
        let served = started.elapsed();
        let started = std::time::Instant::now();
        let stats = t.stats().await;
        let stat_took = started.elapsed();
        assert_eq!(stats["keys"].as_array().map(Vec::len), Some(10_000 + t.keys.len()));
        #[expect(clippy::print_stderr, reason = "the measured figures, shown with --nocapture")]
        {
            eprintln!(
                "{}: 10,000 keys added in {} ms; 5 requests in {} ms; /stat.json in {} ms",
                t.host,
                took.as_millis(),
                served.as_millis(),
                stat_took.as_millis()
            );
        }
    }

    /// The daily job (after the runner fired it): counters
    /// cleared, the unexpired per-day mark kept.
    #[tokio::test]
    #[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
    async fn after_cron() {
        let t = Target::from_env();
        let stats = t.stats().await;
        let cell = &t.key_row(&stats, &t.keys[0])["models"]["e2e-persist"];
        assert_eq!(cell["state"], "exhausted", "{stats}");
        assert_eq!(cell["requests"], 0, "{stats}");
        // The cron also read Google's models list, with a pool key.
        let reqs = t.upstream_requests().await;
        let listed = reqs.iter().find(|r| r["path"] == "/v1beta/models" && r["query"] == "pageSize=1000");
        let listed = listed.unwrap_or_else(|| panic!("no models listing after the cron: {reqs:?}"));
        let key = listed["credentials"][0][1].as_str();
        assert!(key.is_some_and(|k| t.keys.iter().any(|p| p == k)), "{listed}");
    }

    /// Reads an answer piece by piece: its bytes, when the first came, and
    /// whether it ended cleanly.
    async fn read_timed(mut r: reqwest::Response, sent: std::time::Instant) -> (Vec<u8>, std::time::Duration, bool) {
        let (mut body, mut first) = (Vec::new(), None);
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

    /// With NONSTREAM_KEEPALIVE_SECONDS=1 (scripts/e2e's keep-alive
    /// phase): a slow non-streamed answer is committed after a second and
    /// kept alive with a space a second, then sent; a failure after that
    /// is its JSON error in the body, the answer cut, on one key only, and
    /// counted; a stream is never kept alive.
    #[tokio::test]
    #[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
    async fn keep_alive() {
        use std::time::{Duration, Instant};
        let t = Target::fresh_from_env().await;
        t.behave("*", "slow:2600").await;
        let sent = Instant::now();
        let r = t.generate("e2e-slow").await;
        let head = sent.elapsed();
        assert_eq!(r.status(), 200);
        assert!(head < Duration::from_millis(2_400), "the head waited for the answer: {head:?}");
        let (body, first, clean) = read_timed(r, sent).await;
        assert!(clean && first < Duration::from_millis(2_400), "a keep-alive byte before the answer: {first:?}");
        let text = String::from_utf8(body).expect("utf-8");
        let spaces = text.len() - text.trim_start().len();
        assert!((2..=3).contains(&spaces), "a space a second: {text:?}");
        let v: Value = serde_json::from_str(&text).expect("JSON after the whitespace");
        assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "Hello from the fake e2e-slow.");
        // A failure after the commit (the fake's record cleared, the
        // model's counts kept: Google served it once).
        t.fake("reset", json!({})).await;
        t.behave("*", "slow-5xx:1600").await;
        let sent = Instant::now();
        let r = t.generate("e2e-slow").await;
        assert_eq!(r.status(), 200, "committed before the failure");
        let (body, _, clean) = read_timed(r, sent).await;
        // host-runner cuts the answer, so that a client sees a failure; the
        // Worker aborts its stream, which `wrangler dev`'s local proxy
        // ends cleanly (the error's JSON is there either way).
        let worker = std::env::var("E2E_HOST").as_deref() == Ok("wrangler");
        assert_eq!(clean, worker, "a failure after the keep-alive ends the answer cut (host-runner)");
        let v: Value = serde_json::from_slice(&body).expect("the error's JSON after the whitespace");
        assert_eq!(v["error"]["code"], 502, "{v}");
        assert_eq!(t.upstream_requests().await.len(), 1, "no other key after the commit");
        let stats = t.stats_when(|s| s["models"]["e2e-slow"]["errors"] == 1).await;
        assert_eq!(stats["models"]["e2e-slow"]["errors"], 1, "counted as the failure it was: {stats}");
        // A stream sends its own bytes: never kept alive.
        t.behave("*", "slow:1500").await;
        let sent = Instant::now();
        let r = t
            .http
            .post(format!("{}/v1beta/models/e2e-slow:streamGenerateContent?alt=sse", t.proxy))
            .header("x-goog-api-key", &t.proxy_key)
            .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
            .send()
            .await
            .expect("stream");
        assert!(sent.elapsed() >= Duration::from_millis(1_400), "a stream's head is Google's");
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        t.behave("*", "ok").await;
    }
}

/// Scenarios that apply to the Worker only; `scripts/e2e host-runner`
/// filters them out.
mod worker_only {
    use e2e::Target;
    use serde_json::Value;
    use std::time::Duration;

    /// Worker only (its `/stat.json` counts the Durable Object's acquires and
    /// report batches): at steady state a proxied request costs one Durable
    /// Object request, its acquire, which also carries the reports of the
    /// requests before it; the last report reaches the object within the
    /// flush delay, so nothing is lost when traffic stops.
    #[tokio::test]
    #[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
    async fn durable_object_requests_per_proxied_request() {
        let t = Target::fresh_from_env().await;
        let counts = |s: &Value| {
            let d = &s["durable_object_requests"];
            Some((d["acquire"].as_u64()?, d["report"].as_u64()?))
        };
        let (a0, r0) = counts(&t.stats().await).expect("the Worker's /stat.json counts its Durable Object requests");
        let n = 40;
        for _ in 0..n {
            assert_eq!(t.generate("e2e-do").await.status(), 200);
        }
        // A request retried once after a 429 costs one acquire more.
        let served = t.keys_seen().await.last().cloned().expect("a key served");
        let i = t.keys.iter().position(|k| *k == served).expect("pool key");
        t.behave(&t.keys[(i + 1) % t.keys.len()], "per-minute:600").await;
        assert_eq!(t.generate("e2e-do").await.status(), 200);
        let proxied = n + 1;
        // The last reports land within the flush delay: poll for them.
        let stats = t.stats_when(|s| s["models"]["e2e-do"]["requests"] == proxied + 1).await;
        assert_eq!(stats["models"]["e2e-do"]["successes"], proxied, "a report was lost: {stats}");
        assert_eq!(stats["models"]["e2e-do"]["rate_limited"], 1, "{stats}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (a1, r1) = counts(&t.stats().await).expect("counts");
        let per_request = (a1 - a0 + r1 - r0) as f64 / proxied as f64;
        #[expect(clippy::print_stderr, reason = "the measured figure, shown with --nocapture")]
        {
            eprintln!(
                "durable object requests: {} acquires + {} report batches for {proxied} proxied requests (one retried) = {per_request:.3} per request",
                a1 - a0,
                r1 - r0
            );
        }
        assert_eq!(a1 - a0, proxied + 1, "one acquire per attempt");
        assert!(per_request <= 1.05, "{per_request:.3} Durable Object requests per proxied request");
    }
}

/// Token counts equal what the fake's answers reported, for plain and
/// streamed answers in both dialects.
#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn tokens_are_counted_as_the_answers_report_them() {
    let t = Target::fresh_from_env().await;
    let post = |path: &str, body: Value| {
        let req = t.http.post(format!("{}{path}", t.proxy)).json(&body);
        if path.starts_with("/v1/") {
            req.bearer_auth(&t.proxy_key)
        } else {
            req.header("x-goog-api-key", &t.proxy_key)
        }
    };
    let prompt = |text: &str| json!({"contents": [{"parts": [{"text": text}]}]});
    let chat = |stream: bool| {
        json!({"model": "e2e-tokens", "messages": [{"role": "user", "content": "hi"}], "stream": stream,
               "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }})
    };
    for (path, body) in [
        ("/v1beta/models/e2e-tokens:generateContent", prompt("plain")),
        ("/v1beta/models/e2e-tokens:streamGenerateContent?alt=sse", prompt("a stream")),
        ("/v1beta/models/e2e-tokens:streamGenerateContent", prompt("an array")),
        ("/v1/chat/completions", chat(false)),
        ("/v1/chat/completions", chat(true)),
    ] {
        let r = post(path, body).send().await.expect("request");
        assert_eq!(r.status(), 200, "{path}");
        r.bytes().await.expect("the whole answer");
    }
    let mut want: std::collections::BTreeMap<String, [u64; 4]> = std::collections::BTreeMap::new();
    for r in t.upstream_requests().await {
        let (Some(u), Some(key)) = (r.get("usage").filter(|u| !u.is_null()), r["credentials"][0][1].as_str()) else {
            continue;
        };
        let cell = want.entry(e2e::masked(key)).or_default();
        for (i, f) in ["prompt", "output", "cached", "thinking"].iter().enumerate() {
            cell[i] += u[f].as_u64().expect("a count");
        }
    }
    assert!(!want.is_empty(), "the fake reported no usage");
    let counted = |stats: &Value| -> std::collections::BTreeMap<String, [u64; 4]> {
        stats["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| {
                let tk = &k["models"]["e2e-tokens"]["tokens"];
                let n = |f: &str| tk[f].as_u64().unwrap_or(0);
                let c = [n("prompt"), n("output"), n("cached"), n("thinking")];
                (c != [0; 4]).then(|| (k["key"].as_str().unwrap_or_default().to_owned(), c))
            })
            .collect()
    };
    // The Worker's reports land a moment after the answers.
    let stats = t.stats_when(|s| counted(s) == want).await;
    assert_eq!(counted(&stats), want, "{stats}");
}

/// Calls the proxy has no route of its own for are relayed with their
/// method, version, query and body, on both hosts: an upload in Google's
/// resumable protocol, a file call, and an API the proxy does not know.
/// None leaves a pool key in what the client sees, and Google's 403 for a
/// file the key cannot see leaves the key alone.
#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn other_gemini_calls_are_relayed_as_they_are() {
    let t = Target::fresh_from_env().await;
    let leaks = |what: &str, text: &str| {
        assert!(!t.keys.iter().any(|k| text.contains(k.as_str())), "a pool key in {what}: {text}");
    };
    // The chunk goes to the proxy's own URL, without a credential.
    let up = t.upload_file(2048, "application/pdf").await;
    for (name, value) in &up.start_headers {
        leaks(name, value);
    }
    leaks("the upload URL", &up.url);
    leaks("the final answer", &up.final_answer);
    let file: Value = serde_json::from_str(&up.final_answer).expect("json");
    assert_eq!((&file["file"]["sizeBytes"], &file["file"]["mimeType"]), (&json!("2048"), &json!("application/pdf")));

    let r = t
        .http
        .delete(format!("{}/v1beta/files/not-this-projects?key={}", t.proxy, t.proxy_key))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 403, "Google's answer, relayed");
    let r = t
        .http
        .patch(format!("{}/v1alpha/somethingNew/x1?updateMask=a", t.proxy))
        .header("x-goog-api-key", &t.proxy_key)
        .json(&json!({"a": 1}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 404, "the fake's own 404, relayed");

    let seen: Vec<(String, String, String)> = t
        .upstream_requests()
        .await
        .iter()
        .map(|r| {
            let s = |f: &str| r[f].as_str().unwrap_or_default().to_owned();
            (s("method"), s("path"), s("query"))
        })
        .collect();
    let upload_query = up.url.split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default();
    // A file no key is known to own is looked for on every key once.
    let mut want =
        vec![("POST", "/upload/v1beta/files", String::new()), ("POST", "/upload/v1beta/files", upload_query)];
    want.extend(t.keys.iter().map(|_| ("DELETE", "/v1beta/files/not-this-projects", String::new())));
    want.push(("PATCH", "/v1alpha/somethingNew/x1", "updateMask=a".to_owned()));
    let want: Vec<_> = want.into_iter().map(|(m, p, q)| (m.to_owned(), p.to_owned(), q)).collect();
    assert_eq!(seen, want);
    let deleted_on: std::collections::BTreeSet<String> =
        t.keys_seen().await[2..2 + t.keys.len()].iter().cloned().collect();
    assert_eq!(deleted_on.len(), t.keys.len(), "each key asked once");
    t.assert_only_pool_keys_upstream().await;
    // The file calls counted under `(files)` (the Worker's reports
    // land a moment later; other scenarios' late reports count under their
    // own models); the 403 disabled no key.
    let files = |s: &Value| -> u64 {
        let keys = s["keys"].as_array().cloned().unwrap_or_default();
        keys.iter().map(|k| k["models"]["(files)"]["requests"].as_u64().unwrap_or(0)).sum()
    };
    let calls = 2 + t.keys.len() as u64;
    let stats = t.stats_when(|s| files(s) == calls).await;
    assert_eq!(files(&stats), calls, "{stats}");
    assert!(stats["keys"].as_array().expect("keys").iter().all(|k| k["disabled"].is_null()), "{stats}");
}

/// A file belongs to the key (Google project) that uploaded it: the upload
/// through the proxy (its chunk sent to the proxy's own URL, without a
/// credential) tells the proxy which key, and every call naming the file
/// goes to it and to no other, on both hosts; so does a prompt that uses a
/// cache made through the proxy; two files of two keys in one prompt are a
/// 400.
#[tokio::test]
#[ignore = "needs a running proxy and fake upstream: scripts/e2e runs it"]
async fn a_file_goes_to_the_key_that_owns_it() {
    let t = &Target::fresh_from_env().await;
    let prompt = |names: &[&str]| {
        let parts: Vec<Value> = names
            .iter()
            .map(|n| json!({"fileData": {"fileUri": format!("https://generativelanguage.googleapis.com/v1beta/{n}")}}))
            .collect();
        t.http
            .post(format!("{}/v1beta/models/e2e-files:generateContent", t.proxy))
            .header("x-goog-api-key", &t.proxy_key)
            .json(&json!({"contents": [{"parts": parts}]}))
            .send()
    };
    let name = t.upload_file(4096, "text/plain").await.name;
    let owner = t.keys_seen().await[0].clone();
    assert_eq!(t.keys_seen().await, [owner.clone(), owner.clone()], "the chunk went to the key that started it");
    let before = t.upstream_requests().await.len();
    for _ in 0..4 {
        let r = prompt(&[&name]).await.expect("use");
        assert_eq!(r.status(), 200);
    }
    let seen = t.keys_seen().await;
    assert_eq!(seen[before..], vec![owner.clone(); 4], "only the owner: the upload told the proxy whose it is");

    // A file of another key, found by a GET; then both in one prompt.
    let other = loop {
        let n = t.upload_file(16, "text/plain").await.name;
        let r = t.http.get(format!("{}/v1beta/{n}", t.proxy)).header("x-goog-api-key", &t.proxy_key).send().await;
        assert_eq!(r.expect("get").status(), 200);
        if t.keys_seen().await.last() != Some(&owner) {
            break n;
        }
    };
    let before = t.upstream_requests().await.len();
    let r = prompt(&[&name, &other]).await.expect("two owners");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains(&name) && m.contains(&other)), "{v}");
    assert_eq!(t.upstream_requests().await.len(), before, "nothing sent");
    // A cache made through the proxy goes to the key that made it. Its
    // maker is not the pool's first key, where the ring of a model never
    // used before starts: only the registry sends the prompts there.
    let (cache, maker) = loop {
        let r = t
            .http
            .post(format!("{}/v1beta/cachedContents", t.proxy))
            .header("x-goog-api-key", &t.proxy_key)
            .json(&json!({"model": "models/e2e-files", "contents": [{"parts": [{"text": "a long context"}]}]}))
            .send()
            .await
            .expect("cache");
        assert_eq!(r.status(), 200);
        let cache = r.json::<Value>().await.expect("json")["name"].as_str().expect("a name").to_owned();
        let maker = t.keys_seen().await.last().cloned().expect("a key");
        if maker != t.keys[0] {
            break (cache, maker);
        }
    };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let fresh_model = format!("e2e-cache-{nanos}");
    let before = t.upstream_requests().await.len();
    for _ in 0..3 {
        let r = t
            .http
            .post(format!("{}/v1beta/models/{fresh_model}:generateContent", t.proxy))
            .header("x-goog-api-key", &t.proxy_key)
            .json(&json!({"cachedContent": cache, "contents": [{"parts": [{"text": "so?"}]}]}))
            .send()
            .await
            .expect("use");
        assert_eq!(r.status(), 200);
    }
    assert_eq!(t.keys_seen().await[before..], vec![maker; 3], "only the cache's maker");
    // Nothing counted against a key.
    let stats = t.stats().await;
    assert!(stats["keys"].as_array().expect("keys").iter().all(|k| k["disabled"].is_null()), "{stats}");

    // The lists show the pool's files and caches, one item a page, each
    // once, from every key.
    for (collection, want) in [("files", vec![&name, &other]), ("cachedContents", vec![&cache])] {
        let before = t.upstream_requests().await.len();
        let (mut listed, mut token) = (Vec::<String>::new(), None::<String>);
        for page in 0.. {
            assert!(page < 50, "the {collection} listing does not end");
            let query = token.as_ref().map(|t| format!("&pageToken={t}")).unwrap_or_default();
            let url = format!("{}/v1beta/{collection}?pageSize=1{query}", t.proxy);
            let r = t.http.get(url).header("x-goog-api-key", &t.proxy_key).send().await.expect("list");
            assert_eq!(r.status(), 200);
            let text = r.text().await.expect("a page");
            assert!(!t.keys.iter().any(|k| text.contains(k.as_str())), "a key in the {collection} list: {text}");
            let v: Value = serde_json::from_str(&text).expect("json");
            let items: Vec<String> = v[collection]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["name"].as_str().map(str::to_owned))
                .collect();
            assert!(items.len() == 1 || (page == 0 && items.is_empty()), "{text}");
            listed.extend(items);
            token = v["nextPageToken"].as_str().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        let unique: std::collections::HashSet<&String> = listed.iter().collect();
        assert_eq!(unique.len(), listed.len(), "an item listed twice: {listed:?}");
        assert!(want.iter().all(|n| listed.contains(n)), "{collection}: {listed:?}");
        let asked: std::collections::HashSet<String> = t.keys_seen().await[before..].iter().cloned().collect();
        assert!(t.keys.iter().all(|k| asked.contains(k)), "every key's list was read: {asked:?}");
    }
}
