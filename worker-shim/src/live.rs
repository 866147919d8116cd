//! The Live API's WebSocket sessions on the Worker: the client's socket is
//! one end of a `WebSocketPair`, Google's an upstream `fetch` with
//! `Upgrade: websocket` (the key in a header), and core's
//! [`proxy_core::live`] session decides everything between them. The
//! relay runs after the `101` answer, for as long as both sockets live.

use crate::io;
use crate::keys::{self, KeyStore};
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use proxy_core::Config;
use proxy_core::exchange::UpstreamRequest;
use proxy_core::live::{self, Close, End, Event, Session, Step, Upstream};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use worker::{Delay, Env, Fetch, Method, Request, RequestInit, Response, WebSocket, WebSocketPair, WebsocketEvent};

/// Answers a Live upgrade: a refusal as an HTTP answer, or `101` with the
/// client's end of a pair whose other end the session drives.
pub async fn serve(req: &Request, env: &Env, config: Arc<Config>, id: String) -> worker::Result<Response> {
    let url = req.url()?;
    let pq = url.query().map_or_else(|| url.path().to_owned(), |q| format!("{}?{q}", url.path()));
    let headers: Vec<(String, Vec<u8>)> = req.headers().entries().map(|(k, v)| (k, v.into_bytes())).collect();
    let access_log = config.access_log;
    let mut session = match live::admit(config, &pq, &headers) {
        Ok(s) => s.with_request_id(id),
        Err(refused) => return io::to_response(&refused),
    };
    let mut store = KeyStore::new(env);
    // Who the caller is, before the upgrade: a stranger gets an HTTP refusal.
    let mut event = Event::Start;
    loop {
        event = match session.resume(event) {
            Step::Upgrade => break,
            Step::Refuse(refused) => {
                let now = worker::Date::now().as_millis();
                let mut event = Event::Done;
                loop {
                    match session.resume(event) {
                        Step::Done => break,
                        Step::Summary(summary) => {
                            let summary = summary.timed(now, Some(0), 0);
                            if access_log {
                                worker::console_log!("{}", summary.line());
                            }
                            keys::log(summary);
                        }
                        _ => {}
                    }
                    event = Event::Done;
                }
                // Sent before the answer: nothing of this isolate may carry
                // it later.
                if let Err(e) = store.flush().await {
                    worker::console_error!("logging a refused Live session failed: {e}");
                }
                return io::to_response(&refused);
            }
            Step::Admin(op) => store.admin(op).await.map_or_else(Event::StoreFailed, Event::Admin),
            Step::Log(line) => {
                worker::console_error!("{line}");
                Event::Done
            }
            Step::Done => {
                let e = proxy_core::ProxyError::internal("the Live session ended before its upgrade", None);
                return io::to_response(&e.to_response(proxy_core::Dialect::Gemini));
            }
            _ => Event::Done,
        };
    }
    let pair = WebSocketPair::new()?;
    pair.server.accept()?;
    binary_as_buffers(&pair.server);
    wasm_bindgen_futures::spawn_local(run(session, pair.server, store, access_log));
    Response::from_websocket(pair.client)
}

/// A socket's next data message (`true`: it came as binary), or how it
/// ended.
enum Next {
    Data(Vec<u8>, bool),
    Closed(u16, String),
    Gone(String),
}

async fn next(events: &mut worker::EventStream<'_>) -> Next {
    match events.next().await {
        Some(Ok(WebsocketEvent::Message(m))) => match (m.bytes(), m.text()) {
            (Some(b), _) => Next::Data(b, true),
            (None, Some(t)) => Next::Data(t.into_bytes(), false),
            (None, None) => Next::Data(Vec::new(), false),
        },
        Some(Ok(WebsocketEvent::Close(c))) => Next::Closed(c.code(), c.reason()),
        Some(Err(e)) => Next::Gone(e.to_string()),
        None => Next::Gone("the socket closed".into()),
    }
}

/// [`next`] within `ms`.
async fn next_within(events: &mut worker::EventStream<'_>, ms: u64) -> Option<Next> {
    let read = pin!(next(events));
    let timer = pin!(Delay::from(Duration::from_millis(ms)));
    match select(read, timer).await {
        Either::Left((n, _)) => Some(n),
        Either::Right(_) => None,
    }
}

/// Binary messages as `ArrayBuffer`s (a `Blob`'s bytes cannot be read at
/// once).
fn binary_as_buffers(ws: &WebSocket) {
    let socket: &web_sys::WebSocket = ws.as_ref();
    socket.set_binary_type(web_sys::BinaryType::Arraybuffer);
}

