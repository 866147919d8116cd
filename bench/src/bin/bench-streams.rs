//! Opens many concurrent SSE streams and times every event against the
//! stamp the upstream wrote into it (`"t":NANOS`, see `bench-upstream`):
//!
//! `bench-streams URL --streams N [--spread-ms MS] [--header 'name: value']… [--body JSON] [--hold]`
//!
//! The streams start evenly over `--spread-ms` (default 20, the upstream's
//! default interval), so that their events interleave as many users'
//! streams would rather than all landing in the same microsecond.
//!
//! Prints one JSON line: per-event delay from the upstream writing it to
//! this client reading it (first event and all events), the gaps between
//! events, and failures. With `--hold`, also prints `open N` once every
//! stream has its first event, so that a caller can sample memory while
//! all of them are open.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use gemini_proxy_bench::{now_ns, quantile, stamp_in};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use proxy_core::google::stream::{Framing, Splitter};
use serde_json::json;
use std::io::Write;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

#[derive(Default)]
struct StreamTimes {
    /// Upstream-to-client delay of each event, in order.
    delays_ns: Vec<u64>,
    /// Client arrival of each event.
    arrivals_ns: Vec<u64>,
}

struct Args {
    url: http::Uri,
    streams: usize,
    headers: Vec<(String, String)>,
    body: String,
    hold: bool,
    spread_ms: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        url: http::Uri::default(),
        streams: 100,
        headers: Vec::new(),
        body: "{}".into(),
        hold: false,
        spread_ms: 20,
    };
    let mut url = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--streams" => args.streams = it.next().context("--streams N")?.parse()?,
            "--header" => {
                let h = it.next().context("--header 'name: value'")?;
                let (n, v) = h.split_once(':').context("--header 'name: value'")?;
                args.headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
            "--body" => args.body = it.next().context("--body JSON")?,
            "--hold" => args.hold = true,
            "--spread-ms" => args.spread_ms = it.next().context("--spread-ms MS")?.parse()?,
            other if url.is_none() => url = Some(other.parse::<http::Uri>()?),
            other => bail!("unexpected argument {other}"),
        }
    }
    args.url = url.context("usage: bench-streams URL [--streams N] [--header 'n: v'] [--body JSON] [--hold]")?;
    Ok(args)
}

/// Runs one stream; `opened` fires at its first event (the caller fires it
/// if the stream fails or ends before one).
async fn one_stream(args: Arc<Args>, opened: &mut Option<oneshot::Sender<()>>) -> anyhow::Result<StreamTimes> {
    let authority = args.url.authority().context("URL without host")?.clone();
    let tcp = TcpStream::connect(authority.as_str()).await?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::post(args.url.clone())
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json");
    for (n, v) in &args.headers {
        req = req.header(n, v);
    }
    let resp = sender.send_request(req.body(Full::new(Bytes::from(args.body.clone())))?).await?;
    if !resp.status().is_success() {
        bail!("status {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut times = StreamTimes::default();
    let mut splitter = Splitter::new(Framing::Sse);
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else { continue };
        let at = now_ns();
        splitter.push(data, |event| {
            if let Some(t) = stamp_in(event) {
                times.delays_ns.push(at.saturating_sub(t));
                times.arrivals_ns.push(at);
            }
        });
        if !times.delays_ns.is_empty()
            && let Some(o) = opened.take()
        {
            let _ = o.send(());
        }
    }
    Ok(times)
}

fn summary(mut v: Vec<u64>) -> serde_json::Value {
    v.sort_unstable();
    let us = |ns: u64| (ns as f64 / 1000.0 * 10.0).round() / 10.0;
    json!({"p50_us": us(quantile(&v, 0.5)), "p99_us": us(quantile(&v, 0.99)), "max_us": us(v.last().copied().unwrap_or(0)), "n": v.len()})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(parse_args()?);
    let mut opened = Vec::with_capacity(args.streams);
    let tasks: Vec<_> = (0..args.streams)
        .map(|i| {
            let (tx, rx) = oneshot::channel();
            opened.push(rx);
            let args = args.clone();
            let start = std::time::Duration::from_micros(args.spread_ms * 1000 * i as u64 / args.streams.max(1) as u64);
            tokio::spawn(async move {
                tokio::time::sleep(start).await;
                let mut tx = Some(tx);
                let result = one_stream(args, &mut tx).await;
                if let Some(o) = tx.take() {
                    let _ = o.send(());
                }
                result
            })
        })
        .collect();
    for o in opened {
        let _ = o.await;
    }
    if args.hold {
        writeln!(std::io::stdout(), "open {}", args.streams)?;
        std::io::stdout().flush()?;
    }
    let (mut first, mut all, mut gaps, mut failures) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        match t.await? {
            Ok(times) => {
                first.extend(times.delays_ns.first().copied());
                gaps.extend(times.arrivals_ns.windows(2).map(|w| w[1] - w[0]));
                all.extend(times.delays_ns);
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    failures.sort();
    failures.dedup();
    let out = json!({
        "streams": args.streams,
        "events": all.len(),
        "first_event_delay": summary(first),
        "event_delay": summary(all),
        "gap": summary(gaps),
        "failures": failures,
    });
    writeln!(std::io::stdout(), "{out}")?;
    Ok(())
}
