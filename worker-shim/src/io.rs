//! Moving requests, bodies and answers through the Workers runtime, within
//! the upstream timeouts: every upstream fetch carries an abort signal; the
//! wait for its head races a timer, and so does every read of its body.

use futures_util::StreamExt;
use futures_util::future::{Either, select};
use proxy_core::config::UpstreamTimeouts;
use proxy_core::exchange::{BodyError, BodyFrom, Event, KeepAlive, Pipe, UpstreamRequest};
use proxy_core::google::stream::{Seen, UsageTail};
use proxy_core::translate::recall::Watch;
use proxy_core::wire::http::Response as CoreResponse;
use std::pin::pin;
use std::time::Duration;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::{
    AbortController, ByteStream, Delay, Fetch, Headers, Method, Request, RequestInit, Response, ResponseBody, js_sys,
};

fn headers_of(list: &[(String, String)]) -> worker::Result<Headers> {
    let headers = Headers::new();
    for (k, v) in list {
        headers.append(k, v)?;
    }
    Ok(headers)
}

/// An answer of core's as the runtime's response.
pub fn to_response(r: &CoreResponse) -> worker::Result<Response> {
    // A 204 must not have a body, not even an empty one.
    let response =
        if r.body.is_empty() { Response::empty()? } else { Response::from_bytes(r.body.clone().into_bytes())? };
    Ok(response.with_status(r.status).with_headers(headers_of(&r.headers)?))
}

/// The request body, at most `limit` bytes, as the exchange's event.
pub async fn read_request_body(request: Option<&mut Request>, limit: u64) -> Event {
    match request.map(Request::stream) {
        Some(Ok(body)) => match read_up_to(body, usize::try_from(limit).unwrap_or(usize::MAX), None).await {
            Ok((bytes, false)) => Event::Body(bytes),
            Ok((_, true)) => Event::BodyFailed(BodyError::TooLarge),
            Err((_, why)) => Event::BodyFailed(BodyError::Broken(why)),
        },
        // No body at all.
        Some(Err(_)) | None => Event::Body(Vec::new()),
    }
}

/// An upstream answer, and the means to break its body off.
pub struct Upstream {
    response: Response,
    abort: AbortController,
}

/// An upstream request sent, its head still to come.
pub struct Sending {
    fetch: std::pin::Pin<Box<dyn Future<Output = worker::Result<Response>>>>,
    abort: AbortController,
    keep_alive: Option<KeepAlive>,
    /// When it went (ms since the epoch).
    at: u64,
}

/// Sends an upstream request, its body `body` or, for
/// [`BodyFrom::Client`], the `client`'s own piped through, and waits for
/// its head ([`wait`]).
pub async fn send(
    up: &UpstreamRequest,
    body: &[u8],
    client: Option<&Request>,
    timeouts: &UpstreamTimeouts,
    quiet_since: u64,
) -> (Option<Upstream>, Option<Sending>, Event) {
    let abort = AbortController::default();
    let request = match outgoing(up, body, client) {
        Ok(r) => r,
        Err(e) => return (None, None, Event::SendFailed { reason: e.to_string(), timed_out: false }),
    };
    let signal = abort.signal();
    let fetch = Box::pin(async move { Fetch::Request(request).send_with_signal(&signal).await });
    let sending = Sending { fetch, abort, keep_alive: up.keep_alive, at: worker::Date::now().as_millis() };
    wait(sending, false, timeouts, quiet_since).await
}

