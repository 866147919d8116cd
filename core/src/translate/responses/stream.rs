//! A streamed Gemini answer (`alt=sse`) as the Responses API's stream
//! events, each Gemini event translated as it arrives, every event with its
//! `sequence_number`: `response.created` and `response.in_progress` with
//! the first; for each output item `response.output_item.added`, its
//! content (`response.content_part.added`, `response.output_text.delta` /
//! `.done`; `response.reasoning_summary_*`; `response.function_call_arguments.delta`
//! / `.done`) and `response.output_item.done`; at the end
//! `response.completed` (or `response.incomplete`) with the whole response
//! and its usage, or `response.failed` when Google's stream broke off. A
//! Gemini event that shows the client nothing (a hidden thought) is an SSE
//! comment, so a long think keeps the connection alive.

use super::{Reply, call_item, incomplete, message, usage};
use crate::translate::{GeminiEvent, GeminiStream, Part, parts, signature};
use serde_json::{Value, json};

/// The item being written.
#[derive(Clone, Debug, PartialEq)]
enum Open {
    /// A `message`: its text so far.
    Message { id: String, text: String },
    /// A `reasoning` item: its summary so far, and its signature.
    Reasoning { id: String, text: String, signature: Option<String> },
}

/// The translation of one streamed answer ([`crate::translate::Streamer`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Stream {
    reply: Reply,
    /// Google's stream as read so far.
    gemini: GeminiStream,
    /// The answer's nonce, once `response.created` went out.
    nonce: Option<String>,
    sequence: u64,
    open: Option<Open>,
    /// The items done, for the last event's response.
    output: Vec<Value>,
    calls: usize,
    /// `response.failed` went out: nothing follows it.
    failed: bool,
}

impl Stream {
    /// A translation for `reply`'s request.
    pub fn new(reply: Reply) -> Self {
        Self {
            reply,
            gemini: GeminiStream::new(),
            nonce: None,
            sequence: 0,
            open: None,
            output: Vec::new(),
            calls: 0,
            failed: false,
        }
    }

