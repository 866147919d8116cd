//! The key store of this host: `core`'s [`KeyPool`] in memory, persisted to
//! SQLite (WAL) by a writer thread so that no request waits on the disk;
//! the writer commits the latest state of changed rows every 100 ms.

use crate::clock::Clock;
use proxy_core::store::admin;
use proxy_core::store::clients;
use proxy_core::store::clients::{ClientKeyUsage, ClientUsage};
use proxy_core::store::history;
use proxy_core::store::persist::{self, Change, KeyRecord, Records, Storage, StoredPool, UsageRecord};
use proxy_core::store::registry;
use proxy_core::store::signatures;
use proxy_core::store::sql::{RowError, SqlValue, Statement};
use proxy_core::store::vault::Vault;
use proxy_core::wire::http::Response;
use proxy_core::wire::keystore::Claim;
use proxy_core::wire::keystore::StatsView;
use proxy_core::wire::keystore::{AdminAnswer, AdminOp};
use proxy_core::wire::proxy::ProxyUrl;
use proxy_core::wire::resource::Resource;
use proxy_core::{ApiKey, KeyId, KeyPool, Lease, Report, Unavailable};
use rusqlite::Connection;
use rusqlite::types::{Value, ValueRef};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

/// A key store as the component's `key-store` import sees it. One backend
/// per host; this crate's is [`SqliteKeyStore`].
pub trait KeyBackend: Send + Sync + 'static {
    /// Applies `settle` (the previous attempt's report), then hands out a
    /// key for `model` that is not in `exclude`: the owner of the known
    /// `resources`, if any.
    fn acquire(
        &self,
        client: Option<&Claim>,
        model: &str,
        resources: &[Resource],
        exclude: &[KeyId],
        settle: Option<Report>,
    ) -> Result<Lease, Unavailable>;
    /// Applies an attempt's outcome.
    fn report(&self, report: Report);
    /// Clears every mark and counter, and re-enables disabled keys.
    fn reset(&self);
    /// The daily job: clears the day's counters and expired marks.
    fn daily_reset(&self);
    /// The statistics now, rendered as `view`.
    fn stats(&self, view: StatsView) -> Response;
    /// Applies an admin operation.
    fn admin(&self, op: AdminOp) -> AdminAnswer;
    /// Keeps a request's summary in the request log.
    fn log_request(&self, summary: proxy_core::wire::summary::Summary);
    /// The outbound proxy the calls of the pool key `secret` leave through
    /// (its project's), if the admin set one.
    fn proxy_for_key(&self, secret: &str) -> Option<ProxyUrl> {
        self.proxy_for_id(&ApiKey::new(secret).id())
    }
    /// [`Self::proxy_for_key`] by the key's id.
    fn proxy_for_id(&self, _id: &KeyId) -> Option<ProxyUrl> {
        None
    }
}

