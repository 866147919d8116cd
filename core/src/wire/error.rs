//! The one error type of the request boundary, and its rendering as an HTTP
//! answer in the caller's own API dialect.

use crate::wire::http::Dialect;
use crate::wire::http::{Method, Response};
use crate::wire::keystore::{Quota, Refusal};
use crate::wire::time::UnixMillis;
use serde_json::json;

/// Everything the proxy itself can answer with instead of an upstream
/// response. Each variant says what went wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProxyError {
    /// The path is not one the proxy serves.
    #[error(
        "no route for {method} {path}; the proxy serves /v1beta/models/… and /v1/models/… (Gemini), /v1/chat/completions, /v1/embeddings, /v1/responses, /v1/models (OpenAI) and /v1/messages (Anthropic)"
    )]
    NotFound {
        /// Request method.
        method: String,
        /// Request path, without the query.
        path: String,
    },
    /// A path of an API the proxy serves in part, below what it serves
    /// (a Responses API call on a stored response): says what it serves.
    #[error("{0}")]
    NotOffered(String),
    /// The route exists but not for this method.
    #[error("method {method} is not allowed here; use {allowed}")]
    MethodNotAllowed {
        /// Request method.
        method: String,
        /// The method the route accepts.
        allowed: Method,
    },
    /// A proxy key is configured and the request did not carry it.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// A client named a resource that is not its own (or no one's).
    #[error("{resource} was not found")]
    ResourceNotFound {
        /// The resource.
        resource: String,
    },
    /// The admin named a key the pool does not hold.
    #[error("no key with id {id} in the pool; GET /admin/keys lists them")]
    NotFoundKey {
        /// The id.
        id: String,
    },
    /// The admin named a client key that does not exist.
    #[error("no client key with id {id}; GET /admin/clients lists them")]
    NotFoundClient {
        /// The id.
        id: String,
    },
    /// The request conflicts with the pool's state.
    #[error("{0}")]
    Conflict(String),
    /// Authenticated, but not allowed this way.
    #[error("{0}")]
    Forbidden(&'static str),
    /// An open proxy was addressed by a host name not its own (DNS
    /// rebinding, [`crate::request::web`]).
    #[error(
        "this proxy is open (no PROXY_API_KEY, no client key) and answers only its own host names, not {host:?}: add the name to ALLOWED_HOSTS, or set PROXY_API_KEY"
    )]
    MisdirectedHost {
        /// The `Host` the request named.
        host: String,
    },
    /// The client's key may not use this model.
    #[error("client key \"{client}\" may not use model {model}; ask the proxy's admin to allow it")]
    ModelNotAllowed {
        /// The client's name.
        client: String,
        /// The model asked for.
        model: String,
    },
    /// The client used up one of its daily quotas.
    #[error("client key \"{client}\" has used its daily quota of {limit} {}; it resets at {} (in {}s)", match quota { Quota::Requests => "requests", Quota::Tokens => "tokens" }, resets_at.to_rfc3339(), retry_after_ms.div_ceil(1000))]
    ClientQuota {
        /// The client's name.
        client: String,
        /// Which quota.
        quota: Quota,
        /// Its limit.
        limit: u64,
        /// When it resets.
        resets_at: UnixMillis,
        /// Milliseconds until then.
        retry_after_ms: u64,
    },
    /// The request body is over the limit.
    #[error("request body is larger than the proxy's limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The request line's target is over the limit.
    #[error("the request URI is longer than the proxy's limit of {limit} bytes")]
    UriTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request's headers add up to more than the limit.
    #[error("the request headers add up to more than the proxy's limit of {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Every key is exhausted or cooling down for this model.
    #[error("all {keys} usable keys are rate-limited for model {model}; the soonest frees up at {} (in {}s). Retry then, or add keys", until.to_rfc3339(), retry_after_ms.div_ceil(1000))]
    AllKeysLimited {
        /// The model asked for.
        model: String,
        /// How many keys are limited.
        keys: usize,
        /// When the soonest key frees up.
        until: UnixMillis,
        /// Milliseconds until then.
        retry_after_ms: u64,
    },
    /// The key that owns a resource the request names is rate-limited for
    /// the model; no other key can see the resource.
    #[error("{resource} belongs to one key of the pool, and that key is rate-limited for model {model} until {} (in {}s); no other key can see it. Retry then", until.to_rfc3339(), retry_after_ms.div_ceil(1000))]
    ResourceOwnerLimited {
        /// The resource.
        resource: String,
        /// The model asked for.
        model: String,
        /// When the key frees up.
        until: UnixMillis,
        /// Milliseconds until then.
        retry_after_ms: u64,
    },
    /// The key that owns a resource the request names can no longer serve.
    #[error("{resource} belongs to a key that can no longer be used ({why}); no other key can see it. Create it again")]
    ResourceOwnerGone {
        /// The resource.
        resource: String,
        /// What became of the key.
        why: String,
    },
    /// The request names resources of two different keys (Google projects).
    #[error(
        "{first} and {second} belong to different keys of the pool (different Google projects), so no one request can use both. Create them again in one request's flow, or use them in separate requests"
    )]
    ResourcesOfTwoKeys {
        /// One resource.
        first: String,
        /// One of another key.
        second: String,
    },
    /// No key can serve at all (every key disabled, or none configured).
    #[error("no usable API key for model {model}: {why}")]
    NoUsableKey {
        /// The model asked for.
        model: String,
        /// Why none is usable.
        why: String,
    },
    /// Every attempt was answered with a 429 by a different key.
    #[error("every key tried ({attempts}) was rate-limited upstream; last: {last}. Retry in a minute, or add keys")]
    RateLimitedEverywhere {
        /// How many keys were tried.
        attempts: usize,
        /// The last reason, redacted.
        last: String,
    },
    /// Every attempt failed upstream with a server or transport error.
    #[error("the upstream failed on {attempts} attempt(s) with different keys; last error: {last}. Try again later")]
    UpstreamFailed {
        /// How many keys were tried.
        attempts: usize,
        /// The last failure, redacted.
        last: String,
    },
    /// Every attempt timed out waiting for the upstream.
    #[error(
        "the upstream did not answer in time on {attempts} attempt(s) with different keys; last: {last}. Try again later"
    )]
    UpstreamTimedOut {
        /// How many keys were tried.
        attempts: usize,
        /// The last failure.
        last: String,
    },
    /// The host is at its limit of open connections.
    #[error("the proxy is at its limit of {limit} open connections; try again in a moment")]
    TooManyConnections {
        /// The limit.
        limit: usize,
    },
    /// The key store could not be reached or failed (the detail goes to
    /// the host's log, not to the caller).
    #[error("the proxy's key store is unavailable; try again in a moment{}", for_request(request_id))]
    KeyStoreUnavailable {
        /// The id the host's log line carries.
        request_id: Option<String>,
    },
    /// A proxy bug or host failure (the detail goes to the host's log).
    #[error("internal proxy error: {message}{}", for_request(request_id))]
    Internal {
        /// What failed, without internals.
        message: String,
        /// The id the host's log line carries.
        request_id: Option<String>,
    },
}

