//! `ApiKeyManager`, the Durable Object holding the key pool: `core`'s
//! [`KeyPool`] in memory, every change written to the object's SQLite
//! storage through core's persistence mapping (the same rows as
//! host-runner's file).

use crate::wire::{AcquireAnswer, AdminReply, StoreRequest};
use proxy_core::config::parse_api_keys;
use proxy_core::store::persist::{self, Storage, StoredPool};
use proxy_core::store::registry;
use proxy_core::store::signatures;
use proxy_core::store::sql::{SqlValue, Statement};
use proxy_core::store::vault::{NONCE_BYTES, Vault};
use proxy_core::view;
use proxy_core::wire::keystore::StatsView;
use proxy_core::wire::resource::Resource;
use proxy_core::wire::summary::Summary;
use proxy_core::{KeyPool, UnixMillis};
use std::cell::{Cell, RefCell};
use wasm_bindgen::JsCast;
use worker::{Date, DurableObject, Env, Request, Response, SqlStorage, SqlStorageValue, State, durable_object};

/// The most requests the Durable Object's log keeps (its memory is about
/// 128 MB).
const MAX_LOG_SIZE: usize = 50_000;

struct Loaded {
    /// The `API_KEYS` value the pool was built from.
    source: String,
    pool: KeyPool,
    /// Seals keys added at run time (`KEY_ENCRYPTION_SECRET`).
    vault: Option<Vault>,
}

/// The key store of the Worker. One global instance (`id_from_name`).
#[expect(missing_debug_implementations, reason = "holds JS handles")]
#[durable_object]
pub struct ApiKeyManager {
    sql: SqlStorage,
    env: Env,
    loaded: RefCell<Option<Loaded>>,
    /// Proxy traffic this instance served since it started: acquires and
    /// report batches (shown in `/stat.json` as `durable_object_requests`,
    /// so DO traffic per proxied request can be measured).
    acquires: Cell<u64>,
    reports: Cell<u64>,
}

fn now() -> UnixMillis {
    UnixMillis(Date::now().as_millis())
}

fn to_storage(v: SqlValue) -> SqlStorageValue {
    match v {
        SqlValue::Null => SqlStorageValue::Null,
        SqlValue::Integer(i) => SqlStorageValue::Integer(i),
        SqlValue::Text(t) => SqlStorageValue::String(t),
    }
}

fn from_storage(v: SqlStorageValue) -> SqlValue {
    match v {
        SqlStorageValue::Integer(i) => SqlValue::Integer(i),
        SqlStorageValue::String(s) => SqlValue::Text(s),
        SqlStorageValue::Float(f) if f.fract() == 0.0 => SqlValue::Integer(f as i64),
        _ => SqlValue::Null,
    }
}

impl ApiKeyManager {
    fn rewrite(&self, pool: &KeyPool) -> Result<(), String> {
        persist::rewrite_statements(&pool.records()).try_for_each(|s| self.run(s))
    }

    /// (Re)builds the pool when `API_KEYS` changed since it was loaded:
    /// keys that stay keep their statistics.
    fn ensure_loaded(&self) -> Result<(), String> {
        let source = crate::env_value(&self.env, "API_KEYS").unwrap_or_default();
        let mut loaded = self.loaded.borrow_mut();
        if loaded.as_ref().is_some_and(|l| l.source == source) {
            return Ok(());
        }
        let keys = parse_api_keys(Some(&source).filter(|s| !s.trim().is_empty()).map(String::as_str))
            .map_err(|e| e.to_string())?;
        let vault = match crate::env_value(&self.env, "KEY_ENCRYPTION_SECRET").filter(|s| !s.trim().is_empty()) {
            Some(secret) => Some(Vault::from_secret(&secret).map_err(|e| e.to_string())?),
            None => None,
        };
        let (stored, unopened) = StoredPool::load(self, vault.as_ref(), now())?;
        if let Some(why) = unopened {
            worker::console_warn!("{why}");
        }
        let mut pool = KeyPool::restore(keys, stored);
        pool.requests_mut().resize(self.request_log_size());
        self.rewrite(&pool)?;
        *loaded = Some(Loaded { source, pool, vault });
        Ok(())
    }

    /// Applies reports, in order, and persists what they changed.
    /// `REQUEST_LOG_SIZE` (a bad value is logged, and the default kept), at
    /// most [`MAX_LOG_SIZE`]: the object reads the log into its memory.
    fn request_log_size(&self) -> usize {
        let size = proxy_core::config::request_log_size(|v| crate::env_value(&self.env, v)).unwrap_or_else(|e| {
            worker::console_error!("{e}");
            proxy_core::config::DEFAULT_REQUEST_LOG_SIZE
        });
        if size > MAX_LOG_SIZE {
            worker::console_warn!("REQUEST_LOG_SIZE {size} is more than the Durable Object keeps: {MAX_LOG_SIZE}");
        }
        size.min(MAX_LOG_SIZE)
    }

    fn apply(
        &self,
        pool: &mut KeyPool,
        reports: Vec<proxy_core::Report>,
        logged: Vec<Summary>,
        now: UnixMillis,
    ) -> Result<(), String> {
        for r in reports {
            if let Some(change) = pool.apply(&r, now) {
                persist::change_statements(&change).try_for_each(|s| self.run(s))?;
            }
        }
        for summary in logged {
            pool.log_request(summary).into_iter().try_for_each(|s| self.run(s))?;
        }
        Ok(())
    }

