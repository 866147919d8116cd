//! OpenAI's Responses API served from Gemini: what Codex, the OpenAI Agents
//! SDK, the `openai` SDKs' `responses` and the AI SDK's `openai(…)` provider
//! send, as a Gemini request ([`request`]), and Gemini's answer as a
//! `response` object ([`Reply::answer`]) or as the Responses stream events
//! ([`Stream`]).
//!
//! Translated: `instructions` and `system` / `developer` messages, `input`
//! as a string or items (messages with text, images and files; function
//! calls and their outputs; freeform tool calls; reasoning items this proxy
//! made), `tools` of type `function` (their JSON Schema whole) and `custom`
//! (a freeform tool: one string argument), `web_search` as Google Search
//! where no function is declared beside it, `tool_choice`,
//! `max_output_tokens`, `temperature`, `top_p`, `reasoning` (effort, and a
//! summary: Gemini's thoughts as reasoning items) and `text.format`
//! (JSON schema, JSON object). Accepted and ignored: `store`,
//! `parallel_tool_calls`, `prompt_cache_key`, `metadata`, `include`,
//! `truncation`, `service_tier`, `user`, and any member OpenAI adds
//! tomorrow. Refused, clearly: `previous_response_id` and `conversation`
//! (the proxy keeps no conversations).

mod request;
mod stream;

pub use request::request;
pub use stream::Stream;

use crate::translate::{Part, signature};
use serde_json::{Map, Value, json};

/// What the answer of a Responses request needs of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The model the client asked for, which the answer names.
    pub model: String,
    /// Whether the client asked for a reasoning summary (and so sees
    /// Gemini's thoughts as `reasoning` items).
    pub reasoning: bool,
    /// Whether it asked for `reasoning.encrypted_content` (a reasoning item
    /// carries the thought's signature there).
    pub encrypted: bool,
    /// The names of its freeform (`custom`) tools: their calls are
    /// `custom_tool_call` items.
    pub custom: Vec<String>,
    /// The request's members a `response` object repeats
    /// (`instructions`, `tool_choice`, `temperature`, …).
    pub echo: Map<String, Value>,
    /// When the request came (Unix seconds), once the exchange knows.
    pub created_at: u64,
}

/// A member of a request that its `response` repeats, with its default.
type Echoed = (&'static str, fn() -> Value);

/// The members of a request that its `response` repeats, with their
/// defaults.
const ECHOED: [Echoed; 10] = [
    ("instructions", || Value::Null),
    ("max_output_tokens", || Value::Null),
    ("metadata", || json!({})),
    ("parallel_tool_calls", || json!(true)),
    ("reasoning", || json!({ "effort": null, "summary": null })),
    ("store", || json!(false)),
    ("temperature", || json!(1.0)),
    ("text", || json!({ "format": { "type": "text" } })),
    ("tool_choice", || json!("auto")),
    ("top_p", || json!(1.0)),
];

impl Reply {
    /// Gemini's whole answer as a `response` object.
    pub fn answer(&self, gemini: &[u8]) -> Result<String, String> {
        let v: Value = serde_json::from_slice(gemini).map_err(|e| format!("Gemini's answer is not JSON: {e}"))?;
        let nonce = signature::nonce(v.get("responseId").and_then(Value::as_str), gemini);
        let mut items = Items::new(self, &nonce);
        let candidate = v.pointer("/candidates/0");
        for part in crate::translate::parts(&v) {
            items.part(part);
        }
        let output = items.done();
        let finish = candidate.and_then(|c| c.get("finishReason")).and_then(Value::as_str);
        let blocked = v.pointer("/promptFeedback/blockReason").is_some();
        let incomplete = incomplete(finish, blocked);
        let status = if incomplete.is_some() { "incomplete" } else { "completed" };
        let response =
            self.response(&nonce, status, output, Some(usage(v.get("usageMetadata"))), incomplete, Value::Null);
        Ok(response.to_string())
    }

    /// A `response` object: `status`, its `output` items, `usage`, why it
    /// is incomplete, its `error`.
    fn response(
        &self,
        nonce: &str,
        status: &str,
        output: Vec<Value>,
        usage: Option<Value>,
        incomplete: Option<&str>,
        error: Value,
    ) -> Value {
        let mut response = json!({
            "id": format!("resp_{nonce}"),
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": output,
            "usage": usage,
            "incomplete_details": incomplete.map(|reason| json!({ "reason": reason })),
            "error": error,
            "previous_response_id": null,
            "tools": [],
            "truncation": "disabled",
        });
        for (key, default) in ECHOED {
            response[key] = self.echo.get(key).cloned().unwrap_or_else(default);
        }
        response
    }
}

/// Why an answer is incomplete (`max_output_tokens`, `content_filter`), if
/// it is.
fn incomplete(finish: Option<&str>, blocked: bool) -> Option<&'static str> {
    match finish {
        _ if blocked => Some("content_filter"),
        Some("MAX_TOKENS") => Some("max_output_tokens"),
        Some(f) if crate::translate::is_safety_stop(f) => Some("content_filter"),
        _ => None,
    }
}

