//! Chat completions relayed to Google's OpenAI layer: the thought
//! signatures of their tool calls, recalled for clients that drop them.
//!
//! Google returns each tool call's signature in
//! `tool_calls[].extra_content.google.thought_signature` and, on Gemini 3,
//! refuses the next turn when it does not come back. Most OpenAI-compatible
//! clients drop members they do not know. So the proxy reads the signatures
//! of the calls it relays ([`Watch`]), the key store keeps them by call id
//! ([`crate::store::signatures`]), and an `assistant` message that comes
//! back without any gets them again ([`missing`], [`restore`]). A client
//! that sends them keeps full control: its messages are left as they are.

use crate::google::stream::{Framing, Splitter};
use crate::translate::signature::PLACEHOLDER;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The most bytes of a whole (unstreamed) answer read for its calls.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

fn signature_of(call: &Value) -> Option<&str> {
    call.pointer("/extra_content/google/thought_signature").and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The most call ids one request asks the key store about: the newest,
/// which the current turn's (the ones Google checks) are among.
pub const MAX_ASKED: usize = 256;

/// What [`missing`] reads of a chat request: its messages' roles and tool
/// calls, the rest passed over unread.
#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<Call>>,
}

#[derive(Deserialize)]
struct Call {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    extra_content: Option<Extra>,
}

#[derive(Deserialize)]
struct Extra {
    #[serde(default)]
    google: Option<Google>,
}

#[derive(Deserialize)]
struct Google {
    #[serde(default)]
    thought_signature: Option<String>,
}

impl Call {
    fn signed(&self) -> bool {
        let sig =
            self.extra_content.as_ref().and_then(|e| e.google.as_ref()).and_then(|g| g.thought_signature.as_ref());
        sig.is_some_and(|s| !s.is_empty())
    }
}

/// The ids of the tool calls in `body` (a chat request) whose assistant
/// message came back with no signature at all, the newest [`MAX_ASKED`];
/// empty when there is none (or the body is no chat request). A body with
/// no tool calls costs no parse; one with them is read for its calls only.
pub fn missing(body: &[u8]) -> Vec<String> {
    if !contains(body, b"\"tool_calls\"") {
        return Vec::new();
    }
    let Ok(req) = serde_json::from_slice::<Request>(body) else { return Vec::new() };
    let unsigned = req
        .messages
        .into_iter()
        .filter(|m| m.role.as_deref() == Some("assistant"))
        .filter_map(|m| m.tool_calls)
        .filter(|calls| !calls.is_empty() && !calls.iter().any(Call::signed));
    let mut ids: Vec<String> = unsigned.flatten().filter_map(|c| c.id).filter(|id| !id.is_empty()).collect();
    ids.dedup();
    if ids.len() > MAX_ASKED {
        ids.drain(..ids.len() - MAX_ASKED);
    }
    ids
}

/// Whether a chat request declares tools, so that its answer may carry
/// signed calls (a quick look: a false yes costs only reading the answer).
pub fn declares_tools(body: &[u8]) -> bool {
    contains(body, b"\"tools\"")
}

/// What [`restore`] put back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Signatures recalled.
    pub recalled: usize,
    /// Placeholders put in where none was known (Gemini 3 only).
    pub placeholders: usize,
}

