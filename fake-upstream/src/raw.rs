//! Misbehaviour below HTTP: a connection reset, or bytes that are not HTTP
//! at all. When such a behaviour is scripted, every connection carries one
//! request, whose head the fake reads itself: a key that misbehaves gets
//! its misbehaviour on the raw socket, any other key's request is replayed
//! to the HTTP server.

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The most head bytes read before giving up on a request.
const MAX_HEAD: usize = 64 * 1024;

/// A request head as read from the socket.
pub struct Head {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads one request head (and returns every byte read, the head and what
/// followed it), or `None` when the peer sent no complete head.
pub async fn read_head(stream: &mut TcpStream) -> Option<(Vec<u8>, Head)> {
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target) = (request_line.next()?.to_owned(), request_line.next()?.to_owned());
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((buf, Head { method, target, headers }))
}

/// Reads the rest of a body of `content-length` bytes whose first bytes
/// are in `already` (after the head).
pub async fn read_body(stream: &mut TcpStream, mut already: Vec<u8>, length: usize) -> Vec<u8> {
    while already.len() < length.min(32 << 20) {
        let mut chunk = vec![0u8; 64 * 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => already.extend_from_slice(&chunk[..n]),
        }
    }
    already.truncate(length);
    already
}

/// Closes the connection with a TCP reset.
pub fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// What a broken upstream answers instead of HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Garbage {
    /// Bytes that are not HTTP at all.
    NotHttp,
    /// A status line whose code is not a number (`HTTP/1.1 abc OK`).
    Status,
    /// A header line without a colon.
    Header,
    /// A `content-length` that is not a number.
    Length,
    /// A status line whose code is not a number, the connection then held
    /// open (no close to end the answer).
    StatusOpen,
}

/// Answers with `shape`'s bytes, then closes.
pub async fn garbage(mut stream: TcpStream, shape: Garbage) {
    let bytes: &[u8] = match shape {
        Garbage::NotHttp => b"\x16\x03\x01\x00\xa5 this is not HTTP \x00\xff\r\n\r\n",
        Garbage::Status => b"HTTP/1.1 abc OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        Garbage::Header => b"HTTP/1.1 200 OK\r\nthis line is no header\r\ncontent-length: 2\r\n\r\n{}",
        Garbage::Length => b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: abc\r\n\r\n{}",
        Garbage::StatusOpen => b"HTTP/1.1 abc OK\r\ncontent-type: application/json\r\n\r\n",
    };
    let _ = stream.write_all(bytes).await;
    if shape == Garbage::StatusOpen {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
    let _ = stream.shutdown().await;
}

/// A socket whose first bytes were already read: they are read again first.
pub struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl Prefixed {
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Self {
        Self { prefix, at: 0, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
