//! The thought signatures of the tool calls relayed through Google's
//! OpenAI-compatible layer, remembered by call id for a bounded time.
//!
//! Gemini 3 refuses a conversation whose earlier tool call comes back
//! without the signature Google gave it (`tool_calls[].extra_content.google
//! .thought_signature`), and most chat-completions clients drop members they
//! do not know. The exchange keeps each signature here as the answer passes
//! ([`crate::wire::keystore::AdminOp::SignaturesKeep`]) and puts it back into
//! a follow-up `assistant` message that lacks it
//! ([`crate::wire::keystore::AdminOp::Signatures`]). Entries belong to the
//! client whose call made them (none: the proxy key's, an open proxy's): a
//! client is never given another's. They live [`TTL_MS`], in a table of
//! the key store, so a restart (and the Worker's Durable Object) keeps them;
//! past [`MAX_ENTRIES`] or [`MAX_BYTES`] the oldest go first.

use crate::store::sql::{Columns, RowError, SqlValue, Statement, int};
use crate::wire::time::UnixMillis;
use std::collections::{HashMap, VecDeque};

/// How long a signature is kept: a conversation that goes on the next day
/// gets Google's placeholder instead.
pub const TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// The most signatures kept.
pub const MAX_ENTRIES: usize = 20_000;

/// The most bytes of signatures (and their ids) kept.
pub const MAX_BYTES: usize = 32 << 20;

/// A longer signature is not kept (Google's run to a few KiB).
pub const MAX_SIGNATURE_BYTES: usize = 256 << 10;

/// The most ids one request may ask about, or one answer keep.
pub const MAX_PER_CALL: usize = 256;

/// Creates the table when missing.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS signatures (
    scope TEXT NOT NULL,
    call_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (scope, call_id)
);
";

/// Reads every entry: `scope, call_id, signature, expires`.
pub const SELECT: &str = "SELECT scope, call_id, signature, expires FROM signatures";

const UPSERT: &str = "INSERT INTO signatures (scope, call_id, signature, expires) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT(scope, call_id) DO UPDATE SET signature = excluded.signature, expires = excluded.expires";

/// The statement that drops the entries expired at `now`.
pub fn prune_statement(now: UnixMillis) -> Statement {
    ("DELETE FROM signatures WHERE expires <= ?1", vec![int(now.0)])
}

fn forget_statement(scope: &str, call_id: &str) -> Statement {
    (
        "DELETE FROM signatures WHERE scope = ?1 AND call_id = ?2",
        vec![SqlValue::Text(scope.to_owned()), SqlValue::Text(call_id.to_owned())],
    )
}

/// A stored entry, as [`SELECT`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The client it belongs to (empty: the proxy key's).
    pub scope: String,
    /// The tool call's id.
    pub call_id: String,
    /// Google's signature.
    pub signature: String,
    /// When it is forgotten.
    pub expires: UnixMillis,
}

/// An entry of a row read with [`SELECT`].
pub fn from_row(row: &[SqlValue]) -> Result<Stored, RowError> {
    let mut c = Columns::new("signatures", row);
    Ok(Stored { scope: c.text()?, call_id: c.text()?, signature: c.text()?, expires: UnixMillis(c.int()?) })
}

/// The scope of `client`'s entries (none: the proxy key's).
pub fn scope_of(client: Option<&str>) -> &str {
    client.unwrap_or_default()
}

type Id = (String, String);

/// The signatures remembered, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Signatures {
    entries: HashMap<Id, (String, UnixMillis)>,
    /// Ids in the order they were kept (the order they expire in); an id
    /// kept again is found here twice, its first place skipped when its
    /// expiry no longer matches.
    order: VecDeque<(Id, UnixMillis)>,
    bytes: usize,
}

fn size(id: &Id, signature: &str) -> usize {
    id.0.len() + id.1.len() + signature.len()
}

