//! A fast stand-in for Google's API with fixed answers, for benchmarks:
//! `bench-upstream [ADDR]` prints `listening on http://ADDR`.
//!
//! - `…:streamGenerateContent` answers an SSE stream of `chunks` events
//!   (default 20), `interval_ms` apart (default 20), each stamped with the
//!   wall-clock time it was written (`"t":NANOS`); both can be set in the
//!   query string. Each event carries `usageMetadata`, as Google's do (the
//!   last one the totals), so that the proxy's token accounting has its
//!   real work to do.
//! - `…/chat/completions` answers a fixed OpenAI chat completion.
//! - anything else answers a fixed `generateContent` response.

use bytes::Bytes;
use gemini_proxy_bench::now_ns;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;

const GENERATE: &str = r#"{"candidates":[{"content":{"parts":[{"text":"The quick brown fox jumps over the lazy dog."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":10,"totalTokenCount":18},"modelVersion":"gemini-2.5-flash","responseId":"bench-0001"}"#;
const CHAT: &str = r#"{"id":"bench-0001","object":"chat.completion","created":1764201600,"model":"gemini-2.5-flash","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog."},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":10,"total_tokens":18}}"#;

type Body = BoxBody<Bytes, Infallible>;

fn query_u64(query: Option<&str>, name: &str, default: u64) -> u64 {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(default)
}

/// The number after `before` (and before `after`) in the path's model name.
fn in_model(path: &str, before: &str, after: &str) -> Option<u64> {
    let rest = &path[path.find(before)? + before.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    rest[digits.len()..].starts_with(after).then(|| digits.parse().ok()).flatten()
}

fn fixed(body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json; charset=UTF-8"));
    r
}

fn sse(chunks: u64, interval: Duration) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for i in 0..chunks {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            let event = format!(
                "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"chunk {i} @{t} \"}}],\"role\":\"model\"}},\"index\":0}}],\"usageMetadata\":{{\"promptTokenCount\":8,\"candidatesTokenCount\":{n},\"totalTokenCount\":{total}}},\"t\":{t}}}\r\n\r\n",
                t = now_ns(),
                n = 2 * (i + 1),
                total = 8 + 2 * (i + 1)
            );
            if tx.send(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(ChunkBody(rx).boxed());
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    r
}

/// A body whose chunks come from a channel, each sent as soon as it comes.
struct ChunkBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChunkBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

async fn handle(req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    // Read the whole request first, as a server would.
    let _ = req.into_body().collect().await;
    if path.contains(":streamGenerateContent") {
        // A translated call (Anthropic's Messages) has no query of its own:
        // its model name may say the same (`…-chunks-200-every-0ms`).
        let chunks = query_u64(query.as_deref(), "chunks", in_model(&path, "-chunks-", "").unwrap_or(20));
        let every = in_model(&path, "-every-", "ms").unwrap_or(20);
        let interval = Duration::from_millis(query_u64(query.as_deref(), "interval_ms", every));
        sse(chunks, interval)
    } else if path.ends_with("/chat/completions") {
        fixed(CHAT)
    } else {
        fixed(GENERATE)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    writeln!(std::io::stdout(), "listening on http://{}", listener.local_addr()?)?;
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req| async move { Ok::<_, Infallible>(handle(req).await) });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
