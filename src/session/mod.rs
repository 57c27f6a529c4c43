//! The connection core: what a stream connection *means*, whatever drives it.
//!
//! A [`Session`] owns everything about one connection that is the same under every
//! driver: the protocol machine, the input it has not consumed yet (and the limit on it),
//! the output the socket has not taken yet (and the limits on that), the lifecycle
//! [`Phase`] with every transition, the streaming rules, end of stream and half-close in
//! both directions, graceful shutdown, the close reason, and the connection's one derived
//! deadline. It owns no socket and reads no clock: a driver feeds it events with the time
//! passed in and asks it what to do, the shape of quinn-proto's `Connection` and rustls's
//! `ConnectionCommon`. The reactor ([`crate::reactor`]), the blocking drivers
//! ([`crate::blocking`]) and the completion driver (`sockloop::uring`, feature `uring`) all
//! drive it; they differ only in how they wait.
//!
//! # The driver's contract
//!
//! A driver keeps one [`Context`] (per thread, or per loop: the reactor lends one to all its
//! connections) and, for each connection, one `Session`:
//!
//! 1. Before each call it sets [`Context::now`] (and [`Context::id`], the connection's
//!    name in log lines).
//! 2. It tells the session what happened: [`Session::open`] once the connection is
//!    established, [`Session::feed`] with the bytes a read returned, [`Session::eof`] when a
//!    read returned 0, [`Session::timeout`] when [`Session::poll_timeout`] has come,
//!    [`Session::writable`] when [`Session::wants_writable`] says the protocol streams,
//!    [`Session::shutdown`] for a graceful server shutdown, [`Session::fail`] when the
//!    socket failed; and, for the application, [`Session::send`], [`Session::close`] and
//!    [`Session::shutdown_write`].
//! 3. After every call it transmits: it offers the socket [`Session::poll_transmit`] and
//!    reports what the socket took with [`Session::sent`] (0 when it would block), until
//!    nothing is left or the socket refuses. Every call leaves the context's output sink
//!    empty or owed to this connection's socket, so step 3 must follow step 2 before the
//!    context is lent to another connection.
//! 4. When [`Session::poll_fin`] says so it sends its FIN (`shutdown(Write)`) and calls
//!    [`Session::fin_sent`]; the peer's FIN may already be waiting, so it reads again.
//! 5. It reads only while [`Session::wants_read`], writes while [`Session::wants_write`],
//!    and wakes at [`Session::poll_timeout`].
//! 6. Once [`Session::poll_close`] returns the reason, the connection is over: the protocol
//!    has been told ([`Protocol::handle_close`]) and the driver closes the socket.
//!
//! # Lifecycle
//!
//! ```text
//!   connect() ──▶ Connecting ── open() ──┐                  (refused / timeout: Closed)
//!            accept()                    ▼
//!   ───────────────────────────────▶  Open ─── eof() ────▶ PeerClosed ── all sent, ──▶ Closed
//!          │          │                 │                     ▲        not streaming
//!          │          │ protocol closes,│ shutdown_write()    │ eof()
//!          │          │ PeerError,      │ all sent: fin_sent()│
//!          │          │ InputLimit      ▼                     │
//!          │          │            HalfClosed ── eof() ───────┼──────────────────▶ Closed
//!          │          ▼                 │ protocol closes     │
//!          │       Closing ─────────────┼─────────────────────┘
//!          │          │ all sent: fin_sent()
//!          │          ▼                 ▼
//!          │       Draining ── eof(), or the linger deadline ──────────────────▶ Closed
//!          │
//!          └── Abort, I/O error, output over the limit, idle or write-stall timeout,
//!              from any phase ─────────────────────────────────────────────────▶ Closed
//! ```
//!
//! # The rules, once
//!
//! - **The first cause wins.** A close decided for a reason (a [`PeerError`], input over
//!   the limit) is reported with that reason however the connection then ends (the peer's
//!   FIN, the linger deadline, a reset). A close the protocol simply asked for ends as
//!   [`CloseReason::Closed`] when the peer's FIN comes (before ours or after), or
//!   [`CloseReason::LingerTimeout`] when it does not. Input a closing protocol leaves
//!   unconsumed is dropped, never counted against the limit.
//! - **Half-close.** After the peer's FIN ([`Phase::PeerClosed`]) the protocol may still
//!   stream all it wants to (a download after the request); the connection closes once
//!   the protocol stops asking for [`Session::writable`] and everything is sent. After
//!   our own FIN ([`Phase::HalfClosed`]) input still reaches the protocol, and output it
//!   produces is dropped (logged): nothing can follow a FIN.
//! - **Streaming.** [`Session::wants_writable`] is true while the protocol asked for
//!   [`Protocol::handle_writable`] and everything queued has been sent. A call that
//!   produces nothing and asks again means "not now": the session waits for any other
//!   event before asking again, rather than letting a driver spin.
//! - **Limits.** Unconsumed input over [`SessionConfig::max_input`] ends the connection
//!   ([`CloseReason::InputLimit`], after the output so far). Unsent output at
//!   [`SessionConfig::high_water`] stops reading until it drains to
//!   [`SessionConfig::low_water`]; over [`SessionConfig::output_limit`] (the hard limit),
//!   or at or above the high-water mark for [`SessionConfig::backlog_timeout`] (the soft
//!   one), the connection is closed ([`CloseReason::OutputLimit`]).
//! - **One deadline.** [`Session::poll_timeout`] is the earliest of the connect or linger
//!   deadline, the idle, write-stall and backlog timeouts and the protocol's own
//!   [`Protocol::poll_timeout`].
//!
//! [`PeerError`]: crate::proto::PeerError

pub(crate) mod clock;
#[cfg(test)]
mod tests;

