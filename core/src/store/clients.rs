//! Client keys: the callers sharing one pool, each with a name, the models
//! it may use and daily quotas of requests and tokens. The admin creates,
//! changes and revokes them ([`crate::store::admin`]); the secret is shown once
//! and stored only as a hash.
//!
//! A request names its client through its credential: the exchange sends
//! the credential's hashes with its first acquire ([`Claim`]), and the key
//! store admits it ([`ClientBook::admit`]) before handing out a key, so a
//! client check costs no extra round trip. `PROXY_API_KEY` stays the
//! one-client shortcut: a request carrying it is not a client's and has no
//! quota. Once a client key exists, an open proxy (no `PROXY_API_KEY`)
//! takes only client keys.
//!
//! Quotas count per Pacific day, as Google's own per-day quotas do, and
//! reset at Pacific midnight. A request counts once its answer is known
//! (its last attempt's report); its tokens count with it. Requests in
//! flight at the same time are admitted against the same count, so a quota
//! can be overrun by as many requests as a client has in flight.

use crate::store::sql::{Columns, RowError, SqlValue, Statement, int, opt_int, token_values};
use crate::wire::keystore::Claim;
use crate::wire::keystore::ClientSettings;
use crate::wire::keystore::Quota;
use crate::wire::keystore::Refusal;
use crate::wire::keystore::hash_secret;
use crate::wire::time::{UnixMillis, next_pacific_midnight};
use crate::wire::usage::TokenUsage;
use crate::wire::usage::quota_tokens;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// The prefix of a client key's secret.
pub const SECRET_PREFIX: &str = "gpc-";

/// The most client keys a pool holds.
pub const MAX_CLIENTS: usize = 1_000;

/// The most models a client's usage is kept for; later ones fold into
/// [`OTHER_MODELS`].
pub const MAX_MODELS_PER_CLIENT: usize = 64;

/// The usage bucket of a client's models past [`MAX_MODELS_PER_CLIENT`].
pub const OTHER_MODELS: &str = "(other models)";

/// The most key × model rows a client's usage is kept for; later keys fold
/// into [`OTHER_KEYS`] (its models stay bounded by
/// [`MAX_MODELS_PER_CLIENT`]).
pub const MAX_KEY_ROWS_PER_CLIENT: usize = 2_048;

/// The usage bucket of a client's keys past [`MAX_KEY_ROWS_PER_CLIENT`].
pub const OTHER_KEYS: &str = "(other keys)";

/// The most key × model rows of all clients together; past it, a new
/// row's use counts under ([`OTHER_KEYS`], [`OTHER_MODELS`]) of its client.
pub const MAX_KEY_ROWS: usize = 20_000;

/// The longest client name.
pub const MAX_NAME_CHARS: usize = 80;

/// A client key, as stored: never its secret, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// Its id (not secret).
    pub id: String,
    /// Its name.
    pub name: String,
    /// [`hash_secret`] of its secret.
    pub secret_hash: String,
    /// The models it may use (none: every model).
    pub models: Vec<String>,
    /// Requests a day, if capped.
    pub daily_requests: Option<u64>,
    /// Tokens a day, if capped.
    pub daily_tokens: Option<u64>,
    /// When it was created.
    pub created_at: u64,
}

impl Client {
    /// The row's values, in [`SELECT_CLIENTS`] and [`UPSERT_CLIENT`] order.
    pub fn to_row(&self) -> Vec<SqlValue> {
        vec![
            SqlValue::Text(self.id.clone()),
            SqlValue::Text(self.name.clone()),
            SqlValue::Text(self.secret_hash.clone()),
            SqlValue::Text(serde_json::to_string(&self.models).unwrap_or_else(|_| "[]".into())),
            opt_int(self.daily_requests),
            opt_int(self.daily_tokens),
            int(self.created_at),
        ]
    }

    /// The record of a row.
    pub fn from_row(row: &[SqlValue]) -> Result<Self, RowError> {
        let mut c = Columns::new("clients", row);
        let (id, name, secret_hash, models) = (c.text()?, c.text()?, c.text()?, c.text()?);
        let models = serde_json::from_str(&models).map_err(|e| c.err(format!("models: {e}")))?;
        Ok(Self {
            id,
            name,
            secret_hash,
            models,
            daily_requests: c.opt_int()?,
            daily_tokens: c.opt_int()?,
            created_at: c.int()?,
        })
    }

