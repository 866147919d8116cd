//! The vocabulary between a request's forwarding loop and the key store:
//! a key handed out ([`Lease`]), why none was ([`Unavailable`]), and what
//! an attempt with it came to ([`Outcome`], carried in a [`Report`]).

use crate::wire::secret::{ApiKey, KeyId};
use crate::wire::time::UnixMillis;
use crate::wire::usage::TokenUsage;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

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

impl Outcome {
    /// The outcome's kind, as its serde tag spells it (`success`,
    /// `rate-limited`, `key-rejected`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::RateLimited(_) => "rate-limited",
            Self::KeyRejected { .. } => "key-rejected",
            Self::ClientError { .. } => "client-error",
            Self::UpstreamError { .. } => "upstream-error",
            Self::BrokenStream { .. } => "broken-stream",
            Self::TransportError { .. } => "transport-error",
        }
    }

    /// What the outcome says beyond its kind (already redacted): Google's
    /// reason, the status; none for a success.
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::Success => None,
            Self::RateLimited(r) => Some(r.reason.clone()),
            Self::KeyRejected { reason } | Self::BrokenStream { reason } | Self::TransportError { reason } => {
                Some(reason.clone())
            }
            Self::ClientError { status } => Some(format!("status {status}")),
            Self::UpstreamError { status, reason } => Some(format!("{status}: {reason}")),
        }
    }
}

impl crate::wire::summary::Attempt {
    /// An attempt of `key` that came to `outcome`.
    pub fn of(key: &KeyId, outcome: &Outcome) -> Self {
        Self { key: key.clone(), outcome: outcome.kind().to_owned(), reason: outcome.detail() }
    }
}

impl Report {
    /// Whether the report makes an upload in progress known: the client's
    /// next request, a chunk (perhaps without a credential, perhaps served
    /// by another isolate), needs it applied, so a host that holds reports
    /// back sends this one before the answer ([`crate::exchange::Step::Report`]).
    pub fn must_land_first(&self) -> bool {
        // (So does an ephemeral token minted: the client's next request
        // opens a session with it.)
        self.owned.iter().any(|o| o.name.starts_with("uploads/") || o.name.starts_with("authTokens/"))
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
        Self::of_key(lease.id.clone(), model, outcome)
    }

