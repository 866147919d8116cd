//! The protocol between the Worker and its Durable Object: one JSON
//! message per request, `POST`ed to the object.

use proxy_core::wire::keystore::StatsView;
use proxy_core::wire::summary::Summary;
use proxy_core::{KeyId, Report, Unavailable};
use serde::{Deserialize, Serialize};

/// What the Worker asks of the key store.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum StoreRequest {
    /// Apply `settle` (reports that waited in the isolate, then the previous
    /// attempt's), admit `client` (a request's first attempt), then hand
    /// out a key for `model` not in `exclude`.
    Acquire {
        model: String,
        exclude: Vec<KeyId>,
        settle: Vec<Report>,
        /// Requests' summaries for the request log, after `settle`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logged: Vec<Summary>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<proxy_core::wire::keystore::Claim>,
        /// The names of the resources the request names.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        resources: Vec<String>,
    },
    /// Apply these reports, in order, and log these summaries.
    Report {
        reports: Vec<Report>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logged: Vec<Summary>,
    },
    /// Apply `settle` and log `logged`, then the statistics, rendered (the
    /// object answers with the client's response).
    Stats {
        view: StatsView,
        settle: Vec<Report>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logged: Vec<Summary>,
    },
    /// Apply an admin operation (after `settle` and `logged`, which a
    /// look at the request log carries: the isolate's latest are in it).
    Admin {
        op: proxy_core::wire::keystore::AdminOp,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        settle: Vec<Report>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logged: Vec<Summary>,
    },
    /// Clear every mark and counter.
    Reset,
    /// The daily job.
    DailyReset,
}

/// The object's answer to an admin operation.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminReply {
    pub status: u16,
    pub body: String,
    pub leases: Vec<(KeyId, String)>,
}

/// The object's answer to an acquire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcquireAnswer {
    /// A key, and the client the request was admitted as.
    Lease {
        id: KeyId,
        secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pinned: bool,
    },
    /// None; why.
    Unavailable(Unavailable),
}
