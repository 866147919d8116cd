//! The protocol between the Worker and its Durable Object: one JSON
//! message per request, `POST`ed to the object.

use proxy_core::stats::StatsView;
use proxy_core::{KeyId, Report, Unavailable};
use serde::{Deserialize, Serialize};

/// What the Worker asks of the key store.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum StoreRequest {
    /// Apply `settle` (reports that waited in the isolate, then the previous
    /// attempt's), then hand out a key for `model` not in `exclude`.
    Acquire { model: String, exclude: Vec<KeyId>, settle: Vec<Report> },
    /// Apply these reports, in order.
    Report { reports: Vec<Report> },
    /// Apply `settle`, then the statistics, rendered (the object answers
    /// with the client's response).
    Stats { view: StatsView, settle: Vec<Report> },
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
