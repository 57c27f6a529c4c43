//! The core crate's integration tests: one binary, real sockets on 127.0.0.1, the reactor,
//! the blocking drivers and the uring driver in process (no demo, no CLI: those are tested in
//! `demos/tests`).
//!
//! Scenarios are written once and run under every driver where they apply.

mod support;

mod agreement;
mod context;
mod contract;
mod group;
mod reactor;
mod services;
#[cfg(feature = "uring")]
mod uring;
