//! Protocols as sans-I/O state machines.
//!
//! A protocol here is a plain value with no socket inside. Its driver gives it the bytes
//! that arrived and it answers with bytes to send and, sometimes, an [`Action`] on the
//! connection. Because it never touches a socket, the same value can be driven by the
//! non-blocking [`reactor`](crate::reactor) or by the blocking drivers in
//! [`blocking`](crate::blocking), and tested with byte slices alone. Every driver calls it
//! through the connection core, [`Session`](crate::session::Session), which keeps this
//! contract in one place.
//!
//! # The calling contract
//!
//! A driver owns one protocol value per connection and calls it like this:
//!
//! 1. [`Protocol::handle_open`] once, when the connection is established (a banner goes
//!    out here).
//! 2. Whenever bytes arrive: [`Protocol::handle_input`] with every byte not yet consumed,
//!    oldest first. It returns how many it consumed; the driver keeps the rest and presents
//!    them again, followed by the next bytes to arrive. A protocol may consume less than
//!    it was given: one that needs a whole line can consume nothing until the line is
//!    complete, and the driver keeps the bytes for it. Or it may consume every byte and
//!    keep a partial line itself (the demos' line framer does, so that it can still hand
//!    that line out from `handle_timeout`, which gets no input).
//! 3. When the peer has closed its sending side (end of stream): [`Protocol::handle_eof`]
//!    with the unconsumed rest, once. No input follows.
//! 4. After every call, the driver sends what was written into the [`Out`] sink, in order,
//!    keeping whatever the socket refused for later, and obeys [`Out::action`].
//! 5. A `PeerError` from any call closes the connection after the output written so far
//!    has been sent.
//! 6. After every call, the driver asks [`Protocol::poll_timeout`] when the machine next
//!    wants to be woken; once that time has come it calls [`Protocol::handle_timeout`].
//!    Timers may fire late, never early: a machine checks `out.now()` against its own
//!    deadlines.
//! 7. When the server shuts down gracefully, [`Protocol::handle_shutdown`] is called once;
//!    the default closes the connection after its output is sent.
//! 8. A machine that streams more output than it wants to hold (a file being sent) calls
//!    [`Out::want_writable`]; once everything queued has been taken by the socket, the
//!    driver calls [`Protocol::handle_writable`] for the next piece. Output memory stays
//!    bounded by one piece plus the driver's buffer. Streaming goes on after the peer's
//!    FIN (a download after the request); the connection closes once the machine stops
//!    asking.
//! 9. A machine that must receive bytes from elsewhere (another connection's message in a
//!    chat, a timer of the embedder's) takes a [`Mailbox`] from [`Out::mailbox`] in
//!    `handle_open`; whoever holds it can [`Mailbox::deliver`] bytes to this connection.
//! 10. Finally, [`Protocol::handle_close`] says how the connection ended, whatever the
//!     reason, once. No call follows it.
//!
//! Output goes into a sink the driver lends ([`Out`]) rather than being polled out of the
//! machine afterwards: the reactor lends one buffer owned by the loop to every connection,
//! so a connection that has nothing left to send owns no output memory at all.
//!
//! ```
//! use sockloop::proto::{Action, Out, PeerError, Protocol};
//! use std::time::Instant;
//!
//! /// Sends every byte back.
//! struct Echo;
//!
//! impl Protocol for Echo {
//!     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
//!         out.push(input);
//!         Ok(input.len())
//!     }
//! }
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

pub use crate::error::PeerError;

use crate::net::Endpoint;
use crate::session::Deliver;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Instant;

/// What a driver calls one of its sockets: for the reactor, a connection, listener,
/// datagram socket or watched fd (its slab slot and that slot's generation, so a token
/// kept after its socket closed never names a newer one); for the blocking drivers, a
/// connection's number. A protocol learns its own from [`Out::id`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub(crate) u64);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Slot first, as the log lines name connections (`conn 3`), then the generation.
        write!(f, "{}#{}", self.0 & 0xffff_ffff, self.0 >> 32)
    }
}

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
    want_writable: bool,
    id: Token,
    mailbox: Option<&'a dyn Fn() -> Mailbox>,
    peer: Option<&'a Endpoint>,
    local: Option<&'a Endpoint>,
    listener: Option<Token>,
    deferred: Option<&'a mut Vec<Deferred>>,
}

/// An action on the reactor a protocol asked for from inside one of its calls
/// ([`Out::defer`]), with its connection's token bound: run on the loop's thread once the
/// call has returned.
pub(crate) type Deferred = Box<dyn FnOnce(&mut crate::reactor::Reactor)>;

