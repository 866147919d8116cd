//! Which key owns which resource: the registry the key store keeps, bounded
//! in size, each entry kept until the expiry Google gives (files live 48
//! hours), with the client that made it, and its rows.

use crate::store::sql::Columns;
use crate::store::sql::RowError;
use crate::store::sql::SqlValue;
use crate::store::sql::Statement;
use crate::store::sql::int;
use crate::wire::resource::Resource;
use crate::wire::time::UnixMillis;
use std::collections::HashMap;
/// Who owns a resource, and until when it is remembered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The owning key's id.
    pub key: String,
    /// When the entry expires.
    pub expires: UnixMillis,
    /// The client that made it (none: the proxy key's, an open proxy's,
    /// or one the proxy only saw listed, or registered before clients were
    /// told apart). A client sees its own resources only; the proxy key and
    /// the admin see every one.
    pub client: Option<String>,
    /// Whether the tokens of its finished work (a batch's, an
    /// interaction's) were counted: they are counted once, however often it
    /// is read.
    pub counted: bool,
}

/// The most resources the registry remembers; past it, the entries that
/// expire soonest go first, the proxy's own before any client's.
pub const MAX_ENTRIES: usize = 100_000;

/// The most resources the registry remembers of one client; past it, that
/// client's entries that expire soonest go first (never another's).
pub const MAX_PER_CLIENT: usize = 10_000;

/// Creates the registry's table when missing.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS affinity (
    name TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    expires INTEGER NOT NULL,
    client TEXT,
    counted INTEGER NOT NULL DEFAULT 0
);
";

/// Adds the columns a table made before them lacks: `client` (its rows are
/// the proxy key's) and `counted`. Where a column exists its statement
/// fails with [`is_duplicate_column`]'s message, which a host ignores.
pub const ADD_COLUMNS: [&str; 2] = [
    "ALTER TABLE affinity ADD COLUMN client TEXT",
    "ALTER TABLE affinity ADD COLUMN counted INTEGER NOT NULL DEFAULT 0",
];

/// Whether a failure of an [`ADD_COLUMNS`] statement only says the column
/// exists.
pub fn is_duplicate_column(message: &str) -> bool {
    message.contains("duplicate column")
}

/// Reads every entry: `name, key_id, expires, client, counted`.
pub const SELECT: &str = "SELECT name, key_id, expires, client, counted FROM affinity";

/// Writes an entry.
pub const UPSERT: &str = "INSERT INTO affinity (name, key_id, expires, client, counted) VALUES (?1, ?2, ?3, ?4, ?5) \
     ON CONFLICT(name) DO UPDATE SET key_id = excluded.key_id, expires = excluded.expires, \
     client = excluded.client, counted = excluded.counted";

/// The statement that writes `owner` of the resource `name`, or forgets
/// it (`None`).
pub fn row_statement(name: &str, owner: Option<&Owner>) -> Statement {
    match owner {
        Some(o) => (
            UPSERT,
            vec![
                SqlValue::Text(name.to_owned()),
                SqlValue::Text(o.key.clone()),
                int(o.expires.0),
                o.client.clone().map_or(SqlValue::Null, SqlValue::Text),
                int(u64::from(o.counted)),
            ],
        ),
        None => ("DELETE FROM affinity WHERE name = ?1", vec![SqlValue::Text(name.to_owned())]),
    }
}

/// The statement that drops the entries expired at `now`.
pub fn prune_statement(now: UnixMillis) -> Statement {
    ("DELETE FROM affinity WHERE expires <= ?1", vec![int(now.0)])
}

/// An entry of a row read with [`SELECT`].
pub fn from_row(row: &[SqlValue]) -> Result<(Resource, Owner), RowError> {
    let mut c = Columns::new("affinity", row);
    let name = c.text()?;
    let r = Resource::stored(&name).ok_or_else(|| c.err(format!("not a resource name: {name:?}")))?;
    let (key, expires, client, counted) = (c.text()?, UnixMillis(c.int()?), c.opt_text()?, c.int()? != 0);
    Ok((r, Owner { key, expires, client, counted }))
}