use crate::buf::OutBuf;
use crate::net::Endpoint;
use crate::proto::{Action, CloseReason, Deferred, Mailbox, Out, Protocol, Token};
use clock::NEVER;
use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a driver delivers bytes to one of its connections on behalf of a [`Mailbox`]: the
/// driver's half of the mailbox contract (the protocol's half is [`Mailbox`] itself).
///
/// The reactor and the blocking drivers implement it; implement it yourself to drive a
/// machine that takes a mailbox from a test or a driver of your own.
pub trait Deliver: Send + Sync {
    /// Queues `bytes` for the connection, after what it has queued already. Returns false
    /// if the connection is gone (closed, or closing and taking no more).
    fn deliver(&self, bytes: &[u8]) -> bool;
    /// Closes the connection once what is queued has been sent.
    fn close(&self);
}

/// What a driver tells a protocol when its connection opens ([`Session::open_with`]).
#[derive(Default)]
pub struct Opening<'a> {
    /// The peer's address ([`Out::peer`]).
    pub peer: Option<&'a Endpoint>,
    /// This end's address ([`Out::local`]).
    pub local: Option<&'a Endpoint>,
    /// The listener that accepted it ([`Out::listener`]).
    pub listener: Option<Token>,
    /// Makes this connection's [`Mailbox`] ([`Out::mailbox`]), if the driver offers one.
    pub mailbox: Option<&'a dyn Fn() -> Mailbox>,
}

impl fmt::Debug for Opening<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opening")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .field("listener", &self.listener)
            .field("mailbox", &self.mailbox.is_some())
            .finish()
    }
}

/// What a connection may hold and for how long: the limits and timeouts every driver
/// applies the same way. Shared (`Arc`) by all the connections of one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Most bytes of input a protocol may leave unconsumed (an unfinished message) before
    /// the connection is closed. Default 1 MiB.
    pub max_input: usize,
    /// Most bytes of unsent output kept for one connection; above it the connection is
    /// closed. Default 1 MiB.
    pub output_limit: usize,
    /// Reading stops when unsent output reaches this. Default 512 KiB.
    pub high_water: usize,
    /// ... and resumes when it drains to this. Default 128 KiB.
    pub low_water: usize,
    /// After our FIN, how long to wait for the peer's before closing anyway. Default 2 s.
    pub linger: Duration,
    /// Close a connection when no byte has moved either way for this long. Default: none.
    pub idle: Option<Duration>,
    /// Close a connection whose output has been pending, with none of it taken by the
    /// peer, for this long. Default: none.
    pub write_stall: Option<Duration>,
    /// Close a connection whose unsent output stays at or above `high_water` this long
    /// (a slow reader that still takes a little: Redis's soft output-buffer limit), as
    /// [`CloseReason::OutputLimit`]. `output_limit` is the hard limit. Default 60 s.
    pub backlog_timeout: Option<Duration>,
}

impl SessionConfig {
    /// Checks that the limits make sense together: `low_water <= high_water <=
    /// output_limit`.
    ///
    /// # Errors
    ///
    /// `InvalidInput`, naming the setting, if they do not.
    pub fn validate(&self) -> std::io::Result<()> {
        if self.low_water > self.high_water || self.high_water > self.output_limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "low_water ({}) <= high_water ({}) <= output_limit ({}) does not hold",
                    self.low_water, self.high_water, self.output_limit
                ),
            ));
        }
        Ok(())
    }
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            max_input: 1024 * 1024,
            output_limit: 1024 * 1024,
            high_water: 512 * 1024,
            low_water: 128 * 1024,
            linger: Duration::from_secs(2),
            idle: None,
            write_stall: None,
            backlog_timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// Where a connection is in its life. Named after what the connection is doing; the TCP
/// state each corresponds to is in the `Display` text and in ARCHITECTURE.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Our SYN is sent (a non-blocking connect returned `EINPROGRESS`); the driver calls
    /// [`Session::open`] once the connect has succeeded (TCP SYN_SENT).
    Connecting,
    /// Both directions open: bytes flow to the protocol and back (TCP ESTABLISHED).
    Open,
    /// The peer sent FIN; we still send what we owe (and what the protocol still
    /// streams), then close (TCP CLOSE_WAIT).
    PeerClosed,
    /// We decided to close; we still send what we owe, then send FIN (TCP ESTABLISHED,
    /// FIN not yet sent). The protocol is not called again.
    Closing,
    /// Our FIN is sent; input is discarded until the peer's FIN or the linger deadline, so
    /// that closing with unread input does not turn into a reset that destroys the reply
    /// we just sent (TCP FIN_WAIT_1 / FIN_WAIT_2).
    Draining,
    /// We sent FIN because the application has nothing more to say (a client at the end
    /// of its input), and keep reading: the peer's replies still reach the protocol
    /// (TCP FIN_WAIT_2). Ends at the peer's FIN.
    HalfClosed,
    /// Finished: the protocol has been told why; the driver closes the socket.
    Closed,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connecting => "Connecting (SYN_SENT)",
            Phase::Open => "Open (ESTABLISHED)",
            Phase::PeerClosed => "PeerClosed (CLOSE_WAIT)",
            Phase::Closing => "Closing (flushing before FIN)",
            Phase::Draining => "Draining (FIN_WAIT)",
            Phase::HalfClosed => "HalfClosed (FIN sent, still reading)",
            Phase::Closed => "Closed",
        })
    }
}

