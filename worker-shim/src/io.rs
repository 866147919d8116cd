//! Moving requests, bodies and answers through the Workers runtime, within
//! the upstream timeouts: every upstream fetch carries an abort signal; the
//! wait for its head races a timer, and so does every read of its body.

use futures_channel::oneshot;
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use proxy_core::config::UpstreamTimeouts;
use proxy_core::forward::{BodyError, Event, UpstreamRequest};
use proxy_core::http::Response as CoreResponse;
use std::cell::Cell;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use wasm_bindgen_futures::JsFuture;
use worker::{
    AbortController, ByteStream, Date, Delay, Fetch, Headers, Method, Request, RequestInit, Response, ResponseBody,
    js_sys,
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

/// Sends an upstream request, waiting for its head no longer than the
/// first-byte timeout.
pub async fn send(up: &UpstreamRequest, body: &[u8], timeouts: &UpstreamTimeouts) -> (Option<Upstream>, Event) {
    let abort = AbortController::default();
    let sent = pin!(fetch(up, body, abort.signal()));
    let first_byte = pin!(Delay::from(Duration::from_millis(timeouts.first_byte_ms)));
    match select(sent, first_byte).await {
        Either::Left((Ok(r), _)) => {
            let headers = r.headers().entries().map(|(k, v)| (k, v.into_bytes())).collect();
            let status = r.status_code();
            (Some(Upstream { response: r, abort }), Event::Head { status, headers })
        }
        Either::Left((Err(e), _)) => (None, Event::SendFailed { reason: e.to_string(), timed_out: false }),
        Either::Right(((), _)) => {
            abort.abort();
            let reason = format!("no response head within {} ms", timeouts.first_byte_ms);
            (None, Event::SendFailed { reason, timed_out: true })
        }
    }
}

async fn fetch(up: &UpstreamRequest, body: &[u8], signal: worker::AbortSignal) -> worker::Result<Response> {
    let mut init = RequestInit::new();
    init.with_method(Method::from(up.method.as_str().to_owned())).with_headers(headers_of(&up.headers)?);
    if up.method.has_body() {
        init.with_body(Some(js_sys::Uint8Array::from(body).into()));
    }
    Fetch::Request(Request::new_with_init(&up.url(), &init)?).send_with_signal(&signal).await
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

/// A streamed answer on its way to the client: its pipe settles when the
/// stream ends; a stall longer than the idle timeout breaks it off.
pub struct Piped {
    pipe: JsFuture,
    /// How the pipe settled, once it has.
    settled: Option<Result<(), String>>,
    first_piece: Option<oneshot::Receiver<()>>,
    last_piece: Rc<Cell<f64>>,
    abort: AbortController,
    _transform: Closure<dyn FnMut(wasm_bindgen::JsValue, web_sys::TransformStreamDefaultController)>,
}

impl Piped {
    /// Waits for the first piece of the body (or its clean, empty end);
    /// `Err` (why, timed out) when it broke off or stalled before.
    pub async fn first_piece(&mut self, timeouts: &UpstreamTimeouts) -> Result<(), (String, bool)> {
        let Some(first) = self.first_piece.take() else { return Ok(()) };
        let stall = pin!(Delay::from(Duration::from_millis(timeouts.idle_ms)));
        match select(first, select(&mut self.pipe, stall)).await {
            Either::Left(_) => Ok(()),
            Either::Right((Either::Left((settled, _)), _)) => {
                let settled = settled.map(drop).map_err(|e| format!("{e:?}"));
                self.settled = Some(settled.clone());
                settled.map_err(|e| (format!("the answer broke off before its first byte: {e}"), false))
            }
            Either::Right((Either::Right(((), _)), _)) => {
                Err((format!("the upstream sent no body for {} ms", timeouts.idle_ms), true))
            }
        }
    }

    /// Breaks the upstream request off.
    pub fn abort(self) {
        self.abort.abort();
    }

    /// How the stream ended.
    pub async fn ended(self, timeouts: &UpstreamTimeouts) -> Result<(), String> {
        let Self { mut pipe, settled, first_piece: _, last_piece, abort, _transform } = self;
        if let Some(settled) = settled {
            return settled.map_err(|e| format!("stream broke off: {e}"));
        }
        let idle = timeouts.idle_ms as f64;
        loop {
            let quiet = Date::now().as_millis() as f64 - last_piece.get();
            let wait = Duration::from_millis((idle - quiet).max(1.0) as u64);
            match select(&mut pipe, pin!(Delay::from(wait))).await {
                Either::Left((ended, _)) => return ended.map(drop).map_err(|e| format!("stream broke off: {e:?}")),
                Either::Right(((), _)) if Date::now().as_millis() as f64 - last_piece.get() >= idle => {
                    abort.abort();
                    return Err(format!("the upstream sent nothing for {} ms", timeouts.idle_ms));
                }
                Either::Right(_) => {}
            }
        }
    }
}

/// The upstream body handed to the client as it is (no byte passes through
/// wasm), through an identity stream that notes when each piece passes.
pub fn pass_through(
    upstream: Upstream,
    status: u16,
    headers: &[(String, String)],
) -> worker::Result<(Response, Option<Piped>)> {
    let headers = headers_of(headers)?;
    let Upstream { response, abort } = upstream;
    let (_, body) = response.into_parts();
    let ResponseBody::Stream(stream) = body else {
        return Ok((Response::from_body(body)?.with_status(status).with_headers(headers), None));
    };
    let last_piece = Rc::new(Cell::new(Date::now().as_millis() as f64));
    let noted = last_piece.clone();
    let (first, first_piece) = oneshot::channel();
    let mut first = Some(first);
    let transform = Closure::<dyn FnMut(wasm_bindgen::JsValue, web_sys::TransformStreamDefaultController)>::new(
        move |chunk: wasm_bindgen::JsValue, controller: web_sys::TransformStreamDefaultController| {
            noted.set(Date::now().as_millis() as f64);
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
            let _ = controller.enqueue_with_chunk(&chunk);
        },
    );
    let transformer = js_sys::Object::new();
    js_sys::Reflect::set(&transformer, &"transform".into(), transform.as_ref().unchecked_ref())
        .map_err(worker::Error::from)?;
    // The readable side holds one piece before anyone reads it, so that the
    // first piece passes (and is noticed) before the answer is handed out;
    // with the default of none, nothing would move until the client read.
    let writable = web_sys::QueuingStrategy::new();
    let readable = web_sys::QueuingStrategy::new();
    readable.set_high_water_mark(1.0);
    let identity = web_sys::TransformStream::new_with_transformer_and_writable_strategy_and_readable_strategy(
        &transformer,
        &writable,
        &readable,
    )
    .map_err(worker::Error::from)?;
    let pipe = JsFuture::from(stream.pipe_to(&identity.writable()));
    let readable: web_sys::ReadableStream = identity.readable().unchecked_into();
    let response = Response::from_body(ResponseBody::Stream(readable))?.with_status(status).with_headers(headers);
    let piped = Piped { pipe, settled: None, first_piece: Some(first_piece), last_piece, abort, _transform: transform };
    Ok((response, Some(piped)))
}
