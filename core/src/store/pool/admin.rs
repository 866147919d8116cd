//! The admin's changes to a running pool: keys added and removed, disabled
//! and enabled, labelled with their Google project, checked.

use super::{KeyPool, Slot};
use crate::store::persist::{KeyMeta, KeyRecord};
use crate::store::snapshot::DisabledInfo;
use crate::wire::keystore::CheckInfo;
use crate::wire::keystore::Lease;
use crate::wire::secret::{ApiKey, KeyId};
use crate::wire::time::UnixMillis;

/// What adding a key did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// It is new to the pool.
    New,
    /// It was there already (from `API_KEYS` or an earlier add), and is
    /// left as it was (its project too).
    AlreadyPresent,
    /// It had been removed and is back.
    Restored,
}

/// What removing a key did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The key is in `API_KEYS` (so its removal must be remembered).
    pub was_env: bool,
}

impl KeyPool {
    fn slot_of(&self, id: &KeyId) -> Option<usize> {
        self.index.get(id).map(|&s| s as usize).filter(|&s| !self.keys[s].removed)
    }

    /// Adds a key at run time; its project label, if given.
    pub fn add(&mut self, key: ApiKey, project: Option<String>) -> Added {
        let id = key.id();
        if let Some(&slot) = self.index.get(&id) {
            let s = &mut self.keys[slot as usize];
            if !s.removed {
                return Added::AlreadyPresent;
            }
            if project.is_some() {
                s.meta.project = project.map(|p| super::clip(p.trim()));
            }
            s.removed = false;
            s.runtime = true;
            self.live += 1;
            self.requeue_everywhere(slot);
            return Added::Restored;
        }
        let slot = self.keys.len() as u32;
        let mut s = Slot::new(key, false, true);
        s.meta.key_id = id.as_str().to_owned();
        s.meta.project = project.map(|p| super::clip(p.trim()));
        self.keys.push(s);
        self.live += 1;
        self.index.insert(id, slot);
        for mp in self.models.values_mut().chain(self.probation.pools.values_mut().map(|(mp, _)| mp)) {
            mp.queued.push(false);
        }
        self.requeue_everywhere(slot);
        Added::New
    }

    /// Puts a usable slot back into every model's rotation.
    fn requeue_everywhere(&mut self, slot: u32) {
        if !self.keys[slot as usize].usable() {
            return;
        }
        for mp in self.models.values_mut().chain(self.probation.pools.values_mut().map(|(mp, _)| mp)) {
            if mp.queued.len() <= slot as usize {
                mp.queued.resize(slot as usize + 1, false);
            }
            mp.requeue(slot);
        }
    }

    /// Removes a key from the pool: it serves no new request, and its
    /// statistics (those of requests still in flight included) stay shown,
    /// marked removed, until the next daily reset.
    pub fn remove(&mut self, id: &KeyId) -> Option<Removed> {
        let slot = self.slot_of(id)?;
        let s = &mut self.keys[slot];
        s.removed = true;
        s.runtime = false;
        s.meta = KeyMeta { key_id: id.as_str().to_owned(), ..KeyMeta::default() };
        let was_env = s.env;
        self.live -= 1;
        self.clients.forget_key(id.as_str());
        Some(Removed { was_env })
    }

    /// Disables a key by hand, with the admin's note; the rows to persist.
    /// Held: a reset of the statistics leaves it disabled.
    pub fn disable(&mut self, id: &KeyId, note: &str, now: UnixMillis) -> Option<(KeyRecord, KeyMeta)> {
        let reason = if note.trim().is_empty() {
            "disabled by the admin".to_owned()
        } else {
            format!("disabled by the admin: {}", note.trim())
        };
        self.disable_because(id, &reason, now)
    }

    /// Disables a key for `reason` (the admin's, or a check that found it
    /// unusable), held; the rows to persist.
    pub fn disable_because(&mut self, id: &KeyId, reason: &str, now: UnixMillis) -> Option<(KeyRecord, KeyMeta)> {
        let slot = self.slot_of(id)?;
        let s = &mut self.keys[slot];
        s.disabled = Some(DisabledInfo { reason: super::clip(reason), since: now });
        s.meta.key_id = id.as_str().to_owned();
        s.meta.held = true;
        Some((self.key_record(slot), self.keys[slot].meta.clone()))
    }

