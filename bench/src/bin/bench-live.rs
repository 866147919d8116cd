//! Live API sessions for the benchmarks (against the fake upstream's Live
//! protocol, directly or through a proxy), printing one JSON line:
//!
//! ```text
//! bench-live frames URL KEY N BYTES   one session; N audio frames of BYTES (base64 of), one at a time,
//!                                     each timed until its echo: p50/p99/max in µs
//! bench-live text URL KEY N           N sessions one after another, each a setup and one text turn
//! bench-live audio URL KEY N BYTES    one session; N audio frames sent as fast as they go, their echoes read
//! bench-live hold URL KEY N           N sessions opened and held until stdin closes
//! ```
//!
//! `URL` is the proxy's (or the fake's) `ws://host:port`; the Live path is
//! added.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::Write as _;
use std::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const PATH: &str = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";

async fn session(url: &str, key: &str) -> anyhow::Result<Ws> {
    let mut req = format!("{url}{PATH}").into_client_request()?;
    req.headers_mut().insert("x-goog-api-key", key.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let setup =
        json!({"setup": {"model": "models/gemini-live-bench", "generationConfig": {"responseModalities": ["AUDIO"]}}});
    ws.send(Message::text(setup.to_string())).await?;
    let first = data(&mut ws).await?;
    anyhow::ensure!(first.get("setupComplete").is_some(), "no setupComplete: {first}");
    Ok(ws)
}

async fn data(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
            Some(Ok(Message::Binary(b))) => return Ok(serde_json::from_slice(&b)?),
            Some(Ok(Message::Close(f))) => anyhow::bail!("closed: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("ended"),
        }
    }
}

fn audio_frame(bytes: usize, i: usize) -> String {
    use base64::Engine as _;
    let pcm: Vec<u8> = (0..bytes).map(|j| (i + j) as u8).collect();
    let data = base64::engine::general_purpose::STANDARD.encode(pcm);
    json!({"realtimeInput": {"audio": {"data": data, "mimeType": "audio/pcm;rate=16000"}}}).to_string()
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let (mode, url, key) = (arg(1), arg(2), arg(3));
    let n: usize = arg(4).parse().unwrap_or(1);
    let bytes: usize = arg(5).parse().unwrap_or(3072);
    let out = match mode.as_str() {
        "frames" => {
            let mut ws = session(&url, &key).await?;
            let mut times = Vec::with_capacity(n);
            for i in 0..n {
                let frame = audio_frame(bytes, i);
                let t = Instant::now();
                ws.send(Message::text(frame)).await?;
                data(&mut ws).await?;
                times.push(t.elapsed().as_micros());
            }
            ws.close(None).await?;
            times.sort_unstable();
            json!({"frames": n, "p50_us": percentile(&times, 0.5), "p99_us": percentile(&times, 0.99),
                   "max_us": times.last().copied().unwrap_or(0)})
        }
        "text" => {
            let t = Instant::now();
            for _ in 0..n {
                let mut ws = session(&url, &key).await?;
                let turn = json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hello"}]}], "turnComplete": true}});
                ws.send(Message::text(turn.to_string())).await?;
                while data(&mut ws).await?.pointer("/serverContent/turnComplete").is_none() {}
                ws.close(None).await?;
                while ws.next().await.is_some() {}
            }
            json!({"sessions": n, "ms": t.elapsed().as_millis()})
        }
        "audio" => {
            let t = Instant::now();
            let ws = session(&url, &key).await?;
            let (mut tx, mut rx) = ws.split();
            let send = async move {
                for i in 0..n {
                    tx.send(Message::text(audio_frame(bytes, i))).await?;
                }
                anyhow::Ok(tx)
            };
            let read = async move {
                let mut echoed = 0;
                while echoed < n {
                    match rx.next().await {
                        Some(Ok(Message::Text(_) | Message::Binary(_))) => echoed += 1,
                        Some(Ok(_)) => {}
                        _ => anyhow::bail!("the session ended after {echoed} echoes"),
                    }
                }
                anyhow::Ok(echoed)
            };
            let (tx, echoed) = tokio::try_join!(send, read)?;
            drop(tx);
            json!({"frames": n, "echoed": echoed, "ms": t.elapsed().as_millis()})
        }
        "hold" => {
            let mut held = Vec::with_capacity(n);
            for _ in 0..n {
                held.push(session(&url, &key).await?);
            }
            writeln!(std::io::stdout(), "{}", json!({"holding": held.len()}))?;
            std::io::stdout().flush()?;
            let mut line = String::new();
            let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
            for mut ws in held {
                let _ = ws.close(None).await;
            }
            return Ok(());
        }
        other => anyhow::bail!("unknown mode {other:?}: frames | text | audio | hold"),
    };
    writeln!(std::io::stdout(), "{out}")?;
    Ok(())
}
