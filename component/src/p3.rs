//! The component on `wasi:http` 0.3 (the crate's `p3` feature): the same
//! exchange as the 0.2 build, carried out with 0.3's async handler, its
//! `stream<u8>` bodies and the futures that tell how a body ended.
//!
//! `handle` starts the exchange as a task of its own and returns as soon as
//! that task has an answer to give; the task goes on after that (it pumps a
//! streamed answer and then files the request's reports).

use crate::bindings::exports::wasi::http0_3_0::handler::Guest;
use crate::bindings::gemini_proxy::host::key_store;
use crate::bindings::wasi::clocks0_3_0::monotonic_clock;
use crate::bindings::{wit_future, wit_stream};
use crate::convert;
use crate::wasi::{answer_fields, core_method, describe, fields_from, scheme_name, wasi_method};
use crate::wasi_http::client;
use crate::wasi_http::types::{ErrorCode, Fields, Request, Response, Scheme};
use futures::channel::oneshot;
use proxy_core::config::Scheme as CoreScheme;
use proxy_core::exchange::Pipe;
use proxy_core::exchange::{BodyError, BodyFrom, Event, Exchange, Step, UpstreamRequest};
use proxy_core::wire::http::Response as CoreResponse;
use wit_bindgen::{FutureReader, StreamReader, StreamResult, StreamWriter};

/// How long a failed answer's last bytes are given to leave before its
/// connection is cut (as the 0.2 build's).
const CUT_AFTER_NS: u64 = 100_000_000;

/// Most bytes asked for by one read.
const READ_CHUNK: usize = 64 * 1024;

/// How a body ended: cleanly (with or without trailers), or broken.
type BodyEnd = FutureReader<Result<Option<Fields>, ErrorCode>>;

/// The answer `handle` gives, once the exchange has one.
type Answer = oneshot::Sender<Response>;

pub(crate) struct Component;

impl Guest for Component {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let scheme = scheme_name(request.get_scheme());
        let exchange = crate::exchange(
            core_method(&request.get_method()),
            request.get_path_with_query().unwrap_or_else(|| "/".to_owned()),
            request.get_headers().copy_all(),
            request.get_authority().map(|a| (scheme, a)),
        );
        let exchange = match exchange {
            Ok(e) => e,
            Err(answer) => return Ok(buffered(&answer)),
        };
        let (answer, answered) = oneshot::channel();
        wit_bindgen::spawn(drive(exchange, request, answer));
        answered.await.map_err(|_| ErrorCode::InternalError(Some("the proxy gave no answer".into())))
    }
}