/// `body` with the signatures of `found` (call id → signature) put back
/// into the unsigned assistant messages, and, on Gemini 3
/// (`placeholder`), Google's placeholder on the first call of each such
/// message still unsigned (a signature forgotten, or never seen: Google
/// refuses the turn without one). `None` when nothing changed.
pub fn restore(body: &[u8], found: &HashMap<String, String>, placeholder: bool) -> Option<(Vec<u8>, Restored)> {
    let mut req: Value = serde_json::from_slice(body).ok()?;
    let mut done = Restored::default();
    let messages = req.get_mut("messages").and_then(Value::as_array_mut)?;
    for message in messages.iter_mut().filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant")) {
        let Some(calls) = message.get_mut("tool_calls").and_then(Value::as_array_mut) else { continue };
        if calls.is_empty() || calls.iter().any(|c| signature_of(c).is_some()) {
            continue;
        }
        for call in calls.iter_mut() {
            let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
            if let Some(sig) = found.get(id) {
                sign(call, sig);
                done.recalled += 1;
            }
        }
        if placeholder
            && !calls.iter().any(|c| signature_of(c).is_some())
            && let Some(first) = calls.first_mut()
        {
            sign(first, PLACEHOLDER);
            done.placeholders += 1;
        }
    }
    (done != Restored::default()).then(|| (req.to_string().into_bytes(), done))
}

