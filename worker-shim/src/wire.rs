//! The protocol between the Worker and its Durable Object: one JSON
//! message per request, `POST`ed to the object.

use proxy_core::stats::StatsView;
use proxy_core::{KeyId, Report, Unavailable};
use serde::{Deserialize, Serialize};

/// What the Worker asks of the key store.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum StoreRequest {
    /// Apply `settle`, then hand out a key for `model` not in `exclude`.
    Acquire { model: String, exclude: Vec<KeyId>, settle: Option<Report> },
    /// Apply these reports, in order.
    Report { reports: Vec<Report> },
    /// The statistics, rendered (the object answers with the client's response).
    Stats { view: StatsView },
    /// Clear every mark and counter.
    Reset,
    /// The daily job.
    DailyReset,
}

/// The object's answer to an acquire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcquireAnswer {
    /// A key.
    Lease { id: KeyId, secret: String },
    /// None; why.
    Unavailable(Unavailable),
}
