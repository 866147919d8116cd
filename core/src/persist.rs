//! The SQLite schema both hosts persist the key pool in (host-runner's
//! file, the Worker's Durable Object), and the statements over it. Rows map
//! one to one onto [`KeyRecord`](crate::pool::KeyRecord) and
//! [`UsageRecord`](crate::pool::UsageRecord); secrets are never stored.

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
";

/// Every key row.
pub const SELECT_KEYS: &str = "SELECT key_id, disabled_reason, disabled_at FROM keys";

/// Every usage row.
pub const SELECT_USAGE: &str = "SELECT key_id, model, requests, successes, rate_limited, errors, last_used, \
     mark_kind, mark_until, mark_reason, last_error FROM usage";

/// Inserts or replaces a key row: `key_id, disabled_reason, disabled_at`.
pub const UPSERT_KEY: &str = "INSERT INTO keys (key_id, disabled_reason, disabled_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT(key_id) DO UPDATE SET disabled_reason = excluded.disabled_reason, disabled_at = excluded.disabled_at";

/// Inserts or replaces a usage row, columns in [`SELECT_USAGE`] order.
pub const UPSERT_USAGE: &str = "INSERT INTO usage (key_id, model, requests, successes, rate_limited, errors, \
     last_used, mark_kind, mark_until, mark_reason, last_error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
     ON CONFLICT(key_id, model) DO UPDATE SET requests = excluded.requests, successes = excluded.successes, \
     rate_limited = excluded.rate_limited, errors = excluded.errors, last_used = excluded.last_used, \
     mark_kind = excluded.mark_kind, mark_until = excluded.mark_until, mark_reason = excluded.mark_reason, \
     last_error = excluded.last_error";

/// Empties both tables (before a full rewrite).
pub const DELETE_ALL: &str = "DELETE FROM keys; DELETE FROM usage;";
