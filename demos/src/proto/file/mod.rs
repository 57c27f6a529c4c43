//! File transfer: "send a file to a friend with your own program" (tutorial 001).
//!
//! One connection carries one file. The sender names it and says how long it is, sends
//! exactly that many bytes, and waits for the receiver to say what it stored:
//!
//! ```text
//! sender   -> receiver   FILE notes.txt 12\n                then exactly 12 bytes
//! receiver -> sender     OK 12 <SHA-256 of the 12 bytes, 64 lowercase hex digits>\n
//!                     or ERR <reason>\n
//! ```
//!
//! After its reply the receiver closes. The sender succeeds only when the size and the
//! digest in `OK` are those of the bytes it sent: TCP's checksum is weak, and a
//! digest catches a receiver that stored something else (a full disk, a bug).
//!
//! # Names
//!
//! The name becomes a file name in the receiver's directory, so it is checked before a
//! byte is written ([`check_name`]). Refused: the empty name; names longer than
//! [`MAX_NAME`] bytes (255, the usual file-name limit); names that are not UTF-8; and names
//! containing `/` or `\` (another directory), `..` (anywhere: `a..b` is harmless but
//! refusing every `..` is simpler to trust), NUL, a space (the header is space-separated;
//! `my notes.txt` would otherwise need quoting) or any other control character (terminal
//! escapes in a listing), or starting with `.` (hidden files, and the receiver's own
//! temporary files). There is no quoting: a name the rules refuse cannot be sent.
//!
//! # Sizes
//!
//! The size is decimal ASCII digits (no sign, no spaces) for a `u64`, at most
//! [`FileReceiver::with_max_size`] (default [`DEFAULT_MAX_SIZE`], 64 GiB); a larger
//! size is refused before any byte is stored. Bytes that follow the announced size are not
//! part of the file and are discarded. A `\r` before the header's `\n` is accepted.
//!
//! # Replies
//!
//! | reply | when |
//! |---|---|
//! | `OK <size> <sha256>` | the file is stored under its name |
//! | `ERR malformed header: expected FILE <name> <size>` | anything else; EOF mid-header |
//! | `ERR header too long` | no newline within [`MAX_HEADER`] bytes |
//! | `ERR bad name: <why>` | the name breaks a rule above |
//! | `ERR bad size` | the size is not decimal digits |
//! | `ERR too large: the limit is <n> bytes` | the size is over the receiver's limit |
//! | `ERR exists` | a file of that name is already there (it is never overwritten) |
//! | `ERR cannot store` | the receiver's disk failed (the cause is in its log) |
//! | `ERR truncated: got <n> of <size> bytes` | the sender closed before the last byte |
//!
//! # Storage: all or nothing
//!
//! The receiver writes through a [`Store`], never through `std::fs` itself, so its tests
//! run in memory ([`MemStore`]) and the machine stays sans-I/O. [`DirStore`] is the real
//! one: it writes to a temporary file in the target directory (named
//! `.sockloop-<pid>-<n>.part`: its leading dot is one no accepted name has, so the two
//! never collide) and gives it the final name only once every byte has arrived and been
//! hashed, *before* `OK` goes out. An interrupted transfer (early EOF, a reset, a
//! refused header, the server stopping) leaves nothing under the final name, and the
//! temporary file is removed. An existing file is never replaced: the name is checked
//! when the header arrives, and again, atomically, when the file is committed (with a
//! hard link, which fails if the name was taken meanwhile).
//!
//! The trade-off: disk writes block. On the reactor a slow disk holds up every connection
//! on the loop while one chunk is written, and while the finished file is synced to disk
//! before it is named. That is fine for a loopback demo and a page cache that absorbs
//! writes; a real server would hand writes to a thread pool (and would need a way for the
//! machine to wait for them, which the contract does not have). Each transfer also holds
//! one more fd, its temporary file, on top of its socket.
//!
//! # Memory stays constant, whatever the file size
//!
//! - The receiver consumes every byte it is handed ([`Protocol::handle_input`](crate::proto::Protocol::handle_input) always
//!   returns the whole input once the header is complete), writes it and hashes it
//!   incrementally. It holds no body bytes between calls.
//! - The sender reads the file [`CHUNK`] (64 KiB) at a time through an injected
//!   [`Read`](std::io::Read). It asks for [`Protocol::handle_writable`](crate::proto::Protocol::handle_writable) with [`Out::want_writable`](crate::proto::Out::want_writable), so
//!   the driver asks for the next chunk only once the last one has been taken by the
//!   socket: one chunk in the sender, at most one in the driver, the rest is the kernel's.
//!
//! # Serving and sending
//!
//! A receiver is one [`FileReceiver`] per connection, under any driver:
//!
//! ```no_run
//! use sockloop_demos::proto::file::FileReceiver;
//! use sockloop_demos::store::DirStore;
//! use sockloop::reactor::Reactor;
//!
//! let mut reactor = Reactor::new()?;
//! let inbox = DirStore::create("inbox")?;
//! reactor.listen("127.0.0.1:7001".parse().unwrap(), move || {
//!     FileReceiver::new(inbox.clone())
//! })?;
//! reactor.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! A sender is a [`FileSender`] on an outgoing connection; its [`Outcome`] says how the
//! transfer ended once the connection is gone:
//!
//! ```no_run
//! use sockloop::net::Endpoint;
//! use sockloop_demos::proto::file::FileSender;
//! use sockloop::reactor::Reactor;
//! use std::time::Duration;
//!
//! let sender = FileSender::from_path("notes.txt".as_ref())?;
//! let outcome = sender.outcome();
//! let mut reactor = Reactor::new()?;
//! let to = Endpoint::parse("127.0.0.1:7001").unwrap();
//! let conn = reactor.connect(&to, Some(Duration::from_secs(5)), sender)?;
//! while reactor.phase(conn).is_some() {
//!     reactor.run_once(None)?;
//! }
//! match outcome.get() {
//!     Some(Ok(sent)) => println!("sent {} bytes, sha256 {}", sent.size, sent.sha256),
//!     Some(Err(e)) => eprintln!("not sent: {e}"),
//!     None => unreachable!("the outcome is recorded by the time the connection closes"),
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Not implemented: resuming a transfer, several files per connection, compression,
//! authentication, encryption.
//!
//! # The module's parts
//!
//! - [`wire`]: the header (`FILE <name> <size>`), its names and the reply's digest text;
//! - [`store`]: the [`Store`] a receiver writes through, and [`MemStore`] for tests (the
//!   real one, [`DirStore`], is the wiring's: [`crate::store`]);
//! - [`receiver`]: [`FileReceiver`], one file per connection;
//! - [`sender`]: [`FileSender`] and the [`Outcome`] it reports.

