//! The sans-IO heart of gemini-proxy.
//!
//! Every decision the proxy makes lives here as plain functions and state
//! machines: which dialect a request speaks, whether it is authorised, which
//! pool key serves it, what an upstream answer means for that key, when a
//! daily quota mark expires, and how errors and statistics are rendered.
//! [`forward::Exchange`] drives a request from arrival to its last report;
//! the hosts only move bytes. Nothing here performs I/O or reads a clock:
//! time comes in as [`time::UnixMillis`]. The WASI component and the
//! Cloudflare Worker both link this crate, so both hosts behave the same.
#![deny(missing_docs)]

pub mod admin;
pub mod admit;
pub mod affinity;
pub mod auth;
pub mod clients;
pub mod config;
pub mod cron;
pub mod error;
pub mod forward;
pub mod headers;
pub mod history;
pub mod http;
pub mod listing;
pub mod metrics;
pub mod outcome;
pub mod page;
pub mod persist;
pub mod pool;
pub mod route;
pub mod secret;
pub mod session;
pub mod stats;
pub mod stream;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod time;
pub mod upstream;
pub mod vault;
pub mod web;

pub use config::Config;
pub use error::ProxyError;
pub use outcome::{Lease, Outcome, RateLimit, RateLimitScope, Report, Unavailable};
pub use pool::KeyPool;
pub use route::Dialect;
pub use secret::{ApiKey, KeyId};
pub use time::UnixMillis;