    /// Whether the client may call `model`. Lists and the resources a
    /// model is used with (files, caches, batches, operations), counted
    /// under a pseudo-model, are open to every client: the model is checked
    /// where it is used. Interactions (an agent generates) and calls to
    /// unknown APIs are not.
    fn may_use(&self, model: &str) -> bool {
        crate::wire::keystore::OPEN_PSEUDO_MODELS.contains(&model)
            || self.models.is_empty()
            || self.models.iter().any(|m| m == model)
    }
}

/// A client's use of one model: in all, and on its current quota day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientUsage {
    /// The client's id.
    pub client: String,
    /// The model.
    pub model: String,
    /// Requests answered, in all.
    pub requests: u64,
    /// Tokens, in all.
    pub tokens: TokenUsage,
    /// The quota day the next two count (its end: a Pacific midnight).
    pub day: u64,
    /// Requests that day.
    pub day_requests: u64,
    /// Tokens that day (prompt, output and thinking).
    pub day_tokens: u64,
}

impl ClientUsage {
    /// The row's values, in [`SELECT_CLIENT_USAGE`] and
    /// [`UPSERT_CLIENT_USAGE`] order.
    pub fn to_row(&self) -> Vec<SqlValue> {
        let mut row = vec![SqlValue::Text(self.client.clone()), SqlValue::Text(self.model.clone()), int(self.requests)];
        row.extend(token_values(&self.tokens));
        row.extend([int(self.day), int(self.day_requests), int(self.day_tokens)]);
        row
    }

    /// The record of a row.
    pub fn from_row(row: &[SqlValue]) -> Result<Self, RowError> {
        let mut c = Columns::new("client_usage", row);
        Ok(Self {
            client: c.text()?,
            model: c.text()?,
            requests: c.int()?,
            tokens: c.tokens()?,
            day: c.int()?,
            day_requests: c.int()?,
            day_tokens: c.int()?,
        })
    }

    fn today(&self, day: u64) -> (u64, u64) {
        if self.day == day { (self.day_requests, self.day_tokens) } else { (0, 0) }
    }
}

/// A client's use of one model on one upstream key: the finest count, the
/// key × model × client table. Quotas read [`ClientUsage`], its sum over
/// keys, so that admitting a request stays one small range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientKeyUsage {
    /// The client's id.
    pub client: String,
    /// The upstream key's id (or [`OTHER_KEYS`]).
    pub key: String,
    /// The model.
    pub model: String,
    /// Requests answered.
    pub requests: u64,
    /// Tokens.
    pub tokens: TokenUsage,
}

impl ClientKeyUsage {
    /// The row's values, in [`SELECT_CLIENT_KEY_USAGE`] and
    /// [`UPSERT_CLIENT_KEY_USAGE`] order.
    pub fn to_row(&self) -> Vec<SqlValue> {
        let mut row = vec![
            SqlValue::Text(self.client.clone()),
            SqlValue::Text(self.key.clone()),
            SqlValue::Text(self.model.clone()),
            int(self.requests),
        ];
        row.extend(token_values(&self.tokens));
        row
    }

    /// The record of a row.
    pub fn from_row(row: &[SqlValue]) -> Result<Self, RowError> {
        let mut c = Columns::new("client_key_usage", row);
        Ok(Self { client: c.text()?, key: c.text()?, model: c.text()?, requests: c.int()?, tokens: c.tokens()? })
    }
}

/// Creates the client tables when missing.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS clients (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    models TEXT NOT NULL,
    daily_requests INTEGER,
    daily_tokens INTEGER,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS client_usage (
    client TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    prompt INTEGER NOT NULL,
    output INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    thinking INTEGER NOT NULL,
    day INTEGER NOT NULL,
    day_requests INTEGER NOT NULL,
    day_tokens INTEGER NOT NULL,
    PRIMARY KEY (client, model)
);
CREATE TABLE IF NOT EXISTS client_key_usage (
    client TEXT NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    prompt INTEGER NOT NULL,
    output INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    thinking INTEGER NOT NULL,
    PRIMARY KEY (client, key, model)
);
";

/// Reads every client.
pub const SELECT_CLIENTS: &str =
    "SELECT id, name, secret_hash, models, daily_requests, daily_tokens, created_at FROM clients";