/// Carries out the exchange's steps until it is over; its answer goes to
/// `answer` as soon as there is one.
async fn drive(mut exchange: Exchange, request: Request, answer: Answer) {
    let timing = crate::Timing::start();
    let mut client_body = Some(ClientBody::of(request));
    let mut answer = Some(answer);
    let mut upstream: Option<Response> = None;
    // A request whose head is slow to come, and the client's answer a
    // keep-alive committed.
    let mut waiting: Option<Waiting> = None;
    let mut committed: Option<Committed> = None;
    // When the client last got a byte (a keep-alive's interval runs from
    // it, across attempts).
    let mut quiet_since = timing.started;
    let mut event = Event::Start;
    loop {
        event = match exchange.resume(event) {
            Step::ReadBody { limit, declared } => match client_body.take() {
                Some(body) => body.read_all(declared, limit).await.map_or_else(Event::BodyFailed, Event::Body),
                None => Event::BodyFailed(BodyError::Broken("the body was already read".into())),
            },
            step @ (Step::Acquire { .. }
            | Step::Report(_)
            | Step::Reset
            | Step::Log(_)
            | Step::Note(_)
            | Step::Admin(_)) => crate::key_store_step(step),
            Step::Send(up) => {
                let piped = match up.body {
                    BodyFrom::Client(len) => match client_body.take() {
                        Some(body) => Some((body, len)),
                        None => {
                            event = Event::BodyFailed(BodyError::Broken("the request body was already read".into()));
                            continue;
                        }
                    },
                    BodyFrom::Read => None,
                };
                let sent = match up.keep_alive {
                    // Waited on across steps: it holds what it sends.
                    Some(keep) => {
                        let body = exchange.body().to_vec();
                        let sending: Sending = Box::pin(async move { send(&up, &body, piped).await });
                        Waiting { sending, keep, at: std::time::Instant::now() }.wait(false, quiet_since).await
                    }
                    None => Waited::Came(send(&up, exchange.body(), piped).await),
                };
                head(sent, &mut upstream, &mut waiting)
            }
            Step::KeepAlive { status, headers } => {
                if committed.is_none()
                    && let Some(out) = answer.take()
                {
                    timing.answered();
                    committed = Committed::new(out, status, &headers);
                }
                if let Some(c) = &mut committed {
                    c.keep_alive().await;
                }
                quiet_since = std::time::Instant::now();
                match waiting.take() {
                    Some(w) => head(w.wait(true, quiet_since).await, &mut upstream, &mut waiting),
                    None => Event::SendFailed { reason: "no request was waiting".into(), timed_out: false },
                }
            }
            Step::EndCommitted { body, clean } => {
                if let Some(c) = committed.take() {
                    c.end(body.into_bytes(), clean).await;
                }
                Event::Done
            }
            Step::ReadErrorBody { limit } => match upstream.take() {
                Some(response) => Event::ErrorBody(read_error_body(response, limit).await),
                None => Event::ErrorBody(Vec::new()),
            },
            Step::Stream { status, headers, pipe } => {
                let target = match committed.take() {
                    Some(c) => Some(Target::Committed(c)),
                    None => answer.take().map(Target::Fresh),
                };
                match (upstream.take(), target) {
                    (Some(response), Some(target)) => {
                        match stream_response(response, target, status, &headers, pipe, &timing).await {
                            Streaming::Over(event) => event,
                            Streaming::Early(event, Target::Fresh(out)) => {
                                answer = Some(out);
                                event
                            }
                            Streaming::Early(event, Target::Committed(c)) => {
                                committed = Some(c);
                                event
                            }
                        }
                    }
                    _ => Event::Streamed(Err("nothing to stream".into())),
                }
            }
            Step::Respond(r) => {
                if let Some(out) = answer.take() {
                    timing.answered();
                    let _ = out.send(buffered(&r));
                }
                Event::Done
            }
            Step::Stats(view) => {
                if let Some(out) = answer.take() {
                    timing.answered();
                    let rendered = convert::rendered(key_store::stats(convert::stats_view(view)));
                    let _ = out.send(buffered(&rendered));
                }
                Event::Done
            }
            Step::Summary(summary) => crate::summed_up(*summary, &timing),
            Step::Done => return,
        };
    }
}

/// The event of where a sent request stands; its response, or the request
/// itself while it waits, kept for the next step.
fn head(waited: Waited, upstream: &mut Option<Response>, waiting: &mut Option<Waiting>) -> Event {
    match waited {
        Waited::Came(Ok(response)) => {
            let event = Event::Head { status: response.get_status_code(), headers: response.get_headers().copy_all() };
            *upstream = Some(response);
            event
        }
        Waited::Came(Err(failed)) => failed,
        Waited::Waiting(w) => {
            *waiting = Some(w);
            Event::Waiting
        }
    }
}

/// An upstream request on its way, owning what it sends.
type Sending = std::pin::Pin<Box<dyn Future<Output = Result<Response, Event>>>>;

/// Where a request kept alive stands.
enum Waited {
    /// Its head came, or it failed.
    Came(Result<Response, Event>),
    /// Its keep-alive interval passed first.
    Waiting(Waiting),
}

/// A request kept alive ([`proxy_core::exchange::KeepAlive`]), its head
/// still to come.
struct Waiting {
    sending: Sending,
    keep: proxy_core::exchange::KeepAlive,
    at: std::time::Instant,
}

impl Waiting {
    /// Waits for the head until the keep-alive's interval has passed since
    /// the client last got a byte (`quiet_since`); once the client's answer
    /// is `committed`, no longer than its wait from sending.
    async fn wait(mut self, committed: bool, quiet_since: std::time::Instant) -> Waited {
        let wait_for = std::time::Duration::from_millis(self.keep.wait_ms);
        let waited = self.at.elapsed();
        if committed && waited >= wait_for {
            let reason = format!("no response head within {} ms", self.keep.wait_ms);
            return Waited::Came(Err(Event::SendFailed { reason, timed_out: true }));
        }
        let mut interval = std::time::Duration::from_millis(self.keep.every_ms).saturating_sub(quiet_since.elapsed());
        if committed {
            interval = interval.min(wait_for - waited);
        }
        let ns = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        let timer = std::pin::pin!(monotonic_clock::wait_for(ns));
        match futures::future::select(self.sending.as_mut(), timer).await {
            futures::future::Either::Left((sent, _)) => Waited::Came(sent),
            futures::future::Either::Right(((), _)) => Waited::Waiting(self),
        }
    }
}

