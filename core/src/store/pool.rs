//! The key pool: which key serves a request, and what each answer means for
//! that key. A state machine with time passed in; hosts persist its
//! records.
//!
//! Per model, usable keys sit in a ring taken round-robin, so load spreads
//! evenly; keys marked for that model (cooling or exhausted) leave the ring
//! and wait in a heap ordered by expiry, coming back the moment their mark
//! expires. Choosing a key therefore costs the same with ten keys or ten
//! thousand, however many are marked.

use crate::store::clients::ClientBook;
use crate::store::history::{Dim, History};
use crate::store::persist::{Change, KeyMeta, KeyRecord, MarkKind, Records, StoredPool, UsageRecord};
use crate::store::registry::{Asker, Conflict, Owner, Registry};
use crate::store::snapshot::{DisabledInfo, KeySource, KeyState, KeyStats, ModelStats, Snapshot};
use crate::wire::keystore::Claim;
use crate::wire::keystore::WalkFrom;
use crate::wire::keystore::{Lease, Outcome, RateLimitScope, Report, ResourceRefusal, Unavailable};
use crate::wire::resource::Resource;
use crate::wire::secret::{ApiKey, KeyId};
use crate::wire::time::{UnixMillis, next_pacific_midnight};
use crate::wire::usage::TokenUsage;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

mod admin;
pub use admin::{Added, Removed};

/// Cooling time when Google gives no `retryDelay`.
pub const DEFAULT_COOLDOWN_MS: u64 = 60_000;
/// The most distinct models tracked (kept, persisted and shown by name). A
/// name is tracked only once the upstream accepted it (a 2xx, or a quota
/// answer for it), so invented names never fill the table.
pub const MAX_MODELS: usize = 512;
/// The most names not yet accepted kept in rotation at once (the least
/// recently used goes first); their calls are counted under
/// [`UNTRACKED_MODELS`].
pub const MAX_PROBATION: usize = 64;
/// The pseudo-model under which calls for names the upstream has not
/// accepted (yet) are counted, so that none is lost and junk stays bounded.
pub const UNTRACKED_MODELS: &str = "(untracked models)";

/// The most model names Google's listings are remembered for.
pub const MAX_LISTED: usize = 2_000;
/// Longest reason kept.
const MAX_REASON: usize = 600;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Mark {
    kind: MarkKind,
    until: UnixMillis,
    reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Usage {
    requests: u64,
    successes: u64,
    rate_limited: u64,
    errors: u64,
    last_used: Option<UnixMillis>,
    mark: Option<Mark>,
    last_error: Option<String>,
    tokens: TokenUsage,
}

impl Usage {
    fn active_mark(&self, now: UnixMillis) -> Option<&Mark> {
        self.mark.as_ref().filter(|m| m.until > now)
    }
}

#[derive(Clone, Debug)]
struct Slot {
    id: KeyId,
    key: ApiKey,
    disabled: Option<DisabledInfo>,
    /// In `API_KEYS`.
    env: bool,
    /// Added at run time (stored sealed).
    runtime: bool,
    /// Removed by the admin: out of every ring and view, its index kept.
    removed: bool,
    meta: KeyMeta,
}

impl Slot {
    fn new(key: ApiKey, env: bool, runtime: bool) -> Self {
        Self { id: key.id(), key, disabled: None, env, runtime, removed: false, meta: KeyMeta::default() }
    }

    /// Whether the slot can serve at all (models may still mark it).
    fn usable(&self) -> bool {
        self.disabled.is_none() && !self.removed
    }
}

#[derive(Clone, Debug)]
struct ModelPool {
    ring: VecDeque<u32>,
    queued: Vec<bool>,
    expiries: BinaryHeap<Reverse<(UnixMillis, u32)>>,
    usage: HashMap<u32, Usage>,
}

impl ModelPool {
    fn new(keys: &[Slot]) -> Self {
        let ring: VecDeque<u32> = (0..keys.len() as u32).filter(|i| keys[*i as usize].usable()).collect();
        let mut queued = vec![false; keys.len()];
        for i in &ring {
            queued[*i as usize] = true;
        }
        Self { ring, queued, expiries: BinaryHeap::new(), usage: HashMap::new() }
    }

    fn requeue(&mut self, slot: u32) {
        if !self.queued[slot as usize] {
            self.queued[slot as usize] = true;
            self.ring.push_back(slot);
        }
    }

    /// Brings keys whose marks expired by `now` back into the ring.
    fn release_expired(&mut self, now: UnixMillis, keys: &[Slot]) {
        while let Some(Reverse((until, slot))) = self.expiries.peek().copied() {
            if until > now {
                break;
            }
            self.expiries.pop();
            let Some(usage) = self.usage.get_mut(&slot) else { continue };
            // A stale entry: the mark was renewed or cleared since.
            if usage.mark.as_ref().is_none_or(|m| m.until != until) {
                continue;
            }
            usage.mark = None;
            if keys[slot as usize].usable() {
                self.requeue(slot);
            }
        }
    }
}

/// The rotation state of names the upstream has not accepted yet, least
/// recently used evicted first.
#[derive(Clone, Debug, Default)]
struct Probation {
    pools: HashMap<String, (ModelPool, u64)>,
    tick: u64,
}

impl Probation {
    fn pool(&mut self, keys: &[Slot], model: &str) -> &mut ModelPool {
        self.tick += 1;
        if !self.pools.contains_key(model)
            && self.pools.len() >= MAX_PROBATION
            && let Some(oldest) = self.pools.iter().min_by_key(|(_, (_, t))| *t).map(|(m, _)| m.clone())
        {
            self.pools.remove(&oldest);
        }
        let entry = self.pools.entry(model.to_owned()).or_insert_with(|| (ModelPool::new(keys), 0));
        entry.1 = self.tick;
        &mut entry.0
    }
}

/// The pool of upstream keys and their per-model state.
#[derive(Clone, Debug)]
pub struct KeyPool {
    keys: Vec<Slot>,
    /// How many of `keys` are not removed, kept by [`Self::restore`], `add`
    /// and `remove`, so that no acquire counts them.
    live: usize,
    index: HashMap<KeyId, u32>,
    models: BTreeMap<String, ModelPool>,
    probation: Probation,
    clients: ClientBook,
    history: History,
    /// Which key owns each resource it knows of.
    affinity: Registry,
    /// The admin's model aliases (client model → Gemini model), consulted
    /// before the configured ones.
    aliases: Vec<(String, String)>,
    /// The thought signatures of relayed tool calls.
    signatures: crate::store::signatures::Signatures,
    /// The models Google's own listings named: tracked from their first
    /// call, even one that failed (an outage), never only once accepted.
    listed: std::collections::HashSet<String>,
    /// The last requests, for the admin to look up.
    requests: crate::store::requests::RequestLog,
    /// The outbound proxy each project's calls leave through (host-runner).
    proxies: BTreeMap<String, crate::wire::proxy::ProxyUrl>,
}

/// Whether an outcome shows the upstream knows the model.
fn accepted(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Success | Outcome::RateLimited(_) | Outcome::BrokenStream { .. })
}

