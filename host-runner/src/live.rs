//! The Live API's WebSocket sessions, served natively beside the component:
//! `wasi:http` has no upgrade, so a component cannot hold a WebSocket. The
//! host does the I/O here (the client's upgrade, the upstream session with
//! tokio-tungstenite over rustls) and drives core's [`proxy_core::live`]
//! session, which decides everything else: who may connect, which key,
//! what a close means, what is counted. The key store is the same one the
//! component uses, called directly.

use crate::outbound::Outbound;
use crate::store::KeyBackend;
use crate::via::ProxiedStream;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proxy_core::Config;
use proxy_core::live::{self, Close, End, Event, Session, Step, Upstream};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// What a Live session needs of the host.
#[derive(Clone)]
pub struct LiveHost {
    /// The proxy's configuration, as the component reads it.
    pub config: Arc<Config>,
    /// The key store.
    pub store: Arc<dyn KeyBackend>,
    /// Outgoing HTTP (a key's check).
    pub outbound: Outbound,
    /// TLS to Google.
    pub tls: Arc<rustls::ClientConfig>,
    /// Open sessions, at most `--max-connections` (an upgraded connection
    /// leaves the connection limit's count).
    pub sessions: Arc<tokio::sync::Semaphore>,
    /// The limit of `sessions`.
    pub max_sessions: usize,
}

impl std::fmt::Debug for LiveHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHost").finish_non_exhaustive()
    }
}

/// The largest message relayed either way (Google's own limits are lower).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The read buffer each socket keeps (tungstenite's default, 128 KiB, made
/// a session cost 275 KiB; an audio chunk is a few KiB, and a larger
/// message is read through it in pieces).
const READ_BUFFER: usize = 8 * 1024;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
}

type Client = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
type Google = WebSocketStream<MaybeTlsStream<ProxiedStream>>;

/// Answers a Live upgrade request: a refusal as an HTTP answer, or `101`
/// and the session run on the upgraded connection.
pub async fn serve(host: &LiveHost, mut req: hyper::Request<Incoming>, id: &str) -> proxy_core::wire::http::Response {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let headers: Vec<(String, Vec<u8>)> =
        req.headers().iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
    let mut session = match live::admit(host.config.clone(), &pq, &headers) {
        Ok(s) => s.with_request_id(id.to_owned()),
        Err(refused) => return refused,
    };
    // Who the caller is, before the upgrade: a stranger gets an HTTP refusal.
    let asked = Timing::start();
    let mut event = Event::Start;
    loop {
        event = match session.resume(event) {
            Step::Upgrade => break,
            Step::Refuse(refused) => {
                let mut event = Event::Done;
                loop {
                    match session.resume(event) {
                        Step::Done => break,
                        Step::Summary(summary) => summed_up(host, summary, &asked),
                        _ => {}
                    }
                    event = Event::Done;
                }
                return refused;
            }
            Step::Admin(op) => Event::Admin(host.store.admin(op)),
            Step::Log(line) => {
                tracing::warn!("{line}");
                Event::Done
            }
            Step::Done => {
                return proxy_core::ProxyError::internal("", Some(id)).to_response(proxy_core::Dialect::Gemini);
            }
            _ => Event::Done,
        };
    }
    let Some(accept) = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
        let e = proxy_core::ProxyError::BadRequest("a WebSocket upgrade needs its Sec-WebSocket-Key".into());
        return e.to_response(proxy_core::Dialect::Gemini);
    };
    let Ok(permit) = host.sessions.clone().try_acquire_owned() else {
        let e = proxy_core::ProxyError::TooManyConnections { limit: host.max_sessions };
        return e.to_response(proxy_core::Dialect::Gemini);
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let host = host.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let Ok(upgraded) = on_upgrade.await else { return };
        let client = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config())).await;
        run(host, session, client).await;
    });
    proxy_core::wire::http::Response {
        status: 101,
        headers: vec![
            ("upgrade".to_owned(), "websocket".to_owned()),
            ("connection".to_owned(), "Upgrade".to_owned()),
            ("sec-websocket-accept".to_owned(), accept),
        ],
        body: String::new(),
    }
}

/// When a session began (ms since the epoch, and the instant), and when
/// Google's `setupComplete` went to the client: its first byte.
struct Timing {
    at: u64,
    started: std::time::Instant,
    answered: Option<std::time::Instant>,
}

