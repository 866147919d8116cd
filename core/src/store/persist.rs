//! What both hosts persist of the key pool (host-runner's SQLite file, the
//! Worker's Durable Object), once: the records, the schema, the statements,
//! and the mapping between a record and its row of SQL values. A host only
//! converts [`SqlValue`]s to its driver's type and runs the statements.
//! Secrets are never stored.

use crate::store::clients::{self, Client, ClientKeyUsage, ClientUsage};
use crate::store::history::{self, HourChange, HourRecord};
use crate::store::registry;
use crate::store::requests;
use crate::store::signatures;
use crate::store::sql::{Columns, RowError, SqlValue, Statement, int, opt_int, opt_text, token_values};
use crate::store::vault::{Vault, open_sealed};
use crate::wire::keystore::CheckInfo;
use crate::wire::time::UnixMillis;
use crate::wire::usage::TokenUsage;
use serde::{Deserialize, Serialize};

/// The kind of a per-model mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkKind {
    /// Per-minute (or unknown) limit: short cooldown.
    Cooling,
    /// Per-day limit: until the next daily reset.
    Exhausted,
}

impl MarkKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Cooling => "cooling",
            Self::Exhausted => "exhausted",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "cooling" => Some(Self::Cooling),
            "exhausted" => Some(Self::Exhausted),
            _ => None,
        }
    }
}

/// A usage row: one key × model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Key id.
    pub key_id: String,
    /// Model.
    pub model: String,
    /// Requests made.
    pub requests: u64,
    /// 2xx answers.
    pub successes: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Errors (5xx, transport, rejection).
    pub errors: u64,
    /// Last use.
    pub last_used: Option<u64>,
    /// Mark kind, if marked.
    pub mark_kind: Option<MarkKind>,
    /// Mark expiry.
    pub mark_until: Option<u64>,
    /// Mark reason.
    pub mark_reason: Option<String>,
    /// The last error seen.
    pub last_error: Option<String>,
    /// The tokens the 2xx answers reported (a row of `usage_tokens`).
    pub tokens: TokenUsage,
}

/// A key row. The secret is never persisted: it comes from configuration
/// on every start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Key id.
    pub key_id: String,
    /// Why the key is disabled, if it is.
    pub disabled_reason: Option<String>,
    /// Since when.
    pub disabled_at: Option<u64>,
}

/// What the admin set on a key: its Google project, a note, and its last
/// check. One row of `key_meta`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    /// Key id.
    pub key_id: String,
    /// The Google project the key belongs to (quotas are per project).
    pub project: Option<String>,
    /// A note.
    pub note: Option<String>,
    /// The last check.
    pub check: Option<CheckInfo>,
    /// The key was disabled by the admin or by a check: a reset of the
    /// statistics (`POST /stat/reset`) leaves it disabled; only an enable
    /// undoes it.
    pub held: bool,
}

/// A key added at run time, sealed ([`crate::store::vault`]). One row of `vault`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultRecord {
    /// Key id.
    pub key_id: String,
    /// The sealed key.
    pub sealed: String,
    /// When it was added.
    pub added_at: u64,
}

/// Everything stored of a pool, as read back at start (the keys added at
/// run time already opened).
#[derive(Clone, Debug, Default)]
pub struct StoredPool {
    /// Key rows.
    pub keys: Vec<KeyRecord>,
    /// Usage rows.
    pub usage: Vec<UsageRecord>,
    /// Metadata rows.
    pub meta: Vec<KeyMeta>,
    /// Keys added at run time.
    pub runtime: Vec<crate::wire::secret::ApiKey>,
    /// Ids of `API_KEYS` keys the admin removed.
    pub removed: Vec<String>,
    /// Client keys ([`crate::store::clients::SELECT_CLIENTS`]).
    pub clients: Vec<Client>,
    /// Their usage ([`crate::store::clients::SELECT_CLIENT_USAGE`]).
    pub client_usage: Vec<ClientUsage>,
    /// Their usage per key and model
    /// ([`crate::store::clients::SELECT_CLIENT_KEY_USAGE`]).
    pub client_key_usage: Vec<ClientKeyUsage>,
    /// Hourly rows ([`crate::store::history::SELECT_HOURLY`]).
    pub hourly: Vec<HourRecord>,
    /// The resource registry ([`crate::store::registry::SELECT`]).
    pub affinity: Vec<(crate::wire::resource::Resource, crate::store::registry::Owner)>,
    /// The admin's model aliases ([`SELECT_ALIASES`]).
    pub aliases: Vec<(String, String)>,
    /// The tool calls' thought signatures ([`signatures::SELECT`]).
    pub signatures: Vec<signatures::Stored>,
    /// The models Google's listings named ([`SELECT_LISTED`]).
    pub listed: Vec<String>,
    /// The projects' outbound proxies ([`SELECT_PROXIES`]), opened with the
    /// vault.
    pub proxies: Vec<(String, crate::wire::proxy::ProxyUrl)>,
    /// The request log's last number ([`requests::SELECT_LAST`]); its rows
    /// are read when someone looks
    /// ([`crate::store::pool::KeyPool::load_requests`]).
    pub requests_last: u64,
}