    /// Enables a key, however it was disabled; the rows to persist.
    pub fn enable(&mut self, id: &KeyId) -> Option<(KeyRecord, KeyMeta)> {
        let slot = self.slot_of(id)?;
        let s = &mut self.keys[slot];
        s.disabled = None;
        s.meta.key_id = id.as_str().to_owned();
        s.meta.held = false;
        self.requeue_everywhere(slot as u32);
        Some((self.key_record(slot), self.keys[slot].meta.clone()))
    }

    /// Sets (or clears) a key's project label and note; the metadata row.
    pub fn label(
        &mut self,
        id: &KeyId,
        project: Option<Option<String>>,
        note: Option<Option<String>>,
    ) -> Option<KeyMeta> {
        let slot = self.slot_of(id)?;
        let meta = &mut self.keys[slot].meta;
        meta.key_id = id.as_str().to_owned();
        let tidy = |v: String| Some(super::clip(v.trim())).filter(|v| !v.is_empty());
        if let Some(p) = project {
            meta.project = p.and_then(tidy);
        }
        if let Some(n) = note {
            meta.note = n.and_then(tidy);
        }
        Some(meta.clone())
    }

    /// Records a key's check; the metadata row.
    pub fn record_check(&mut self, id: &KeyId, check: CheckInfo) -> Option<KeyMeta> {
        let slot = self.slot_of(id)?;
        let meta = &mut self.keys[slot].meta;
        meta.key_id = id.as_str().to_owned();
        meta.check = Some(check);
        Some(meta.clone())
    }

    /// The key with id `id`, for a check.
    pub fn lease_of(&self, id: &KeyId) -> Option<Lease> {
        let s = &self.keys[self.slot_of(id)?];
        Some(Lease { id: s.id.clone(), secret: s.key.clone(), client: None, pinned: false })
    }

    /// The keys to check next: those never checked first, then the longest
    /// ago; at most `n`.
    pub fn to_check(&self, n: usize) -> Vec<KeyId> {
        let mut live: Vec<&Slot> = self.keys.iter().filter(|s| !s.removed).collect();
        live.sort_by_key(|s| s.meta.check.as_ref().map(|c| c.at));
        live.into_iter().take(n).map(|s| s.id.clone()).collect()
    }

    /// Whether `id` is a key of the pool.
    pub fn contains(&self, id: &KeyId) -> bool {
        self.slot_of(id).is_some()
    }

    /// Whether the key is only in the pool because it is in `API_KEYS`.
    pub fn is_env_key(&self, id: &KeyId) -> bool {
        self.slot_of(id).is_some_and(|s| self.keys[s].env)
    }