/// What a driver lends a [`Session`] for each call: the time, the connection's name for
/// log lines, and the sink the protocol's fresh output goes into.
///
/// One context serves any number of sessions, one call at a time: the reactor lends one
/// buffer to every connection, so a connection with nothing left to send owns no output
/// memory at all. Fresh output stays in the context only until the driver has offered it
/// to the socket (step 3 of the [contract](self)); what the socket refuses moves into the
/// session.
pub struct Context {
    /// The time of this call. Deadlines are checked against it; it is never read from a
    /// clock inside the session.
    pub now: Instant,
    /// The connection's name in log lines (`conn {id}`): the reactor's slab key, the
    /// blocking driver's connection number.
    pub id: u64,
    /// The connection's [`Token`], as the protocol sees it ([`Out::id`]).
    pub token: Token,
    /// Output produced during this call, not yet offered to the socket.
    tx: Vec<u8>,
    /// Actions protocols deferred ([`Out::defer`]), if this driver runs them.
    pub(crate) deferred: Option<Vec<Deferred>>,
    /// `now` on the millisecond grid, with the `now` it was computed for: a turn of the
    /// reactor serves many connections at one `now`, and each read and write asks.
    ms: std::cell::Cell<(Instant, u64)>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("now", &self.now)
            .field("id", &self.id)
            .field("token", &self.token)
            .field("tx", &self.tx.len())
            .field("deferred", &self.deferred.as_ref().map(Vec::len))
            .finish()
    }
}

impl Context {
    /// `now` in the session's milliseconds, rounded up; computed once per `now`.
    fn now_ms(&self) -> u64 {
        let (at, ms) = self.ms.get();
        if at == self.now {
            return ms;
        }
        let ms = clock::ceil(self.now);
        self.ms.set((self.now, ms));
        ms
    }

    /// Returns true if and only if fresh output from the last call waits in this context
    /// for the connection's socket (step 3 of the [contract](self) is still to do). A
    /// driver that cannot write at once (a completion driver with a send in flight) hands
    /// it to the session with [`Session::sent`]`(cx, 0)`, which queues it in order.
    pub fn has_output(&self) -> bool {
        !self.tx.is_empty()
    }

    /// A context at time `now`, with an empty sink.
    pub fn new(now: Instant) -> Context {
        Context {
            now,
            id: 0,
            token: Token(0),
            tx: Vec::new(),
            deferred: None,
            ms: std::cell::Cell::new((now, clock::ceil(now))),
        }
    }
}

/// What a connection holds only some of the time, boxed so that a connection with none of
/// it (nearly every connection, nearly always) pays one null pointer for all of it: an
/// idle connection's whole cost in the reactor is its slab slot.
#[derive(Debug, Default)]
struct Spill {
    /// Bytes read but not yet consumed by the protocol (a partial message).
    input: Vec<u8>,
    /// Output the socket has not taken yet, oldest first.
    out: OutBuf,
    /// When output started waiting, or the socket last took some of it (the write-stall
    /// clock), in [`clock`] milliseconds.
    stall_since: u64,
    /// When unsent output reached the high-water mark (the backlog clock), in [`clock`]
    /// milliseconds; meaningful while `paused`.
    backlog_since: u64,
    /// Why the connection is closing, once decided; after `Closed`, the reason
    /// [`Session::poll_close`] hands out.
    reason: Option<CloseReason>,
}

impl Spill {
    fn is_empty(&self) -> bool {
        self.input.is_empty() && self.out.is_empty() && self.reason.is_none()
    }
}

/// One stream connection's meaning, fed events by a driver (see the [module docs](self)).
pub struct Session<P> {
    proto: P,
    cfg: Arc<SessionConfig>,
    spill: Option<Box<Spill>>,
    /// When a byte last moved either way (for the idle timeout), in [`clock`] ms.
    last_io: u64,
    /// The phase's own deadline: the connect timeout while `Connecting`, the linger
    /// deadline while `Draining`; [`clock::NEVER`] if none.
    deadline: u64,
    phase: Phase,
    /// The protocol asked for `handle_writable` once everything queued has been sent.
    streaming: bool,
    /// The last `handle_writable` produced nothing: wait for another event.
    stream_idle: bool,
    /// The application asked to half-close: FIN once everything is sent, keep reading.
    fin_pending: bool,
    /// Unsent output reached the high-water mark: reading is suspended.
    paused: bool,
    /// The protocol is not called again: it (or the application) asked to close, or the
    /// peer broke the protocol. Streaming and its timers end with it.
    finished: bool,
    /// The close is ours: decided while `Open`, so it ends as `Closed` even if the peer's
    /// FIN comes before ours does.
    ours: bool,
    /// The driver holds this connection's reading for a reason of its own
    /// ([`Session::hold_input`]).
    held: bool,
}

impl<P: Protocol + fmt::Debug> fmt::Debug for Session<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("proto", &self.proto)
            .field("phase", &self.phase)
            .field("buffered_output", &self.buffered_output())
            .finish_non_exhaustive()
    }
}

impl<P: Protocol> Session<P> {
    /// A session for a connection that is established already (accepted, or a blocking
    /// connect that returned). Call [`Session::open`] next.
    pub fn accepted(proto: P, cfg: Arc<SessionConfig>, now: Instant) -> Session<P> {
        Session::new(proto, cfg, Phase::Open, clock::ceil(now), NEVER)
    }

    /// A session for an outgoing connect in progress, given up at `now + timeout`
    /// ([`CloseReason::ConnectTimeout`]). Bytes sent meanwhile wait for the connect; call
    /// [`Session::open`] once it succeeds, [`Session::fail`] if it fails.
    pub fn connecting(
        proto: P,
        cfg: Arc<SessionConfig>,
        now: Instant,
        timeout: Option<Duration>,
    ) -> Session<P> {
        let deadline = timeout
            .and_then(|t| now.checked_add(t))
            .map_or(NEVER, clock::ceil);
        Session::new(proto, cfg, Phase::Connecting, clock::ceil(now), deadline)
    }

