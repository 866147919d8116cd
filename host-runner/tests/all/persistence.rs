use crate::harness::{Harness, pool_keys};
use fake_upstream::Behavior;

#[tokio::test]
async fn statistics_and_marks_survive_a_restart_and_key_changes() {
    let mut h = Harness::new(3).await;
    h.fake.set(&h.keys[0], Behavior::PerDay);
    h.fake.set(&h.keys[2], Behavior::Invalid);
    for _ in 0..4 {
        assert_eq!(h.generate("gemini-2.5-pro").await.status(), 200);
    }
    let before = h.stats().await;
    h.restart().await;
    let after = h.stats().await;
    assert_eq!(before["keys"], after["keys"]);
    // The exhausted and the disabled key stay out of rotation after the restart.
    h.fake.reset();
    for _ in 0..3 {
        h.generate("gemini-2.5-pro").await;
    }
    assert!(h.keys_seen().iter().all(|k| *k == h.keys[1]));

    // API_KEYS changes: key 2 is dropped, a new key joins; key 0 and 1 keep their stats.
    let mut keys = pool_keys(4);
    keys.remove(2);
    h.keys = keys;
    h.restart().await;
    let s = h.stats().await;
    let ids: Vec<&str> = s["keys"].as_array().expect("keys").iter().map(|k| k["id"].as_str().expect("id")).collect();
    assert_eq!(ids, [h.id_of(&h.keys[0]), h.id_of(&h.keys[1]), h.id_of(&h.keys[2])]);
    assert_eq!(s["keys"][0]["models"]["gemini-2.5-pro"]["state"], "exhausted");
    assert!(s["keys"][1]["models"]["gemini-2.5-pro"]["requests"].as_u64() >= Some(4));
    assert!(s["keys"][2]["models"].as_object().is_some_and(|m| m.is_empty()));
}

/// At start host-runner reads Google's models list with a pool key (as the
/// Worker's cron does after its daily reset): a listed model's outage is
/// counted under its own name from its first call, before any client listed
/// the models; an invented name is not.
#[tokio::test]
async fn the_models_list_read_at_start_counts_an_outage_under_its_name() {
    const LISTED: &str = "gemini-2.5-flash-preview-09-2025";
    let mut h = Harness::new(2).await;
    h.list_models = true;
    h.restart().await;
    let mut listed = false;
    for _ in 0..100 {
        listed = h.fake.requests().iter().any(|r| r.path == "/v1beta/models");
        if listed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(listed, "the listing went upstream");
    h.assert_only_pool_keys_upstream();
    // The names reach the key store a moment after the answer.
    let known = || {
        use host_runner::store::KeyBackend as _;
        let op = proxy_core::wire::keystore::AdminOp::ModelsListed { names: Vec::new() };
        let answer = h.server.as_ref().expect("running").store().admin(op);
        serde_json::from_str::<serde_json::Value>(&answer.body).ok().and_then(|v| v["listed"].as_u64()).unwrap_or(0)
    };
    for _ in 0..100 {
        if known() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(known() > 0, "the listed names reached the key store");
    h.fake.set_default(fake_upstream::Behavior::ServerError(503));
    assert!(h.generate(LISTED).await.status().is_server_error());
    assert!(h.generate("gemini-never-listed").await.status().is_server_error());
    let stats = h.stats().await;
    assert!(stats["models"][LISTED]["requests"].as_u64().is_some_and(|n| n >= 1), "{}", stats["models"]);
    assert!(stats["models"].get("gemini-never-listed").is_none(), "{}", stats["models"]);
}