    fn key_record(&self, slot: usize) -> KeyRecord {
        let s = &self.keys[slot];
        KeyRecord {
            key_id: s.id.as_str().to_owned(),
            disabled_reason: s.disabled.as_ref().map(|d| d.reason.clone()),
            disabled_at: s.disabled.as_ref().map(|d| d.since.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::fake_keys;
    use crate::wire::keystore::{Outcome, RateLimit, RateLimitScope, Unavailable};

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    #[test]
    fn a_key_added_serves_at_once_and_a_removed_one_never_again() {
        let mut p = KeyPool::new(fake_keys("ENV", 1));
        // A model in rotation before the key arrives.
        assert!(p.acquire("m", &[], NOW).is_ok());
        let new = ApiKey::new("AQ.runtimeKEYaddedATrunTIME0123456789");
        assert_eq!(p.add(new.clone(), Some("team-b".into())), Added::New);
        assert_eq!(p.add(new.clone(), Some("team-c".into())), Added::AlreadyPresent);
        assert_eq!(p.snapshot(NOW).keys[1].project.as_deref(), Some("team-b"), "an already-present key is left alone");
        let seen: Vec<KeyId> = (0..4).map(|_| p.acquire("m", &[], NOW).expect("a key").id).collect();
        assert!(seen.contains(&new.id()), "the added key serves the model already in rotation");
        assert!(p.acquire("other", &[], NOW).is_ok());
        assert!(p.remove(&new.id()).is_some());
        for _ in 0..4 {
            assert_ne!(p.acquire("m", &[], NOW).expect("a key").id, new.id());
        }
        assert_eq!(p.len(), 1);
        assert!(p.snapshot(NOW).keys.iter().all(|k| k.id != new.id()));
        assert_eq!(p.add(new.clone(), None), Added::Restored);
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn a_removed_keys_counts_stay_shown_until_the_daily_reset() {
        let mut p = KeyPool::new(fake_keys("GONE", 2));
        let ids: Vec<KeyId> = p.ids().cloned().collect();
        p.report(&ids[0], "m", &Outcome::Success, NOW);
        assert!(p.remove(&ids[0]).is_some());
        let shown = p.snapshot(NOW);
        let gone = shown.keys.iter().find(|k| k.id == ids[0]).expect("still shown with its counts");
        assert!(gone.removed);
        assert_eq!(gone.models[0].requests, 1);
        assert_eq!(p.len(), 1, "but no longer in the pool");
        p.daily_reset(NOW.plus(86_400_000));
        assert!(p.snapshot(NOW.plus(86_400_000)).keys.iter().all(|k| k.id != ids[0]));
        assert!(p.records().usage.iter().all(|u| u.key_id != ids[0].as_str()));
    }

    #[test]
    fn an_api_keys_key_removed_then_added_then_removed_again_stays_removed_across_restarts() {
        let env = fake_keys("ENV", 2);
        let gone = env[1].id();
        let stored = |removed: Vec<String>, runtime: Vec<ApiKey>| crate::store::persist::StoredPool {
            removed,
            runtime,
            ..crate::store::persist::StoredPool::default()
        };
        // Removed, then a restart.
        let mut p = KeyPool::restore(env.clone(), stored(vec![gone.as_str().into()], vec![]));
        assert_eq!(p.len(), 1);
        // Added again: restored (it is still an API_KEYS key), then a restart
        // with its vault row and no removal.
        assert_eq!(p.add(env[1].clone(), None), Added::Restored);
        let mut p = KeyPool::restore(env.clone(), stored(vec![], vec![env[1].clone()]));
        assert_eq!(p.len(), 2);
        // Removed again: known to come from API_KEYS, so the removal is
        // recorded again (the host writes INSERT_REMOVED for it).
        assert_eq!(p.remove(&gone), Some(Removed { was_env: true }));
        let p = KeyPool::restore(env, stored(vec![gone.as_str().into()], vec![]));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn disable_enable_and_labels() {
        let mut p = KeyPool::new(fake_keys("ENV", 2));
        let ids: Vec<KeyId> = p.ids().cloned().collect();
        let (rec, meta) = p.disable(&ids[0], "rotating it out", NOW).expect("known");
        assert!(rec.disabled_reason.is_some_and(|r| r.contains("rotating it out")) && meta.held);
        for _ in 0..3 {
            assert_eq!(p.acquire("m", &[], NOW).expect("the other").id, ids[1]);
        }
        // A reset of the statistics does not undo the admin's disabling.
        p.reset_all();
        assert!(p.snapshot(NOW).keys[0].disabled.is_some(), "held across a reset");
        assert_eq!(p.acquire("m", &[], NOW).expect("the other").id, ids[1]);
        assert!(p.enable(&ids[0]).is_some_and(|(r, m)| r.disabled_reason.is_none() && !m.held));
        let seen: Vec<KeyId> = (0..2).map(|_| p.acquire("m", &[], NOW).expect("a key").id).collect();
        assert!(seen.contains(&ids[0]));
        let meta = p.label(&ids[1], Some(Some(" proj-1 ".into())), Some(Some("mine".into()))).expect("known");
        assert_eq!((meta.project.as_deref(), meta.note.as_deref()), (Some("proj-1"), Some("mine")));
        assert!(p.label(&KeyId::from_string("k-none"), None, None).is_none());
    }

    #[test]
    fn a_429_on_one_key_cools_every_key_of_its_project() {
        let mut p = KeyPool::new(fake_keys("PROJ", 4));
        let ids: Vec<KeyId> = p.ids().cloned().collect();
        for id in &ids[..3] {
            p.label(id, Some(Some("shared".into())), None);
        }
        let rl =
            RateLimit { scope: RateLimitScope::PerMinute, retry_after_ms: Some(30_000), reason: "slow down".into() };
        let change = p.report(&ids[0], "m", &Outcome::RateLimited(rl), NOW).expect("known");
        assert_eq!(change.usage.len(), 3, "the project's three keys are marked and persisted");
        // Only the key of another project is left, for that model only.
        for _ in 0..3 {
            assert_eq!(p.acquire("m", &[], NOW).expect("the other project").id, ids[3]);
        }
        assert_eq!(p.acquire("m", std::slice::from_ref(&ids[3]), NOW), Err(Unavailable::AllTried));
        assert!(p.acquire("n", &[], NOW).is_ok());
        let s = p.snapshot(NOW);
        let reason = s.keys[1].models[0].reason.clone().expect("a reason");
        assert!(reason.starts_with("project shared:"), "{reason}");
        // The same expiry for all.
        assert!(p.acquire("m", std::slice::from_ref(&ids[3]), NOW.plus(30_000)).is_ok());
    }
}
