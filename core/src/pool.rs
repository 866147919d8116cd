//! The key pool: which key serves a request, and what each answer means for
//! that key. A state machine with time passed in; hosts persist its
//! records.
//!
//! Per model, usable keys sit in a ring taken round-robin, so load spreads
//! evenly; keys marked for that model (cooling or exhausted) leave the ring
//! and wait in a heap ordered by expiry, coming back the moment their mark
//! expires. Choosing a key therefore costs the same with ten keys or ten
//! thousand, however many are marked.

use crate::outcome::{Lease, Outcome, RateLimitScope, Unavailable};
use crate::persist::{Change, KeyRecord, MarkKind, UsageRecord};
use crate::secret::{ApiKey, KeyId};
use crate::stats::{DisabledInfo, KeyState, KeyStats, ModelStats, Snapshot};
use crate::time::{UnixMillis, next_pacific_midnight};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

/// Cooling time when Google gives no `retryDelay`.
pub const DEFAULT_COOLDOWN_MS: u64 = 60_000;
/// The most distinct models tracked; more would let a caller grow memory
/// without bound by inventing model names.
pub const MAX_MODELS: usize = 512;
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
        let ring: VecDeque<u32> = (0..keys.len() as u32).filter(|i| keys[*i as usize].disabled.is_none()).collect();
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
            if keys[slot as usize].disabled.is_none() {
                self.requeue(slot);
            }
        }
    }
}