/// Errors opening or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("key store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row does not map onto a record.
    #[error(transparent)]
    Row(#[from] RowError),
    /// The database file could not be prepared.
    #[error("cannot prepare the key store at {path}")]
    Path {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

enum Write {
    Change(Box<Change>),
    Rewrite(Records),
    /// An admin operation's statements, run after the batch's rows.
    Statements(Vec<Statement>),
    /// Answered `true` once everything before it is on disk.
    Flush(mpsc::Sender<bool>),
}

/// `core`'s key pool, persisted in SQLite.
pub struct SqliteKeyStore {
    pool: Mutex<KeyPool>,
    /// Whether any project has a proxy: most pools have none, and their
    /// calls then ask nothing of the pool.
    proxied: std::sync::atomic::AtomicBool,
    vault: Option<Vault>,
    clock: Arc<dyn Clock>,
    writes: Mutex<mpsc::Sender<Write>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteKeyStore").field("keys", &self.pool().len()).finish_non_exhaustive()
    }
}

impl SqliteKeyStore {
    /// Opens (or creates) the store at `path` for the configured `keys`
    /// and the keys added at run time (opened with `vault`; without one,
    /// they stay stored but out of the pool, with a warning). Rows of keys
    /// no longer in the pool are deleted; keys that stay keep their
    /// statistics and marks.
    pub fn open(
        path: &Path,
        keys: Vec<ApiKey>,
        clock: Arc<dyn Clock>,
        vault: Option<Vault>,
        request_log_size: usize,
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Path { path: path.display().to_string(), source })?;
        }
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let sqlite = Sqlite(&conn);
        persist::create_tables(&sqlite)?;
        let (stored, unopened) = StoredPool::load(&sqlite, vault.as_ref(), clock.now())?;
        if let Some(why) = unopened {
            tracing::warn!("{why}");
        }
        let mut pool = KeyPool::restore(keys, stored);
        pool.requests_mut().resize(request_log_size);
        // The writer batches: a row per chunk of requests, not per request.
        pool.requests_mut().chunked(REQUEST_LOG_CHUNK);
        pool.load_requests(&sqlite)?;
        Batch { rewrite: Some(pool.records()), ..Batch::default() }.commit(&mut conn)?;
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("key-store-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|source| StoreError::Path { path: path.display().to_string(), source })?;
        let proxied = std::sync::atomic::AtomicBool::new(!pool.proxies().is_empty());
        Ok(Self {
            pool: Mutex::new(pool),
            proxied,
            vault,
            clock,
            writes: Mutex::new(tx),
            writer: Mutex::new(Some(writer)),
        })
    }

    fn pool(&self) -> MutexGuard<'_, KeyPool> {
        self.pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, w: Write) {
        let tx = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        if tx.send(w).is_err() {
            tracing::error!("key store writer has stopped; statistics are no longer persisted");
        }
    }

    fn apply(&self, pool: &mut KeyPool, report: &Report) {
        if let Some(change) = pool.apply(report, self.clock.now()) {
            self.send(Write::Change(Box::new(change)));
        }
    }

    fn rewrite_all(&self, pool: &KeyPool) {
        self.send(Write::Rewrite(pool.records()));
    }

    /// Waits until every change so far is on disk: whether it got there.
    pub fn flush(&self) -> bool {
        let (tx, rx) = mpsc::channel();
        self.send(Write::Flush(tx));
        rx.recv().unwrap_or(false)
    }

    /// Hands the request log's unfinished chunk to the writer (the server
    /// does every two seconds, and at shutdown): a crash loses at most the
    /// last moments' records.
    pub fn write_waiting_requests(&self) {
        let waiting = self.pool().requests_mut().flush();
        if !waiting.is_empty() {
            self.send(Write::Statements(waiting));
        }
    }

    /// Flushes and stops the writer (the request log's unfinished chunk
    /// written first).
    pub fn close(&self) {
        self.write_waiting_requests();
        self.flush();
        let (dead, _) = mpsc::channel();
        *self.writes.lock().unwrap_or_else(|p| p.into_inner()) = dead;
        if let Some(handle) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
    }
}

impl KeyBackend for SqliteKeyStore {
    fn acquire(
        &self,
        client: Option<&Claim>,
        model: &str,
        resources: &[Resource],
        exclude: &[KeyId],
        settle: Option<Report>,
    ) -> Result<Lease, Unavailable> {
        let mut pool = self.pool();
        if let Some(report) = settle {
            self.apply(&mut pool, &report);
        }
        pool.acquire_for(client, model, resources, exclude, self.clock.now())
    }

    fn report(&self, report: Report) {
        let mut pool = self.pool();
        self.apply(&mut pool, &report);
    }

    fn reset(&self) {
        let mut pool = self.pool();
        pool.reset_all();
        self.rewrite_all(&pool);
    }

    fn daily_reset(&self) {
        let mut pool = self.pool();
        let now = self.clock.now();
        pool.daily_reset(now);
        self.rewrite_all(&pool);
        self.send(Write::Statements(vec![registry::prune_statement(now), signatures::prune_statement(now)]));
    }

    fn stats(&self, view: StatsView) -> Response {
        let snapshot = self.pool().snapshot(self.clock.now());
        view.render(&snapshot)
    }

    fn admin(&self, op: AdminOp) -> AdminAnswer {
        let mut pool = self.pool();
        let applied = admin::apply(&mut pool, self.vault.as_ref(), op, self.clock.now(), &mut nonce);
        self.proxied.store(!pool.proxies().is_empty(), std::sync::atomic::Ordering::Relaxed);
        for key in applied.keys.iter().cloned() {
            self.send(Write::Change(Box::new(Change { key: Some(key), ..Change::default() })));
        }
        if !applied.writes.is_empty() {
            self.send(Write::Statements(applied.writes.clone()));
        }
        drop(pool);
        // The admin is answered once the change is on disk, not before
        // (what an answer carried goes with the writer's next batch).
        if !applied.batched && (!applied.keys.is_empty() || !applied.writes.is_empty()) && !self.flush() {
            return AdminAnswer::unsaved();
        }
        AdminAnswer::from(&applied)
    }

    fn log_request(&self, summary: proxy_core::wire::summary::Summary) {
        let writes = self.pool().log_request(summary);
        if !writes.is_empty() {
            self.send(Write::Statements(writes));
        }
    }

    fn proxy_for_key(&self, secret: &str) -> Option<ProxyUrl> {
        // Most pools have no project proxy: no hash, no lock.
        if !self.proxied.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.proxy_for_id(&ApiKey::new(secret).id())
    }

    fn proxy_for_id(&self, id: &KeyId) -> Option<ProxyUrl> {
        if !self.proxied.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.pool().proxy_for(id).cloned()
    }
}