impl Timing {
    fn start() -> Self {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self { at, started: std::time::Instant::now(), answered: None }
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A session's summary, timed: to the host's log, the request log, and the
/// access log (`ACCESS_LOG=json`: one JSON line on standard output, as the
/// component writes a request's).
fn summed_up(host: &LiveHost, summary: proxy_core::wire::summary::Summary, timing: &Timing) {
    let ttfb = timing.answered.map(|at| ms(at.duration_since(timing.started)));
    let summary = summary.timed(timing.at, ttfb, ms(timing.started.elapsed()));
    tracing::info!(
        request_id = summary.request_id.as_deref().unwrap_or(""),
        model = summary.model.as_deref().unwrap_or(""),
        status = summary.status,
        attempts = summary.attempts.len(),
        error = summary.error.as_deref().unwrap_or(""),
        elapsed_ms = summary.ms.unwrap_or(0),
        "live session ended"
    );
    if host.config.access_log {
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), "{}", summary.line());
    }
    host.store.log_request(summary);
}

/// Drives one session to its end.
async fn run(host: LiveHost, mut session: Session, client: Client) {
    let mut client = Some(client);
    let mut upstream: Option<Google> = None;
    let mut timing = Timing::start();
    // The upgrade is done.
    let mut event = Event::Done;
    loop {
        event = match session.resume(event) {
            Step::ReadSetup { limit, timeout_ms } => match client.as_mut() {
                Some(c) => read_setup(c, limit, timeout_ms).await,
                None => Event::ClientGone("gone".into()),
            },
            Step::Admin(op) => Event::Admin(host.store.admin(op)),
            Step::Acquire { model, exclude, settle, client: claim, resources } => {
                Event::Acquired(host.store.acquire(claim.as_ref(), &model, &resources, &exclude, settle))
            }
            Step::Open(up) => {
                let (google, event) = open(&host, &up).await;
                upstream = google;
                event
            }
            Step::Check(request) => match host.outbound.check(&request).await {
                Ok((status, body)) => Event::Checked { status, body },
                Err(reason) => Event::Unreachable { reason },
            },
            Step::Relay { first, binary } => match (client.take(), upstream.take()) {
                (Some(c), Some(google)) => {
                    timing.answered = Some(std::time::Instant::now());
                    Event::Ended(relay(&host, &mut session, c, google, first, binary).await)
                }
                _ => Event::Ended(End::UpstreamGone("no upstream session".into())),
            },
            Step::Close(close) => {
                if let Some(c) = client.as_mut() {
                    let _ = c.close(Some(frame(&close))).await;
                    // Read until the client's answering close, so that
                    // what it sent meanwhile does not reset the connection
                    // before it read the reason.
                    drain(c).await;
                }
                Event::Done
            }
            Step::Report(r) => {
                host.store.report(r);
                Event::Done
            }
            Step::Log(line) => {
                tracing::warn!("{line}");
                Event::Done
            }
            Step::Note(line) => {
                tracing::info!("{line}");
                Event::Done
            }
            Step::Summary(summary) => {
                summed_up(&host, summary, &timing);
                Event::Done
            }
            Step::Upgrade | Step::Refuse(_) => Event::Done,
            Step::Done => return,
        };
    }
}

/// Reads (and drops) what a peer still sends after our close, until its
/// own close or [`DRAIN`].
async fn drain<S>(peer: &mut S)
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let _ = tokio::time::timeout(DRAIN, async {
        while let Some(Ok(m)) = peer.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
}

/// Sends `m`, within [`SEND_TIMEOUT`]: whether it went.
async fn send<S>(sink: &mut S, m: Message) -> bool
where
    S: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    matches!(tokio::time::timeout(SEND_TIMEOUT, sink.send(m)).await, Ok(Ok(())))
}

/// How long a peer has to answer our close.
const DRAIN: Duration = Duration::from_secs(2);

/// How long one frame may take to reach a peer that has stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

fn frame(close: &Close) -> CloseFrame {
    CloseFrame { code: CloseCode::from(close.code), reason: close.reason.clone().into() }
}