/// The pool of upstream keys and their per-model state.
#[derive(Clone, Debug)]
pub struct KeyPool {
    keys: Vec<Slot>,
    index: HashMap<KeyId, u32>,
    models: BTreeMap<String, ModelPool>,
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
        Self::restore(keys, Vec::new(), Vec::new())
    }

    /// Rebuilds a pool from configuration and persisted records. Records of
    /// keys no longer configured are ignored (the host deletes them); keys
    /// that stay keep their statistics and marks.
    pub fn restore(keys: Vec<ApiKey>, key_records: Vec<KeyRecord>, usage: Vec<UsageRecord>) -> Self {
        let mut slots: Vec<Slot> = Vec::with_capacity(keys.len());
        let mut index = HashMap::with_capacity(keys.len());
        for key in keys {
            let id = key.id();
            if index.contains_key(&id) {
                continue;
            }
            index.insert(id.clone(), slots.len() as u32);
            slots.push(Slot { id, key, disabled: None });
        }
        for rec in key_records {
            if let (Some(&slot), Some(reason)) = (index.get(&KeyId::from_string(&rec.key_id)), rec.disabled_reason) {
                slots[slot as usize].disabled =
                    Some(DisabledInfo { reason, since: UnixMillis(rec.disabled_at.unwrap_or(0)) });
            }
        }
        let mut pool = Self { keys: slots, index, models: BTreeMap::new() };
        for rec in usage {
            let Some(&slot) = pool.index.get(&KeyId::from_string(&rec.key_id)) else { continue };
            let Some(mp) = model_pool(&mut pool.models, &pool.keys, &rec.model) else { continue };
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
                },
            );
        }
        pool
    }

    /// How many keys the pool holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ids of every key, in configuration order.
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.iter().map(|s| &s.id)
    }

    /// Chooses a key for `model`, skipping the ones this request already
    /// tried. Round-robin among keys neither disabled nor marked for the
    /// model; deterministic for a given state.
    pub fn acquire(&mut self, model: &str, exclude: &[KeyId], now: UnixMillis) -> Result<Lease, Unavailable> {
        if self.keys.is_empty() {
            return Err(Unavailable::NoUsableKey { why: "no keys are configured (API_KEYS)".into() });
        }
        let keys = &self.keys;
        let Some(mp) = model_pool(&mut self.models, keys, model) else {
            return Err(Unavailable::NoUsableKey {
                why: format!("the proxy already tracks {MAX_MODELS} distinct models; check the model name"),
            });
        };
        mp.release_expired(now, keys);
        let mut tried_usable = false;
        for _ in 0..mp.ring.len() {
            let Some(slot) = mp.ring.pop_front() else { break };
            let entry = &keys[slot as usize];
            let marked = mp.usage.get(&slot).is_some_and(|u| u.active_mark(now).is_some());
            if entry.disabled.is_some() || marked {
                mp.queued[slot as usize] = false;
                continue;
            }
            mp.ring.push_back(slot);
            if exclude.contains(&entry.id) {
                tried_usable = true;
                continue;
            }
            return Ok(Lease { id: entry.id.clone(), secret: entry.key.clone() });
        }
        if tried_usable {
            return Err(Unavailable::AllTried);
        }
        let limited = mp
            .usage
            .iter()
            .filter(|(slot, _)| keys[**slot as usize].disabled.is_none())
            .filter_map(|(_, u)| u.active_mark(now).map(|m| m.until));
        let (count, soonest) = limited
            .fold((0usize, None::<UnixMillis>), |(n, s), until| (n + 1, Some(s.map_or(until, |s| s.min(until)))));
        match soonest {
            Some(until) => Err(Unavailable::AllLimited { until, retry_after_ms: now.until(until), keys: count }),
            None => Err(Unavailable::NoUsableKey {
                why: format!("all {} keys are disabled (invalid or suspended); see /stat", self.keys.len()),
            }),
        }
    }

    /// Applies the outcome of using key `id` for `model`. Returns what
    /// changed, or `None` for a key no longer in the pool.
    pub fn report(&mut self, id: &KeyId, model: &str, outcome: &Outcome, now: UnixMillis) -> Option<Change> {
        let slot = *self.index.get(id)?;
        let mp = model_pool(&mut self.models, &self.keys, model)?;
        let usage = mp.usage.entry(slot).or_default();
        usage.requests += 1;
        usage.last_used = Some(now);
        let mut disable = None;
        match outcome {
            Outcome::Success => usage.successes += 1,
            Outcome::ClientError { .. } => {}
            Outcome::RateLimited(rl) => {
                usage.rate_limited += 1;
                let (kind, until) = match rl.scope {
                    RateLimitScope::PerDay => (MarkKind::Exhausted, next_pacific_midnight(now)),
                    RateLimitScope::PerMinute | RateLimitScope::Unknown => {
                        (MarkKind::Cooling, now.plus(rl.retry_after_ms.unwrap_or(DEFAULT_COOLDOWN_MS).max(1)))
                    }
                };
                usage.mark = Some(Mark { kind, until, reason: clip(&rl.reason) });
                mp.expiries.push(Reverse((until, slot)));
            }
            Outcome::KeyRejected { reason } => {
                usage.errors += 1;
                usage.last_error = Some(clip(reason));
                disable = Some(DisabledInfo { reason: clip(reason), since: now });
            }
            Outcome::UpstreamError { reason, .. } | Outcome::TransportError { reason } => {
                usage.errors += 1;
                usage.last_error = Some(clip(reason));
            }
        }
        let usage_record = usage_record(&self.keys[slot as usize].id, model, usage);
        let key = disable.map(|d| {
            let rec = KeyRecord {
                key_id: id.as_str().to_owned(),
                disabled_reason: Some(d.reason.clone()),
                disabled_at: Some(d.since.0),
            };
            self.keys[slot as usize].disabled = Some(d);
            rec
        });
        Some(Change { key, usage: usage_record })
    }

    /// The daily job: clears the day's counters and the marks that have
    /// expired by `now`. Disabled keys stay disabled.
    pub fn daily_reset(&mut self, now: UnixMillis) {
        let keys = &self.keys;
        for mp in self.models.values_mut() {
            mp.release_expired(now, keys);
            mp.usage.retain(|_, u| {
                u.requests = 0;
                u.successes = 0;
                u.rate_limited = 0;
                u.errors = 0;
                u.last_error = None;
                u.active_mark(now).is_some()
            });
        }
        self.models.retain(|_, mp| !mp.usage.is_empty());
    }

    /// Clears every mark and counter, and re-enables disabled keys (an
    /// operator's "try everything again").
    pub fn reset_all(&mut self) {
        for slot in &mut self.keys {
            slot.disabled = None;
        }
        self.models.clear();
    }

    /// Every persisted record, for a full rewrite.
    pub fn records(&self) -> (Vec<KeyRecord>, Vec<UsageRecord>) {
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
        (keys, usage)
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
                models: Vec::new(),
            })
            .collect();
        for (model, mp) in &self.models {
            for (slot, u) in &mp.usage {
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
                });
            }
        }
        Snapshot { now, next_quota_reset: next_pacific_midnight(now), keys }
    }
}

/// The state of `model`, created on first use; `None` once [`MAX_MODELS`]
/// distinct models are tracked. A model already tracked costs no allocation.
fn model_pool<'a>(
    models: &'a mut BTreeMap<String, ModelPool>,
    keys: &[Slot],
    model: &str,
) -> Option<&'a mut ModelPool> {
    if !models.contains_key(model) {
        if models.len() >= MAX_MODELS {
            return None;
        }
        models.insert(model.to_owned(), ModelPool::new(keys));
    }
    models.get_mut(model)
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::RateLimit;
    use crate::time::{DAY_MS, HOUR_MS, days_from_civil};

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
        let (k, u) = p.records();
        // Key 0 is dropped from the configuration, a new key 3 joins.
        let mut new_keys = keys(4);
        new_keys.remove(0);
        let mut q = KeyPool::restore(new_keys, k, u);
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
    fn model_count_is_bounded() {
        let mut p = KeyPool::new(keys(1));
        for i in 0..MAX_MODELS {
            assert!(p.acquire(&format!("m{i}"), &[], t(0)).is_ok());
        }
        assert!(matches!(p.acquire("one-too-many", &[], t(0)), Err(Unavailable::NoUsableKey { .. })));
        assert!(p.acquire("m0", &[], t(0)).is_ok());
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
