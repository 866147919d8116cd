//! What a client's request is, decided from its head and body alone: where
//! it goes ([`route`]), who sent it ([`auth`], [`session`], [`web`]), which
//! headers cross ([`headers`]), whether it may go on ([`admit`]), what an
//! admin asks ([`admin`]), and the `/stat` login ([`login`]).

pub mod admin;
pub mod admit;
pub mod auth;
pub mod headers;
pub mod login;
pub mod route;
pub mod session;
pub mod web;