/// Writes a client.
pub const UPSERT_CLIENT: &str = "INSERT INTO clients (id, name, secret_hash, models, daily_requests, daily_tokens, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO UPDATE SET name = excluded.name, \
     models = excluded.models, daily_requests = excluded.daily_requests, daily_tokens = excluded.daily_tokens";
/// Reads every client's usage.
pub const SELECT_CLIENT_USAGE: &str = "SELECT client, model, requests, prompt, output, cached, thinking, day, \
     day_requests, day_tokens FROM client_usage";
/// Writes a client's usage of a model.
pub const UPSERT_CLIENT_USAGE: &str = "INSERT INTO client_usage (client, model, requests, prompt, output, cached, \
     thinking, day, day_requests, day_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
     ON CONFLICT(client, model) DO UPDATE SET requests = excluded.requests, prompt = excluded.prompt, \
     output = excluded.output, cached = excluded.cached, thinking = excluded.thinking, day = excluded.day, \
     day_requests = excluded.day_requests, day_tokens = excluded.day_tokens";
/// Clears every client's usage.
pub const DELETE_CLIENT_USAGE: &str = "DELETE FROM client_usage";
/// Reads every client's usage per key and model.
pub const SELECT_CLIENT_KEY_USAGE: &str =
    "SELECT client, key, model, requests, prompt, output, cached, thinking FROM client_key_usage";
/// Writes a client's usage of a model on a key.
pub const UPSERT_CLIENT_KEY_USAGE: &str = "INSERT INTO client_key_usage (client, key, model, requests, prompt, \
     output, cached, thinking) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(client, key, model) DO UPDATE \
     SET requests = excluded.requests, prompt = excluded.prompt, output = excluded.output, \
     cached = excluded.cached, thinking = excluded.thinking";

/// The statements that forget a client and its usage.
pub fn revoke_statements(id: &str) -> Vec<Statement> {
    vec![
        ("DELETE FROM clients WHERE id = ?1", vec![SqlValue::Text(id.to_owned())]),
        ("DELETE FROM client_usage WHERE client = ?1", vec![SqlValue::Text(id.to_owned())]),
        ("DELETE FROM client_key_usage WHERE client = ?1", vec![SqlValue::Text(id.to_owned())]),
    ]
}

/// Every client of a pool, and their usage.
#[derive(Clone, Debug, Default)]
pub struct ClientBook {
    clients: BTreeMap<String, Client>,
    by_hash: HashMap<String, String>,
    usage: BTreeMap<(String, String), ClientUsage>,
    /// By client, key and model.
    by_key: BTreeMap<(String, String, String), ClientKeyUsage>,
}

/// The rows one client request changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientRecord {
    /// The client × model row (quotas, totals).
    pub usage: ClientUsage,
    /// The client × key × model row.
    pub by_key: ClientKeyUsage,
}

/// A client and its use, for `/stat` and the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientView {
    /// The client.
    pub client: Client,
    /// Its use, model by model.
    pub usage: Vec<ClientUsage>,
    /// Its use, key × model.
    pub by_key: Vec<ClientKeyUsage>,
    /// Requests and tokens on the current quota day.
    pub today: (u64, u64),
    /// When the quota day ends.
    pub resets_at: UnixMillis,
}

impl ClientView {
    /// Requests and tokens in all, over every model.
    pub fn totals(&self) -> (u64, TokenUsage) {
        self.usage.iter().fold((0, TokenUsage::default()), |(requests, mut tokens), u| {
            tokens.add(&u.tokens);
            (requests + u.requests, tokens)
        })
    }

    /// As JSON (no secret, no hash).
    pub fn to_json(&self) -> Value {
        let c = &self.client;
        let mut models = serde_json::Map::new();
        for u in &self.usage {
            models.insert(u.model.clone(), json!({"requests": u.requests, "tokens": tokens_json(&u.tokens)}));
        }
        let mut keys = serde_json::Map::new();
        for u in &self.by_key {
            let models = keys.entry(u.key.clone()).or_insert_with(|| json!({}));
            models[&u.model] = json!({"requests": u.requests, "tokens": tokens_json(&u.tokens)});
        }
        let (requests, tokens) = self.totals();
        json!({
            "id": c.id,
            "name": c.name,
            "models_allowed": c.models,
            "quota": {"daily_requests": c.daily_requests, "daily_tokens": c.daily_tokens},
            "today": {
                "requests": self.today.0,
                "tokens": self.today.1,
                "resets_at": self.resets_at.to_rfc3339(),
            },
            "requests": requests,
            "tokens": tokens_json(&tokens),
            "models": models,
            "keys": keys,
            "created_at": UnixMillis(c.created_at).to_rfc3339(),
        })
    }
}

