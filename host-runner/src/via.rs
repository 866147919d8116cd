//! Upstream connections through an outbound proxy (`UPSTREAM_PROXY`, a
//! project's proxy): a tunnel by HTTP `CONNECT` (over TLS to an
//! `https://` proxy) or SOCKS5, and a connector for the pooled client that
//! uses it, so that TLS to Google runs end to end inside the tunnel.
//!
//! Every failure here is an [`io::Error`] whose message starts with
//! "the outbound proxy" and its masked URL: the caller can tell a proxy's
//! failure from Google's, and no password ever reaches a message or a log.

use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use proxy_core::wire::proxy::{ProxyScheme, ProxyUrl};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

/// The most a proxy's answer to `CONNECT` may hold before its end.
const MAX_CONNECT_HEAD: usize = 8 * 1024;

/// A byte stream to the upstream through the proxy, after the handshake.
pub enum ProxiedStream {
    /// Through an `http://` or SOCKS5 proxy.
    Plain(TcpStream),
    /// Through an `https://` proxy (TLS to the proxy itself).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for ProxiedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "ProxiedStream::Plain",
            Self::Tls(_) => "ProxiedStream::Tls",
        })
    }
}

impl AsyncRead for ProxiedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ProxiedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A failure of `proxy`, in words that name it masked.
fn fail(proxy: &ProxyUrl, kind: io::ErrorKind, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(kind, format!("the outbound proxy {} {what}", proxy.masked()))
}

/// `host:port` as a request line holds it (an IPv6 address in brackets).
fn target(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Opens a byte stream to `host:port` through `proxy`: the TCP connection,
/// TLS to an `https://` proxy and the proxy's handshake, all within
/// `connect_timeout` (else an error of kind [`io::ErrorKind::TimedOut`]).
/// `tls` is used only to reach an `https://` proxy; TLS to `host` is the
/// caller's.
pub async fn tunnel(
    proxy: &ProxyUrl,
    host: &str,
    port: u16,
    connect_timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
) -> io::Result<ProxiedStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::time::timeout(connect_timeout, open(proxy, host, port, tls)).await {
        Ok(stream) => stream,
        Err(_) => Err(fail(
            proxy,
            io::ErrorKind::TimedOut,
            format_args!("did not open a tunnel to {} within {} ms", target(host, port), connect_timeout.as_millis()),
        )),
    }
}

async fn open(proxy: &ProxyUrl, host: &str, port: u16, tls: &Arc<rustls::ClientConfig>) -> io::Result<ProxiedStream> {
    let tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|e| fail(proxy, e.kind(), format_args!("could not be reached: {e}")))?;
    tcp.set_nodelay(true).map_err(|e| fail(proxy, e.kind(), format_args!("refused TCP_NODELAY: {e}")))?;
    match proxy.scheme {
        ProxyScheme::Http => {
            let mut tcp = tcp;
            http_connect(proxy, &mut tcp, host, port).await?;
            Ok(ProxiedStream::Plain(tcp))
        }
        ProxyScheme::Https => {
            let name = rustls::pki_types::ServerName::try_from(proxy.host.clone())
                .map_err(|_| fail(proxy, io::ErrorKind::InvalidInput, "has a host name that TLS cannot check"))?;
            let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| fail(proxy, e.kind(), format_args!("failed the TLS handshake: {e}")))?;
            http_connect(proxy, &mut stream, host, port).await?;
            Ok(ProxiedStream::Tls(Box::new(stream)))
        }
        ProxyScheme::Socks5 | ProxyScheme::Socks5h => {
            let mut tcp = tcp;
            socks5_connect(proxy, &mut tcp, host, port).await?;
            Ok(ProxiedStream::Plain(tcp))
        }
    }
}