impl<'a> Out<'a> {
    /// A sink appending to `buf`, at time `now`.
    ///
    /// Driver side: the connection core ([`Session`](crate::session::Session)) makes one
    /// for every call. Make one yourself to drive a machine by hand, in its unit tests or
    /// a fuzz target; its [`Out::id`] is then `Token` 0 and it offers no mailbox, peer or
    /// deferred actions.
    pub fn new(buf: &'a mut Vec<u8>, now: Instant) -> Out<'a> {
        Out {
            buf,
            action: Action::Continue,
            now,
            want_writable: false,
            id: Token(0),
            mailbox: None,
            peer: None,
            local: None,
            listener: None,
            deferred: None,
        }
    }

    /// The same sink, for the connection `id`, able to take deferred actions into
    /// `deferred` if the driver runs them (the reactor).
    pub(crate) fn with_context(
        mut self,
        id: Token,
        deferred: Option<&'a mut Vec<Deferred>>,
    ) -> Out<'a> {
        self.id = id;
        self.deferred = deferred;
        self
    }

    /// The same sink, telling the machine where the connection runs (in `handle_open`).
    pub(crate) fn with_ends(
        mut self,
        peer: Option<&'a Endpoint>,
        local: Option<&'a Endpoint>,
        listener: Option<Token>,
    ) -> Out<'a> {
        self.peer = peer;
        self.local = local;
        self.listener = listener;
        self
    }

    /// The same sink, telling the machine who the peer is (as drivers do in
    /// `handle_open`), for a machine driven by hand.
    pub fn with_peer(mut self, peer: &'a Endpoint) -> Out<'a> {
        self.peer = Some(peer);
        self
    }

    /// The peer's address, where the driver tells it (in `handle_open`).
    pub fn peer(&self) -> Option<&Endpoint> {
        self.peer
    }

    /// This end's address (the listener's, for an accepted connection), where the driver
    /// tells it (in `handle_open`).
    pub fn local(&self) -> Option<&Endpoint> {
        self.local
    }

    /// The listener that accepted this connection, in `handle_open` (`None` for an
    /// outgoing connection): the token [`Reactor::listeners`] and
    /// [`Reactor::connections_of`] name it by.
    ///
    /// [`Reactor::listeners`]: crate::reactor::Reactor::listeners
    /// [`Reactor::connections_of`]: crate::reactor::Reactor::connections_of
    pub fn listener(&self) -> Option<Token> {
        self.listener
    }

    /// This connection's token: what the reactor's [`send`], [`close`] and
    /// [`pause_reading`] take (under the blocking drivers, its connection number).
    ///
    /// [`send`]: crate::reactor::Reactor::send
    /// [`close`]: crate::reactor::Reactor::close
    /// [`pause_reading`]: crate::reactor::Reactor::pause_reading
    pub fn id(&self) -> Token {
        self.id
    }

    /// Asks the driver to run `action` with the reactor in hand once this call has
    /// returned (still in this turn of the loop, on its thread): dial out, arm a timer,
    /// send to another connection, pause this one's reading. The action gets this
    /// connection's token. Returns false (and drops `action`) if the driver has no loop
    /// to run it on: the blocking drivers, or a sink made with [`Out::new`].
    ///
    /// ```
    /// use sockloop::proto::{Out, PeerError, Protocol};
    /// use std::time::Duration;
    ///
    /// /// Answers `ok`, then closes the connection a second later from a timer.
    /// struct Later;
    ///
    /// impl Protocol for Later {
    ///     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
    ///         out.push(b"ok\n");
    ///         out.defer(|reactor, me| {
    ///             reactor.set_timer(Duration::from_secs(1), move |r| {
    ///                 r.close(me);
    ///             });
    ///         });
    ///         Ok(input.len())
    ///     }
    /// }
    /// ```
    pub fn defer(
        &mut self,
        action: impl FnOnce(&mut crate::reactor::Reactor, Token) + 'static,
    ) -> bool {
        match self.deferred.as_mut() {
            Some(queue) => {
                let me = self.id;
                queue.push(Box::new(move |reactor| action(reactor, me)));
                true
            }
            None => false,
        }
    }

    /// The same sink, able to hand out this connection's [`Mailbox`] (drivers that support
    /// delivery from elsewhere pass a maker in `handle_open`).
    pub fn with_mailbox(mut self, make: &'a dyn Fn() -> Mailbox) -> Out<'a> {
        self.mailbox = Some(make);
        self
    }

    /// A handle through which bytes can be delivered to this connection from outside its
    /// own calls, if the driver offers one (see the calling contract, step 9).
    pub fn mailbox(&self) -> Option<Mailbox> {
        self.mailbox.map(|make| make())
    }

    /// Asks for [`Protocol::handle_writable`] once everything queued has been sent.
    pub fn want_writable(&mut self) {
        self.want_writable = true;
    }

    /// Returns true if and only if [`Out::want_writable`] was called during this call.
    pub fn wants_writable(&self) -> bool {
        self.want_writable
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
///
/// # Panics
///
/// A panic in any method is a bug of the machine's, and every driver treats it the same
/// way (the connection core catches it): that connection is closed, with
/// [`CloseReason::Panicked`] and the panic's message, and every other connection goes
/// on. [`Protocol::handle_close`] is still called once (a panic there is caught and
/// logged too). Apart from that `handle_close`, the machine is not called again, so it
/// need not be consistent afterwards; what it shares with others should be.
pub trait Protocol {
    /// The connection is established. Called once, before any input.
    fn handle_open(&mut self, _out: &mut Out<'_>) {}

    /// Bytes arrived: `input` is every byte not yet consumed, oldest first. Returns how many
    /// bytes were consumed (at most `input.len()`); the rest are presented again later.
    ///
    /// # Errors
    ///
    /// A [`PeerError`] if the peer broke the protocol: the connection closes once the
    /// output written so far has been sent, and the reason is logged.
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError>;

    /// When the machine next wants [`Protocol::handle_timeout`], if ever. Asked after every
    /// call; keep it cheap.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The time returned by [`Protocol::poll_timeout`] has come (`out.now()` is at or past
    /// it).
    fn handle_timeout(&mut self, _out: &mut Out<'_>) {}

    /// The server is shutting down gracefully. The default asks to close once the output
    /// already queued has been sent; a machine in the middle of a reply may finish it first.
    fn handle_shutdown(&mut self, out: &mut Out<'_>) {
        out.close();
    }

    /// Everything queued so far has been sent and the machine asked for this with
    /// [`Out::want_writable`]: produce the next piece of output.
    fn handle_writable(&mut self, _out: &mut Out<'_>) {}

    /// The connection has ended, for `reason`. The last call the machine receives.
    fn handle_close(&mut self, _reason: &CloseReason) {}

    /// The peer closed its sending side; `rest` holds the bytes never consumed. After this
    /// the driver sends what is queued, and what the machine still streams
    /// ([`Out::want_writable`]), then closes. The default accepts a clean end and
    /// calls any unconsumed rest a truncated message.
    ///
    /// # Errors
    ///
    /// A [`PeerError`] if the stream may not end here (the default: `rest` is not empty).
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

/// Forwards every method of [`Protocol`] through a pointer to the machine it points to.
macro_rules! forward_protocol {
    ($($ptr:ty),*) => {$(
        impl<P: Protocol + ?Sized> Protocol for $ptr {
            fn handle_open(&mut self, out: &mut Out<'_>) {
                (**self).handle_open(out)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                (**self).poll_timeout()
            }
            fn handle_timeout(&mut self, out: &mut Out<'_>) {
                (**self).handle_timeout(out)
            }
            fn handle_shutdown(&mut self, out: &mut Out<'_>) {
                (**self).handle_shutdown(out)
            }
            fn handle_writable(&mut self, out: &mut Out<'_>) {
                (**self).handle_writable(out)
            }
            fn handle_close(&mut self, reason: &CloseReason) {
                (**self).handle_close(reason)
            }
            fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
                (**self).handle_input(input, out)
            }
            fn handle_eof(&mut self, rest: &[u8], out: &mut Out<'_>) -> Result<(), PeerError> {
                (**self).handle_eof(rest, out)
            }
        }
    )*};
}

// A boxed machine (the reactor's, of any type) and a borrowed one (the blocking drivers
// drive the caller's) are driven like the machine itself.
forward_protocol!(Box<P>, &mut P);

/// A `Clone + Send + Sync` address for delivering bytes to one connection from outside
/// its protocol's own calls: another connection's machine (a chat broadcast), a timer,
/// another thread. Taken from [`Out::mailbox`].
///
/// The driver bounds what it holds for the connection: if the peer does not read and
/// deliveries pile up past the driver's output limit, the connection is dropped (logged)
/// rather than allowed to grow memory or hold up the sender.
///
/// `deliver` returns false once the connection is gone (closed, or the driver stopped),
/// so a holder knows to let go of it.
///
/// ```
/// use sockloop::proto::{Mailbox, Out, PeerError, Protocol};
/// use std::sync::mpsc;
///
/// /// Hands its mailbox to whoever wants to push to this connection.
/// struct Subscriber(mpsc::Sender<Mailbox>);
///
/// impl Protocol for Subscriber {
///     fn handle_open(&mut self, out: &mut Out<'_>) {
///         if let Some(mailbox) = out.mailbox() {
///             let _ = self.0.send(mailbox);
///         }
///     }
///     fn handle_input(&mut self, input: &[u8], _: &mut Out<'_>) -> Result<usize, PeerError> {
///         Ok(input.len())
///     }
/// }
///
/// // Elsewhere (another thread, a timer): every subscriber gets the news, and those
/// // that have gone are dropped from the list.
/// fn publish(subscribers: &mut Vec<Mailbox>, news: &[u8]) {
///     subscribers.retain(|m| m.deliver(news));
/// }
/// # let _ = publish;
/// ```
#[derive(Clone)]
pub struct Mailbox {
    inner: Arc<dyn Deliver>,
}

impl Mailbox {
    /// A mailbox delivering through `inner`. Driver side: a driver makes one per
    /// connection that asks; a test of a machine makes one over its own [`Deliver`].
    pub fn new(inner: Arc<dyn Deliver>) -> Mailbox {
        Mailbox { inner }
    }

    /// Queues `bytes` for the connection. Returns false if it is gone.
    pub fn deliver(&self, bytes: &[u8]) -> bool {
        self.inner.deliver(bytes)
    }

    /// Closes the connection once what is queued has been sent.
    pub fn close(&self) {
        self.inner.close()
    }
}

impl fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox").finish_non_exhaustive()
    }
}

/// How a connection ended, as told to [`Protocol::handle_close`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed first (its FIN), and everything owed to it was sent.
    PeerClosed,
    /// We closed (the protocol asked, or the server shut down) and the peer acknowledged.
    Closed,
    /// The protocol aborted the connection.
    Aborted,
    /// The peer broke the protocol (the reason is logged).
    PeerError(String),
    /// The peer sent more unconsumed input than the driver keeps.
    InputLimit,
    /// The peer read too slowly: more output was queued than the driver keeps.
    OutputLimit,
    /// No bytes moved either way for the idle timeout.
    IdleTimeout,
    /// Output was pending and the peer took none of it for the write-stall timeout.
    WriteStall,
    /// After our FIN the peer did not close within the linger time.
    LingerTimeout,
    /// An outgoing connect failed (refused, unreachable, ...).
    ConnectFailed(io::ErrorKind),
    /// An outgoing connect did not complete within its timeout.
    ConnectTimeout,
    /// A read or write failed (reset by the peer, broken pipe, ...).
    Io(io::ErrorKind),
    /// The server stopped before the connection finished on its own.
    Shutdown,
    /// The protocol panicked (the panic's message): the driver caught it at the call,
    /// closed this connection, and every other went on (see [`Protocol`], *Panics*).
    Panicked(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed, all output sent"),
            CloseReason::Closed => f.write_str("closed by us, peer acknowledged with FIN"),
            CloseReason::Aborted => f.write_str("aborted by the protocol"),
            CloseReason::PeerError(e) => write!(f, "peer error: {e}"),
            CloseReason::InputLimit => f.write_str("unconsumed input over the limit"),
            CloseReason::OutputLimit => {
                f.write_str("output over the limit: the peer is not reading")
            }
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::WriteStall => f.write_str("write stalled: the peer is not reading"),
            CloseReason::LingerTimeout => f.write_str("peer did not close after our FIN"),
            CloseReason::ConnectFailed(k) => write!(f, "connect failed: {}", io::Error::from(*k)),
            CloseReason::ConnectTimeout => f.write_str("connect timed out"),
            CloseReason::Io(k) => write!(f, "I/O error: {}", io::Error::from(*k)),
            CloseReason::Shutdown => f.write_str("server shut down"),
            CloseReason::Panicked(m) => write!(f, "the protocol panicked: {m}"),
        }
    }
}

/// A datagram to send: where to, and its bytes.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The destination.
    pub to: Endpoint,
    /// The datagram's payload.
    pub bytes: Vec<u8>,
}

/// A datagram protocol (UDP or Unix datagram), as a state machine driven by datagrams.
///
/// Each datagram arrives whole, with its sender; replies are [`Transmit`]s pushed into
/// `out`, sent in order. There is no connection, so no open/close: a machine serves every
/// peer of its socket.
pub trait DatagramProtocol {
    /// A datagram of `bytes` arrived from `from` at time `now`.
    fn handle_datagram(
        &mut self,
        from: &Endpoint,
        bytes: &[u8],
        now: Instant,
        out: &mut Vec<Transmit>,
    );
}

impl<P: DatagramProtocol + ?Sized> DatagramProtocol for Box<P> {
    fn handle_datagram(
        &mut self,
        from: &Endpoint,
        bytes: &[u8],
        now: Instant,
        out: &mut Vec<Transmit>,
    ) {
        (**self).handle_datagram(from, bytes, now, out)
    }
}