fn tokens_json(t: &TokenUsage) -> Value {
    json!({"prompt": t.prompt, "output": t.output, "cached": t.cached, "thinking": t.thinking})
}

impl ClientBook {
    /// The book of stored clients and usage (usage of unknown clients is
    /// dropped).
    pub fn restore(clients: Vec<Client>, usage: Vec<ClientUsage>, by_key: Vec<ClientKeyUsage>) -> Self {
        let mut book = Self::default();
        for c in clients {
            book.by_hash.insert(c.secret_hash.clone(), c.id.clone());
            book.clients.insert(c.id.clone(), c);
        }
        for u in usage {
            if book.clients.contains_key(&u.client) {
                book.usage.insert((u.client.clone(), u.model.clone()), u);
            }
        }
        for u in by_key {
            if book.clients.contains_key(&u.client) {
                book.by_key.insert((u.client.clone(), u.key.clone(), u.model.clone()), u);
            }
        }
        book
    }

    /// The name of client `id`, if it is one.
    pub fn name_of(&self, id: &str) -> Option<String> {
        self.clients.get(id).map(|c| c.name.clone())
    }

    /// Whether there is no client.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Who `claim` is, whatever it asks for: the client's id (`None`: an
    /// open proxy's caller), or why no one (its key is no client's).
    pub fn identify(&self, claim: &Claim) -> Result<Option<String>, Refusal> {
        let found = claim.hashes.iter().find_map(|h| self.by_hash.get(h)).and_then(|id| self.clients.get(id));
        match found {
            Some(client) => Ok(Some(client.id.clone())),
            None if claim.open && self.clients.is_empty() => Ok(None),
            None => Err(Refusal::UnknownKey { presented: !claim.hashes.is_empty() }),
        }
    }

    /// Admits a request of `claim` for `model`: the client's id (`None`:
    /// the proxy key's, or an open proxy's), or why not.
    pub fn admit(&self, claim: &Claim, model: &str, now: UnixMillis) -> Result<Option<String>, Refusal> {
        let found = claim.hashes.iter().find_map(|h| self.by_hash.get(h)).and_then(|id| self.clients.get(id));
        let Some(client) = found else {
            return if claim.open && self.clients.is_empty() {
                Ok(None)
            } else {
                Err(Refusal::UnknownKey { presented: !claim.hashes.is_empty() })
            };
        };
        if !client.may_use(model) {
            return Err(Refusal::ModelNotAllowed { client: client.name.clone(), model: model.to_owned() });
        }
        let (requests, tokens) = self.today(&client.id, now);
        let over = |quota, limit: Option<u64>, used: u64| {
            limit.filter(|l| used >= *l).map(|limit| Refusal::OverQuota {
                client: client.name.clone(),
                quota,
                limit,
                resets_at: next_pacific_midnight(now),
                retry_after_ms: now.until(next_pacific_midnight(now)),
            })
        };
        if let Some(r) = over(Quota::Requests, client.daily_requests, requests)
            .or_else(|| over(Quota::Tokens, client.daily_tokens, tokens))
        {
            return Err(r);
        }
        Ok(Some(client.id.clone()))
    }

    /// Requests and tokens of client `id` on the current quota day.
    pub fn today(&self, id: &str, now: UnixMillis) -> (u64, u64) {
        let day = next_pacific_midnight(now).0;
        let rows = self.usage.range((id.to_owned(), String::new())..).take_while(|((c, _), _)| c == id);
        rows.fold((0, 0), |(r, t), (_, u)| {
            let (dr, dt) = u.today(day);
            (r + dr, t + dt)
        })
    }