    /// Translates a piece of Gemini's stream into `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        for event in self.gemini.events(piece) {
            self.event(&event, out);
        }
    }

    /// The stream ended cleanly: the open item closed, then the response,
    /// completed or incomplete.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        self.start(None, b"", out);
        self.close(out);
        let incomplete = incomplete(self.gemini.finish.as_deref(), self.gemini.blocked);
        let (kind, status) = match incomplete {
            Some(_) => ("response.incomplete", "incomplete"),
            None => ("response.completed", "completed"),
        };
        let output = std::mem::take(&mut self.output);
        let usage = Some(usage(self.gemini.usage.as_ref()));
        let response = self.reply.response(self.nonce(), status, output, usage, incomplete, Value::Null);
        self.send(out, kind, json!({ "response": response }));
    }

    /// The stream broke off: `response.failed`, the last event.
    pub fn broke(&mut self, out: &mut Vec<u8>) {
        self.fail("the upstream answer broke off before its end; try again", out);
    }

    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        self.start(None, b"", out);
        self.failed = true;
        let error = json!({ "code": "server_error", "message": message });
        let output = std::mem::take(&mut self.output);
        let usage = self.gemini.usage.as_ref().map(|u| usage(Some(u)));
        let response = self.reply.response(self.nonce(), "failed", output, usage, None, error);
        self.send(out, "response.failed", json!({ "response": response }));
    }

    fn nonce(&self) -> &str {
        self.nonce.as_deref().unwrap_or_default()
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
            // Nothing to show: a comment keeps the connection alive.
            out.extend_from_slice(b": thinking\n\n");
        }
    }

    /// `response.created` and `response.in_progress`, once, first.
    fn start(&mut self, first: Option<&Value>, event: &[u8], out: &mut Vec<u8>) {
        if self.nonce.is_some() {
            return;
        }
        let nonce = signature::nonce(first.and_then(|v| v.get("responseId")).and_then(Value::as_str), event);
        self.nonce = Some(nonce);
        let response = self.reply.response(self.nonce(), "in_progress", Vec::new(), None, None, Value::Null);
        self.send(out, "response.created", json!({ "response": response }));
        self.send(out, "response.in_progress", json!({ "response": response }));
    }

    fn part(&mut self, part: Part<'_>, out: &mut Vec<u8>) {
        match part {
            Part::Thought { text, signature }
                if self.reply.reasoning || (self.reply.encrypted && signature.is_some()) =>
            {
                if !matches!(self.open, Some(Open::Reasoning { signature: None, .. })) {
                    self.close(out);
                    let id = format!("rs_{}_{}", self.nonce(), self.output.len());
                    let item = json!({ "type": "reasoning", "id": id, "summary": [] });
                    self.added(item, out);
                    if self.reply.reasoning {
                        let part = json!({ "type": "summary_text", "text": "" });
                        let fields = json!({ "item_id": id, "output_index": self.output.len(), "summary_index": 0, "part": part });
                        self.send(out, "response.reasoning_summary_part.added", fields);
                    }
                    self.open = Some(Open::Reasoning { id, text: String::new(), signature: None });
                }
                let index = self.output.len();
                let show = self.reply.reasoning && !text.is_empty();
                if let Some(Open::Reasoning { id, text: so_far, signature: signed }) = &mut self.open {
                    let id = id.clone();
                    if show {
                        so_far.push_str(text);
                    }
                    *signed = signature.map(str::to_owned);
                    if show {
                        let fields = json!({ "item_id": id, "output_index": index, "summary_index": 0, "delta": text });
                        self.send(out, "response.reasoning_summary_text.delta", fields);
                    }
                }
            }
            Part::Text(text) => {
                if !matches!(self.open, Some(Open::Message { .. })) {
                    self.close(out);
                    let id = format!("msg_{}_{}", self.nonce(), self.output.len());
                    let mut item = message(&id, "", "in_progress");
                    item["content"] = json!([]);
                    self.added(item, out);
                    let part = json!({ "type": "output_text", "text": "", "annotations": [], "logprobs": [] });
                    let fields =
                        json!({ "item_id": id, "output_index": self.output.len(), "content_index": 0, "part": part });
                    self.send(out, "response.content_part.added", fields);
                    self.open = Some(Open::Message { id, text: String::new() });
                }
                let index = self.output.len();
                if let Some(Open::Message { id, text: so_far }) = &mut self.open {
                    so_far.push_str(text);
                    let fields = json!({
                        "item_id": id.clone(), "output_index": index, "content_index": 0, "delta": text, "logprobs": [],
                    });
                    self.send(out, "response.output_text.delta", fields);
                }
            }
            Part::Call { name, args, signature } => {
                self.close(out);
                let nonce = self.nonce().to_owned();
                let item = call_item(&self.reply, &nonce, self.calls, name, &args, signature, "completed");
                self.calls += 1;
                let index = self.output.len();
                let id = item["id"].as_str().unwrap_or_default().to_owned();
                let mut started = item.clone();
                started["status"] = json!("in_progress");
                if item["type"] == "custom_tool_call" {
                    started["input"] = json!("");
                    self.added(started, out);
                    let input = item["input"].clone();
                    let delta = json!({ "item_id": id, "output_index": index, "delta": input });
                    self.send(out, "response.custom_tool_call_input.delta", delta);
                    self.send(
                        out,
                        "response.custom_tool_call_input.done",
                        json!({ "item_id": id, "output_index": index, "input": input }),
                    );
                } else {
                    started["arguments"] = json!("");
                    self.added(started, out);
                    let arguments = item["arguments"].clone();
                    let delta = json!({ "item_id": id, "output_index": index, "delta": arguments });
                    self.send(out, "response.function_call_arguments.delta", delta);
                    let done = json!({ "item_id": id, "output_index": index, "name": name, "arguments": arguments });
                    self.send(out, "response.function_call_arguments.done", done);
                }
                self.done(item, out);
            }
            Part::Thought { .. } | Part::Other => {}
        }
    }

    /// `response.output_item.added` for the item at the output's end.
    fn added(&mut self, item: Value, out: &mut Vec<u8>) {
        let fields = json!({ "output_index": self.output.len(), "item": item });
        self.send(out, "response.output_item.added", fields);
    }

    /// `response.output_item.done`, and the item counted done.
    fn done(&mut self, item: Value, out: &mut Vec<u8>) {
        let fields = json!({ "output_index": self.output.len(), "item": item });
        self.send(out, "response.output_item.done", fields);
        self.output.push(item);
    }

    /// Closes the open item, if one is.
    fn close(&mut self, out: &mut Vec<u8>) {
        let index = self.output.len();
        match self.open.take() {
            None => {}
            Some(Open::Message { id, text }) => {
                let fields =
                    json!({ "item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": [] });
                self.send(out, "response.output_text.done", fields);
                let part = json!({ "type": "output_text", "text": text, "annotations": [], "logprobs": [] });
                let fields = json!({ "item_id": id, "output_index": index, "content_index": 0, "part": part });
                self.send(out, "response.content_part.done", fields);
                self.done(message(&id, &text, "completed"), out);
            }
            Some(Open::Reasoning { id, text, signature }) => {
                let mut item = json!({ "type": "reasoning", "id": id, "summary": [] });
                if self.reply.reasoning {
                    let fields = json!({ "item_id": id, "output_index": index, "summary_index": 0, "text": text });
                    self.send(out, "response.reasoning_summary_text.done", fields);
                    let part = json!({ "type": "summary_text", "text": text });
                    let fields = json!({ "item_id": id, "output_index": index, "summary_index": 0, "part": part });
                    self.send(out, "response.reasoning_summary_part.done", fields);
                    item["summary"] = json!([part]);
                }
                if let (true, Some(sig)) = (self.reply.encrypted, signature) {
                    item["encrypted_content"] = json!(signature::thinking(&sig));
                }
                self.done(item, out);
            }
        }
    }

    /// Writes one event of `kind`: `fields` with its type and sequence
    /// number.
    fn send(&mut self, out: &mut Vec<u8>, kind: &str, mut fields: Value) {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &fields);
        out.extend_from_slice(b"\n\n");
    }
}
