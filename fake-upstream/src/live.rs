//! The Live API (`BidiGenerateContent` over WebSocket) as Google speaks
//! it: the client's first message is its `setup`, answered with
//! `setupComplete` (Google sends its messages in binary frames); a key
//! whose quota is used up is closed `1011` with Google's words after the
//! setup, a bad key `1008`, an unknown model `1008`; then turns are
//! answered (`serverContent` text, audio chunks echoed as `inlineData`,
//! `turnComplete` with `usageMetadata`), with a `sessionResumptionUpdate`
//! after each turn when the setup asked for resumption, whose handle only
//! the key that issued it may resume. Ephemeral tokens minted by
//! `POST …/auth_tokens` open `…Constrained` sessions on their key.
//!
//! Scripted words in a text turn: `goaway` (a `goAway`), `close:CODE`
//! (Google closes mid-session).

use super::{Body, Mechanism, State, credentials, full, lock};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, frame::coding::CloseCode};

/// Google's close reason for a used-up quota (cut to a close frame's 123 bytes).
const QUOTA: &str = "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.";

/// Whether `path` is a Live method's.
pub(crate) fn is_live(path: &str) -> bool {
    path.trim_start_matches('/').starts_with("ws/google.ai.generativelanguage.")
}

/// Answers the upgrade and runs the session on the upgraded connection.
pub(crate) fn upgrade(st: Arc<State>, mut req: Request<Incoming>) -> Response<Body> {
    let Some(accept) = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
        return full(StatusCode::BAD_REQUEST, "text/plain", "not a WebSocket upgrade");
    };
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let mut creds =
        credentials(req.headers().iter().filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))), query.as_deref());
    if let Some(token) =
        req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Token "))
    {
        creds.push((Mechanism::AccessToken, token.to_owned()));
    }
    let header_names = req.headers().keys().map(|k| k.as_str().to_owned()).collect();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        session(st, ws, path, query, creds, header_names).await;
    });
    let mut r = full(StatusCode::SWITCHING_PROTOCOLS, "application/octet-stream", Bytes::new());
    r.headers_mut().remove("content-type");
    r.headers_mut().insert("upgrade", hyper::header::HeaderValue::from_static("websocket"));
    r.headers_mut().insert("connection", hyper::header::HeaderValue::from_static("Upgrade"));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&accept) {
        r.headers_mut().insert("sec-websocket-accept", v);
    }
    r
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn close(ws: &mut Ws, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame { code: CloseCode::from(code), reason: reason[..end].to_owned().into() };
    let _ = ws.close(Some(frame)).await;
}

/// Google sends its messages as binary frames.
async fn send(ws: &mut Ws, v: &Value) -> bool {
    ws.send(Message::binary(v.to_string().into_bytes())).await.is_ok()
}

fn tokens(text_len: usize) -> u64 {
    (text_len as u64).div_ceil(4).max(1)
}