/// A client's answer a keep-alive committed: its head went, its body is
/// written as it comes, and its end told.
struct Committed {
    dst: StreamWriter<u8>,
    end: wit_bindgen::FutureWriter<Result<Option<Fields>, ErrorCode>>,
}

impl Committed {
    /// Gives the client `status` and `headers`: its answer is committed.
    fn new(out: Answer, status: u16, headers: &[(String, String)]) -> Option<Self> {
        let (dst, rx) = wit_stream::new::<u8>();
        let (end, end_rx) = wit_future::new(|| Ok(None));
        let (response, _) = Response::new(fields_from(headers), Some(rx), end_rx);
        let _ = response.set_status_code(status);
        out.send(response).ok()?;
        Some(Self { dst, end })
    }

    /// One whitespace byte, which every JSON parser skips. A client that
    /// went away is no failure of the upstream's: the answer is still
    /// waited for, and counted.
    async fn keep_alive(&mut self) {
        let _ = self.dst.write_all(vec![b' ']).await;
    }

    /// Ends the answer with `body`: cleanly, or broken, a moment after
    /// `body` went, so that the connection carries it before it is cut.
    async fn end(mut self, body: Vec<u8>, clean: bool) {
        let written = self.dst.write_all(body).await.is_empty();
        if !(written && clean) {
            monotonic_clock::wait_for(CUT_AFTER_NS).await;
            drop(self.dst);
            let _ = self.end.write(Err(ErrorCode::InternalError(Some("the answer failed".into())))).await;
        }
    }
}

/// Where a streamed answer goes.
enum Target {
    /// An answer not given yet.
    Fresh(Answer),
    /// The answer a keep-alive committed.
    Committed(Committed),
}

/// An answer held whole: its body is written once the host reads it.
pub(crate) fn buffered(r: &CoreResponse) -> Response {
    let body = r.body.as_bytes().to_vec();
    let (mut tx, rx) = wit_stream::new::<u8>();
    let (response, _) = Response::new(answer_fields(r), Some(rx), ended_cleanly());
    let _ = response.set_status_code(r.status);
    if !body.is_empty() {
        wit_bindgen::spawn(async move {
            let _ = tx.write_all(body).await;
        });
    }
    response
}

/// A body end that tells a clean end, as a dropped writer does.
fn ended_cleanly() -> BodyEnd {
    wit_future::new(|| Ok(None)).1
}

/// The `res` future `consume-body` takes: how processing the body went,
/// told as done (a dropped writer tells it).
fn processed_ok() -> FutureReader<Result<(), ErrorCode>> {
    wit_future::new(|| Ok(())).1
}

/// The client's request body: the stream and how it ended.
struct ClientBody {
    stream: StreamReader<u8>,
    end: BodyEnd,
}

impl ClientBody {
    fn of(request: Request) -> Self {
        let (stream, end) = Request::consume_body(request, processed_ok());
        Self { stream, end }
    }

    /// Reads the whole body, refusing more than `limit` bytes. With a
    /// `declared` length it stops once that many bytes are in.
    async fn read_all(mut self, declared: Option<u64>, limit: u64) -> Result<Vec<u8>, BodyError> {
        let declared = declared.and_then(|n| usize::try_from(n).ok());
        let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit as usize));
        while declared.is_none_or(|n| buf.len() < n) {
            // A read fills the spare capacity: with a declared length that
            // is what is left of it (never grown past), else a chunk.
            let want = declared.map_or(READ_CHUNK, |n| n - buf.len()).clamp(1, READ_CHUNK);
            if buf.capacity() - buf.len() < want {
                buf.reserve(want);
            }
            let (result, filled) = self.stream.read(buf).await;
            buf = filled;
            if buf.len() as u64 > limit {
                return Err(BodyError::TooLarge);
            }
            match result {
                StreamResult::Complete(_) => {}
                StreamResult::Dropped | StreamResult::Cancelled => return self.ended(buf).await,
            }
        }
        Ok(buf)
    }

    /// The body's stream was closed: `buf`, if it ended cleanly.
    async fn ended(self, buf: Vec<u8>) -> Result<Vec<u8>, BodyError> {
        drop(self.stream);
        match self.end.await {
            Ok(_) => Ok(buf),
            Err(e) => Err(BodyError::Broken(describe(&e).0)),
        }
    }
}

