//! HTTP/1.1, sans-I/O: the server machine of the `http` demo and the response parser of
//! the `get` client.

pub mod client;
pub mod parse;
pub mod server;
