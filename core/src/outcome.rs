//! The vocabulary between a request's forwarding loop and the key store:
//! a key handed out ([`Lease`]), why none was ([`Unavailable`]), and what
//! an attempt with it came to ([`Outcome`], carried in a [`Report`]).

use crate::secret::{ApiKey, KeyId};
use crate::stream::TokenUsage;
use crate::time::UnixMillis;
use serde::{Deserialize, Serialize};

/// Which quota a 429 hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RateLimitScope {
    /// A per-minute quota (requests or tokens): cool down briefly.
    PerMinute,
    /// A per-day quota: exhausted until the next Pacific midnight.
    PerDay,
    /// Google did not say: cool down briefly.
    Unknown,
}

/// A 429, classified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Which quota.
    pub scope: RateLimitScope,
    /// Google's `retryDelay`, if given.
    pub retry_after_ms: Option<u64>,
    /// Google's message, redacted.
    pub reason: String,
}

/// What happened when a key was used, as `core` classified it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// 2xx.
    Success,
    /// 429.
    RateLimited(RateLimit),
    /// The key itself is invalid, suspended or blocked.
    KeyRejected {
        /// Google's message, redacted.
        reason: String,
    },
    /// A 4xx that is the caller's own problem; the key is fine.
    ClientError {
        /// The status relayed.
        status: u16,
    },
    /// A 5xx.
    UpstreamError {
        /// The status.
        status: u16,
        /// What Google said, redacted.
        reason: String,
    },
    /// A 2xx answer broke off on its way (the model exists; the key is
    /// counted an error, never disabled).
    BrokenStream {
        /// What failed.
        reason: String,
    },
    /// The upstream could not be reached, or failed before its head.
    TransportError {
        /// What failed.
        reason: String,
    },
}

/// One attempt's result, as a host's key store receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The key used.
    pub key: KeyId,
    /// The model asked for.
    pub model: String,
    /// What happened.
    pub outcome: Outcome,
    /// The tokens a 2xx answer reported using (read from its end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    /// The client whose request this attempt ended, on its last attempt
    /// only (it counts the request, and the tokens, against the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Resources the attempt found to be `key`'s (it created them, or it
    /// could see them): the registry sends what names them to `key`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned: Vec<Owned>,
    /// Resources the attempt deleted: the registry forgets them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
    /// Whether `owned` was only seen in a listing: what is new to the
    /// registry is then the proxy's, not the client's who listed it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub listed: bool,
    /// The resource whose finished work `usage` is (a batch's, an
    /// interaction's): counted the first time only, however often it is
    /// read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_of: Option<String>,
}

impl Report {
    /// Whether the report makes an upload in progress known: the client's
    /// next request, a chunk (perhaps without a credential, perhaps served
    /// by another isolate), needs it applied, so a host that holds reports
    /// back sends this one before the answer ([`crate::forward::Step::Report`]).
    pub fn must_land_first(&self) -> bool {
        self.owned.iter().any(|o| o.name.starts_with("uploads/"))
    }

    /// Notes that the key owns `name`, once: until `expires` when given,
    /// else as already noted.
    pub fn own(&mut self, name: &str, expires: Option<UnixMillis>) {
        match self.owned.iter_mut().find(|o| o.name == name) {
            Some(known) => known.expires = expires.or(known.expires),
            None => self.owned.push(Owned { name: name.to_owned(), expires }),
        }
    }

    /// The report of an attempt with `lease` for `model`: no usage, no
    /// client, no resources.
    pub fn of(lease: &Lease, model: &str, outcome: Outcome) -> Self {
        Report {
            key: lease.id.clone(),
            model: model.to_owned(),
            outcome,
            usage: None,
            client: None,
            owned: Vec::new(),
            deleted: Vec::new(),
            listed: false,
            usage_of: None,
        }
    }
}

/// A resource found to be a key's ([`crate::affinity`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    /// Its name (`files/abc`, `cachedContents/x`, `uploads/…`).
    pub name: String,
    /// When Google lets it expire, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<UnixMillis>,
}

/// A key handed out for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The stable id, for reports.
    pub id: KeyId,
    /// The secret, to send upstream.
    pub secret: ApiKey,
    /// The client the store admitted the request as (none: the proxy key's,
    /// or an open proxy's).
    pub client: Option<String>,
    /// Whether the key was chosen because it owns a resource the request
    /// names (none other may serve it).
    pub pinned: bool,
}

/// Why no key was handed out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Unavailable {
    /// Every key not disabled is cooling or exhausted for this model.
    AllLimited {
        /// When the soonest frees up.
        until: UnixMillis,
        /// Milliseconds from now until then.
        retry_after_ms: u64,
        /// How many are limited.
        keys: usize,
    },
    /// Every usable key was already tried by this request.
    AllTried,
    /// No key can serve at all.
    NoUsableKey {
        /// Why.
        why: String,
    },
    /// The request's client was refused (its key, its models, its quotas).
    Refused {
        /// Why.
        refusal: crate::clients::Refusal,
    },
    /// The request names resources whose owner cannot serve it.
    Resource {
        /// Why.
        refusal: ResourceRefusal,
    },
}

/// Why a request that names resources cannot be served: it may go to the
/// key that owns them and to no other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ResourceRefusal {
    /// The owner is cooling or exhausted for the model.
    OwnerLimited {
        /// The resource.
        resource: String,
        /// When the owner frees up.
        until: UnixMillis,
        /// Milliseconds from now until then.
        retry_after_ms: u64,
    },
    /// The owner is disabled, or was removed from the pool.
    OwnerGone {
        /// The resource.
        resource: String,
        /// What became of the key.
        why: String,
    },
    /// The asker is a client, and the resource is not one it made (or
    /// is unknown): answered as a missing one, so that a client cannot
    /// learn that another's name exists.
    NotFound {
        /// The resource.
        resource: String,
    },
    /// Two of the resources belong to different keys.
    Conflict {
        /// One resource.
        first: String,
        /// One of another key.
        second: String,
    },
}
