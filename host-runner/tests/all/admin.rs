//! The admin API against the real component, the real SQLite file and the
//! fake upstream.

use crate::harness::{ADMIN_KEY, Harness, PROXY_KEY, VAULT_SECRET, pool_keys};
use fake_upstream::Behavior;
use reqwest::Method;
use serde_json::{Value, json};

/// Fake run-time keys of both formats Google issues.
const NEW_AIZA: &str = "AIzaSyRUNTIMEaddedKEY0123456789abcdef";
const NEW_AQ: &str = "AQ.Ab8RN6runtimeADDEDkeyOFtheNEWformat0123456789";

async fn admin_pool(keys: Vec<String>) -> Harness {
    let mut h = Harness::with(keys, None).await;
    h.with_admin();
    h.restart().await;
    h
}

fn ids(list: &Value) -> Vec<String> {
    list["keys"].as_array().expect("keys").iter().map(|k| k["id"].as_str().expect("id").to_owned()).collect()
}

/// Every byte SQLite keeps for the store (the file and its journal).
fn db_bytes(h: &Harness) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut path = h.db.clone().into_os_string();
        path.push(suffix);
        if let Ok(b) = std::fs::read(&path) {
            all.extend(b);
        }
    }
    assert!(!all.is_empty(), "no database at {}", h.db.display());
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn keys_added_at_run_time_serve_at_once_are_sealed_at_rest_and_survive_a_restart() {
    let mut h = admin_pool(pool_keys(1)).await;
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    let paste = format!("{NEW_AIZA},\n  \"{NEW_AQ}\" ; {NEW_AIZA}");
    let (status, added) = h.admin(Method::POST, "/admin/keys", Some(json!({"keys": paste, "project": "team-b"}))).await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["added"].as_array().map(Vec::len), Some(2), "{added}");
    assert_eq!(added["key_count"], 3);
    assert!(!added.to_string().contains(NEW_AIZA) && !added.to_string().contains(NEW_AQ), "a secret in {added}");

    // Both serve the model already in rotation, at once.
    for _ in 0..6 {
        assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    }
    let seen = h.keys_seen();
    assert!(seen.iter().any(|k| k == NEW_AIZA) && seen.iter().any(|k| k == NEW_AQ), "{seen:?}");

    // Sealed at rest: no secret in the file or its journal, whatever the format.
    let bytes = db_bytes(&h);
    for secret in [NEW_AIZA, NEW_AQ, &h.keys[0]] {
        assert!(!contains(&bytes, secret), "a key in the database");
        assert!(!contains(&bytes, &secret[secret.len() - 16..]), "a key's tail in the database");
    }
    assert!(!contains(&bytes, VAULT_SECRET));

    h.restart().await;
    let (_, list) = h.admin(Method::GET, "/admin/keys", None).await;
    assert_eq!(ids(&list).len(), 3);
    let runtime: Vec<&Value> =
        list["keys"].as_array().expect("keys").iter().filter(|k| k["source"] == "runtime").collect();
    assert_eq!(runtime.len(), 2, "{list}");
    assert!(runtime.iter().all(|k| k["project"] == "team-b"), "{list}");
    h.fake.reset();
    for _ in 0..6 {
        assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    }
    assert!(h.keys_seen().iter().any(|k| k == NEW_AQ), "the run-time key serves after the restart");

    // Another secret cannot open them: the proxy starts, without them, and says so nowhere secret.
    h.vars.retain(|(k, _)| k != "KEY_ENCRYPTION_SECRET");
    h.vars.push(("KEY_ENCRYPTION_SECRET".into(), "another-secret-entirely-not-the-one".into()));
    h.restart().await;
    let (_, list) = h.admin(Method::GET, "/admin/keys", None).await;
    assert_eq!(ids(&list), [h.id_of(&h.keys[0])], "keys sealed with another secret are not served");
    // ...nor lost: with the right secret back, they are.
    h.vars.retain(|(k, _)| k != "KEY_ENCRYPTION_SECRET");
    h.vars.push(("KEY_ENCRYPTION_SECRET".into(), VAULT_SECRET.into()));
    h.restart().await;
    let (_, list) = h.admin(Method::GET, "/admin/keys", None).await;
    assert_eq!(ids(&list).len(), 3, "{list}");
    assert!(
        list["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter(|k| k["source"] == "runtime")
            .all(|k| k["project"] == "team-b")
    );
}