fn send(ws: &WebSocket, data: &[u8], binary: bool) -> worker::Result<()> {
    if binary { ws.send_with_bytes(data) } else { ws.send_with_str(String::from_utf8_lossy(data)) }
}

fn close(ws: &WebSocket, c: &Close) {
    let _ = ws.close(Some(c.code), Some(c.reason.as_str()));
}

async fn run(mut session: Session, client: WebSocket, mut store: KeyStore, access_log: bool) {
    let started = worker::Date::now().as_millis();
    let Ok(mut from_client) = client.events() else { return };
    let mut google: Option<WebSocket> = None;
    // When Google's setupComplete went to the client: the session's first
    // byte.
    let mut answered: Option<u64> = None;
    // The upgrade is done.
    let mut event = Event::Done;
    loop {
        event = match session.resume(event) {
            Step::ReadSetup { limit, timeout_ms } => match next_within(&mut from_client, timeout_ms).await {
                Some(Next::Data(m, _)) if m.len() > limit => {
                    close(&client, &Close::new(1009, "the setup message is too large"));
                    Event::ClientGone(format!("a setup of {} bytes", m.len()))
                }
                Some(Next::Data(m, _)) => Event::Setup(m),
                Some(Next::Closed(code, _)) => {
                    close(&client, &Close::new(code, ""));
                    Event::ClientGone("closed before its setup".into())
                }
                Some(Next::Gone(why)) => Event::ClientGone(why),
                None => {
                    close(&client, &Close::new(1008, "no setup message in time"));
                    Event::ClientGone("no setup in time".into())
                }
            },
            Step::Admin(op) => store.admin(op).await.map_or_else(Event::StoreFailed, Event::Admin),
            Step::Acquire { model, exclude, settle, client: claim, resources } => {
                match store.acquire(model, exclude, settle, claim, &resources).await {
                    Ok(answer) => Event::Acquired(answer),
                    Err(why) => Event::StoreFailed(why),
                }
            }
            Step::Open(up) => {
                let (ws, event) = open(&up).await;
                google = ws;
                event
            }
            Step::Check(request) => check(&request).await,
            Step::Relay { first, binary } => match google.take() {
                Some(g) => {
                    answered = Some(worker::Date::now().as_millis());
                    Event::Ended(relay(&mut session, &store, &client, &mut from_client, g, &first, binary).await)
                }
                None => Event::Ended(End::UpstreamGone("no upstream session".into())),
            },
            Step::Close(c) => {
                close(&client, &c);
                Event::Done
            }
            Step::Report(r) => {
                // Sent at once with the session's summary, which follows.
                keys::defer(vec![r]);
                Event::Done
            }
            Step::Log(line) => {
                worker::console_error!("{line}");
                Event::Done
            }
            Step::Note(line) => {
                worker::console_log!("{line}");
                Event::Done
            }
            Step::Summary(summary) => {
                let ms = worker::Date::now().as_millis().saturating_sub(started);
                let summary = summary.timed(started, answered.map(|at| at.saturating_sub(started)), ms);
                if access_log {
                    worker::console_log!("{}", summary.line());
                }
                // The session's report and summary go at once: no answer
                // follows them.
                keys::log(summary);
                if let Err(e) = store.flush().await {
                    worker::console_error!("reporting a Live session to the key store failed: {e}");
                }
                Event::Done
            }
            Step::Upgrade | Step::Refuse(_) => Event::Done,
            Step::Done => return,
        };
    }
}

/// The upstream URL as `fetch` takes it (`https://`, `http://`).
fn fetch_url(ws_url: &str) -> String {
    if let Some(rest) = ws_url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = ws_url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        ws_url.to_owned()
    }
}