/// Waits for a sent request's head: within the first-byte timeout, or,
/// once the client's answer is `committed` by a keep-alive, within the
/// keep-alive's wait; with a keep-alive, until its interval has passed since
/// the client last got a byte (`quiet_since`, ms since the epoch: the
/// request's arrival, or the last keep-alive byte), whatever attempt it is
/// ([`Event::Waiting`], the request handed back to wait on again).
pub async fn wait(
    mut sending: Sending,
    committed: bool,
    timeouts: &UpstreamTimeouts,
    quiet_since: u64,
) -> (Option<Upstream>, Option<Sending>, Event) {
    let deadline = match sending.keep_alive {
        Some(keep) if committed => keep.wait_ms,
        _ => timeouts.first_byte_ms,
    };
    let now = worker::Date::now().as_millis();
    let waited = now.saturating_sub(sending.at);
    let mut interval = deadline.saturating_sub(waited);
    if let Some(keep) = sending.keep_alive {
        interval = interval.min(keep.every_ms.saturating_sub(now.saturating_sub(quiet_since)));
    }
    let timer = pin!(Delay::from(Duration::from_millis(interval)));
    match select(sending.fetch.as_mut(), timer).await {
        Either::Left((Ok(r), _)) => {
            let headers = r.headers().entries().map(|(k, v)| (k, v.into_bytes())).collect();
            let status = r.status_code();
            (Some(Upstream { response: r, abort: sending.abort }), None, Event::Head { status, headers })
        }
        Either::Left((Err(e), _)) => (None, None, Event::SendFailed { reason: e.to_string(), timed_out: false }),
        Either::Right(((), _)) => {
            let waited = worker::Date::now().as_millis().saturating_sub(sending.at);
            if sending.keep_alive.is_some() && waited < deadline {
                // The interval passed (since the client's last byte).
                return (None, Some(sending), Event::Waiting);
            }
            sending.abort.abort();
            let reason = format!("no response head within {deadline} ms");
            (None, None, Event::SendFailed { reason, timed_out: true })
        }
    }
}

/// The runtime's request for `up`.
fn outgoing(up: &UpstreamRequest, body: &[u8], client: Option<&Request>) -> worker::Result<Request> {
    let mut init = RequestInit::new();
    // A redirect is never followed with the pool key on it: the client
    // gets the 3xx (its headers scrubbed of the key, as every answer's).
    init.with_method(Method::from(up.method.as_str().to_owned()))
        .with_headers(headers_of(&up.headers)?)
        .with_redirect(worker::RequestRedirect::Manual);
    if up.method.has_body() {
        let body = match (up.body, client) {
            (BodyFrom::Read, _) => js_sys::Uint8Array::from(body).into(),
            (BodyFrom::Client(len), Some(client)) => piped_body(client, len)?,
            (BodyFrom::Client(_), None) => return Err(worker::Error::RustError("the request body was read".into())),
        };
        init.with_body(Some(body));
    }
    Request::new_with_init(&up.url(), &init)
}

/// A client's answer a keep-alive committed: its head went (the
/// runtime's response, whose body this writes), its body still to come.
pub struct Committed {
    writer: web_sys::WritableStreamDefaultWriter,
}

impl Committed {
    /// The answer to hand the runtime (`status`, `headers`, a body written
    /// as it comes), and its writer.
    pub fn new(status: u16, headers: &[(String, String)]) -> worker::Result<(Response, Self)> {
        let identity = identity_stream().map_err(worker::Error::from)?;
        let part =
            |name: &str| js_sys::Reflect::get(&identity, &name.into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED);
        let writable: web_sys::WritableStream = part("writable").unchecked_into();
        let readable: web_sys::ReadableStream = part("readable").unchecked_into();
        let writer = writable.get_writer().map_err(worker::Error::from)?;
        let response =
            Response::from_body(ResponseBody::Stream(readable))?.with_status(status).with_headers(headers_of(headers)?);
        Ok((response, Self { writer }))
    }

    /// One whitespace byte, which every JSON parser skips; not waited on
    /// (a client that went away is no failure of the upstream's: the
    /// answer is still waited for, and counted).
    pub fn keep_alive(&self) {
        let write = JsFuture::from(self.writer.write_with_chunk(&js_sys::Uint8Array::from(&b" "[..])));
        wasm_bindgen_futures::spawn_local(async move {
            let _ = write.await;
        });
    }

