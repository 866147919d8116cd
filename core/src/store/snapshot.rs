//! Statistics snapshots and their JSON form (`GET /stat.json`). Keys appear
//! only masked, with their stable id.

use crate::wire::secret::KeyId;
use crate::wire::time::UnixMillis;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Why and since when a key is disabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisabledInfo {
    /// Google's reason, redacted.
    pub reason: String,
    /// When it was disabled.
    pub since: UnixMillis,
}

/// The state of a key for one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Usable.
    Ok,
    /// Cooling down after a per-minute limit.
    Cooling {
        /// Until when.
        until: UnixMillis,
    },
    /// Out of daily quota.
    Exhausted {
        /// Until when (the next Pacific midnight).
        until: UnixMillis,
    },
    /// The key is disabled for every model.
    Disabled,
}

/// One key × model cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelStats {
    /// The model.
    pub model: String,
    /// Requests.
    pub requests: u64,
    /// 2xx answers.
    pub successes: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Errors.
    pub errors: u64,
    /// Last use.
    pub last_used: Option<UnixMillis>,
    /// State.
    pub state: KeyState,
    /// The reason for the state (or the last error), redacted.
    pub reason: Option<String>,
    /// The tokens the 2xx answers reported.
    pub tokens: crate::wire::usage::TokenUsage,
}

/// Where a key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `API_KEYS`.
    Env,
    /// Added at run time (the admin API).
    Runtime,
    /// Both.
    Both,
}

impl KeySource {
    /// Its name in `/stat.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Env => "env",
            Self::Runtime => "runtime",
            Self::Both => "env+runtime",
        }
    }
}

/// One key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStats {
    /// Stable id.
    pub id: KeyId,
    /// Masked key.
    pub masked: String,
    /// Disabled, and why.
    pub disabled: Option<DisabledInfo>,
    /// Where it comes from.
    pub source: KeySource,
    /// Its Google project, if labelled.
    pub project: Option<String>,
    /// The admin's note.
    pub note: Option<String>,
    /// Its last check.
    pub check: Option<crate::wire::keystore::CheckInfo>,
    /// Removed by the admin (shown while it has counts of the day).
    pub removed: bool,
    /// Per-model cells, by model name.
    pub models: Vec<ModelStats>,
}

/// Everything `/stat` and `/stat.json` show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// When it was taken.
    pub now: UnixMillis,
    /// When Google's daily quotas next reset (Pacific midnight).
    pub next_quota_reset: UnixMillis,
    /// Every key, in configuration order.
    pub keys: Vec<KeyStats>,
    /// Every client key, with its use.
    pub clients: Vec<crate::store::clients::ClientView>,
    /// Calls and tokens per hour.
    pub history: crate::store::history::History,
}

fn time(t: UnixMillis) -> Value {
    Value::String(t.to_rfc3339())
}

impl Snapshot {
    /// The `/stat.json` document.
    pub fn to_json(&self) -> Value {
        let mut totals_by_model: BTreeMap<&str, [u64; 8]> = BTreeMap::new();
        let mut grand = [0u64; 8];
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| {
                let mut totals = [0u64; 8];
                let mut models = Map::new();
                for m in &k.models {
                    let t = &m.tokens;
                    let counts =
                        [m.requests, m.successes, m.rate_limited, m.errors, t.prompt, t.output, t.cached, t.thinking];
                    let by_model = totals_by_model.entry(m.model.as_str()).or_default();
                    for i in 0..8 {
                        totals[i] += counts[i];
                        grand[i] += counts[i];
                        by_model[i] += counts[i];
                    }
                    let (state, until) = match m.state {
                        KeyState::Ok => ("ok", None),
                        KeyState::Cooling { until } => ("cooling", Some(until)),
                        KeyState::Exhausted { until } => ("exhausted", Some(until)),
                        KeyState::Disabled => ("disabled", None),
                    };
                    models.insert(
                        m.model.clone(),
                        json!({
                            "requests": m.requests,
                            "successes": m.successes,
                            "rate_limited": m.rate_limited,
                            "errors": m.errors,
                            "tokens": tokens_json(&m.tokens),
                            "last_used": m.last_used.map(time),
                            "state": state,
                            "until": until.map(time),
                            "reason": m.reason,
                        }),
                    );
                }
                json!({
                    "id": k.id.as_str(),
                    "key": k.masked,
                    "source": k.source.as_str(),
                    "removed": k.removed,
                    "project": k.project,
                    "note": k.note,
                    "check": k.check.as_ref().map(|c| json!({"status": c.status, "at": time(UnixMillis(c.at)), "reason": c.reason})),
                    "disabled": k.disabled.as_ref().map(|d| json!({"reason": d.reason, "since": time(d.since)})),
                    "totals": counts_json(totals),
                    "models": models,
                })
            })
            .collect();
        let by_model: Map<String, Value> =
            totals_by_model.into_iter().map(|(model, c)| (model.to_owned(), counts_json(c))).collect();
        json!({
            "now": time(self.now),
            "next_quota_reset": time(self.next_quota_reset),
            "key_count": self.keys.len(),
            "disabled_count": self.keys.iter().filter(|k| k.disabled.is_some()).count(),
            "totals": counts_json(grand),
            "models": by_model,
            "keys": keys,
            "clients": self.clients.iter().map(crate::store::clients::ClientView::to_json).collect::<Vec<_>>(),
            "hourly": self.history.to_json(self.now),
        })
    }
}

fn counts_json(c: [u64; 8]) -> Value {
    let tokens = crate::wire::usage::TokenUsage { prompt: c[4], output: c[5], cached: c[6], thinking: c[7] };
    json!({ "requests": c[0], "successes": c[1], "rate_limited": c[2], "errors": c[3], "tokens": tokens_json(&tokens) })
}

fn tokens_json(t: &crate::wire::usage::TokenUsage) -> Value {
    json!({ "prompt": t.prompt, "output": t.output, "cached": t.cached, "thinking": t.thinking })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pool::KeyPool;
    use crate::wire::keystore::{Outcome, RateLimit, RateLimitScope};
    use crate::wire::secret::ApiKey;

    #[test]
    fn json_masks_keys_and_totals_counts() {
        let secret = "AIzaSyDUMMYdummyDUMMYdummyDUMMYdummy123";
        let mut p = KeyPool::new(vec![ApiKey::new(secret), ApiKey::new("AQ.FAKEfakeFAKEfakeFAKEfake")]);
        let now = UnixMillis(1_800_000_000_000);
        let a = p.acquire("gemini-2.5-flash", &[], now).expect("key");
        p.report(&a.id, "gemini-2.5-flash", &Outcome::Success, now);
        p.report(
            &a.id,
            "gemini-2.5-flash",
            &Outcome::RateLimited(RateLimit {
                scope: RateLimitScope::PerDay,
                retry_after_ms: None,
                reason: "Quota exceeded".into(),
            }),
            now,
        );
        let v = p.snapshot(now).to_json();
        let text = v.to_string();
        assert!(!text.contains(secret));
        assert!(!text.contains("AQ.FAKEfakeFAKEfakeFAKEfake"));
        assert_eq!(v["keys"][0]["key"], "AIza…y123");
        assert_eq!(v["keys"][0]["id"], a.id.as_str());
        let cell = &v["keys"][0]["models"]["gemini-2.5-flash"];
        assert_eq!(cell["requests"], 2);
        assert_eq!(cell["state"], "exhausted");
        assert_eq!(cell["reason"], "Quota exceeded");
        assert_eq!(v["totals"]["requests"], 2);
        assert_eq!(v["models"]["gemini-2.5-flash"]["rate_limited"], 1);
    }
}
