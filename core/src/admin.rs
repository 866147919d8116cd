//! The admin API (`/admin/keys…`, guarded by `ADMIN_API_KEY`): the keys of
//! a running pool listed, added (pasted, with any separator), removed,
//! disabled and enabled with a note, labelled with their Google project,
//! and checked with one cheap upstream call each.
//!
//! The exchange parses a request into an [`AdminOp`]; the key store applies
//! it with [`apply`] (the pool, and the vault that seals keys added at run
//! time) and persists what [`Applied::writes`] lists; checks go upstream in
//! between, through the exchange, and come back as [`AdminOp::Checked`].

use crate::clients::{self, Claim, ClientSettings, ClientView};
use crate::error::ProxyError;
use crate::http::Response;
use crate::listing::WalkFrom;
use crate::outcome::Lease;
use crate::persist::{self, CheckInfo, KeyRecord, SqlValue, Statement, VaultRecord};
use crate::pool::{Added, KeyPool};
use crate::route::Dialect;
use crate::secret::{self, ApiKey, KeyId};
use crate::time::UnixMillis;
use crate::upstream;
use crate::vault::{NONCE_BYTES, Vault};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The largest admin request body read (a paste of 10,000 keys is ~400 KB).
pub const MAX_ADMIN_BODY_BYTES: u64 = 2 * 1024 * 1024;

/// The most keys one add takes.
pub const MAX_KEYS_PER_ADD: usize = 20_000;

/// The most keys one check call checks (a Worker may make 50 subrequests
/// per invocation on the free plan); call again for the rest.
pub const MAX_CHECKS_PER_CALL: usize = 10;

/// A key shorter than this in a paste is not a key.
const MIN_KEY_CHARS: usize = 8;

/// What the admin asks of the key store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AdminOp {
    /// Every key, masked, with its state.
    List,
    /// Keys to add (already split from the paste), with a project label.
    Add {
        /// The keys.
        keys: Vec<String>,
        /// Their project.
        project: Option<String>,
    },
    /// A key to remove.
    Remove {
        /// Its id.
        id: KeyId,
    },
    /// A key to disable, with a note.
    Disable {
        /// Its id.
        id: KeyId,
        /// Why.
        note: Option<String>,
    },
    /// A key to enable.
    Enable {
        /// Its id.
        id: KeyId,
    },
    /// A key's project and note (`None`: unchanged; `Some(None)`: cleared).
    Label {
        /// Its id.
        id: KeyId,
        /// Its project.
        #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
        project: Option<Option<String>>,
        /// Its note.
        #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
        note: Option<Option<String>>,
    },
    /// The keys to check now: `ids`, or those checked longest ago.
    CheckPlan {
        /// Which keys.
        ids: Option<Vec<KeyId>>,
        /// At most this many.
        limit: usize,
    },
    /// Every client key, with its use.
    ClientList,
    /// A client key to create (its secret is made by the store).
    ClientCreate {
        /// Its settings.
        settings: ClientSettings,
    },
    /// A client key's settings to change.
    ClientUpdate {
        /// Its id.
        id: String,
        /// What changes.
        settings: ClientSettings,
    },
    /// A client key to revoke.
    ClientRevoke {
        /// Its id.
        id: String,
    },
    /// Not an admin's: the keys a merged listing walks ([`KeyPool::walk`]),
    /// after admitting its client (`claim`; none: the proxy key's) for
    /// `model`. Answered 200 with the leases (the body names the client),
    /// or with why not.
    Walk {
        /// Where the walk starts.
        from: WalkFrom,
        /// At most this many keys.
        count: usize,
        /// Who the request claims to be.
        claim: Option<Claim>,
        /// The model its listing counts under.
        model: String,
    },
    /// Not an admin's: whether the proxy is open to anyone, that is whether
    /// no client key exists (asked only of a proxy without `PROXY_API_KEY`,
    /// [`crate::admit::Admission::Gated`]). Answered 200 with
    /// `{"open": bool}`.
    Open,
    /// Not an admin's: the names of client `client`'s resources that
    /// start with `prefix` (`files/`), for a listing it makes: it sees only
    /// those. Answered 200 with `{"names": […]}`.
    Names {
        /// The client.
        client: String,
        /// The names' start.
        prefix: String,
    },
    /// What the checks found, to record.
    Checked {
        /// Key by key.
        results: Vec<(KeyId, CheckInfo)>,
        /// Keys still to check after these.
        remaining: usize,
    },
}

/// A store's answer to an [`AdminOp`], as the exchange receives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminAnswer {
    /// The status of the client's answer.
    pub status: u16,
    /// Its JSON body.
    pub body: String,
    /// For a check plan: the keys to check (never shown to the client).
    pub leases: Vec<Lease>,
}

impl From<&Applied> for AdminAnswer {
    fn from(a: &Applied) -> Self {
        Self { status: a.status, body: a.body.clone(), leases: a.leases.clone() }
    }
}