/// An HTTP proxy's `CONNECT`: the request, then its answer's head read up
/// to its blank line and no further (what follows is the upstream's).
async fn http_connect<S>(proxy: &ProxyUrl, stream: &mut S, host: &str, port: u16) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = target(host, port);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = proxy.basic_auth() {
        request.push_str("Proxy-Authorization: ");
        request.push_str(&auth);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let broken = |e: io::Error| fail(proxy, e.kind(), format_args!("broke off the CONNECT exchange: {e}"));
    stream.write_all(request.as_bytes()).await.map_err(broken)?;
    stream.flush().await.map_err(broken)?;

    let mut head = Vec::with_capacity(128);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_HEAD {
            return Err(fail(proxy, io::ErrorKind::InvalidData, "answered CONNECT with a head over 8 KiB"));
        }
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.map_err(broken)? == 0 {
            return Err(fail(proxy, io::ErrorKind::UnexpectedEof, "closed the connection before answering CONNECT"));
        }
        head.push(byte[0]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let status = std::str::from_utf8(line)
        .ok()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .filter(|code| code.len() == 3)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| fail(proxy, io::ErrorKind::InvalidData, "answered CONNECT with something not HTTP"))?;
    match status {
        200..=299 => Ok(()),
        407 => Err(fail(proxy, io::ErrorKind::PermissionDenied, "answered CONNECT with 407 (its login was refused)")),
        _ => Err(fail(proxy, io::ErrorKind::ConnectionRefused, format_args!("answered CONNECT with {status}"))),
    }
}

