//! The vocabulary both sides of the key-store boundary share, and every host
//! with them: secrets and their masks, time, HTTP answers and the dialects
//! they are written in, token usage, Google resource names as they travel,
//! the key-store protocol, and the proxy's one error type.
//!
//! Nothing here imports another part of core: the request side
//! ([`crate::request`], [`crate::exchange`]) and the key store
//! ([`crate::store`], [`crate::view`]) meet only here, as the component and
//! its host meet at the WIT `key-store` interface and the Worker and its
//! Durable Object at their JSON.

pub mod error;
pub mod http;
pub mod keystore;
pub mod proxy;
pub mod resource;
pub mod secret;
pub mod summary;
pub mod time;
pub mod usage;
