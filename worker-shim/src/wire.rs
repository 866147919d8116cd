//! Messages between the Worker and its Durable Object.

use proxy_core::{Report, Unavailable};
use serde::{Deserialize, Serialize};

/// `POST /acquire`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AcquireRequest {
    pub model: String,
    pub exclude: Vec<proxy_core::KeyId>,
    pub settle: Option<Report>,
}

/// The answer to `/acquire`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcquireResponse {
    Lease { id: proxy_core::KeyId, secret: String },
    Unavailable(Unavailable),
}