/// What the registry knows of the keys' resources, and which client made
/// each.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    entries: HashMap<String, Owner>,
    /// How many entries each client has.
    per_client: HashMap<String, usize>,
}

/// Why the resources of a request have no single owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// Two of them, with different owners.
    pub first: String,
    /// The other.
    pub second: String,
}

/// Who is asking for a resource: the proxy key's (or the admin's, or an open
/// proxy's) caller sees every one; a client, only its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asker<'a> {
    /// Sees every resource.
    Anyone,
    /// This client, which sees only what it made.
    Client(&'a str),
}

impl Registry {
    /// The registry of stored entries, less those expired at `now`.
    pub fn restore(entries: Vec<(Resource, Owner)>, now: UnixMillis) -> Self {
        let mut reg = Self::default();
        for (r, owner) in entries.into_iter().filter(|(_, o)| o.expires > now) {
            reg.insert(r.name, owner, now);
        }
        reg
    }

    /// Remembers that `key` owns `r` until `expires` (or its kind's
    /// default). A resource new to the registry is `made_by`'s (none: the
    /// proxy's); a known one keeps the client it has. Returns the entry to
    /// persist, or `None` when nothing changed (a listing that sees what
    /// is known writes nothing).
    pub fn remember(
        &mut self,
        r: &Resource,
        key: &str,
        expires: Option<UnixMillis>,
        made_by: Option<&str>,
        now: UnixMillis,
    ) -> Option<Owner> {
        let known = self.entries.get(&r.name).filter(|o| o.expires > now);
        // An answer that gives no expiry (a use of the resource) renews
        // the kind's default, once half of it has run out.
        let ttl = r.kind.default_ttl_ms();
        let renewed = UnixMillis(now.0.saturating_add(ttl));
        let expires = match (expires, known.filter(|o| o.key == key)) {
            (Some(e), _) => e,
            (None, Some(o)) if o.expires.0 >= now.0.saturating_add(ttl / 2) => o.expires,
            (None, _) => renewed,
        };
        let (client, counted) = match known {
            Some(o) => (o.client.clone(), o.counted),
            None => (made_by.map(str::to_owned), false),
        };
        let owner = Owner { key: key.to_owned(), expires, client, counted };
        if known == Some(&owner) {
            return None;
        }
        self.insert(r.name.clone(), owner.clone(), now);
        Some(owner)
    }

    fn insert(&mut self, name: String, owner: Owner, now: UnixMillis) {
        if let Some(old) = self.entries.remove(&name) {
            self.uncount(old.client.as_deref());
        }
        if let Some(client) = &owner.client
            && self.per_client.get(client).copied().unwrap_or(0) >= MAX_PER_CLIENT
        {
            self.evict_client(client, now);
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.evict(now);
        }
        if let Some(client) = &owner.client {
            *self.per_client.entry(client.clone()).or_default() += 1;
        }
        self.entries.insert(name, owner);
    }