/// Opens the upstream session, sends the setup, and reads Google's first
/// message.
async fn open(up: &Upstream) -> (Option<WebSocket>, Event) {
    let unreachable = |reason: String| (None, Event::Unreachable { reason });
    let connect = async {
        let mut init = RequestInit::new();
        // A redirect is never followed with the pool key on it.
        init.with_method(Method::Get).with_redirect(worker::RequestRedirect::Manual);
        let req = Request::new_with_init(&fetch_url(&up.url), &init)?;
        let headers = req.headers();
        headers.set("upgrade", "websocket")?;
        for (name, value) in &up.headers {
            headers.set(name, value)?;
        }
        Fetch::Request(req).send().await
    };
    let timer = pin!(Delay::from(Duration::from_millis(up.timeout_ms)));
    let mut response = match select(pin!(connect), timer).await {
        Either::Left((Ok(r), _)) => r,
        Either::Left((Err(e), _)) => return unreachable(e.to_string()),
        Either::Right(_) => return unreachable("no WebSocket upgrade in time".into()),
    };
    let status = response.status_code();
    if status != 101 {
        let body = response.bytes().await.unwrap_or_default();
        return (None, Event::Rejected { status, body: body[..body.len().min(64 * 1024)].to_vec() });
    }
    let Some(ws) = response.websocket() else { return unreachable("a 101 without a socket".into()) };
    if let Err(e) = ws.accept() {
        return unreachable(format!("accepting the upstream socket: {e}"));
    }
    binary_as_buffers(&ws);
    let first = {
        let Ok(mut events) = ws.events() else { return unreachable("no events of the upstream socket".into()) };
        if let Err(e) = ws.send_with_str(&up.setup) {
            return unreachable(format!("sending the setup: {e}"));
        }
        next_within(&mut events, up.timeout_ms).await
    };
    match first {
        Some(Next::Data(message, binary)) => (Some(ws), Event::Opened { message, binary }),
        Some(Next::Closed(code, reason)) => (None, Event::Closed { code, reason }),
        Some(Next::Gone(reason)) => unreachable(reason),
        None => {
            let _ = ws.close(Some(1000), Some("no setupComplete in time"));
            unreachable("no setupComplete in time".into())
        }
    }
}

/// A key's check: its status and the start of its body.
async fn check(request: &UpstreamRequest) -> Event {
    let fetch = async {
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_redirect(worker::RequestRedirect::Manual);
        let req = Request::new_with_init(&request.url(), &init)?;
        for (name, value) in &request.headers {
            req.headers().set(name, value)?;
        }
        let mut response = Fetch::Request(req).send().await?;
        let status = response.status_code();
        let body = response.bytes().await.unwrap_or_default();
        Ok::<_, worker::Error>((status, body))
    };
    let timer = pin!(Delay::from(Duration::from_secs(30)));
    match select(pin!(fetch), timer).await {
        Either::Left((Ok((status, body)), _)) => {
            let limit = proxy_core::exchange::admin::CHECK_BODY_BYTES;
            Event::Checked { status, body: body[..body.len().min(limit)].to_vec() }
        }
        Either::Left((Err(e), _)) => Event::Unreachable { reason: e.to_string() },
        Either::Right(_) => Event::Unreachable { reason: "no answer in time".into() },
    }
}

/// Relays messages both ways, unchanged (a binary one as binary), until
/// one side ends; Google's are shown to the session (usage, handles).
async fn relay(
    session: &mut Session,
    store: &KeyStore,
    client: &WebSocket,
    from_client: &mut worker::EventStream<'_>,
    google: WebSocket,
    first: &[u8],
    binary: bool,
) -> End {
    let Ok(mut from_google) = google.events() else { return End::UpstreamGone("no events".into()) };
    if let Err(e) = send(client, first, binary) {
        let _ = google.close(Some(1000), None::<&str>);
        return End::ClientGone(e.to_string());
    }
    loop {
        let next_client = pin!(next(from_client));
        let next_google = pin!(next(&mut from_google));
        match select(next_client, next_google).await {
            Either::Left((n, _)) => match n {
                Next::Data(m, binary) => {
                    if let Err(e) = send(&google, &m, binary) {
                        close(client, &session.upstream_close(1006, ""));
                        return End::UpstreamGone(e.to_string());
                    }
                }
                Next::Closed(code, reason) => {
                    // Google hears the client's close; the client, our answer.
                    let c = session.upstream_close(code, &reason);
                    let _ = google.close(Some(c.code), Some(c.reason.as_str()));
                    close(client, &c);
                    return End::ClientClosed;
                }
                Next::Gone(why) => {
                    let _ = google.close(Some(1000), None::<&str>);
                    return End::ClientGone(why);
                }
            },
            Either::Right((n, _)) => match n {
                Next::Data(m, binary) => {
                    if let Some(op) = session.upstream_message(&m) {
                        // The handle is its key's at once; the frame does not wait.
                        let mut store = store.another();
                        wasm_bindgen_futures::spawn_local(async move {
                            if let Err(e) = store.admin(op).await {
                                worker::console_error!("registering a resumption handle failed: {e}");
                            }
                        });
                    }
                    if let Err(e) = send(client, &m, binary) {
                        let _ = google.close(Some(1000), None::<&str>);
                        return End::ClientGone(e.to_string());
                    }
                }
                Next::Closed(code, reason) => {
                    let c = session.upstream_close(code, &reason);
                    let _ = google.close(Some(c.code), Some(c.reason.as_str()));
                    close(client, &c);
                    return End::UpstreamClosed(code, reason);
                }
                Next::Gone(why) => {
                    close(client, &session.upstream_close(1006, ""));
                    return End::UpstreamGone(why);
                }
            },
        }
    }
}