    /// Ends the answer with `bytes`: cleanly, or broken (the stream
    /// aborted once they are read, which cuts the client's answer).
    pub async fn end(self, bytes: &[u8], clean: bool) {
        let written = JsFuture::from(self.writer.write_with_chunk(&js_sys::Uint8Array::from(bytes))).await.is_ok();
        let _ = JsFuture::from(if written && clean { self.writer.close() } else { self.writer.abort() }).await;
    }

    /// Streams a 2xx upstream body into the answer, through `pipe`, each
    /// piece within the idle timeout. Before its first piece, nothing is
    /// written, and a failure hands the answer back
    /// ([`Event::StreamFailedEarly`]: the exchange then ends it with its
    /// error); after it, a failure ends the answer broken.
    pub async fn stream(
        self,
        upstream: Upstream,
        mut pipe: Pipe,
        timeouts: &UpstreamTimeouts,
    ) -> (Option<Self>, Event) {
        let Upstream { response, abort } = upstream;
        let (_, body) = response.into_parts();
        let stream = match body {
            ResponseBody::Stream(stream) => stream,
            ResponseBody::Body(bytes) => {
                let mut out = pipe.push(&bytes).into_owned();
                out.extend(pipe.finish());
                self.end(&out, true).await;
                return (None, Event::Streamed(Ok(pipe.seen())));
            }
            ResponseBody::Empty => {
                self.end(&pipe.finish(), true).await;
                return (None, Event::Streamed(Ok(pipe.seen())));
            }
        };
        let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
        let write = |bytes: &[u8]| JsFuture::from(self.writer.write_with_chunk(&js_sys::Uint8Array::from(bytes)));
        let mut first = true;
        let result = loop {
            let piece = match first_piece(&reader, timeouts.idle_ms).await {
                Ok(piece) => piece,
                Err((reason, timed_out)) if first => {
                    abort.abort();
                    return (Some(self), Event::StreamFailedEarly { reason, timed_out });
                }
                Err((why, _)) => break Err(why),
            };
            first = false;
            let Some(piece) = piece else { break Ok(()) };
            if write(&pipe.push(&piece)).await.is_err() {
                abort.abort();
                let _ = JsFuture::from(self.writer.abort()).await;
                return (None, Event::Streamed(Err("the client went away".into())));
            }
        };
        match result {
            Ok(()) => {
                let delivered = write(&pipe.finish()).await.is_ok();
                if delivered && JsFuture::from(self.writer.close()).await.is_ok() {
                    (None, Event::Streamed(Ok(pipe.seen())))
                } else {
                    (None, Event::Streamed(Err("the client went away".into())))
                }
            }
            Err(why) => {
                abort.abort();
                let _ = write(&pipe.broke()).await;
                let _ = JsFuture::from(self.writer.abort()).await;
                (None, Event::Streamed(Err(why)))
            }
        }
    }
}

/// The client's request body as a stream of exactly `len` bytes, so that
/// the upstream gets its `content-length`: workerd's `FixedLengthStream`
/// fed by the body (natively: no byte passes through wasm), else the body
/// itself. A body that breaks off or ends short fails the fetch; that is
/// then told as the upstream's failure (the runtime does not say which side
/// broke).
fn piped_body(client: &Request, len: u64) -> worker::Result<wasm_bindgen::JsValue> {
    let Some(body) = client.inner().body() else { return Ok(js_sys::Uint8Array::new_with_length(0).into()) };
    let class = js_sys::Reflect::get(&js_sys::global(), &"FixedLengthStream".into())?;
    let Ok(class) = class.dyn_into::<js_sys::Function>() else { return Ok(body.into()) };
    let fixed = js_sys::Reflect::construct(&class, &js_sys::Array::of1(&(len as f64).into()))?;
    let writable: web_sys::WritableStream = js_sys::Reflect::get(&fixed, &"writable".into())?.unchecked_into();
    let pipe = JsFuture::from(body.pipe_to(&writable));
    // Its failure errors the fixed stream, and so the fetch that reads it.
    wasm_bindgen_futures::spawn_local(async move {
        let _ = pipe.await;
    });
    Ok(js_sys::Reflect::get(&fixed, &"readable".into())?)
}