    fn uncount(&mut self, client: Option<&str>) {
        if let Some(client) = client
            && let Some(n) = self.per_client.get_mut(client)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_client.remove(client);
            }
        }
    }

    /// Marks the tokens of `r`'s finished work counted: its entry to
    /// persist when this is the first time (count them then), `None` when
    /// they were counted before or `r` is unknown.
    pub fn count_once(&mut self, r: &Resource, now: UnixMillis) -> Option<Owner> {
        let entry = self.entries.get_mut(&r.name).filter(|o| o.expires > now && !o.counted)?;
        entry.counted = true;
        Some(entry.clone())
    }

    /// The key that owns `r`, unless unknown or expired.
    pub fn owner(&self, r: &Resource, now: UnixMillis) -> Option<&str> {
        self.entry(r, now).map(|o| o.key.as_str())
    }

    /// What the registry holds of `r`, unless unknown or expired.
    pub fn entry(&self, r: &Resource, now: UnixMillis) -> Option<&Owner> {
        self.entries.get(&r.name).filter(|o| o.expires > now)
    }

    /// Whether `asker` may name `r`: anyone who sees every resource, and a
    /// client only what it made (a resource the registry does not know is
    /// no client's).
    pub fn may_see(&self, r: &Resource, asker: Asker<'_>, now: UnixMillis) -> bool {
        match asker {
            Asker::Anyone => true,
            Asker::Client(c) => self.entry(r, now).is_some_and(|o| o.client.as_deref() == Some(c)),
        }
    }

    /// The names of client `client`'s resources whose names start with
    /// `prefix` (`files/`), at most [`MAX_PER_CLIENT`].
    pub fn names_of(&self, client: &str, prefix: &str, now: UnixMillis) -> Vec<String> {
        let mine = self
            .entries
            .iter()
            .filter(|(name, o)| o.expires > now && o.client.as_deref() == Some(client) && name.starts_with(prefix));
        mine.map(|(name, _)| name.clone()).take(MAX_PER_CLIENT).collect()
    }

    /// The one key that owns every known resource of `rs` (`None`: none of
    /// them is known), or the two that disagree.
    pub fn owner_of_all(&self, rs: &[Resource], now: UnixMillis) -> Result<Option<&str>, Conflict> {
        let mut found: Option<(&str, &Resource)> = None;
        for r in rs {
            let Some(key) = self.owner(r, now) else { continue };
            match found {
                Some((k, first)) if k != key => {
                    return Err(Conflict { first: first.name.clone(), second: r.name.clone() });
                }
                Some(_) => {}
                None => found = Some((key, r)),
            }
        }
        Ok(found.map(|(k, _)| k))
    }

    /// Forgets `r` (deleted); whether it was known.
    pub fn forget(&mut self, r: &Resource) -> bool {
        match self.entries.remove(&r.name) {
            Some(old) => {
                self.uncount(old.client.as_deref());
                true
            }
            None => false,
        }
    }

    /// Drops the entries expired at `now` (the table's rows go with
    /// [`prune_statement`]).
    pub fn prune(&mut self, now: UnixMillis) {
        self.retain(|o| o.expires > now);
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn retain(&mut self, keep: impl Fn(&Owner) -> bool) {
        self.entries.retain(|_, o| keep(o));
        self.per_client.clear();
        for client in self.entries.values().filter_map(|o| o.client.clone()) {
            *self.per_client.entry(client).or_default() += 1;
        }
    }

    /// Drops the expired entries, then, if still full, the tenth that
    /// expires soonest of the proxy's own (a listing's), and only then of
    /// the clients'.
    fn evict(&mut self, now: UnixMillis) {
        self.retain(|o| o.expires > now);
        if self.entries.len() < MAX_ENTRIES {
            return;
        }
        let tenth_of_all = MAX_ENTRIES / 10;
        let proxys: Vec<u64> = self.entries.values().filter(|o| o.client.is_none()).map(|o| o.expires.0).collect();
        if proxys.len() >= tenth_of_all {
            let cut = nth(proxys, tenth_of_all);
            self.retain(|o| o.client.is_some() || o.expires.0 > cut);
        } else {
            let cut = nth(self.entries.values().map(|o| o.expires.0).collect(), tenth_of_all);
            self.retain(|o| o.expires.0 > cut);
        }
    }

    /// Makes room for one more of `client`'s entries: its expired ones go,
    /// then the tenth of its own that expire soonest.
    fn evict_client(&mut self, client: &str, now: UnixMillis) {
        let mine = |o: &Owner| o.client.as_deref() == Some(client);
        self.retain(|o| !mine(o) || o.expires > now);
        if self.per_client.get(client).copied().unwrap_or(0) < MAX_PER_CLIENT {
            return;
        }
        let cut = nth(self.entries.values().filter(|o| mine(o)).map(|o| o.expires.0).collect(), MAX_PER_CLIENT / 10);
        self.retain(|o| !mine(o) || o.expires.0 > cut);
    }
}

/// The `n`th smallest of `expiries` (0-based, the last when there are
/// fewer): the entries that expire at it or sooner go.
fn nth(mut expiries: Vec<u64>, n: usize) -> u64 {
    if expiries.is_empty() {
        return 0;
    }
    let n = n.min(expiries.len() - 1);
    let (_, cut, _) = expiries.select_nth_unstable(n);
    *cut
}