/// Why piping a body upstream stopped.
enum Piping {
    /// Reading the client's body failed, or it ended short: why.
    Client(String),
    /// Writing upstream failed (the upstream stopped reading).
    Upstream,
}

/// Sends an upstream request, its body `body` or, for a piped upload, the
/// client's own, and waits for its response head.
async fn send(up: &UpstreamRequest, body: &[u8], piped: Option<(ClientBody, u64)>) -> Result<Response, Event> {
    let failed = |(reason, timed_out)| Event::SendFailed { reason, timed_out };
    let has_body = piped.is_some() || up.method.has_body();
    let (contents, writer) = if has_body {
        let (tx, rx) = wit_stream::new::<u8>();
        (Some(rx), Some(tx))
    } else {
        (None, None)
    };
    let (end_tx, end_rx) = wit_future::new(|| Ok(None));
    // No request-options: the timeouts are the host's.
    let (request, _sent) = Request::new(fields_from(&up.headers), contents, end_rx, None);
    let scheme = match up.scheme {
        CoreScheme::Http => Scheme::Http,
        CoreScheme::Https => Scheme::Https,
    };
    let built = request.set_method(&wasi_method(&up.method)).is_ok()
        && request.set_scheme(Some(&scheme)).is_ok()
        && request.set_authority(Some(&up.authority)).is_ok()
        && request.set_path_with_query(Some(&up.path_and_query)).is_ok();
    if !built {
        return Err(failed(("the upstream request could not be built".to_owned(), false)));
    }
    let write = async move {
        let Some(mut tx) = writer else { return Ok(()) };
        let sent = match piped {
            Some((client, len)) => pipe(client, &mut tx, len).await,
            None => write_pieces(&mut tx, body).await,
        };
        drop(tx);
        match &sent {
            // The upstream request is ended as broken, not cleanly.
            Err(Piping::Client(why)) => {
                let _ = end_tx.write(Err(ErrorCode::InternalError(Some(why.clone())))).await;
            }
            Ok(()) | Err(Piping::Upstream) => drop(end_tx),
        }
        sent
    };
    let (answer, sent) = futures::join!(client::send(request), write);
    match (answer, sent) {
        (_, Err(Piping::Client(why))) => Err(Event::BodyFailed(BodyError::Broken(why))),
        (Ok(response), _) => Ok(response),
        (Err(e), _) => Err(failed(describe(&e))),
    }
}

/// Writes `body` a chunk at a time (no second copy of the whole body).
async fn write_pieces(dst: &mut StreamWriter<u8>, body: &[u8]) -> Result<(), Piping> {
    for piece in body.chunks(READ_CHUNK) {
        if !dst.write_all(piece.to_vec()).await.is_empty() {
            return Err(Piping::Upstream);
        }
    }
    Ok(())
}

/// Pipes exactly `len` bytes of the client's body into `dst`, a piece at a
/// time: no more than one piece is held.
async fn pipe(mut client: ClientBody, dst: &mut StreamWriter<u8>, len: u64) -> Result<(), Piping> {
    let mut left = len;
    while left > 0 {
        // A read fills at most the spare capacity: never more than is left.
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(READ_CHUNK);
        let (result, piece) = client.stream.read(Vec::with_capacity(want)).await;
        match result {
            StreamResult::Complete(_) => {}
            StreamResult::Dropped | StreamResult::Cancelled => {
                return match client.ended(Vec::new()).await {
                    Ok(_) => Err(Piping::Client("it ended before its declared length".into())),
                    Err(BodyError::Broken(why)) => Err(Piping::Client(why)),
                    Err(BodyError::TooLarge) => Err(Piping::Client("it was too large".into())),
                };
            }
        }
        left = left.saturating_sub(piece.len() as u64);
        if !dst.write_all(piece).await.is_empty() {
            return Err(Piping::Upstream);
        }
    }
    Ok(())
}

/// Reads up to `limit` bytes of an upstream answer's body; the rest is
/// dropped with the stream.
async fn read_error_body(response: Response, limit: usize) -> Vec<u8> {
    let (mut stream, end) = Response::consume_body(response, processed_ok());
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < limit {
        buf.reserve((limit - buf.len()).min(READ_CHUNK));
        let (result, filled) = stream.read(buf).await;
        buf = filled;
        if !matches!(result, StreamResult::Complete(_)) {
            // The body ended: its end is taken (trailers, if any, dropped)
            // so that nothing of it stays with the instance.
            drop(stream);
            let _ = end.await;
            break;
        }
    }
    buf.truncate(limit);
    buf
}

