//! The key store: what host-runner and the Durable Object hold, and the
//! request side reaches only through the protocol of
//! [`crate::wire::keystore`]. The pool of upstream keys ([`pool`]), the
//! client keys ([`clients`]), which key owns which resource ([`registry`]),
//! the hourly history ([`history`]), the vault of keys added at run time
//! ([`vault`]), the admin's changes ([`admin`]), statistics snapshots
//! ([`snapshot`]), and the one mapping of all of it to SQL rows
//! ([`persist`]).

pub mod admin;
pub mod clients;
pub mod history;
pub mod persist;
pub mod pool;
pub mod registry;
pub mod requests;
pub mod signatures;
pub mod snapshot;
pub mod sql;
pub mod vault;
