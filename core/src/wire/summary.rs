//! What one request came to, as the exchange sums it up at its end: the
//! record a request log or an access log keeps. No body, no query, no
//! credential: the client by name, keys by id, errors by kind.

use crate::wire::secret::KeyId;
use crate::wire::usage::TokenUsage;
use serde::{Deserialize, Serialize};

/// One request, summed up ([`crate::exchange::Step::Summary`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The id the request is logged under, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The request's method.
    pub method: String,
    /// Its path (never its query, which may carry a key).
    pub path: String,
    /// The API it spoke (`gemini`, `openai`).
    pub dialect: String,
    /// The client key it was admitted as, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The model it was counted under, for a request that went upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The status of its answer (0: it got none).
    pub status: u16,
    /// Whether the answer was streamed through as it came.
    pub streamed: bool,
    /// Each upstream attempt, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// The tokens it used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenUsage>,
    /// What kind of failure its answer was, when it was one (a kind of
    /// [`crate::wire::error::ProxyError`], or the last attempt's outcome
    /// for an upstream's answer relayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One upstream attempt of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The key tried, by id.
    pub key: KeyId,
    /// What came of it ([`crate::wire::keystore::Outcome::kind`]).
    pub outcome: String,
}

impl Summary {
    /// The summary as one JSON line, with the time the host measured.
    pub fn line(&self, total_ms: u64) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("ms".to_owned(), total_ms.into());
        }
        v.to_string()
    }
}
