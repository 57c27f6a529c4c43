//! HTTP/1.1, sans-I/O: the server machine of the `http` demo and the response machine of
//! the `get` client, over one head parser.
//!
//! - [`parse`]: where a head ends and how large it may grow, for both ends: the one
//!   [`parse::parse`] for request heads, response heads and trailer sections, under
//!   [`parse::HeadLimits`]; header-value helpers; the `Date` format.
//! - [`server`]: what a request gets (statuses, persistence, bodies, timeouts).
//! - [`client`]: one request out, one response in (framing, chunked bodies, timeouts).

pub mod client;
pub mod parse;
pub mod server;