async fn session(
    st: Arc<State>,
    mut ws: Ws,
    path: String,
    query: Option<String>,
    creds: Vec<(Mechanism, String)>,
    header_names: Vec<String>,
) {
    let first = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => break t.as_bytes().to_vec(),
            Some(Ok(Message::Binary(b))) => break b.to_vec(),
            Some(Ok(_)) => continue,
            _ => return,
        }
    };
    st.record("WS".to_owned(), path.clone(), query, creds.clone(), header_names, first.clone());
    let setup: Value = serde_json::from_slice(&first).unwrap_or_default();
    let Some(model) = setup.pointer("/setup/model").and_then(Value::as_str).map(str::to_owned) else {
        return close(&mut ws, 1007, "Request contains an invalid argument.").await;
    };
    let constrained = path.ends_with("Constrained");
    // The key the session runs on: a pool key, or the one that minted the token.
    let key = match creds.as_slice() {
        [(Mechanism::AccessToken, token)] if constrained => {
            let minted_by = lock(&st.live).tokens.get(token).cloned();
            match minted_by {
                Some(key) => key,
                None => return close(&mut ws, 1008, "Token is invalid or expired.").await,
            }
        }
        [(_, key)] if !constrained => key.clone(),
        [] => {
            let m = "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.";
            return close(&mut ws, 1008, m).await;
        }
        _ => return close(&mut ws, 1008, "Multiple authentication credentials received. Please pass only one.").await,
    };
    use super::Behavior as B;
    match st.behavior_of(&key) {
        B::PerDay | B::PerMinute(_) | B::Bare429 => return close(&mut ws, 1011, QUOTA).await,
        B::Invalid | B::Suspended | B::Leaked | B::WrongType => {
            return close(&mut ws, 1008, "API key not valid. Please pass a valid API key.").await;
        }
        B::ServerError(_) => return close(&mut ws, 1011, "Internal error encountered.").await,
        _ => {}
    }
    let version = path.split("generativelanguage.").nth(1).and_then(|r| r.split('.').next()).unwrap_or("v1beta");
    if model.contains("made-up") {
        let m = format!(
            "{model} is not found for API version {version}, or is not supported for bidiGenerateContent. Call ListModels to see the list of available models and their supported methods."
        );
        return close(&mut ws, 1008, &m).await;
    }
    let resumption = setup.pointer("/setup/sessionResumption").or_else(|| setup.pointer("/setup/session_resumption"));
    if let Some(handle) = resumption.and_then(|r| r.get("handle")).and_then(Value::as_str) {
        let owner = lock(&st.live).handles.get(handle).cloned();
        if owner.as_deref() != Some(key.as_str()) {
            return close(&mut ws, 1008, "The session resumption handle is invalid.").await;
        }
    }
    if !send(&mut ws, &json!({"setupComplete": {}})).await {
        return;
    }
    lock(&st.live).sessions += 1;
    let mut audio_in = 0usize;
    while let Some(message) = ws.next().await {
        let bytes = match message {
            Ok(Message::Text(t)) => t.as_bytes().to_vec(),
            Ok(Message::Binary(b)) => b.to_vec(),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let field = |camel: &str, snake: &str| v.get(camel).or_else(|| v.get(snake)).cloned();
        let text_turn = if let Some(content) = field("clientContent", "client_content") {
            let turns = content.get("turns").and_then(Value::as_array).cloned().unwrap_or_default();
            let parts =
                turns.last().and_then(|t| t.get("parts")).and_then(Value::as_array).cloned().unwrap_or_default();
            Some(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<String>())
        } else if let Some(input) = field("realtimeInput", "realtime_input") {
            if let Some(audio) = input.get("audio") {
                // Each chunk is echoed at once, as the model's voice.
                let data = audio.get("data").and_then(Value::as_str).unwrap_or_default();
                audio_in += data.len();
                let chunk = json!({"serverContent": {"modelTurn": {"parts": [
                    {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}
                ]}}});
                if !send(&mut ws, &chunk).await {
                    break;
                }
                None
            } else if input.get("audioStreamEnd").or_else(|| input.get("audio_stream_end")).is_some() {
                let usage = json!({"promptTokenCount": tokens(audio_in), "responseTokenCount": tokens(audio_in), "totalTokenCount": 2 * tokens(audio_in)});
                audio_in = 0;
                if !send(&mut ws, &json!({"serverContent": {"turnComplete": true}, "usageMetadata": usage})).await {
                    break;
                }
                None
            } else {
                input.get("text").and_then(Value::as_str).map(str::to_owned)
            }
        } else {
            field("toolResponse", "tool_response").map(|response| format!("tool said {response}"))
        };
        let Some(text) = text_turn else { continue };
        if text == "goaway" {
            let _ = send(&mut ws, &json!({"goAway": {"timeLeft": "10s"}})).await;
            continue;
        }
        if let Some(code) = text.strip_prefix("close:").and_then(|c| c.parse::<u16>().ok()) {
            let reason = if code == 1011 { QUOTA } else { "closed as scripted" };
            return close(&mut ws, code, reason).await;
        }
        let reply = format!("Echo: {text}");
        let turn = json!({"serverContent": {"modelTurn": {"parts": [{"text": reply}]}}});
        let usage = json!({"promptTokenCount": tokens(text.len()), "responseTokenCount": tokens(reply.len()), "totalTokenCount": tokens(text.len()) + tokens(reply.len())});
        if !send(&mut ws, &turn).await
            || !send(&mut ws, &json!({"serverContent": {"turnComplete": true}, "usageMetadata": usage})).await
        {
            break;
        }
        if resumption.is_some() {
            let handle = {
                let mut live = lock(&st.live);
                live.issued += 1;
                let handle = format!("handle-{}-{}", live.issued, key.len());
                live.handles.insert(handle.clone(), key.clone());
                handle
            };
            if !send(&mut ws, &json!({"sessionResumptionUpdate": {"newHandle": handle, "resumable": true}})).await {
                break;
            }
        }
    }
}

/// The Live state the fake keeps: tokens minted, handles issued.
#[derive(Default)]
pub(crate) struct LiveState {
    /// Ephemeral token → the key that minted it.
    pub(crate) tokens: std::collections::HashMap<String, String>,
    /// Resumption handle → the key whose session issued it.
    pub(crate) handles: std::collections::HashMap<String, String>,
    issued: u64,
    /// Sessions that got their `setupComplete`.
    pub(crate) sessions: u64,
}

/// `POST …/auth_tokens`: a token on `key`, as Google answers it.
pub(crate) fn mint(st: &State, key: &str, body: &Value) -> Value {
    let name = {
        let mut live = lock(&st.live);
        live.issued += 1;
        let name = format!("auth_tokens/fake-token-{}", live.issued);
        live.tokens.insert(name.clone(), key.to_owned());
        name
    };
    let expire = body.get("expireTime").and_then(Value::as_str).unwrap_or("2099-01-01T00:00:00Z");
    json!({"name": name, "uses": body.get("uses").cloned().unwrap_or(json!(1)), "expireTime": expire,
           "newSessionExpireTime": expire})
}