/// Every table of the key store, in the order they are created. The SQL is
/// the same for SQLite (host-runner) and the Durable Object's storage.
pub const SCHEMAS: [&str; 7] =
    [SCHEMA, ADMIN_SCHEMA, clients::SCHEMA, history::SCHEMA, registry::SCHEMA, signatures::SCHEMA, requests::SCHEMA];

/// A host's SQL storage, as the key store's opening and loading need it:
/// SQLite for host-runner, the Durable Object's storage for the Worker.
/// Each host keeps its own way of writing (a batching writer thread;
/// immediate writes).
pub trait Storage {
    /// Why a statement failed (a row that does not map is one).
    type Error: From<RowError> + std::fmt::Display;
    /// Runs a statement with its values.
    fn run(&self, statement: Statement) -> Result<(), Self::Error>;
    /// Runs SQL without values (a schema, an upgrade).
    fn script(&self, sql: &str) -> Result<(), Self::Error>;
    /// The rows a `SELECT` gives.
    fn rows(&self, select: &str) -> Result<Vec<Vec<SqlValue>>, Self::Error>;
}

/// Creates the key store's tables where missing ([`SCHEMAS`]) and brings
/// those an earlier version made up to date.
pub fn create_tables<S: Storage>(storage: &S) -> Result<(), S::Error> {
    for schema in SCHEMAS {
        storage.script(schema)?;
    }
    // A registry made before clients were told apart gains its columns.
    for column in registry::ADD_COLUMNS {
        match storage.script(column) {
            Err(e) if !registry::is_duplicate_column(&e.to_string()) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

impl StoredPool {
    /// Reads back everything stored of a pool (after forgetting the
    /// registry's entries expired by `now`), the keys added at run time
    /// opened with `vault`. The second value says why some of those stay
    /// out of the pool, for the host's log.
    pub fn load<S: Storage>(
        storage: &S,
        vault: Option<&Vault>,
        now: UnixMillis,
    ) -> Result<(Self, Option<String>), S::Error> {
        fn all<S: Storage, R>(
            storage: &S,
            select: &str,
            from_row: fn(&[SqlValue]) -> Result<R, RowError>,
        ) -> Result<Vec<R>, S::Error> {
            storage.rows(select)?.iter().map(|row| from_row(row).map_err(S::Error::from)).collect()
        }
        storage.run(registry::prune_statement(now))?;
        storage.run(signatures::prune_statement(now))?;
        let sealed = all(storage, SELECT_VAULT, VaultRecord::from_row)?;
        let (runtime, mut unopened) = open_sealed(vault, sealed.into_iter().map(|r| (r.key_id, r.sealed)).collect());
        let (proxies, closed) = proxies_from_rows(&storage.rows(SELECT_PROXIES)?, vault)?;
        if closed > 0 {
            let why = format!("{closed} projects' proxies stay unused: KEY_ENCRYPTION_SECRET does not open them");
            unopened = Some(unopened.map_or(why.clone(), |u| format!("{u}; {why}")));
        }
        let stored = Self {
            keys: all(storage, SELECT_KEYS, KeyRecord::from_row)?,
            usage: all(storage, SELECT_USAGE, UsageRecord::from_row)?,
            meta: all(storage, SELECT_META, KeyMeta::from_row)?,
            runtime,
            removed: all(storage, SELECT_REMOVED, removed_from_row)?,
            clients: all(storage, clients::SELECT_CLIENTS, Client::from_row)?,
            client_usage: all(storage, clients::SELECT_CLIENT_USAGE, ClientUsage::from_row)?,
            client_key_usage: all(storage, clients::SELECT_CLIENT_KEY_USAGE, ClientKeyUsage::from_row)?,
            hourly: all(storage, history::SELECT_HOURLY, HourRecord::from_row)?,
            affinity: all(storage, registry::SELECT, registry::from_row)?,
            aliases: aliases_from_rows(&storage.rows(SELECT_ALIASES)?)?,
            signatures: all(storage, signatures::SELECT, signatures::from_row)?,
            listed: listed_from_rows(&storage.rows(SELECT_LISTED)?)?,
            proxies,
            requests_last: match storage.rows(requests::SELECT_LAST)?.first().map(Vec::as_slice) {
                Some([SqlValue::Integer(n)]) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            },
        };
        Ok((stored, unopened))
    }
}

/// Every row a full rewrite writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// Key rows.
    pub keys: Vec<KeyRecord>,
    /// Usage rows.
    pub usage: Vec<UsageRecord>,
}

/// What a report changed, for the host to persist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// The key row, when its disabled state changed.
    pub key: Option<KeyRecord>,
    /// The usage rows (one, or more when a model became tracked and its
    /// earlier calls moved to it).
    pub usage: Vec<UsageRecord>,
    /// The client's usage row, when the report ended a client's request.
    pub client: Option<ClientUsage>,
    /// The client's key × model row, with it.
    pub client_key: Option<ClientKeyUsage>,
    /// The hourly rows the call changed.
    pub hourly: HourChange,
    /// The resource owners it found (`None`: the resource was deleted).
    pub affinity: Vec<(String, Option<crate::store::registry::Owner>)>,
}

/// Creates the tables when missing.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    disabled_reason TEXT,
    disabled_at INTEGER
);
CREATE TABLE IF NOT EXISTS usage (
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    successes INTEGER NOT NULL DEFAULT 0,
    rate_limited INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    last_used INTEGER,
    mark_kind TEXT,
    mark_until INTEGER,
    mark_reason TEXT,
    last_error TEXT,
    PRIMARY KEY (key_id, model)
);
CREATE TABLE IF NOT EXISTS usage_tokens (
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt INTEGER NOT NULL DEFAULT 0,
    output INTEGER NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0,
    thinking INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, model)
);
";