/// Up to `limit` bytes of an upstream error body (what arrived before a
/// break or a stall is still classified); the rest is dropped.
pub async fn read_error_body(upstream: Option<Upstream>, limit: usize, timeouts: &UpstreamTimeouts) -> Event {
    let Some(Upstream { mut response, abort }) = upstream else { return Event::ErrorBody(Vec::new()) };
    let Ok(body) = response.stream() else { return Event::ErrorBody(Vec::new()) };
    let idle = Duration::from_millis(timeouts.idle_ms);
    let bytes = read_up_to(body, limit, Some(idle)).await.map_or_else(|(b, _)| b, |(b, _)| b);
    abort.abort();
    Event::ErrorBody(bytes)
}

/// A body read up to a limit (each piece within `idle`, if given): the
/// bytes, and whether more followed; or what was read before it broke.
async fn read_up_to(
    mut body: ByteStream,
    limit: usize,
    idle: Option<Duration>,
) -> Result<(Vec<u8>, bool), (Vec<u8>, String)> {
    let mut buf = Vec::new();
    loop {
        let next = match idle {
            None => body.next().await,
            Some(idle) => match select(body.next(), pin!(Delay::from(idle))).await {
                Either::Left((next, _)) => next,
                Either::Right(((), _)) => return Err((buf, format!("no data for {} ms", idle.as_millis()))),
            },
        };
        let chunk = match next {
            None => return Ok((buf, false)),
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err((buf, e.to_string())),
        };
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
}

/// A streamed answer on its way to the client.
pub enum Piped {
    /// Passed natively: the pipe settles when the stream ends (or rejects
    /// when it breaks off), and its other branch is read for the answer's
    /// end, which holds the token usage.
    Native { pipe: JsFuture, tail: Tail, _abort: AbortController },
    /// Translated piece by piece in wasm ([`translate_through`]).
    Translated(std::pin::Pin<Box<dyn std::future::Future<Output = Result<Seen, String>>>>),
}

impl Piped {
    /// How the stream ended, with what was seen of it (the token usage it
    /// reported, its first bytes when asked for).
    pub async fn ended(self) -> Result<Seen, String> {
        match self {
            Self::Native { pipe, tail, _abort } => {
                let (piped, seen) = futures_util::future::join(pipe, tail.read()).await;
                piped.map(|_| seen).map_err(|e| format!("stream broke off: {e:?}"))
            }
            Self::Translated(ended) => ended.await,
        }
    }
}

/// The second branch of a streamed answer, gathered by the runtime itself
/// (`Response.arrayBuffer()`: no JavaScript or wasm runs per piece, which a
/// reader loop doubled the CPU time of a long stream with); once it is
/// over, only its last [`proxy_core::google::stream::TAIL_BYTES`] are copied into
/// wasm and read for the usage.
pub struct Tail {
    rest: web_sys::ReadableStream,
    first: js_sys::Uint8Array,
    /// How many of the answer's first bytes to keep ([`Step::Stream`]).
    ///
    /// [`Step::Stream`]: proxy_core::exchange::Step::Stream
    head: usize,
    /// What reads a chat answer for its calls' signatures: handed the
    /// whole body, once, at its end (no wasm runs per piece).
    watch: Option<Watch>,
}

impl Tail {
    async fn read(self) -> Seen {
        let first = self.first.to_vec();
        let mut tail = UsageTail::keeping_head(self.head);
        let rest = async {
            let gathered = web_sys::Response::new_with_opt_readable_stream(Some(&self.rest)).ok()?;
            let buffer: js_sys::ArrayBuffer =
                JsFuture::from(gathered.array_buffer().ok()?).await.ok()?.dyn_into().ok()?;
            Some(js_sys::Uint8Array::new(&buffer))
        };
        let mut watch = self.watch;
        if let Some(w) = &mut watch {
            w.push(&first);
        }
        let found = |watch: Option<Watch>, mut seen: Seen| {
            seen.signatures = watch.map(Watch::found).unwrap_or_default();
            seen
        };
        let Some(rest) = rest.await else {
            tail.push(&first);
            return found(watch, tail.seen());
        };
        tail.push(&first);
        if let Some(w) = &mut watch {
            w.push(&rest.to_vec());
        }
        // What the head still wants of the rest, then the rest's end: the
        // tail keeps the last bytes pushed, and nothing between is copied.
        let keep = proxy_core::google::stream::TAIL_BYTES as u32;
        let len = rest.length();
        let wanted = (self.head.saturating_sub(first.len()) as u32).min(len);
        if len <= wanted.saturating_add(keep) {
            tail.push(&rest.to_vec());
        } else {
            tail.push(&rest.subarray(0, wanted).to_vec());
            tail.push(&rest.subarray(len - keep, len).to_vec());
        }
        found(watch, tail.seen())
    }
}

/// Hands a 2xx upstream body to the client. Nothing is sent before its
/// first piece, awaited within the idle timeout: `Err` (why, timed out)
/// when the body breaks off or stalls before it, and another key can be
/// tried. Then that piece and the rest go to the client through the
/// runtime's native identity stream: no byte passes through wasm, and no
/// JavaScript runs per piece (a JS-backed stream doubled the CPU time of a
/// long stream, measured with bench/run --worker-only), so a stall after
/// the first piece is left to the runtime and the client.
pub async fn pass_through(
    upstream: Upstream,
    status: u16,
    headers: &[(String, String)],
    pipe: &Pipe,
    timeouts: &UpstreamTimeouts,
) -> Result<(worker::Result<Response>, Option<Piped>), (String, bool)> {
    let head = pipe.head_limit();
    let headers = match headers_of(headers) {
        Ok(h) => h,
        Err(e) => return Ok((Err(e), None)),
    };
    let Upstream { response, abort } = upstream;
    let (_, body) = response.into_parts();
    let ResponseBody::Stream(stream) = body else {
        return Ok((Response::from_body(body).map(|r| r.with_status(status).with_headers(headers)), None));
    };
    let js = |e: wasm_bindgen::JsValue| format!("{e:?}");
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let read = JsFuture::from(reader.read());
    let first = match select(read, pin!(Delay::from(Duration::from_millis(timeouts.idle_ms)))).await {
        Either::Left((Ok(first), _)) => first,
        Either::Left((Err(e), _)) => {
            return Err((format!("the answer broke off before its first byte: {}", js(e)), false));
        }
        Either::Right(((), _)) => {
            abort.abort();
            return Err((format!("the upstream sent no body for {} ms", timeouts.idle_ms), true));
        }
    };
    reader.release_lock();
    let field = |name: &str| js_sys::Reflect::get(&first, &name.into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED);
    if field("done").as_bool().unwrap_or(true) {
        return Ok((Response::empty().map(|r| r.with_status(status).with_headers(headers)), None));
    }
    let identity = match identity_stream() {
        Ok(i) => i,
        Err(e) => return Ok((Err(worker::Error::from(e)), None)),
    };
    let part = |name: &str| js_sys::Reflect::get(&identity, &name.into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED);
    let writable: web_sys::WritableStream = part("writable").unchecked_into();
    let readable: web_sys::ReadableStream = part("readable").unchecked_into();
    // The first piece is queued (its write settles once the client reads
    // it), then the pipe appends the rest behind it.
    match writable.get_writer() {
        Ok(writer) => {
            let _ = writer.write_with_chunk(&field("value"));
            writer.release_lock();
        }
        Err(e) => return Ok((Err(worker::Error::from(e)), None)),
    }
    // Two branches: one piped natively to the client, one read for the end.
    let branches = stream.tee();
    let to_client: web_sys::ReadableStream = branches.get(0).unchecked_into();
    let to_tail: web_sys::ReadableStream = branches.get(1).unchecked_into();
    let first: js_sys::Uint8Array =
        field("value").dyn_into().unwrap_or_else(|_| js_sys::Uint8Array::new_with_length(0));
    let tail = Tail { rest: to_tail, first, head, watch: pipe.watch() };
    let pipe = JsFuture::from(to_client.pipe_to(&writable));
    let response =
        Response::from_body(ResponseBody::Stream(readable)).map(|r| r.with_status(status).with_headers(headers));
    Ok((response, Some(Piped::Native { pipe, tail, _abort: abort })))
}

/// The first piece of an upstream body, awaited within the idle timeout:
/// `None` when the body is empty; `Err` (why, timed out) when it breaks
/// off or stalls first.
async fn first_piece(
    reader: &web_sys::ReadableStreamDefaultReader,
    idle_ms: u64,
) -> Result<Option<Vec<u8>>, (String, bool)> {
    let read = JsFuture::from(reader.read());
    match select(read, pin!(Delay::from(Duration::from_millis(idle_ms)))).await {
        Either::Left((Ok(chunk), _)) => Ok(piece_of(&chunk)),
        Either::Left((Err(e), _)) => Err((format!("the answer broke off before its first byte: {e:?}"), false)),
        Either::Right(((), _)) => Err((format!("the upstream sent no body for {idle_ms} ms"), true)),
    }
}

/// The bytes of a stream reader's result; `None` once the stream is done.
fn piece_of(chunk: &wasm_bindgen::JsValue) -> Option<Vec<u8>> {
    let field = |name: &str| js_sys::Reflect::get(chunk, &name.into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED);
    if field("done").as_bool().unwrap_or(true) {
        return None;
    }
    Some(field("value").dyn_into::<js_sys::Uint8Array>().map(|a| a.to_vec()).unwrap_or_default())
}

/// Hands a 2xx upstream body to the client translated ([`Pipe::push`]):
/// every piece passes through wasm. As in [`pass_through`], nothing is
/// sent before the first piece; after it, each read races the idle
/// timeout, and a break reaches the client as its API's error event
/// ([`Pipe::broke`]) before its answer is aborted.
pub async fn translate_through(
    upstream: Upstream,
    status: u16,
    headers: &[(String, String)],
    mut pipe: Pipe,
    timeouts: &UpstreamTimeouts,
) -> Result<(worker::Result<Response>, Option<Piped>), (String, bool)> {
    let headers = match headers_of(headers) {
        Ok(h) => h,
        Err(e) => return Ok((Err(e), None)),
    };
    let Upstream { response, abort } = upstream;
    let (_, body) = response.into_parts();
    let ResponseBody::Stream(stream) = body else {
        // A body given whole: translated whole.
        let bytes = match body {
            ResponseBody::Body(bytes) => bytes,
            _ => Vec::new(),
        };
        let mut out = pipe.push(&bytes).into_owned();
        out.extend(pipe.finish());
        return Ok((Response::from_bytes(out).map(|r| r.with_status(status).with_headers(headers)), None));
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let first = match first_piece(&reader, timeouts.idle_ms).await {
        Ok(first) => first,
        Err((why, timed_out)) => {
            if timed_out {
                abort.abort();
            }
            return Err((why, timed_out));
        }
    };
    let Some(first) = first else {
        let out = pipe.finish();
        return Ok((Response::from_bytes(out).map(|r| r.with_status(status).with_headers(headers)), None));
    };
    let identity = match identity_stream() {
        Ok(i) => i,
        Err(e) => return Ok((Err(worker::Error::from(e)), None)),
    };
    let part = |name: &str| js_sys::Reflect::get(&identity, &name.into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED);
    let writable: web_sys::WritableStream = part("writable").unchecked_into();
    let readable: web_sys::ReadableStream = part("readable").unchecked_into();
    let writer = match writable.get_writer() {
        Ok(w) => w,
        Err(e) => return Ok((Err(worker::Error::from(e)), None)),
    };
    // The first piece is queued (its write settles once the client reads it).
    let _ = writer.write_with_chunk(&js_sys::Uint8Array::from(&pipe.push(&first)[..]));
    let idle_ms = timeouts.idle_ms;
    let ended = async move {
        let write = |bytes: &[u8]| JsFuture::from(writer.write_with_chunk(&js_sys::Uint8Array::from(bytes)));
        // One idle timer for the whole stream, re-armed only when it fires
        // early (a timer per read cost more CPU than the translation), and
        // one write in flight while the next piece is read: each costs the
        // runtime a promise and a callback, the CPU a long stream is
        // charged for.
        let mut timer = Box::pin(Delay::from(Duration::from_millis(idle_ms)));
        let mut last_piece = worker::Date::now().as_millis();
        let mut in_flight: Option<JsFuture> = None;
        let result = 'stream: loop {
            let mut read = JsFuture::from(reader.read());
            let chunk = loop {
                match select(&mut read, timer.as_mut()).await {
                    Either::Left((chunk, _)) => break chunk,
                    Either::Right(((), _)) => {
                        let quiet = worker::Date::now().as_millis().saturating_sub(last_piece);
                        if quiet >= idle_ms {
                            abort.abort();
                            break 'stream Err((
                                format!("stream broke off: the upstream sent nothing for {idle_ms} ms"),
                                true,
                            ));
                        }
                        timer.set(Delay::from(Duration::from_millis(idle_ms - quiet)));
                    }
                }
            };
            let piece = match chunk {
                Ok(chunk) => piece_of(&chunk),
                Err(e) => break Err((format!("stream broke off: {e:?}"), true)),
            };
            let Some(piece) = piece else { break Ok(()) };
            last_piece = worker::Date::now().as_millis();
            let out = pipe.push(&piece);
            if out.is_empty() {
                continue;
            }
            if let Some(previous) = in_flight.take()
                && previous.await.is_err()
            {
                break Err(("the client went away".to_owned(), false));
            }
            in_flight = Some(write(&out));
        };
        let delivered = match in_flight.take() {
            Some(previous) => previous.await.is_ok(),
            None => true,
        };
        match result {
            Ok(()) if delivered => {
                if write(&pipe.finish()).await.is_err() {
                    return Err("the client went away".to_owned());
                }
                let _ = JsFuture::from(writer.close()).await;
                Ok(pipe.seen())
            }
            Ok(()) => {
                let _ = JsFuture::from(writer.abort()).await;
                Err("the client went away".to_owned())
            }
            Err((why, upstream_broke)) => {
                if upstream_broke && delivered {
                    let _ = write(&pipe.broke()).await;
                }
                let _ = JsFuture::from(writer.abort()).await;
                Err(why)
            }
        }
    };
    let response =
        Response::from_body(ResponseBody::Stream(readable)).map(|r| r.with_status(status).with_headers(headers));
    Ok((response, Some(Piped::Translated(Box::pin(ended)))))
}

/// workerd's `IdentityTransformStream` (bytes pass natively), else a
/// standard identity `TransformStream`.
fn identity_stream() -> Result<js_sys::Object, wasm_bindgen::JsValue> {
    let class = js_sys::Reflect::get(&js_sys::global(), &"IdentityTransformStream".into())?;
    match class.dyn_into::<js_sys::Function>() {
        Ok(class) => js_sys::Reflect::construct(&class, &js_sys::Array::new())?.dyn_into(),
        Err(_) => Ok(web_sys::TransformStream::new()?.unchecked_into()),
    }
}