    /// The report of an attempt with key `key` for `model`: no usage, no
    /// client, no resources.
    pub fn of_key(key: KeyId, model: &str, outcome: Outcome) -> Self {
        Report {
            key,
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

/// A resource found to be a key's ([`crate::google::names`]).
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
        refusal: crate::wire::keystore::Refusal,
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

/// Pseudo-model under which calls that name no model (lists) are counted.
pub const NO_MODEL: &str = "(models)";

/// The pseudo-models open to a client kept to some models: lists, and the
/// resources a model is used with (it is checked where it is used).
pub const OPEN_PSEUDO_MODELS: &[&str] =
    &[NO_MODEL, "(files)", "(cachedContents)", "(batches)", "(operations)", "(fileSearchStores)", "(generatedFiles)"];

/// The hash a client key is stored and looked up as (hex SHA-256, in a
/// domain of its own).
pub fn hash_secret(secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"gemini-proxy client key\0");
    h.update(secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The caller a request claims to be, as the key store sees it: the hashes
/// of the credentials it presented (never the credentials).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Hashes ([`hash_secret`]) of the credentials presented.
    pub hashes: Vec<String>,
    /// Whether the proxy is open (no `PROXY_API_KEY`): a request without a
    /// client key passes while no client key exists.
    pub open: bool,
}

/// Which daily quota a client ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quota {
    /// Requests a day.
    Requests,
    /// Tokens a day (prompt, output and thinking).
    Tokens,
}

/// Why the key store refused a request's client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "kebab-case")]
pub enum Refusal {
    /// No client key (nor the proxy key) matches.
    UnknownKey {
        /// Whether any credential came at all.
        presented: bool,
    },
    /// The client may not use the model.
    ModelNotAllowed {
        /// The client's name.
        client: String,
        /// The model asked for.
        model: String,
    },
    /// The client used up a daily quota.
    OverQuota {
        /// The client's name.
        client: String,
        /// Which.
        quota: Quota,
        /// Its limit.
        limit: u64,
        /// When it resets (Pacific midnight).
        resets_at: UnixMillis,
        /// Milliseconds from now until then.
        retry_after_ms: u64,
    },
}

/// A client's settings as the admin gives them (creating, or changing:
/// `None` leaves a setting as it is; a quota's `Some(None)` lifts it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSettings {
    /// Its name.
    pub name: Option<String>,
    /// The models it may use (empty: every model).
    pub models: Option<Vec<String>>,
    /// Requests a day.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub daily_requests: Option<Option<u64>>,
    /// Tokens a day.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub daily_tokens: Option<Option<u64>>,
}

/// A field that is present, `null` included: "lift the quota" or "clear
/// the note" must not turn into "leave it" on its way to the key store
/// (WIT, the Durable Object), where serde would read a `null` as absent.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The keys one walk of the key store hands out.
pub const WALK_KEYS: usize = 16;

/// Where a walk over the pool's keys, in the order of their ids, starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", content = "key", rename_all = "kebab-case")]
pub enum WalkFrom {
    /// At the first key.
    First,
    /// At this key, or the first after it when it is gone.
    At(KeyId),
    /// At the first key after this one.
    After(KeyId),
}

/// What the admin asks of the key store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AdminOp {
    /// Every key, masked, with its state.
    List,
    /// Keys to add (already split from the paste), with a project label.
    Add {
        /// The keys.
        keys: Vec<String>,
        /// Their project.
        project: Option<String>,
    },
    /// A key to remove.
    Remove {
        /// Its id.
        id: KeyId,
    },
    /// A key to disable, with a note.
    Disable {
        /// Its id.
        id: KeyId,
        /// Why.
        note: Option<String>,
    },
    /// A key to enable.
    Enable {
        /// Its id.
        id: KeyId,
    },
    /// A key's project and note (`None`: unchanged; `Some(None)`: cleared).
    Label {
        /// Its id.
        id: KeyId,
        /// Its project.
        #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
        project: Option<Option<String>>,
        /// Its note.
        #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
        note: Option<Option<String>>,
    },
    /// The keys to check now: `ids`, or those checked longest ago.
    CheckPlan {
        /// Which keys.
        ids: Option<Vec<KeyId>>,
        /// At most this many.
        limit: usize,
    },
    /// Every client key, with its use.
    ClientList,
    /// A client key to create (its secret is made by the store).
    ClientCreate {
        /// Its settings.
        settings: ClientSettings,
    },
    /// A client key's settings to change.
    ClientUpdate {
        /// Its id.
        id: String,
        /// What changes.
        settings: ClientSettings,
    },
    /// A client key to revoke.
    ClientRevoke {
        /// Its id.
        id: String,
    },
    /// The model aliases the admin set at run time (consulted before
    /// `MODEL_ALIASES` and the default table). Answered 200 with
    /// `{"aliases": [{"from", "to"}, …]}`, also asked by the exchange of a
    /// request that names a model.
    Aliases,
    /// The admin's model aliases, replaced (already checked): answered as
    /// [`Self::Aliases`].
    AliasesSet {
        /// Client model (a name or a `*` pattern) → Gemini model, in the
        /// order they are consulted.
        entries: Vec<(String, String)>,
    },
    /// The projects, their keys and outbound proxies (masked). Answered
    /// 200 with `{"projects": [{"project", "keys", "proxy"}, …]}`.
    Proxies,
    /// A project's outbound proxy set (a URL, already checked) or cleared:
    /// answered as [`Self::Proxies`].
    ProxySet {
        /// The project.
        project: String,
        /// `scheme://[user:password@]host[:port]`, or none to clear it.
        proxy: Option<String>,
    },
    /// Not an admin's: the keys a merged listing walks ([`KeyPool::walk`](crate::store::pool::KeyPool::walk)),
    /// after admitting its client (`claim`; none: the proxy key's) for
    /// `model`. Answered 200 with the leases (the body names the client),
    /// or with why not.
    Walk {
        /// Where the walk starts.
        from: WalkFrom,
        /// At most this many keys.
        count: usize,
        /// Who the request claims to be.
        claim: Option<Claim>,
        /// The model its listing counts under.
        model: String,
    },
    /// Not an admin's: whether the proxy is open to anyone, that is whether
    /// no client key exists (asked only of a proxy without `PROXY_API_KEY`,
    /// [`crate::request::admit::Admission::Gated`]). Answered 200 with
    /// `{"open": bool}`.
    Open,
    /// Not an admin's: the names of client `client`'s resources that
    /// start with `prefix` (`files/`), for a listing it makes: it sees only
    /// those. Answered 200 with `{"names": […]}`.
    Names {
        /// The client.
        client: String,
        /// The names' start.
        prefix: String,
    },
    /// Not an admin's: the thought signatures of the tool calls an answer
    /// relayed from Google's OpenAI layer, to keep for client `client`'s
    /// follow-up turns ([`crate::store::signatures`]). Answered 200 with
    /// `{"kept": n}`.
    SignaturesKeep {
        /// The client whose call it was (none: the proxy key's).
        client: Option<String>,
        /// Call id → signature.
        pairs: Vec<(String, String)>,
    },
    /// Not an admin's: the signatures client `client` kept for these call
    /// ids. Answered 200 with `{"signatures": {id: signature}}` (ids
    /// unknown or expired left out).
    Signatures {
        /// The client asking (none: the proxy key's).
        client: Option<String>,
        /// The call ids.
        ids: Vec<String>,
    },
    /// Not an admin's: the models a listing of Google's named (`models/`
    /// left off), relayed to a client: each is counted under its own name
    /// from its first call, a failed one included. Answered 200 with
    /// `{"listed": n}` (how many are known).
    ModelsListed {
        /// The names.
        names: Vec<String>,
    },
    /// Not an admin's: resources found to be `key`'s in the middle of a
    /// flow that reports only at its end (a Live session's resumption
    /// handle: the client may resume before the session's report lands).
    /// Answered 200 with `{"owned": n}`.
    Own {
        /// The key.
        key: KeyId,
        /// The client whose session made them (none: the proxy key's).
        client: Option<String>,
        /// The resources.
        owned: Vec<Owned>,
    },
    /// Not an admin's: who `claim` is, before it asks for anything (a
    /// Live session's upgrade): answered 200 with `{"client": id|null}`, or
    /// 401 with `{"refused": Refusal}`. `resources` (names) may hold an
    /// ephemeral token, the authority of a claim without a credential.
    Identify {
        /// The claim.
        claim: Claim,
        /// Resources the request names.
        resources: Vec<String>,
    },
    /// The request log's records the query asks for, newest first
    /// (`GET /admin/requests`).
    Requests {
        /// Which.
        query: crate::wire::summary::RequestQuery,
    },
    /// What the checks found, to record.
    Checked {
        /// Key by key.
        results: Vec<(KeyId, CheckInfo)>,
        /// Keys still to check after these.
        remaining: usize,
    },
}