    fn new(proto: P, cfg: Arc<SessionConfig>, phase: Phase, now: u64, deadline: u64) -> Self {
        Session {
            proto,
            cfg,
            spill: None,
            last_io: now,
            deadline,
            phase,
            streaming: false,
            stream_idle: false,
            fin_pending: false,
            paused: false,
            finished: false,
            ours: false,
            held: false,
        }
    }

    /// Where the connection is in its life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The protocol machine.
    pub fn protocol(&self) -> &P {
        &self.proto
    }

    /// The limits and timeouts this session applies.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Bytes of output the socket has not taken yet (fresh output still in the context
    /// not counted).
    pub fn buffered_output(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.out.len())
    }

    /// Returns true if and only if reading is suspended because unsent output reached the
    /// high-water mark (backpressure).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The driver holds this connection's reading (`true`) for a reason of its own, or
    /// lets it go (`false`): the reactor holds a connection that delivered to another one
    /// over its high-water mark, so backpressure reaches a publisher. While held the
    /// session does not want input ([`Session::wants_read`]) and the protocol's own
    /// timers wait, as they do while its own output is over the high-water mark.
    pub fn hold_input(&mut self, held: bool) {
        self.held = held;
    }

    // ---- what the driver asks ---------------------------------------------------------

    /// The bytes to offer the socket now, oldest first (empty: nothing to send). Report
    /// what it took with [`Session::sent`].
    pub fn poll_transmit<'a>(&'a self, cx: &'a Context) -> &'a [u8] {
        if self.phase == Phase::Connecting {
            // No socket to write to yet: what was sent waits for the connect.
            return &[];
        }
        match &self.spill {
            Some(s) if !s.out.is_empty() => s.out.as_slice(),
            _ => &cx.tx,
        }
    }

    /// Returns true if and only if transmitting has nothing to do now: no output is owed
    /// ([`Session::poll_transmit`] is empty, nothing is queued), no FIN is due
    /// ([`Session::poll_fin`]), no stream waits ([`Session::wants_writable`]), and reading
    /// is not suspended by backpressure ([`Session::is_paused`]).
    pub(crate) fn is_quiet(&self, cx: &Context) -> bool {
        cx.tx.is_empty()
            && self.buffered_output() == 0
            && !self.paused
            && !self.poll_fin(cx)
            && !self.wants_writable(cx)
    }

    /// Returns true if and only if unsent output waits for the socket (the driver wants
    /// WRITABLE readiness exactly then).
    pub fn wants_write(&self) -> bool {
        self.buffered_output() > 0
    }

    /// Returns true if and only if the driver should read: the peer may still send, and
    /// output is not over the high-water mark. Input is read (and discarded) while
    /// `Closing` and `Draining` too, so that the peer's FIN is seen.
    pub fn wants_read(&self) -> bool {
        !self.paused
            && !self.held
            && matches!(
                self.phase,
                Phase::Open | Phase::HalfClosed | Phase::Closing | Phase::Draining
            )
    }

    /// Returns true if and only if the protocol streams and waits for
    /// [`Session::writable`]: it asked, everything queued has been sent, and its last
    /// piece was not empty.
    pub fn wants_writable(&self, cx: &Context) -> bool {
        self.streaming
            && !self.stream_idle
            && self.protocol_live()
            && self.phase != Phase::HalfClosed
            && cx.tx.is_empty()
            && self.buffered_output() == 0
    }

    /// Returns true if and only if our FIN is due now: everything owed has been sent and
    /// the connection is closing, or the application asked to half-close. The driver
    /// sends it (`shutdown(Write)`) and calls [`Session::fin_sent`].
    pub fn poll_fin(&self, cx: &Context) -> bool {
        let due = match self.phase {
            Phase::Closing => true,
            Phase::Open => self.fin_pending && !self.streaming,
            _ => false,
        };
        due && cx.tx.is_empty() && self.buffered_output() == 0
    }

    /// When the connection next needs [`Session::timeout`], if ever: the earliest of its
    /// connect or linger deadline, idle and write-stall timeouts, and the protocol's own.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        let ms = self
            .deadline
            .min(self.idle_deadline())
            .min(self.stall_deadline())
            .min(self.backlog_deadline());
        let at = (ms != NEVER).then(|| clock::instant(ms));
        let proto = || {
            // A panic here cannot close the connection (this is a query): it asks for
            // `timeout` at once instead, which asks again and closes it if it panics again.
            catch_unwind(AssertUnwindSafe(|| self.proto.poll_timeout()))
                .unwrap_or_else(|_| Some(clock::instant(self.last_io)))
        };
        match (at, self.protocol_timers().then(proto)) {
            (Some(a), Some(Some(p))) => Some(a.min(p)),
            (a, p) => a.or(p.flatten()),
        }
    }

    /// [`Session::poll_timeout`] on the millisecond grid the session keeps its times on,
    /// rounded up ([`clock::NEVER`]: none), for a driver whose timers keep that grid too.
    #[inline(always)]
    pub(crate) fn poll_timeout_ms(&self) -> u64 {
        if self.phase == Phase::Closed {
            return NEVER;
        }
        let mut ms = self.deadline;
        if self.cfg.idle.is_some() || self.spill.is_some() {
            ms = ms.min(self.timeouts_ms());
        }
        if self.protocol_timers() {
            ms = ms.min(self.protocol_timeout_ms());
        }
        ms
    }

    /// The earliest of the idle, write-stall and backlog deadlines, in clock ms.
    #[inline(never)]
    fn timeouts_ms(&self) -> u64 {
        self.idle_deadline()
            .min(self.stall_deadline())
            .min(self.backlog_deadline())
    }

    /// The protocol's own deadline on the grid, rounded up (`NEVER`: none). As in
    /// `poll_timeout`, a panic asks for `timeout` at once.
    #[inline(always)]
    fn protocol_timeout_ms(&self) -> u64 {
        let proto = catch_unwind(AssertUnwindSafe(|| self.proto.poll_timeout()))
            .unwrap_or_else(|_| Some(clock::instant(self.last_io)));
        // `ceil` is monotonic and exact on the grid, so the minimum taken on it is
        // `poll_timeout`'s instant rounded up.
        match proto {
            Some(at) => clock::ceil(at),
            None => NEVER,
        }
    }

    /// The reason the connection ended, once, after it has: the protocol has been told the
    /// same, and the driver closes the socket. `None` before, and after it was taken.
    pub fn poll_close(&mut self) -> Option<CloseReason> {
        if self.phase != Phase::Closed {
            return None;
        }
        let reason = self.spill.as_mut()?.reason.take();
        self.tidy();
        reason
    }

    // ---- what happened ----------------------------------------------------------------

    /// The connection is established: the protocol speaks first (a banner). `peer` is the
    /// peer's address if known; `mailbox` makes this connection's [`Mailbox`] if the driver
    /// offers one. From `Connecting`, this is the connect's success: what the application
    /// sent meanwhile goes out first.
    pub fn open(
        &mut self,
        cx: &mut Context,
        peer: Option<&Endpoint>,
        mailbox: Option<&dyn Fn() -> Mailbox>,
    ) {
        self.open_with(
            cx,
            &Opening {
                peer,
                mailbox,
                ..Opening::default()
            },
        );
    }

    /// [`Session::open`], telling the protocol all the driver knows of the connection.
    pub fn open_with(&mut self, cx: &mut Context, opening: &Opening<'_>) {
        self.begin(cx);
        if self.phase == Phase::Connecting {
            self.deadline = NEVER;
            self.last_io = cx.now_ms();
            if let Some(s) = self.spill.as_mut() {
                // What was sent while connecting starts waiting for the socket only now.
                s.stall_since = self.last_io;
            }
            self.set_phase(Phase::Open, cx);
        }
        if self.phase != Phase::Open {
            return;
        }
        let mut out = Out::new(&mut cx.tx, cx.now)
            .with_context(cx.token, cx.deferred.as_mut())
            .with_ends(opening.peer, opening.local, opening.listener);
        if let Some(make) = opening.mailbox {
            out = out.with_mailbox(make);
        }
        let proto = &mut self.proto;
        match catch_unwind(AssertUnwindSafe(|| proto.handle_open(&mut out))) {
            Ok(()) => {
                let (streams, action) = (out.wants_writable(), out.action());
                self.after_call(cx, streams, action);
            }
            Err(payload) => {
                let panic = panicked(cx, "handle_open", payload);
                self.end(cx, panic);
            }
        }
    }

    /// `bytes` arrived (a read returned them).
    pub fn feed(&mut self, cx: &mut Context, bytes: &[u8]) {
        self.begin(cx);
        if bytes.is_empty() {
            return;
        }
        self.last_io = cx.now_ms();
        match self.phase {
            Phase::Open | Phase::HalfClosed => self.deliver(cx, bytes),
            phase => log::trace!(
                "conn {}: discarding {} bytes while {phase}",
                cx.id,
                bytes.len()
            ),
        }
    }

    /// Hands `bytes`, after any input kept from before, to the protocol.
    fn deliver(&mut self, cx: &mut Context, bytes: &[u8]) {
        let spill = &mut self.spill;
        let held = spill.as_ref().is_some_and(|s| !s.input.is_empty());
        let c = call(&mut self.proto, cx, |proto, out| {
            if held {
                let kept = &mut spill.as_mut().expect("held input").input;
                kept.extend_from_slice(bytes);
                proto
                    .handle_input(kept, out)
                    .map(|used| drop(kept.drain(..used.min(kept.len()))))
            } else {
                // The common case: nothing kept, so the bytes are handed over where they
                // lie and only an unconsumed rest is copied.
                proto.handle_input(bytes, out).map(|used| {
                    if used < bytes.len() {
                        let s = spill.get_or_insert_with(Default::default);
                        s.input.extend_from_slice(&bytes[used..]);
                    }
                })
            }
        });
        let c = match c {
            Ok(c) => c,
            Err(panic) => return self.end(cx, panic),
        };
        let (result, streams, mut action) = (c.result, c.streams, c.action);
        let kept = self.spill.as_ref().map_or(0, |s| s.input.len());
        match result {
            // A protocol that closes will not consume the rest: it is dropped, not a limit.
            Ok(()) if action != Action::Continue => self.drop_input(),
            Ok(()) if kept > self.cfg.max_input => {
                log::debug!(
                    "conn {}: closing: {kept} bytes of unconsumed input exceed the limit of {}",
                    cx.id,
                    self.cfg.max_input
                );
                self.decide(CloseReason::InputLimit);
                action = action.max_close();
                self.drop_input();
            }
            Ok(()) => {}
            Err(e) => {
                log::debug!("conn {}: closing: {e}", cx.id);
                self.decide(CloseReason::PeerError(e.reason().to_string()));
                action = action.max_close();
                self.drop_input();
            }
        }
        self.after_call(cx, streams, action);
    }

    /// The peer closed its sending side (a read returned 0).
    pub fn eof(&mut self, cx: &mut Context) {
        self.begin(cx);
        match self.phase {
            Phase::Open | Phase::HalfClosed => {
                let was = self.phase;
                let rest = self.spill.as_mut().map(|s| std::mem::take(&mut s.input));
                let rest = rest.unwrap_or_default();
                let c = match call(&mut self.proto, cx, |p, out| p.handle_eof(&rest, out)) {
                    Ok(c) => c,
                    Err(panic) => return self.end(cx, panic),
                };
                let (streams, mut action) = (c.streams, c.action);
                if let Err(e) = c.result {
                    log::debug!("conn {}: {e}", cx.id);
                    self.decide(CloseReason::PeerError(e.reason().to_string()));
                    action = action.max_close();
                }
                if was == Phase::HalfClosed {
                    // Both FINs are out: nothing more can move either way.
                    return self.end(cx, CloseReason::PeerClosed);
                }
                self.set_phase(Phase::PeerClosed, cx);
                self.after_call(cx, streams, action);
            }
            Phase::Closing => {
                // We were about to close anyway; the peer's FIN beat ours (`ours` keeps
                // the close ours).
                self.set_phase(Phase::PeerClosed, cx);
                self.settle(cx);
            }
            Phase::Draining => self.end(cx, CloseReason::Closed),
            Phase::Connecting | Phase::PeerClosed | Phase::Closed => {}
        }
    }

    /// The time from [`Session::poll_timeout`] has come (`cx.now` is at or past it): act on
    /// whichever deadline has passed. A call with none due only counts as an event.
    pub fn timeout(&mut self, cx: &mut Context) {
        self.begin(cx);
        // A deadline of `d` ms is due once `d` whole milliseconds have passed.
        let now = clock::floor(cx.now);
        let due = |ms: u64| ms != NEVER && ms <= now;
        if due(self.deadline) {
            match self.phase {
                Phase::Connecting => return self.end(cx, CloseReason::ConnectTimeout),
                Phase::Draining => return self.end(cx, CloseReason::LingerTimeout),
                _ => {}
            }
        }
        if due(self.idle_deadline()) {
            return self.end(cx, CloseReason::IdleTimeout);
        }
        if due(self.stall_deadline()) {
            return self.end(cx, CloseReason::WriteStall);
        }
        if due(self.backlog_deadline()) {
            log::info!(
                "conn {}: dropped as a slow reader: {} bytes unsent, over the high-water mark \
                 ({}) for {:?}",
                cx.id,
                self.buffered_output(),
                self.cfg.high_water,
                self.cfg.backlog_timeout.unwrap_or_default()
            );
            return self.end(cx, CloseReason::OutputLimit);
        }
        if self.protocol_timers() {
            let proto = &self.proto;
            let due = match catch_unwind(AssertUnwindSafe(|| proto.poll_timeout())) {
                Ok(at) => at.is_some_and(|t| t <= cx.now),
                Err(payload) => {
                    let panic = panicked(cx, "poll_timeout", payload);
                    return self.end(cx, panic);
                }
            };
            if due {
                match call(&mut self.proto, cx, |p, out| p.handle_timeout(out)) {
                    Ok(c) => self.after_call(cx, c.streams, c.action),
                    Err(panic) => self.end(cx, panic),
                }
            }
        }
    }

    /// Everything queued has been sent and the protocol streams
    /// ([`Session::wants_writable`]): ask it for its next piece.
    pub fn writable(&mut self, cx: &mut Context) {
        if !self.wants_writable(cx) {
            return;
        }
        self.streaming = false;
        let c = match call(&mut self.proto, cx, |p, out| p.handle_writable(out)) {
            Ok(c) => c,
            Err(panic) => return self.end(cx, panic),
        };
        // Asked for more but had nothing to give: wait for another event, not spin.
        self.stream_idle = c.streams && c.silent;
        self.after_call(cx, c.streams, c.action);
    }

    /// The server is shutting down gracefully: the protocol may finish (by default it
    /// closes once its output is sent); a pending connect is given up.
    pub fn shutdown(&mut self, cx: &mut Context) {
        self.begin(cx);
        match self.phase {
            Phase::Open | Phase::HalfClosed => {
                match call(&mut self.proto, cx, |p, out| p.handle_shutdown(out)) {
                    Ok(c) => self.after_call(cx, c.streams, c.action),
                    Err(panic) => self.end(cx, panic),
                }
            }
            Phase::Connecting => self.end(cx, CloseReason::Shutdown),
            _ => {}
        }
    }

    /// The socket failed, or the driver ends the connection for a reason of its own (a
    /// refused connect, the end of a shutdown's grace period): close now, dropping what is
    /// unsent. A reason decided earlier (a peer error) stands.
    pub fn fail(&mut self, cx: &mut Context, reason: CloseReason) {
        self.end(cx, reason);
    }

    /// What the socket took of [`Session::poll_transmit`]: `n` bytes (0 when it would
    /// block). The rest is kept, in order, and offered again.
    #[inline(always)]
    pub fn sent(&mut self, cx: &mut Context, n: usize) {
        if self.phase == Phase::Closed {
            cx.tx.clear();
            return;
        }
        let now = cx.now_ms();
        if n > 0 {
            self.last_io = now;
        }
        if cx.tx.is_empty() {
            if let Some(s) = self.spill.as_mut() {
                s.out.consume(n);
                if n > 0 {
                    // The peer took some: the write-stall clock starts again.
                    s.stall_since = now;
                }
            }
        } else if n >= cx.tx.len() {
            // The socket took all the fresh output (the common case): nothing to queue.
            cx.tx.clear();
        } else {
            self.queue_fresh(cx, n);
            if self.phase == Phase::Closed {
                return;
            }
        }
        if self.paused && self.buffered_output() <= self.cfg.low_water {
            log::trace!(
                "conn {}: backpressure released: {} bytes unsent (low water {}), resume reading",
                cx.id,
                self.buffered_output(),
                self.cfg.low_water
            );
            self.paused = false;
        }
        self.tidy();
        self.settle(cx);
    }

    /// Our FIN has been sent, as [`Session::poll_fin`] asked.
    pub fn fin_sent(&mut self, cx: &mut Context) {
        match self.phase {
            Phase::Closing => self.drain(cx),
            Phase::Open if self.fin_pending => self.set_phase(Phase::HalfClosed, cx),
            _ => {}
        }
    }

    /// Queues `bytes` from outside the protocol (the application, or a [`Mailbox`]
    /// delivery), behind the output queued so far. While connecting they wait for the
    /// connect. Returns false if the connection no longer sends.
    pub fn send(&mut self, cx: &mut Context, bytes: &[u8]) -> bool {
        self.begin(cx);
        if !matches!(
            self.phase,
            Phase::Connecting | Phase::Open | Phase::PeerClosed | Phase::Closing
        ) {
            return false;
        }
        cx.tx.extend_from_slice(bytes);
        self.stage(cx);
        self.phase != Phase::Closed
    }

    /// Closes once everything queued is sent, as if the protocol had asked; a pending
    /// connect is abandoned ([`CloseReason::Aborted`]).
    pub fn close(&mut self, cx: &mut Context) {
        self.begin(cx);
        match self.phase {
            Phase::Connecting => self.end(cx, CloseReason::Aborted),
            Phase::Open | Phase::HalfClosed | Phase::PeerClosed => {
                self.after_call(cx, false, Action::CloseAfterFlush)
            }
            _ => {}
        }
    }

    /// Half-closes at the application's request: our FIN goes out once everything queued
    /// is sent, and input keeps reaching the protocol until the peer's FIN. Returns false
    /// unless the connection is `Open`.
    pub fn shutdown_write(&mut self, cx: &mut Context) -> bool {
        self.begin(cx);
        if self.phase != Phase::Open {
            return false;
        }
        self.fin_pending = true;
        true
    }

    // ---- the machinery ----------------------------------------------------------------

    /// Every event starts here: it may be what a waiting stream was waiting for.
    fn begin(&mut self, cx: &Context) {
        debug_assert!(
            cx.tx.is_empty(),
            "conn {}: fresh output left in the context: the driver must transmit after every call",
            cx.id
        );
        self.stream_idle = false;
    }

    /// After a protocol call: note whether it streams, obey its action, place its output.
    #[inline(always)]
    fn after_call(&mut self, cx: &mut Context, streams: bool, action: Action) {
        self.streaming |= streams;
        match action {
            Action::Continue => {}
            Action::Abort => return self.end(cx, CloseReason::Aborted),
            Action::CloseAfterFlush => {
                self.streaming = false;
                self.finished = true;
                match self.phase {
                    Phase::Open => {
                        self.ours = true;
                        self.set_phase(Phase::Closing, cx);
                    }
                    // Our FIN is out already: wait for the peer's.
                    Phase::HalfClosed => self.drain(cx),
                    // Closes once everything is sent anyway.
                    _ => {}
                }
            }
        }
        self.stage(cx);
    }

    /// Places the fresh output: left in the context for the driver to write at once if
    /// nothing is queued before it, queued behind what is, dropped if nothing may follow.
    #[inline(always)]
    fn stage(&mut self, cx: &mut Context) {
        match self.phase {
            Phase::Closed => cx.tx.clear(),
            Phase::HalfClosed | Phase::Draining if !cx.tx.is_empty() => {
                log::debug!(
                    "conn {}: dropping {} bytes of output produced after our FIN",
                    cx.id,
                    cx.tx.len()
                );
                cx.tx.clear();
            }
            // No socket to write to yet: the bytes wait for the connect.
            Phase::Connecting => self.queue_fresh(cx, 0),
            _ if self.buffered_output() > 0 => self.queue_fresh(cx, 0),
            _ => {}
        }
        if self.phase != Phase::Closed {
            self.settle(cx);
        }
        self.tidy();
    }

    /// Forgets unconsumed input: the protocol will not be asked to consume it.
    fn drop_input(&mut self) {
        if let Some(s) = self.spill.as_mut() {
            s.input = Vec::new();
        }
    }

    /// Moves the fresh output from `from` on behind what is queued; the context's sink is
    /// empty afterwards (and keeps its memory for the next call).
    fn queue_fresh(&mut self, cx: &mut Context, from: usize) {
        let mut fresh = std::mem::take(&mut cx.tx);
        self.queue(cx, &fresh[from.min(fresh.len())..]);
        fresh.clear();
        cx.tx = fresh;
    }

    /// Keeps `bytes` behind what waits; enforces the output limit and the high-water mark.
    fn queue(&mut self, cx: &mut Context, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let spill = self.spill.get_or_insert_with(Default::default);
        if spill.out.is_empty() {
            // A backlog starts now, and with it the write-stall clock.
            spill.stall_since = cx.now_ms();
        }
        spill.out.extend(bytes);
        let queued = spill.out.len();
        if queued > self.cfg.output_limit {
            log::debug!(
                "conn {}: {queued} bytes of output queued, over the limit of {}",
                cx.id,
                self.cfg.output_limit
            );
            self.end(cx, CloseReason::OutputLimit);
        } else if queued >= self.cfg.high_water && !self.paused {
            log::trace!(
                "conn {}: backpressure: {queued} bytes unsent (high water {}), stop reading",
                cx.id,
                self.cfg.high_water
            );
            self.paused = true;
            spill.backlog_since = cx.now_ms();
        }
    }

    /// Takes the step that waits for nothing but the output to drain: a `PeerClosed`
    /// connection whose protocol has finished closes once everything is sent.
    fn settle(&mut self, cx: &mut Context) {
        if self.phase == Phase::PeerClosed
            && !self.streaming
            && cx.tx.is_empty()
            && self.buffered_output() == 0
        {
            // The peer's FIN came first, unless we had decided to close already and the
            // FINs crossed.
            let reason = if self.ours {
                CloseReason::Closed
            } else {
                CloseReason::PeerClosed
            };
            self.end(cx, reason);
        }
    }

    /// Our FIN is out: discard input until the peer's FIN or the linger deadline.
    fn drain(&mut self, cx: &mut Context) {
        self.deadline = cx
            .now
            .checked_add(self.cfg.linger)
            .map_or(NEVER, clock::ceil);
        self.set_phase(Phase::Draining, cx);
    }

    /// Records why the connection is closing, unless a reason was decided already.
    fn decide(&mut self, reason: CloseReason) {
        let spill = self.spill.get_or_insert_with(Default::default);
        spill.reason.get_or_insert(reason);
    }

    /// Ends the connection for `reason` (or the reason decided earlier): the one way into
    /// `Closed`. Drops unsent output and unconsumed input, tells the protocol, and keeps
    /// the reason for [`Session::poll_close`].
    fn end(&mut self, cx: &mut Context, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        cx.tx.clear();
        let mut spill = self.spill.take().unwrap_or_default();
        let reason = spill.reason.take().unwrap_or(reason);
        log::trace!("conn {}: closing: {reason}", cx.id);
        self.streaming = false;
        self.paused = false;
        self.set_phase(Phase::Closed, cx);
        let proto = &mut self.proto;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| proto.handle_close(&reason))) {
            // Told once all the same: the connection is closed, and nothing follows.
            let _ = panicked(cx, "handle_close", payload);
        }
        // Unsent output and unconsumed input go; the box stays, to hold the reason.
        *spill = Spill {
            reason: Some(reason),
            ..Spill::default()
        };
        self.spill = Some(spill);
    }

    fn set_phase(&mut self, next: Phase, cx: &Context) {
        if next != self.phase {
            log::trace!("conn {}: state {} => {}", cx.id, self.phase, next);
            self.phase = next;
        }
    }

    /// Frees the spill once it holds nothing.
    fn tidy(&mut self) {
        if self.spill.as_ref().is_some_and(|s| s.is_empty()) {
            self.spill = None;
        }
    }

    /// Returns true if and only if the protocol's timers count now: it is still called,
    /// and its input is not held back. A protocol's deadlines on input (a quiet period
    /// that ends a line, a header deadline) measure the peer's silence, and a peer whose
    /// bytes we are not reading is not silent.
    fn protocol_timers(&self) -> bool {
        self.protocol_live() && !self.paused && !self.held
    }

    /// Returns true if and only if the protocol is still called.
    fn protocol_live(&self) -> bool {
        !self.finished
            && matches!(
                self.phase,
                Phase::Open | Phase::PeerClosed | Phase::HalfClosed
            )
    }

    /// The idle deadline, in clock ms (`NEVER` if none applies).
    fn idle_deadline(&self) -> u64 {
        match self.cfg.idle {
            Some(d) if self.phase != Phase::Connecting => {
                self.last_io.saturating_add(clock::ms_of(d))
            }
            _ => NEVER,
        }
    }

    /// The backlog deadline, in clock ms (`NEVER` if none applies): output has stayed at
    /// or above the high-water mark since `backlog_since`.
    fn backlog_deadline(&self) -> u64 {
        match (self.cfg.backlog_timeout, &self.spill) {
            (Some(d), Some(s)) if self.paused => s.backlog_since.saturating_add(clock::ms_of(d)),
            _ => NEVER,
        }
    }

    /// The write-stall deadline, in clock ms (`NEVER` if none applies).
    fn stall_deadline(&self) -> u64 {
        match (self.cfg.write_stall, &self.spill) {
            // Nobody can take bytes before the connect: only its own deadline counts.
            _ if self.phase == Phase::Connecting => NEVER,
            (Some(d), Some(s)) if !s.out.is_empty() => {
                s.stall_since.saturating_add(clock::ms_of(d))
            }
            _ => NEVER,
        }
    }
}