/// The tables of the admin's changes (created when missing).
pub const ADMIN_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS key_meta (
    key_id TEXT PRIMARY KEY,
    project TEXT,
    note TEXT,
    check_status TEXT,
    check_at INTEGER,
    check_reason TEXT,
    held INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS vault (
    key_id TEXT PRIMARY KEY,
    sealed TEXT NOT NULL,
    added_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS removed (
    key_id TEXT PRIMARY KEY,
    removed_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// The setting that holds the admin's model aliases: a JSON list of
/// `[from, to]` pairs.
pub const ALIASES_SETTING: &str = "model_aliases";
/// The admin's model aliases, as stored.
pub const SELECT_ALIASES: &str = "SELECT value FROM settings WHERE name = 'model_aliases'";

/// The statement that stores the admin's model aliases.
pub fn aliases_statement(entries: &[(String, String)]) -> Statement {
    let value = serde_json::to_string(entries).unwrap_or_else(|_| "[]".to_owned());
    (
        "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        vec![SqlValue::Text(ALIASES_SETTING.to_owned()), SqlValue::Text(value)],
    )
}

/// The projects' outbound proxies, as stored: a JSON list of `[project,
/// id, sealed]`, each URL (its password with it) sealed by the vault as a
/// key is.
pub const SELECT_PROXIES: &str = "SELECT value FROM settings WHERE name = 'project_proxies'";

/// The statement that stores the projects' outbound proxies, each sealed.
pub fn proxies_statement(
    vault: &Vault,
    proxies: &std::collections::BTreeMap<String, crate::wire::proxy::ProxyUrl>,
    nonce: &mut dyn FnMut() -> [u8; crate::store::vault::NONCE_BYTES],
) -> Statement {
    let rows: Vec<[String; 3]> = proxies
        .iter()
        .map(|(project, url)| {
            // A random id, bound in as the seal's associated data (a hash
            // of the URL would let whoever copies the file test guesses of
            // its password).
            let id: String = nonce()[..12].iter().map(|b| format!("{b:02x}")).collect();
            let id = format!("proxy-{id}");
            let url = crate::wire::secret::ApiKey::new(url.expose());
            let sealed = vault.seal_with(&url, &crate::wire::secret::KeyId::from_string(&id), nonce());
            [project.clone(), id, sealed]
        })
        .collect();
    let value = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned());
    (
        "INSERT INTO settings (name, value) VALUES ('project_proxies', ?1) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        vec![SqlValue::Text(value)],
    )
}

/// The projects' outbound proxies from their stored row, opened with
/// `vault`; and how many could not be (no vault, another secret).
pub fn proxies_from_rows(
    rows: &[Vec<SqlValue>],
    vault: Option<&Vault>,
) -> Result<(Vec<(String, crate::wire::proxy::ProxyUrl)>, usize), RowError> {
    let Some(row) = rows.first() else { return Ok((Vec::new(), 0)) };
    let text = Columns { table: "settings", row: row.iter() }.text()?;
    let stored: Vec<[String; 3]> = serde_json::from_str(&text).unwrap_or_default();
    let mut closed = 0;
    let mut out = Vec::with_capacity(stored.len());
    for [project, id, sealed] in stored {
        let url = vault
            .and_then(|v| v.open_with(&crate::wire::secret::KeyId::from_string(&id), &sealed).ok())
            .and_then(|url| crate::wire::proxy::ProxyUrl::parse(url.expose()).ok());
        match url {
            Some(url) => out.push((project, url)),
            None => closed += 1,
        }
    }
    Ok((out, closed))
}

/// The models Google's listings named, as stored (a JSON list of names).
pub const SELECT_LISTED: &str = "SELECT value FROM settings WHERE name = 'listed_models'";

/// The statement that stores the models Google's listings named.
pub fn listed_statement(names: &[String]) -> Statement {
    let value = serde_json::to_string(names).unwrap_or_else(|_| "[]".to_owned());
    (
        "INSERT INTO settings (name, value) VALUES ('listed_models', ?1) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        vec![SqlValue::Text(value)],
    )
}

/// The models Google's listings named, from their stored row.
pub fn listed_from_rows(rows: &[Vec<SqlValue>]) -> Result<Vec<String>, RowError> {
    let Some(row) = rows.first() else { return Ok(Vec::new()) };
    let text = Columns { table: "settings", row: row.iter() }.text()?;
    Ok(serde_json::from_str(&text).unwrap_or_default())
}

/// The admin's model aliases from their stored row (none stored: none).
pub fn aliases_from_rows(rows: &[Vec<SqlValue>]) -> Result<Vec<(String, String)>, RowError> {
    let Some(row) = rows.first() else { return Ok(Vec::new()) };
    let text = Columns { table: "settings", row: row.iter() }.text()?;
    // Only this proxy writes the row; one edited by hand into something
    // else is dropped rather than keep the pool from starting.
    Ok(serde_json::from_str(&text).unwrap_or_default())
}

/// Every metadata row, columns in [`KeyMeta::to_row`] order.
pub const SELECT_META: &str = "SELECT key_id, project, note, check_status, check_at, check_reason, held FROM key_meta";
/// Inserts or replaces a metadata row.
pub const UPSERT_META: &str = "INSERT INTO key_meta (key_id, project, note, check_status, check_at, check_reason, held) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(key_id) DO UPDATE SET project = excluded.project, \
     note = excluded.note, check_status = excluded.check_status, check_at = excluded.check_at, \
     check_reason = excluded.check_reason, held = excluded.held";
/// Every vault row, columns in [`VaultRecord::to_row`] order.
pub const SELECT_VAULT: &str = "SELECT key_id, sealed, added_at FROM vault";
/// Inserts or replaces a vault row.
pub const UPSERT_VAULT: &str = "INSERT INTO vault (key_id, sealed, added_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT(key_id) DO UPDATE SET sealed = excluded.sealed, added_at = excluded.added_at";
/// Every removed id.
pub const SELECT_REMOVED: &str = "SELECT key_id FROM removed";
/// Records a removal: `key_id, removed_at`.
pub const INSERT_REMOVED: &str =
    "INSERT INTO removed (key_id, removed_at) VALUES (?1, ?2) ON CONFLICT(key_id) DO NOTHING";

/// The statements that forget one removed key's secret, labels and the
/// clients' use of it (its own counts go at the next rewrite: the daily
/// reset, or a start).
pub fn forget_statements(key_id: &str) -> Vec<Statement> {
    let id = || vec![SqlValue::Text(key_id.to_owned())];
    vec![
        ("DELETE FROM vault WHERE key_id = ?1", id()),
        ("DELETE FROM key_meta WHERE key_id = ?1", id()),
        ("DELETE FROM client_key_usage WHERE key = ?1", id()),
    ]
}

/// The statement that undoes a removal mark.
pub fn unremove_statement(key_id: &str) -> Statement {
    ("DELETE FROM removed WHERE key_id = ?1", vec![SqlValue::Text(key_id.to_owned())])
}

/// Every key row, columns in [`KeyRecord::to_row`] order.
pub const SELECT_KEYS: &str = "SELECT key_id, disabled_reason, disabled_at FROM keys";

/// Every usage row, columns in [`UsageRecord::to_row`] order.
pub const SELECT_USAGE: &str = "SELECT u.key_id, u.model, u.requests, u.successes, u.rate_limited, u.errors, \
     u.last_used, u.mark_kind, u.mark_until, u.mark_reason, u.last_error, COALESCE(t.prompt, 0), \
     COALESCE(t.output, 0), COALESCE(t.cached, 0), COALESCE(t.thinking, 0) \
     FROM usage u LEFT JOIN usage_tokens t ON t.key_id = u.key_id AND t.model = u.model";

/// Inserts or replaces a key row ([`KeyRecord::to_row`]).
pub const UPSERT_KEY: &str = "INSERT INTO keys (key_id, disabled_reason, disabled_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT(key_id) DO UPDATE SET disabled_reason = excluded.disabled_reason, disabled_at = excluded.disabled_at";

/// Inserts or replaces a usage row ([`UsageRecord::to_row`]).
pub const UPSERT_USAGE: &str = "INSERT INTO usage (key_id, model, requests, successes, rate_limited, errors, \
     last_used, mark_kind, mark_until, mark_reason, last_error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
     ON CONFLICT(key_id, model) DO UPDATE SET requests = excluded.requests, successes = excluded.successes, \
     rate_limited = excluded.rate_limited, errors = excluded.errors, last_used = excluded.last_used, \
     mark_kind = excluded.mark_kind, mark_until = excluded.mark_until, mark_reason = excluded.mark_reason, \
     last_error = excluded.last_error";

/// Empties the key table (the first statement of a rewrite).
pub const DELETE_KEYS: &str = "DELETE FROM keys";

/// Empties the usage table (the second statement of a rewrite).
pub const DELETE_USAGE: &str = "DELETE FROM usage";

/// Inserts or replaces a token row ([`UsageRecord::tokens_row`]).
pub const UPSERT_TOKENS: &str = "INSERT INTO usage_tokens (key_id, model, prompt, output, cached, thinking) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(key_id, model) DO UPDATE SET prompt = excluded.prompt, \
     output = excluded.output, cached = excluded.cached, thinking = excluded.thinking";

/// Empties the token table (the third statement of a rewrite).
pub const DELETE_TOKENS: &str = "DELETE FROM usage_tokens";

impl KeyRecord {
    /// The row's values, in [`SELECT_KEYS`] and [`UPSERT_KEY`] order.
    pub fn to_row(&self) -> Vec<SqlValue> {
        vec![SqlValue::Text(self.key_id.clone()), opt_text(self.disabled_reason.as_deref()), opt_int(self.disabled_at)]
    }

    /// The record of a row read with [`SELECT_KEYS`].
    pub fn from_row(row: &[SqlValue]) -> Result<Self, RowError> {
        let mut c = Columns { table: "keys", row: row.iter() };
        Ok(Self { key_id: c.text()?, disabled_reason: c.opt_text()?, disabled_at: c.opt_int()? })
    }
}

impl KeyMeta {
    /// The row's values, in [`SELECT_META`] and [`UPSERT_META`] order.
    pub fn to_row(&self) -> Vec<SqlValue> {
        let check = self.check.as_ref();
        vec![
            SqlValue::Text(self.key_id.clone()),
            opt_text(self.project.as_deref()),
            opt_text(self.note.as_deref()),
            opt_text(check.map(|c| c.status.as_str())),
            opt_int(check.map(|c| c.at)),
            opt_text(check.and_then(|c| c.reason.as_deref())),
            int(u64::from(self.held)),
        ]
    }

    /// The record of a row read with [`SELECT_META`].
    pub fn from_row(row: &[SqlValue]) -> Result<Self, RowError> {
        let mut c = Columns { table: "key_meta", row: row.iter() };
        let (key_id, project, note) = (c.text()?, c.opt_text()?, c.opt_text()?);
        let (status, at, reason) = (c.opt_text()?, c.opt_int()?, c.opt_text()?);
        let check = status.map(|status| CheckInfo { status, at: at.unwrap_or(0), reason });
        Ok(Self { key_id, project, note, check, held: c.int()? != 0 })
    }
}

impl VaultRecord {
    /// The row's values, in [`SELECT_VAULT`] and [`UPSERT_VAULT`] order.
    pub fn to_row(&self) -> Vec<SqlValue> {
        vec![SqlValue::Text(self.key_id.clone()), SqlValue::Text(self.sealed.clone()), int(self.added_at)]
    }

    /// The record of a row read with [`SELECT_VAULT`].
    pub fn from_row(row: &[SqlValue]) -> Result<Self, RowError> {
        let mut c = Columns { table: "vault", row: row.iter() };
        Ok(Self { key_id: c.text()?, sealed: c.text()?, added_at: c.int()? })
    }
}

/// The id of a row read with [`SELECT_REMOVED`].
pub fn removed_from_row(row: &[SqlValue]) -> Result<String, RowError> {
    Columns { table: "removed", row: row.iter() }.text()
}

impl UsageRecord {
    /// The row's values, in [`SELECT_USAGE`] and [`UPSERT_USAGE`] order.
    pub fn to_row(&self) -> Vec<SqlValue> {
        vec![
            SqlValue::Text(self.key_id.clone()),
            SqlValue::Text(self.model.clone()),
            int(self.requests),
            int(self.successes),
            int(self.rate_limited),
            int(self.errors),
            opt_int(self.last_used),
            opt_text(self.mark_kind.map(MarkKind::as_str)),
            opt_int(self.mark_until),
            opt_text(self.mark_reason.as_deref()),
            opt_text(self.last_error.as_deref()),
        ]
    }

    /// The record of a row read with [`SELECT_USAGE`]. An unknown mark kind
    /// reads as no mark.
    pub fn from_row(row: &[SqlValue]) -> Result<Self, RowError> {
        let mut c = Columns { table: "usage", row: row.iter() };
        Ok(Self {
            key_id: c.text()?,
            model: c.text()?,
            requests: c.int()?,
            successes: c.int()?,
            rate_limited: c.int()?,
            errors: c.int()?,
            last_used: c.opt_int()?,
            mark_kind: c.opt_text()?.as_deref().and_then(MarkKind::parse),
            mark_until: c.opt_int()?,
            mark_reason: c.opt_text()?,
            last_error: c.opt_text()?,
            tokens: c.tokens()?,
        })
    }

    /// The token row's values, in [`UPSERT_TOKENS`] order.
    pub fn tokens_row(&self) -> Vec<SqlValue> {
        let mut row = vec![SqlValue::Text(self.key_id.clone()), SqlValue::Text(self.model.clone())];
        row.extend(token_values(&self.tokens));
        row
    }

    /// The statements that write this record: its usage row, and its token
    /// row when it has tokens.
    pub fn statements(&self) -> impl Iterator<Item = Statement> + '_ {
        let tokens = (!self.tokens.is_zero()).then(|| (UPSERT_TOKENS, self.tokens_row()));
        std::iter::once((UPSERT_USAGE, self.to_row())).chain(tokens)
    }
}

/// The statements that persist one change.
pub fn change_statements(change: &Change) -> impl Iterator<Item = Statement> + '_ {
    let key = change.key.iter().map(|k| (UPSERT_KEY, k.to_row()));
    let client = change.client.iter().map(|c| (clients::UPSERT_CLIENT_USAGE, c.to_row()));
    let client_key = change.client_key.iter().map(|c| (clients::UPSERT_CLIENT_KEY_USAGE, c.to_row()));
    let prune = change.hourly.prune_before.map(history::prune_statement);
    let hourly = change.hourly.rows.iter().map(|r| (history::UPSERT_HOURLY, r.to_row()));
    let affinity =
        change.affinity.iter().map(|(name, owner)| crate::store::registry::row_statement(name, owner.as_ref()));
    key.chain(change.usage.iter().flat_map(UsageRecord::statements))
        .chain(client)
        .chain(client_key)
        .chain(prune)
        .chain(hourly)
        .chain(affinity)
}

