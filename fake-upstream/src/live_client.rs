//! A minimal Live API client for the tests (host-runner's and the e2e
//! list): connect (the HTTP status when the upgrade is refused), the next
//! message as JSON or the close, a setup, a text turn.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A client's socket.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The Live method's path, as the SDKs build it after a base URL (`//ws/…`).
pub const BIDI: &str = "//ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";

/// The constrained method's (ephemeral tokens).
pub const CONSTRAINED: &str =
    "//ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained";

/// Connects to `url` with `headers`; the HTTP status when the upgrade is
/// refused.
///
/// # Panics
/// When the connection fails otherwise.
pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    let mut req = url.into_client_request().expect("a WebSocket URL");
    for (n, v) in headers {
        let name = http::HeaderName::from_bytes(n.as_bytes()).expect("a header name");
        req.headers_mut().insert(name, v.parse().expect("a header value"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

/// The next data message as JSON (text or binary frame), or the close's
/// code and reason (1006 when the connection broke).
///
/// # Panics
/// When nothing comes within 15 s, or a message is not JSON.
pub async fn next(ws: &mut Ws) -> Result<Value, (u16, String)> {
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(15), ws.next()).await.expect("a message in time");
        match m {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("JSON")),
            Some(Ok(Message::Binary(b))) => return Ok(serde_json::from_slice(&b).expect("JSON")),
            Some(Ok(Message::Close(f))) => {
                return Err(f.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string())));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err((1006, e.to_string())),
            None => return Err((1006, "ended".into())),
        }
    }
}

/// Sends a text setup for `model` (with `extra` members) and reads the answer.
///
/// # Panics
/// When it cannot be sent.
pub async fn setup(ws: &mut Ws, model: &str, extra: Value) -> Result<Value, (u16, String)> {
    let mut s =
        json!({"setup": {"model": format!("models/{model}"), "generationConfig": {"responseModalities": ["TEXT"]}}});
    if let (Some(o), Some(e)) = (s["setup"].as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    ws.send(Message::text(s.to_string())).await.expect("send the setup");
    next(ws).await
}

/// One text turn: the model's text, and the message that ended the turn.
///
/// # Panics
/// When the session ends or answers otherwise.
pub async fn turn(ws: &mut Ws, text: &str) -> (String, Value) {
    let msg = json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}});
    ws.send(Message::text(msg.to_string())).await.expect("send the turn");
    let reply = next(ws).await.expect("a reply");
    let text = reply.pointer("/serverContent/modelTurn/parts/0/text").and_then(Value::as_str).expect("text").to_owned();
    let end = next(ws).await.expect("the turn's end");
    assert_eq!(end.pointer("/serverContent/turnComplete"), Some(&json!(true)), "{end}");
    (text, end)
}
