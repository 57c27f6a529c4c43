//! sockloop's integration tests: one binary, real sockets on 127.0.0.1.
//!
//! Scenarios are written once and run under every driver where they apply. Servers run
//! as child processes of the real `sockloop` binary (so their fds, CPU and limits are
//! their own) or, where a test must look inside the loop, as an in-process [`Reactor`]
//! on a thread of the test.
//!
//! [`Reactor`]: sockloop::reactor::Reactor

mod support;

mod bench;
mod cli;
mod cli_edges;
mod client_edges;
mod echo;
mod fanout;
mod file;
mod get;
mod http;
mod lesson;
mod limits;
mod line_demos;
mod transports;
