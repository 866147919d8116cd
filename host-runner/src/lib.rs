//! host-runner: serves the gemini-proxy WASI component with Wasmtime, an
//! embedded SQLite key store and a pooled upstream client.
//!
//! The binary (`cargo run -p host-runner`) is a thin `main` over
//! [`server::Server`]; the integration tests drive the same server
//! in-process with an injected [`clock::Clock`].
#![deny(missing_docs)]

pub mod clock;
pub mod config;
pub mod conn;
pub mod key_store;
pub mod listing;
pub mod live;
pub mod outbound;
pub mod p3;
pub mod proxy;
pub mod server;
pub mod store;
pub mod tls;
pub mod via;

/// The component this host serves (on `wasi:http` 0.2), built by `build.rs`.
pub const COMPONENT_PATH: &str = env!("COMPONENT_PATH");

/// The same component built for `wasi:http` 0.3 (its `p3` feature).
pub const COMPONENT_P3_PATH: &str = env!("COMPONENT_P3_PATH");