/// A SOCKS5 proxy's handshake (RFC 1928, with RFC 1929's login): a
/// `CONNECT` to `host:port`, its name sent as is by `socks5h://` and
/// resolved here by `socks5://`.
async fn socks5_connect(proxy: &ProxyUrl, stream: &mut TcpStream, host: &str, port: u16) -> io::Result<()> {
    let broken = |e: io::Error| fail(proxy, e.kind(), format_args!("broke off the SOCKS5 handshake: {e}"));
    let not_socks = || fail(proxy, io::ErrorKind::InvalidData, "does not speak SOCKS5");

    let greeting: &[u8] = if proxy.auth.is_some() { &[5, 2, 0, 2] } else { &[5, 1, 0] };
    stream.write_all(greeting).await.map_err(broken)?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await.map_err(broken)?;
    if choice[0] != 5 {
        return Err(not_socks());
    }
    match (choice[1], &proxy.auth) {
        (0, _) => {}
        (2, Some((user, password))) => {
            let (user, password) = (user.as_bytes(), password.as_bytes());
            let (Ok(ulen), Ok(plen)) = (u8::try_from(user.len()), u8::try_from(password.len())) else {
                return Err(fail(proxy, io::ErrorKind::InvalidInput, "has a user or password over 255 bytes"));
            };
            let mut login = Vec::with_capacity(3 + user.len() + password.len());
            login.extend_from_slice(&[1, ulen]);
            login.extend_from_slice(user);
            login.push(plen);
            login.extend_from_slice(password);
            stream.write_all(&login).await.map_err(broken)?;
            let mut status = [0u8; 2];
            stream.read_exact(&mut status).await.map_err(broken)?;
            if status[1] != 0 {
                return Err(fail(proxy, io::ErrorKind::PermissionDenied, "refused the login"));
            }
        }
        (0xFF, None) => return Err(fail(proxy, io::ErrorKind::PermissionDenied, "asks for a login")),
        (0xFF, Some(_)) => {
            return Err(fail(
                proxy,
                io::ErrorKind::PermissionDenied,
                "accepts neither a user and password nor no login",
            ));
        }
        (method, _) => {
            return Err(fail(
                proxy,
                io::ErrorKind::InvalidData,
                format_args!("chose login method {method}, not offered"),
            ));
        }
    }

    let mut request = vec![5, 1, 0];
    let literal = host.parse::<IpAddr>().ok();
    let address = match (proxy.scheme, literal) {
        (_, Some(ip)) => Some(ip),
        (ProxyScheme::Socks5h, None) => None,
        (_, None) => {
            let resolved = tokio::net::lookup_host((host, port)).await.map_err(|e| {
                fail(proxy, e.kind(), format_args!("is socks5://, so {host} is resolved here, which failed: {e}"))
            })?;
            let first = resolved.map(|a| a.ip()).next().ok_or_else(|| {
                fail(proxy, io::ErrorKind::NotFound, format_args!("is socks5://, and {host} resolves to no address"))
            })?;
            Some(first)
        }
    };
    match address {
        Some(IpAddr::V4(v4)) => {
            request.push(1);
            request.extend_from_slice(&v4.octets());
        }
        Some(IpAddr::V6(v6)) => {
            request.push(4);
            request.extend_from_slice(&v6.octets());
        }
        None => {
            let len = u8::try_from(host.len())
                .map_err(|_| fail(proxy, io::ErrorKind::InvalidInput, "cannot be sent a host name over 255 bytes"))?;
            request.extend_from_slice(&[3, len]);
            request.extend_from_slice(host.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await.map_err(broken)?;

    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await.map_err(broken)?;
    if reply[0] != 5 {
        return Err(not_socks());
    }
    if reply[1] != 0 {
        let (kind, words) = socks5_reply(reply[1]);
        return Err(fail(
            proxy,
            kind,
            format_args!("could not connect to {}: {words} (SOCKS5 reply {})", target(host, port), reply[1]),
        ));
    }
    // The address the proxy bound, then its port: read and set aside.
    let bound = match reply[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await.map_err(broken)?;
            usize::from(len[0])
        }
        other => {
            return Err(fail(proxy, io::ErrorKind::InvalidData, format_args!("answered with address type {other}")));
        }
    };
    let mut rest = vec![0u8; bound + 2];
    stream.read_exact(&mut rest).await.map_err(broken)?;
    Ok(())
}

/// A SOCKS5 reply code (RFC 1928 §6) in words, with its nearest kind.
fn socks5_reply(code: u8) -> (io::ErrorKind, &'static str) {
    use io::ErrorKind as K;
    match code {
        1 => (K::Other, "general failure"),
        2 => (K::PermissionDenied, "not allowed by its rules"),
        3 => (K::NetworkUnreachable, "network unreachable"),
        4 => (K::HostUnreachable, "host unreachable"),
        5 => (K::ConnectionRefused, "connection refused"),
        6 => (K::Other, "TTL expired"),
        7 => (K::Unsupported, "command not supported"),
        8 => (K::Unsupported, "address type not supported"),
        _ => (K::Other, "an unknown reply code"),
    }
}

/// The pooled client's connector: straight to the upstream without a
/// proxy, through [`tunnel`] with one. hyper-rustls wraps it, so TLS to the
/// upstream runs inside the tunnel.
#[derive(Clone)]
pub struct ViaConnector {
    proxy: Option<Arc<ProxyUrl>>,
    direct: HttpConnector,
    connect_timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ViaConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The proxy's `Debug` is its masked URL.
        f.debug_struct("ViaConnector")
            .field("proxy", &self.proxy)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl ViaConnector {
    /// Connects through `proxy` if there is one (each tunnel opened within
    /// `connect_timeout`, TLS to an `https://` proxy by `tls`), else by
    /// `direct`.
    pub fn new(
        proxy: Option<ProxyUrl>,
        direct: HttpConnector,
        connect_timeout: Duration,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        Self { proxy: proxy.map(Arc::new), direct, connect_timeout, tls }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for ViaConnector {
    type Response = ViaStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ViaStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.proxy {
            None => self.direct.poll_ready(cx).map_err(Into::into),
            Some(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let Some(proxy) = self.proxy.clone() else {
            let connecting = self.direct.call(uri);
            return Box::pin(async move { Ok(ViaStream(Via::Direct(connecting.await?))) });
        };
        let (connect_timeout, tls) = (self.connect_timeout, self.tls.clone());
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a URI without a host"))?;
            let port = uri.port_u16().unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 });
            let stream = tunnel(&proxy, host, port, connect_timeout, &tls).await?;
            Ok(ViaStream(Via::Proxied(TokioIo::new(stream))))
        })
    }
}

/// A connection [`ViaConnector`] made: straight, or through the proxy.
pub struct ViaStream(Via);

enum Via {
    Direct(TokioIo<TcpStream>),
    Proxied(TokioIo<ProxiedStream>),
}

impl std::fmt::Debug for ViaStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Via::Direct(_) => "ViaStream::Direct",
            Via::Proxied(_) => "ViaStream::Proxied",
        })
    }
}