impl AdminAnswer {
    /// The answer when a store applied an operation but could not save it.
    pub fn unsaved() -> Self {
        let message = "the change is in effect but could not be saved (the proxy's log says why): it will be lost when the proxy restarts";
        let body = json!({"error": {"code": 503, "message": message, "status": "UNAVAILABLE"}}).to_string();
        Self { status: 503, body, leases: Vec::new() }
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
    /// Statements to run after them, in order (metadata, vault, removals).
    pub writes: Vec<Statement>,
}

fn answer(status: u16, body: Value) -> Applied {
    Applied { status, body: body.to_string(), ..Applied::default() }
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
        AdminOp::Names { client, prefix } => answer(200, json!({ "names": pool.names_of(&client, &prefix, now) })),
        AdminOp::Walk { from, count, claim, model } => {
            let client = match claim.map(|c| pool.clients().admit(&c, &model, now)).transpose() {
                Ok(client) => client.flatten(),
                Err(refusal) => return answer(403, json!({ "refused": refusal })),
            };
            let leases = pool.walk(&from, count.min(crate::listing::WALK_KEYS));
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

/// What one check found, from the upstream's answer to a models list (the
/// store stamps it with its time).
pub fn classify_check(status: u16, body: &[u8], secret: &ApiKey) -> CheckInfo {
    let err = upstream::parse_google_error(body);
    let message = err.as_ref().map(|e| e.message.to_ascii_lowercase()).unwrap_or_default();
    let reasons: Vec<&str> = err.as_ref().map(|e| e.reasons.iter().map(String::as_str).collect()).unwrap_or_default();
    let has = |r: &str| reasons.contains(&r);
    let found = match status {
        200..=299 => "works",
        429 => "rate-limited",
        401 if has("ACCESS_TOKEN_TYPE_UNSUPPORTED") || message.contains("expected oauth 2 access token") => {
            "wrong-key-type"
        }
        _ if message.contains("reported as leaked") => "leaked",
        _ if has("CONSUMER_SUSPENDED") || message.contains("suspended") => "suspended",
        _ if has("API_KEY_INVALID") || message.contains("api key not valid") || status == 401 => "invalid",
        _ => "error",
    };
    let reason = (found != "works").then(|| {
        let text = err.map(|e| e.message).filter(|m| !m.is_empty()).unwrap_or_else(|| format!("HTTP {status}"));
        secret::redact(&text, &[secret])
    });
    CheckInfo { status: found.to_owned(), at: 0, reason }
}

/// The most of a key check's answer read.
pub const CHECK_BODY_BYTES: usize = 64 * 1024;

/// The check of `lease`: one models list, the cheapest call (no generation
/// quota spent).
pub fn check_request(cfg: &crate::config::Config, lease: &Lease) -> crate::forward::UpstreamRequest {
    let base = &cfg.gemini_upstream;
    crate::forward::UpstreamRequest {
        method: crate::http::Method::Get,
        scheme: base.scheme,
        authority: base.authority.clone(),
        path_and_query: format!("{}/models?pageSize=1", base.path),
        headers: vec![("x-goog-api-key".to_owned(), lease.secret.expose().to_owned())],
        body: crate::forward::BodyFrom::Read,
    }
}

/// Splits a paste into keys: any run of characters that are neither
/// whitespace nor one of `,;"'`|[](){}<>` is a candidate; blanks, duplicates
/// and pieces too short to be a key are dropped (and counted).
pub fn split_paste(text: &str) -> (Vec<String>, usize) {
    let separator = |c: char| c.is_whitespace() || ",;\"'`|[](){}<>".contains(c);
    let mut seen = std::collections::HashSet::new();
    let mut keys = Vec::new();
    let mut dropped = 0;
    for piece in text.split(separator).filter(|p| !p.is_empty()) {
        if piece.chars().count() < MIN_KEY_CHARS || piece.chars().any(char::is_control) {
            dropped += 1;
        } else if seen.insert(piece) {
            keys.push(piece.to_owned());
        }
    }
    (keys, dropped)
}

/// A route of the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRoute {
    /// `GET /admin/keys`.
    List,
    /// `POST /admin/keys`.
    Add,
    /// `POST /admin/keys/check`.
    Check,
    /// `DELETE /admin/keys/{id}`.
    Remove(KeyId),
    /// `PATCH /admin/keys/{id}`.
    Label(KeyId),
    /// `POST /admin/keys/{id}/disable`.
    Disable(KeyId),
    /// `POST /admin/keys/{id}/enable`.
    Enable(KeyId),
    /// `GET /admin/clients`.
    ClientList,
    /// `POST /admin/clients`.
    ClientCreate,
    /// `PATCH /admin/clients/{id}`.
    ClientUpdate(String),
    /// `DELETE /admin/clients/{id}`.
    ClientRevoke(String),
}

impl AdminRoute {
    /// Whether the route takes a body.
    pub fn reads_body(&self) -> bool {
        !matches!(self, Self::List | Self::Remove(_) | Self::ClientList | Self::ClientRevoke(_))
    }
}

/// A client's settings from an admin's JSON body: on a create, an absent
/// setting is unset; on a change (`PATCH`), it stays as it is, and `null`
/// lifts a quota or the models list.
fn client_settings(v: &Value) -> Result<ClientSettings, ProxyError> {
    let bad = |field: &str, what: &str| ProxyError::BadRequest(format!("`{field}` must be {what}"));
    let name = match v.get("name") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("name", "a string")),
    };
    let models = match v.get("models") {
        None => None,
        Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|m| m.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("models", "a list of model names, or null for every model"))?,
        ),
        Some(_) => return Err(bad("models", "a list of model names, or null for every model")),
    };
    let quota = |field: &str| match v.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(n) => n.as_u64().map(|n| Some(Some(n))).ok_or_else(|| bad(field, "a whole number, or null for none")),
    };
    Ok(ClientSettings { name, models, daily_requests: quota("daily_requests")?, daily_tokens: quota("daily_tokens")? })
}