fn clip(reason: &str) -> String {
    if reason.len() <= MAX_REASON {
        return reason.to_owned();
    }
    let mut end = MAX_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

impl KeyPool {
    /// A fresh pool of `keys` (duplicates by id are dropped).
    pub fn new(keys: Vec<ApiKey>) -> Self {
        Self::restore(keys, StoredPool::default())
    }

    /// Rebuilds a pool from configuration (`env`, the keys of `API_KEYS`)
    /// and what was stored: the keys added at run time (already opened),
    /// less the keys the admin removed, then every key's metadata,
    /// disabling, statistics and marks. Records of keys no longer in the
    /// pool are ignored (the host deletes them).
    pub fn restore(env: Vec<ApiKey>, stored: StoredPool) -> Self {
        let StoredPool {
            keys: key_records,
            usage,
            meta,
            runtime,
            removed,
            clients,
            client_usage,
            client_key_usage,
            hourly,
            affinity,
            aliases,
            signatures,
            listed,
            proxies,
            requests_last,
        } = stored;
        let removed: std::collections::HashSet<String> = removed.into_iter().collect();
        let mut slots: Vec<Slot> = Vec::with_capacity(env.len() + runtime.len());
        let mut index = HashMap::with_capacity(env.len() + runtime.len());
        let all = env.into_iter().map(|k| (k, true)).chain(runtime.into_iter().map(|k| (k, false)));
        for (key, is_env) in all {
            let id = key.id();
            if let Some(&slot) = index.get(&id) {
                let s: &mut Slot = &mut slots[slot as usize];
                s.env |= is_env;
                s.runtime |= !is_env;
                // Added at run time after its removal: back in the pool.
                s.removed &= is_env;
                continue;
            }
            index.insert(id.clone(), slots.len() as u32);
            let mut slot = Slot::new(key, is_env, !is_env);
            // A removed `API_KEYS` key keeps its slot, removed, so that it is
            // still known to come from `API_KEYS` (a later add restores it,
            // and removing it again is remembered again).
            slot.removed = is_env && removed.contains(id.as_str());
            slots.push(slot);
        }
        for m in meta {
            if let Some(&slot) = index.get(&KeyId::from_string(&m.key_id)) {
                slots[slot as usize].meta = m;
            }
        }
        for rec in key_records {
            if let (Some(&slot), Some(reason)) = (index.get(&KeyId::from_string(&rec.key_id)), rec.disabled_reason) {
                slots[slot as usize].disabled =
                    Some(DisabledInfo { reason, since: UnixMillis(rec.disabled_at.unwrap_or(0)) });
            }
        }
        let clients = ClientBook::restore(clients, client_usage, client_key_usage);
        let mut pool = Self {
            live: slots.iter().filter(|s| !s.removed).count(),
            keys: slots,
            index,
            models: BTreeMap::new(),
            probation: Probation::default(),
            clients,
            history: History::restore(hourly),
            // Expired entries are skipped on lookup, and dropped when the
            // registry is full.
            affinity: Registry::restore(affinity, UnixMillis(0)),
            aliases,
            // Expired ones are never found, and go as new ones come.
            signatures: crate::store::signatures::Signatures::restore(signatures, UnixMillis(0)),
            listed: listed.into_iter().collect(),
            requests: crate::store::requests::RequestLog::resume(crate::store::requests::DEFAULT_SIZE, requests_last),
            proxies: proxies.into_iter().collect(),
        };
        // Models the upstream never accepted (rows of an older version, which
        // tracked every name asked for) fold into the untracked bucket, as do
        // the least used beyond the cap.
        let mut accepted_calls: HashMap<&str, u64> = HashMap::new();
        for rec in &usage {
            if rec.successes + rec.rate_limited > 0 || rec.mark_kind.is_some() {
                *accepted_calls.entry(rec.model.as_str()).or_default() += rec.requests.max(1);
            }
        }
        let mut ranked: Vec<(&str, u64)> = accepted_calls.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let kept: std::collections::HashSet<String> =
            ranked.into_iter().take(MAX_MODELS).map(|(m, _)| m.to_owned()).collect();
        for mut rec in usage {
            let Some(&slot) = pool.index.get(&KeyId::from_string(&rec.key_id)) else { continue };
            if !kept.contains(&rec.model) && rec.model != UNTRACKED_MODELS {
                let mp = untracked_pool(&mut pool.models, &pool.keys);
                let u = mp.usage.entry(slot).or_default();
                u.requests += rec.requests;
                u.successes += rec.successes;
                u.errors += rec.errors;
                u.tokens.add(&rec.tokens);
                u.last_used = u.last_used.max(rec.last_used.map(UnixMillis));
                u.last_error = rec.last_error.take().or(u.last_error.take());
                continue;
            }
            let mp = if rec.model == UNTRACKED_MODELS {
                untracked_pool(&mut pool.models, &pool.keys)
            } else {
                pool.models.entry(rec.model.clone()).or_insert_with(|| ModelPool::new(&pool.keys))
            };
            let mark = match (rec.mark_kind, rec.mark_until) {
                (Some(kind), Some(until)) => {
                    mp.expiries.push(Reverse((UnixMillis(until), slot)));
                    Some(Mark { kind, until: UnixMillis(until), reason: rec.mark_reason.unwrap_or_default() })
                }
                _ => None,
            };
            mp.usage.insert(
                slot,
                Usage {
                    requests: rec.requests,
                    successes: rec.successes,
                    rate_limited: rec.rate_limited,
                    errors: rec.errors,
                    last_used: rec.last_used.map(UnixMillis),
                    mark,
                    last_error: rec.last_error,
                    tokens: rec.tokens,
                },
            );
        }
        pool
    }

    /// How many keys the pool holds.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of every key, in configuration order (then those added at
    /// run time).
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().filter(|s| !s.removed).map(|s| &s.id)
    }

    /// At most `count` keys that are not disabled, in the order of their
    /// ids, from `from` on: the keys a merged listing walks
    /// ([`crate::exchange::listing`]). Rate-limit marks do not matter: they are a
    /// model's, and a listing names none.
    pub fn walk(&self, from: &WalkFrom, count: usize) -> Vec<Lease> {
        let mut keys: Vec<&Slot> = self
            .keys
            .iter()
            .filter(|s| s.usable())
            .filter(|s| match from {
                WalkFrom::First => true,
                WalkFrom::At(id) => s.id >= *id,
                WalkFrom::After(id) => s.id > *id,
            })
            .collect();
        keys.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let lease = |s: &Slot| Lease { id: s.id.clone(), secret: s.key.clone(), client: None, pinned: false };
        keys.into_iter().take(count).map(lease).collect()
    }

    /// Chooses a key for `model`, skipping the ones this request already
    /// tried. Round-robin among keys neither disabled nor marked for the
    /// model; deterministic for a given state.
    pub fn acquire(&mut self, model: &str, exclude: &[KeyId], now: UnixMillis) -> Result<Lease, Unavailable> {
        if self.is_empty() {
            return Err(Unavailable::NoUsableKey { why: "no keys are configured (API_KEYS, or the admin API)".into() });
        }
        let keys = &self.keys;
        let mp = match self.models.get_mut(model) {
            Some(mp) => mp,
            None => self.probation.pool(keys, model),
        };
        mp.release_expired(now, keys);
        let mut tried_usable = false;
        for _ in 0..mp.ring.len() {
            let Some(slot) = mp.ring.pop_front() else { break };
            let entry = &keys[slot as usize];
            let marked = mp.usage.get(&slot).is_some_and(|u| u.active_mark(now).is_some());
            if !entry.usable() || marked {
                mp.queued[slot as usize] = false;
                continue;
            }
            mp.ring.push_back(slot);
            if exclude.contains(&entry.id) {
                tried_usable = true;
                continue;
            }
            return Ok(Lease { id: entry.id.clone(), secret: entry.key.clone(), client: None, pinned: false });
        }
        if tried_usable {
            return Err(Unavailable::AllTried);
        }
        let limited = mp
            .usage
            .iter()
            .filter(|(slot, _)| keys[**slot as usize].usable())
            .filter_map(|(_, u)| u.active_mark(now).map(|m| m.until));
        let (count, soonest) = limited
            .fold((0usize, None::<UnixMillis>), |(n, s), until| (n + 1, Some(s.map_or(until, |s| s.min(until)))));
        match soonest {
            Some(until) => Err(Unavailable::AllLimited { until, retry_after_ms: now.until(until), keys: count }),
            None => Err(Unavailable::NoUsableKey {
                why: format!("all {} keys are disabled (invalid or suspended); see /stat", self.len()),
            }),
        }
    }

    /// Applies the outcome of using key `id` for `model`. Returns what
    /// changed, or `None` for a key no longer in the pool.
    ///
    /// A model not yet tracked becomes tracked when the upstream accepts it
    /// (while there is room); until then its calls count under
    /// [`UNTRACKED_MODELS`] and a quota mark, which would have tracked it,
    /// cannot arise.
    pub fn report(&mut self, id: &KeyId, model: &str, outcome: &Outcome, now: UnixMillis) -> Option<Change> {
        self.report_usage(id, model, outcome, None, now)
    }

    /// Admits a request of `claim` (none: the proxy key's) for `model`
    /// ([`ClientBook::admit`]), then chooses its key ([`Self::acquire`]);
    /// the lease names the client.
    pub fn acquire_for(
        &mut self,
        claim: Option<&Claim>,
        model: &str,
        resources: &[Resource],
        exclude: &[KeyId],
        now: UnixMillis,
    ) -> Result<Lease, Unavailable> {
        // A chunk of an upload the registry knows, without a credential:
        // its upload id is its authority ([`crate::request::admit`]), and it counts
        // against the client that started the upload (so does a Live
        // session opened with an ephemeral token the proxy minted).
        let upload = claim.filter(|c| c.hashes.is_empty()).and_then(|_| self.upload_of(resources, now));
        let client = match (claim, upload) {
            (Some(_), Some(upload)) => upload.client.clone(),
            (Some(claim), None) => {
                self.clients.admit(claim, model, now).map_err(|refusal| Unavailable::Refused { refusal })?
            }
            (None, _) => None,
        };
        // A client names only what it made; anything else is answered as
        // missing, and nothing is sent.
        if let Some(c) = client.as_deref()
            && let Some(r) = resources.iter().find(|r| !self.affinity.may_see(r, Asker::Client(c), now))
        {
            return Err(Unavailable::Resource { refusal: ResourceRefusal::NotFound { resource: r.name().to_owned() } });
        }
        let lease = self.acquire_naming(model, resources, exclude, now)?;
        Ok(Lease { client, ..lease })
    }

    /// Who `claim` is before it asks for anything (a Live session's
    /// upgrade, refused before it happens when no one): a client, the
    /// caller of an open proxy, or the holder of an ephemeral token the
    /// registry knows (`resources`).
    pub fn identify(
        &self,
        claim: &Claim,
        resources: &[Resource],
        now: UnixMillis,
    ) -> Result<Option<String>, crate::wire::keystore::Refusal> {
        if claim.hashes.is_empty()
            && let Some(owner) = self.upload_of(resources, now)
        {
            return Ok(owner.client.clone());
        }
        self.clients.identify(claim)
    }

    /// The registry's entry of the upload in progress `resources` name, or
    /// of the ephemeral token a constrained Live session presents: each is
    /// the authority of a request that carries no credential.
    fn upload_of(&self, resources: &[Resource], now: UnixMillis) -> Option<&Owner> {
        use crate::wire::resource::Kind;
        let upload = resources.iter().find(|r| matches!(r.kind(), Kind::Upload | Kind::AuthToken))?;
        self.affinity.entry(upload, now)
    }

    /// The names of client `client`'s resources that start with `prefix`
    /// (its files, `files/`), for a listing it makes of them.
    pub fn names_of(&self, client: &str, prefix: &str, now: UnixMillis) -> Vec<String> {
        self.affinity.names_of(client, prefix, now)
    }

    /// Chooses the key for a request that names `resources`: the key that
    /// owns those the registry knows, and no other ([`ResourceRefusal`]
    /// when it cannot serve); any key ([`Self::acquire`]) when it knows
    /// none of them.
    pub fn acquire_naming(
        &mut self,
        model: &str,
        resources: &[Resource],
        exclude: &[KeyId],
        now: UnixMillis,
    ) -> Result<Lease, Unavailable> {
        let refused = |refusal| Err(Unavailable::Resource { refusal });
        let owner = match self.affinity.owner_of_all(resources, now) {
            Ok(None) => return self.acquire(model, exclude, now),
            Ok(Some(owner)) => KeyId::from_string(owner),
            Err(Conflict { first, second }) => return refused(ResourceRefusal::Conflict { first, second }),
        };
        let resource = resources
            .iter()
            .find(|r| self.affinity.owner(r, now).is_some())
            .map(|r| r.name().to_owned())
            .unwrap_or_default();
        let gone = |why: &str| refused(ResourceRefusal::OwnerGone { resource: resource.clone(), why: why.to_owned() });
        let Some(&slot) = self.index.get(&owner) else { return gone("its key is no longer in the pool") };
        let entry = &self.keys[slot as usize];
        if entry.removed {
            return gone("its key was removed from the pool");
        }
        // Not the reason: it may be an admin's note.
        if entry.disabled.is_some() {
            return gone("its key is disabled");
        }
        let lease = Lease { id: entry.id.clone(), secret: entry.key.clone(), client: None, pinned: true };
        // A mark first: an owner this request found rate-limited is
        // reported so, with when it frees up.
        if let Some(mp) = self.models.get_mut(model) {
            mp.release_expired(now, &self.keys);
            if let Some(until) = mp.usage.get(&slot).and_then(|u| u.active_mark(now)).map(|m| m.until) {
                let retry_after_ms = now.until(until);
                return refused(ResourceRefusal::OwnerLimited { resource, until, retry_after_ms });
            }
        }
        if exclude.contains(&lease.id) {
            return Err(Unavailable::AllTried);
        }
        Ok(lease)
    }

    /// Remembers the owners `r` names, and nothing else of it (no call is
    /// counted): the registry rows to persist ([`AdminOp::Own`]).
    ///
    /// [`AdminOp::Own`]: crate::wire::keystore::AdminOp::Own
    pub fn remember_owners(&mut self, r: &Report, now: UnixMillis) -> Vec<(String, Option<Owner>)> {
        self.record_owners(r, now)
    }

    /// Remembers what a report found of the resources' owners; the
    /// registry rows to persist (`None`: delete).
    fn record_owners(&mut self, r: &Report, now: UnixMillis) -> Vec<(String, Option<Owner>)> {
        let mut rows = Vec::new();
        for owned in &r.owned {
            let Some(resource) = Resource::parse(&owned.name).or_else(|| Resource::stored(&owned.name)) else {
                continue;
            };
            // A listing's new names are the proxy's; what an answer made is
            // its client's.
            let made_by = if r.listed { None } else { r.client.as_deref() };
            if let Some(owner) = self.affinity.remember(&resource, r.key.as_str(), owned.expires, made_by, now) {
                rows.push((resource.name().to_owned(), Some(owner)));
            }
        }
        for name in &r.deleted {
            if let Some(resource) = Resource::parse(name).or_else(|| Resource::stored(name))
                && self.affinity.forget(&resource)
            {
                rows.push((resource.name().to_owned(), None));
            }
        }
        rows
    }

    /// Applies one attempt's report, its token usage included, and counts
    /// a client's request on its last attempt.
    pub fn apply(&mut self, r: &Report, now: UnixMillis) -> Option<Change> {
        // The resources first: the one whose finished work the usage is
        // must be known to be counted once.
        let mut affinity = self.record_owners(r, now);
        let once = r.usage.and(r.usage_of.as_deref()).and_then(|n| Resource::parse(n).or_else(|| Resource::stored(n)));
        let usage = match once {
            Some(resource) => match self.affinity.count_once(&resource, now) {
                Some(owner) => {
                    affinity.retain(|(name, _)| name != resource.name());
                    affinity.push((resource.name().to_owned(), Some(owner)));
                    r.usage.as_ref()
                }
                None => None,
            },
            None => r.usage.as_ref(),
        };
        let mut change = self.report_usage(&r.key, &r.model, &r.outcome, usage, now);
        let model = if self.models.contains_key(&r.model) { r.model.as_str() } else { UNTRACKED_MODELS };
        let mut names = vec![(Dim::Model, model), (Dim::Key, r.key.as_str())];
        if let Some(client) = &r.client {
            if let Some(rows) = self.clients.record(client, r.key.as_str(), model, usage, now) {
                let change = change.get_or_insert_with(Change::default);
                change.client = Some(rows.usage);
                change.client_key = Some(rows.by_key);
            }
            names.push((Dim::Client, client));
        }
        let mut change = change.unwrap_or_default();
        change.hourly = self.history.record(now, &names, usage);
        change.affinity = affinity;
        Some(change)
    }

    /// The projects' outbound proxies.
    pub fn proxies(&self) -> &BTreeMap<String, crate::wire::proxy::ProxyUrl> {
        &self.proxies
    }

    /// Sets (or, with `None`, clears) the outbound proxy of `project`'s
    /// keys.
    pub fn set_proxy(&mut self, project: String, proxy: Option<crate::wire::proxy::ProxyUrl>) {
        match proxy {
            Some(p) => self.proxies.insert(project, p),
            None => self.proxies.remove(&project),
        };
    }

    /// The outbound proxy the calls of key `id` leave through: its
    /// project's, if the admin set one.
    pub fn proxy_for(&self, id: &KeyId) -> Option<&crate::wire::proxy::ProxyUrl> {
        if self.proxies.is_empty() {
            return None;
        }
        let slot = &self.keys[*self.index.get(id)? as usize];
        self.proxies.get(slot.meta.project.as_deref()?)
    }

    /// The projects the keys name, each with how many keys it has.
    pub fn projects(&self) -> BTreeMap<&str, usize> {
        let mut projects = BTreeMap::new();
        for s in self.keys.iter().filter(|s| !s.removed) {
            if let Some(p) = s.meta.project.as_deref() {
                *projects.entry(p).or_insert(0) += 1;
            }
        }
        projects
    }

    /// The admin's model aliases, in the order they are consulted.
    pub fn aliases(&self) -> &[(String, String)] {
        &self.aliases
    }

    /// Notes the models a listing of Google's named (`models/` left off);
    /// returns the whole set, sorted, when it grew (to persist), else
    /// `None`. At most [`MAX_LISTED`] are kept.
    pub fn list_models(&mut self, names: Vec<String>) -> Option<Vec<String>> {
        let before = self.listed.len();
        for name in names {
            if self.listed.len() >= MAX_LISTED {
                break;
            }
            if !name.is_empty() && name.len() <= 200 {
                self.listed.insert(name);
            }
        }
        (self.listed.len() > before).then(|| {
            let mut all: Vec<String> = self.listed.iter().cloned().collect();
            all.sort();
            all
        })
    }

    /// How many model names Google's listings named.
    pub fn listed_count(&self) -> usize {
        self.listed.len()
    }

    /// The request log.
    pub fn requests(&self) -> &crate::store::requests::RequestLog {
        &self.requests
    }

    /// The request log, to resize or read back.
    pub fn requests_mut(&mut self) -> &mut crate::store::requests::RequestLog {
        &mut self.requests
    }

    /// Reads the request log's stored rows back, if it has not yet (a host
    /// does before the log is looked at).
    pub fn load_requests<S: crate::store::persist::Storage>(&mut self, storage: &S) -> Result<(), S::Error> {
        if self.requests.needs_loading() {
            let rows = storage.rows(&crate::store::requests::select_newest(self.requests.size()))?;
            self.requests.load(&rows)?;
        }
        Ok(())
    }

    /// Logs a request's summary (its client's name filled in): the
    /// statements that store it.
    pub fn log_request(&mut self, mut summary: crate::wire::summary::Summary) -> Vec<crate::store::sql::Statement> {
        if let Some(id) = &summary.client {
            summary.client_name = self.clients.name_of(id);
        }
        self.requests.push(summary)
    }

    /// The thought signatures of relayed tool calls.
    pub fn signatures(&self) -> &crate::store::signatures::Signatures {
        &self.signatures
    }

    /// The thought signatures of relayed tool calls, to keep more.
    pub fn signatures_mut(&mut self) -> &mut crate::store::signatures::Signatures {
        &mut self.signatures
    }

    /// Replaces the admin's model aliases.
    pub fn set_aliases(&mut self, entries: Vec<(String, String)>) {
        self.aliases = entries;
    }

    /// The clients of the pool.
    pub fn clients(&self) -> &ClientBook {
        &self.clients
    }

    /// The clients of the pool, to change.
    pub fn clients_mut(&mut self) -> &mut ClientBook {
        &mut self.clients
    }

    fn report_usage(
        &mut self,
        id: &KeyId,
        model: &str,
        outcome: &Outcome,
        tokens: Option<&TokenUsage>,
        now: UnixMillis,
    ) -> Option<Change> {
        let slot = *self.index.get(id)?;
        let mut rows = Vec::new();
        let known = accepted(outcome) || self.listed.contains(model);
        let tracked = self.models.contains_key(model) || (known && self.promote(model, &mut rows));
        if !tracked && let Some((mp, _)) = self.probation.pools.get_mut(model) {
            // What this name's calls added to the bucket, to move to the name
            // should the upstream accept it later.
            count(mp.usage.entry(slot).or_default(), outcome, tokens, now);
        }
        let model = if tracked { model } else { UNTRACKED_MODELS };
        let mp = match self.models.get_mut(model) {
            Some(mp) => mp,
            None => untracked_pool(&mut self.models, &self.keys),
        };
        let usage = mp.usage.entry(slot).or_default();
        let disable = count(usage, outcome, tokens, now);
        let mut mark = None;
        if let Outcome::RateLimited(rl) = outcome {
            let (kind, until) = match rl.scope {
                RateLimitScope::PerDay => (MarkKind::Exhausted, next_pacific_midnight(now)),
                RateLimitScope::PerMinute | RateLimitScope::Unknown => {
                    (MarkKind::Cooling, now.plus(rl.retry_after_ms.unwrap_or(DEFAULT_COOLDOWN_MS).max(1)))
                }
            };
            usage.mark = Some(Mark { kind, until, reason: clip(&rl.reason) });
            mp.expiries.push(Reverse((until, slot)));
            mark = Some((kind, until, &rl.reason));
        }
        rows.push(usage_record(&self.keys[slot as usize].id, model, usage));
        // Google's quotas are per project: every key of this one's project is
        // marked alike, so that the next attempt goes to another project.
        if let (Some((kind, until, why)), Some(project)) = (mark, self.keys[slot as usize].meta.project.as_deref()) {
            let reason = clip(&format!("project {project}: {why}"));
            for (i, other) in self.keys.iter().enumerate() {
                let i = i as u32;
                if i == slot || other.removed || other.meta.project.as_deref() != Some(project) {
                    continue;
                }
                let u = mp.usage.entry(i).or_default();
                if u.active_mark(now).is_none_or(|m| m.until < until) {
                    u.mark = Some(Mark { kind, until, reason: reason.clone() });
                    mp.expiries.push(Reverse((until, i)));
                    rows.push(usage_record(&other.id, model, u));
                }
            }
        }
        let key = disable.map(|d| {
            let rec = KeyRecord {
                key_id: id.as_str().to_owned(),
                disabled_reason: Some(d.reason.clone()),
                disabled_at: Some(d.since.0),
            };
            self.keys[slot as usize].disabled = Some(d);
            rec
        });
        Some(Change { key, usage: rows, ..Change::default() })
    }

    /// Moves `model` from probation into the tracked models, if there is
    /// room.
    /// `model`'s calls counted so far under [`UNTRACKED_MODELS`] move to
    /// it; the rows that changed are added to `rows`.
    fn promote(&mut self, model: &str, rows: &mut Vec<UsageRecord>) -> bool {
        let real = self.models.len() - usize::from(self.models.contains_key(UNTRACKED_MODELS));
        if real >= MAX_MODELS {
            return false;
        }
        let mp = match self.probation.pools.remove(model) {
            Some((mp, _)) => mp,
            None => ModelPool::new(&self.keys),
        };
        if let Some(bucket) = self.models.get_mut(UNTRACKED_MODELS) {
            for (slot, tally) in &mp.usage {
                if let Some(b) = bucket.usage.get_mut(slot) {
                    b.requests = b.requests.saturating_sub(tally.requests);
                    b.errors = b.errors.saturating_sub(tally.errors);
                    b.tokens.sub(&tally.tokens);
                    rows.push(usage_record(&self.keys[*slot as usize].id, UNTRACKED_MODELS, b));
                }
                rows.push(usage_record(&self.keys[*slot as usize].id, model, tally));
            }
        }
        self.models.insert(model.to_owned(), mp);
        true
    }

    /// The daily job: clears the day's counters and the marks that have
    /// expired by `now`. Disabled keys stay disabled.
    pub fn daily_reset(&mut self, now: UnixMillis) {
        self.affinity.prune(now);
        let keys = &self.keys;
        for mp in self.models.values_mut() {
            mp.release_expired(now, keys);
            // A removed key's counts were kept for the day they were made.
            mp.usage.retain(|slot, u| {
                if keys[*slot as usize].removed {
                    return false;
                }
                u.requests = 0;
                u.successes = 0;
                u.rate_limited = 0;
                u.errors = 0;
                u.last_error = None;
                u.tokens = TokenUsage::default();
                u.active_mark(now).is_some()
            });
        }
        // Tracked names stay tracked (the table only grows with names the
        // upstream accepted); names on probation start over.
        self.probation = Probation::default();
    }

    /// Clears every mark and counter, and re-enables disabled keys (an
    /// operator's "try everything again").
    /// A key the admin or a check disabled stays disabled (it is held: only
    /// an enable undoes it), so that whoever may reset the statistics cannot
    /// undo the admin's decisions.
    pub fn reset_all(&mut self) {
        for slot in self.keys.iter_mut().filter(|s| !s.meta.held) {
            slot.disabled = None;
        }
        // Removed keys stay removed; every model's rotation starts over.
        self.models.clear();
        self.probation = Probation::default();
        // The clients' counts stay: their quotas are not the pool's marks,
        // and whoever may reset (on an open proxy, anyone) must not be able
        // to wipe a client's count.
    }

    /// Every persisted record, for a full rewrite.
    pub fn records(&self) -> Records {
        let keys = self
            .keys
            .iter()
            .map(|s| KeyRecord {
                key_id: s.id.as_str().to_owned(),
                disabled_reason: s.disabled.as_ref().map(|d| d.reason.clone()),
                disabled_at: s.disabled.as_ref().map(|d| d.since.0),
            })
            .collect();
        let mut usage = Vec::new();
        for (model, mp) in &self.models {
            let mut slots: Vec<_> = mp.usage.iter().collect();
            slots.sort_by_key(|(slot, _)| **slot);
            for (slot, u) in slots {
                usage.push(usage_record(&self.keys[*slot as usize].id, model, u));
            }
        }
        Records { keys, usage }
    }

    /// The statistics at `now`, keys only masked.
    pub fn snapshot(&self, now: UnixMillis) -> Snapshot {
        let mut keys: Vec<KeyStats> = self
            .keys
            .iter()
            .map(|s| KeyStats {
                id: s.id.clone(),
                masked: s.key.masked(),
                disabled: s.disabled.clone(),
                source: match (s.env, s.runtime) {
                    (true, true) => KeySource::Both,
                    (true, false) => KeySource::Env,
                    (false, _) => KeySource::Runtime,
                },
                project: s.meta.project.clone(),
                note: s.meta.note.clone(),
                check: s.meta.check.clone(),
                removed: s.removed,
                models: Vec::new(),
            })
            .collect();
        for (model, mp) in &self.models {
            // A bucket cell whose calls all moved to their model is not shown.
            for (slot, u) in mp.usage.iter().filter(|(_, u)| u.requests > 0 || u.active_mark(now).is_some()) {
                let ks = &mut keys[*slot as usize];
                let (state, reason) = match (&ks.disabled, u.active_mark(now)) {
                    (Some(d), _) => (KeyState::Disabled, Some(d.reason.clone())),
                    (None, Some(m)) if m.kind == MarkKind::Exhausted => {
                        (KeyState::Exhausted { until: m.until }, Some(m.reason.clone()))
                    }
                    (None, Some(m)) => (KeyState::Cooling { until: m.until }, Some(m.reason.clone())),
                    (None, None) => (KeyState::Ok, u.last_error.clone()),
                };
                ks.models.push(ModelStats {
                    model: model.clone(),
                    requests: u.requests,
                    successes: u.successes,
                    rate_limited: u.rate_limited,
                    errors: u.errors,
                    last_used: u.last_used,
                    state,
                    reason,
                    tokens: u.tokens,
                });
            }
        }
        // A removed key stays shown while it has counts (until the daily reset).
        let keys = keys.into_iter().filter(|k| !k.removed || !k.models.is_empty()).collect();
        Snapshot {
            now,
            next_quota_reset: next_pacific_midnight(now),
            keys,
            clients: self.clients.views(now),
            history: self.history.clone(),
        }
    }
}

