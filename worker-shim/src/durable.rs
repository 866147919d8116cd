//! `ApiKeyManager`, the Durable Object holding the key pool: `core`'s
//! [`KeyPool`] in memory, every change written to the object's SQLite
//! storage with the same schema as host-runner's file.

use crate::wire::{AcquireRequest, AcquireResponse};
use proxy_core::config::parse_api_keys;
use proxy_core::persist;
use proxy_core::pool::{Change, KeyRecord, MarkKind, UsageRecord};
use proxy_core::{KeyPool, Report, UnixMillis};
use std::cell::{Cell, RefCell};
use worker::{Date, DurableObject, Env, Request, Response, SqlStorage, SqlStorageValue, State, durable_object};

struct Loaded {
    /// The `API_KEYS` value the pool was built from.
    source: String,
    pool: KeyPool,
}

/// The key store of the Worker. One global instance (`id_from_name`).
#[expect(missing_debug_implementations, reason = "holds JS handles")]
#[durable_object]
pub struct ApiKeyManager {
    sql: SqlStorage,
    env: Env,
    loaded: RefCell<Option<Loaded>>,
    /// Proxy traffic this instance served since it started: acquires and
    /// reports (shown in `/stat.json` as `durable_object_requests`, so DO
    /// traffic per proxied request can be measured).
    acquires: Cell<u64>,
    reports: Cell<u64>,
}

fn now() -> UnixMillis {
    UnixMillis(Date::now().as_millis())
}

fn int(v: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(v.min(i64::MAX as u64) as i64)
}

fn mark_text(k: MarkKind) -> &'static str {
    match k {
        MarkKind::Cooling => "cooling",
        MarkKind::Exhausted => "exhausted",
    }
}

impl ApiKeyManager {
    fn upsert_key(&self, k: &KeyRecord) -> worker::Result<()> {
        self.sql
            .exec(
                persist::UPSERT_KEY,
                vec![
                    k.key_id.clone().into(),
                    k.disabled_reason.clone().into(),
                    k.disabled_at.map(int).unwrap_or(SqlStorageValue::Null),
                ],
            )
            .map(drop)
    }

    fn upsert_usage(&self, u: &UsageRecord) -> worker::Result<()> {
        let opt = |v: Option<u64>| v.map(int).unwrap_or(SqlStorageValue::Null);
        self.sql
            .exec(
                persist::UPSERT_USAGE,
                vec![
                    u.key_id.clone().into(),
                    u.model.clone().into(),
                    int(u.requests),
                    int(u.successes),
                    int(u.rate_limited),
                    int(u.errors),
                    opt(u.last_used),
                    u.mark_kind.map(mark_text).map(str::to_owned).into(),
                    opt(u.mark_until),
                    u.mark_reason.clone().into(),
                    u.last_error.clone().into(),
                ],
            )
            .map(drop)
    }

    fn persist(&self, change: Option<Change>) -> worker::Result<()> {
        if let Some(c) = change {
            if let Some(k) = &c.key {
                self.upsert_key(k)?;
            }
            self.upsert_usage(&c.usage)?;
        }
        Ok(())
    }

    fn rewrite(&self, pool: &KeyPool) -> worker::Result<()> {
        let (keys, usage) = pool.records();
        self.sql.exec(persist::DELETE_ALL, None)?;
        for k in &keys {
            self.upsert_key(k)?;
        }
        for u in &usage {
            self.upsert_usage(u)?;
        }
        Ok(())
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
        let key_records: Vec<KeyRecord> =
            self.sql.exec(persist::SELECT_KEYS, None).and_then(|c| c.to_array()).map_err(|e| e.to_string())?;
        let usage_records: Vec<UsageRecord> =
            self.sql.exec(persist::SELECT_USAGE, None).and_then(|c| c.to_array()).map_err(|e| e.to_string())?;
        let pool = KeyPool::restore(keys, key_records, usage_records);
        self.rewrite(&pool).map_err(|e| e.to_string())?;
        *loaded = Some(Loaded { source, pool });
        Ok(())
    }

    fn apply(&self, pool: &mut KeyPool, report: &Report, now: UnixMillis) -> worker::Result<()> {
        self.persist(pool.report(&report.key, &report.model, &report.outcome, now))
    }
}

impl DurableObject for ApiKeyManager {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        if let Err(e) = sql.exec(persist::SCHEMA, None) {
            worker::console_error!("creating the key store schema failed: {e}");
        }
        Self { sql, env, loaded: RefCell::new(None), acquires: Cell::new(0), reports: Cell::new(0) }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let path = req.path();
        let body = req.text().await?;
        // No await below: the pool is borrowed only synchronously.
        if let Err(why) = self.ensure_loaded() {
            return Response::error(format!("key store not configured: {why}"), 500);
        }
        let now = now();
        let mut guard = self.loaded.borrow_mut();
        let Some(loaded) = guard.as_mut() else { return Response::error("key store not loaded", 500) };
        let pool = &mut loaded.pool;
        match path.as_str() {
            "/acquire" => {
                self.acquires.set(self.acquires.get() + 1);
                let a: AcquireRequest = serde_json::from_str(&body)?;
                if let Some(report) = &a.settle {
                    self.apply(pool, report, now)?;
                }
                let answer = match pool.acquire(&a.model, &a.exclude, now) {
                    Ok(lease) => AcquireResponse::Lease { id: lease.id, secret: lease.secret.expose().to_owned() },
                    Err(u) => AcquireResponse::Unavailable(u),
                };
                Response::from_json(&answer)
            }
            "/report" => {
                self.reports.set(self.reports.get() + 1);
                let report: Report = serde_json::from_str(&body)?;
                self.apply(pool, &report, now)?;
                Response::ok("")
            }
            "/snapshot" => {
                let mut json = pool.snapshot(now).to_json();
                json["durable_object_requests"] =
                    serde_json::json!({"acquire": self.acquires.get(), "report": self.reports.get()});
                Response::ok(json.to_string())
            }
            "/page" => Response::ok(proxy_core::page::render(&pool.snapshot(now))),
            "/reset" => {
                pool.reset_all();
                self.rewrite(pool)?;
                Response::ok("")
            }
            "/daily-reset" => {
                pool.daily_reset(now);
                self.rewrite(pool)?;
                Response::ok("")
            }
            _ => Response::error("unknown key store operation", 404),
        }
    }
}
