//! sockloop: a single-threaded event-loop reactor built by hand on mio.
//!
//! It registers non-blocking sockets with the kernel's poller (epoll on Linux, kqueue on
//! the BSDs, through [mio]), keeps every connection's state in a [slab], and drives small
//! socket protocols through explicit state machines. It is meant to be read: run any
//! server with `RUST_LOG=trace` and the log narrates every readiness event, every read and
//! write with its byte count, every `WouldBlock`, every interest change and every state
//! transition.
//!
//! # Start here
//!
//! New to non-blocking I/O? Read the [`guide`]: each chapter a command and its trace.
//!
//! # The picture
//!
//! ```text
//!               readiness                 events in (bytes, EOF, time)
//!  kernel ──────────────────▶  Reactor  ──────────────────────────▶  Session (sans-I/O)
//!  (epoll via mio)            one thread                           what a connection
//!                             Slab<Slot>  ◀───────────────────────  means, once
//!                             timers,       bytes out, FIN, close     │ calls
//!                             waker         reason, deadline          ▼
//!                                                                  Protocol (sans-I/O)
//!                                                                  a demo's machine
//!
//!  The blocking drivers (threaded: a thread per connection; iterative: one client at a
//!  time) and the completion driver (io_uring) drive the very same Session and Protocol
//!  values. Only the driver differs, so
//!  the benchmark and the lesson compare exactly one thing: how I/O waits.
//! ```
//!
//! # Where things live
//!
//! This crate is the core an embedder depends on (five dependencies: mio, slab, log,
//! socket2, libc). The tutorials' programs, the `sockloop` CLI, its benchmark and its
//! lesson are in the `sockloop-demos` crate beside it, which depends on this one and
//! never the other way.
//!
//! - [`proto`]: the protocol side of the contract ([`proto::Protocol`], [`proto::Out`],
//!   [`proto::Mailbox`], [`proto::CloseReason`], datagrams). No sockets, no clocks, no
//!   threads.
//! - [`session`]: the driver side: the connection core every driver drives
//!   ([`session::Session`]): input and output with their limits, the lifecycle,
//!   half-close, the close reason, the deadline, caught panics. No sockets, no clocks.
//! - [`reactor`]: the non-blocking driver: TCP and Unix listeners and outgoing
//!   connections, UDP and Unix datagram sockets, watched fds (pipes, terminals), timers,
//!   a cross-thread handle, graceful shutdown, nesting in another loop. One turn of its
//!   loop is documented step by step there.
//! - [`blocking`]: the threaded and iterative drivers over `std::net`.
//! - `uring` (cargo feature `uring`, Linux): the completion driver, one thread and one
//!   io_uring: receives, sends and accepts handed to the kernel and reaped as they
//!   complete, from a provided-buffer ring.
//! - [`buf`]: the output buffer and the one write-until-`WouldBlock` loop.
//! - [`net`]: addresses, listener set-up (backlog, `SO_REUSEADDR`), socket options, and
//!   process facts (fd limit).
//! - [`error`]: errors sorted by who is to blame.
//!
//! # Embedding
//!
//! ```no_run
//! use sockloop::proto::{Out, PeerError, Protocol};
//! use sockloop::reactor::Reactor;
//!
//! /// Answers every byte with its successor.
//! struct Shift;
//!
//! impl Protocol for Shift {
//!     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
//!         let shifted: Vec<u8> = input.iter().map(|b| b.wrapping_add(1)).collect();
//!         out.push(&shifted);
//!         Ok(input.len())
//!     }
//! }
//!
//! let mut reactor = Reactor::new()?;
//! reactor.listen("127.0.0.1:7000".parse().unwrap(), || Shift)?;
//! let handle = reactor.handle(); // Clone + Send: post work or shut down from elsewhere
//! # drop(handle);
//! reactor.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Not implemented
//!
//! TLS, multi-threaded reactors, Windows, and the readiness of regular files (epoll
//! refuses them; pipes and terminals can be watched with `Reactor::watch_fd`).
//!
//! [mio]: https://docs.rs/mio
//! [slab]: https://docs.rs/slab

#![warn(missing_docs)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

pub mod blocking;
pub mod buf;
pub mod error;
pub mod guide;
pub mod net;
pub mod proto;
pub mod reactor;
pub mod session;
#[cfg(all(target_os = "linux", feature = "uring"))]
pub mod uring;
