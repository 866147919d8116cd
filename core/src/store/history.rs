//! Usage over time: calls and tokens in hourly buckets, per model, per key
//! and per client, kept for [`KEPT_HOURS`] (a week and a day) and bounded
//! in size: at most [`MAX_NAMES_PER_HOUR`] names of each kind an hour, the
//! rest counted under [`OTHERS`].
//!
//! A model's and a key's buckets count upstream calls (every attempt), as
//! `/stat`'s cells do; a client's count its requests (once each, on its
//! last attempt), as its quotas do. `/stat` draws the last 24 hours and the
//! last 7 days from them ([`crate::view::page`]).

use crate::store::sql::{Columns, RowError, SqlValue, Statement, int, token_values};
use crate::wire::time::{HOUR_MS, UnixMillis};
use crate::wire::usage::TokenUsage;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// How many hours are kept (the current one included).
pub const KEPT_HOURS: u64 = 8 * 24;

/// The most names of one kind counted separately in one hour.
pub const MAX_NAMES_PER_HOUR: usize = 256;

/// The bucket of the names past [`MAX_NAMES_PER_HOUR`] in an hour.
pub const OTHERS: &str = "(others)";

/// What a series is kept per.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dim {
    /// Per model.
    Model,
    /// Per key id.
    Key,
    /// Per client id.
    Client,
}

impl Dim {
    /// Its name, in rows and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Key => "key",
            Self::Client => "client",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "model" => Some(Self::Model),
            "key" => Some(Self::Key),
            "client" => Some(Self::Client),
            _ => None,
        }
    }
}

/// Calls and tokens of one name in one hour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Calls (a client's: requests).
    pub calls: u64,
    /// Tokens the answers reported.
    pub tokens: TokenUsage,
}

/// One hourly row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourRecord {
    /// The hour (hours since the Unix epoch, UTC).
    pub hour: u64,
    /// What it is per.
    pub dim: Dim,
    /// The model, key id or client id.
    pub name: String,
    /// Its counts.
    pub bucket: Bucket,
}

/// Creates the table when missing.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hourly (
    hour INTEGER NOT NULL,
    dim TEXT NOT NULL,
    name TEXT NOT NULL,
    calls INTEGER NOT NULL,
    prompt INTEGER NOT NULL,
    output INTEGER NOT NULL,
    cached INTEGER NOT NULL,
    thinking INTEGER NOT NULL,
    PRIMARY KEY (hour, dim, name)
);
";

/// Reads every row.
pub const SELECT_HOURLY: &str = "SELECT hour, dim, name, calls, prompt, output, cached, thinking FROM hourly";
/// Writes a row.
pub const UPSERT_HOURLY: &str = "INSERT INTO hourly (hour, dim, name, calls, prompt, output, cached, thinking) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(hour, dim, name) DO UPDATE SET calls = excluded.calls, \
     prompt = excluded.prompt, output = excluded.output, cached = excluded.cached, thinking = excluded.thinking";
/// Deletes the rows before an hour.
pub const PRUNE_HOURLY: &str = "DELETE FROM hourly WHERE hour < ?1";
/// Deletes every row.
pub const DELETE_HOURLY: &str = "DELETE FROM hourly";

impl HourRecord {
    /// The row's values, in [`SELECT_HOURLY`] and [`UPSERT_HOURLY`] order.
    pub fn to_row(&self) -> Vec<SqlValue> {
        let mut row = vec![
            int(self.hour),
            SqlValue::Text(self.dim.as_str().to_owned()),
            SqlValue::Text(self.name.clone()),
            int(self.bucket.calls),
        ];
        row.extend(token_values(&self.bucket.tokens));
        row
    }

    /// The record of a row.
    pub fn from_row(row: &[SqlValue]) -> Result<Self, RowError> {
        let mut c = Columns::new("hourly", row);
        let hour = c.int()?;
        let dim = c.text()?;
        let dim = Dim::parse(&dim).ok_or_else(|| c.err(format!("unknown dim {dim:?}")))?;
        let name = c.text()?;
        let calls = c.int()?;
        let tokens = c.tokens()?;
        Ok(Self { hour, dim, name, bucket: Bucket { calls, tokens } })
    }
}

/// The statement that drops the hours before `hour`.
pub fn prune_statement(hour: u64) -> Statement {
    (PRUNE_HOURLY, vec![int(hour)])
}

/// The hour `t` falls in.
pub fn hour_of(t: UnixMillis) -> u64 {
    t.0 / HOUR_MS
}

/// The hourly buckets of a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    buckets: BTreeMap<(u64, Dim, String), Bucket>,
    names: BTreeMap<(u64, Dim), usize>,
    /// The oldest hour kept.
    oldest: u64,
}

/// What one call changed: the rows to write, and the hour before which
/// rows are to be dropped (when the oldest kept hour moved).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HourChange {
    /// Rows to upsert.
    pub rows: Vec<HourRecord>,
    /// Drop the rows before this hour.
    pub prune_before: Option<u64>,
}

impl History {
    /// The history of stored rows (rows older than a week and a day go at
    /// the next call counted).
    pub fn restore(rows: Vec<HourRecord>) -> Self {
        let mut h = Self::default();
        for r in rows {
            *h.names.entry((r.hour, r.dim)).or_default() += 1;
            h.buckets.insert((r.hour, r.dim, r.name), r.bucket);
        }
        h
    }