#[tokio::test]
async fn removing_a_key_during_traffic_loses_no_request_and_no_count() {
    let h = admin_pool(pool_keys(3)).await;
    h.fake.set_default(Behavior::SlowHeaders(150));
    let gone = h.keys[0].clone();
    let mut calls = Vec::new();
    for _ in 0..30 {
        let http = h.http.clone();
        let url = h.url("/v1beta/models/gemini-2.5-flash:generateContent");
        calls.push(tokio::spawn(async move {
            http.post(url)
                .header("x-goog-api-key", "client-key")
                .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    let (status, removed) = h.admin(Method::DELETE, &format!("/admin/keys/{}", h.id_of(&gone)), None).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["from_api_keys"], true);
    for c in calls {
        assert_eq!(c.await.expect("task"), 200, "a request lost to the removal");
    }
    let before = h.fake.requests().len();
    for _ in 0..6 {
        assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    }
    assert!(!h.keys_seen()[before..].contains(&gone), "a removed key served");

    // Every upstream call is counted, the removed key's included.
    let stats = h.stats().await;
    let counted: u64 = stats["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["models"]["gemini-2.5-flash"]["requests"].as_u64())
        .sum();
    assert_eq!(counted, h.fake.requests().len() as u64, "{stats}");
    let shown = stats["keys"].as_array().expect("keys").iter().find(|k| k["id"] == h.id_of(&gone)).cloned();
    assert_eq!(shown.expect("the removed key is shown with its counts")["removed"], true);
}

#[tokio::test]
async fn a_key_removed_from_api_keys_by_the_admin_stays_removed_until_added_again() {
    let mut h = admin_pool(pool_keys(2)).await;
    let gone = h.id_of(&h.keys[1]);
    assert_eq!(h.admin(Method::DELETE, &format!("/admin/keys/{gone}"), None).await.0, 200);
    h.restart().await;
    let (_, list) = h.admin(Method::GET, "/admin/keys", None).await;
    assert_eq!(ids(&list), [h.id_of(&h.keys[0])], "still in API_KEYS, but the admin removed it");
    let key = h.keys[1].clone();
    let (status, back) = h.admin(Method::POST, "/admin/keys", Some(json!({"keys": [key]}))).await;
    assert_eq!((status, back["key_count"].as_u64()), (200, Some(2)), "{back}");
    h.restart().await;
    let (_, list) = h.admin(Method::GET, "/admin/keys", None).await;
    assert_eq!(ids(&list).len(), 2);
}

#[tokio::test]
async fn a_429_cools_the_whole_project_so_the_next_attempt_goes_to_another() {
    let h = admin_pool(pool_keys(4)).await;
    for (i, project) in ["alpha", "alpha", "beta", "beta"].iter().enumerate() {
        let path = format!("/admin/keys/{}", h.id_of(&h.keys[i]));
        let (status, key) = h.admin(Method::PATCH, &path, Some(json!({"project": project}))).await;
        assert_eq!((status, key["project"].as_str()), (200, Some(*project)), "{key}");
    }
    h.fake.set(&h.keys[0], Behavior::PerMinute(40));
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    let seen = h.keys_seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], h.keys[0]);
    assert!(seen[1] == h.keys[2] || seen[1] == h.keys[3], "the retry went to the same project: {seen:?}");
    for _ in 0..4 {
        h.generate("gemini-2.5-flash").await;
    }
    assert!(!h.keys_seen().contains(&h.keys[1]), "a key of the cooled project served");
    let stats = h.stats().await;
    let reason = stats["keys"][1]["models"]["gemini-2.5-flash"]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.starts_with("project alpha:"), "{stats}");
    // Another model is not cooled.
    h.fake.reset();
    h.generate("gemini-2.5-pro").await;
    h.generate("gemini-2.5-pro").await;
    assert!(h.keys_seen().iter().any(|k| *k == h.keys[0] || *k == h.keys[1]));
}

#[tokio::test]
async fn a_pool_of_new_format_keys_alone_serves_both_apis() {
    let keys: Vec<String> = (0..2).map(|i| format!("AQ.Ab8RN6newFORMATpoolKEY{i:020}")).collect();
    let h = Harness::with(keys, Some(PROXY_KEY)).await;
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    let r = h.openai("/v1/chat/completions", json!({"model": "gemini-2.5-flash", "messages": []})).await;
    assert_eq!(r.status(), 200);
    h.assert_only_pool_keys_upstream();
    let stats = h.stats().await;
    assert!(!stats.to_string().contains(&h.keys[0][3..]), "an AQ. key in /stat.json");
}

#[tokio::test]
async fn checks_classify_every_kind_of_dead_key_and_disable_it() {
    let mut keys = pool_keys(6);
    keys.push(NEW_AQ.to_owned());
    let h = admin_pool(keys).await;
    let kinds = [
        (Behavior::Ok, "works"),
        (Behavior::Invalid, "invalid"),
        (Behavior::Suspended, "suspended"),
        (Behavior::Leaked, "leaked"),
        (Behavior::WrongType, "wrong-key-type"),
        (Behavior::PerMinute(30), "rate-limited"),
        (Behavior::Ok, "works"),
    ];
    for (key, (b, _)) in h.keys.iter().zip(&kinds) {
        h.fake.set(key, b.clone());
    }
    let (status, checked) = h.admin(Method::POST, "/admin/keys/check", Some(json!({}))).await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["remaining"], 0);
    let found: Vec<(String, String)> = checked["checked"]
        .as_array()
        .expect("checked")
        .iter()
        .map(|c| (c["id"].as_str().unwrap_or_default().to_owned(), c["status"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(found.len(), kinds.len(), "{checked}");
    for (key, (_, want)) in h.keys.iter().zip(&kinds) {
        let got = found.iter().find(|(id, _)| *id == h.id_of(key)).map(|(_, s)| s.as_str());
        assert_eq!(got, Some(*want), "{checked}");
    }
    assert!(
        h.fake.requests().iter().all(|r| r.method == "GET" && r.path == "/v1beta/models"),
        "checks are model lists"
    );
    assert!(!checked.to_string().contains("AIzaSy"), "a secret in {checked}");

    // The dead are disabled with the reason; the rate-limited one is not.
    let (_, list) = h.admin(Method::GET, "/admin/keys", None).await;
    let disabled: Vec<bool> = list["keys"].as_array().expect("keys").iter().map(|k| !k["disabled"].is_null()).collect();
    assert_eq!(disabled, [false, true, true, true, true, false, false], "{list}");
    assert!(list["keys"][3]["disabled"]["reason"].as_str().is_some_and(|r| r.contains("leaked")), "{list}");
    assert_eq!(list["keys"][5]["check"]["status"], "rate-limited");

    // Enable, and a note on disable.
    let id = h.id_of(&h.keys[1]);
    let (status, key) = h.admin(Method::POST, &format!("/admin/keys/{id}/enable"), None).await;
    assert_eq!((status, key["disabled"].is_null()), (200, true), "{key}");
    let (status, key) =
        h.admin(Method::POST, &format!("/admin/keys/{id}/disable"), Some(json!({"note": "rotating"}))).await;
    assert_eq!(status, 200);
    assert!(key["disabled"]["reason"].as_str().is_some_and(|r| r.contains("rotating")), "{key}");
}

#[tokio::test]
async fn keys_of_the_wrong_type_or_reported_leaked_are_disabled_by_traffic_too() {
    let h = Harness::new(3).await;
    h.fake.set(&h.keys[0], Behavior::WrongType);
    h.fake.set(&h.keys[1], Behavior::Leaked);
    for _ in 0..4 {
        assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
    }
    // Neither answer alone says the key is dead (a wrong type depends on
    // the endpoint; a leak is a 403 without a reason): each key is out once
    // its check alone was refused too.
    let seen = h.keys_seen();
    for key in &h.keys[..2] {
        assert_eq!(seen.iter().filter(|k| *k == key).count(), 2, "{seen:?}");
    }
    let checks = h.fake.requests().into_iter().filter(|r| r.path == "/v1beta/models").count();
    assert_eq!(checks, 2);
    let stats = h.stats().await;
    for i in 0..2 {
        let reason = stats["keys"][i]["disabled"]["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty() && !reason.contains(&h.keys[i]), "{stats}");
    }
}

#[tokio::test]
async fn bad_admin_calls_get_clear_answers_in_googles_error_format() {
    let h = admin_pool(pool_keys(1)).await;
    let error_of = |v: &Value| v["error"]["message"].as_str().unwrap_or_default().to_owned();
    // Wrong or missing admin key; the proxy key is not the admin key.
    for auth in [None, Some("AQ.notTHEadminKEY0123456789abcdefgh")] {
        let mut req = h.http.get(h.url("/admin/keys"));
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        let r = req.send().await.expect("request");
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.expect("json");
        assert!(error_of(&v).contains("ADMIN_API_KEY"), "{v}");
    }
    let r = h.http.post(h.url("/admin/keys")).bearer_auth(ADMIN_KEY).body("{not json").send().await.expect("request");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(error_of(&v).contains("not valid JSON"), "{v}");
    for body in [json!({}), json!({"keys": 7}), json!({"keys": " , ; "}), json!({"keys": "k", "project": 3})] {
        let (status, v) = h.admin(Method::POST, "/admin/keys", Some(body.clone())).await;
        assert_eq!(status, 400, "{body} → {v}");
        assert!(!error_of(&v).is_empty());
    }
    let only = h.id_of(&h.keys[0]);
    let (status, v) = h.admin(Method::DELETE, &format!("/admin/keys/{only}"), None).await;
    assert_eq!(status, 409, "{v}");
    assert!(error_of(&v).contains("last key"));
    let (status, _) = h.admin(Method::DELETE, "/admin/keys/k-doesnotexist", None).await;
    assert_eq!(status, 404);
    let (status, _) = h.admin(Method::PATCH, &format!("/admin/keys/{only}"), Some(json!({"note": ["x"]}))).await;
    assert_eq!(status, 400);
    let r = h.http.put(h.url("/admin/keys")).bearer_auth(ADMIN_KEY).send().await.expect("request");
    assert_eq!(r.status(), 405);

    // Ten thousand keys in one paste, one a duplicate of a pool key.
    let mut paste: Vec<String> = (0..10_000).map(|i| proxy_core::test_support::fake_key("BULK", i)).collect();
    paste.push(h.keys[0].clone());
    let started = std::time::Instant::now();
    let (status, v) = h.admin(Method::POST, "/admin/keys", Some(json!({"keys": paste.join("\n")}))).await;
    assert_eq!(status, 200);
    #[expect(clippy::print_stderr, reason = "the measured figure, shown with --nocapture")]
    {
        eprintln!("10,000 keys added in {:?}", started.elapsed());
    }
    assert_eq!(
        (v["added"].as_array().map(Vec::len), v["already_present"].as_array().map(Vec::len)),
        (Some(10_000), Some(1))
    );
    assert_eq!(v["key_count"], 10_001);
    assert_eq!(h.generate("gemini-2.5-flash").await.status(), 200);
}

#[tokio::test]
async fn without_the_admin_key_set_the_admin_api_is_off_and_adding_needs_the_secret() {
    let mut h = Harness::new(1).await;
    let r = h.http.get(h.url("/admin/keys")).bearer_auth(ADMIN_KEY).send().await.expect("request");
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.expect("json");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("ADMIN_API_KEY")), "{v}");
    // The admin key set, the secret not: everything but adding works.
    h.vars.push(("ADMIN_API_KEY".into(), ADMIN_KEY.into()));
    h.restart().await;
    assert_eq!(h.admin(Method::GET, "/admin/keys", None).await.0, 200);
    let (status, v) = h.admin(Method::POST, "/admin/keys", Some(json!({"keys": NEW_AIZA}))).await;
    assert_eq!(status, 403);
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("KEY_ENCRYPTION_SECRET")), "{v}");
}