/// What one protocol call returned and asked for.
struct Called<R> {
    result: R,
    /// It asked for `handle_writable` ([`Out::want_writable`]).
    streams: bool,
    action: Action,
    /// It wrote nothing.
    silent: bool,
}

/// Lends `cx`'s sink to one protocol call: the one place a protocol is called with an `Out`
/// (besides `open`, whose `Out` also carries the peer and the mailbox). A panic in the call
/// is caught here and comes back as the connection's close reason.
fn call<P: Protocol, R>(
    proto: &mut P,
    cx: &mut Context,
    f: impl FnOnce(&mut P, &mut Out<'_>) -> R,
) -> Result<Called<R>, CloseReason> {
    let before = cx.tx.len();
    let mut out = Out::new(&mut cx.tx, cx.now).with_context(cx.token, cx.deferred.as_mut());
    match catch_unwind(AssertUnwindSafe(|| f(proto, &mut out))) {
        Ok(result) => Ok(Called {
            result,
            streams: out.wants_writable(),
            action: out.action(),
            silent: out.len() == before,
        }),
        Err(payload) => Err(panicked(cx, "a protocol call", payload)),
    }
}

/// The close reason for a protocol call that panicked with `payload`, logged as an error:
/// the policy is that a panic ends its own connection and nothing else (see
/// [`CloseReason::Panicked`]).
fn panicked(cx: &Context, during: &str, payload: Box<dyn Any + Send>) -> CloseReason {
    let message = crate::error::panic_message(&*payload);
    log::error!(
        "conn {}: the protocol panicked in {during}: {message}; closing it",
        cx.id
    );
    CloseReason::Panicked(message)
}

impl Action {
    /// This action, or closing after the output if it asked for less.
    fn max_close(self) -> Action {
        match self {
            Action::Continue => Action::CloseAfterFlush,
            other => other,
        }
    }
}
