//! Moving requests and bodies through `wasi:http`.

use crate::bindings::wasi::clocks0_2_12::monotonic_clock;
use crate::bindings::wasi::io::poll;
use crate::bindings::wasi::io::streams::{OutputStream, StreamError};
use crate::wasi::{answer_fields, describe, fields_from, wasi_method};
use crate::wasi_http::outgoing_handler;
use crate::wasi_http::types;
use crate::wasi_http::types::{
    ErrorCode, IncomingRequest, IncomingResponse, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};
use proxy_core::config::Scheme as CoreScheme;
use proxy_core::exchange::Pipe;
use proxy_core::exchange::{BodyError, BodyFrom, Event, KeepAlive, UpstreamRequest};
use proxy_core::wire::http::Response;

/// Most bytes one `blocking-write-and-flush` takes.
const WRITE_CHUNK: usize = 4096;
/// How long a failed answer's last bytes are given to leave before its
/// connection is cut.
const CUT_AFTER_NS: u64 = 100_000_000;

/// Most bytes moved per read or splice.
const READ_CHUNK: u64 = 64 * 1024;

/// Sends an answer the exchange made (the proxy's own, or a relayed error).
pub fn respond(out: ResponseOutparam, r: &Response) {
    let response = OutgoingResponse::new(answer_fields(r));
    let _ = response.set_status_code(r.status);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    if write_all(&outgoing, r.body.as_bytes()).is_ok() {
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

/// A client's answer a keep-alive committed: its head went, its body is
/// open (whitespace so far).
pub struct Committed {
    stream: OutputStream,
    body: OutgoingBody,
}

impl Committed {
    /// Sends the client `status` and `headers`: its answer is committed.
    pub fn new(out: ResponseOutparam, status: u16, headers: &[(String, String)]) -> Option<Self> {
        let response = OutgoingResponse::new(fields_from(headers));
        let _ = response.set_status_code(status);
        let body = response.body().ok()?;
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().ok()?;
        Some(Self { stream, body })
    }

    /// One whitespace byte, which every JSON parser skips. A client that
    /// went away is not the upstream's failure: the answer is still
    /// waited for, and counted.
    pub fn keep_alive(&self) {
        let _ = self.stream.blocking_write_and_flush(b" ");
    }

    /// Ends the answer with `bytes`: cleanly, or broken (the body
    /// dropped unfinished, which aborts the client's response), a moment
    /// after `bytes` went, so that the connection carries them before it
    /// is cut.
    pub fn end(self, bytes: &[u8], clean: bool) {
        let Self { stream, body } = self;
        let written = write_stream(&stream, bytes).is_ok();
        if written && clean {
            drop(stream);
            let _ = OutgoingBody::finish(body, None);
            return;
        }
        monotonic_clock::subscribe_duration(CUT_AFTER_NS).block();
        drop(stream);
    }
}

fn write_all(body: &OutgoingBody, bytes: &[u8]) -> Result<(), StreamError> {
    let Ok(stream) = body.write() else { return Err(StreamError::Closed) };
    write_stream(&stream, bytes)
}

fn write_stream(
    stream: &crate::bindings::wasi::io::streams::OutputStream,
    mut bytes: &[u8],
) -> Result<(), StreamError> {
    while !bytes.is_empty() {
        let n = bytes.len().min(WRITE_CHUNK);
        stream.blocking_write_and_flush(&bytes[..n])?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Reads the whole request body, refusing more than `limit` bytes. With a
/// `declared` length (`content-length`), it stops once that many bytes are in
/// rather than asking the host again to learn that the stream ended.
pub fn read_request_body(request: IncomingRequest, declared: Option<u64>, limit: u64) -> Result<Vec<u8>, BodyError> {
    let broken = |why: &str| BodyError::Broken(why.to_owned());
    let body = request.consume().map_err(|()| broken("the request body was already consumed"))?;
    let stream = body.stream().map_err(|()| broken("the request body stream is unavailable"))?;
    let declared = declared.and_then(|n| usize::try_from(n).ok());
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    while declared.is_none_or(|n| buf.len() < n) {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                buf.extend_from_slice(&chunk);
                if buf.len() as u64 > limit {
                    return Err(BodyError::TooLarge);
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => return Err(BodyError::Broken(e.to_debug_string())),
        }
    }
    Ok(buf)
}

/// An upstream request sent, its head still to come.
pub struct Sent {
    pending: outgoing_handler::FutureIncomingResponse,
    keep_alive: Option<KeepAlive>,
    at: std::time::Instant,
}

/// Where an upstream request stands.
pub enum Head {
    /// Its head came.
    Came(IncomingResponse),
    /// Its keep-alive interval passed without one ([`Event::Waiting`]):
    /// waited on again with [`wait`].
    Waiting(Sent),
    /// It failed: the event that tells it.
    Failed(Event),
}

/// Sends an upstream request, its body `body` or, for
/// [`BodyFrom::Client`], the `client`'s own piped through, and waits for
/// its response head ([`wait`]). On failure, the event that tells it: the
/// upstream's ([`Event::SendFailed`]), or the client body's
/// ([`Event::BodyFailed`]).
pub fn send(
    up: &UpstreamRequest,
    body: &[u8],
    client: Option<IncomingRequest>,
    quiet_since: std::time::Instant,
) -> Head {
    let at = std::time::Instant::now();
    let piped = match (up.body, client) {
        (BodyFrom::Client(len), Some(client)) => Some((client, len)),
        (BodyFrom::Client(_), None) => {
            return Head::Failed(Event::BodyFailed(BodyError::Broken("the request body was already read".into())));
        }
        (BodyFrom::Read, _) => None,
    };
    let failed = |(reason, timed_out)| Head::Failed(Event::SendFailed { reason, timed_out });
    let (outgoing, pending) = match start(up) {
        Ok(started) => started,
        Err(e) => return failed(e),
    };
    let sent = match piped {
        Some((client, len)) => pipe(client, &outgoing, len),
        None if up.method.has_body() => {
            write_all(&outgoing, body).map_err(|_| Piping::Upstream("sending the request body upstream failed"))
        }
        None => Ok(()),
    };
    match sent {
        Ok(()) => {
            if let Err(e) = OutgoingBody::finish(outgoing, None) {
                return failed(describe(&e));
            }
        }
        // The upstream request is aborted (its body dropped unfinished).
        Err(Piping::Client(why)) => return Head::Failed(Event::BodyFailed(BodyError::Broken(why))),
        // The upstream may have answered (refused the body) before it took
        // it all: its answer, if one came, else the failure.
        Err(Piping::Upstream(why)) => {
            drop(outgoing);
            return match head(&pending) {
                Ok(response) => Head::Came(response),
                Err(_) => failed((why.to_owned(), false)),
            };
        }
    }
    wait(Sent { pending, keep_alive: up.keep_alive, at }, false, quiet_since)
}

/// Waits for a sent request's head: with a keep-alive, until its interval
/// has passed since the client last got a byte (`quiet_since`: the
/// request's arrival, or the last keep-alive byte), whatever attempt it
/// is; once the client's answer is `committed`, no longer than the
/// keep-alive's wait from sending.
pub fn wait(sent: Sent, committed: bool, quiet_since: std::time::Instant) -> Head {
    let failed = |(reason, timed_out)| Head::Failed(Event::SendFailed { reason, timed_out });
    let Some(keep) = sent.keep_alive else {
        return head(&sent.pending).map_or_else(failed, Head::Came);
    };
    let waited = sent.at.elapsed();
    let wait_for = std::time::Duration::from_millis(keep.wait_ms);
    if committed && waited >= wait_for {
        return failed((format!("no response head within {} ms", keep.wait_ms), true));
    }
    let mut interval = std::time::Duration::from_millis(keep.every_ms).saturating_sub(quiet_since.elapsed());
    if committed {
        interval = interval.min(wait_for - waited);
    }
    let ready = sent.pending.subscribe();
    let timer = monotonic_clock::subscribe_duration(u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX));
    let woke = poll::poll(&[&ready, &timer]);
    drop((ready, timer));
    if woke.contains(&0) { head(&sent.pending).map_or_else(failed, Head::Came) } else { Head::Waiting(sent) }
}

/// Why piping a body upstream stopped.
enum Piping {
    /// Reading the client's body failed, or it ended short: why.
    Client(String),
    /// Writing upstream failed.
    Upstream(&'static str),
}

/// Pipes exactly `len` bytes of the client's request body into `outgoing`,
/// a piece at a time: no more than one piece is held.
fn pipe(client: IncomingRequest, outgoing: &OutgoingBody, len: u64) -> Result<(), Piping> {
    let client_side = |why: &str| Piping::Client(why.to_owned());
    let body = client.consume().map_err(|()| client_side("the request body was already consumed"))?;
    let src = body.stream().map_err(|()| client_side("the request body stream is unavailable"))?;
    let dst = outgoing.write().map_err(|()| Piping::Upstream("the upstream request body is unavailable"))?;
    let mut left = len;
    while left > 0 {
        let piece = match src.blocking_read(left.min(READ_CHUNK)) {
            Ok(piece) => piece,
            Err(StreamError::Closed) => return Err(client_side("it ended before its declared length")),
            Err(StreamError::LastOperationFailed(e)) => return Err(Piping::Client(e.to_debug_string())),
        };
        left = left.saturating_sub(piece.len() as u64);
        write_permitted(&dst, &piece).map_err(|_| Piping::Upstream("sending the request body upstream failed"))?;
    }
    dst.blocking_flush().map_err(|_| Piping::Upstream("sending the request body upstream failed"))
}

/// Writes `bytes` in as few calls as the stream permits (a permit is
/// often far more than [`WRITE_CHUNK`]), waiting when it permits none.
fn write_permitted(
    dst: &crate::bindings::wasi::io::streams::OutputStream,
    mut bytes: &[u8],
) -> Result<(), StreamError> {
    while !bytes.is_empty() {
        let permit = usize::try_from(dst.check_write()?).unwrap_or(usize::MAX);
        if permit == 0 {
            dst.subscribe().block();
            continue;
        }
        let n = permit.min(bytes.len());
        dst.write(&bytes[..n])?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Builds and starts an upstream request: its body to write, and its
/// future answer.
fn start(up: &UpstreamRequest) -> Result<(OutgoingBody, outgoing_handler::FutureIncomingResponse), (String, bool)> {
    let request = OutgoingRequest::new(fields_from(&up.headers));
    let method = wasi_method(&up.method);
    let scheme = match up.scheme {
        CoreScheme::Http => Scheme::Http,
        CoreScheme::Https => Scheme::Https,
    };
    let set = request.set_method(&method).is_ok()
        && request.set_scheme(Some(&scheme)).is_ok()
        && request.set_authority(Some(&up.authority)).is_ok()
        && request.set_path_with_query(Some(&up.path_and_query)).is_ok();
    let other = |why: &str| (why.to_owned(), false);
    if !set {
        return Err(other("the upstream request could not be built"));
    }
    let outgoing = request.body().map_err(|()| other("request body unavailable"))?;
    // No request-options: the timeouts are the host's (host-runner: 10 s to
    // connect, 300 s to the first byte). wasmtime 48 also keeps a passed
    // request-options resource in the store's table for good, which would
    // stop the host from reusing this instance.
    let pending = outgoing_handler::handle(request, None).map_err(|e| describe(&e))?;
    Ok((outgoing, pending))
}

/// Waits for an upstream request's response head.
fn head(pending: &outgoing_handler::FutureIncomingResponse) -> Result<IncomingResponse, (String, bool)> {
    let other = |why: &str| (why.to_owned(), false);
    // The head is rarely there yet: wait first, then take it.
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(response))) => Ok(response),
        Some(Ok(Err(e))) => Err(describe(&e)),
        Some(Err(())) => Err(other("the upstream response was already taken")),
        None => Err(other("the upstream response was not ready after waiting for it")),
    }
}

/// Reads up to `limit` bytes of an upstream answer's body; the rest is
/// dropped with the response.
pub fn read_body(response: IncomingResponse, limit: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Ok(body) = response.consume()
        && let Ok(stream) = body.stream()
    {
        while buf.len() < limit {
            let want = (limit - buf.len()).min(READ_CHUNK as usize) as u64;
            match stream.blocking_read(want) {
                Ok(chunk) => buf.extend_from_slice(&chunk),
                Err(_) => break,
            }
        }
    }
    buf.truncate(limit);
    buf
}

/// Streams a 2xx upstream answer to the client as it arrives. Nothing is
/// sent before the first piece of the upstream body: if the body fails (or
/// stalls past the host's idle timeout) before it, the client's `out` is
/// left for another attempt. On an upstream failure later on, the client's
/// response is aborted (not ended cleanly), so the client sees the break.
/// An answer a keep-alive `committed` gets only the body.
pub fn stream_response(
    response: IncomingResponse,
    out: &mut Option<ResponseOutparam>,
    committed: &mut Option<Committed>,
    status: u16,
    headers: &[(String, String)],
    mut pipe: Pipe,
    timing: &crate::Timing,
) -> Event {
    let early = |reason: String, timed_out| Event::StreamFailedEarly { reason, timed_out };
    let Ok(incoming) = response.consume() else { return early("upstream body unavailable".into(), false) };
    let Ok(src) = incoming.stream() else { return early("upstream body unavailable".into(), false) };
    let first = match src.blocking_read(READ_CHUNK) {
        Ok(bytes) => bytes,
        Err(StreamError::Closed) => Vec::new(),
        Err(StreamError::LastOperationFailed(e)) => {
            let timed_out = matches!(types::http_error_code(&e), Some(ErrorCode::ConnectionReadTimeout));
            return early(format!("the answer broke off before its first byte: {}", e.to_debug_string()), timed_out);
        }
    };
    let (outgoing, dst) = match committed.take() {
        Some(Committed { stream, body }) => (body, stream),
        None => {
            let Some(out) = out.take() else { return Event::Streamed(Err("the answer was already sent".into())) };
            timing.answered();
            let outgoing_response = OutgoingResponse::new(fields_from(headers));
            let _ = outgoing_response.set_status_code(status);
            let Ok(outgoing) = outgoing_response.body() else {
                return Event::Streamed(Err("response body unavailable".into()));
            };
            ResponseOutparam::set(out, Ok(outgoing_response));
            let Ok(dst) = outgoing.write() else { return Event::Streamed(Err("response body unavailable".into())) };
            (outgoing, dst)
        }
    };
    // Each piece passes through the guest (rather than a host-side splice)
    // so that the answer's end, with its token usage, can be read, and a
    // translated answer translated.
    if write_stream(&dst, &pipe.push(&first)).is_err() {
        return Event::Streamed(Err("the client went away".into()));
    }
    let result = loop {
        match src.blocking_read(READ_CHUNK) {
            Ok(piece) => {
                if write_stream(&dst, &pipe.push(&piece)).is_err() {
                    break Err("the client went away".to_owned());
                }
            }
            Err(StreamError::Closed) => break Ok(()),
            Err(StreamError::LastOperationFailed(e)) => {
                // The client hears of the break in its API's words, if it
                // has them, before the answer ends broken.
                let _ = write_stream(&dst, &pipe.broke());
                break Err(format!("stream broke off: {}", e.to_debug_string()));
            }
        }
    };
    let result =
        result.and_then(|()| write_stream(&dst, &pipe.finish()).map_err(|_| "the client went away".to_owned()));
    drop(src);
    drop(dst);
    match result {
        // The upstream body is dropped rather than finished: trailers are
        // not relayed, and finishing would cost two more host calls.
        Ok(()) => {
            let _ = dst_finish(outgoing);
            drop(incoming);
            Event::Streamed(Ok(pipe.seen()))
        }
        // Dropping the outgoing body unfinished aborts the client's response.
        Err(e) => Event::Streamed(Err(e)),
    }
}

fn dst_finish(body: OutgoingBody) -> Result<(), ErrorCode> {
    OutgoingBody::finish(body, None)
}
