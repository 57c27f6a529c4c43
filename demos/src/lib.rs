//! sockloop-demos: the socket tutorials' programs on the [`sockloop`] reactor, and the
//! tools built around them.
//!
//! This crate is the user of the core crate that the tutorials call for; nothing in
//! `sockloop` depends on it. The arrow points one way: demos → core.
//!
//! - [`proto`]: the tutorial programs as sans-I/O machines (echo, ack, stamp, greet, UDP
//!   hello, an HTTP server and GET client, a chat with server push, file transfer). They
//!   implement the contract in [`sockloop::proto`] and touch no socket, clock or thread.
//! - [`serve`]: a demo × a driver → a running server; used by the CLI and the tests.
//! - [`clock`] and [`store`]: the system's clocks and the directory file store, which the
//!   wiring hands to the machines (proto/ reads no clock and touches no file).
//! - [`client`] and [`interactive`]: the clients (the HTTP GET client, and the
//!   line-at-a-time client of `sockloop client`).
//! - [`bench`](mod@bench): `sockloop bench`, every driver and its peers under the same load.
//! - [`lesson`]: `sockloop demo`, the thread-per-connection cost shown live.
//! - [`procfs`]: process facts from `/proc` for the bench and the lesson.
//!
//! The `sockloop` binary (`src/main.rs`) is the CLI over all of these.

#![warn(missing_docs)]

pub mod bench;
pub mod client;
pub mod clock;
pub mod interactive;
pub mod lesson;
pub mod procfs;
pub mod proto;
pub mod serve;
pub mod store;
#[cfg(test)]
mod testing;
