//! The admin API (`/admin/keys…`, guarded by `ADMIN_API_KEY`): the keys of
//! a running pool listed, added (pasted, with any separator), removed,
//! disabled and enabled with a note, labelled with their Google project,
//! and checked with one cheap upstream call each.
//!
//! The exchange parses a request into an [`AdminOp`]; the key store applies
//! it with [`apply`] (the pool, and the vault that seals keys added at run
//! time) and persists what [`Applied::writes`] lists; checks go upstream in
//! between, through the exchange, and come back as [`AdminOp::Checked`].

use crate::store::clients::{self, ClientView};
use crate::store::persist::{self, KeyRecord, VaultRecord};
use crate::store::pool::{Added, KeyPool};
use crate::store::registry;
use crate::store::signatures;
use crate::store::sql::{SqlValue, Statement};
use crate::store::vault::{NONCE_BYTES, Vault};
use crate::wire::error::ProxyError;
use crate::wire::http::Dialect;
use crate::wire::keystore::AdminAnswer;
use crate::wire::keystore::AdminOp;
use crate::wire::keystore::Lease;
use crate::wire::keystore::MAX_CHECKS_PER_CALL;
use crate::wire::keystore::WalkFrom;
use crate::wire::keystore::{NO_MODEL, Outcome, Report};
use crate::wire::resource::Resource;
use crate::wire::secret::{ApiKey, KeyId};
use crate::wire::time::UnixMillis;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

impl From<&Applied> for AdminAnswer {
    fn from(a: &Applied) -> Self {
        Self { status: a.status, body: a.body.clone(), leases: a.leases.clone() }
    }
}

/// What a store's [`apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// The JSON answer for the client (status and body).
    pub status: u16,
    /// The body.
    pub body: String,
    /// For a check plan: the keys to check.
    pub leases: Vec<Lease>,
    /// Key rows to upsert (coalesced with reports' rows).
    pub keys: Vec<KeyRecord>,
    /// Whether the writes may land with the host's next batch: the answer
    /// need not wait for the disk (what an answer carried, kept for later).
    pub batched: bool,
    /// Statements to run after them, in order (metadata, vault, removals).
    pub writes: Vec<Statement>,
}

fn answer(status: u16, body: Value) -> Applied {
    Applied { status, body: body.to_string(), ..Applied::default() }
}

/// The projects and their proxies, as [`AdminOp::Proxies`] answers them:
/// every project a key names or a proxy is set for, the proxy masked.
fn proxies(pool: &KeyPool) -> Value {
    let keys = pool.projects();
    let mut names: Vec<&str> = keys.keys().copied().collect();
    names.extend(pool.proxies().keys().map(String::as_str).filter(|p| !keys.contains_key(p)));
    names.sort_unstable();
    let entries: Vec<Value> = names
        .into_iter()
        .map(|p| json!({"project": p, "keys": keys.get(p).copied().unwrap_or(0), "proxy": pool.proxies().get(p).map(|u| u.masked())}))
        .collect();
    json!({ "projects": entries })
}

/// The admin's model aliases, as [`AdminOp::Aliases`] answers them.
fn aliases(pool: &KeyPool) -> Value {
    let entries: Vec<Value> = pool.aliases().iter().map(|(from, to)| json!({"from": from, "to": to})).collect();
    json!({ "aliases": entries })
}

fn refuse(e: &ProxyError) -> Applied {
    let r = e.to_response(Dialect::Gemini);
    Applied { status: r.status, body: r.body, ..Applied::default() }
}