async fn read_setup(client: &mut Client, limit: usize, timeout_ms: u64) -> Event {
    let read = async {
        loop {
            match client.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t.as_bytes().to_vec()),
                Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
                Some(Ok(Message::Close(_))) | None => return Err("closed before its setup".to_owned()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.to_string()),
            }
        }
    };
    match tokio::time::timeout(Duration::from_millis(timeout_ms), read).await {
        Ok(Ok(m)) if m.len() > limit => {
            let close = Close::new(1009, "the setup message is too large");
            let _ = client.close(Some(frame(&close))).await;
            Event::ClientGone(format!("a setup of {} bytes", m.len()))
        }
        Ok(Ok(m)) => Event::Setup(m),
        Ok(Err(why)) => Event::ClientGone(why),
        Err(_) => {
            let close = Close::new(1008, "no setup message in time");
            let _ = client.close(Some(frame(&close))).await;
            Event::ClientGone("no setup in time".into())
        }
    }
}

/// Why opening an upstream session failed.
enum Opening {
    /// Google refused the upgrade: its answer.
    Rejected(Box<tungstenite::http::Response<Option<Vec<u8>>>>),
    /// The connection (or the proxy) failed: why.
    Failed(String),
}

impl From<std::io::Error> for Opening {
    fn from(e: std::io::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

/// Opens the upstream session, sends the setup, and reads Google's first
/// message.
async fn open(host: &LiveHost, up: &Upstream) -> (Option<Google>, Event) {
    let unreachable = |reason: String| (None, Event::Unreachable { reason });
    let mut request = match up.url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return unreachable(format!("the upstream URL: {e}")),
    };
    for (name, value) in &up.headers {
        // (Never a session without its credential: core sends only what a
        // header carries, and a header that cannot go fails the attempt.)
        match (http::HeaderName::try_from(name.as_str()), http::HeaderValue::try_from(value.as_str())) {
            (Ok(n), Ok(v)) => request.headers_mut().insert(n, v),
            _ => return unreachable(format!("a {name} header that cannot be sent")),
        };
    }
    // One deadline for the whole attempt: connecting, then Google's first message.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(up.timeout_ms);
    let connector = Some(Connector::Rustls(host.tls.clone()));
    // Straight, or through the key's project's proxy (else the
    // configuration's), as every upstream call.
    // By the attempt's key (a token's session carries no key of its own).
    let proxy = host.store.proxy_for_id(&up.key).or_else(|| host.outbound.egress_route(request.uri()));
    let host_name = request.uri().host().unwrap_or_default();
    let name = host_name.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = request.uri().port_u16().unwrap_or(if request.uri().scheme_str() == Some("wss") { 443 } else { 80 });
    // The tunnel gets most of the attempt's time: a proxy that stalls is
    // told as the proxy's failure, not the key's.
    let timeout = Duration::from_millis(up.timeout_ms.saturating_mul(4) / 5);
    let connect = async {
        let stream = match &proxy {
            Some(proxy) => crate::via::tunnel(proxy, &name, port, timeout, &host.tls).await?,
            None => {
                let tcp = tokio::net::TcpStream::connect((name.as_str(), port)).await?;
                let _ = tcp.set_nodelay(true);
                ProxiedStream::Plain(tcp)
            }
        };
        tokio_tungstenite::client_async_tls_with_config(request, stream, Some(ws_config()), connector).await.map_err(
            |e| match e {
                tungstenite::Error::Http(response) => Opening::Rejected(response),
                e => Opening::Failed(e.to_string()),
            },
        )
    };
    let mut google = match tokio::time::timeout_at(deadline, connect).await {
        Err(_) => return unreachable("no WebSocket upgrade in time".into()),
        Ok(Err(Opening::Rejected(response))) => {
            let status = response.status().as_u16();
            let body = response.into_body().unwrap_or_default();
            return (None, Event::Rejected { status, body: body[..body.len().min(64 * 1024)].to_vec() });
        }
        Ok(Err(Opening::Failed(why))) => return unreachable(why),
        Ok(Ok((google, _))) => google,
    };
    if let Err(e) = google.send(Message::text(up.setup.clone())).await {
        return unreachable(format!("sending the setup: {e}"));
    }
    let first = async {
        loop {
            match google.next().await {
                Some(Ok(Message::Text(t))) => return Event::Opened { message: t.as_bytes().to_vec(), binary: false },
                Some(Ok(Message::Binary(b))) => return Event::Opened { message: b.to_vec(), binary: true },
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                    return Event::Closed { code, reason };
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Event::Unreachable { reason: e.to_string() },
                None => return Event::Unreachable { reason: "closed without a word".into() },
            }
        }
    };
    match tokio::time::timeout_at(deadline, first).await {
        Ok(event @ Event::Opened { .. }) => (Some(google), event),
        Ok(event) => (None, event),
        Err(_) => unreachable("no setupComplete in time".into()),
    }
}

/// Relays frames both ways, unchanged, until one side ends; Google's
/// messages are shown to the session (usage, resumption handles). A side
/// that takes longer than [`SEND_TIMEOUT`] to take a frame, or a session
/// silent both ways for [`live::IDLE_TIMEOUT_MS`], ends it.
async fn relay(
    host: &LiveHost,
    session: &mut Session,
    client: Client,
    google: Google,
    first: Vec<u8>,
    binary: bool,
) -> End {
    let (mut to_client, mut from_client) = client.split();
    let (mut to_google, mut from_google) = google.split();
    let first =
        if binary { Message::binary(first) } else { Message::text(String::from_utf8_lossy(&first).into_owned()) };
    let idle = Duration::from_millis(live::IDLE_TIMEOUT_MS);
    if !send(&mut to_client, first).await {
        let _ = to_google.send(Message::Close(None)).await;
        return End::ClientGone("the client took no message".into());
    }
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let end = loop {
        tokio::select! {
            m = from_client.next() => match m {
                Some(Ok(Message::Close(f))) => {
                    // Google hears the client's close; the client, our answer.
                    let _ = to_google.send(Message::Close(f)).await;
                    let _ = to_client.close().await;
                    drain(&mut from_google).await;
                    break End::ClientClosed;
                }
                Some(Ok(Message::Frame(_))) => {}
                Some(Ok(message)) => {
                    if !send(&mut to_google, message).await {
                        let close = session.upstream_close(1006, "");
                        let _ = to_client.send(Message::Close(Some(frame(&close)))).await;
                        break End::UpstreamGone("Google took no message".into());
                    }
                }
                Some(Err(e)) => {
                    let _ = to_google.send(Message::Close(None)).await;
                    break End::ClientGone(e.to_string());
                }
                None => {
                    let _ = to_google.send(Message::Close(None)).await;
                    break End::ClientGone("the connection closed".into());
                }
            },
            m = from_google.next() => match m {
                Some(Ok(Message::Close(f))) => {
                    let (code, reason) = f.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()));
                    let close = session.upstream_close(code, &reason);
                    let _ = to_google.close().await;
                    let _ = to_client.send(Message::Close(Some(frame(&close)))).await;
                    drain(&mut from_client).await;
                    break End::UpstreamClosed(code, reason);
                }
                Some(Ok(Message::Frame(_))) => {}
                Some(Ok(message)) => {
                    let data: Option<&[u8]> = match &message {
                        Message::Text(t) => Some(t.as_bytes()),
                        Message::Binary(b) => Some(b),
                        _ => None,
                    };
                    if let Some(op) = data.and_then(|d| session.upstream_message(d)) {
                        host.store.admin(op);
                    }
                    if !send(&mut to_client, message).await {
                        let _ = to_google.send(Message::Close(None)).await;
                        break End::ClientGone("the client took no message".into());
                    }
                }
                Some(Err(e)) => {
                    let close = session.upstream_close(1006, "");
                    let _ = to_client.send(Message::Close(Some(frame(&close)))).await;
                    break End::UpstreamGone(e.to_string());
                }
                None => {
                    let close = session.upstream_close(1006, "");
                    let _ = to_client.send(Message::Close(Some(frame(&close)))).await;
                    break End::UpstreamGone("the connection closed".into());
                }
            },
            () = &mut timer => {
                let close = live::Close::new(1011, "the session was silent too long");
                let _ = to_client.send(Message::Close(Some(frame(&close)))).await;
                let _ = to_google.send(Message::Close(None)).await;
                break End::UpstreamGone("silent both ways too long".into());
            }
        }
        timer.as_mut().reset(tokio::time::Instant::now() + idle);
    };
    let _ = tokio::time::timeout(DRAIN, to_client.close()).await;
    let _ = tokio::time::timeout(DRAIN, to_google.close()).await;
    end
}
