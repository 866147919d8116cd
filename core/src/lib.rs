//! The sans-IO heart of gemini-proxy.
//!
//! Every decision the proxy makes lives here as plain functions and state
//! machines: which dialect a request speaks, whether it is authorised, which
//! pool key serves it, what an upstream answer means for that key, when a
//! daily quota mark expires, and how errors and statistics are rendered.
//! [`exchange::Exchange`] drives a request from arrival to its last report;
//! the hosts only move bytes. Nothing here performs I/O or reads a clock:
//! time comes in as [`wire::time::UnixMillis`]. The WASI component and the
//! Cloudflare Worker both link this crate, so both hosts behave the same.
//!
//! # Layout
//!
//! The modules are grouped by job, and imports point one way only (a test,
//! `tests/layering.rs`, holds the rule):
//!
//! | folder | job | imports |
//! |---|---|---|
//! | [`wire`] | the vocabulary both sides of the key store share: secrets, time, HTTP answers, token usage, resource names, the key-store protocol, errors | nothing in core |
//! | [`config`], [`cron`] | configuration, the daily reset's schedule | `wire` |
//! | [`google`] | Google's formats: error classification, stream framing, resource names | `wire` |
//! | [`request`] | what a client's request is: routing, credentials, admission, the admin's requests, login | `wire`, `config`, `google` |
//! | [`translate`] | APIs Google does not offer (Anthropic's Messages), as Gemini calls and back | `wire`, `config`, `google`, `request` |
//! | [`exchange`] | the driver: one request from arrival to its last report, one file per flow | `wire`, `config`, `google`, `request`, `translate` |
//! | [`live`] | the second driver: a Live API session (a WebSocket) from its setup to its last report | `wire`, `config`, `google`, `request`, `exchange` |
//! | [`store`] | the key store: pool, clients, registry, history, vault, snapshots, the one persistence mapping | `wire`, `config` |
//! | [`view`] | a snapshot shown: `/stat.json`, the page, metrics | `wire`, `store` |
//!
//! The request side (`request`, `exchange`) never imports the key store
//! (`store`, `view`): they meet in `wire`, where the component meets its
//! host and the Worker its Durable Object.
//!
//! [`translate`] sits between `request` and `exchange`: a request in
//! another API's shape becomes a Gemini one, and the answer goes back,
//! called by the exchange's relay. [`live`] is the second driver, for
//! WebSocket sessions, with its own steps, using `request`'s admission,
//! the exchange's key check and `wire`'s key-store protocol.
//! [`exchange::Step::Summary`] is the one record of a request a log hangs
//! on.
#![deny(missing_docs)]

pub mod config;
pub mod cron;
pub mod exchange;
pub mod google;
pub mod live;
pub mod request;
pub mod store;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod translate;
pub mod view;
pub mod wire;

pub use config::Config;
pub use store::pool::KeyPool;
pub use wire::error::ProxyError;
pub use wire::http::Dialect;
pub use wire::keystore::{Lease, Outcome, RateLimit, RateLimitScope, Report, Unavailable};
pub use wire::secret::{ApiKey, KeyId};
pub use wire::time::UnixMillis;
