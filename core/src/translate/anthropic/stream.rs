//! A streamed Gemini answer (`alt=sse`) as Anthropic's stream events, each
//! Gemini event translated as it arrives: `message_start` and a `ping`
//! with the first, then `content_block_start` / `_delta` / `_stop` for
//! each text, thinking and tool-use block, and at the end `message_delta`
//! (the stop reason, the usage) and `message_stop`. An event that shows
//! the client nothing (a thought it did not ask to see) is a `ping`, so a
//! long think keeps the connection alive.

use super::{Reply, stop_reason, usage};
use crate::translate::signature;
use crate::translate::{GeminiEvent, GeminiStream, Part, parts};
use serde_json::{Value, json};

/// The block being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
}

/// The translation of one streamed answer ([`crate::translate::Streamer`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Stream {
    reply: Reply,
    /// Google's stream as read so far.
    gemini: GeminiStream,
    /// The answer's nonce, once `message_start` went out.
    nonce: Option<String>,
    open: Option<Open>,
    /// The index the next block gets.
    next: usize,
    calls: usize,
    /// An `error` event went out: nothing follows it.
    failed: bool,
}

impl Stream {
    /// A translation for `reply`'s request.
    pub fn new(reply: Reply) -> Self {
        Self { reply, gemini: GeminiStream::new(), nonce: None, open: None, next: 0, calls: 0, failed: false }
    }

    /// Translates a piece of Gemini's stream into `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        for event in self.gemini.events(piece) {
            self.event(&event, out);
        }
    }

    /// The stream ended cleanly: the open block closed, the stop reason and
    /// usage, the end.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        self.start(None, b"", out);
        self.close(out);
        let mut usage = usage(self.gemini.usage.as_ref());
        if let Some(u) = usage.as_object_mut() {
            u.remove("cache_creation_input_tokens");
        }
        let stop = stop_reason(self.gemini.finish.as_deref(), self.calls > 0, self.gemini.blocked);
        let delta = json!({
            "type": "message_delta",
            "delta": { "stop_reason": stop, "stop_sequence": null },
            "usage": usage,
        });
        send(out, "message_delta", &delta);
        send(out, "message_stop", &json!({ "type": "message_stop" }));
    }

    /// The stream broke off: an `error` event, the last.
    pub fn broke(&mut self, out: &mut Vec<u8>) {
        self.fail("the upstream answer broke off before its end; try again", out);
    }

    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        self.start(None, b"", out);
        self.failed = true;
        let error = json!({ "type": "error", "error": { "type": "api_error", "message": message } });
        send(out, "error", &error);
    }

    fn event(&mut self, event: &[u8], out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        let v = match self.gemini.read(event) {
            Some(GeminiEvent::Chunk(v)) => v,
            Some(GeminiEvent::Error(message)) => return self.fail(&message, out),
            None => return,
        };
        self.start(Some(&v), event, out);
        let before = out.len();
        for part in parts(&v) {
            self.part(part, out);
        }
        if out.len() == before {
            send(out, "ping", &json!({ "type": "ping" }));
        }
    }

    /// `message_start` and a `ping`, once, before anything else.
    fn start(&mut self, first: Option<&Value>, event: &[u8], out: &mut Vec<u8>) {
        if self.nonce.is_some() {
            return;
        }
        let nonce = signature::nonce(first.and_then(|v| v.get("responseId")).and_then(Value::as_str), event);
        let mut usage = usage(first.and_then(|v| v.get("usageMetadata")));
        usage["output_tokens"] = json!(0);
        let message = json!({
            "type": "message_start",
            "message": {
                "id": format!("msg_{nonce}"),
                "type": "message",
                "role": "assistant",
                "model": self.reply.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage,
            },
        });
        send(out, "message_start", &message);
        send(out, "ping", &json!({ "type": "ping" }));
        self.nonce = Some(nonce);
    }

    fn part(&mut self, part: Part<'_>, out: &mut Vec<u8>) {
        match part {
            Part::Thought { text, signature } if self.reply.thinking => {
                self.open_block(Open::Thinking, json!({ "type": "thinking", "thinking": "", "signature": "" }), out);
                if !text.is_empty() {
                    self.delta(json!({ "type": "thinking_delta", "thinking": text }), out);
                }
                if let Some(sig) = signature {
                    self.delta(json!({ "type": "signature_delta", "signature": signature::thinking(sig) }), out);
                }
            }
            Part::Text(text) => {
                self.open_block(Open::Text, json!({ "type": "text", "text": "" }), out);
                self.delta(json!({ "type": "text_delta", "text": text }), out);
            }
            Part::Call { name, args, signature } => {
                self.close(out);
                let id = signature::call_id(
                    signature::ANTHROPIC_CALL,
                    self.nonce.as_deref().unwrap_or_default(),
                    self.calls,
                    signature,
                );
                self.calls += 1;
                let block = json!({ "type": "tool_use", "id": id, "name": name, "input": {} });
                send(
                    out,
                    "content_block_start",
                    &json!({ "type": "content_block_start", "index": self.next, "content_block": block }),
                );
                let partial = json!({ "type": "input_json_delta", "partial_json": args.to_string() });
                send(
                    out,
                    "content_block_delta",
                    &json!({ "type": "content_block_delta", "index": self.next, "delta": partial }),
                );
                send(out, "content_block_stop", &json!({ "type": "content_block_stop", "index": self.next }));
                self.next += 1;
            }
            Part::Thought { .. } | Part::Other => {}
        }
    }

    /// Makes sure a block of `kind` is open, closing another first.
    fn open_block(&mut self, kind: Open, block: Value, out: &mut Vec<u8>) {
        if self.open == Some(kind) {
            return;
        }
        self.close(out);
        let start = json!({ "type": "content_block_start", "index": self.next, "content_block": block });
        send(out, "content_block_start", &start);
        self.open = Some(kind);
    }

    fn delta(&mut self, delta: Value, out: &mut Vec<u8>) {
        send(out, "content_block_delta", &json!({ "type": "content_block_delta", "index": self.next, "delta": delta }));
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            send(out, "content_block_stop", &json!({ "type": "content_block_stop", "index": self.next }));
            self.next += 1;
        }
    }
}

/// Writes one server-sent event.
fn send(out: &mut Vec<u8>, event: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}