/// The statements that replace every key and usage row with `records` (run
/// them in one transaction where the host has transactions). The clients'
/// rows and the hourly rows are not among them: no reset clears them, and
/// each change keeps them current (upserts, and the prune of old hours), so
/// a Durable Object waking up does not write them all again.
pub fn rewrite_statements(records: &Records) -> impl Iterator<Item = Statement> + '_ {
    let clear = [(DELETE_KEYS, Vec::new()), (DELETE_USAGE, Vec::new()), (DELETE_TOKENS, Vec::new())];
    let keys = records.keys.iter().map(|k| (UPSERT_KEY, k.to_row()));
    let usage = records.usage.iter().flat_map(UsageRecord::statements);
    clear.into_iter().chain(keys).chain(usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::SqlValue;
    use crate::wire::keystore::CheckInfo;

    #[test]
    fn records_round_trip_through_rows() {
        let k =
            KeyRecord { key_id: "k-1".into(), disabled_reason: Some("API key not valid".into()), disabled_at: Some(5) };
        assert_eq!(KeyRecord::from_row(&k.to_row()), Ok(k));
        let u = UsageRecord {
            key_id: "k-1".into(),
            model: "gemini-2.5-flash".into(),
            requests: 3,
            successes: 2,
            rate_limited: 1,
            errors: 0,
            last_used: Some(1_800_000_000_000),
            mark_kind: Some(MarkKind::Exhausted),
            mark_until: Some(1_800_000_100_000),
            mark_reason: Some("quota".into()),
            last_error: None,
            tokens: TokenUsage { prompt: 7, output: 9, cached: 2, thinking: 4 },
        };
        // A row as SELECT_USAGE reads it: the usage row, then the joined tokens.
        let read = |u: &UsageRecord| {
            let mut row = u.to_row();
            row.extend(u.tokens_row().split_off(2));
            row
        };
        assert_eq!(UsageRecord::from_row(&read(&u)), Ok(u.clone()));
        let plain =
            UsageRecord { mark_kind: None, mark_until: None, mark_reason: None, tokens: TokenUsage::default(), ..u };
        assert_eq!(UsageRecord::from_row(&read(&plain)), Ok(plain.clone()));
        assert_eq!(plain.statements().count(), 1, "no token row without tokens");
    }

    #[test]
    fn admin_rows_round_trip() {
        let m = KeyMeta {
            key_id: "k-1".into(),
            project: Some("team-a".into()),
            note: None,
            check: Some(CheckInfo { status: "works".into(), at: 9, reason: None }),
            held: true,
        };
        assert_eq!(KeyMeta::from_row(&m.to_row()), Ok(m));
        let v = VaultRecord { key_id: "k-1".into(), sealed: "v1.abc".into(), added_at: 5 };
        assert_eq!(VaultRecord::from_row(&v.to_row()), Ok(v));
        assert_eq!(removed_from_row(&[SqlValue::Text("k-2".into())]), Ok("k-2".into()));
    }

    #[test]
    fn malformed_rows_say_what_is_wrong() {
        let e = KeyRecord::from_row(&[SqlValue::Integer(1)]).expect_err("bad");
        assert!(e.to_string().contains("keys") && e.to_string().contains("expected text"), "{e}");
        assert!(UsageRecord::from_row(&[SqlValue::Text("k".into())]).is_err());
    }

    #[test]
    fn a_rewrite_clears_both_tables_first() {
        let k = [KeyRecord { key_id: "k".into(), disabled_reason: None, disabled_at: None }];
        let records = Records { keys: k.to_vec(), ..Records::default() };
        let names: Vec<&str> = rewrite_statements(&records).map(|(sql, _)| sql).collect();
        assert_eq!(names, [DELETE_KEYS, DELETE_USAGE, DELETE_TOKENS, UPSERT_KEY]);
    }
}
