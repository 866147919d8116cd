//! APIs Google does not offer, served from Gemini: a request in another
//! API's shape becomes a Gemini `generateContent`, `streamGenerateContent`
//! or `countTokens` of the model it names (through the model aliases), and
//! Gemini's answer goes back in the caller's shape, a stream event by event
//! as it arrives. From the pool's side a translated call is the Gemini call
//! it became: the same retries, key choice, quotas and accounting.
//!
//! - [`anthropic`]: Anthropic's Messages API (Claude Code, the `anthropic`
//!   SDKs, `@ai-sdk/anthropic`).
//! - [`responses`]: OpenAI's Responses API (Codex, the Agents SDK, the
//!   `openai` SDKs' `responses`, the AI SDK's `openai(…)`).
//! - [`rename`]: a native or OpenAI-style answer to an aliased call names
//!   the model as the client asked for it.
//! - [`signature`]: Gemini's thought signatures, carried through what a
//!   client sends back unchanged, and Google's placeholder where it did not.
//!
//! Nothing here does I/O: the exchange calls [`Translated`]'s parts as the
//! relay goes, and a host calls a [`Streamer`] for each piece of a stream.

pub mod anthropic;
pub mod recall;
pub mod rename;
pub mod responses;
pub mod signature;

use crate::config::aliases::Aliases;
use crate::google::stream::{Framing, Splitter};
use crate::request::route::{Foreign, Op, normalize_model};
use crate::wire::error::ProxyError;
use serde_json::{Value, json};

/// What Gemini is asked, from a request in another API's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Translated {
    /// The Gemini model that serves it (an alias resolved).
    pub model: String,
    /// The Gemini method: [`Op::GenerateContent`],
    /// [`Op::StreamGenerateContent`] or [`Op::CountTokens`].
    pub op: Op,
    /// Gemini's request body.
    pub body: Vec<u8>,
    /// How the answer goes back.
    pub reply: Reply,
    /// Lines for the host's log (a signature a client dropped, a tool left
    /// out).
    pub notes: Vec<String>,
}

impl Translated {
    /// The upstream path below the API version, with its query.
    pub fn upstream_path(&self) -> (String, String) {
        let action = match self.op {
            Op::StreamGenerateContent => "streamGenerateContent",
            Op::CountTokens => "countTokens",
            _ => "generateContent",
        };
        let query = if self.streams() { "alt=sse" } else { "" };
        (format!("/models/{}:{action}", self.model), query.to_owned())
    }

    /// Whether the client asked for a stream.
    pub fn streams(&self) -> bool {
        self.op == Op::StreamGenerateContent
    }
}

/// How an answer goes back to the client: its API and what the request
/// said that the answer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// An Anthropic message (or a token count).
    Anthropic(anthropic::Reply),
    /// An OpenAI `response`.
    Responses(Box<responses::Reply>),
}

impl Reply {
    /// Gemini's whole answer (2xx) in the client's shape: the body, or why
    /// it could not be read.
    pub fn answer(&self, gemini: &[u8]) -> Result<String, String> {
        match self {
            Self::Anthropic(reply) => reply.answer(gemini),
            Self::Responses(reply) => reply.answer(gemini),
        }
    }

    /// Google's error answer (`status`, its body redacted) in the client's
    /// shape.
    pub fn error(&self, status: u16, gemini: &str) -> String {
        let message = google_message(gemini);
        match self {
            Self::Anthropic(_) => crate::wire::error::anthropic_error(status, &message).to_string(),
            Self::Responses(_) => crate::wire::error::openai_error(status, &message).to_string(),
        }
    }

    /// The translator of a streamed answer.
    pub fn streamer(&self) -> Streamer {
        match self {
            Self::Anthropic(reply) => Streamer::Anthropic(Box::new(anthropic::Stream::new(reply.clone()))),
            Self::Responses(reply) => Streamer::Responses(Box::new(responses::Stream::new((**reply).clone()))),
        }
    }

    /// The content type of the client's answer.
    pub fn content_type(&self, stream: bool) -> &'static str {
        if stream { "text/event-stream; charset=utf-8" } else { "application/json; charset=utf-8" }
    }
}

