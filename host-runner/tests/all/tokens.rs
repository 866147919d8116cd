//! Token accounting: what the answers' `usageMetadata` and `usage` report,
//! counted per key × model for plain and streamed answers in both dialects,
//! and kept across a restart.

use crate::harness::Harness;
use host_runner::clock::Clock as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;

type Totals = BTreeMap<(String, String), [u64; 4]>;

/// What the fake reported, per key id × model.
fn reported(h: &Harness) -> Totals {
    let mut out = Totals::new();
    for r in h.fake.requests() {
        let (Some(u), Some(key), Some(model)) = (r.usage, r.key(), r.model.clone()) else { continue };
        let cell = out.entry((h.id_of(key), model)).or_default();
        for (i, n) in [u.prompt, u.output, u.cached, u.thinking].into_iter().enumerate() {
            cell[i] += n;
        }
    }
    out
}

/// What `/stat.json` counted, per key id × model.
fn counted(stats: &Value) -> Totals {
    let mut out = Totals::new();
    for k in stats["keys"].as_array().expect("keys") {
        for (model, cell) in k["models"].as_object().expect("models") {
            let t = &cell["tokens"];
            let n = |f: &str| t[f].as_u64().expect("a token count");
            let counts = [n("prompt"), n("output"), n("cached"), n("thinking")];
            if counts != [0; 4] {
                out.insert((k["id"].as_str().expect("id").to_owned(), model.clone()), counts);
            }
        }
    }
    out
}

async fn drain(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 200);
    r.text().await.expect("body")
}

#[tokio::test]
async fn tokens_equal_what_the_answers_report_plain_and_streamed_in_both_dialects_and_survive_a_restart() {
    let mut h = Harness::new(2).await;
    h.fake.set_stream_chunks(5);
    let prompt = |text: &str| json!({"contents": [{"parts": [{"text": text}]}]});
    drain(h.gemini("/v1beta/models/gemini-2.5-flash:generateContent", prompt("a plain answer")).await).await;
    let sse =
        drain(h.gemini("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", prompt("sse")).await).await;
    assert!(sse.contains("chunk 4"), "{sse}");
    drain(h.gemini("/v1beta/models/gemini-2.5-pro:streamGenerateContent", prompt("a JSON array")).await).await;
    let chat = |stream: bool, usage: bool| {
        let mut body =
            json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}], "stream": stream});
        if usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    };
    drain(h.openai("/v1/chat/completions", chat(false, false)).await).await;
    drain(h.openai("/v1/chat/completions", chat(true, true)).await).await;
    // A stream that reports no usage counts none.
    drain(h.openai("/v1/chat/completions", chat(true, false)).await).await;

    let want = reported(&h);
    assert_eq!(want.len(), 4, "both keys × both models reported: {want:?}");
    let stats = h.stats().await;
    assert_eq!(counted(&stats), want, "{stats}");
    let grand = &stats["totals"]["tokens"];
    let sum: u64 = want.values().map(|c| c[1]).sum();
    assert_eq!(grand["output"].as_u64(), Some(sum), "{stats}");

    h.restart().await;
    assert_eq!(counted(&h.stats().await), want, "token counts survive a restart");
}

/// `/stat.json`'s hourly series of `dim` for `name`: (hour, calls, tokens).
fn hourly(stats: &Value, dim: &str, name: &str) -> Vec<(String, u64, u64)> {
    let rows = stats["hourly"][dim][name].as_array().cloned().unwrap_or_default();
    rows.iter()
        .map(|r| {
            (r[0].as_str().expect("hour").to_owned(), r[1].as_u64().expect("calls"), r[2].as_u64().expect("tokens"))
        })
        .collect()
}

/// The quota tokens (prompt, output, thinking) the fake reported since its
/// `from`th request.
fn reported_since(h: &Harness, from: usize) -> u64 {
    h.fake.requests().iter().skip(from).filter_map(|r| r.usage).map(|u| u.prompt + u.output + u.thinking).sum()
}

#[tokio::test]
async fn hourly_buckets_count_calls_and_tokens_per_model_and_key_for_a_week_and_survive_a_restart() {
    let mut h = Harness::new(1).await;
    let hour = |t: proxy_core::UnixMillis| format!("{}:00:00Z", &t.to_rfc3339()[..13]);
    let first = hour(h.clock.now());
    for _ in 0..2 {
        drain(h.generate("gemini-2.5-flash").await).await;
    }
    let first_tokens = reported_since(&h, 0);
    h.clock.advance(proxy_core::wire::time::HOUR_MS);
    let second = hour(h.clock.now());
    drain(h.generate("gemini-2.5-flash").await).await;
    let second_tokens = reported_since(&h, 2);
    let want = vec![(first.clone(), 2, first_tokens), (second.clone(), 1, second_tokens)];
    let stats = h.stats().await;
    assert_eq!(hourly(&stats, "model", "gemini-2.5-flash"), want, "{}", stats["hourly"]);
    let key = h.id_of(&h.keys[0]);
    assert_eq!(hourly(&stats, "key", &key), want);

    h.restart().await;
    assert_eq!(hourly(&h.stats().await, "model", "gemini-2.5-flash"), want, "kept across a restart");

    // A week and a day on, those hours are gone, on disk too.
    h.clock.advance(8 * 24 * proxy_core::wire::time::HOUR_MS);
    drain(h.generate("gemini-2.5-flash").await).await;
    let late = hour(h.clock.now());
    let now_only = vec![(late, 1, reported_since(&h, 3))];
    assert_eq!(hourly(&h.stats().await, "model", "gemini-2.5-flash"), now_only);
    h.restart().await;
    assert_eq!(hourly(&h.stats().await, "model", "gemini-2.5-flash"), now_only, "pruned in the file");
    let page = h.http.get(h.url("/stat")).send().await.expect("page").text().await.expect("html");
    assert_eq!(page.matches(r#"class="bar""#).count(), 2, "one bar in each chart");
}
