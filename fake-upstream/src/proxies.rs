//! Small outbound proxies for tests: an HTTP `CONNECT` proxy and a SOCKS5
//! server, each on 127.0.0.1, optionally asking for a user and password,
//! recording every tunnel they opened (the target asked for, how it was
//! named) so that a test can tell its traffic went through them.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A tunnel a proxy opened, or refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// The target, `host:port`, as the client named it.
    pub target: String,
    /// SOCKS5: the address type the client sent (1 IPv4, 3 a name, 4
    /// IPv6); 0 for `CONNECT`.
    pub atyp: u8,
    /// Whether the client's credentials were right (and so the tunnel
    /// opened).
    pub admitted: bool,
}

/// What kind of proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// HTTP `CONNECT`.
    Connect,
    /// SOCKS5 (RFC 1928, with RFC 1929's user and password).
    Socks5,
}

/// A running test proxy.
#[derive(Clone, Debug)]
pub struct TestProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    kind: Kind,
    login: Option<(String, String)>,
    tunnels: Arc<Mutex<Vec<Tunnel>>>,
}

impl TestProxy {
    /// Starts a proxy of `kind` on 127.0.0.1 (a free port), asking for
    /// `login` if given.
    pub async fn start(kind: Kind, login: Option<(&str, &str)>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let proxy =
            Self { port, kind, login: login.map(|(u, p)| (u.to_owned(), p.to_owned())), tunnels: Arc::default() };
        let serving = proxy.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let proxy = serving.clone();
                tokio::spawn(async move {
                    let _ = match proxy.kind {
                        Kind::Connect => proxy.connect(stream).await,
                        Kind::Socks5 => proxy.socks5(stream).await,
                    };
                });
            }
        });
        Ok(proxy)
    }

    /// The proxy's URL (`http://` or `socks5h://`, with `user:password@`
    /// as given).
    pub fn url(&self, scheme: &str, login: Option<(&str, &str)>) -> String {
        let login = login.map_or_else(String::new, |(u, p)| format!("{u}:{p}@"));
        format!("{scheme}://{login}127.0.0.1:{}", self.port)
    }

    /// The tunnels asked for so far.
    pub fn tunnels(&self) -> Vec<Tunnel> {
        self.tunnels.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, target: String, atyp: u8, admitted: bool) {
        self.tunnels.lock().unwrap_or_else(|p| p.into_inner()).push(Tunnel { target, atyp, admitted });
    }

    async fn connect(&self, mut client: TcpStream) -> std::io::Result<()> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            if client.read(&mut byte).await? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let target = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let auth = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("proxy-authorization")))
            .map(|(_, v)| v.trim().to_owned());
        let admitted = match &self.login {
            None => true,
            Some((u, p)) => {
                use base64::Engine as _;
                let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
                auth.as_deref() == Some(want.as_str())
            }
        };
        self.record(target.clone(), 0, admitted);
        if !head.starts_with("CONNECT ") || !admitted {
            let status = if admitted { "405 Method Not Allowed" } else { "407 Proxy Authentication Required" };
            client.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await?;
            return Ok(());
        }
        let Ok(mut upstream) = TcpStream::connect(&target).await else {
            client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await?;
            return Ok(());
        };
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await.map(|_| ())
    }

    async fn socks5(&self, mut client: TcpStream) -> std::io::Result<()> {
        let mut greeting = [0u8; 2];
        client.read_exact(&mut greeting).await?;
        let mut methods = vec![0u8; greeting[1] as usize];
        client.read_exact(&mut methods).await?;
        let wanted = if self.login.is_some() { 2 } else { 0 };
        if greeting[0] != 5 || !methods.contains(&wanted) {
            client.write_all(&[5, 0xff]).await?;
            return Ok(());
        }
        client.write_all(&[5, wanted]).await?;
        let mut admitted = true;
        if let Some((user, password)) = &self.login {
            let mut version = [0u8; 2];
            client.read_exact(&mut version).await?;
            let mut u = vec![0u8; version[1] as usize];
            client.read_exact(&mut u).await?;
            let mut plen = [0u8; 1];
            client.read_exact(&mut plen).await?;
            let mut p = vec![0u8; plen[0] as usize];
            client.read_exact(&mut p).await?;
            admitted = u == user.as_bytes() && p == password.as_bytes();
            client.write_all(&[1, u8::from(!admitted)]).await?;
            if !admitted {
                self.record(String::new(), 0, false);
                return Ok(());
            }
        }
        let mut request = [0u8; 4];
        client.read_exact(&mut request).await?;
        let host = match request[3] {
            1 => {
                let mut ip = [0u8; 4];
                client.read_exact(&mut ip).await?;
                std::net::Ipv4Addr::from(ip).to_string()
            }
            4 => {
                let mut ip = [0u8; 16];
                client.read_exact(&mut ip).await?;
                format!("[{}]", std::net::Ipv6Addr::from(ip))
            }
            _ => {
                let mut len = [0u8; 1];
                client.read_exact(&mut len).await?;
                let mut name = vec![0u8; len[0] as usize];
                client.read_exact(&mut name).await?;
                String::from_utf8_lossy(&name).into_owned()
            }
        };
        let mut port = [0u8; 2];
        client.read_exact(&mut port).await?;
        let target = format!("{host}:{}", u16::from_be_bytes(port));
        self.record(target.clone(), request[3], admitted);
        let Ok(mut upstream) = TcpStream::connect(&target).await else {
            client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            return Ok(());
        };
        client.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0]).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await.map(|_| ())
    }
}