/// Translates a streamed Gemini answer (`alt=sse`) piece by piece: each
/// piece's complete events go out as the client's events at once, nothing
/// held back but an event's unfinished end.
#[derive(Clone, Debug, PartialEq)]
pub enum Streamer {
    /// Into Anthropic's stream events.
    Anthropic(Box<anthropic::Stream>),
    /// Into the Responses API's stream events.
    Responses(Box<responses::Stream>),
    /// Google's own answer, its model named as the client asked.
    Rename(rename::Rename),
}

impl Streamer {
    /// Translates a piece of the upstream body, appending what goes to the
    /// client to `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        match self {
            Self::Anthropic(s) => s.push(piece, out),
            Self::Responses(s) => s.push(piece, out),
            Self::Rename(r) => r.push(piece, out),
        }
    }

    /// The upstream body ended cleanly: the client's closing events.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            Self::Anthropic(s) => s.finish(out),
            Self::Responses(s) => s.finish(out),
            Self::Rename(r) => r.finish(out),
        }
    }

    /// The upstream body broke off: the client's error event, after which
    /// the host ends the answer broken.
    pub fn broke(&mut self, out: &mut Vec<u8>) {
        match self {
            Self::Anthropic(s) => s.broke(out),
            Self::Responses(s) => s.broke(out),
            // What came whole goes as it is; the host ends the answer broken.
            Self::Rename(r) => r.finish(out),
        }
    }
}

/// Translates a request of `foreign`'s API. `count`: it asks for a token
/// count.
pub fn request(foreign: Foreign, body: &[u8], aliases: &Aliases) -> Result<Translated, ProxyError> {
    match foreign {
        Foreign::Messages => anthropic::request(body, aliases, false),
        Foreign::MessagesCountTokens => anthropic::request(body, aliases, true),
        Foreign::Responses => responses::request(body, aliases),
    }
}

/// A streamed Gemini answer as both translated streams read it: the events
/// each piece completes, Google's error event, and what the answer told so
/// far (its last usage, a blocked prompt, the finish reason).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GeminiStream {
    splitter: Splitter,
    /// The last `usageMetadata`.
    pub(crate) usage: Option<Value>,
    /// Whether the prompt was blocked (`promptFeedback.blockReason`).
    pub(crate) blocked: bool,
    /// The first candidate's `finishReason`, once given.
    pub(crate) finish: Option<String>,
}

/// An event of a streamed Gemini answer ([`GeminiStream::read`]).
pub(crate) enum GeminiEvent {
    /// A chunk of the answer: its parts are [`parts`].
    Chunk(Value),
    /// Google's error mid-answer, with its message.
    Error(String),
}

impl GeminiStream {
    pub(crate) fn new() -> Self {
        Self { splitter: Splitter::new(Framing::Sse), usage: None, blocked: false, finish: None }
    }

    /// The events `piece` completes (each event's data).
    pub(crate) fn events(&mut self, piece: &[u8]) -> Vec<Vec<u8>> {
        let mut events = Vec::new();
        self.splitter.push(piece, |event| events.push(event.to_vec()));
        events
    }

    /// Reads one event, noting what a chunk tells of the whole answer;
    /// `None` for one that is no JSON.
    pub(crate) fn read(&mut self, event: &[u8]) -> Option<GeminiEvent> {
        let v = serde_json::from_slice::<Value>(event).ok()?;
        if let Some(error) = v.get("error") {
            let message = error.get("message").and_then(Value::as_str).unwrap_or("the upstream failed mid-answer");
            return Some(GeminiEvent::Error(message.to_owned()));
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage = Some(u.clone());
        }
        self.blocked |= v.pointer("/promptFeedback/blockReason").is_some();
        if let Some(finish) = v.pointer("/candidates/0/finishReason").and_then(Value::as_str) {
            self.finish = Some(finish.to_owned());
        }
        Some(GeminiEvent::Chunk(v))
    }
}

/// The parts of an answer's (or a chunk's) first candidate.
pub(crate) fn parts(answer: &Value) -> impl Iterator<Item = Part<'_>> {
    let parts = answer.pointer("/candidates/0/content/parts").and_then(Value::as_array);
    parts.into_iter().flatten().map(Part::of)
}