/// A store's answer to an [`AdminOp`], as the exchange receives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminAnswer {
    /// The status of the client's answer.
    pub status: u16,
    /// Its JSON body.
    pub body: String,
    /// For a check plan: the keys to check (never shown to the client).
    pub leases: Vec<Lease>,
}

impl AdminAnswer {
    /// The answer when a store applied an operation but could not save it.
    pub fn unsaved() -> Self {
        let message = "the change is in effect but could not be saved (the proxy's log says why): it will be lost when the proxy restarts";
        let body = json!({"error": {"code": 503, "message": message, "status": "UNAVAILABLE"}}).to_string();
        Self { status: 503, body, leases: Vec::new() }
    }
}

/// How the statistics are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatsView {
    /// `GET /stat.json`.
    Json,
    /// `GET /stat`, the HTML page, in a language.
    Page(crate::wire::http::Lang),
    /// `GET /stat` for the admin: the page with its admin actions.
    AdminPage(crate::wire::http::Lang),
    /// `GET /metrics`, the Prometheus text format.
    Metrics,
}

/// The last check of a key ([`crate::store::admin`]): one cheap upstream call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckInfo {
    /// `works`, `invalid`, `suspended`, `leaked`, `wrong-key-type`,
    /// `rate-limited` or `error`.
    pub status: String,
    /// When.
    pub at: u64,
    /// What the upstream said, redacted.
    pub reason: Option<String>,
}

/// The most keys one check call checks (a Worker may make 50 subrequests
/// per invocation on the free plan); call again for the rest.
pub const MAX_CHECKS_PER_CALL: usize = 10;