/// How streaming an answer went.
enum Streaming {
    /// The answer was given (and ended, cleanly or not): the event.
    Over(Event),
    /// The upstream body failed before its first byte: nothing was given,
    /// and the answer is handed back for another attempt.
    Early(Event, Target),
}

/// Streams a 2xx upstream answer to the client as it arrives. Nothing is
/// given before the first piece of the upstream body; on an upstream
/// failure later on, the client's answer ends broken, not cleanly.
async fn stream_response(
    response: Response,
    out: Target,
    status: u16,
    headers: &[(String, String)],
    mut pipe: Pipe,
    timing: &crate::Timing,
) -> Streaming {
    // With a declared length, the body is over once that many bytes are
    // in: no read to learn that it ended.
    let declared = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let (mut src, src_end) = Response::consume_body(response, processed_ok());
    let (result, first) = src.read(Vec::with_capacity(declared.unwrap_or(READ_CHUNK).clamp(1, READ_CHUNK))).await;
    let mut got = first.len();
    let mut src_end = Some(src_end);
    if declared == Some(got) {
        src_end = None;
    } else if !matches!(result, StreamResult::Complete(_))
        && let Some(Err(e)) = match src_end.take() {
            Some(end) => Some(end.await),
            None => None,
        }
    {
        let timed_out = matches!(e, ErrorCode::ConnectionReadTimeout);
        let reason = format!("the answer broke off before its first byte: {}", describe(&e).0);
        return Streaming::Early(Event::StreamFailedEarly { reason, timed_out }, out);
    }
    let (mut dst, dst_end) = match out {
        Target::Committed(Committed { dst, end }) => (dst, end),
        Target::Fresh(out) => {
            let (dst, rx) = wit_stream::new::<u8>();
            let (dst_end, dst_end_rx) = wit_future::new(|| Ok(None));
            let (answer, _) = Response::new(fields_from(headers), Some(rx), dst_end_rx);
            let _ = answer.set_status_code(status);
            timing.answered();
            if out.send(answer).is_err() {
                return Streaming::Over(Event::Streamed(Err("the client went away".into())));
            }
            (dst, dst_end)
        }
    };
    // Each piece passes through the guest so that the answer's end, with
    // its token usage, can be read, and a translated answer translated.
    let out = pipe.push(&first).into_owned();
    if !dst.write_all(out).await.is_empty() {
        return Streaming::Over(Event::Streamed(Err("the client went away".into())));
    }
    let Some(src_end) = src_end else {
        // The body ended (cleanly) with its first piece.
        if !dst.write_all(pipe.finish()).await.is_empty() {
            return Streaming::Over(Event::Streamed(Err("the client went away".into())));
        }
        drop(dst);
        drop(dst_end);
        return Streaming::Over(Event::Streamed(Ok(pipe.seen())));
    };
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let ended = loop {
        buf.clear();
        buf.reserve(READ_CHUNK);
        let (result, piece) = src.read(buf).await;
        buf = piece;
        got += buf.len();
        if !buf.is_empty() {
            if pipe.translates() {
                let out = pipe.push(&buf).into_owned();
                if !dst.write_all(out).await.is_empty() {
                    break Err("the client went away".to_owned());
                }
            } else {
                pipe.push(&buf);
                let rest = dst.write_all(buf).await;
                if !rest.is_empty() {
                    break Err("the client went away".to_owned());
                }
                buf = rest;
            }
        }
        if declared == Some(got) {
            break Ok(());
        }
        if !matches!(result, StreamResult::Complete(_)) {
            drop(src);
            break match src_end.await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("stream broke off: {}", describe(&e).0)),
            };
        }
    };
    let ended = match ended {
        Ok(()) if !dst.write_all(pipe.finish()).await.is_empty() => Err("the client went away".to_owned()),
        Ok(()) => Ok(()),
        Err(why) => {
            // The client hears of the break in its API's words, if it has
            // them, before its answer ends broken.
            let _ = dst.write_all(pipe.broke()).await;
            Err(why)
        }
    };
    drop(dst);
    match ended {
        Ok(()) => {
            drop(dst_end);
            Streaming::Over(Event::Streamed(Ok(pipe.seen())))
        }
        Err(why) => {
            // The client's answer ends broken, so the client sees the break.
            let _ = dst_end.write(Err(ErrorCode::InternalError(Some("the upstream answer broke off".into())))).await;
            Streaming::Over(Event::Streamed(Err(why)))
        }
    }
}