/// The operation a request asks for, from its (bounded) JSON body.
pub fn parse(route: &AdminRoute, body: &[u8]) -> Result<AdminOp, ProxyError> {
    let json = || -> Result<Value, ProxyError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ProxyError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        if v.is_object() { Ok(v) } else { Err(ProxyError::BadRequest("the body must be a JSON object".into())) }
    };
    let text = |v: &Value, field: &str| -> Result<Option<String>, ProxyError> {
        match v.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ProxyError::BadRequest(format!("`{field}` must be a string"))),
        }
    };
    // PATCH: an absent field stays, `null` clears it.
    let change = |v: &Value, field: &str| -> Result<Option<Option<String>>, ProxyError> {
        match v.get(field) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
            Some(_) => Err(ProxyError::BadRequest(format!("`{field}` must be a string or null"))),
        }
    };
    Ok(match route {
        AdminRoute::List => AdminOp::List,
        AdminRoute::Add => {
            let v = json()?;
            let pasted = match v.get("keys") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(items)) => {
                    let mut joined = String::new();
                    for item in items {
                        let Value::String(s) = item else {
                            return Err(ProxyError::BadRequest("`keys` must be a string or a list of strings".into()));
                        };
                        joined.push_str(s);
                        joined.push('\n');
                    }
                    joined
                }
                _ => {
                    return Err(ProxyError::BadRequest(
                        "`keys` is required: the keys as pasted text (any separator) or a list of strings".into(),
                    ));
                }
            };
            let (keys, _) = split_paste(&pasted);
            if keys.is_empty() {
                return Err(ProxyError::BadRequest("`keys` holds no key".into()));
            }
            if keys.len() > MAX_KEYS_PER_ADD {
                return Err(ProxyError::BadRequest(format!(
                    "{} keys in one add; at most {MAX_KEYS_PER_ADD} (add the rest in another)",
                    keys.len()
                )));
            }
            AdminOp::Add { keys, project: text(&v, "project")?.filter(|p| !p.trim().is_empty()) }
        }
        AdminRoute::Check => {
            let v = json()?;
            let ids = match v.get("ids") {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .map(|i| i.as_str().map(KeyId::from_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| ProxyError::BadRequest("`ids` must be a list of key ids".into()))?,
                ),
                Some(_) => return Err(ProxyError::BadRequest("`ids` must be a list of key ids".into())),
            };
            let limit = match v.get("limit") {
                None | Some(Value::Null) => MAX_CHECKS_PER_CALL,
                Some(n) => n
                    .as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| ProxyError::BadRequest("`limit` must be a positive number".into()))?,
            };
            AdminOp::CheckPlan { ids, limit }
        }
        AdminRoute::Remove(id) => AdminOp::Remove { id: id.clone() },
        AdminRoute::Label(id) => {
            let v = json()?;
            AdminOp::Label { id: id.clone(), project: change(&v, "project")?, note: change(&v, "note")? }
        }
        AdminRoute::Disable(id) => AdminOp::Disable { id: id.clone(), note: text(&json()?, "note")? },
        AdminRoute::Enable(id) => AdminOp::Enable { id: id.clone() },
        AdminRoute::ClientList => AdminOp::ClientList,
        AdminRoute::ClientCreate => AdminOp::ClientCreate { settings: client_settings(&json()?)? },
        AdminRoute::ClientUpdate(id) => AdminOp::ClientUpdate { id: id.clone(), settings: client_settings(&json()?)? },
        AdminRoute::ClientRevoke(id) => AdminOp::ClientRevoke { id: id.clone() },
    })
}

/// The JSON answer a store gave, as the client's response.
pub fn response(status: u16, body: String) -> Response {
    Response::json(status, body).with_header("cache-control", "no-store")
}

/// The key meta rows and statements of an [`Applied`], as statements.
pub fn statements(applied: &Applied) -> impl Iterator<Item = Statement> + '_ {
    let keys = applied.keys.iter().map(|k| (persist::UPSERT_KEY, k.to_row()));
    keys.chain(applied.writes.iter().cloned())
}

/// A field that is present, `null` included (serde reads a `null` as an
/// absent `Option` otherwise, which would turn "clear" into "unchanged").
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::fake_keys;

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
        assert!(stored.contains(&clients::hash_secret(&secret)), "its hash is");
        let (_, list) = run(&mut pool, AdminOp::ClientList);
        assert!(!list.to_string().contains(&secret) && !list.to_string().contains(&clients::hash_secret(&secret)));
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
