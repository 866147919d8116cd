//! host-runner integration tests: the real component in the real host,
//! against the in-process fake upstream on 127.0.0.1:0, with an injected
//! clock.

mod admin;
mod clients;
mod egress;
mod harness;
mod limits;
mod live;
mod memory;
mod persistence;
mod proxying;
mod requests;
mod resources;
mod rotation;
mod tokens;