/// Counts one call in `usage`; returns the key's disabling, if the outcome
/// disables it.
fn count(usage: &mut Usage, outcome: &Outcome, tokens: Option<&TokenUsage>, now: UnixMillis) -> Option<DisabledInfo> {
    usage.requests += 1;
    usage.last_used = Some(now);
    if let Some(t) = tokens {
        usage.tokens.add(t);
    }
    match outcome {
        Outcome::Success => usage.successes += 1,
        Outcome::ClientError { .. } => {}
        Outcome::RateLimited(_) => usage.rate_limited += 1,
        Outcome::KeyRejected { reason } => {
            usage.errors += 1;
            usage.last_error = Some(clip(reason));
            return Some(DisabledInfo { reason: clip(reason), since: now });
        }
        Outcome::UpstreamError { reason, .. }
        | Outcome::TransportError { reason }
        | Outcome::BrokenStream { reason } => {
            usage.errors += 1;
            usage.last_error = Some(clip(reason));
        }
    }
    None
}

/// The bucket of [`UNTRACKED_MODELS`], which always has its place (beyond
/// [`MAX_MODELS`]).
fn untracked_pool<'a>(models: &'a mut BTreeMap<String, ModelPool>, keys: &[Slot]) -> &'a mut ModelPool {
    models.entry(UNTRACKED_MODELS.to_owned()).or_insert_with(|| ModelPool::new(keys))
}