/// Whether Gemini's `finishReason` is a safety or policy stop (the answer
/// refused or cut by Google's filters).
pub(crate) fn is_safety_stop(finish: &str) -> bool {
    matches!(
        finish,
        "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION"
    )
}

/// A part of a Gemini answer, as a translation sees it.
pub(crate) enum Part<'a> {
    Thought { text: &'a str, signature: Option<&'a str> },
    Text(&'a str),
    Call { name: &'a str, args: Value, signature: Option<&'a str> },
    Other,
}

impl<'a> Part<'a> {
    pub(crate) fn of(part: &'a Value) -> Self {
        let signature = part.get("thoughtSignature").and_then(Value::as_str).filter(|s| !s.is_empty());
        if let Some(call) = part.get("functionCall") {
            let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
            let args = call.get("args").filter(|a| a.is_object()).cloned().unwrap_or_else(|| json!({}));
            return Self::Call { name, args, signature };
        }
        match part.get("text").and_then(Value::as_str) {
            Some(text) if part.get("thought").and_then(Value::as_bool) == Some(true) => {
                Self::Thought { text, signature }
            }
            // Gemini 3 may sign a text part (most often an empty last
            // one); Google checks only the signatures of calls, so a text
            // part's is not carried.
            Some(text) if !text.is_empty() => Self::Text(text),
            _ => Self::Other,
        }
    }
}

/// The Gemini model a client's model name stands for: an alias, else the
/// name itself when it is one a model can have.
pub fn gemini_model(asked: &str, aliases: &Aliases) -> Result<String, ProxyError> {
    let asked = asked.trim();
    if let Some(model) = aliases.resolve(asked) {
        return Ok(model.to_owned());
    }
    normalize_model(asked).ok_or_else(|| ProxyError::BadRequest(format!("invalid model name {asked:?}")))
}

/// The message of Google's error body, else the body itself (cut short).
fn google_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().map(|v| v.get("error").or_else(|| v.pointer("/0/error")).unwrap_or(v));
    match error.and_then(|e| e.get("message")).and_then(|m| m.as_str()) {
        Some(m) => m.to_owned(),
        None if body.trim().is_empty() => "the upstream answered with an error and no detail".to_owned(),
        None => body.chars().take(500).collect(),
    }
}

/// Whether `model` is a Gemini 3 model or newer: the ones that ask for a
/// thinking level rather than a budget and enforce thought signatures.
pub fn is_gemini_3_or_newer(model: &str) -> bool {
    let Some(rest) = model.strip_prefix("gemini-") else { return false };
    let major: String = rest.chars().take_while(char::is_ascii_digit).collect();
    major.parse::<u32>().is_ok_and(|m| m >= 3)
}

/// Whether `model` thinks, and so takes a `thinkingConfig` (Gemini 2.5
/// and newer).
pub fn thinks(model: &str) -> bool {
    is_gemini_3_or_newer(model) || model.starts_with("gemini-2.5")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_generations() {
        assert!(is_gemini_3_or_newer("gemini-3-pro-preview") && is_gemini_3_or_newer("gemini-3.5-flash"));
        assert!(is_gemini_3_or_newer("gemini-10-ultra"));
        assert!(!is_gemini_3_or_newer("gemini-2.5-pro") && !is_gemini_3_or_newer("gemma-3-27b-it"));
        assert!(thinks("gemini-2.5-flash-lite") && !thinks("gemini-2.0-flash"));
    }

    #[test]
    fn google_s_message_is_what_a_translated_error_says() {
        let body = r#"{"error":{"code":400,"message":"bad thing","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(google_message(body), "bad thing");
        assert_eq!(google_message(r#"[{"error":{"message":"wrapped"}}]"#), "wrapped");
        assert_eq!(google_message("plain"), "plain");
        assert!(google_message("").contains("no detail"));
    }

    #[test]
    fn a_client_s_model_resolves_through_the_aliases() {
        let aliases = Aliases::default();
        assert_eq!(gemini_model("claude-sonnet-4-5", &aliases).expect("as expected"), "gemini-3-flash-preview");
        assert_eq!(gemini_model("models/gemini-2.5-pro", &aliases).expect("as expected"), "gemini-2.5-pro");
        assert!(matches!(gemini_model("bad model", &aliases), Err(ProxyError::BadRequest(_))));
    }
}