impl ProxyError {
    /// The error's kind, for logs: its variant's name in kebab case.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not-found",
            Self::NotOffered(_) => "not-offered",
            Self::MethodNotAllowed { .. } => "method-not-allowed",
            Self::Unauthorized(_) => "unauthorized",
            Self::BadRequest(_) => "bad-request",
            Self::ResourceNotFound { .. } => "resource-not-found",
            Self::NotFoundKey { .. } => "not-found-key",
            Self::NotFoundClient { .. } => "not-found-client",
            Self::Conflict(_) => "conflict",
            Self::Forbidden(_) => "forbidden",
            Self::MisdirectedHost { .. } => "misdirected-host",
            Self::ModelNotAllowed { .. } => "model-not-allowed",
            Self::ClientQuota { .. } => "client-quota",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::UriTooLong { .. } => "uri-too-long",
            Self::HeadersTooLarge { .. } => "headers-too-large",
            Self::AllKeysLimited { .. } => "all-keys-limited",
            Self::ResourceOwnerLimited { .. } => "resource-owner-limited",
            Self::ResourceOwnerGone { .. } => "resource-owner-gone",
            Self::ResourcesOfTwoKeys { .. } => "resources-of-two-keys",
            Self::NoUsableKey { .. } => "no-usable-key",
            Self::RateLimitedEverywhere { .. } => "rate-limited-everywhere",
            Self::UpstreamFailed { .. } => "upstream-failed",
            Self::UpstreamTimedOut { .. } => "upstream-timed-out",
            Self::TooManyConnections { .. } => "too-many-connections",
            Self::KeyStoreUnavailable { .. } => "key-store-unavailable",
            Self::Internal { .. } => "internal",
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound { .. }
            | Self::NotOffered(_)
            | Self::NotFoundKey { .. }
            | Self::NotFoundClient { .. }
            | Self::ResourceNotFound { .. } => 404,
            Self::Conflict(_) => 409,
            Self::MethodNotAllowed { .. } => 405,
            Self::Unauthorized(_) => 401,
            Self::BadRequest(_) | Self::ResourcesOfTwoKeys { .. } => 400,
            Self::ResourceOwnerGone { .. } => 410,
            Self::Forbidden(_) | Self::ModelNotAllowed { .. } => 403,
            Self::PayloadTooLarge { .. } => 413,
            Self::UriTooLong { .. } => 414,
            Self::HeadersTooLarge { .. } => 431,
            Self::MisdirectedHost { .. } => 421,
            Self::UpstreamTimedOut { .. } => 504,
            Self::AllKeysLimited { .. }
            | Self::RateLimitedEverywhere { .. }
            | Self::ClientQuota { .. }
            | Self::ResourceOwnerLimited { .. } => 429,
            Self::NoUsableKey { .. } | Self::KeyStoreUnavailable { .. } | Self::TooManyConnections { .. } => 503,
            Self::UpstreamFailed { .. } => 502,
            Self::Internal { .. } => 500,
        }
    }

    fn gemini_status(&self) -> &'static str {
        match self {
            Self::NotFound { .. }
            | Self::NotOffered(_)
            | Self::NotFoundKey { .. }
            | Self::NotFoundClient { .. }
            | Self::ResourceNotFound { .. } => "NOT_FOUND",
            Self::Conflict(_) => "FAILED_PRECONDITION",
            Self::MethodNotAllowed { .. } => "UNIMPLEMENTED",
            Self::Unauthorized(_) => "UNAUTHENTICATED",
            Self::ResourceOwnerGone { .. } => "FAILED_PRECONDITION",
            Self::BadRequest(_)
            | Self::ResourcesOfTwoKeys { .. }
            | Self::PayloadTooLarge { .. }
            | Self::UriTooLong { .. }
            | Self::HeadersTooLarge { .. } => "INVALID_ARGUMENT",
            Self::UpstreamTimedOut { .. } => "DEADLINE_EXCEEDED",
            Self::Forbidden(_) | Self::ModelNotAllowed { .. } | Self::MisdirectedHost { .. } => "PERMISSION_DENIED",
            Self::AllKeysLimited { .. }
            | Self::RateLimitedEverywhere { .. }
            | Self::ClientQuota { .. }
            | Self::ResourceOwnerLimited { .. } => "RESOURCE_EXHAUSTED",
            Self::NoUsableKey { .. }
            | Self::UpstreamFailed { .. }
            | Self::KeyStoreUnavailable { .. }
            | Self::TooManyConnections { .. } => "UNAVAILABLE",
            Self::Internal { .. } => "INTERNAL",
        }
    }

    fn openai_type_and_code(&self) -> (&'static str, &'static str) {
        match self {
            Self::NotFound { .. }
            | Self::NotOffered(_)
            | Self::NotFoundKey { .. }
            | Self::NotFoundClient { .. }
            | Self::ResourceNotFound { .. } => ("invalid_request_error", "not_found"),
            Self::Conflict(_) => ("invalid_request_error", "conflict"),
            Self::MethodNotAllowed { .. } => ("invalid_request_error", "method_not_allowed"),
            Self::Unauthorized(_) => ("authentication_error", "invalid_api_key"),
            Self::BadRequest(_) => ("invalid_request_error", "invalid_request"),
            Self::Forbidden(_) => ("permission_error", "forbidden"),
            Self::MisdirectedHost { .. } => ("invalid_request_error", "misdirected_request"),
            Self::ModelNotAllowed { .. } => ("permission_error", "model_not_allowed"),
            Self::ClientQuota { .. } => ("rate_limit_error", "client_quota_exceeded"),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", "payload_too_large"),
            Self::UriTooLong { .. } => ("invalid_request_error", "uri_too_long"),
            Self::HeadersTooLarge { .. } => ("invalid_request_error", "headers_too_large"),
            Self::UpstreamTimedOut { .. } => ("server_error", "upstream_timeout"),
            Self::AllKeysLimited { .. } | Self::RateLimitedEverywhere { .. } | Self::ResourceOwnerLimited { .. } => {
                ("rate_limit_error", "rate_limit_exceeded")
            }
            Self::ResourceOwnerGone { .. } => ("invalid_request_error", "resource_owner_gone"),
            Self::ResourcesOfTwoKeys { .. } => ("invalid_request_error", "resources_of_two_keys"),
            Self::NoUsableKey { .. } => ("server_error", "no_usable_key"),
            Self::UpstreamFailed { .. } => ("server_error", "upstream_failed"),
            Self::KeyStoreUnavailable { .. } => ("server_error", "key_store_unavailable"),
            Self::TooManyConnections { .. } => ("server_error", "overloaded"),
            Self::Internal { .. } => ("server_error", "internal_error"),
        }
    }

    /// Renders the error as the HTTP answer a client of `dialect` expects.
    pub fn to_response(&self, dialect: Dialect) -> Response {
        let status = self.status();
        let message = self.to_string();
        let body = match dialect {
            Dialect::Gemini => json!({
                "error": { "code": status, "message": message, "status": self.gemini_status() }
            }),
            Dialect::OpenAi => {
                let (kind, code) = self.openai_type_and_code();
                json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
            }
            Dialect::Anthropic => anthropic_error(status, &message),
        };
        let mut response = Response::json(status, body.to_string());
        response.headers.extend(crate::wire::http::CORS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        match self {
            Self::MethodNotAllowed { allowed, .. } => {
                response.headers.push(("allow".into(), allowed.to_string()));
            }
            Self::AllKeysLimited { retry_after_ms, .. }
            | Self::ClientQuota { retry_after_ms, .. }
            | Self::ResourceOwnerLimited { retry_after_ms, .. } => {
                response.headers.push(("retry-after".into(), retry_after_ms.div_ceil(1000).max(1).to_string()));
            }
            Self::Unauthorized(_) if dialect == Dialect::OpenAi => {
                response.headers.push(("www-authenticate".into(), "Bearer".into()));
            }
            _ => {}
        }
        if dialect == Dialect::Anthropic {
            anthropic_retry_after(status, &mut response.headers);
        }
        response
    }
}

