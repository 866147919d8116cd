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
