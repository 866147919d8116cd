//! What one request came to, as the exchange sums it up at its end: the
//! record a request log or an access log keeps. No body, no query, no
//! credential: the client by name, keys by id, errors by kind.

use crate::wire::secret::KeyId;
use crate::wire::usage::TokenUsage;
use serde::{Deserialize, Serialize};

/// How many requests the request log keeps unless `REQUEST_LOG_SIZE` says.
pub const DEFAULT_LOG_SIZE: usize = 10_000;

/// One request, summed up ([`crate::exchange::Step::Summary`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// When the request came (ms since the epoch; 0: the host gave no
    /// time).
    #[serde(default)]
    pub at: u64,
    /// The id the request is logged under, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The request's method.
    pub method: String,
    /// Its path (never its query, which may carry a key).
    pub path: String,
    /// The API it spoke (`gemini`, `openai`).
    pub dialect: String,
    /// The client key it was admitted as, by id (none: the proxy key's, or
    /// an open proxy's caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// That client's name (the key store fills it in: the exchange knows
    /// the id only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// The model the caller named, when an alias served another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_asked: Option<String>,
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
    /// Why, in words (redacted): the proxy's error message, or the last
    /// attempt's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Milliseconds from the request to its answer's head, as the host
    /// measured them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u64>,
    /// Milliseconds from the request to its end, as the host measured them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// Whether the request was for the proxy's own pages and API (`/stat`,
    /// `/admin/…`, the login, a CORS preflight): in an access log, never in
    /// the request log.
    #[serde(skip)]
    pub own: bool,
}

/// One upstream attempt of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The key tried, by id.
    pub key: KeyId,
    /// What came of it ([`crate::wire::keystore::Outcome::kind`]).
    pub outcome: String,
    /// What it said beyond that ([`crate::wire::keystore::Outcome::detail`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Summary {
    /// Whether it is a refusal before admission (a stranger's 401, a bad
    /// head, a body too large): no client admitted, no key tried. A flood of
    /// them is kept to a share of the request log.
    pub fn refused_stranger(&self) -> bool {
        (400..500).contains(&self.status) && self.client.is_none() && self.attempts.is_empty()
    }

    /// The summary with the times the host measured: when the request came
    /// (ms since the epoch), to the answer's head (none: no answer went
    /// out) and to the end.
    #[must_use]
    pub fn timed(mut self, at: u64, ttfb_ms: Option<u64>, ms: u64) -> Self {
        self.at = at;
        self.ttfb_ms = ttfb_ms.map(|t| t.min(ms));
        self.ms = Some(ms);
        self
    }

    /// The summary as one JSON line (an access log's).
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether the request's answer was a failure (no answer at all is one).
    pub fn failed(&self) -> bool {
        self.status >= 400 || self.status == 0
    }
}

/// Which records a look wants: every filter given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestQuery {
    /// A status class: `2xx`, `3xx`, `4xx`, `5xx`, or `failed` (4xx, 5xx
    /// and no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The model served or asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A key id one of its attempts used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The client, by name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The cursor: only records older than this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// The most records to answer with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl RequestQuery {
    /// Whether `s` is one of the records asked for.
    pub fn matches(&self, s: &Summary) -> bool {
        let status = match self.status.as_deref() {
            None => true,
            Some("failed") => s.failed(),
            Some(class) => {
                class.chars().next().and_then(|d| d.to_digit(10)).is_some_and(|d| d == u32::from(s.status / 100))
            }
        };
        let model =
            self.model.as_ref().is_none_or(|m| s.model.as_ref() == Some(m) || s.model_asked.as_ref() == Some(m));
        let key = self.key.as_ref().is_none_or(|k| s.attempts.iter().any(|a| a.key.as_str() == k));
        let client =
            self.client.as_ref().is_none_or(|c| s.client.as_ref() == Some(c) || s.client_name.as_ref() == Some(c));
        let id = self.id.as_ref().is_none_or(|id| s.request_id.as_ref() == Some(id));
        status && model && key && client && id
    }
}
