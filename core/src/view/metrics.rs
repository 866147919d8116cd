//! `GET /metrics`: a statistics snapshot in the Prometheus text exposition
//! format (version 0.0.4). Keys appear by their stable id (and, in
//! `gemini_proxy_key_info`, masked), never whole.
//!
//! The per key × model counters are the day's, as on `/stat`: they start
//! over at the daily reset and on `POST /stat/reset`, which Prometheus reads
//! as a counter reset.

use crate::store::snapshot::{KeyState, ModelStats, Snapshot};
use std::fmt::Write as _;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Appends `value` as a label value: backslash, double quote and line feed
/// escaped, as the format asks.
fn label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// One sample; `labels` are (name, value) pairs.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            label(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The snapshot in the text format.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(256 + s.keys.len() * 512);
    type Count = fn(&ModelStats) -> u64;
    let counters: [(&str, &str, Count); 4] = [
        ("gemini_proxy_requests_total", "Upstream calls today, per key and model.", |m| m.requests),
        ("gemini_proxy_successes_total", "Upstream calls answered 2xx today, per key and model.", |m| m.successes),
        ("gemini_proxy_rate_limited_total", "Upstream calls answered 429 today, per key and model.", |m| {
            m.rate_limited
        }),
        (
            "gemini_proxy_errors_total",
            "Upstream calls that failed otherwise today (5xx, transport, broken streams), per key and model.",
            |m| m.errors,
        ),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, "counter", help);
        for k in &s.keys {
            for m in &k.models {
                sample(&mut out, name, &[("key_id", k.id.as_str()), ("model", &m.model)], value(m));
            }
        }
    }

    family(
        &mut out,
        "gemini_proxy_tokens_total",
        "counter",
        "Tokens the 2xx answers reported today (usageMetadata, usage), per key, model and kind.",
    );
    for k in &s.keys {
        for m in &k.models {
            let t = &m.tokens;
            for (kind, n) in
                [("prompt", t.prompt), ("output", t.output), ("cached", t.cached), ("thinking", t.thinking)]
            {
                let labels = [("key_id", k.id.as_str()), ("model", m.model.as_str()), ("kind", kind)];
                sample(&mut out, "gemini_proxy_tokens_total", &labels, n);
            }
        }
    }

    family(&mut out, "gemini_proxy_client_requests_total", "counter", "Requests answered, per client key and model.");
    for v in &s.clients {
        for u in &v.usage {
            let labels =
                [("client_id", v.client.id.as_str()), ("client", v.client.name.as_str()), ("model", u.model.as_str())];
            sample(&mut out, "gemini_proxy_client_requests_total", &labels, u.requests);
        }
    }
    family(&mut out, "gemini_proxy_client_tokens_total", "counter", "Tokens, per client key, model and kind.");
    for v in &s.clients {
        for u in &v.usage {
            let t = &u.tokens;
            for (kind, n) in
                [("prompt", t.prompt), ("output", t.output), ("cached", t.cached), ("thinking", t.thinking)]
            {
                let labels = [
                    ("client_id", v.client.id.as_str()),
                    ("client", v.client.name.as_str()),
                    ("model", u.model.as_str()),
                    ("kind", kind),
                ];
                sample(&mut out, "gemini_proxy_client_tokens_total", &labels, n);
            }
        }
    }

    family(
        &mut out,
        "gemini_proxy_key_model_state",
        "gauge",
        "A key's state for a model: 1 for the state it is in, 0 for the others.",
    );
    for k in &s.keys {
        for m in &k.models {
            let now = match m.state {
                KeyState::Ok => "ok",
                KeyState::Cooling { .. } => "cooling",
                KeyState::Exhausted { .. } => "exhausted",
                KeyState::Disabled => "disabled",
            };
            for state in ["ok", "cooling", "exhausted", "disabled"] {
                let labels = [("key_id", k.id.as_str()), ("model", m.model.as_str()), ("state", state)];
                sample(&mut out, "gemini_proxy_key_model_state", &labels, u8::from(state == now));
            }
        }
    }
    family(
        &mut out,
        "gemini_proxy_key_model_free_at_seconds",
        "gauge",
        "When a cooling or exhausted key becomes usable again for a model (Unix time).",
    );
    for k in &s.keys {
        for m in &k.models {
            if let KeyState::Cooling { until } | KeyState::Exhausted { until } = m.state {
                let labels = [("key_id", k.id.as_str()), ("model", m.model.as_str())];
                sample(&mut out, "gemini_proxy_key_model_free_at_seconds", &labels, seconds(until.0));
            }
        }
    }

    family(&mut out, "gemini_proxy_key_info", "gauge", "Each key of the pool (masked), its source and project.");
    for k in &s.keys {
        let labels = [
            ("key_id", k.id.as_str()),
            ("key", k.masked.as_str()),
            ("source", k.source.as_str()),
            ("project", k.project.as_deref().unwrap_or_default()),
            ("removed", if k.removed { "true" } else { "false" }),
        ];
        sample(&mut out, "gemini_proxy_key_info", &labels, 1);
    }
    family(&mut out, "gemini_proxy_key_disabled", "gauge", "1 if a key is disabled (a dead key, or by the admin).");
    for k in s.keys.iter().filter(|k| !k.removed) {
        sample(&mut out, "gemini_proxy_key_disabled", &[("key_id", k.id.as_str())], u8::from(k.disabled.is_some()));
    }
    let serving = s.keys.iter().filter(|k| !k.removed);
    let disabled = serving.clone().filter(|k| k.disabled.is_some()).count();
    family(&mut out, "gemini_proxy_keys", "gauge", "Keys in the pool, by state.");
    sample(&mut out, "gemini_proxy_keys", &[("state", "enabled")], serving.count() - disabled);
    sample(&mut out, "gemini_proxy_keys", &[("state", "disabled")], disabled);
    family(
        &mut out,
        "gemini_proxy_next_quota_reset_seconds",
        "gauge",
        "When Google's per-day quotas reset next (Unix time).",
    );
    sample(&mut out, "gemini_proxy_next_quota_reset_seconds", &[], seconds(s.next_quota_reset.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::pool::KeyPool;
    use crate::test_support::fake_keys;
    use crate::wire::keystore::{Outcome, RateLimit, RateLimitScope};
    use crate::wire::time::UnixMillis;

    const NOW: UnixMillis = UnixMillis(1_780_000_000_000);

    #[test]
    fn counts_states_and_keys_without_a_secret_and_with_hostile_names_escaped() {
        let keys = fake_keys("METRICS", 2);
        let mut pool = KeyPool::new(keys.clone());
        let model = "evil\"model\\\nname";
        let lease = pool.acquire(model, &[], NOW).expect("a key");
        let limit = RateLimit { scope: RateLimitScope::PerMinute, retry_after_ms: Some(60_000), reason: "slow".into() };
        pool.report(&lease.id, model, &Outcome::RateLimited(limit), NOW);
        let lease = pool.acquire(model, &[], NOW).expect("another key");
        let usage = crate::wire::usage::TokenUsage { prompt: 7, output: 11, cached: 0, thinking: 3 };
        let report = crate::wire::keystore::Report {
            key: lease.id.clone(),
            model: model.into(),
            outcome: Outcome::Success,
            usage: Some(usage),
            client: None,
            owned: Vec::new(),
            deleted: Vec::new(),
            listed: false,
            usage_of: None,
        };
        pool.apply(&report, NOW);
        let text = render(&pool.snapshot(NOW));
        for k in &keys {
            assert!(!text.contains(k.expose()), "a key in the metrics");
        }
        assert!(text.contains(r#"model="evil\"model\\\nname""#), "{text}");
        let first = keys[0].id();
        assert!(text.contains(&format!(
            "gemini_proxy_rate_limited_total{{key_id=\"{}\",model=\"evil\\\"model\\\\\\nname\"}} 1\n",
            first.as_str()
        )));
        assert!(text.contains(&format!(
            "gemini_proxy_key_model_state{{key_id=\"{}\",model=\"evil\\\"model\\\\\\nname\",state=\"cooling\"}} 1\n",
            first.as_str()
        )));
        assert!(text.contains("gemini_proxy_keys{state=\"enabled\"} 2\n"));
        assert!(
            text.contains(&format!(
                "gemini_proxy_tokens_total{{key_id=\"{}\",model=\"evil\\\"model\\\\\\nname\",kind=\"output\"}} 11\n",
                keys[1].id().as_str()
            )),
            "{text}"
        );
        // Every line is a comment or `name{labels} value`, and no raw line feed
        // escaped a label.
        for line in text.lines() {
            assert!(line.starts_with("# ") || line.starts_with("gemini_proxy_"), "{line}");
        }
    }
}