/// The `retry-after` (seconds) of an Anthropic client's 429 when nothing
/// tells a better one: a per-minute quota is over within a minute.
pub const RATE_LIMIT_RETRY_AFTER_S: u64 = 60;

/// Anthropic's clients wait as long as a 429 tells them: a 429 for one
/// gets a `retry-after` ([`RATE_LIMIT_RETRY_AFTER_S`]) unless it has one.
pub fn anthropic_retry_after(status: u16, headers: &mut Vec<(String, String)>) {
    if status == 429 && !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("retry-after")) {
        headers.push(("retry-after".into(), RATE_LIMIT_RETRY_AFTER_S.to_string()));
    }
}

/// The type of an Anthropic error answer with `status`, as Anthropic's
/// own API names it (the SDKs pick their exception by the status).
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An error body in OpenAI's shape for an upstream answer of `status`
/// (the SDKs pick their exception by the status).
pub fn openai_error(status: u16, message: &str) -> serde_json::Value {
    let (kind, code) = match status {
        401 => ("authentication_error", "invalid_api_key"),
        403 => ("permission_error", "forbidden"),
        404 => ("invalid_request_error", "not_found"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        400..=499 => ("invalid_request_error", "invalid_request"),
        _ => ("server_error", "upstream_error"),
    };
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}

/// An error body in Anthropic's shape.
pub fn anthropic_error(status: u16, message: &str) -> serde_json::Value {
    json!({ "type": "error", "error": { "type": anthropic_error_type(status), "message": message } })
}

fn for_request(id: &Option<String>) -> String {
    id.as_ref().map(|id| format!(" (request id {id})")).unwrap_or_default()
}

impl ProxyError {
    /// The answer to a client the key store refused.
    pub fn refused(refusal: Refusal) -> Self {
        match refusal {
            Refusal::UnknownKey { presented: false } => Self::Unauthorized(
                "this proxy needs an access key (PROXY_API_KEY or a client key): send it as `Authorization: Bearer <key>`, `x-goog-api-key: <key>`, `x-api-key: <key>` or `?key=<key>`",
            ),
            Refusal::UnknownKey { presented: true } => Self::Unauthorized(
                "the key presented is neither this proxy's access key (PROXY_API_KEY) nor a client key; check the API key your client is configured with",
            ),
            Refusal::ModelNotAllowed { client, model } => Self::ModelNotAllowed { client, model },
            Refusal::OverQuota { client, quota, limit, resets_at, retry_after_ms } => {
                Self::ClientQuota { client, quota, limit, resets_at, retry_after_ms }
            }
        }
    }

    /// The answer to a request whose resources' owner cannot serve it.
    pub fn resource(refusal: crate::wire::keystore::ResourceRefusal, model: &str) -> Self {
        use crate::wire::keystore::ResourceRefusal as R;
        match refusal {
            R::OwnerLimited { resource, until, retry_after_ms } => {
                Self::ResourceOwnerLimited { resource, model: model.to_owned(), until, retry_after_ms }
            }
            R::OwnerGone { resource, why } => Self::ResourceOwnerGone { resource, why },
            R::Conflict { first, second } => Self::ResourcesOfTwoKeys { first, second },
            R::NotFound { resource } => Self::ResourceNotFound { resource },
        }
    }

    /// An internal failure answered with `message` (no internals) and the
    /// request id of the host's log line.
    pub fn internal(message: impl Into<String>, request_id: Option<&str>) -> Self {
        Self::Internal { message: message.into(), request_id: request_id.map(str::to_owned) }
    }
}

/// Joins an error and its `source()` chain into one line:
/// `outer: cause: root cause`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(r: &Response) -> Value {
        serde_json::from_str(&r.body).expect("json")
    }

    #[test]
    fn gemini_shape() {
        let r = ProxyError::Unauthorized("missing key").to_response(Dialect::Gemini);
        assert_eq!(r.status, 401);
        let v = parse(&r);
        assert_eq!(v["error"]["code"], 401);
        assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(v["error"]["message"], "missing key");
    }

    #[test]
    fn openai_shape() {
        let e = ProxyError::AllKeysLimited {
            model: "gemini-2.5-flash".into(),
            keys: 3,
            until: UnixMillis(1_800_000_000_000),
            retry_after_ms: 1_500,
        };
        let r = e.to_response(Dialect::OpenAi);
        assert_eq!(r.status, 429);
        assert!(r.headers.contains(&("retry-after".into(), "2".into())));
        let v = parse(&r);
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(msg.contains("gemini-2.5-flash") && msg.contains("2027-01-15T08:00:00Z"), "{msg}");
    }

    #[test]
    fn method_not_allowed_names_the_method() {
        let r =
            ProxyError::MethodNotAllowed { method: "GET".into(), allowed: Method::Post }.to_response(Dialect::Gemini);
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("allow".into(), "POST".into())));
    }

    #[test]
    fn chain_joins_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}
