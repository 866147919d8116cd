//! The tokens an answer used, read from Gemini's `usageMetadata` or
//! OpenAI's `usage`, as they are counted per key × model × client.

use serde_json::Value;

/// The tokens an answer used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenUsage {
    /// Prompt (input) tokens.
    pub prompt: u64,
    /// Output tokens (candidates; completion).
    pub output: u64,
    /// Prompt tokens served from a cache.
    pub cached: u64,
    /// Thinking (reasoning) tokens.
    pub thinking: u64,
}

impl TokenUsage {
    /// Adds `other` (saturating).
    pub fn add(&mut self, other: &TokenUsage) {
        self.prompt = self.prompt.saturating_add(other.prompt);
        self.output = self.output.saturating_add(other.output);
        self.cached = self.cached.saturating_add(other.cached);
        self.thinking = self.thinking.saturating_add(other.thinking);
    }

    /// Takes `other` away (saturating).
    pub fn sub(&mut self, other: &TokenUsage) {
        self.prompt = self.prompt.saturating_sub(other.prompt);
        self.output = self.output.saturating_sub(other.output);
        self.cached = self.cached.saturating_sub(other.cached);
        self.thinking = self.thinking.saturating_sub(other.thinking);
    }

    /// Whether every count is zero.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// The usage an answer (or a stream's event) reports, if it reports one:
/// Gemini's `usageMetadata` or OpenAI's `usage`.
pub fn usage_of(json: &[u8]) -> Option<TokenUsage> {
    let v: Value = serde_json::from_slice(json).ok()?;
    if let Some(u) = v.get("usageMetadata") {
        return gemini_usage(u);
    }
    openai_usage(v.get("usage")?)
}

fn count(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

pub(crate) fn gemini_usage(u: &Value) -> Option<TokenUsage> {
    u.is_object().then(|| TokenUsage {
        prompt: count(u, "promptTokenCount"),
        output: count(u, "candidatesTokenCount"),
        cached: count(u, "cachedContentTokenCount"),
        thinking: count(u, "thoughtsTokenCount"),
    })
}

/// The tokens a finished batch's answer reports: the sum of its inline
/// responses' `usageMetadata` (in the operation's `metadata.output` or its
/// `response`); `None` for a batch not done, or one whose results are in a
/// file.
pub fn batch_usage(answer: &[u8]) -> Option<TokenUsage> {
    let v: Value = serde_json::from_slice(answer).ok()?;
    if v.get("done") != Some(&Value::Bool(true)) {
        return None;
    }
    let lists = ["/metadata/output/inlinedResponses/inlinedResponses", "/response/inlinedResponses/inlinedResponses"];
    let items = lists.iter().find_map(|p| v.pointer(p)?.as_array())?;
    let each = items.iter().filter_map(|i| gemini_usage(i.pointer("/response/usageMetadata")?));
    Some(each.fold(TokenUsage::default(), |sum, u| TokenUsage {
        prompt: sum.prompt + u.prompt,
        output: sum.output + u.output,
        cached: sum.cached + u.cached,
        thinking: sum.thinking + u.thinking,
    }))
}

/// OpenAI's `usage`, or the Interactions API's (`total_input_tokens`, …).
pub(crate) fn openai_usage(u: &Value) -> Option<TokenUsage> {
    let details = |k: &str, field: &str| u.get(k).map_or(0, |d| count(d, field));
    let first = |a: u64, k: &str| if a > 0 { a } else { count(u, k) };
    u.is_object().then(|| TokenUsage {
        prompt: first(count(u, "prompt_tokens"), "total_input_tokens"),
        output: first(count(u, "completion_tokens"), "total_output_tokens"),
        cached: first(details("prompt_tokens_details", "cached_tokens"), "total_cached_tokens"),
        thinking: first(details("completion_tokens_details", "reasoning_tokens"), "total_thought_tokens"),
    })
}

/// The tokens a quota counts of a usage.
pub fn quota_tokens(t: &TokenUsage) -> u64 {
    t.prompt.saturating_add(t.output).saturating_add(t.thinking)
}