/// Applies an admin operation to the pool; `vault` seals keys added at run
/// time (none: adding is off), `nonce` gives fresh random bytes.
pub fn apply(
    pool: &mut KeyPool,
    vault: Option<&Vault>,
    op: AdminOp,
    now: UnixMillis,
    nonce: &mut dyn FnMut() -> [u8; NONCE_BYTES],
) -> Applied {
    let unknown = |id: &KeyId| refuse(&ProxyError::NotFoundKey { id: id.as_str().to_owned() });
    match op {
        AdminOp::List => answer(200, list(pool, now)),
        AdminOp::Add { keys, project } => {
            let Some(vault) = vault else {
                return refuse(&ProxyError::Forbidden(
                    "adding keys at run time needs KEY_ENCRYPTION_SECRET (they are stored encrypted with a key derived from it); set it, or add keys to API_KEYS",
                ));
            };
            let mut out = Applied::default();
            let (mut added, mut present, mut restored) = (Vec::new(), Vec::new(), Vec::new());
            for raw in keys {
                let key = ApiKey::new(raw);
                let id = key.id();
                let seen = json!({"id": id.as_str(), "key": key.masked()});
                let sealed = vault.seal(&key, nonce());
                let outcome = pool.add(key, project.clone());
                match outcome {
                    Added::New => added.push(seen),
                    Added::AlreadyPresent => present.push(seen),
                    Added::Restored => restored.push(seen),
                }
                // A key already in the pool stays as it is.
                if outcome == Added::AlreadyPresent {
                    continue;
                }
                let record = VaultRecord { key_id: id.as_str().to_owned(), sealed, added_at: now.0 };
                out.writes.push((persist::UPSERT_VAULT, record.to_row()));
                out.writes.push(persist::unremove_statement(id.as_str()));
                if project.is_some()
                    && let Some(meta) = pool.label(&id, None, None)
                {
                    out.writes.push((persist::UPSERT_META, meta.to_row()));
                }
            }
            let body =
                json!({"added": added, "already_present": present, "restored": restored, "key_count": pool.len()});
            Applied { status: 200, body: body.to_string(), ..out }
        }
        AdminOp::Proxies => answer(200, proxies(pool)),
        AdminOp::ProxySet { project, proxy } => {
            let Some(vault) = vault else {
                return refuse(&ProxyError::Forbidden(
                    "a project's proxy needs KEY_ENCRYPTION_SECRET (its address, password included, is stored encrypted with a key derived from it)",
                ));
            };
            let proxy = match proxy.as_deref().map(crate::wire::proxy::ProxyUrl::parse).transpose() {
                Ok(p) => p,
                Err(why) => return refuse(&ProxyError::BadRequest(format!("`proxy`: {why}"))),
            };
            pool.set_proxy(project, proxy);
            let write = persist::proxies_statement(vault, pool.proxies(), nonce);
            Applied { writes: vec![write], ..answer(200, proxies(pool)) }
        }
        AdminOp::Aliases => answer(200, aliases(pool)),
        AdminOp::AliasesSet { entries } => {
            let write = persist::aliases_statement(&entries);
            pool.set_aliases(entries);
            Applied { writes: vec![write], ..answer(200, aliases(pool)) }
        }
        AdminOp::Remove { id } => {
            if !pool.contains(&id) {
                return unknown(&id);
            }
            if pool.len() == 1 {
                return refuse(&ProxyError::Conflict(
                    "this is the pool's last key; add another before removing it".into(),
                ));
            }
            let was_env = pool.remove(&id).is_some_and(|r| r.was_env);
            let mut writes = persist::forget_statements(id.as_str());
            if was_env {
                writes.push((
                    persist::INSERT_REMOVED,
                    vec![SqlValue::Text(id.as_str().to_owned()), SqlValue::Integer(now.0 as i64)],
                ));
            }
            let body = json!({"removed": id.as_str(), "from_api_keys": was_env, "key_count": pool.len()});
            Applied { status: 200, body: body.to_string(), writes, ..Applied::default() }
        }
        AdminOp::Disable { id, note } => match pool.disable(&id, note.as_deref().unwrap_or_default(), now) {
            Some((rec, meta)) => Applied {
                keys: vec![rec],
                writes: vec![(persist::UPSERT_META, meta.to_row())],
                ..answer(200, key_json(pool, &id, now))
            },
            None => unknown(&id),
        },
        AdminOp::Enable { id } => match pool.enable(&id) {
            Some((rec, meta)) => Applied {
                keys: vec![rec],
                writes: vec![(persist::UPSERT_META, meta.to_row())],
                ..answer(200, key_json(pool, &id, now))
            },
            None => unknown(&id),
        },
        AdminOp::Label { id, project, note } => match pool.label(&id, project, note) {
            Some(meta) => {
                Applied { writes: vec![(persist::UPSERT_META, meta.to_row())], ..answer(200, key_json(pool, &id, now)) }
            }
            None => unknown(&id),
        },
        AdminOp::Open => answer(200, json!({ "open": pool.clients().is_empty() })),
        AdminOp::SignaturesKeep { client, pairs } => {
            let writes = pool.signatures_mut().keep(signatures::scope_of(client.as_deref()), pairs, now);
            let kept = writes.iter().filter(|(sql, _)| sql.starts_with("INSERT")).count();
            Applied { writes, batched: true, ..answer(200, json!({ "kept": kept })) }
        }
        AdminOp::ModelsListed { names } => {
            let writes: Vec<Statement> =
                pool.list_models(names).iter().map(|all| persist::listed_statement(all)).collect();
            Applied { writes, batched: true, ..answer(200, json!({ "listed": pool.listed_count() })) }
        }
        AdminOp::Own { key, client, owned } => {
            let report = Report { owned, client, ..Report::of_key(key, NO_MODEL, Outcome::Success) };
            let rows = pool.remember_owners(&report, now);
            let writes: Vec<Statement> =
                rows.iter().map(|(name, owner)| registry::row_statement(name, owner.as_ref())).collect();
            Applied { writes, batched: true, ..answer(200, json!({ "owned": rows.len() })) }
        }
        AdminOp::Requests { query } => answer(200, pool.requests().page(&query)),
        AdminOp::Identify { claim, resources } => {
            let resources: Vec<Resource> = resources.iter().filter_map(|n| Resource::stored(n)).collect();
            match pool.identify(&claim, &resources, now) {
                Ok(client) => answer(200, json!({ "client": client })),
                Err(refusal) => answer(401, json!({ "refused": refusal })),
            }
        }
        AdminOp::Signatures { client, ids } => {
            let found = pool.signatures().find(signatures::scope_of(client.as_deref()), &ids, now);
            let found: serde_json::Map<String, Value> = found.into_iter().map(|(id, sig)| (id, json!(sig))).collect();
            answer(200, json!({ "signatures": found }))
        }
        AdminOp::Names { client, prefix } => answer(200, json!({ "names": pool.names_of(&client, &prefix, now) })),
        AdminOp::Walk { from, count, claim, model } => {
            let client = match claim.map(|c| pool.clients().admit(&c, &model, now)).transpose() {
                Ok(client) => client.flatten(),
                Err(refusal) => return answer(403, json!({ "refused": refusal })),
            };
            let leases = pool.walk(&from, count.min(crate::wire::keystore::WALK_KEYS));
            if leases.is_empty() && from == WalkFrom::First {
                let why =
                    format!("none of the pool's {} keys is usable (all disabled, or none configured)", pool.len());
                return answer(503, json!({ "unavailable": why }));
            }
            let leases = leases.into_iter().map(|l| Lease { client: client.clone(), ..l }).collect();
            Applied { status: 200, body: json!({ "client": client }).to_string(), leases, ..Applied::default() }
        }
        AdminOp::CheckPlan { ids, limit } => {
            let limit = limit.clamp(1, MAX_CHECKS_PER_CALL);
            let ids = match ids {
                Some(ids) => {
                    if let Some(missing) = ids.iter().find(|id| !pool.contains(id)) {
                        return unknown(missing);
                    }
                    ids
                }
                None => pool.to_check(pool.len()),
            };
            let leases: Vec<Lease> = ids.iter().take(limit).filter_map(|id| pool.lease_of(id)).collect();
            let remaining = ids.len().saturating_sub(leases.len());
            Applied { leases, ..answer(200, json!({"remaining": remaining})) }
        }
        AdminOp::Checked { results, remaining } => {
            let mut out = Applied::default();
            let mut checked = Vec::new();
            for (id, mut check) in results {
                check.at = now.0;
                if bad_key(&check.status) {
                    let why = format!("check found it {}: {}", check.status, check.reason.as_deref().unwrap_or("-"));
                    // The metadata row written below carries the hold.
                    out.keys.extend(pool.disable_because(&id, &why, now).map(|(rec, _)| rec));
                }
                if let Some(meta) = pool.record_check(&id, check.clone()) {
                    out.writes.push((persist::UPSERT_META, meta.to_row()));
                    checked.push(json!({"id": id.as_str(), "status": check.status, "reason": check.reason}));
                }
            }
            Applied { status: 200, body: json!({"checked": checked, "remaining": remaining}).to_string(), ..out }
        }
        AdminOp::ClientList => {
            let clients: Vec<Value> = pool.clients().views(now).iter().map(ClientView::to_json).collect();
            answer(200, json!({"clients": clients}))
        }
        AdminOp::ClientCreate { settings } => {
            let secret = format!("{}{}", clients::SECRET_PREFIX, URL_SAFE_NO_PAD.encode(nonce()));
            match pool.clients_mut().create(&secret, settings, now) {
                Ok(client) => {
                    let view = pool.clients().get(&client.id, now).map(|v| v.to_json());
                    let body = json!({
                        "client": view,
                        "secret": secret,
                        "note": "the secret is shown this once (it is stored only as a hash): give it to the client now",
                    });
                    Applied { writes: vec![(clients::UPSERT_CLIENT, client.to_row())], ..answer(201, body) }
                }
                Err(why) => refuse(&ProxyError::BadRequest(why)),
            }
        }
        AdminOp::ClientUpdate { id, settings } => match pool.clients_mut().update(&id, settings) {
            Ok(Some(client)) => {
                let view = pool.clients().get(&client.id, now).map(|v| v.to_json());
                Applied {
                    writes: vec![(clients::UPSERT_CLIENT, client.to_row())],
                    ..answer(200, json!({"client": view}))
                }
            }
            Ok(None) => refuse(&ProxyError::NotFoundClient { id }),
            Err(why) => refuse(&ProxyError::BadRequest(why)),
        },
        AdminOp::ClientRevoke { id } => {
            if pool.clients_mut().revoke(&id) {
                Applied { writes: clients::revoke_statements(&id), ..answer(200, json!({"revoked": id})) }
            } else {
                refuse(&ProxyError::NotFoundClient { id })
            }
        }
    }
}

