//! A snapshot shown: as JSON, as the `/stat` page ([`page`]) or as
//! Prometheus text ([`metrics`]). It runs where the snapshot is, in the key
//! store.

use crate::store::snapshot::Snapshot;
use crate::wire::http::Response;
use crate::wire::keystore::StatsView;
use serde_json::Value;
pub mod metrics;
pub mod page;

impl StatsView {
    /// The answer showing `snapshot` this way.
    pub fn render(self, snapshot: &Snapshot) -> Response {
        match self {
            Self::Json => json_response(&snapshot.to_json()),
            Self::Page(lang) => Response::html(200, crate::view::page::render(snapshot, false, lang)),
            Self::AdminPage(lang) => Response::html(200, crate::view::page::render(snapshot, true, lang)),
            Self::Metrics => {
                Response::text(200, crate::view::metrics::CONTENT_TYPE, crate::view::metrics::render(snapshot))
                    .with_header("cache-control", "no-store")
            }
        }
    }
}

/// The `/stat.json` answer for a document (a host may add its own counters
/// to [`Snapshot::to_json`]'s).
pub fn json_response(document: &Value) -> Response {
    Response::json(200, document.to_string()).with_header("cache-control", "no-store")
}
