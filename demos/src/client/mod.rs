//! Clients built on the reactor: each drives a sans-I/O machine from [`crate::proto`]
//! over an outgoing connection made with [`Reactor::connect`](sockloop::reactor::Reactor::connect).
//!
//! - [`get`](mod@get): `sockloop get http://HOST:PORT/PATH [-o FILE]`, an HTTP/1.1 download with
//!   the response machine [`HttpClient`](crate::proto::http::client::HttpClient).

pub mod get;

pub use get::{fetch, get, BodyTarget, GetError, GetOptions, GetOutcome, Url, Waiting};
