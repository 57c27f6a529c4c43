//! Protocols as sans-I/O state machines.
//!
//! A protocol here is a plain value with no socket inside. Its driver gives it the bytes
//! that arrived and it answers with bytes to send and, sometimes, an [`Action`] on the
//! connection. Because it never touches a socket, the same value can be driven by the
//! non-blocking [`reactor`](crate::reactor) or by the blocking drivers in
//! [`blocking`](crate::blocking), and tested with byte slices alone.
//!
//! # The calling contract
//!
//! A driver owns one protocol value per connection and calls it like this:
//!
//! 1. [`Protocol::handle_open`] once, when the connection is established (a banner goes
//!    out here).
//! 2. Whenever bytes arrive: [`Protocol::handle_input`] with every byte not yet consumed,
//!    oldest first. It returns how many it consumed; the driver keeps the rest and presents
//!    them again, followed by the next bytes to arrive. A protocol that needs a whole line
//!    consumes nothing until the line is complete.
//! 3. When the peer has closed its sending side (end of stream): [`Protocol::handle_eof`]
//!    with the unconsumed rest, once. No input follows.
//! 4. After every call, the driver sends what was written into the [`Out`] sink, in order,
//!    keeping whatever the socket refused for later, and obeys [`Out::action`].
//! 5. A `PeerError` from any call closes the connection after the output written so far
//!    has been sent.
//!
//! Output goes into a sink the driver lends ([`Out`]) rather than being polled out of the
//! machine afterwards: the reactor lends one buffer owned by the loop to every connection,
//! so a connection that has nothing left to send owns no output memory at all.
//!
//! ```
//! use sockloop::proto::{echo::Echo, Action, Out, Protocol};
//! use std::time::Instant;
//!
//! let mut machine = Echo;
//! let mut sent = Vec::new();
//! let mut out = Out::new(&mut sent, Instant::now());
//! machine.handle_open(&mut out);
//! let consumed = machine.handle_input(b"ping\n", &mut out).unwrap();
//! assert_eq!(consumed, 5);
//! assert_eq!(out.action(), Action::Continue);
//! assert_eq!(sent, b"ping\n");
//! ```

pub mod echo;

pub use crate::error::PeerError;

use std::time::Instant;

/// What a protocol asks its driver to do with the connection besides sending bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Keep the connection open.
    Continue,
    /// Send everything queued, then close (our FIN goes out after the last byte).
    CloseAfterFlush,
    /// Close at once, dropping queued output.
    Abort,
}

/// The sink a protocol writes its output into during one call.
///
/// Bytes pushed here are sent in order after the call returns. `Out` also carries the
/// time, so machines never read a clock themselves (which keeps them testable).
pub struct Out<'a> {
    buf: &'a mut Vec<u8>,
    action: Action,
    now: Instant,
}

impl<'a> Out<'a> {
    /// A sink appending to `buf`, at time `now`.
    pub fn new(buf: &'a mut Vec<u8>, now: Instant) -> Out<'a> {
        Out {
            buf,
            action: Action::Continue,
            now,
        }
    }

    /// Queues `bytes` to be sent after everything queued before them.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// How many bytes this sink holds.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Returns true if and only if nothing has been queued.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Asks for the connection to close once the queued output has been sent.
    /// Does not undo an earlier [`Out::abort`].
    pub fn close(&mut self) {
        if self.action == Action::Continue {
            self.action = Action::CloseAfterFlush;
        }
    }

    /// Asks for the connection to close now, dropping any queued output.
    pub fn abort(&mut self) {
        self.action = Action::Abort;
    }

    /// The action requested so far during this call.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The time the driver passes in for this call.
    pub fn now(&self) -> Instant {
        self.now
    }
}

impl std::io::Write for Out<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.push(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A connection-oriented protocol, as a state machine driven by bytes.
///
/// See the [module docs](self) for the order in which drivers call these methods.
pub trait Protocol {
    /// The connection is established. Called once, before any input.
    fn handle_open(&mut self, _out: &mut Out<'_>) {}

    /// Bytes arrived: `input` is every byte not yet consumed, oldest first. Returns how many
    /// bytes were consumed (at most `input.len()`); the rest are presented again later.
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError>;

    /// The peer closed its sending side; `rest` holds the bytes never consumed. After this
    /// the driver sends what is queued and closes. The default accepts a clean end and
    /// calls any unconsumed rest a truncated message.
    fn handle_eof(&mut self, rest: &[u8], _out: &mut Out<'_>) -> Result<(), PeerError> {
        if rest.is_empty() {
            Ok(())
        } else {
            Err(PeerError::new(format!(
                "stream ended in the middle of a message ({} bytes unconsumed)",
                rest.len()
            )))
        }
    }
}

impl<P: Protocol + ?Sized> Protocol for Box<P> {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        (**self).handle_open(out)
    }
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        (**self).handle_input(input, out)
    }
    fn handle_eof(&mut self, rest: &[u8], out: &mut Out<'_>) -> Result<(), PeerError> {
        (**self).handle_eof(rest, out)
    }
}