/// Fresh random bytes for a seal.
fn nonce() -> [u8; proxy_core::store::vault::NONCE_BYTES] {
    let mut n = [0u8; proxy_core::store::vault::NONCE_BYTES];
    if getrandom::getrandom(&mut n).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        n = proxy_core::store::vault::fallback_nonce(t);
    }
    n
}

fn to_sql(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::Integer(i),
        SqlValue::Text(t) => Value::Text(t),
    }
}

fn from_sql(v: ValueRef<'_>) -> SqlValue {
    match v {
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Null | ValueRef::Real(_) | ValueRef::Blob(_) => SqlValue::Null,
    }
}

/// SQLite, as core's key store opens and loads it.
struct Sqlite<'a>(&'a Connection);

impl Storage for Sqlite<'_> {
    type Error = StoreError;

    fn run(&self, statement: Statement) -> Result<(), StoreError> {
        Ok(run(self.0, statement)?)
    }

    fn script(&self, sql: &str) -> Result<(), StoreError> {
        Ok(self.0.execute_batch(sql)?)
    }

    fn rows(&self, select: &str) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        let mut stmt = self.0.prepare(select)?;
        let columns = stmt.column_count();
        let rows =
            stmt.query_map([], |r| (0..columns).map(|i| r.get_ref(i).map(from_sql)).collect::<Result<Vec<_>, _>>())?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn run(conn: &Connection, (sql, values): Statement) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute(rusqlite::params_from_iter(values.into_iter().map(to_sql)))?;
    Ok(())
}

/// Requests the request log keeps in one row of its table.
const REQUEST_LOG_CHUNK: usize = 64;

/// How long the writer lets changes gather before one transaction commits
/// them: at most this much of the counters is lost if the process is
/// killed (a clean shutdown flushes everything).
const WRITE_INTERVAL: Duration = Duration::from_millis(100);

/// Writes gathered for one transaction: only the latest state of each row.
#[derive(Default)]
struct Batch {
    rewrite: Option<Records>,
    keys: HashMap<String, KeyRecord>,
    usage: HashMap<(String, String), UsageRecord>,
    clients: HashMap<(String, String), ClientUsage>,
    client_keys: HashMap<(String, String, String), ClientKeyUsage>,
    hourly: HashMap<(u64, history::Dim, String), history::HourRecord>,
    prune_before: Option<u64>,
    /// Resource owners (`None`: forgotten).
    affinity: HashMap<String, Option<registry::Owner>>,
    statements: Vec<Statement>,
    flushes: Vec<mpsc::Sender<bool>>,
}

impl Batch {
    fn add(&mut self, w: Write) {
        match w {
            Write::Change(c) => {
                let c = *c;
                if let Some(k) = c.key {
                    self.keys.insert(k.key_id.clone(), k);
                }
                for u in c.usage {
                    self.usage.insert((u.key_id.clone(), u.model.clone()), u);
                }
                if let Some(u) = c.client {
                    self.clients.insert((u.client.clone(), u.model.clone()), u);
                }
                if let Some(u) = c.client_key {
                    self.client_keys.insert((u.client.clone(), u.key.clone(), u.model.clone()), u);
                }
                if let Some(before) = c.hourly.prune_before {
                    self.prune_before = Some(self.prune_before.map_or(before, |b| b.max(before)));
                    self.hourly.retain(|(hour, _, _), _| *hour >= before);
                }
                for r in c.hourly.rows {
                    self.hourly.insert((r.hour, r.dim, r.name.clone()), r);
                }
                self.affinity.extend(c.affinity);
            }
            // A rewrite holds every row as of its time, so earlier changes
            // are in it.
            Write::Rewrite(records) => {
                self.keys.clear();
                self.usage.clear();
                // Client and hourly rows are not in a rewrite: they stay.
                self.rewrite = Some(records);
            }
            Write::Statements(s) => self.statements.extend(s),
            Write::Flush(done) => self.flushes.push(done),
        }
    }

    fn commit(&mut self, conn: &mut Connection) -> Result<(), rusqlite::Error> {
        let tx = conn.transaction()?;
        if let Some(records) = self.rewrite.take() {
            for statement in persist::rewrite_statements(&records) {
                run(&tx, statement)?;
            }
        }
        for (_, k) in self.keys.drain() {
            run(&tx, (persist::UPSERT_KEY, k.to_row()))?;
        }
        for (_, u) in self.usage.drain() {
            for statement in u.statements() {
                run(&tx, statement)?;
            }
        }
        for (_, u) in self.clients.drain() {
            run(&tx, (clients::UPSERT_CLIENT_USAGE, u.to_row()))?;
        }
        for (_, u) in self.client_keys.drain() {
            run(&tx, (clients::UPSERT_CLIENT_KEY_USAGE, u.to_row()))?;
        }
        if let Some(before) = self.prune_before.take() {
            run(&tx, history::prune_statement(before))?;
        }
        for (_, r) in self.hourly.drain() {
            run(&tx, (history::UPSERT_HOURLY, r.to_row()))?;
        }
        for (name, owner) in self.affinity.drain() {
            run(&tx, registry::row_statement(&name, owner.as_ref()))?;
        }
        // After the rows: an admin's removal deletes what they wrote.
        for statement in self.statements.drain(..) {
            run(&tx, statement)?;
        }
        tx.commit()
    }
}