/// Whether a check found a key that cannot serve.
fn bad_key(status: &str) -> bool {
    matches!(status, "invalid" | "suspended" | "leaked" | "wrong-key-type")
}

fn list(pool: &KeyPool, now: UnixMillis) -> Value {
    let snapshot = pool.snapshot(now).to_json();
    json!({"keys": snapshot["keys"], "key_count": pool.len()})
}

fn key_json(pool: &KeyPool, id: &KeyId, now: UnixMillis) -> Value {
    let snapshot = pool.snapshot(now).to_json();
    let key = snapshot["keys"].as_array().into_iter().flatten().find(|k| k["id"] == id.as_str()).cloned();
    key.unwrap_or(Value::Null)
}

/// The key meta rows and statements of an [`Applied`], as statements.
pub fn statements(applied: &Applied) -> impl Iterator<Item = Statement> + '_ {
    let keys = applied.keys.iter().map(|k| (persist::UPSERT_KEY, k.to_row()));
    keys.chain(applied.writes.iter().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::admin::classify_check;
    use crate::request::admin::parse;
    use crate::request::admin::split_paste;
    use crate::request::route::AdminRoute;
    use crate::test_support::fake_keys;
    use crate::wire::keystore::AdminOp;
    use crate::wire::keystore::CheckInfo;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    fn vault() -> Vault {
        Vault::from_secret("a long random secret for the tests").expect("vault")
    }

    fn run(pool: &mut KeyPool, op: AdminOp) -> (Applied, Value) {
        let mut n = 0u64;
        let applied = apply(pool, Some(&vault()), op, NOW, &mut || {
            n += 1;
            let mut nonce = [0; NONCE_BYTES];
            nonce[..8].copy_from_slice(&n.to_le_bytes());
            nonce
        });
        let v = serde_json::from_str(&applied.body).expect("JSON");
        (applied, v)
    }

    #[test]
    fn client_keys_are_created_with_a_secret_shown_once_changed_and_revoked() {
        let mut pool = KeyPool::new(fake_keys("ADMIN", 2));
        let body = br#"{"name": "team-a", "models": ["gemini-2.5-flash"], "daily_requests": 100}"#;
        let op = parse(&AdminRoute::ClientCreate, body).expect("op");
        // The op crosses to the key store as JSON (WIT, the Durable Object).
        let op: AdminOp = serde_json::from_str(&serde_json::to_string(&op).expect("json")).expect("back");
        let (applied, v) = run(&mut pool, op);
        assert_eq!(applied.status, 201, "{v}");
        let secret = v["secret"].as_str().expect("the secret, once").to_owned();
        assert!(secret.starts_with(clients::SECRET_PREFIX) && secret.len() >= 36, "{secret}");
        let id = v["client"]["id"].as_str().expect("id").to_owned();
        assert_eq!(v["client"]["quota"]["daily_requests"], 100);
        assert_eq!(v["client"]["models_allowed"], json!(["gemini-2.5-flash"]));
        let stored = format!("{:?}", applied.writes);
        assert!(!stored.contains(&secret), "the secret is never stored");
        assert!(stored.contains(&crate::wire::keystore::hash_secret(&secret)), "its hash is");
        let (_, list) = run(&mut pool, AdminOp::ClientList);
        assert!(
            !list.to_string().contains(&secret)
                && !list.to_string().contains(&crate::wire::keystore::hash_secret(&secret))
        );
        assert_eq!(list["clients"][0]["name"], "team-a");
        // A change: the quota lifted, tokens capped, models left as they are.
        let body = br#"{"daily_requests": null, "daily_tokens": 5000}"#;
        let op = parse(&AdminRoute::ClientUpdate(id.clone()), body).expect("op");
        let op: AdminOp = serde_json::from_str(&serde_json::to_string(&op).expect("json")).expect("back");
        let (applied, v) = run(&mut pool, op);
        assert_eq!(applied.status, 200, "{v}");
        assert_eq!(v["client"]["quota"], json!({"daily_requests": null, "daily_tokens": 5000}));
        assert_eq!(v["client"]["models_allowed"], json!(["gemini-2.5-flash"]));
        let bad = parse(&AdminRoute::ClientCreate, br#"{"name": "x", "daily_tokens": -1}"#).expect_err("bad");
        assert!(bad.to_string().contains("daily_tokens"), "{bad}");
        let (applied, _) = run(&mut pool, parse(&AdminRoute::ClientCreate, b"{}").expect("op"));
        assert_eq!(applied.status, 400, "a client needs a name");
        let (applied, _) = run(&mut pool, AdminOp::ClientRevoke { id: id.clone() });
        assert_eq!(applied.status, 200);
        assert_eq!(run(&mut pool, AdminOp::ClientRevoke { id }).0.status, 404);
        assert!(pool.clients().is_empty());
    }

    #[test]
    fn a_projects_proxy_is_kept_sealed_shown_masked_and_names_its_keys_route() {
        let mut pool = KeyPool::new(fake_keys("PROXY", 3));
        let ids: Vec<KeyId> = pool.ids().cloned().collect();
        pool.label(&ids[0], Some(Some("p1".into())), None);
        pool.label(&ids[1], Some(Some("p1".into())), None);
        let body = br#"{"project": "p1", "proxy": "socks5h://me:s3cret-pw@10.0.0.9:1080"}"#;
        let op = parse(&AdminRoute::ProxySet, body).expect("op");
        // The op crosses to the key store as JSON (WIT, the Durable Object).
        let op: AdminOp = serde_json::from_str(&serde_json::to_string(&op).expect("json")).expect("back");
        let (applied, v) = run(&mut pool, op);
        assert_eq!(applied.status, 200, "{v}");
        assert_eq!(v["projects"], json!([{"project": "p1", "keys": 2, "proxy": "socks5h://me:***@10.0.0.9:1080"}]));
        assert!(!applied.body.contains("s3cret-pw"));
        let stored = format!("{:?}", applied.writes);
        assert!(!stored.contains("s3cret-pw") && !stored.contains("10.0.0.9"), "sealed at rest: {stored}");
        let fingerprint = crate::wire::secret::ApiKey::new("socks5h://me:s3cret-pw@10.0.0.9:1080").id();
        assert!(!stored.contains(fingerprint.as_str()), "no hash of the URL to test guesses against");
        // The calls of p1's keys leave through it; the third key's do not.
        assert_eq!(pool.proxy_for(&ids[0]).map(|p| p.port), Some(1080));
        assert!(pool.proxy_for(&ids[2]).is_none());
        // Read back with the vault (and not without it).
        let (_, values) = applied.writes[0].clone();
        let rows = vec![values];
        let (opened, closed) = persist::proxies_from_rows(&rows, Some(&vault())).expect("rows");
        assert_eq!((opened.len(), closed), (1, 0));
        assert_eq!(opened[0].1.auth, Some(("me".into(), "s3cret-pw".into())));
        assert_eq!(persist::proxies_from_rows(&rows, None).expect("rows").1, 1);
        // A bad URL is refused in words without its password; null clears.
        let bad = parse(&AdminRoute::ProxySet, br#"{"project": "p1", "proxy": "ftp://u:pw-x@h"}"#).expect_err("bad");
        assert!(bad.to_string().contains("proxy") && !bad.to_string().contains("pw-x"), "{bad}");
        assert!(parse(&AdminRoute::ProxySet, br#"{"proxy": "http://h"}"#).is_err(), "a project is named");
        let op = parse(&AdminRoute::ProxySet, br#"{"project": "p1", "proxy": null}"#).expect("op");
        let (_, v) = run(&mut pool, op);
        assert_eq!(v["projects"][0]["proxy"], Value::Null);
        assert!(pool.proxy_for(&ids[0]).is_none());
        // Without the vault, nothing is set.
        let op = AdminOp::ProxySet { project: "p1".into(), proxy: Some("http://h:3128".into()) };
        assert_eq!(apply(&mut pool, None, op, NOW, &mut || [0; NONCE_BYTES]).status, 403);
    }

    #[test]
    fn a_cleared_label_survives_the_trip_to_the_key_store() {
        // Hosts send the op over WIT as JSON: `null` must stay "clear".
        let op = parse(&AdminRoute::Label(KeyId::from_string("k-1")), br#"{"project": null}"#).expect("parses");
        let wire = serde_json::to_string(&op).expect("serializes");
        match serde_json::from_str::<AdminOp>(&wire).expect("deserializes") {
            AdminOp::Label { project, note, .. } => assert_eq!((project, note), (Some(None), None), "{wire}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pastes_split_on_any_separator_and_drop_blanks_and_duplicates() {
        let text = "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW,\n\n  AQ.Ab8RN6KxQz1y2w3v4u5t6s7r8q9p0o_-mnbv;'odd+shaped/key=' \tAIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW | x";
        let (keys, dropped) = split_paste(text);
        assert_eq!(
            keys,
            ["AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", "AQ.Ab8RN6KxQz1y2w3v4u5t6s7r8q9p0o_-mnbv", "odd+shaped/key="]
        );
        assert_eq!(dropped, 1);
    }

    #[test]
    fn keys_added_are_sealed_and_reported_one_by_one() {
        let mut pool = KeyPool::new(fake_keys("ENV", 1));
        let env_key = fake_keys("ENV", 1)[0].expose().to_owned();
        let op = parse(
            &AdminRoute::Add,
            format!(r#"{{"keys": "AQ.newKEYnewKEYnewKEY0123456789\n{env_key}", "project": "p1"}}"#).as_bytes(),
        )
        .expect("parses");
        let (applied, v) = run(&mut pool, op);
        assert_eq!(applied.status, 200);
        assert_eq!(v["added"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["already_present"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["key_count"], 2);
        let text = format!("{:?}{}", applied.writes, applied.body);
        assert!(!text.contains("AQ.newKEYnewKEY") && !text.contains(&env_key), "a secret in the writes or answer");
        assert!(applied.writes.iter().any(|(sql, _)| *sql == persist::UPSERT_VAULT));
        let projects: Vec<Option<String>> = pool.snapshot(NOW).keys.into_iter().map(|k| k.project).collect();
        assert_eq!(projects, [None, Some("p1".into())], "the key already present is left as it was");
        // Without a vault, adding is off and says why.
        let off = apply(
            &mut pool,
            None,
            AdminOp::Add { keys: vec!["AQ.anotherKEY0123456789".into()], project: None },
            NOW,
            &mut || [0; NONCE_BYTES],
        );
        assert_eq!(off.status, 403);
        assert!(off.body.contains("KEY_ENCRYPTION_SECRET"));
    }

    #[test]
    fn bad_input_gets_a_clear_answer() {
        for (route, body) in [
            (AdminRoute::Add, &b"{not json"[..]),
            (AdminRoute::Add, b"[1,2]"),
            (AdminRoute::Add, b"{}"),
            (AdminRoute::Add, br#"{"keys": 5}"#),
            (AdminRoute::Add, br#"{"keys": " , ; "}"#),
            (AdminRoute::Check, br#"{"ids": "k-1"}"#),
            (AdminRoute::Label(KeyId::from_string("k")), br#"{"project": 3}"#),
        ] {
            let e = parse(&route, body).expect_err("refused");
            assert_eq!(e.status(), 400, "{route:?} {}", String::from_utf8_lossy(body));
        }
        let mut pool = KeyPool::new(fake_keys("ENV", 1));
        let id = pool.ids().next().cloned().expect("a key");
        let (a, _) = run(&mut pool, AdminOp::Remove { id: id.clone() });
        assert_eq!(a.status, 409, "the last key stays");
        let (a, _) = run(&mut pool, AdminOp::Disable { id: KeyId::from_string("k-nope"), note: None });
        assert_eq!(a.status, 404);
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn ten_thousand_keys_in_one_paste() {
        let mut pool = KeyPool::new(fake_keys("ENV", 1));
        let paste: String = fake_keys("PASTE", 10_000).iter().map(|k| format!("{}\n", k.expose())).collect();
        let op = parse(&AdminRoute::Add, json!({"keys": paste}).to_string().as_bytes()).expect("parses");
        let (applied, v) = run(&mut pool, op);
        assert_eq!(applied.status, 200);
        assert_eq!(v["added"].as_array().map(Vec::len), Some(10_000));
        assert_eq!(pool.len(), 10_001);
    }

    #[test]
    fn checks_classify_and_disable_keys_that_cannot_serve() {
        let k = ApiKey::new("AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW");
        let cases: [(u16, &str, &str); 6] = [
            (200, r#"{"models":[]}"#, "works"),
            (
                400,
                r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#,
                "invalid",
            ),
            (
                403,
                r#"{"error":{"code":403,"message":"Permission denied: Consumer 'api_key:AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW' has been suspended.","status":"PERMISSION_DENIED"}}"#,
                "suspended",
            ),
            (
                403,
                r#"{"error":{"code":403,"message":"Your API key was reported as leaked. Please use another API key.","status":"PERMISSION_DENIED"}}"#,
                "leaked",
            ),
            (
                401,
                r#"{"error":{"code":401,"message":"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.","status":"UNAUTHENTICATED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"ACCESS_TOKEN_TYPE_UNSUPPORTED"}]}}"#,
                "wrong-key-type",
            ),
            (429, r#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#, "rate-limited"),
        ];
        for (status, body, want) in cases {
            let c = classify_check(status, body.as_bytes(), &k);
            assert_eq!(c.status, want, "{body}");
            assert!(c.reason.as_deref().is_none_or(|r| !r.contains(k.expose())), "a secret in the reason");
        }
        let mut pool = KeyPool::new(fake_keys("CHK", 2));
        let ids: Vec<KeyId> = pool.ids().cloned().collect();
        let (plan, v) = run(&mut pool, AdminOp::CheckPlan { ids: None, limit: 1 });
        assert_eq!((plan.leases.len(), v["remaining"].as_u64()), (1, Some(1)));
        let leaked = CheckInfo { status: "leaked".into(), at: NOW.0, reason: Some("reported as leaked".into()) };
        let (a, _) = run(&mut pool, AdminOp::Checked { results: vec![(ids[0].clone(), leaked)], remaining: 1 });
        assert!(a.keys[0].disabled_reason.as_deref().is_some_and(|r| r.contains("leaked")));
        let s = pool.snapshot(NOW);
        assert_eq!(s.keys[0].check.as_ref().map(|c| c.status.as_str()), Some("leaked"));
        assert!(s.keys[0].disabled.as_ref().is_some_and(|d| d.reason.contains("leaked")));
        // Checked longest ago comes first next time.
        let (plan, _) = run(&mut pool, AdminOp::CheckPlan { ids: None, limit: 1 });
        assert_eq!(plan.leases[0].id, ids[1]);
    }
}