    /// Counts one answered request of client `id` for `model` on upstream
    /// key `key`, with its tokens; the changed rows, to persist (none for an
    /// unknown client).
    pub fn record(
        &mut self,
        id: &str,
        key: &str,
        model: &str,
        tokens: Option<&TokenUsage>,
        now: UnixMillis,
    ) -> Option<ClientRecord> {
        if !self.clients.contains_key(id) {
            return None;
        }
        let known = self.usage.contains_key(&(id.to_owned(), model.to_owned()));
        let models = self.usage.range((id.to_owned(), String::new())..).take_while(|((c, _), _)| c == id).count();
        let model = if known || models < MAX_MODELS_PER_CLIENT { model } else { OTHER_MODELS };
        let day = next_pacific_midnight(now).0;
        let u = self.usage.entry((id.to_owned(), model.to_owned())).or_insert_with(|| ClientUsage {
            client: id.to_owned(),
            model: model.to_owned(),
            ..ClientUsage::default()
        });
        if u.day != day {
            (u.day, u.day_requests, u.day_tokens) = (day, 0, 0);
        }
        u.requests += 1;
        u.day_requests += 1;
        if let Some(t) = tokens {
            u.tokens.add(t);
            u.day_tokens = u.day_tokens.saturating_add(quota_tokens(t));
        }
        let usage = u.clone();
        Some(ClientRecord { by_key: self.record_key(id, key, model, tokens), usage })
    }

    fn record_key(&mut self, id: &str, key: &str, model: &str, tokens: Option<&TokenUsage>) -> ClientKeyUsage {
        let mut slot = (id.to_owned(), key.to_owned(), model.to_owned());
        if !self.by_key.contains_key(&slot) {
            if self.by_key.len() >= MAX_KEY_ROWS {
                slot = (id.to_owned(), OTHER_KEYS.to_owned(), OTHER_MODELS.to_owned());
            } else if self.key_rows_of(id).count() >= MAX_KEY_ROWS_PER_CLIENT {
                OTHER_KEYS.clone_into(&mut slot.1);
            }
        }
        let u = self.by_key.entry(slot).or_insert_with_key(|(client, key, model)| ClientKeyUsage {
            client: client.clone(),
            key: key.clone(),
            model: model.clone(),
            ..Default::default()
        });
        u.requests += 1;
        if let Some(t) = tokens {
            u.tokens.add(t);
        }
        u.clone()
    }

    /// Every usage row.
    pub fn usage_records(&self) -> Vec<ClientUsage> {
        self.usage.values().cloned().collect()
    }

    /// Client `id`'s key × model rows (counted only when a new row would
    /// be added, so not per request).
    fn key_rows_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a ClientKeyUsage> + 'a {
        let from = (id.to_owned(), String::new(), String::new());
        self.by_key.range(from..).take_while(move |((client, _, _), _)| client == id).map(|(_, u)| u)
    }

    /// Every key × model usage row.
    pub fn key_usage_records(&self) -> Vec<ClientKeyUsage> {
        self.by_key.values().cloned().collect()
    }

    /// Every client with its use.
    pub fn views(&self, now: UnixMillis) -> Vec<ClientView> {
        self.clients.values().map(|c| self.view(c, now)).collect()
    }

    fn view(&self, c: &Client, now: UnixMillis) -> ClientView {
        let usage =
            self.usage.range((c.id.clone(), String::new())..).take_while(|((id, _), _)| *id == c.id).map(|(_, u)| u);
        ClientView {
            client: c.clone(),
            usage: usage.cloned().collect(),
            by_key: self.key_rows_of(&c.id).cloned().collect(),
            today: self.today(&c.id, now),
            resets_at: next_pacific_midnight(now),
        }
    }

    /// One client with its use.
    pub fn get(&self, id: &str, now: UnixMillis) -> Option<ClientView> {
        self.clients.get(id).map(|c| self.view(c, now))
    }

    /// Creates a client with `secret` (which the caller shows once).
    pub fn create(&mut self, secret: &str, settings: ClientSettings, now: UnixMillis) -> Result<Client, String> {
        if self.clients.len() >= MAX_CLIENTS {
            return Err(format!("the pool already has {MAX_CLIENTS} client keys; revoke one first"));
        }
        let hash = hash_secret(secret);
        let id = format!("c-{}", &hash_secret(&hash)[..12]);
        let mut client = Client {
            id,
            name: String::new(),
            secret_hash: hash,
            models: Vec::new(),
            daily_requests: None,
            daily_tokens: None,
            created_at: now.0,
        };
        apply_settings(&mut client, settings)?;
        if client.name.is_empty() {
            return Err("`name` is required: who the client key is for".into());
        }
        self.by_hash.insert(client.secret_hash.clone(), client.id.clone());
        self.clients.insert(client.id.clone(), client.clone());
        Ok(client)
    }

    /// Changes a client's settings: the changed client, `Ok(None)` when
    /// there is none with that id.
    pub fn update(&mut self, id: &str, settings: ClientSettings) -> Result<Option<Client>, String> {
        let Some(client) = self.clients.get_mut(id) else { return Ok(None) };
        let mut changed = client.clone();
        apply_settings(&mut changed, settings)?;
        *client = changed.clone();
        Ok(Some(changed))
    }

    /// Forgets every client's use of upstream key `key` (removed from the
    /// pool): its rows go, as the key's own counts do; the clients' totals
    /// per model stay.
    pub fn forget_key(&mut self, key: &str) {
        self.by_key.retain(|(_, k, _), _| k != key);
    }

    /// Revokes a client: whether there was one.
    pub fn revoke(&mut self, id: &str) -> bool {
        let Some(c) = self.clients.remove(id) else { return false };
        self.by_hash.remove(&c.secret_hash);
        self.usage.retain(|(client, _), _| client != id);
        self.by_key.retain(|(client, _, _), _| client != id);
        true
    }
}