impl Connection for ViaStream {
    fn connected(&self) -> Connected {
        match &self.0 {
            Via::Direct(s) => s.connected(),
            // A tunnel: the client speaks to the upstream as if directly
            // (not a forwarding proxy's absolute-URI requests).
            Via::Proxied(_) => Connected::new(),
        }
    }
}

impl hyper::rt::Read for ViaStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Via::Direct(s) => hyper::rt::Read::poll_read(Pin::new(s), cx, buf),
            Via::Proxied(s) => hyper::rt::Read::poll_read(Pin::new(s), cx, buf),
        }
    }
}

impl hyper::rt::Write for ViaStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Via::Direct(s) => hyper::rt::Write::poll_write(Pin::new(s), cx, buf),
            Via::Proxied(s) => hyper::rt::Write::poll_write(Pin::new(s), cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Via::Direct(s) => hyper::rt::Write::poll_flush(Pin::new(s), cx),
            Via::Proxied(s) => hyper::rt::Write::poll_flush(Pin::new(s), cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Via::Direct(s) => hyper::rt::Write::poll_shutdown(Pin::new(s), cx),
            Via::Proxied(s) => hyper::rt::Write::poll_shutdown(Pin::new(s), cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Via::Direct(s) => hyper::rt::Write::is_write_vectored(s),
            Via::Proxied(s) => hyper::rt::Write::is_write_vectored(s),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Via::Direct(s) => hyper::rt::Write::poll_write_vectored(Pin::new(s), cx, bufs),
            Via::Proxied(s) => hyper::rt::Write::poll_write_vectored(Pin::new(s), cx, bufs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use tokio::net::TcpListener;

    const WAIT: Duration = Duration::from_secs(5);

    /// The test certificate (`tests/tls`), for `localhost` and `127.0.0.1`.
    fn tls_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls")
    }

    /// A client configuration that trusts the test certificate.
    fn client_tls() -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(tls_dir().join("cert.pem")).expect("cert");
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.expect("cert")).expect("root");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    fn server_tls() -> Arc<rustls::ServerConfig> {
        crate::tls::server_config(&tls_dir().join("cert.pem"), &tls_dir().join("key.pem")).expect("server tls")
    }

    async fn listen() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        (listener, port)
    }

    /// Reads up to the end of an HTTP head, byte by byte.
    async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if s.read(&mut b).await.ok()? == 0 || head.len() > 16 * 1024 {
                return None;
            }
            head.push(b[0]);
        }
        String::from_utf8(head).ok()
    }

    /// A tiny HTTP server (over TLS when `tls`) that answers "ok" to anything.
    async fn ok_server(tls: Option<Arc<rustls::ServerConfig>>) -> u16 {
        async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
            if read_head(&mut s).await.is_some() {
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = s.write_all(ok).await;
                let _ = s.shutdown().await;
            }
        }
        let (listener, port) = listen().await;
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(config) => {
                            if let Ok(s) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                                answer(s).await;
                            }
                        }
                        None => answer(tcp).await,
                    }
                });
            }
        });
        port
    }

    /// What the CONNECT proxy was asked.
    #[derive(Debug, Clone, PartialEq)]
    struct ConnectSeen {
        target: String,
        auth: Option<String>,
    }

    /// An HTTP CONNECT proxy (over TLS when `tls`): 407 unless the request
    /// carries `auth` (when given), else 200 and the bytes copied both ways.
    async fn connect_proxy(
        auth: Option<String>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> (u16, Arc<Mutex<Vec<ConnectSeen>>>) {
        async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
            mut s: S,
            auth: Option<String>,
            seen: Arc<Mutex<Vec<ConnectSeen>>>,
        ) {
            let Some(head) = read_head(&mut s).await else { return };
            let mut lines = head.split("\r\n");
            let first = lines.next().unwrap_or_default();
            let Some(target) = first.strip_prefix("CONNECT ").and_then(|r| r.strip_suffix(" HTTP/1.1")) else {
                return;
            };
            let given = lines.find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("proxy-authorization").then(|| value.trim().to_owned())
            });
            seen.lock().expect("seen").push(ConnectSeen { target: target.to_owned(), auth: given.clone() });
            if auth.is_some() && given != auth {
                let refusal = "HTTP/1.1 407 Proxy Authentication Required\r\n\
                               Proxy-Authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\n\r\n";
                let _ = s.write_all(refusal.as_bytes()).await;
                return;
            }
            let Ok(mut upstream) = TcpStream::connect(target).await else {
                let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
                return;
            };
            if s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut s, &mut upstream).await;
            }
        }
        let (listener, port) = listen().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (tls, auth, seen) = (tls.clone(), auth.clone(), record.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(config) => {
                            if let Ok(s) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                                serve(s, auth, seen).await;
                            }
                        }
                        None => serve(tcp, auth, seen).await,
                    }
                });
            }
        });
        (port, seen)
    }

    /// What the SOCKS5 server was asked: the address type and the target.
    type SocksSeen = Arc<Mutex<Vec<(u8, String)>>>;

    /// A SOCKS5 server: no login, or a user and password (a wrong one
    /// refused); domain, IPv4 and IPv6 targets, a loopback IP reached on
    /// 127.0.0.1 (where the test servers listen).
    async fn socks_server(login: Option<(&'static str, &'static str)>) -> (u16, SocksSeen) {
        async fn serve(mut s: TcpStream, login: Option<(&'static str, &'static str)>, seen: SocksSeen) -> Option<()> {
            let mut hello = [0u8; 2];
            s.read_exact(&mut hello).await.ok()?;
            let mut methods = vec![0u8; usize::from(hello[1])];
            s.read_exact(&mut methods).await.ok()?;
            let wanted = if login.is_some() { 2 } else { 0 };
            if hello[0] != 5 || !methods.contains(&wanted) {
                s.write_all(&[5, 0xFF]).await.ok()?;
                return None;
            }
            s.write_all(&[5, wanted]).await.ok()?;
            if let Some((user, password)) = login {
                let mut len = [0u8; 2];
                s.read_exact(&mut len).await.ok()?;
                let mut u = vec![0u8; usize::from(len[1])];
                s.read_exact(&mut u).await.ok()?;
                let mut plen = [0u8; 1];
                s.read_exact(&mut plen).await.ok()?;
                let mut p = vec![0u8; usize::from(plen[0])];
                s.read_exact(&mut p).await.ok()?;
                let right = len[0] == 1 && u == user.as_bytes() && p == password.as_bytes();
                s.write_all(&[1, if right { 0 } else { 1 }]).await.ok()?;
                if !right {
                    return None;
                }
            }
            let mut req = [0u8; 4];
            s.read_exact(&mut req).await.ok()?;
            let host = match req[3] {
                1 => {
                    let mut a = [0u8; 4];
                    s.read_exact(&mut a).await.ok()?;
                    IpAddr::from(a).to_string()
                }
                4 => {
                    let mut a = [0u8; 16];
                    s.read_exact(&mut a).await.ok()?;
                    IpAddr::from(a).to_string()
                }
                3 => {
                    let mut len = [0u8; 1];
                    s.read_exact(&mut len).await.ok()?;
                    let mut name = vec![0u8; usize::from(len[0])];
                    s.read_exact(&mut name).await.ok()?;
                    String::from_utf8(name).ok()?
                }
                _ => return None,
            };
            let mut port = [0u8; 2];
            s.read_exact(&mut port).await.ok()?;
            let port = u16::from_be_bytes(port);
            seen.lock().expect("seen").push((req[3], target(&host, port)));
            let upstream = match host.parse::<IpAddr>() {
                Ok(ip) if ip.is_loopback() => TcpStream::connect(("127.0.0.1", port)).await,
                Ok(ip) => TcpStream::connect((ip, port)).await,
                Err(_) => TcpStream::connect((host.as_str(), port)).await,
            };
            let Ok(mut upstream) = upstream else {
                s.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await.ok()?;
                return None;
            };
            // Bound to a domain name, to read the variable-length form too.
            s.write_all(&[5, 0, 0, 3, 5, b'p', b'r', b'o', b'x', b'y', 0x04, 0x38]).await.ok()?;
            tokio::io::copy_bidirectional(&mut s, &mut upstream).await.ok()?;
            Some(())
        }
        let (listener, port) = listen().await;
        let seen = SocksSeen::default();
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, login, record.clone()));
            }
        });
        (port, seen)
    }

    /// A proxy that accepts and never says a word.
    async fn silent_proxy() -> u16 {
        let (listener, port) = listen().await;
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let _ = tcp.read_to_end(&mut sink).await;
                });
            }
        });
        port
    }

    fn proxy(url: &str) -> ProxyUrl {
        ProxyUrl::parse(url).expect("proxy url")
    }

    /// A plain HTTP/1.1 exchange over an open tunnel: the answer's body.
    async fn get_over(mut s: ProxiedStream) -> String {
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut answer)).await.expect("in time").expect("read");
        let answer = String::from_utf8(answer).expect("utf-8");
        answer.split_once("\r\n\r\n").expect("a head").1.to_owned()
    }

    async fn open_err(p: &ProxyUrl, port: u16) -> io::Error {
        tunnel(p, "localhost", port, WAIT, &client_tls()).await.expect_err("the proxy fails")
    }

    #[tokio::test]
    async fn http_connect_tunnels_with_and_without_credentials() {
        let target = ok_server(None).await;
        let (open, seen) = connect_proxy(None, None).await;
        let p = proxy(&format!("http://127.0.0.1:{open}"));
        let s = tunnel(&p, "localhost", target, WAIT, &client_tls()).await.expect("tunnel");
        assert!(matches!(s, ProxiedStream::Plain(_)));
        assert_eq!(get_over(s).await, "ok");
        assert_eq!(*seen.lock().expect("seen"), [ConnectSeen { target: format!("localhost:{target}"), auth: None }]);

        let p = proxy(&format!("http://me:s3cret@127.0.0.1:{open}"));
        let (guarded, seen) = connect_proxy(p.basic_auth(), None).await;
        let p = proxy(&format!("http://me:s3cret@127.0.0.1:{guarded}"));
        let s = tunnel(&p, "127.0.0.1", target, WAIT, &client_tls()).await.expect("tunnel");
        assert_eq!(get_over(s).await, "ok");
        let want = ConnectSeen { target: format!("127.0.0.1:{target}"), auth: Some("Basic bWU6czNjcmV0".into()) };
        assert_eq!(*seen.lock().expect("seen"), [want]);
    }

    #[tokio::test]
    async fn a_407_names_the_masked_proxy_and_never_its_password() {
        let target = ok_server(None).await;
        let (port, seen) = connect_proxy(Some("Basic bWU6cmlnaHQ=".into()), None).await;
        let p = proxy(&format!("http://me:wr0ng-s3cret@127.0.0.1:{port}"));
        let e = open_err(&p, target).await;
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("the outbound proxy http://me:***@127.0.0.1:{port} ")), "{msg}");
        assert!(msg.contains("407") && !msg.contains("wr0ng-s3cret"), "{msg}");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(seen.lock().expect("seen").len(), 1);
    }

    #[tokio::test]
    async fn an_https_proxy_is_spoken_to_over_tls() {
        let target = ok_server(None).await;
        let (port, seen) = connect_proxy(None, Some(server_tls())).await;
        let p = proxy(&format!("https://localhost:{port}"));
        let s = tunnel(&p, "localhost", target, WAIT, &client_tls()).await.expect("tunnel");
        assert!(matches!(s, ProxiedStream::Tls(_)));
        assert_eq!(get_over(s).await, "ok");
        assert_eq!(seen.lock().expect("seen")[0].target, format!("localhost:{target}"));

        // A proxy whose certificate is not trusted: a TLS failure, named.
        let untrusting = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        );
        let e = tunnel(&p, "localhost", target, WAIT, &untrusting).await.expect_err("untrusted");
        assert!(e.to_string().starts_with(&format!("the outbound proxy https://localhost:{port} failed the TLS")));
    }

    #[tokio::test]
    async fn socks5h_sends_the_name_unresolved() {
        let target = ok_server(None).await;
        let (port, seen) = socks_server(None).await;
        let p = proxy(&format!("socks5h://127.0.0.1:{port}"));
        let s = tunnel(&p, "localhost", target, WAIT, &client_tls()).await.expect("tunnel");
        assert_eq!(get_over(s).await, "ok");
        assert_eq!(*seen.lock().expect("seen"), [(3, format!("localhost:{target}"))]);

        // An IP literal goes as an address even by socks5h.
        let s = tunnel(&p, "127.0.0.1", target, WAIT, &client_tls()).await.expect("tunnel");
        assert_eq!(get_over(s).await, "ok");
        assert_eq!(seen.lock().expect("seen")[1], (1, format!("127.0.0.1:{target}")));
    }

    #[tokio::test]
    async fn socks5_resolves_here_and_logs_in() {
        let target = ok_server(None).await;
        let (port, seen) = socks_server(Some(("me", "s3cret"))).await;
        let p = proxy(&format!("socks5://me:s3cret@127.0.0.1:{port}"));
        let s = tunnel(&p, "localhost", target, WAIT, &client_tls()).await.expect("tunnel");
        assert_eq!(get_over(s).await, "ok");
        let (atyp, got) = seen.lock().expect("seen")[0].clone();
        let addr: SocketAddr = got.parse().expect("an IP address, not a name");
        assert!(matches!((atyp, addr), (1, SocketAddr::V4(_)) | (4, SocketAddr::V6(_))), "{atyp} {got}");
        assert!(addr.ip().is_loopback() && addr.port() == target, "{got}");
    }

    #[tokio::test]
    async fn socks5_refusals_are_named_without_the_password() {
        let target = ok_server(None).await;
        let (port, seen) = socks_server(Some(("me", "s3cret"))).await;
        let p = proxy(&format!("socks5://me:wr0ng-s3cret@127.0.0.1:{port}"));
        let e = open_err(&p, target).await;
        assert_eq!(e.to_string(), format!("the outbound proxy socks5://me:***@127.0.0.1:{port} refused the login"));
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(seen.lock().expect("seen").is_empty());

        // No credentials for a proxy that wants them.
        let e = open_err(&proxy(&format!("socks5h://127.0.0.1:{port}")), target).await;
        assert_eq!(e.to_string(), format!("the outbound proxy socks5h://127.0.0.1:{port} asks for a login"));

        // The proxy cannot reach the target: its reply code in words.
        let (open, _) = socks_server(None).await;
        let closed = closed_port().await;
        let e = tunnel(&proxy(&format!("socks5h://127.0.0.1:{open}")), "127.0.0.1", closed, WAIT, &client_tls())
            .await
            .expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(e.to_string().ends_with(&format!("127.0.0.1:{closed}: connection refused (SOCKS5 reply 5)")), "{e}");
    }

    async fn closed_port() -> u16 {
        let (listener, port) = listen().await;
        drop(listener);
        port
    }

    #[tokio::test]
    async fn an_unreachable_proxy_is_the_proxys_failure() {
        let closed = closed_port().await;
        for scheme in ["http", "https", "socks5", "socks5h"] {
            let e = open_err(&proxy(&format!("{scheme}://me:s3cret@127.0.0.1:{closed}")), 443).await;
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("the outbound proxy {scheme}://me:***@127.0.0.1:{closed} ")), "{msg}");
            assert!(!msg.contains("s3cret"), "{msg}");
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        }
    }

    #[tokio::test]
    async fn a_silent_proxy_times_out_within_the_connect_timeout() {
        let port = silent_proxy().await;
        let timeout = Duration::from_millis(300);
        for scheme in ["http", "socks5h"] {
            let p = proxy(&format!("{scheme}://127.0.0.1:{port}"));
            let started = std::time::Instant::now();
            let e = tunnel(&p, "localhost", 443, timeout, &client_tls()).await.expect_err("times out");
            let took = started.elapsed();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert!(e.to_string().starts_with(&format!("the outbound proxy {scheme}://127.0.0.1:{port} ")), "{e}");
            assert!(took >= timeout && took < timeout + Duration::from_secs(2), "{took:?}");
        }
    }

    type TestClient =
        hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<ViaConnector>, http_body_util::Empty<Bytes>>;

    /// The pooled client as `outbound` builds it, over a [`ViaConnector`].
    fn client(proxy: Option<ProxyUrl>) -> TestClient {
        let mut direct = HttpConnector::new();
        direct.set_nodelay(true);
        direct.enforce_http(false);
        let tls = client_tls();
        let via = ViaConnector::new(proxy, direct, WAIT, tls.clone());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(via);
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
    }

    async fn fetch(client: &TestClient, url: &str) -> Result<(u16, String), String> {
        let request = http::Request::get(url).body(http_body_util::Empty::new()).expect("request");
        let response = tokio::time::timeout(WAIT, client.request(request))
            .await
            .expect("in time")
            .map_err(|e| format!("{:?}", e))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8(body.to_vec()).expect("utf-8")))
    }

    #[tokio::test]
    async fn the_pooled_client_fetches_through_each_kind_of_proxy() {
        let target = ok_server(None).await;
        let url = format!("http://localhost:{target}/");
        let ok = Ok((200, "ok".to_owned()));
        assert_eq!(fetch(&client(None), &url).await, ok, "direct");

        let guarded = proxy("http://me:s3cret@127.0.0.1:1");
        let (port, seen) = connect_proxy(guarded.basic_auth(), None).await;
        assert_eq!(fetch(&client(Some(proxy(&format!("http://me:s3cret@127.0.0.1:{port}")))), &url).await, ok);
        assert_eq!(seen.lock().expect("seen")[0].target, format!("localhost:{target}"));

        let (port, seen) = connect_proxy(None, Some(server_tls())).await;
        assert_eq!(fetch(&client(Some(proxy(&format!("https://localhost:{port}")))), &url).await, ok);
        assert_eq!(seen.lock().expect("seen")[0].target, format!("localhost:{target}"));

        let (port, seen) = socks_server(Some(("me", "s3cret"))).await;
        assert_eq!(fetch(&client(Some(proxy(&format!("socks5://me:s3cret@127.0.0.1:{port}")))), &url).await, ok);
        let (atyp, got) = seen.lock().expect("seen")[0].clone();
        assert!(atyp == 1 || atyp == 4, "{atyp}");
        assert!(got.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback() && a.port() == target), "{got}");

        let (port, seen) = socks_server(None).await;
        assert_eq!(fetch(&client(Some(proxy(&format!("socks5h://127.0.0.1:{port}")))), &url).await, ok);
        assert_eq!(*seen.lock().expect("seen"), [(3, format!("localhost:{target}"))]);
    }

    #[tokio::test]
    async fn tls_to_the_upstream_runs_inside_the_tunnel() {
        let target = ok_server(Some(server_tls())).await;
        let (port, seen) = socks_server(None).await;
        let client = client(Some(proxy(&format!("socks5h://127.0.0.1:{port}"))));
        assert_eq!(fetch(&client, &format!("https://localhost:{target}/")).await, Ok((200, "ok".to_owned())));
        assert_eq!(*seen.lock().expect("seen"), [(3, format!("localhost:{target}"))]);

        // The proxy's failure reaches the client's error, masked.
        let closed = closed_port().await;
        let client = self::client(Some(proxy(&format!("http://me:s3cret@127.0.0.1:{closed}"))));
        let e = fetch(&client, &format!("https://localhost:{target}/")).await.expect_err("no proxy");
        assert!(e.contains(&format!("the outbound proxy http://me:***@127.0.0.1:{closed} ")), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let via = ViaConnector::new(
            Some(proxy(&format!("http://me:s3cret@127.0.0.1:{closed}"))),
            HttpConnector::new(),
            WAIT,
            client_tls(),
        );
        let shown = format!("{via:?}");
        assert!(shown.contains(&format!("http://me:***@127.0.0.1:{closed}")) && !shown.contains("s3cret"), "{shown}");
    }
}