/// Applies writes in batches: it sleeps [`WRITE_INTERVAL`] after the first
/// write of a batch (so that senders do not wake it once per request), then
/// commits the latest state of every row changed meanwhile. A flush is
/// answered without the wait.
fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Write>) {
    let mut batch = Batch::default();
    while let Ok(first) = rx.recv() {
        batch.add(first);
        if batch.flushes.is_empty() {
            std::thread::sleep(WRITE_INTERVAL);
        }
        while let Ok(w) = rx.try_recv() {
            batch.add(w);
        }
        let saved = match batch.commit(&mut conn) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %proxy_core::wire::error::chain(&e), "persisting key statistics failed");
                // The rows are dropped (the transaction rolled back); the
                // flushes are still answered, with the failure.
                batch = Batch { flushes: std::mem::take(&mut batch.flushes), ..Batch::default() };
                false
            }
        };
        for f in batch.flushes.drain(..) {
            let _ = f.send(saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use proxy_core::Outcome;

    fn requests_on_disk(path: &Path) -> Vec<(String, i64)> {
        let conn = Connection::open(path).expect("open");
        let mut stmt = conn.prepare("SELECT model, requests FROM usage ORDER BY model").expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query").collect::<Result<_, _>>().expect("rows")
    }

    #[test]
    fn batched_writes_keep_the_latest_row_and_respect_resets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.sqlite3");
        let keys = vec![ApiKey::new("AIzaSySTOREtestKEY000000000000000000001")];
        let clock = Arc::new(ManualClock::new(proxy_core::UnixMillis(1_800_000_000_000)));
        let store = SqliteKeyStore::open(&path, keys, clock, None, 100).expect("open");
        let success = |model: &str| {
            let lease = store.acquire(None, model, &[], &[], None).expect("a key");
            store.report(Report {
                key: lease.id,
                model: model.to_owned(),
                outcome: Outcome::Success,
                usage: None,
                client: None,
                owned: Vec::new(),
                deleted: Vec::new(),
                listed: false,
                usage_of: None,
            });
        };
        for _ in 0..5 {
            success("a");
        }
        store.reset();
        for _ in 0..3 {
            success("b");
        }
        success("a");
        store.flush();
        // The reset cleared a's five; what came after it is on disk.
        assert_eq!(requests_on_disk(&path), vec![("a".to_owned(), 1), ("b".to_owned(), 3)]);
        for _ in 0..250 {
            success("b");
        }
        store.close();
        assert_eq!(requests_on_disk(&path), vec![("a".to_owned(), 1), ("b".to_owned(), 253)]);
    }

    /// A key store written before clients were told apart: its registry
    /// gains its columns, and its resources load as the proxy key's.
    #[test]
    fn a_registry_of_an_earlier_build_loads_as_the_proxy_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.sqlite3");
        let key = ApiKey::new("AIzaSySTOREtestKEY000000000000000000002");
        let now = proxy_core::UnixMillis(1_800_000_000_000);
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE affinity (name TEXT PRIMARY KEY, key_id TEXT NOT NULL, expires INTEGER NOT NULL);",
            )
            .expect("the earlier schema");
            conn.execute(
                "INSERT INTO affinity (name, key_id, expires) VALUES ('files/old', ?1, ?2)",
                rusqlite::params![key.id().as_str(), (now.0 + 60_000) as i64],
            )
            .expect("an earlier row");
        }
        for _ in 0..2 {
            let clock = Arc::new(ManualClock::new(now));
            let store = SqliteKeyStore::open(&path, vec![key.clone()], clock, None, 100).expect("opens, twice");
            let old = Resource::parse("files/old").expect("a name");
            let lease = store.acquire(None, "m", std::slice::from_ref(&old), &[], None).expect("its owner");
            assert!(lease.pinned && lease.id == key.id());
        }
        let conn = Connection::open(&path).expect("open");
        let (client, counted): (Option<String>, i64) = conn
            .query_row("SELECT client, counted FROM affinity WHERE name = 'files/old'", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("the row, with its new columns");
        assert_eq!((client, counted), (None, 0));
    }
}