fn apply_settings(c: &mut Client, s: ClientSettings) -> Result<(), String> {
    if let Some(name) = s.name {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(format!("`name` must be 1 to {MAX_NAME_CHARS} printable characters"));
        }
        name.clone_into(&mut c.name);
    }
    if let Some(models) = s.models {
        let mut models: Vec<String> =
            models.iter().map(|m| m.trim().trim_start_matches("models/").to_owned()).collect();
        if models.iter().any(|m| m.is_empty() || m.len() > 128) {
            return Err("`models` must be model names, such as \"gemini-2.5-flash\"".into());
        }
        models.sort();
        models.dedup();
        c.models = models;
    }
    if let Some(q) = s.daily_requests {
        c.daily_requests = q;
    }
    if let Some(q) = s.daily_tokens {
        c.daily_tokens = q;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::keystore::Claim;
    use crate::wire::keystore::ClientSettings;
    use crate::wire::keystore::Quota;
    use crate::wire::keystore::Refusal;
    use crate::wire::keystore::hash_secret;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    fn settings(name: &str, requests: Option<u64>, tokens: Option<u64>) -> ClientSettings {
        ClientSettings {
            name: Some(name.into()),
            models: None,
            daily_requests: Some(requests),
            daily_tokens: Some(tokens),
        }
    }

    fn claim(secret: &str) -> Claim {
        Claim { hashes: vec![hash_secret(secret)], open: false }
    }

    #[test]
    fn request_and_token_quotas_hold_per_client_until_pacific_midnight() {
        let mut book = ClientBook::default();
        let a = book.create("gpc-alice-secret", settings("alice", Some(2), None), NOW).expect("a");
        let b = book.create("gpc-bob-secret", settings("bob", None, Some(100)), NOW).expect("b");
        for _ in 0..2 {
            assert_eq!(book.admit(&claim("gpc-alice-secret"), "m", NOW), Ok(Some(a.id.clone())));
            book.record(&a.id, "k1", "m", None, NOW);
        }
        let refused = book.admit(&claim("gpc-alice-secret"), "m", NOW).expect_err("over");
        assert_eq!(
            refused,
            Refusal::OverQuota {
                client: "alice".into(),
                quota: Quota::Requests,
                limit: 2,
                resets_at: next_pacific_midnight(NOW),
                retry_after_ms: NOW.until(next_pacific_midnight(NOW)),
            }
        );
        // Bob is unaffected until his tokens run out.
        assert_eq!(book.admit(&claim("gpc-bob-secret"), "m", NOW), Ok(Some(b.id.clone())));
        let used = TokenUsage { prompt: 60, output: 30, cached: 50, thinking: 10 };
        book.record(&b.id, "k1", "m", Some(&used), NOW);
        assert!(matches!(
            book.admit(&claim("gpc-bob-secret"), "m", NOW),
            Err(Refusal::OverQuota { quota: Quota::Tokens, limit: 100, .. })
        ));
        // The next quota day starts afresh; the totals stay.
        let tomorrow = next_pacific_midnight(NOW).plus(1);
        assert_eq!(book.admit(&claim("gpc-alice-secret"), "m", tomorrow), Ok(Some(a.id.clone())));
        assert_eq!(book.today(&a.id, tomorrow), (0, 0));
        assert_eq!(book.get(&b.id, tomorrow).expect("b").usage[0].tokens, used);
    }

    #[test]
    fn unknown_keys_models_and_open_proxies() {
        let mut book = ClientBook::default();
        let open = Claim { hashes: vec![], open: true };
        assert_eq!(book.admit(&open, "m", NOW), Ok(None), "an open proxy without clients lets everyone in");
        let mut s = settings("carol", None, None);
        s.models = Some(vec!["models/gemini-2.5-flash".into()]);
        book.create("gpc-carol-secret", s, NOW).expect("c");
        assert_eq!(book.admit(&open, "m", NOW), Err(Refusal::UnknownKey { presented: false }));
        assert_eq!(book.admit(&claim("wrong"), "m", NOW), Err(Refusal::UnknownKey { presented: true }));
        assert!(book.admit(&claim("gpc-carol-secret"), "gemini-2.5-flash", NOW).is_ok());
        // Lists and resources name no model: open to a client kept to some.
        for pseudo in [crate::wire::keystore::NO_MODEL, "(files)", "(cachedContents)"] {
            assert!(book.admit(&claim("gpc-carol-secret"), pseudo, NOW).is_ok(), "{pseudo}");
        }
        for closed in ["(interactions)", crate::request::route::OTHER_RESOURCE] {
            assert!(book.admit(&claim("gpc-carol-secret"), closed, NOW).is_err(), "{closed}");
        }
        assert!(matches!(
            book.admit(&claim("gpc-carol-secret"), "gemini-2.5-pro", NOW),
            Err(Refusal::ModelNotAllowed { .. })
        ));
    }

    #[test]
    fn rows_round_trip_and_revoking_forgets_usage() {
        let mut book = ClientBook::default();
        let c = book.create("gpc-dave-secret", settings("dave", Some(5), Some(9)), NOW).expect("d");
        assert_eq!(Client::from_row(&c.to_row()), Ok(c.clone()));
        assert!(!c.to_row().iter().any(|v| *v == SqlValue::Text("gpc-dave-secret".into())), "no secret in a row");
        let used = TokenUsage { prompt: 1, output: 2, cached: 0, thinking: 3 };
        let r = book.record(&c.id, "k1", "m", Some(&used), NOW).expect("rows");
        assert_eq!(ClientUsage::from_row(&r.usage.to_row()), Ok(r.usage.clone()));
        assert_eq!(ClientKeyUsage::from_row(&r.by_key.to_row()), Ok(r.by_key.clone()));
        let restored = ClientBook::restore(vec![c.clone()], vec![r.usage], vec![r.by_key]);
        assert_eq!(restored.today(&c.id, NOW), (1, 6));
        assert_eq!(restored.get(&c.id, NOW).expect("view").by_key, book.get(&c.id, NOW).expect("view").by_key);
        assert!(book.revoke(&c.id));
        assert_eq!(book.admit(&claim("gpc-dave-secret"), "m", NOW), Err(Refusal::UnknownKey { presented: true }));
        assert!(book.usage_records().is_empty());
        assert!(book.key_usage_records().is_empty());
    }

    #[test]
    fn a_clients_models_are_bounded() {
        let mut book = ClientBook::default();
        let c = book.create("gpc-eve-secret", settings("eve", None, None), NOW).expect("e");
        for i in 0..(MAX_MODELS_PER_CLIENT + 10) {
            book.record(&c.id, "k1", &format!("made-up-{i}"), None, NOW);
        }
        let view = book.get(&c.id, NOW).expect("view");
        assert_eq!(view.usage.len(), MAX_MODELS_PER_CLIENT + 1);
        assert_eq!(view.usage.iter().find(|u| u.model == OTHER_MODELS).map(|u| u.requests), Some(10));
    }

    #[test]
    fn the_key_rows_of_all_clients_are_bounded_together() {
        let mut book = ClientBook::default();
        let ids: Vec<String> = (0..12)
            .map(|i| book.create(&format!("gpc-many-{i}"), settings(&format!("c{i}"), None, None), NOW).expect("c").id)
            .collect();
        for (n, id) in ids.iter().enumerate() {
            for k in 0..MAX_KEY_ROWS_PER_CLIENT {
                book.record(id, &format!("key-{k}"), &format!("model-{n}"), None, NOW);
            }
        }
        let rows = book.key_usage_records();
        assert!(rows.len() <= MAX_KEY_ROWS + ids.len(), "{} rows", rows.len());
        let last = book.get(&ids[11], NOW).expect("view");
        let folded = last.by_key.iter().find(|u| (u.key.as_str(), u.model.as_str()) == (OTHER_KEYS, OTHER_MODELS));
        assert!(folded.is_some_and(|u| u.requests > 0), "the client past the bound counts under its folded row");
        let total: u64 = last.by_key.iter().map(|u| u.requests).sum();
        assert_eq!(total, MAX_KEY_ROWS_PER_CLIENT as u64, "no request lost to the bound");
    }

    #[test]
    fn usage_is_counted_per_key_and_model_and_its_rows_are_bounded() {
        let mut book = ClientBook::default();
        let c = book.create("gpc-fay-secret", settings("fay", None, None), NOW).expect("f");
        let t = |n| TokenUsage { prompt: n, output: 1, cached: 0, thinking: 0 };
        book.record(&c.id, "k1", "flash", Some(&t(10)), NOW);
        book.record(&c.id, "k2", "flash", Some(&t(20)), NOW);
        book.record(&c.id, "k1", "flash", Some(&t(30)), NOW);
        book.record(&c.id, "k1", "pro", None, NOW);
        let view = book.get(&c.id, NOW).expect("view");
        let row = |key: &str, model: &str| {
            view.by_key.iter().find(|u| u.key == key && u.model == model).map(|u| (u.requests, u.tokens.prompt))
        };
        assert_eq!(row("k1", "flash"), Some((2, 40)));
        assert_eq!(row("k2", "flash"), Some((1, 20)));
        assert_eq!(row("k1", "pro"), Some((1, 0)));
        assert_eq!(view.by_key.len(), 3);
        let json = view.to_json();
        assert_eq!(json["keys"]["k1"]["flash"]["requests"], 2);
        assert_eq!(json["keys"]["k2"]["flash"]["tokens"]["prompt"], 20);
        // The model rows are the sums over keys.
        assert_eq!(json["models"]["flash"]["requests"], 3);

        for i in 0..(MAX_KEY_ROWS_PER_CLIENT + 5) {
            book.record(&c.id, &format!("key-{i}"), "flash", None, NOW);
        }
        let view = book.get(&c.id, NOW).expect("view");
        assert_eq!(view.by_key.len(), MAX_KEY_ROWS_PER_CLIENT + 1);
        let others = view.by_key.iter().find(|u| u.key == OTHER_KEYS).map(|u| u.requests);
        assert_eq!(others, Some(3 + 5), "the keys past the bound count together");
        // The bound holds after a restart, and a removed key's rows go.
        let views = book.views(NOW);
        let mut restored = ClientBook::restore(
            views.iter().map(|v| v.client.clone()).collect(),
            book.usage_records(),
            book.key_usage_records(),
        );
        restored.record(&c.id, "one-more-key", "flash", None, NOW);
        let view = restored.get(&c.id, NOW).expect("view");
        assert_eq!(view.by_key.iter().find(|u| u.key == OTHER_KEYS).map(|u| u.requests), Some(9));
        restored.forget_key("key-0");
        restored.forget_key(OTHER_KEYS);
        restored.record(&c.id, "fresh-key", "flash", None, NOW);
        let view = restored.get(&c.id, NOW).expect("view");
        assert!(view.by_key.iter().any(|u| u.key == "fresh-key"), "a removed key's slots are free again");
        assert!(!view.by_key.iter().any(|u| u.key == "key-0"));
        // A known row still counts as itself.
        book.record(&c.id, "k2", "flash", None, NOW);
        assert_eq!(
            book.get(&c.id, NOW).expect("view").by_key.iter().find(|u| u.key == "k2").map(|u| u.requests),
            Some(2)
        );
    }
}