impl Signatures {
    /// The stored entries still alive at `now`.
    pub fn restore(mut stored: Vec<Stored>, now: UnixMillis) -> Self {
        stored.sort_by_key(|s| s.expires);
        let mut out = Self::default();
        for s in stored.into_iter().filter(|s| s.expires > now) {
            out.insert((s.scope, s.call_id), s.signature, s.expires);
        }
        out
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, id: Id, signature: String, expires: UnixMillis) -> Vec<Id> {
        let added = size(&id, &signature);
        if let Some((old, _)) = self.entries.insert(id.clone(), (signature, expires)) {
            self.bytes -= size(&id, &old);
        }
        self.bytes += added;
        self.order.push_back((id.clone(), expires));
        let mut evicted = Vec::new();
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            let Some((oldest, at)) = self.order.pop_front() else { break };
            if oldest == id && at == expires {
                // Only the entry just kept is left: keep it.
                self.order.push_front((oldest, at));
                break;
            }
            if self.entries.get(&oldest).is_some_and(|(_, e)| *e == at)
                && let Some((sig, _)) = self.entries.remove(&oldest)
            {
                self.bytes -= size(&oldest, &sig);
                evicted.push(oldest);
            }
        }
        self.tidy();
        evicted
    }

    /// Drops the queue's places of ids kept again or forgotten: at its
    /// front as they come, and all of them once they outnumber the
    /// entries.
    fn tidy(&mut self) {
        let stale = |entries: &HashMap<Id, (String, UnixMillis)>, (i, at): &(Id, UnixMillis)| {
            entries.get(i).is_none_or(|(_, e)| e != at)
        };
        while self.order.front().is_some_and(|p| stale(&self.entries, p)) {
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order.retain(|p| !stale(entries, p));
        }
    }

    /// Forgets what expired by `now` (its rows go when the store next
    /// loads, [`prune_statement`]).
    fn expire(&mut self, now: UnixMillis) {
        while let Some((id, at)) = self.order.front().filter(|(_, at)| *at <= now).cloned() {
            self.order.pop_front();
            if self.entries.get(&id).is_some_and(|(_, e)| *e == at)
                && let Some((sig, _)) = self.entries.remove(&id)
            {
                self.bytes -= size(&id, &sig);
            }
        }
        self.tidy();
    }

    /// Keeps `pairs` (call id, signature) of `scope` for [`TTL_MS`] from
    /// `now`; returns the statements that persist them (and forget what
    /// made room).
    pub fn keep(&mut self, scope: &str, pairs: Vec<(String, String)>, now: UnixMillis) -> Vec<Statement> {
        self.expire(now);
        let expires = UnixMillis(now.0.saturating_add(TTL_MS));
        let mut writes = Vec::new();
        for (call_id, signature) in pairs.into_iter().take(MAX_PER_CALL) {
            if call_id.is_empty() || signature.is_empty() || signature.len() > MAX_SIGNATURE_BYTES {
                continue;
            }
            writes.push((
                UPSERT,
                vec![
                    SqlValue::Text(scope.to_owned()),
                    SqlValue::Text(call_id.clone()),
                    SqlValue::Text(signature.clone()),
                    int(expires.0),
                ],
            ));
            for (s, c) in self.insert((scope.to_owned(), call_id), signature, expires) {
                writes.push(forget_statement(&s, &c));
            }
        }
        writes
    }

    /// The signatures of `ids` that `scope` kept and are alive at `now`.
    pub fn find(&self, scope: &str, ids: &[String], now: UnixMillis) -> Vec<(String, String)> {
        ids.iter()
            .take(MAX_PER_CALL)
            .filter_map(|id| {
                let (sig, expires) = self.entries.get(&(scope.to_owned(), id.clone()))?;
                (*expires > now).then(|| (id.clone(), sig.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("call_{i}"), format!("c2ln{i}=="))).collect()
    }

    #[test]
    fn kept_signatures_are_found_by_their_client_only_until_they_expire() {
        let mut s = Signatures::default();
        let writes = s.keep("client-a", pairs(2), UnixMillis(1000));
        assert_eq!(writes.len(), 2);
        let ids = vec!["call_0".to_owned(), "call_1".to_owned(), "call_9".to_owned()];
        assert_eq!(s.find("client-a", &ids, UnixMillis(2000)), pairs(2));
        assert!(s.find("", &ids, UnixMillis(2000)).is_empty(), "another scope sees nothing");
        assert!(s.find("client-a", &ids, UnixMillis(1000 + TTL_MS)).is_empty(), "expired");
        // Expired entries leave memory as new ones come.
        s.keep("client-a", vec![("call_new".into(), "c2ln".into())], UnixMillis(1000 + TTL_MS));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_oldest_go_first_past_the_bound_and_their_rows_with_them() {
        let mut s = Signatures::default();
        s.keep("", pairs(MAX_PER_CALL), UnixMillis(1));
        let mut now = 2;
        while s.len() < MAX_ENTRIES {
            let batch: Vec<_> = (0..MAX_PER_CALL).map(|i| (format!("more_{now}_{i}"), "c2ln".to_owned())).collect();
            s.keep("", batch, UnixMillis(now));
            now += 1;
        }
        let writes = s.keep("", vec![("newest".to_owned(), "c2ln".to_owned())], UnixMillis(now));
        assert_eq!(s.len(), MAX_ENTRIES);
        assert!(writes.iter().any(|(sql, _)| sql.starts_with("DELETE")), "the row of what made room goes too");
        assert!(s.find("", &["call_0".to_owned()], UnixMillis(now)).is_empty());
        assert_eq!(s.find("", &["newest".to_owned()], UnixMillis(now)).len(), 1);
        // Kept again, an id moves to the back and is counted once.
        s.keep("", vec![("call_1".to_owned(), "bmV3".to_owned())], UnixMillis(now));
        assert_eq!(s.find("", &["call_1".to_owned()], UnixMillis(now)), vec![("call_1".into(), "bmV3".into())]);
        assert_eq!(s.len(), MAX_ENTRIES);
    }

    #[test]
    fn what_is_no_signature_is_not_kept_and_the_stored_rows_come_back() {
        let mut s = Signatures::default();
        let odd = vec![(String::new(), "c2ln".to_owned()), ("id".to_owned(), String::new())];
        assert!(s.keep("", odd, UnixMillis(1)).is_empty());
        assert!(s.is_empty());
        let stored = vec![
            Stored { scope: "a".into(), call_id: "x".into(), signature: "c2ln".into(), expires: UnixMillis(50) },
            Stored { scope: "a".into(), call_id: "y".into(), signature: "c2ln".into(), expires: UnixMillis(5) },
        ];
        let s = Signatures::restore(stored, UnixMillis(10));
        assert_eq!(s.len(), 1);
        assert_eq!(s.find("a", &["x".to_owned()], UnixMillis(10)).len(), 1);
    }
}