    /// Counts one call (`names`: the model, the key, the client when the
    /// call ended a client's request) at `now`.
    pub fn record(&mut self, now: UnixMillis, names: &[(Dim, &str)], tokens: Option<&TokenUsage>) -> HourChange {
        let mut change = HourChange::default();
        let oldest = oldest_kept(now);
        if oldest > self.oldest {
            self.oldest = oldest;
            self.buckets = self.buckets.split_off(&(oldest, Dim::Model, String::new()));
            self.names = self.names.split_off(&(oldest, Dim::Model));
            change.prune_before = Some(oldest);
        }
        let hour = hour_of(now);
        for (dim, name) in names {
            let known = self.buckets.contains_key(&(hour, *dim, (*name).to_owned()));
            let count = self.names.entry((hour, *dim)).or_default();
            let name = if known || *count < MAX_NAMES_PER_HOUR { *name } else { OTHERS };
            let key = (hour, *dim, name.to_owned());
            if !self.buckets.contains_key(&key) {
                *count += 1;
            }
            let b = self.buckets.entry(key).or_default();
            b.calls += 1;
            if let Some(t) = tokens {
                b.tokens.add(t);
            }
            change.rows.push(HourRecord { hour, dim: *dim, name: name.to_owned(), bucket: *b });
        }
        change
    }

    /// Every row.
    pub fn records(&self) -> Vec<HourRecord> {
        self.buckets
            .iter()
            .map(|((hour, dim, name), b)| HourRecord { hour: *hour, dim: *dim, name: name.clone(), bucket: *b })
            .collect()
    }

    /// The series of `dim` over the `hours` hours up to `now`'s: name →
    /// one bucket per hour, oldest first.
    pub fn series(&self, dim: Dim, now: UnixMillis, hours: u64) -> BTreeMap<String, Vec<Bucket>> {
        let last = hour_of(now);
        let first = (last + 1).saturating_sub(hours);
        let mut out: BTreeMap<String, Vec<Bucket>> = BTreeMap::new();
        for ((hour, d, name), b) in self.buckets.range((first, Dim::Model, String::new())..) {
            if *hour > last {
                break;
            }
            if *d != dim {
                continue;
            }
            let row = out.entry(name.clone()).or_insert_with(|| vec![Bucket::default(); hours as usize]);
            row[(hour - first) as usize] = *b;
        }
        out
    }

    /// The `/stat.json` form: per kind and name, `[hour, calls, tokens]`
    /// for each hour with calls (tokens: prompt, output and thinking),
    /// hours as RFC 3339 times.
    pub fn to_json(&self, now: UnixMillis) -> Value {
        let mut out = Map::new();
        for dim in [Dim::Model, Dim::Key, Dim::Client] {
            let mut by_name: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
            for ((hour, d, name), b) in &self.buckets {
                if *d == dim && *hour <= hour_of(now) {
                    let tokens = crate::wire::usage::quota_tokens(&b.tokens);
                    by_name.entry(name).or_default().push(json!([
                        UnixMillis(hour * HOUR_MS).to_rfc3339(),
                        b.calls,
                        tokens
                    ]));
                }
            }
            out.insert(dim.as_str().to_owned(), json!(by_name));
        }
        Value::Object(out)
    }
}

fn oldest_kept(now: UnixMillis) -> u64 {
    (hour_of(now) + 1).saturating_sub(KEPT_HOURS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    #[test]
    fn calls_and_tokens_land_in_their_hour_and_old_hours_go() {
        let mut h = History::default();
        let t = TokenUsage { prompt: 3, output: 4, cached: 1, thinking: 2 };
        h.record(NOW, &[(Dim::Model, "m"), (Dim::Key, "k1")], Some(&t));
        h.record(NOW.plus(HOUR_MS), &[(Dim::Model, "m"), (Dim::Key, "k1"), (Dim::Client, "c")], None);
        let series = h.series(Dim::Model, NOW.plus(HOUR_MS), 24);
        let m = &series["m"];
        assert_eq!((m[22].calls, m[22].tokens, m[23].calls), (1, t, 1));
        assert_eq!(h.series(Dim::Client, NOW.plus(HOUR_MS), 24)["c"][23].calls, 1);
        // A week and a day later, the first hours are dropped, in memory
        // and (through the change) on disk.
        let later = NOW.plus(KEPT_HOURS * HOUR_MS);
        let change = h.record(later, &[(Dim::Model, "m")], None);
        assert_eq!(change.prune_before, Some(hour_of(NOW) + 1));
        assert!(h.records().iter().all(|r| r.hour > hour_of(NOW)));
        let rows = h.records();
        let mut restored = History::restore(rows.clone());
        assert_eq!(restored.records(), rows);
        let change = restored.record(later.plus(KEPT_HOURS * HOUR_MS), &[(Dim::Model, "m")], None);
        assert!(change.prune_before.is_some());
        assert_eq!(restored.records().len(), 1, "only the new hour is left");
    }

    #[test]
    fn an_hour_holds_a_bounded_number_of_names() {
        let mut h = History::default();
        for i in 0..(MAX_NAMES_PER_HOUR + 50) {
            h.record(NOW, &[(Dim::Key, &format!("k{i}"))], None);
        }
        let series = h.series(Dim::Key, NOW, 1);
        assert_eq!(series.len(), MAX_NAMES_PER_HOUR + 1);
        assert_eq!(series[OTHERS][0].calls, 50);
    }

    #[test]
    fn rows_round_trip() {
        let r = HourRecord {
            hour: 500_000,
            dim: Dim::Client,
            name: "c-1".into(),
            bucket: Bucket { calls: 4, tokens: TokenUsage { prompt: 1, output: 2, cached: 3, thinking: 4 } },
        };
        assert_eq!(HourRecord::from_row(&r.to_row()), Ok(r));
    }
}