/// OpenAI's `usage` for Gemini's `usageMetadata`: input with what the
/// cache served (and that part apart), output with the reasoning.
fn usage(metadata: Option<&Value>) -> Value {
    let count = |k: &str| metadata.and_then(|m| m.get(k)).and_then(Value::as_u64).unwrap_or(0);
    let (input, thoughts) = (count("promptTokenCount") + count("toolUsePromptTokenCount"), count("thoughtsTokenCount"));
    let output = count("candidatesTokenCount") + thoughts;
    json!({
        "input_tokens": input,
        "input_tokens_details": { "cached_tokens": count("cachedContentTokenCount") },
        "output_tokens": output,
        "output_tokens_details": { "reasoning_tokens": thoughts },
        "total_tokens": input + output,
    })
}

/// The output items of a whole answer, built part by part.
struct Items<'a> {
    reply: &'a Reply,
    nonce: &'a str,
    output: Vec<Value>,
    calls: usize,
}

impl<'a> Items<'a> {
    fn new(reply: &'a Reply, nonce: &'a str) -> Self {
        Self { reply, nonce, output: Vec::new(), calls: 0 }
    }

    fn part(&mut self, part: Part<'_>) {
        let last = self.output.len();
        match part {
            Part::Thought { text, signature }
                if self.reply.reasoning || (self.reply.encrypted && signature.is_some()) =>
            {
                let open = self
                    .output
                    .last()
                    .is_some_and(|i| i["type"] == "reasoning" && i.get("encrypted_content").is_none());
                if !open {
                    let id = format!("rs_{}_{last}", self.nonce);
                    self.output.push(json!({ "type": "reasoning", "id": id, "summary": [] }));
                }
                let Some(item) = self.output.last_mut() else { return };
                if self.reply.reasoning && !text.is_empty() {
                    match item["summary"].as_array_mut() {
                        Some(summary) if !summary.is_empty() => {
                            let joined = format!("{}{text}", summary[0]["text"].as_str().unwrap_or_default());
                            summary[0]["text"] = json!(joined);
                        }
                        Some(summary) => summary.push(json!({ "type": "summary_text", "text": text })),
                        None => {}
                    }
                }
                if let (true, Some(sig)) = (self.reply.encrypted, signature) {
                    item["encrypted_content"] = json!(signature::thinking(sig));
                }
            }
            Part::Text(text) => match self.output.last_mut() {
                Some(item) if item["type"] == "message" => {
                    let joined = format!("{}{text}", item["content"][0]["text"].as_str().unwrap_or_default());
                    item["content"][0]["text"] = json!(joined);
                }
                _ => {
                    let id = format!("msg_{}_{last}", self.nonce);
                    self.output.push(message(&id, text, "completed"));
                }
            },
            Part::Call { name, args, signature } => {
                let item = call_item(self.reply, self.nonce, self.calls, name, &args, signature, "completed");
                self.calls += 1;
                self.output.push(item);
            }
            Part::Thought { .. } | Part::Other => {}
        }
    }

    fn done(self) -> Vec<Value> {
        self.output
    }
}

/// A `message` output item holding `text`.
fn message(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [{ "type": "output_text", "text": text, "annotations": [], "logprobs": [] }],
    })
}

/// The `index`th call of an answer as an output item: a `function_call`
/// (its arguments as JSON text), or a `custom_tool_call` for a freeform
/// tool (its one string). The call id carries Google's signature.
fn call_item(
    reply: &Reply,
    nonce: &str,
    index: usize,
    name: &str,
    args: &Value,
    signature: Option<&str>,
    status: &str,
) -> Value {
    let call_id = signature::call_id(signature::OPENAI_CALL, nonce, index, signature);
    if reply.custom.iter().any(|c| c == name) {
        let input = args.get("input").and_then(Value::as_str).unwrap_or_default();
        return json!({
            "type": "custom_tool_call",
            "id": format!("ctc_{nonce}_{index}"),
            "call_id": call_id,
            "name": name,
            "input": input,
            "status": status,
        });
    }
    json!({
        "type": "function_call",
        "id": format!("fc_{nonce}_{index}"),
        "call_id": call_id,
        "name": name,
        "arguments": args.to_string(),
        "status": status,
    })
}

#[cfg(test)]
mod tests;