pub mod receiver;
pub mod sender;
pub mod store;
pub mod wire;

pub use receiver::FileReceiver;
pub use sender::{FileSender, Outcome, SendError, Sent};
pub use store::{MemStore, MemTemp, Store, TempFile};
pub use wire::{check_name, parse_header, Header, NameError, Parsed, Refusal};

/// The directory store, re-exported where callers found it before it moved out of the
/// I/O-free `proto/` into the wiring ([`crate::store`]).
pub use crate::store::{DirStore, DirTemp, TEMP_PREFIX};

/// How much of the file the sender reads and hands to the driver per call: one read
/// buffer's worth, like the reactor's own (64 KiB).
pub const CHUNK: usize = 64 * 1024;

/// The longest name accepted, in bytes: `NAME_MAX` on Linux's common file systems.
pub const MAX_NAME: usize = 255;

/// The largest file a receiver accepts unless told otherwise: 64 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 30;

/// The longest header line accepted, newline included. The longest valid header is
/// `FILE ` + 255 + ` ` + 20 digits + `\r\n` = 283 bytes; the margin lets a name a little
/// over the limit get the precise "longer than 255 bytes" answer.
pub const MAX_HEADER: usize = 1024;

/// The longest reply line the sender accepts, newline included (`OK` needs 88 bytes).
pub const MAX_REPLY: usize = 1024;

#[cfg(test)]
mod tests;