#[tokio::test]
async fn model_aliases_set_at_run_time_hold_at_once_and_survive_a_restart() {
    let mut h = admin_pool(pool_keys(1)).await;
    let table = "my-model=gemini-2.5-flash-lite\nclaude-*=models/gemini-2.5-flash";
    let (status, set) = h.admin(Method::PUT, "/admin/aliases", Some(json!({ "aliases": table }))).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["aliases"][0], json!({"from": "my-model", "to": "gemini-2.5-flash-lite"}), "{set}");
    assert!(set["defaults"].as_array().is_some_and(|d| !d.is_empty()), "{set}");

    let asked = |h: &Harness| h.fake.requests().iter().map(|r| r.path.clone()).collect::<Vec<_>>();
    assert_eq!(h.generate("my-model").await.status(), 200);
    let r = h
        .openai(
            "/v1/chat/completions",
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let paths = asked(&h);
    assert!(paths[0].ends_with("/models/gemini-2.5-flash-lite:generateContent"), "{paths:?}");
    assert_eq!(h.fake.requests()[1].model.as_deref(), Some("gemini-2.5-flash"));

    // On disk, and in force again after a restart.
    h.restart().await;
    let (_, listed) = h.admin(Method::GET, "/admin/aliases", None).await;
    assert_eq!(listed["aliases"].as_array().map(Vec::len), Some(2), "{listed}");
    h.fake.clear_requests();
    assert_eq!(h.generate("my-model").await.status(), 200);
    assert!(asked(&h)[0].ends_with("/models/gemini-2.5-flash-lite:generateContent"));
    // Counted under the Gemini model, never the alias.
    let stats = h.stats().await.to_string();
    assert!(stats.contains("gemini-2.5-flash-lite") && !stats.contains("my-model"), "{stats}");

    // Cleared, the name goes to Google as it is.
    let (status, _) = h.admin(Method::PUT, "/admin/aliases", Some(json!({ "aliases": [] }))).await;
    assert_eq!(status, 200);
    h.restart().await;
    h.fake.clear_requests();
    h.generate("my-model").await;
    assert!(asked(&h)[0].ends_with("/models/my-model:generateContent"), "{:?}", asked(&h));
}