fn usage_record(id: &KeyId, model: &str, u: &Usage) -> UsageRecord {
    UsageRecord {
        key_id: id.as_str().to_owned(),
        model: model.to_owned(),
        requests: u.requests,
        successes: u.successes,
        rate_limited: u.rate_limited,
        errors: u.errors,
        last_used: u.last_used.map(|t| t.0),
        mark_kind: u.mark.as_ref().map(|m| m.kind),
        mark_until: u.mark.as_ref().map(|m| m.until.0),
        mark_reason: u.mark.as_ref().map(|m| m.reason.clone()),
        last_error: u.last_error.clone(),
        tokens: u.tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::keystore::RateLimit;
    use crate::wire::time::{DAY_MS, HOUR_MS, days_from_civil};

    fn keys(n: usize) -> Vec<ApiKey> {
        crate::test_support::fake_keys("FAKE", n)
    }
    fn t(h: u64) -> UnixMillis {
        // 2026-11-27 (winter: Pacific midnight is 08:00 UTC).
        UnixMillis(days_from_civil(2026, 11, 27) as u64 * DAY_MS + h * HOUR_MS)
    }
    fn per_day() -> Outcome {
        Outcome::RateLimited(RateLimit { scope: RateLimitScope::PerDay, retry_after_ms: None, reason: "daily".into() })
    }
    fn per_minute(ms: Option<u64>) -> Outcome {
        Outcome::RateLimited(RateLimit {
            scope: RateLimitScope::PerMinute,
            retry_after_ms: ms,
            reason: "minute".into(),
        })
    }

    #[test]
    fn round_robin_is_fair_and_deterministic() {
        let mut p = KeyPool::new(keys(3));
        let order: Vec<KeyId> = (0..6).map(|_| p.acquire("m", &[], t(0)).expect("key").id).collect();
        assert_eq!(order[..3], order[3..]);
        assert_ne!(order[0], order[1]);
        assert_ne!(order[1], order[2]);
        let mut q = KeyPool::new(keys(3));
        let again: Vec<KeyId> = (0..6).map(|_| q.acquire("m", &[], t(0)).expect("key").id).collect();
        assert_eq!(order, again);
    }

    #[test]
    fn excluded_keys_are_never_reused() {
        let mut p = KeyPool::new(keys(2));
        let a = p.acquire("m", &[], t(0)).expect("a").id;
        let b = p.acquire("m", std::slice::from_ref(&a), t(0)).expect("b").id;
        assert_ne!(a, b);
        assert_eq!(p.acquire("m", &[a, b], t(0)), Err(Unavailable::AllTried));
    }

    #[test]
    fn per_day_exhausts_until_pacific_midnight_for_that_model_only() {
        let mut p = KeyPool::new(keys(1));
        let a = p.acquire("m", &[], t(1)).expect("a").id;
        p.report(&a, "m", &per_day(), t(1));
        // Winter: exhausted until 08:00 UTC, not 07:00.
        assert_eq!(
            p.acquire("m", &[], t(7)),
            Err(Unavailable::AllLimited { until: t(8), retry_after_ms: HOUR_MS, keys: 1 })
        );
        assert!(p.acquire("other", &[], t(7)).is_ok());
        // Free the moment the mark expires.
        assert_eq!(p.acquire("m", &[], t(8)).expect("free").id, a);
    }

    #[test]
    fn per_minute_cools_for_retry_delay_or_sixty_seconds() {
        let mut p = KeyPool::new(keys(1));
        let a = p.acquire("m", &[], t(0)).expect("a").id;
        p.report(&a, "m", &per_minute(Some(5_000)), t(0));
        assert_eq!(
            p.acquire("m", &[], t(0).plus(4_999)),
            Err(Unavailable::AllLimited { until: t(0).plus(5_000), retry_after_ms: 1, keys: 1 })
        );
        assert!(p.acquire("m", &[], t(0).plus(5_000)).is_ok());
        p.report(&a, "m", &per_minute(None), t(1));
        assert!(p.acquire("m", &[], t(1).plus(59_999)).is_err());
        assert!(p.acquire("m", &[], t(1).plus(60_000)).is_ok());
    }

    #[test]
    fn renewed_marks_are_not_released_by_stale_expiries() {
        let mut p = KeyPool::new(keys(1));
        let a = p.acquire("m", &[], t(0)).expect("a").id;
        p.report(&a, "m", &per_minute(Some(1_000)), t(0));
        p.report(&a, "m", &per_day(), t(0));
        assert!(p.acquire("m", &[], t(0).plus(2_000)).is_err());
    }

    #[test]
    fn rejected_keys_are_disabled_everywhere_and_skipped() {
        let mut p = KeyPool::new(keys(2));
        let a = p.acquire("m", &[], t(0)).expect("a").id;
        let change =
            p.report(&a, "m", &Outcome::KeyRejected { reason: "API key not valid".into() }, t(0)).expect("known");
        assert!(change.key.is_some_and(|k| k.disabled_reason.is_some()));
        for model in ["m", "n"] {
            for _ in 0..3 {
                assert_ne!(p.acquire(model, &[], t(0)).expect("b").id, a);
            }
        }
        let b = p.acquire("m", &[], t(0)).expect("b").id;
        p.report(&b, "m", &Outcome::KeyRejected { reason: "suspended".into() }, t(0));
        assert!(matches!(p.acquire("m", &[], t(0)), Err(Unavailable::NoUsableKey { .. })));
    }

    #[test]
    fn server_errors_count_but_never_disable() {
        let mut p = KeyPool::new(keys(1));
        let a = p.acquire("m", &[], t(0)).expect("a").id;
        for _ in 0..10 {
            p.report(&a, "m", &Outcome::UpstreamError { status: 503, reason: "overloaded".into() }, t(0));
        }
        p.report(&a, "m", &Outcome::TransportError { reason: "reset".into() }, t(0));
        assert!(p.acquire("m", &[], t(0)).is_ok());
        let s = p.snapshot(t(0));
        assert_eq!(s.keys[0].models[0].errors, 11);
        assert_eq!(s.keys[0].models[0].state, KeyState::Ok);
    }

    #[test]
    fn a_listed_model_is_counted_under_its_name_from_a_first_failure() {
        let mut p = KeyPool::new(keys(1));
        let a = p.acquire("gemini-9-pro", &[], t(0)).expect("a").id;
        let outage = Outcome::UpstreamError { status: 503, reason: "overloaded".into() };
        p.report(&a, "gemini-9-pro", &outage, t(0));
        assert_eq!(p.snapshot(t(0)).keys[0].models[0].model, UNTRACKED_MODELS, "an unknown name waits");
        let grown = p.list_models(vec!["gemini-9-pro".into(), "gemini-9-flash".into()]).expect("the set grew");
        assert_eq!(grown, ["gemini-9-flash", "gemini-9-pro"]);
        assert!(p.list_models(vec!["gemini-9-pro".into()]).is_none(), "nothing new, nothing to write");
        p.report(&a, "gemini-9-flash", &outage, t(0));
        let s = p.snapshot(t(0));
        let flash = s.keys[0].models.iter().find(|m| m.model == "gemini-9-flash").expect("counted under its name");
        assert_eq!((flash.requests, flash.errors), (1, 1));
    }

    #[test]
    fn daily_reset_clears_counters_and_expired_marks_only() {
        let mut p = KeyPool::new(keys(3));
        let ids: Vec<KeyId> = p.ids().cloned().collect();
        p.report(&ids[0], "m", &Outcome::Success, t(1));
        p.report(&ids[1], "m", &per_day(), t(1)); // until 08:00
        p.report(&ids[2], "m", &Outcome::KeyRejected { reason: "bad".into() }, t(1));
        // 07:00 UTC in winter: the per-day mark has not expired yet.
        p.daily_reset(t(7));
        let s = p.snapshot(t(7));
        assert!(s.keys[0].models.is_empty());
        assert_eq!(s.keys[1].models[0].state, KeyState::Exhausted { until: t(8) });
        assert_eq!(s.keys[1].models[0].requests, 0);
        assert!(s.keys[2].disabled.is_some());
        p.daily_reset(t(8));
        assert!(p.snapshot(t(8)).keys[1].models.is_empty());
        assert!(p.snapshot(t(8)).keys[2].disabled.is_some());
    }

    #[test]
    fn reset_all_clears_everything() {
        let mut p = KeyPool::new(keys(2));
        let ids: Vec<KeyId> = p.ids().cloned().collect();
        p.report(&ids[0], "m", &per_day(), t(1));
        p.report(&ids[1], "m", &Outcome::KeyRejected { reason: "bad".into() }, t(1));
        p.reset_all();
        let s = p.snapshot(t(1));
        assert!(s.keys.iter().all(|k| k.disabled.is_none() && k.models.is_empty()));
        assert!(p.acquire("m", &[], t(1)).is_ok());
    }

    #[test]
    fn records_round_trip_and_reconcile() {
        let mut p = KeyPool::new(keys(3));
        let ids: Vec<KeyId> = p.ids().cloned().collect();
        p.report(&ids[0], "m", &Outcome::Success, t(1));
        p.report(&ids[1], "m", &per_day(), t(1));
        p.report(&ids[2], "m", &Outcome::KeyRejected { reason: "bad".into() }, t(1));
        let Records { keys: k, usage: u, .. } = p.records();
        // Key 0 is dropped from the configuration, a new key 3 joins.
        let mut new_keys = keys(4);
        new_keys.remove(0);
        let mut q = KeyPool::restore(new_keys, StoredPool { keys: k, usage: u, ..StoredPool::default() });
        let s = q.snapshot(t(2));
        assert_eq!(s.keys.len(), 3);
        assert_eq!(s.keys[0].id, ids[1]);
        assert_eq!(s.keys[0].models[0].state, KeyState::Exhausted { until: t(8) });
        assert!(s.keys[1].disabled.is_some());
        // Only the new key serves "m".
        let served = q.acquire("m", &[], t(2)).expect("new key").id;
        assert_eq!(served, s.keys[2].id);
        assert!(q.acquire("m", &[served], t(2)).is_err());
        assert!(q.report(&ids[0], "m", &Outcome::Success, t(2)).is_none());
    }

    #[test]
    fn invented_model_names_never_take_a_real_models_slot() {
        let mut p = KeyPool::new(keys(2));
        let not_found = Outcome::ClientError { status: 404 };
        // Far more invented names than there is room for, each answered 404.
        for i in 0..(MAX_MODELS + 100) {
            let name = format!("made-up-{i}");
            let lease = p.acquire(&name, &[], t(0)).expect("an invented name is still served");
            p.report(&lease.id, &name, &not_found, t(0));
        }
        let s = p.snapshot(t(0));
        let names: std::collections::BTreeSet<&str> =
            s.keys.iter().flat_map(|k| k.models.iter().map(|m| m.model.as_str())).collect();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), [UNTRACKED_MODELS]);
        let untracked: u64 = s.keys.iter().flat_map(|k| &k.models).map(|m| m.requests).sum();
        assert_eq!(untracked, MAX_MODELS as u64 + 100, "every call counted");
        assert!(p.probation.pools.len() <= MAX_PROBATION);
        // A real model still gets its place once the upstream accepts it.
        let lease = p.acquire("gemini-2.5-flash-lite", &[], t(0)).expect("a real model");
        p.report(&lease.id, "gemini-2.5-flash-lite", &Outcome::Success, t(0));
        let s = p.snapshot(t(0));
        assert!(s.keys.iter().any(|k| k.models.iter().any(|m| m.model == "gemini-2.5-flash-lite" && m.successes == 1)));
        // A quota answer tracks a model too, and marks its key.
        let lease = p.acquire("gemini-2.5-pro", &[], t(0)).expect("a key");
        p.report(&lease.id, "gemini-2.5-pro", &per_day(), t(0));
        assert!(p.acquire("gemini-2.5-pro", std::slice::from_ref(&lease.id), t(0)).is_ok());
        assert!(p.models.contains_key("gemini-2.5-pro"));
    }

    #[test]
    fn a_models_calls_before_its_first_acceptance_move_to_it() {
        let mut p = KeyPool::new(keys(2));
        let lease = p.acquire("gemini-3-new", &[], t(0)).expect("a key");
        p.report(&lease.id, "gemini-3-new", &Outcome::UpstreamError { status: 503, reason: "busy".into() }, t(0));
        let other = p.acquire("gemini-3-new", std::slice::from_ref(&lease.id), t(0)).expect("another key");
        let change = p.report(&other.id, "gemini-3-new", &Outcome::Success, t(0)).expect("known");
        let s = p.snapshot(t(0));
        let cells: Vec<(&str, u64, u64)> =
            s.keys.iter().flat_map(|k| k.models.iter().map(|m| (m.model.as_str(), m.requests, m.errors))).collect();
        assert!(cells.contains(&("gemini-3-new", 1, 1)), "{cells:?}");
        assert!(cells.iter().all(|c| c.0 != UNTRACKED_MODELS), "an emptied bucket cell shown: {cells:?}");
        assert!(
            change.usage.iter().any(|r| r.model == UNTRACKED_MODELS && r.requests == 0),
            "the bucket row is persisted"
        );
        assert_eq!(change.usage.iter().filter(|r| r.model == "gemini-3-new").count(), 2);
    }

    #[test]
    fn rows_of_names_never_accepted_fold_into_the_untracked_bucket_on_restore() {
        let mut p = KeyPool::new(keys(1));
        let id = p.ids().next().cloned().expect("a key");
        p.report(&id, "gemini-2.5-flash", &Outcome::Success, t(0));
        let Records { keys: k, usage: mut u, .. } = p.records();
        // Rows an older version wrote for names the upstream answered 404.
        for i in 0..600 {
            let mut row = u[0].clone();
            row.model = format!("junk-{i}");
            row.successes = 0;
            row.requests = 1;
            row.errors = 0;
            u.push(row);
        }
        let q = KeyPool::restore(keys(1), StoredPool { keys: k, usage: u, ..StoredPool::default() });
        assert_eq!(q.models.len(), 2, "{:?}", q.models.keys().collect::<Vec<_>>());
        let s = q.snapshot(t(0));
        let bucket = s.keys[0].models.iter().find(|m| m.model == UNTRACKED_MODELS).expect("bucket");
        assert_eq!(bucket.requests, 600);
    }

    #[test]
    fn large_pools_stay_cheap_with_many_marked() {
        let mut p = KeyPool::new(keys(10_000));
        let now = t(0);
        // Exhaust 90% of keys, as consecutive picks.
        for _ in 0..9_000 {
            let l = p.acquire("m", &[], now).expect("key");
            p.report(&l.id, "m", &per_day(), now);
        }
        // Each further acquire must not walk the exhausted keys again: the
        // ring now holds only the usable ones.
        for _ in 0..5_000 {
            p.acquire("m", &[], now).expect("usable key");
        }
        assert_eq!(p.models["m"].ring.len(), 1_000);
    }
}