    /// Carries out one request of the Worker. No await inside: the pool is
    /// borrowed only synchronously.
    fn serve(&self, request: StoreRequest) -> Result<Response, String> {
        self.ensure_loaded().map_err(|why| format!("the key store is not configured: {why}"))?;
        let now = now();
        let mut guard = self.loaded.borrow_mut();
        let loaded = guard.as_mut().ok_or("the key store is not loaded")?;
        let (pool, vault) = (&mut loaded.pool, loaded.vault.as_ref());
        let done = || Response::ok("").map_err(|e| e.to_string());
        match request {
            StoreRequest::Acquire { model, exclude, settle, logged, client, resources } => {
                self.acquires.set(self.acquires.get() + 1);
                self.apply(pool, settle, logged, now)?;
                let resources: Vec<Resource> = resources.iter().filter_map(|n| Resource::stored(n)).collect();
                let answer = match pool.acquire_for(client.as_ref(), &model, &resources, &exclude, now) {
                    Ok(lease) => AcquireAnswer::Lease {
                        id: lease.id,
                        secret: lease.secret.expose().to_owned(),
                        client: lease.client,
                        pinned: lease.pinned,
                    },
                    Err(u) => AcquireAnswer::Unavailable(u),
                };
                Response::from_json(&answer).map_err(|e| e.to_string())
            }
            StoreRequest::Report { reports, logged } => {
                self.reports.set(self.reports.get() + 1);
                self.apply(pool, reports, logged, now)?;
                done()
            }
            StoreRequest::Stats { view, settle, logged } => {
                self.apply(pool, settle, logged, now)?;
                let snapshot = pool.snapshot(now);
                let response = match view {
                    StatsView::Json => {
                        let mut json = snapshot.to_json();
                        json["durable_object_requests"] =
                            serde_json::json!({"acquire": self.acquires.get(), "report": self.reports.get()});
                        view::json_response(&json)
                    }
                    StatsView::Page(_) | StatsView::AdminPage(_) | StatsView::Metrics => view.render(&snapshot),
                };
                crate::io::to_response(&response).map_err(|e| e.to_string())
            }
            StoreRequest::Admin { op, settle, logged } => {
                self.apply(pool, settle, logged, now)?;
                // The request log's rows are read back at its first look,
                // not at each wake-up.
                if matches!(op, proxy_core::wire::keystore::AdminOp::Requests { .. }) {
                    pool.load_requests(self)?;
                }
                let applied = proxy_core::store::admin::apply(pool, vault, op, now, &mut nonce);
                proxy_core::store::admin::statements(&applied).try_for_each(|s| self.run(s))?;
                let leases = applied.leases.iter().map(|l| (l.id.clone(), l.secret.expose().to_owned())).collect();
                let reply = AdminReply { status: applied.status, body: applied.body, leases };
                Response::from_json(&reply).map_err(|e| e.to_string())
            }
            StoreRequest::Reset => {
                pool.reset_all();
                self.rewrite(pool)?;
                done()
            }
            StoreRequest::DailyReset => {
                pool.daily_reset(now);
                self.rewrite(pool)?;
                self.run(registry::prune_statement(now))?;
                self.run(signatures::prune_statement(now))?;
                done()
            }
        }
    }
}

impl Storage for ApiKeyManager {
    type Error = String;

    fn run(&self, (sql, values): Statement) -> Result<(), String> {
        self.sql.exec(sql, values.into_iter().map(to_storage).collect::<Vec<_>>()).map(drop).map_err(|e| e.to_string())
    }

    fn script(&self, sql: &str) -> Result<(), String> {
        self.sql.exec(sql, None).map(drop).map_err(|e| e.to_string())
    }

    fn rows(&self, select: &str) -> Result<Vec<Vec<SqlValue>>, String> {
        let cursor = self.sql.exec(select, None).map_err(|e| e.to_string())?;
        let mut rows = Vec::new();
        for row in cursor.raw() {
            rows.push(row.map_err(|e| e.to_string())?.into_iter().map(from_storage).collect());
        }
        Ok(rows)
    }
}

/// Fresh random bytes for a seal, from the runtime's CSPRNG.
fn nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let filled = scope.crypto().is_ok_and(|c| c.get_random_values_with_u8_array(&mut n).is_ok());
    if filled { n } else { proxy_core::store::vault::fallback_nonce((js_sys::Date::now() * 1e6) as u64) }
}

impl DurableObject for ApiKeyManager {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        let manager = Self { sql, env, loaded: RefCell::new(None), acquires: Cell::new(0), reports: Cell::new(0) };
        if let Err(e) = persist::create_tables(&manager) {
            worker::console_error!("creating the key store's tables failed: {e}");
        }
        manager
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let body = req.text().await?;
        let answer = match serde_json::from_str::<StoreRequest>(&body) {
            Ok(request) => self.serve(request),
            Err(e) => Err(format!("not a key store request: {e}")),
        };
        answer.or_else(|why| Response::error(why, 500))
    }
}
