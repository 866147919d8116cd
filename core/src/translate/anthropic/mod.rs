//! Anthropic's Messages API served from Gemini: what Claude Code, the
//! `anthropic` SDKs and `@ai-sdk/anthropic` send, as a Gemini request
//! ([`request`]), and Gemini's answer as a `message` ([`Reply::answer`]) or
//! as Anthropic's stream events ([`Stream`]).
//!
//! Translated: `system` (string, blocks, and `system`-role messages), text,
//! images and PDFs (base64 or URL), `tool_use` / `tool_result` (with
//! `is_error`), `tools` (their JSON Schema whole), `tool_choice`,
//! `max_tokens`, `temperature`, `top_p`, `top_k`, `stop_sequences`,
//! `thinking` and `output_config.effort`; thoughts come back as `thinking`
//! blocks when the client asked for thinking. Ignored, never refused:
//! `cache_control`, `context_management`, `metadata`, `service_tier`,
//! server tools, and any member Anthropic adds tomorrow.

mod request;
mod stream;

pub use request::request;
pub use stream::Stream;

use crate::translate::{Part, signature};
use serde_json::{Value, json};

/// What the answer of a Messages request needs of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The model the client asked for, which the answer names.
    pub model: String,
    /// Whether the client asked for thinking (and so sees Gemini's
    /// thoughts as `thinking` blocks).
    pub thinking: bool,
    /// Whether it asked for a token count.
    pub count: bool,
}

impl Reply {
    /// Gemini's whole answer as a `message`, or a `count_tokens` answer.
    pub fn answer(&self, gemini: &[u8]) -> Result<String, String> {
        let v: Value = serde_json::from_slice(gemini).map_err(|e| format!("Gemini's answer is not JSON: {e}"))?;
        if self.count {
            let total = v.get("totalTokens").and_then(Value::as_u64).unwrap_or(0);
            return Ok(json!({ "input_tokens": total }).to_string());
        }
        let nonce = signature::nonce(v.get("responseId").and_then(Value::as_str), gemini);
        let mut content: Vec<Value> = Vec::new();
        let mut calls = 0;
        let candidate = v.pointer("/candidates/0");
        for part in crate::translate::parts(&v) {
            match part {
                Part::Thought { text, signature } if self.thinking => {
                    let signature = signature.map(signature::thinking).unwrap_or_default();
                    content.push(json!({ "type": "thinking", "thinking": text, "signature": signature }));
                }
                Part::Text(text) => match content.last_mut() {
                    Some(last) if last["type"] == "text" => {
                        let joined = format!("{}{text}", last["text"].as_str().unwrap_or_default());
                        last["text"] = json!(joined);
                    }
                    _ => content.push(json!({ "type": "text", "text": text })),
                },
                Part::Call { name, args, signature } => {
                    let id = signature::call_id(signature::ANTHROPIC_CALL, &nonce, calls, signature);
                    calls += 1;
                    content.push(json!({ "type": "tool_use", "id": id, "name": name, "input": args }));
                }
                Part::Thought { .. } | Part::Other => {}
            }
        }
        let finish = candidate.and_then(|c| c.get("finishReason")).and_then(Value::as_str);
        let blocked = v.pointer("/promptFeedback/blockReason").is_some();
        let message = json!({
            "id": format!("msg_{nonce}"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason(finish, calls > 0, blocked),
            "stop_sequence": null,
            "usage": usage(v.get("usageMetadata")),
        });
        Ok(message.to_string())
    }
}

/// Anthropic's `stop_reason` for Gemini's `finishReason` (`called`: the
/// answer holds a call; `blocked`: the prompt was blocked).
fn stop_reason(finish: Option<&str>, called: bool, blocked: bool) -> &'static str {
    match finish {
        _ if blocked => "refusal",
        Some("MAX_TOKENS") => "max_tokens",
        Some(f) if crate::translate::is_safety_stop(f) => "refusal",
        _ if called => "tool_use",
        _ => "end_turn",
    }
}

/// Anthropic's `usage` for Gemini's `usageMetadata`: input without what the
/// cache served (Anthropic counts that apart), output with the thinking.
fn usage(metadata: Option<&Value>) -> Value {
    let count = |k: &str| metadata.and_then(|m| m.get(k)).and_then(Value::as_u64).unwrap_or(0);
    let cached = count("cachedContentTokenCount");
    json!({
        "input_tokens": count("promptTokenCount").saturating_sub(cached),
        "output_tokens": count("candidatesTokenCount") + count("thoughtsTokenCount"),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    })
}

#[cfg(test)]
mod tests;
