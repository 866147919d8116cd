//! Connection hygiene: how long a connection may take to send a request
//! head, how long it may sit idle between requests, and how many may be
//! open at once; and the open-file limit that lets that many exist.
//!
//! The clock of a connection runs only while no request is in flight: from
//! the request's head to the end of its response body (an SSE answer of
//! many minutes included), nothing here ever cuts it. A hung upstream is
//! the upstream timeouts' business.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The limits of client connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request head must be complete within this long of a new
    /// connection, or of its first byte on a kept-alive one.
    pub header_timeout: Duration,
    /// A kept-alive connection may wait this long for its next request.
    pub idle_timeout: Duration,
    /// At most this many connections are open at once; more are answered
    /// with a 503 and closed.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), idle_timeout: Duration::from_secs(60), max_connections: 4096 }
    }
}

const NONE: u64 = u64::MAX;

/// What the server knows of one connection's activity.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    bytes_read: AtomicU64,
    in_flight: AtomicU32,
    served: AtomicU32,
    /// Milliseconds since `start` when it last went idle.
    idle_since: AtomicU64,
    bytes_at_idle: AtomicU64,
    /// Milliseconds since `start` of the first byte read after going idle.
    first_byte: AtomicU64,
    changed: Notify,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            bytes_read: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            served: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            bytes_at_idle: AtomicU64::new(0),
            first_byte: AtomicU64::new(NONE),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A request's head arrived: no clock runs until its response ends.
    /// The returned guard ends it when dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn read(&self, n: usize) {
        let before = self.bytes_read.fetch_add(n as u64, Ordering::SeqCst);
        if before == self.bytes_at_idle.load(Ordering::SeqCst) {
            let _ = self.first_byte.compare_exchange(NONE, self.now_ms(), Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// When the connection's clock runs out, if it runs at all.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let ms = |d: Duration| d.as_millis() as u64;
        let first_byte = self.first_byte.load(Ordering::SeqCst);
        let at = if first_byte != NONE {
            first_byte + ms(limits.header_timeout)
        } else if self.served.load(Ordering::SeqCst) == 0 {
            ms(limits.header_timeout)
        } else {
            self.idle_since.load(Ordering::SeqCst) + ms(limits.idle_timeout)
        };
        Some(self.start + Duration::from_millis(at))
    }

    /// Waits until the connection has been silent too long (never returns
    /// while a request is in flight).
    pub async fn expired(&self, limits: &ConnectionLimits) {
        loop {
            let changed = self.changed.notified();
            match self.deadline(limits) {
                None => changed.await,
                Some(at) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(at) => {
                            if self.deadline(limits).is_some_and(|d| d <= Instant::now()) {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A request in flight on a connection; dropping it (the response body
/// ended or was dropped) starts the idle clock.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            a.served.fetch_add(1, Ordering::SeqCst);
            a.bytes_at_idle.store(a.bytes_read.load(Ordering::SeqCst), Ordering::SeqCst);
            a.first_byte.store(NONE, Ordering::SeqCst);
            a.idle_since.store(a.now_ms(), Ordering::SeqCst);
        }
        a.changed.notify_one();
    }
}

/// A connection's socket, counting what it reads.
#[derive(Debug)]
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.read(n);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises the soft limit of open files to the hard limit; returns both
/// (before, after), or `None` where the platform has no such limit.
pub fn raise_open_file_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let before = limit.current?;
        let hard = limit.maximum;
        let target = hard.unwrap_or(before.max(1 << 20));
        if target > before
            && setrlimit(Resource::Nofile, rustix::process::Rlimit { current: Some(target), maximum: hard }).is_ok()
        {
            return Some((before, target));
        }
        Some((before, before))
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(header: u64, idle: u64) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_millis(header),
            idle_timeout: Duration::from_millis(idle),
            max_connections: 1,
        }
    }

    // Real time, short timeouts: a lower bound proves which timeout ran (a
    // loaded machine only makes a wait longer), a loose upper bound that it
    // ended.
    #[tokio::test]
    async fn a_silent_connection_expires_after_the_header_timeout() {
        let a = Activity::new();
        let started = tokio::time::Instant::now();
        a.expired(&limits(100, 5_000)).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(4), "{waited:?}");
    }

    #[tokio::test]
    async fn a_request_in_flight_never_expires_and_idling_after_it_does() {
        let a = Activity::new();
        let l = limits(50, 400);
        let guard = a.request_started();
        // Ten header timeouts and more than the idle one: still in flight.
        let waited = tokio::time::timeout(Duration::from_millis(600), a.expired(&l)).await;
        assert!(waited.is_err(), "a long stream was cut");
        drop(guard);
        let started = tokio::time::Instant::now();
        a.expired(&l).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(400),
            "the idle timeout after a request, not the header one: {waited:?}"
        );
        assert!(waited < Duration::from_secs(10), "{waited:?}");
    }
}