fn sign(call: &mut Value, signature: &str) {
    if !call.is_object() {
        return;
    }
    let google = json!({ "thought_signature": signature });
    match call.get_mut("extra_content").filter(|e| e.is_object()) {
        Some(extra) => extra["google"] = google,
        None => call["extra_content"] = json!({ "google": google }),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// Reads the signed tool calls of a chat answer as it passes (a stream's
/// chunks, or a whole answer), holding back nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    read: Reading,
    /// Call id → signature, as found.
    found: Vec<(String, String)>,
    /// A stream's call ids by choice and index (a chunk after the first of
    /// a call carries only its index).
    ids: HashMap<(u64, u64), String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Reading {
    Stream(Splitter),
    Whole(Vec<u8>),
}

impl Watch {
    /// A watch of a streamed (`stream: true`, SSE) answer, or of a whole one.
    pub fn new(stream: bool) -> Self {
        let read = if stream { Reading::Stream(Splitter::new(Framing::Sse)) } else { Reading::Whole(Vec::new()) };
        Self { read, found: Vec::new(), ids: HashMap::new() }
    }

    /// Notes a piece of the answer.
    pub fn push(&mut self, piece: &[u8]) {
        match &mut self.read {
            Reading::Whole(body) => {
                let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&piece[..piece.len().min(room)]);
            }
            Reading::Stream(splitter) => {
                let mut events = Vec::new();
                splitter.push(piece, |event| {
                    // Only a chunk with a call in it is parsed.
                    if contains(event, b"\"tool_calls\"") {
                        events.push(event.to_vec());
                    }
                });
                for event in events {
                    self.event(&event);
                }
            }
        }
    }

    fn event(&mut self, event: &[u8]) {
        // The splitter hands over the event's data: one chunk's JSON.
        let Ok(chunk) = serde_json::from_slice::<Value>(event) else { return };
        for choice in chunk.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let n = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let calls = choice.pointer("/delta/tool_calls").and_then(Value::as_array).into_iter().flatten();
            for (position, call) in calls.enumerate() {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
                if let Some(id) = call.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()) {
                    self.ids.insert((n, index), id.to_owned());
                }
                if let (Some(sig), Some(id)) = (signature_of(call), self.ids.get(&(n, index))) {
                    self.found.push((id.clone(), sig.to_owned()));
                }
            }
        }
    }

    /// The answer is over: the signed calls it carried (call id →
    /// signature).
    pub fn found(mut self) -> Vec<(String, String)> {
        if let Reading::Whole(body) = &self.read
            && let Ok(answer) = serde_json::from_slice::<Value>(body)
        {
            for choice in answer.get("choices").and_then(Value::as_array).into_iter().flatten() {
                let calls = choice.pointer("/message/tool_calls").and_then(Value::as_array).into_iter().flatten();
                for call in calls {
                    if let (Some(id), Some(sig)) = (call.get("id").and_then(Value::as_str), signature_of(call)) {
                        self.found.push((id.to_owned(), sig.to_owned()));
                    }
                }
            }
        }
        self.found.retain(|(id, _)| !id.is_empty());
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A turn as a client that drops `extra_content` sends it back.
    fn follow_up(extra: Option<&str>) -> Vec<u8> {
        let mut call = json!({"id": "function-call-1", "type": "function",
                              "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}});
        if let Some(sig) = extra {
            call["extra_content"] = json!({"google": {"thought_signature": sig}});
        }
        json!({"model": "gemini-3-flash-preview", "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call,
                {"id": "function-call-2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "function-call-1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "function-call-2", "content": "noon"}
        ], "tools": []})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_dropped_signature_is_asked_for_and_put_back() {
        let body = follow_up(None);
        assert_eq!(missing(&body), ["function-call-1", "function-call-2"]);
        let found: HashMap<String, String> = [("function-call-1".to_owned(), "Q2lR+/==".to_owned())].into();
        let (patched, done) = restore(&body, &found, true).expect("changed");
        assert_eq!(done, Restored { recalled: 1, placeholders: 0 });
        let patched: Value = serde_json::from_slice(&patched).expect("json");
        let calls = &patched["messages"][1]["tool_calls"];
        assert_eq!(calls[0]["extra_content"]["google"]["thought_signature"], "Q2lR+/==");
        assert!(calls[1].get("extra_content").is_none(), "a parallel call stays unsigned, as Google made it");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    }

    #[test]
    fn a_long_session_asks_about_its_newest_calls() {
        let messages: Vec<Value> = (0..300)
            .map(|i| json!({"role": "assistant", "tool_calls": [{"id": format!("call-{i}"), "type": "function"}]}))
            .collect();
        let ids = missing(json!({"messages": messages}).to_string().as_bytes());
        assert_eq!(ids.len(), MAX_ASKED);
        assert_eq!(ids.last().map(String::as_str), Some("call-299"));
        assert_eq!(ids.first().map(String::as_str), Some("call-44"));
    }

    #[test]
    fn a_client_that_keeps_its_signatures_keeps_control() {
        let body = follow_up(Some("bXluZQ=="));
        assert!(missing(&body).is_empty());
        let found: HashMap<String, String> = [("function-call-1".to_owned(), "b3RoZXI=".to_owned())].into();
        assert!(restore(&body, &found, true).is_none());
        assert!(missing(br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#).is_empty());
        assert!(missing(b"not json \"tool_calls\"").is_empty());
    }

    #[test]
    fn an_unknown_signature_gets_the_placeholder_on_gemini_3_only() {
        let body = follow_up(None);
        let (patched, done) = restore(&body, &HashMap::new(), true).expect("changed");
        assert_eq!(done, Restored { recalled: 0, placeholders: 1 });
        let patched: Value = serde_json::from_slice(&patched).expect("json");
        assert_eq!(
            patched["messages"][1]["tool_calls"][0]["extra_content"]["google"]["thought_signature"],
            PLACEHOLDER
        );
        assert!(restore(&body, &HashMap::new(), false).is_none());
    }

    #[test]
    fn signatures_are_read_from_a_stream_split_anywhere_and_from_a_whole_answer() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"function-call-7\",",
            "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"},",
            "\"extra_content\":{\"google\":{\"thought_signature\":\"c2ln\"}}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n"
        );
        for cut in [1, 7, 50, 200] {
            let mut watch = Watch::new(true);
            for piece in stream.as_bytes().chunks(cut) {
                watch.push(piece);
            }
            assert_eq!(watch.found(), vec![("function-call-7".to_owned(), "c2ln".to_owned())], "cut {cut}");
        }
        let whole = json!({"choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [
            {"id": "function-call-9", "type": "function", "function": {"name": "f", "arguments": "{}"},
             "extra_content": {"google": {"thought_signature": "c2ln"}}}
        ]}, "finish_reason": "tool_calls"}]})
        .to_string();
        let mut watch = Watch::new(false);
        for piece in whole.as_bytes().chunks(13) {
            watch.push(piece);
        }
        assert_eq!(watch.found(), vec![("function-call-9".to_owned(), "c2ln".to_owned())]);
    }
}
