//! The reactor: one thread, one `mio::Poll`, every socket in one slab.
//!
//! # One turn of the loop ([`Reactor::run_once`])
//!
//! ```text
//!   1. timeout = 0 if a connection is waiting to be revisited or work queued from this
//!      thread is left over, else the time to the nearest timer or the shutdown's grace
//!      (min the caller's timeout), else none: sleep until an event
//!   2. poll(events, timeout)                 <- the only place the thread blocks
//!   3. for each event: decode the token ─┬─ Waker     -> run posted tasks
//!                                        ├─ Listener  -> accept until WouldBlock/limits
//!                                        ├─ Conn      -> finish a connect; flush if
//!                                        │               writable; read until
//!                                        │               WouldBlock or budget
//!                                        └─ Datagram  -> send queued; recv until
//!                                                        WouldBlock or budget
//!      (a token whose generation no longer matches its slot is stale: dropped)
//!   4. revisit sources whose budget ran out last turn (no new edge will come)
//!   5. fire expired timers (connection deadlines, accept back-off, user timers)
//!   6. run what was queued from this thread during the turn (actions protocols
//!      deferred, mailbox deliveries, posted tasks), again until nothing is left (at most
//!      16 rounds); then reap: deregister and close every connection that reached Closed
//!      this turn, and let paused listeners accept again into the freed room; while
//!      draining, stop once no connection is left or the grace has passed
//! ```
//!
//! After each visit to a connection its poller interest and its deadline are derived
//! again from its state; both are re-registered only when they changed.
//!
//! Closing happens at the end of the turn (step 6) rather than where it is decided, so a
//! slot is never freed and reused while events for it may still sit in this turn's batch.
//! The generation in each token guards the turns after that.
//!
//! # One connection's visit
//!
//! What a connection *means* (input, output, phases, limits, deadlines, the close reason)
//! lives in its [`Session`](crate::session::Session), the connection core every driver
//! drives. The reactor's side is only the non-blocking socket, what the poller said about
//! it, the interest registered for it, the per-turn budget, and the timer armed for it.
//!
//! A connection's visit (readiness, a revisit, or its timer) goes:
//!
//! ```text
//!   transmit: offer the socket what the session owes ──┐ (until WouldBlock)
//!             send the FIN it asks for                 │
//!             ask a streaming protocol for more        │ (while the budget lasts)
//!   read:     while readable and the session wants input, read one buffer, feed it,
//!             transmit again                           │ (until WouldBlock, the budget,
//!                                                        backpressure or the end)
//!   close:    once the session says it is over, queue the slot for reaping
//! ```
//!
//! Invariants:
//! - The budget is one per visit and a connection on the revisit list reads nothing (and
//!   streams nothing) until it is revisited, so no visit in a turn multiplies it.
//! - Registered interest is derived from the state, never set by hand: READABLE always,
//!   WRITABLE exactly while the session has output waiting (or a connect is in flight).
//! - A timer is armed only when the session's deadline moves *earlier* than the one
//!   armed, so activity that pushes an idle deadline later costs no timer operation.
//! - The slot is queued for reaping exactly once:
//!   [`Session::poll_close`](crate::session::Session::poll_close) returns the reason once.
//!
//! # Timers
//!
//! An *indexed* binary min-heap of `(deadline, sequence, what)`: every owner (a connection,
//! a listener in back-off, a user timer) has at most one entry, found through its slab key
//! in O(1), so arming again moves the entry (O(log n)) instead of adding one, and
//! cancelling removes it (O(log n)). The heap therefore holds exactly the live deadlines:
//! connection churn, or a deadline that moves back and forth with every message, cannot
//! grow it, and a closed connection's deadline never wakes the loop (its entry goes when
//! the connection is reaped). The sequence number keeps timers with equal deadlines in the
//! order they were armed.
//!
//! Why an indexed heap, not a timing wheel: the reactor's deadlines span milliseconds
//! (linger, a test's idle timeout) to minutes (keep-alive), exact order matters for tests
//! and user timers, and a connection re-arms only when its deadline moves *earlier* (see
//! above), so arming is rare next to messages. A heap gives exact order, O(log n)
//! arm/cancel/expire and no tick to tune; a hierarchical wheel would win only with very
//! many arm/cancel pairs per second. The index is a plain `Vec` by slab key (a slot holds
//! one owner at a time), cheaper than a hash map.
//!
//! The poll timeout of each turn is the time until the nearest deadline (or the shutdown's
//! grace); with no timer armed the loop sleeps in the poller until an event arrives.
//!
//! # Example
//!
//! ```no_run
//! use sockloop::proto::{Out, PeerError, Protocol};
//! use sockloop::reactor::Reactor;
//!
//! struct Echo;
//!
//! impl Protocol for Echo {
//!     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
//!         out.push(input);
//!         Ok(input.len())
//!     }
//! }
//!
//! let mut reactor = Reactor::new()?;
//! let addr = reactor.listen("127.0.0.1:0".parse().unwrap(), || Echo)?;
//! println!("echo on {addr}");
//! reactor.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod conn;
mod group;
mod handle;
mod interest;
mod stream;
mod timers;
mod token;
mod udp;

pub use crate::proto::Token;
pub use crate::session::Phase;
pub use conn::Ready;
pub use group::Group;
pub use handle::{CallError, Closed, Handle, Task};
pub use interest::Interest;

use crate::error::panic_message;
use crate::net::{Endpoint, SocketOptions};
use crate::proto::{CloseReason, DatagramProtocol, Protocol, Transmit};
use crate::session::{clock, Context, SessionConfig};
use conn::{Conn, Readiness};
use handle::{Command, Shared};
use mio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};
use mio::{Events, Poll};
use slab::Slab;
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stream::{ListenSocket, Stream};
use timers::{TimerKind, Timers};
use token::{Tag, Wake, MAX_KEY, WAKER};
use udp::{Datagram, DgramSocket};

/// How many times step 6 of a turn runs the work queued from the loop's own thread during
/// that step, before leaving the rest to the next turn (which then does not sleep).
const LOCAL_ROUNDS: usize = 16;

/// Per-connection timeouts, set for the whole reactor in [`Config::timeouts`] or per
/// listener with [`Reactor::listen_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Close a connection when no byte has moved either way for this long.
    pub idle: Option<Duration>,
    /// Close a connection whose output has been pending, with none of it taken by the
    /// peer, for this long.
    pub write_stall: Option<Duration>,
}

/// Tunables of a [`Reactor`]. `Config::default()` suits a server; tests shrink the limits.
#[derive(Clone, Debug)]
pub struct Config {
    /// Most connections open at once. At the limit the listeners stop accepting and new
    /// connections wait in the kernel's listen backlog until one closes. Default: the
    /// process's fd limit minus 32 (Redis's reserve), so accept never meets `EMFILE`
    /// through our own connections alone.
    pub max_connections: usize,
    /// Most bytes read from one connection in one turn before the others get theirs.
    /// Default 64 KiB (one read buffer).
    pub read_budget: usize,
    /// Size of the one read buffer the loop lends every connection. Default 64 KiB.
    pub read_buffer: usize,
    /// Most bytes of unsent output kept for one connection; above it the connection is
    /// closed. Default 1 MiB.
    pub output_limit: usize,
    /// Reading from a connection stops when its unsent output reaches this. Default
    /// 512 KiB.
    pub high_water: usize,
    /// ... and resumes when it drains to this. Default 128 KiB.
    pub low_water: usize,
    /// Most bytes of input a protocol may leave unconsumed (an unfinished message) before
    /// the connection is closed. Default 1 MiB.
    pub max_input: usize,
    /// A connection whose unsent output stays at or above `high_water` this long is
    /// dropped as a slow reader (`output_limit` is the hard limit). Default 60 s (Redis's
    /// soft client-output-buffer limit for push clients).
    pub backlog_timeout: Option<Duration>,
    /// Most connections accepted from one listener in one turn. Default 64.
    pub accept_batch: usize,
    /// How long a listener stops accepting after a resource error (`EMFILE`, ...), unless a
    /// connection closes sooner. Default 100 ms.
    pub accept_backoff: Duration,
    /// After we send FIN, how long to wait for the peer's before closing anyway. Default
    /// 2 s.
    pub linger: Duration,
    /// Most events taken from the poller per turn. Default 1024.
    pub events_capacity: usize,
    /// Idle and write-stall timeouts for connections (listeners may override). Default:
    /// no idle timeout, a 60 s write-stall timeout.
    pub timeouts: Timeouts,
    /// How long a graceful shutdown waits for connections to finish before closing the
    /// rest. Default 5 s.
    pub shutdown_grace: Duration,
    /// Most bytes of replies queued on one datagram socket while it would block; more are
    /// dropped. Each reply counts its bytes plus 64 (so empty ones are bounded too).
    /// Default 1 MiB.
    pub datagram_queue_limit: usize,
    /// Socket options for every socket this reactor makes: listeners (and what they
    /// accept), outgoing connections, datagram sockets. Default: the kernel's buffer
    /// sizes, no keepalive, `TCP_NODELAY` on. A listener given as a ready
    /// `std::net::TcpListener` ([`Reactor::listen_std`]) keeps the buffers it was made
    /// with; its connections still get NODELAY and keepalive.
    pub socket: SocketOptions,
}

impl Default for Config {
    fn default() -> Config {
        let max_connections = crate::net::fd_limit()
            .map(|n| n.saturating_sub(32).max(1))
            .unwrap_or(1024)
            .min(MAX_KEY as u64) as usize;
        Config {
            max_connections,
            read_budget: 64 * 1024,
            read_buffer: 64 * 1024,
            output_limit: 1024 * 1024,
            high_water: 512 * 1024,
            low_water: 128 * 1024,
            max_input: 1024 * 1024,
            backlog_timeout: Some(Duration::from_secs(60)),
            accept_batch: 64,
            accept_backoff: Duration::from_millis(100),
            linger: Duration::from_secs(2),
            events_capacity: 1024,
            // A peer that never reads would otherwise be held forever: nginx's
            // send_timeout is 60 s.
            timeouts: Timeouts {
                idle: None,
                write_stall: Some(Duration::from_secs(60)),
            },
            shutdown_grace: Duration::from_secs(5),
            datagram_queue_limit: 1024 * 1024,
            socket: SocketOptions::default(),
        }
    }
}

impl Config {
    /// Checks the tunables: each count and size that bounds a loop must be at least 1 (a
    /// zero accept batch would spin the loop), and the output marks must be in order.
    ///
    /// # Errors
    ///
    /// `InvalidInput`, naming the setting, for the first one that is nonsense.
    pub fn validate(&self) -> io::Result<()> {
        for (name, value) in [
            ("max_connections", self.max_connections),
            ("read_budget", self.read_budget),
            ("read_buffer", self.read_buffer),
            ("accept_batch", self.accept_batch),
            ("events_capacity", self.events_capacity),
        ] {
            if value == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("Config::{name} must be at least 1"),
                ));
            }
        }
        self.session_config(&self.timeouts).validate()
    }

    /// The connection-core settings ([`SessionConfig`]) these tunables give a connection
    /// with `timeouts` (the reactor's own, or a listener's).
    pub fn session_config(&self, timeouts: &Timeouts) -> SessionConfig {
        SessionConfig {
            max_input: self.max_input,
            output_limit: self.output_limit,
            high_water: self.high_water,
            low_water: self.low_water,
            linger: self.linger,
            idle: timeouts.idle,
            write_stall: timeouts.write_stall,
            backlog_timeout: self.backlog_timeout,
        }
    }
}

/// Counters an embedder can read at any time (see [`Reactor::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed (for any reason).
    pub closed: u64,
    /// Connections open now.
    pub open: u64,
    /// Bytes read from connections.
    pub bytes_in: u64,
    /// Bytes written to connections.
    pub bytes_out: u64,
    /// Calls to the poller.
    pub polls: u64,
    /// Events the poller returned.
    pub events: u64,
    /// Events dropped because their token named a freed or reused slot.
    pub stale_events: u64,
    /// Wake-ups from the cross-thread handle.
    pub wakeups: u64,
    /// Tasks run from the handle.
    pub tasks: u64,
    /// Timers that fired.
    pub timers_fired: u64,
    /// `accept` failures (resource exhaustion and others).
    pub accept_errors: u64,
    /// Times a listener stopped at the connection limit.
    pub accept_limit_hits: u64,
    /// Connections closed by an I/O error (reset, broken pipe, ...).
    pub io_errors: u64,
    /// Times a connection spent its read budget and yielded to the others.
    pub budget_yields: u64,
    /// Times reading was paused because unsent output reached the high-water mark.
    pub read_pauses: u64,
    /// Times a connection's reading was held because one it delivered to (through a
    /// mailbox) was over its high-water mark: backpressure reaching a publisher.
    pub holds: u64,
    /// Connections dropped as slow readers: output over `output_limit`, or at or above
    /// `high_water` for `backlog_timeout`.
    pub slow_readers: u64,
    /// Panics caught: in a protocol (its connection closed with
    /// [`CloseReason::Panicked`]), a datagram protocol, a task, a timer or watch callback,
    /// or a listener's factory. Each ended only what panicked.
    pub panics: u64,
    /// The largest unsent output held for any one connection so far, in bytes.
    pub peak_output_buffered: usize,
    /// Outgoing connections established.
    pub connected: u64,
    /// Outgoing connections that failed or timed out.
    pub connect_failures: u64,
    /// Connections closed by their idle or write-stall timeout.
    pub timeouts: u64,
    /// Datagrams received and handed to a protocol.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams dropped on arrival because they were larger than the read buffer.
    pub datagrams_truncated: u64,
    /// Replies dropped because a datagram socket's send queue was full.
    pub datagrams_dropped: u64,
    /// Datagram send or receive errors (each concerns one peer; the socket stays open).
    pub datagram_errors: u64,
}

/// State the connections need while the slab is borrowed: everything but the slab.
pub(crate) struct Core {
    cfg: Config,
    stats: Stats,
    timers: Timers,
    /// The one read buffer, lent to whichever connection is being read.
    read_buf: Box<[u8]>,
    /// The one call context (time, output sink), lent to whichever session is being
    /// called: a connection that has nothing left to send owns no output memory.
    cx: Context,
    /// The limits and timeouts of outgoing connections (listeners have their own).
    session_cfg: Arc<SessionConfig>,
    /// Connections to read again next turn (their budget ran out).
    revisit: Vec<Tag>,
    /// Slots whose connection reached `Closed` this turn.
    reap: Vec<Tag>,
    /// For each connection over its high-water mark that others delivered to: those
    /// others, whose reading is held until it drains (see `Reactor::hold`).
    holds: std::collections::HashMap<Tag, Vec<Tag>>,
    /// For each open connection that handed out a mailbox: the flag its mailboxes check,
    /// set when it closes.
    mailboxes: std::collections::HashMap<Tag, Arc<std::sync::atomic::AtomicBool>>,
    /// Connections in `holds` that drained or closed: their waiters go free.
    released: Vec<Tag>,
    /// Reusable buffer for the datagrams a protocol sends in reply.
    transmits: Vec<Transmit>,
    /// The handle's queue, for the mailboxes handed to protocols.
    shared: Arc<Shared>,
    /// The time of this turn, read once after the poll returns.
    now: Instant,
}

impl Core {
    /// The call context, set to this turn's time and to the connection `tag` names.
    fn cx(&mut self, tag: Tag) -> &mut Context {
        self.cx_and_input(tag, 0).0
    }

    /// [`Core::cx`], with the first `n` bytes of the read buffer lent beside it (for
    /// `Session::feed`).
    fn cx_and_input(&mut self, tag: Tag, n: usize) -> (&mut Context, &[u8]) {
        self.cx.now = self.now;
        self.cx.id = tag.key as u64;
        self.cx.token = tag.id();
        (&mut self.cx, &self.read_buf[..n])
    }

    /// The call context as it is (already set to the connection being visited), with the
    /// first `n` bytes of the read buffer lent beside it.
    fn input(&mut self, n: usize) -> (&mut Context, &[u8]) {
        (&mut self.cx, &self.read_buf[..n])
    }
}

struct Listener {
    sock: ListenSocket,
    addr: Endpoint,
    factory: Box<dyn FnMut() -> Box<dyn Protocol>>,
    accept: AcceptState,
    /// The limits and timeouts of the connections it accepts, shared by all of them.
    session_cfg: Arc<SessionConfig>,
    /// Rate-limits its accept-failure warnings.
    warned: crate::net::Throttle,
}

/// Whether a listener may have connections waiting, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AcceptState {
    /// The accept queue was drained to `WouldBlock`: wait for the next readable edge.
    Idle,
    /// Connections may be waiting: an edge arrived, or we are resuming.
    Ready,
    /// The accept batch was spent with connections possibly still queued; the listener
    /// is on the revisit list and accepts again next turn, after the others.
    Yielded,
    /// At `max_connections`: resume when a connection closes.
    Full,
    /// `accept` failed for lack of resources: resume at the back-off deadline or when a
    /// connection closes, whichever comes first.
    Backoff,
}

/// Everything registered. Connections are the many; the rest are boxed so that a slot is
/// only as large as a connection (an idle connection's whole cost is its slot).
enum Entry {
    Listener(Box<Listener>),
    Conn(Conn),
    Datagram(Box<Datagram>),
    Timer(Box<UserTimer>),
    Watch(Box<Watch>),
}

type WatchCallback = Box<dyn FnMut(&mut Reactor, Token, Ready)>;

/// An fd the embedder watches (`Reactor::watch_fd`), with its callback.
struct Watch {
    fd: std::os::fd::RawFd,
    /// Taken out while it runs, so the callback may use the reactor (even unwatch).
    callback: Option<WatchCallback>,
}

/// Identifies a timer set with [`Reactor::set_timer`] or [`Reactor::set_interval`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(Tag);

type TimerCallback = Box<dyn FnMut(&mut Reactor, TimerId)>;

struct UserTimer {
    due: Instant,
    /// `Some` for a repeating timer.
    every: Option<Duration>,
    /// Taken out while it runs, so the callback may use the reactor (even cancel itself).
    callback: Option<TimerCallback>,
}

struct Slot {
    gen: u32,
    entry: Entry,
}

impl std::ops::AddAssign<&Stats> for Stats {
    /// Sums two reactors' counters (the largest `peak_output_buffered` is kept): what a
    /// [`Group`] reports for all its loops.
    fn add_assign(&mut self, other: &Stats) {
        self.accepted += other.accepted;
        self.closed += other.closed;
        self.open += other.open;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.polls += other.polls;
        self.events += other.events;
        self.stale_events += other.stale_events;
        self.wakeups += other.wakeups;
        self.tasks += other.tasks;
        self.timers_fired += other.timers_fired;
        self.accept_errors += other.accept_errors;
        self.accept_limit_hits += other.accept_limit_hits;
        self.io_errors += other.io_errors;
        self.budget_yields += other.budget_yields;
        self.read_pauses += other.read_pauses;
        self.holds += other.holds;
        self.slow_readers += other.slow_readers;
        self.panics += other.panics;
        self.connected += other.connected;
        self.connect_failures += other.connect_failures;
        self.timeouts += other.timeouts;
        self.datagrams_in += other.datagrams_in;
        self.datagrams_out += other.datagrams_out;
        self.datagrams_truncated += other.datagrams_truncated;
        self.datagrams_dropped += other.datagrams_dropped;
        self.datagram_errors += other.datagram_errors;
        self.peak_output_buffered = self.peak_output_buffered.max(other.peak_output_buffered);
    }
}

/// A single-threaded event loop serving stream protocols over non-blocking sockets.
///
/// # Panics
///
/// The policy: **a panic ends only what panicked.** A panic in a protocol's call (any
/// method of [`Protocol`], its factory, a [`DatagramProtocol`]) or in a posted task, a
/// timer or watch callback, or an action a protocol deferred is caught where the loop
/// made the call and logged; it is counted in [`Stats::panics`]. A connection whose
/// protocol panicked is closed with [`CloseReason::Panicked`] (its `handle_close` is still
/// called, once); a panicking datagram protocol loses that datagram, a panicking timer or
/// watch is retired. Every other connection, task and timer goes on, and the reactor stays
/// usable: [`Reactor::run_once`] restores its own state even after a panic it did not
/// catch. Build with `panic = "abort"` to make any panic fatal instead.
///
/// The close contract: `handle_close` is called exactly once for every connection
/// that was opened, whatever ends it: the peer, the protocol, a limit, a timeout, a
/// panic, [`Reactor::stop_now`], or dropping the reactor (which stops it: the open
/// connections are told [`CloseReason::Shutdown`]). Once stopped, the reactor is done:
/// its [`Handle`] refuses work and drops what was queued, so no task runs and no
/// [`Handle::call`] waits after the stop.
///
/// ```
/// use sockloop::proto::{Out, PeerError, Protocol};
/// use sockloop::reactor::Reactor;
/// use std::io::{Read, Write};
///
/// struct Fragile;
///
/// impl Protocol for Fragile {
///     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
///         assert!(input != b"boom", "a bug");
///         out.push(input);
///         Ok(input.len())
///     }
/// }
///
/// let mut reactor = Reactor::new()?;
/// let addr = reactor.listen("127.0.0.1:0".parse().unwrap(), || Fragile)?;
/// let (mut bad, mut good) = (std::net::TcpStream::connect(addr)?, std::net::TcpStream::connect(addr)?);
/// bad.write_all(b"boom")?;
/// while reactor.stats().panics == 0 {
///     reactor.run_once(Some(std::time::Duration::from_millis(10)))?;
/// }
/// good.write_all(b"fine")?;
/// let mut echo = [0u8; 4];
/// good.set_nonblocking(true)?;
/// while good.read(&mut echo).is_err() {
///     reactor.run_once(Some(std::time::Duration::from_millis(10)))?;
/// }
/// assert_eq!(&echo, b"fine");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Reactor {
    poll: Poll,
    events: Events,
    slots: Slab<Slot>,
    next_gen: u32,
    listeners: Vec<Tag>,
    core: Core,
    shared: Arc<Shared>,
    commands: Vec<Command>,
    revisiting: Vec<Tag>,
    state: RunState,
    /// Reused list of the timers that fire this turn.
    due_timers: Vec<TimerKind>,
}

/// Where a [`Reactor`] is in its life ([`Reactor::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Serving.
    Running,
    /// A graceful shutdown is under way ([`Reactor::shutdown`]): listeners and datagram
    /// sockets are closed, connections are finishing; at `until` the rest are closed.
    Draining {
        /// When the grace period ends.
        until: Instant,
    },
    /// Stopped, for good: everything is closed, [`Reactor::run`] returns at once, and
    /// the handle refuses work.
    Stopped,
}

/// Whether the loop is serving, winding down, or done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Running,
    /// Graceful shutdown: listeners closed, connections finishing until the deadline.
    Draining {
        deadline: Instant,
    },
    Stopped,
}

impl Reactor {
    /// A reactor with the default [`Config`].
    ///
    /// # Errors
    ///
    /// Any error the OS gives creating the poller or its waker (out of fds, say).
    pub fn new() -> io::Result<Reactor> {
        Reactor::with_config(Config::default())
    }

    /// A reactor with the given tunables.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the tunables are nonsense ([`Config::validate`]); any error the
    /// OS gives creating the poller or its waker.
    pub fn with_config(cfg: Config) -> io::Result<Reactor> {
        cfg.validate()?;
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(Shared::new(waker));
        // A reactor is not `Send` (its protocols need not be): the thread that builds it
        // is the only one that can ever run it, so it is recorded once, here, rather than
        // (under a mutex) on every turn.
        shared.set_loop_thread();
        Ok(Reactor {
            events: Events::with_capacity(cfg.events_capacity.max(1)),
            poll,
            // Sized for the connection limit up front: the pages are only reserved until
            // slots are used, so this costs no memory, and the table never reallocates by
            // doubling (which would leave up to half of it as dead weight per connection).
            slots: Slab::with_capacity(cfg.max_connections.saturating_add(16).min(1 << 16)),
            next_gen: 0,
            listeners: Vec::new(),
            core: Core {
                read_buf: vec![0; cfg.read_buffer.max(1)].into_boxed_slice(),
                cx: {
                    let mut cx = Context::new(Instant::now());
                    // The reactor runs what protocols defer (`Out::defer`).
                    cx.deferred = Some(Vec::new());
                    cx
                },
                session_cfg: Arc::new(cfg.session_config(&cfg.timeouts)),
                cfg,
                stats: Stats::default(),
                timers: Timers::default(),
                revisit: Vec::new(),
                reap: Vec::new(),
                holds: std::collections::HashMap::new(),
                mailboxes: std::collections::HashMap::new(),
                released: Vec::new(),
                transmits: Vec::new(),
                shared: Arc::clone(&shared),
                now: Instant::now(),
            },
            shared,
            commands: Vec::new(),
            revisiting: Vec::new(),
            state: RunState::Running,
            due_timers: Vec::new(),
        })
    }

    /// Binds a TCP listener on `addr` and serves every connection it accepts with a
    /// protocol made by `factory`. Returns the bound address (useful with port 0).
    ///
    /// # Errors
    ///
    /// Any error binding or registering the socket (`AddrInUse`, `PermissionDenied`, ...).
    pub fn listen<P, F>(&mut self, addr: SocketAddr, factory: F) -> io::Result<SocketAddr>
    where
        P: Protocol + 'static,
        F: FnMut() -> P + 'static,
    {
        let listener = crate::net::bind_tcp_with(addr, &self.core.cfg.socket)?;
        self.listen_std(listener, factory)
    }

    /// Like [`Reactor::listen`], with a listener the caller has bound and configured.
    ///
    /// # Errors
    ///
    /// Any error making the listener non-blocking, reading its address or registering it.
    pub fn listen_std<P, F>(
        &mut self,
        listener: std::net::TcpListener,
        factory: F,
    ) -> io::Result<SocketAddr>
    where
        P: Protocol + 'static,
        F: FnMut() -> P + 'static,
    {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let sock = ListenSocket::Tcp(TcpListener::from_std(listener));
        let timeouts = self.core.cfg.timeouts.clone();
        self.add_listener(sock, Endpoint::Inet(addr), timeouts, boxing(factory))?;
        Ok(addr)
    }

    /// Listens on a TCP address or a Unix socket path, with its own connection timeouts.
    /// A stale Unix socket file (left by a server that died) is removed; one a live server
    /// still uses is an error. Returns the bound endpoint.
    ///
    /// # Errors
    ///
    /// Any error binding or registering the socket; `AddrInUse` for a Unix path a live
    /// server answers at.
    pub fn listen_with<P, F>(
        &mut self,
        at: &Endpoint,
        timeouts: Timeouts,
        factory: F,
    ) -> io::Result<Endpoint>
    where
        P: Protocol + 'static,
        F: FnMut() -> P + 'static,
    {
        self.listen_boxed(at, timeouts, boxing(factory))
    }

    /// [`Reactor::listen_with`] for a factory that already returns boxed protocols (of
    /// differing types, say), which are stored as they are rather than boxed again.
    ///
    /// # Errors
    ///
    /// As [`Reactor::listen_with`].
    pub fn listen_boxed<F>(
        &mut self,
        at: &Endpoint,
        timeouts: Timeouts,
        factory: F,
    ) -> io::Result<Endpoint>
    where
        F: FnMut() -> Box<dyn Protocol> + 'static,
    {
        let (sock, bound) = match at {
            Endpoint::Inet(addr) => {
                let l = crate::net::bind_tcp_with(*addr, &self.core.cfg.socket)?;
                l.set_nonblocking(true)?;
                let bound = l.local_addr()?;
                (
                    ListenSocket::Tcp(TcpListener::from_std(l)),
                    Endpoint::Inet(bound),
                )
            }
            Endpoint::Unix(path) => {
                crate::net::clear_stale_unix_socket(path)?;
                let l = UnixListener::bind(path)?;
                self.core
                    .cfg
                    .socket
                    .apply_buffers(&socket2::SockRef::from(&l))?;
                (ListenSocket::Unix(l, path.clone()), at.clone())
            }
        };
        self.add_listener(sock, bound.clone(), timeouts, factory)?;
        Ok(bound)
    }

    fn add_listener<F>(
        &mut self,
        mut sock: ListenSocket,
        addr: Endpoint,
        timeouts: Timeouts,
        factory: F,
    ) -> io::Result<()>
    where
        F: FnMut() -> Box<dyn Protocol> + 'static,
    {
        if self.state != RunState::Running {
            return Err(io::Error::other("the reactor is shutting down"));
        }
        let tag = self.next_tag()?;
        self.poll
            .registry()
            .register(&mut sock, tag.token(), mio::Interest::READABLE)?;
        log::info!("listening on {addr}");
        log::trace!(
            "listener {addr}: slot {} gen {} (mio token {} = gen << 32 | slot)",
            tag.key,
            tag.gen,
            tag.token().0
        );
        self.slots.insert(Slot {
            gen: tag.gen,
            entry: Entry::Listener(Box::new(Listener {
                sock,
                addr,
                factory: Box::new(factory),
                accept: AcceptState::Idle,
                session_cfg: Arc::new(self.core.cfg.session_config(&timeouts)),
                warned: crate::net::Throttle::default(),
            })),
        });
        self.listeners.push(tag);
        Ok(())
    }

    /// Opens an outgoing stream connection to `to` (TCP or Unix), driven by `proto`.
    ///
    /// A TCP connect is non-blocking: this returns at once with the connection in
    /// [`Phase::Connecting`] (the SYN is sent). It becomes `Open` when the poller reports
    /// WRITABLE and `SO_ERROR` is clear, at which point `proto.handle_open` runs; if the
    /// connect fails or `timeout` passes first, `proto.handle_close` is told
    /// [`CloseReason::ConnectFailed`] (with the real error, such as
    /// `ConnectionRefused`) or [`CloseReason::ConnectTimeout`]. An error the OS reports
    /// straight away (a Unix path with no listener, say) is returned here instead.
    ///
    /// # Errors
    ///
    /// An error starting the connect (no route, out of fds, a Unix path nobody listens
    /// at); a connect that fails later closes the connection with
    /// [`CloseReason::ConnectFailed`] instead.
    pub fn connect<P: Protocol + 'static>(
        &mut self,
        to: &Endpoint,
        timeout: Option<Duration>,
        proto: P,
    ) -> io::Result<Token> {
        let stream = match to {
            Endpoint::Inet(addr) => Stream::Tcp(self.dial_tcp(*addr)?),
            Endpoint::Unix(path) => Stream::Unix(mio::net::UnixStream::connect(path)?),
        };
        log::debug!("connecting to {to}: SYN sent, waiting for WRITABLE");
        let cfg = Arc::clone(&self.core.session_cfg);
        let conn = Conn::connecting(stream, Box::new(proto), cfg, timeout);
        let tag = self.add_conn(conn, to)?;
        self.after_conn_visit(tag);
        Ok(tag.id())
    }

    /// A non-blocking TCP connect to `addr` with the configured socket options set first
    /// (buffer sizes must be set before the SYN to shape the window).
    fn dial_tcp(&self, addr: SocketAddr) -> io::Result<mio::net::TcpStream> {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        self.core.cfg.socket.apply_tcp(&sock, true)?;
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(mio::net::TcpStream::from_std(sock.into()))
    }

    /// Stops reading from the connection `token` names until [`Reactor::resume_reading`]:
    /// its input (and its FIN) waits in the kernel, whose receive window then pushes back
    /// on the peer. Output still flows and its timers still run. Returns false if no open
    /// connection has that token, or its reading is paused already.
    pub fn pause_reading(&mut self, token: Token) -> bool {
        match live(&mut self.slots, Tag::from_id(token)) {
            Some(Entry::Conn(c)) => c.pause_reading(),
            _ => false,
        }
    }

    /// Reads again from a connection [`Reactor::pause_reading`] paused, at once: what
    /// arrived meanwhile is read now (no new readiness edge would announce it). Returns
    /// false if no open connection has that token, or it was not paused.
    pub fn resume_reading(&mut self, token: Token) -> bool {
        let tag = Tag::from_id(token);
        self.core.now = Instant::now();
        let resumed = match live(&mut self.slots, tag) {
            Some(Entry::Conn(c)) => {
                self.shared.set_current(Some(tag));
                let resumed = c.resume_reading(tag, &mut self.core);
                self.shared.set_current(None);
                resumed
            }
            _ => false,
        };
        if resumed {
            self.after_conn_visit(tag);
            self.reap();
        }
        resumed
    }

    /// Sends `bytes` on the connection `token` names, after any output already queued,
    /// from outside its protocol (a posted task, a timer, stdin in an interactive client).
    /// Errors with `NotFound` if the connection is gone or no longer sends.
    ///
    /// # Errors
    ///
    /// `NotConnected` if no open connection has that token (it closed, or never was).
    pub fn send(&mut self, token: Token, bytes: &[u8]) -> io::Result<()> {
        let tag = Tag::from_id(token);
        self.core.now = Instant::now();
        let sent = match live(&mut self.slots, tag) {
            Some(Entry::Conn(c)) => c.send_external(bytes, tag, &mut self.core),
            _ => false,
        };
        self.after_conn_visit(tag);
        self.reap();
        if sent {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such open connection",
            ))
        }
    }

    /// Half-closes the connection `token` names: once its queued output is sent our FIN
    /// goes out (`shutdown(Write)`), and the peer's replies keep reaching the protocol
    /// until its own FIN. What a client does at the end of its input. Returns false if
    /// there is no such open connection.
    pub fn shutdown_write(&mut self, token: Token) -> bool {
        let tag = Tag::from_id(token);
        self.core.now = Instant::now();
        let done = match live(&mut self.slots, tag) {
            Some(Entry::Conn(c)) => c.shutdown_write_external(tag, &mut self.core),
            _ => false,
        };
        self.after_conn_visit(tag);
        self.reap();
        done
    }

    /// Closes the connection `token` names once its queued output is sent (an orderly
    /// close: our FIN, then the peer's). Returns false if there is no such connection.
    pub fn close(&mut self, token: Token) -> bool {
        let tag = Tag::from_id(token);
        self.core.now = Instant::now();
        let found = match live(&mut self.slots, tag) {
            Some(Entry::Conn(c)) => {
                c.close_external(tag, &mut self.core);
                true
            }
            _ => false,
        };
        self.after_conn_visit(tag);
        self.reap();
        found
    }

    /// Binds a datagram socket (UDP, or Unix datagram at a path) served by `proto`.
    /// Returns its token and the bound endpoint (with the real port for port 0).
    ///
    /// # Errors
    ///
    /// Any error binding or registering the socket.
    pub fn bind_datagram<P: DatagramProtocol + 'static>(
        &mut self,
        at: &Endpoint,
        proto: P,
    ) -> io::Result<(Token, Endpoint)> {
        let (sock, bound) = match at {
            Endpoint::Inet(addr) => {
                let s = UdpSocket::bind(*addr)?;
                self.core
                    .cfg
                    .socket
                    .apply_buffers(&socket2::SockRef::from(&s))?;
                let bound = Endpoint::Inet(s.local_addr()?);
                (DgramSocket::Udp(s), bound)
            }
            Endpoint::Unix(path) => {
                crate::net::clear_stale_unix_socket(path)?;
                let s = UnixDatagram::bind(path)?;
                self.core
                    .cfg
                    .socket
                    .apply_buffers(&socket2::SockRef::from(&s))?;
                (DgramSocket::Unix(s, Some(path.clone())), at.clone())
            }
        };
        let tag = self.add_datagram(sock, bound.clone(), None, Box::new(proto))?;
        log::info!("bound datagram socket {bound}");
        Ok((tag.id(), bound))
    }

    /// A connected datagram socket: bound at `local` (port 0, or a path for Unix; `None`
    /// for an unnamed Unix socket, which cannot receive replies from unconnected peers),
    /// sending to and receiving from `remote` only. Returns its token and local endpoint.
    ///
    /// # Errors
    ///
    /// Any error binding, connecting or registering the socket.
    pub fn connect_datagram<P: DatagramProtocol + 'static>(
        &mut self,
        local: Option<&Endpoint>,
        remote: &Endpoint,
        proto: P,
    ) -> io::Result<(Token, Endpoint)> {
        let (sock, bound) = match remote {
            Endpoint::Inet(addr) => {
                let any: SocketAddr = match (local, addr) {
                    (Some(Endpoint::Inet(l)), _) => *l,
                    (_, SocketAddr::V4(_)) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                    (_, SocketAddr::V6(_)) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let s = UdpSocket::bind(any)?;
                self.core
                    .cfg
                    .socket
                    .apply_buffers(&socket2::SockRef::from(&s))?;
                s.connect(*addr)?;
                let bound = Endpoint::Inet(s.local_addr()?);
                (DgramSocket::Udp(s), bound)
            }
            Endpoint::Unix(path) => {
                let (s, owned) = match local {
                    Some(Endpoint::Unix(lp)) => {
                        crate::net::clear_stale_unix_socket(lp)?;
                        (UnixDatagram::bind(lp)?, Some(lp.clone()))
                    }
                    _ => (UnixDatagram::unbound()?, None),
                };
                s.connect(path)?;
                let bound = Endpoint::Unix(owned.clone().unwrap_or_default());
                (DgramSocket::Unix(s, owned), bound)
            }
        };
        let tag = self.add_datagram(sock, bound.clone(), Some(remote.clone()), Box::new(proto))?;
        Ok((tag.id(), bound))
    }

    /// Sends a datagram from the datagram socket `token` names (queued if the socket would
    /// block). For a connected socket `to` is ignored.
    ///
    /// # Errors
    ///
    /// `NotFound` if no datagram socket has that token.
    pub fn send_datagram(&mut self, token: Token, to: &Endpoint, bytes: &[u8]) -> io::Result<()> {
        let tag = Tag::from_id(token);
        let Some(Entry::Datagram(d)) = live(&mut self.slots, tag) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such datagram socket",
            ));
        };
        d.send(
            Transmit {
                to: to.clone(),
                bytes: bytes.to_vec(),
            },
            &mut self.core,
        );
        d.update_interest(self.poll.registry(), tag)
    }

    fn add_datagram(
        &mut self,
        mut sock: DgramSocket,
        local: Endpoint,
        connected: Option<Endpoint>,
        proto: Box<dyn DatagramProtocol>,
    ) -> io::Result<Tag> {
        let tag = self.next_tag()?;
        self.poll
            .registry()
            .register(&mut sock, tag.token(), mio::Interest::READABLE)?;
        self.slots.insert(Slot {
            gen: tag.gen,
            entry: Entry::Datagram(Box::new(Datagram::new(sock, local, connected, proto))),
        });
        Ok(tag)
    }

    /// Closes the datagram socket `token` names. Returns false if there was none.
    pub fn close_datagram(&mut self, token: Token) -> bool {
        let tag = Tag::from_id(token);
        if !matches!(live(&mut self.slots, tag), Some(Entry::Datagram(_))) {
            return false;
        }
        if let Entry::Datagram(mut d) = self.slots.remove(tag.key).entry {
            let _ = self.poll.registry().deregister(d.socket_mut());
            log::debug!("datagram socket {} closed", d.local());
        }
        true
    }

    /// Watches a file descriptor the caller owns (a pipe, a terminal, another library's
    /// socket): `callback` runs on the loop's thread with its readiness. Like every mio
    /// source it is edge-triggered: the callback must read (or write) until `WouldBlock`,
    /// so the fd should be non-blocking. Regular files cannot be watched (the poller
    /// refuses them with `EPERM`). The caller keeps the fd open until [`Reactor::unwatch`].
    ///
    /// # Errors
    ///
    /// Any error registering the fd (`EPERM` for a regular file, `EBADF` for a closed one).
    pub fn watch_fd<F>(
        &mut self,
        fd: std::os::fd::RawFd,
        interest: Interest,
        callback: F,
    ) -> io::Result<Token>
    where
        F: FnMut(&mut Reactor, Token, Ready) + 'static,
    {
        let tag = self.next_tag()?;
        self.poll.registry().register(
            &mut mio::unix::SourceFd(&fd),
            tag.token(),
            interest.into(),
        )?;
        self.slots.insert(Slot {
            gen: tag.gen,
            entry: Entry::Watch(Box::new(Watch {
                fd,
                callback: Some(Box::new(callback)),
            })),
        });
        Ok(tag.id())
    }

    /// Stops watching the fd `token` names (it is not closed). Returns false if there
    /// was none.
    pub fn unwatch(&mut self, token: Token) -> bool {
        let tag = Tag::from_id(token);
        if !matches!(live(&mut self.slots, tag), Some(Entry::Watch(_))) {
            return false;
        }
        if let Entry::Watch(w) = self.slots.remove(tag.key).entry {
            let _ = self
                .poll
                .registry()
                .deregister(&mut mio::unix::SourceFd(&w.fd));
        }
        true
    }

    /// Calls `callback` once, `after` from now, on the loop's thread.
    pub fn set_timer<F>(&mut self, after: Duration, callback: F) -> TimerId
    where
        F: FnOnce(&mut Reactor) + 'static,
    {
        let mut once = Some(callback);
        self.add_timer(after, None, move |r, _| {
            if let Some(f) = once.take() {
                f(r)
            }
        })
    }

    /// Calls `callback` every `every`, first after `every`, until [`Reactor::cancel_timer`].
    /// A late turn does not make it fire twice in a row: the next firing is scheduled from
    /// the time it actually ran.
    pub fn set_interval<F>(&mut self, every: Duration, callback: F) -> TimerId
    where
        F: FnMut(&mut Reactor, TimerId) + 'static,
    {
        self.add_timer(every, Some(every.max(Duration::from_micros(1))), callback)
    }

    /// Cancels a timer. Returns true if and only if it was still armed. Cancelling costs
    /// O(log n): its heap entry is removed.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        if matches!(live(&mut self.slots, id.0), Some(Entry::Timer(_))) {
            self.slots.remove(id.0.key);
            self.core.timers.cancel(id.0);
            true
        } else {
            false
        }
    }

    fn add_timer<F>(&mut self, after: Duration, every: Option<Duration>, callback: F) -> TimerId
    where
        F: FnMut(&mut Reactor, TimerId) + 'static,
    {
        let tag = match self.next_tag() {
            Ok(tag) => tag,
            // Only when 2^32 slots are in use; nothing sensible remains to do.
            Err(e) => panic!("cannot arm a timer: {e}"),
        };
        let due = Instant::now() + after;
        self.slots.insert(Slot {
            gen: tag.gen,
            entry: Entry::Timer(Box::new(UserTimer {
                due,
                every,
                callback: Some(Box::new(callback)),
            })),
        });
        self.core.timers.arm(due, TimerKind::User(tag));
        TimerId(tag)
    }

    fn fire_user_timer(&mut self, tag: Tag) {
        let now = self.core.now;
        let callback = match live(&mut self.slots, tag) {
            Some(Entry::Timer(t)) if t.due <= now => t.callback.take(),
            _ => return,
        };
        let Some(mut callback) = callback else { return };
        self.core.stats.timers_fired += 1;
        let fired = catch_unwind(AssertUnwindSafe(|| callback(self, TimerId(tag))));
        if let Err(payload) = &fired {
            self.caught("a timer callback", &**payload);
        }
        // The callback may have cancelled this timer; if not, re-arm or retire it (a
        // callback that panicked is retired: it would likely panic again).
        if let Some(Entry::Timer(t)) = live(&mut self.slots, tag) {
            match t.every {
                Some(every) if fired.is_ok() => {
                    t.due = self.core.now.max(Instant::now()) + every;
                    t.callback = Some(callback);
                    let due = t.due;
                    self.core.timers.arm(due, TimerKind::User(tag));
                }
                _ => {
                    self.slots.remove(tag.key);
                }
            }
        }
    }

    /// Runs the actions protocols deferred ([`Out::defer`](crate::proto::Out::defer)),
    /// in the order they were asked for; returns true if there were any.
    fn run_deferred(&mut self) -> bool {
        let Some(queue) = self.core.cx.deferred.as_mut() else {
            return false;
        };
        if queue.is_empty() {
            return false;
        }
        let batch = std::mem::take(queue);
        for action in batch {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| action(self))) {
                self.caught("a deferred action", &*payload);
            }
        }
        true
    }

    /// Logs and counts a panic caught at one of the loop's boundaries (a task, a timer or
    /// watch callback, a datagram protocol, a listener's factory); the loop goes on.
    fn caught(&mut self, what: &str, payload: &(dyn std::any::Any + Send)) {
        self.core.stats.panics += 1;
        log::error!(
            "{what} panicked: {}; the loop goes on",
            panic_message(payload)
        );
    }

    /// Builds a reactor with `cfg` on a thread of its own, lets `setup` add its sockets
    /// there, and runs it ([`Reactor::run`]) until it stops. Returns once `setup` has
    /// returned, with the reactor's [`Handle`] and the thread's join handle (whose result
    /// is `run`'s). A reactor is not `Send` (its protocols need not be), so it is built
    /// where it runs; this is the shape every multi-threaded embedder writes.
    ///
    /// ```
    /// use sockloop::reactor::{Config, Reactor};
    ///
    /// let (handle, thread) = Reactor::spawn(Config::default(), |reactor| {
    ///     reactor.set_timer(std::time::Duration::from_millis(1), |r| r.stop_now());
    ///     Ok(())
    /// })?;
    /// thread.join().expect("the reactor thread")?;
    /// assert!(handle.post(|_| {}).is_err(), "stopped for good");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The error of [`Reactor::with_config`] or of `setup` (the thread has ended then),
    /// or of spawning the thread.
    ///
    /// # Panics
    ///
    /// If `setup` panics, so does this, with its panic.
    pub fn spawn<F>(
        cfg: Config,
        setup: F,
    ) -> io::Result<(Handle, std::thread::JoinHandle<io::Result<()>>)>
    where
        F: FnOnce(&mut Reactor) -> io::Result<()> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("sockloop-reactor".into())
            .spawn(move || {
                let mut reactor = match Reactor::with_config(cfg).and_then(|mut r| {
                    setup(&mut r)?;
                    Ok(r)
                }) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = tx.send(Ok(reactor.handle()));
                reactor.run()
            })?;
        match rx.recv() {
            Ok(Ok(handle)) => Ok((handle, thread)),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            // `setup` panicked: the thread ended without a word.
            Err(_) => match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(_) => Err(io::Error::other(
                    "the reactor thread ended before it was ready",
                )),
            },
        }
    }

    /// A handle other threads use to post work and request shutdown.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// How many deadlines the loop has armed: at most one per connection, listener in
    /// back-off and user timer (the heap holds only live ones).
    pub fn armed_timers(&self) -> usize {
        self.core.timers.len()
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// The tunables this reactor runs with.
    pub fn config(&self) -> &Config {
        &self.core.cfg
    }

    /// Every listener: its token and bound address. A connection's protocol is told its
    /// listener's token in `handle_open` ([`Out::listener`](crate::proto::Out::listener)).
    pub fn listeners(&self) -> Vec<(Token, Endpoint)> {
        self.listeners
            .iter()
            .filter_map(|t| match &self.slots.get(t.key)?.entry {
                Entry::Listener(l) => Some((t.id(), l.addr.clone())),
                _ => None,
            })
            .collect()
    }

    /// The open connections accepted from the listener `listener` names: their tokens,
    /// peers and phases (as [`Reactor::connections`]). Empty for a token that names no
    /// open listener (a closed listener's connections go on, but belong to none).
    pub fn connections_of(&self, listener: Token) -> Vec<(Token, Endpoint, Phase)> {
        let of = Tag::from_id(listener);
        if !self.listeners.contains(&of) {
            return Vec::new();
        }
        self.slots
            .iter()
            .filter_map(|(key, slot)| match &slot.entry {
                Entry::Conn(c) if c.accepted_by(of.key) => Some((
                    Tag { key, gen: slot.gen }.id(),
                    c.peer().unwrap_or(Endpoint::Unix(Default::default())),
                    c.phase(),
                )),
                _ => None,
            })
            .collect()
    }

    /// Stops listening on the listener `listener` names: new connects to it are refused
    /// from now on; the connections it accepted go on. Returns false if no listener has
    /// that token.
    pub fn close_listener(&mut self, listener: Token) -> bool {
        let tag = Tag::from_id(listener);
        if self.listeners.iter().all(|&t| t != tag) {
            return false;
        }
        self.listeners.retain(|&t| t != tag);
        self.forget_listener(tag);
        true
    }

    /// The bound addresses of all listeners.
    pub fn local_addrs(&self) -> Vec<Endpoint> {
        self.listeners
            .iter()
            .filter_map(|t| match &self.slots.get(t.key)?.entry {
                Entry::Listener(l) => Some(l.addr.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every open connection: its token (slab key and generation), peer and phase.
    pub fn connections(&self) -> Vec<(Token, Endpoint, Phase)> {
        self.slots
            .iter()
            .filter_map(|(key, slot)| match &slot.entry {
                Entry::Conn(c) => Some((
                    Tag { key, gen: slot.gen }.id(),
                    // Unnamed once the OS no longer knows the peer (after a reset).
                    c.peer().unwrap_or(Endpoint::Unix(Default::default())),
                    c.phase(),
                )),
                _ => None,
            })
            .collect()
    }

    /// The phase of the connection `token` names, or `None` once it is gone.
    pub fn phase(&self, token: Token) -> Option<Phase> {
        let tag = Tag::from_id(token);
        match self.slots.get(tag.key) {
            Some(Slot {
                gen,
                entry: Entry::Conn(c),
            }) if *gen == tag.gen => Some(c.phase()),
            _ => None,
        }
    }

    /// Unsent output bytes held for all connections together.
    pub fn buffered_output(&self) -> usize {
        self.slots
            .iter()
            .map(|(_, s)| match &s.entry {
                Entry::Conn(c) => c.buffered_output(),
                _ => 0,
            })
            .sum()
    }

    /// Starts a graceful shutdown: listeners close at once (new connects are refused),
    /// each open connection's protocol is asked to finish ([`Protocol::handle_shutdown`];
    /// by default: close once its output is sent), and [`Reactor::run`] returns when every
    /// connection has closed or [`Config::shutdown_grace`] has passed, closing the rest.
    /// Calling it again while draining closes everything at once.
    pub fn shutdown(&mut self) {
        match self.state {
            RunState::Running => {
                let deadline = Instant::now() + self.core.cfg.shutdown_grace;
                self.state = RunState::Draining { deadline };
                self.close_listeners();
                let conns: Vec<Tag> = self
                    .slots
                    .iter()
                    .filter(|(_, s)| matches!(s.entry, Entry::Conn(_)))
                    .map(|(key, s)| Tag { key, gen: s.gen })
                    .collect();
                log::info!(
                    "shutdown: stopped accepting; waiting up to {:?} for {} connections to finish",
                    self.core.cfg.shutdown_grace,
                    conns.len()
                );
                // Datagram sockets have no conversation to finish: they close now.
                let dgrams: Vec<Token> = self
                    .slots
                    .iter()
                    .filter(|(_, s)| matches!(s.entry, Entry::Datagram(_)))
                    .map(|(key, s)| Tag { key, gen: s.gen }.id())
                    .collect();
                for token in dgrams {
                    self.close_datagram(token);
                }
                self.core.now = Instant::now();
                for tag in conns {
                    if let Some(Entry::Conn(c)) = live(&mut self.slots, tag) {
                        c.shutdown(tag, &mut self.core);
                    }
                    self.after_conn_visit(tag);
                }
                self.reap();
                self.settle_drain();
            }
            RunState::Draining { .. } => self.stop_now(),
            RunState::Stopped => {}
        }
    }

    /// While draining: stops once every connection has finished, or the grace period
    /// is over (closing the rest). Checked after every turn, so the drain completes
    /// under [`Reactor::run_once`] exactly as under [`Reactor::run`].
    fn settle_drain(&mut self) {
        let RunState::Draining { deadline } = self.state else {
            return;
        };
        if self.core.stats.open == 0 {
            log::info!("shutdown: every connection finished");
            self.stop_now();
        } else if Instant::now() >= deadline {
            log::info!(
                "shutdown: grace period over; closing {} connections still open",
                self.core.stats.open
            );
            self.stop_now();
        }
    }

    /// Where the reactor is in its life: running, draining (a graceful shutdown is
    /// under way), or stopped (final: [`Reactor::run`] returns at once, the handle
    /// refuses work).
    pub fn state(&self) -> State {
        match self.state {
            RunState::Running => State::Running,
            RunState::Draining { deadline } => State::Draining { until: deadline },
            RunState::Stopped => State::Stopped,
        }
    }

    /// Stops at once: every listener, connection and datagram socket is closed now.
    pub fn stop_now(&mut self) {
        if self.state != RunState::Stopped {
            self.close_all();
            self.state = RunState::Stopped;
            // Stopped is final: posts fail from now on, and what is queued is dropped.
            self.shared.close();
        }
    }

    /// Returns true if and only if shutdown has been requested (draining or stopped).
    pub fn is_shutdown(&self) -> bool {
        self.state != RunState::Running
    }

    /// Runs turns of the loop until a shutdown completes (see [`Reactor::shutdown`]).
    ///
    /// # Errors
    ///
    /// Only if the poller itself fails (see [`Reactor::run_once`]).
    pub fn run(&mut self) -> io::Result<()> {
        while self.state != RunState::Stopped {
            // The grace deadline is among the deadlines a turn waits for.
            self.run_once(None)?;
        }
        Ok(())
    }

    /// Runs one turn of the loop (see the [module docs](self)), waiting at most `timeout`
    /// for an event (`None`: as long as it takes). Returns the number of events handled.
    /// Nested in another loop, a turn does everything [`Reactor::run`] would: the
    /// shutdown's drain and grace included.
    ///
    /// # Errors
    ///
    /// Only if the poller itself fails (`epoll_wait` other than `EINTR`); errors of single
    /// connections close those connections and are counted in [`Stats`].
    pub fn run_once(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        // A panic that escaped a turn (every call into the embedder's code is caught
        // where it is made, so this is a bug of the loop's own) left the turn half done:
        // put back what a turn borrows, so the reactor stays usable.
        if self.events.capacity() == 0 {
            self.events = Events::with_capacity(self.core.cfg.events_capacity);
        }
        struct InTurn<'a>(&'a Shared);
        impl Drop for InTurn<'_> {
            fn drop(&mut self) {
                self.0.set_current(None);
                self.0.set_in_turn(false);
            }
        }
        let shared = Arc::clone(&self.shared);
        shared.set_in_turn(true);
        let _in_turn = InTurn(&shared);
        self.turn(timeout)
    }

    /// How long the loop may sleep before it has work: zero if a source is waiting to be
    /// revisited (its budget ran out; no new event will announce it), else the time to
    /// the nearest timer, or `None` if only an event can give it work.
    ///
    /// An embedder that nests the reactor in its own poller waits on [`AsRawFd`] for at
    /// most this long, then calls `run_once(Some(Duration::ZERO))`.
    ///
    /// [`AsRawFd`]: std::os::fd::AsRawFd
    pub fn next_timeout(&mut self) -> Option<Duration> {
        if !self.core.revisit.is_empty() || self.shared.has_local_work() || self.has_deferred() {
            return Some(Duration::ZERO);
        }
        self.next_deadline()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Says how long this turn will sleep in the poller, and for whom it wakes.
    fn trace_sleep(&self, timeout: Option<Duration>) {
        let Some(t) = timeout else {
            return log::trace!("poll: sleeping until an event (no timer armed)");
        };
        if t.is_zero() {
            return log::trace!("poll: not sleeping: work is waiting (a revisit or a local task)");
        }
        let ms = t.as_secs_f64() * 1e3;
        let timer = self.core.timers.next();
        let why = match (self.state, timer) {
            (RunState::Draining { deadline }, t) if t.map_or(true, |(at, _)| deadline <= at) => {
                "the shutdown's grace ends".to_string()
            }
            (_, Some((_, TimerKind::Conn(tag)))) => format!("conn {}'s deadline", tag.key),
            (_, Some((_, TimerKind::AcceptResume(tag)))) => {
                format!("listener slot {} retries accept", tag.key)
            }
            (_, Some((_, TimerKind::User(tag)))) => format!("user timer slot {}", tag.key),
            _ => "the caller's timeout".to_string(),
        };
        log::trace!("poll: sleeping at most {ms:.1} ms (then: {why}), or until an event");
    }

    /// Whether actions protocols deferred wait to run (asked for outside a turn).
    fn has_deferred(&self) -> bool {
        self.core
            .cx
            .deferred
            .as_ref()
            .is_some_and(|q| !q.is_empty())
    }

    /// The nearest deadline the loop owns: a timer's (connections', listeners' back-off
    /// and the application's), or a graceful shutdown's grace.
    fn next_deadline(&self) -> Option<Instant> {
        let timer = self.core.timers.next_deadline();
        match self.state {
            RunState::Draining { deadline } => Some(timer.map_or(deadline, |t| t.min(deadline))),
            _ => timer,
        }
    }

    fn turn(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        // 1. How long may we sleep?
        std::mem::swap(&mut self.revisiting, &mut self.core.revisit);
        let timeout = if self.revisiting.is_empty()
            && !self.shared.has_local_work()
            && !self.has_deferred()
        {
            let now = Instant::now();
            let timer = self
                .next_deadline()
                .map(|at| at.saturating_duration_since(now));
            match (timeout, timer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            Some(Duration::ZERO)
        };

        // 2. Wait for readiness.
        if log::log_enabled!(log::Level::Trace) {
            self.trace_sleep(timeout);
        }
        self.core.stats.polls += 1;
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        self.core.now = Instant::now();

        // 3. Dispatch. The events are moved out so that handlers may borrow `self`.
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let mut handled = 0;
        for ev in events.iter() {
            handled += 1;
            self.dispatch(ev.token(), ev);
        }
        self.events = events;
        self.core.stats.events += handled as u64;

        // 4. Connections that yielded last turn.
        let revisiting = std::mem::take(&mut self.revisiting);
        for &tag in &revisiting {
            self.visit::<Ready>(tag, None);
        }
        self.revisiting = revisiting;
        self.revisiting.clear();

        // 5. Timers: those due now, taken first, so that a timer armed while firing (a
        //    zero back-off, an interval shorter than a turn) waits for the next turn
        //    instead of keeping this step from ever ending.
        let mut due = std::mem::take(&mut self.due_timers);
        while let Some(kind) = self.core.timers.pop_expired(self.core.now) {
            due.push(kind);
        }
        for kind in due.drain(..) {
            match kind {
                TimerKind::Conn(tag) => {
                    let Some(Entry::Conn(c)) = live(&mut self.slots, tag) else {
                        log::trace!(
                            "timer: slot {} gen {} is gone: its deadline is ignored",
                            tag.key,
                            tag.gen
                        );
                        continue;
                    };
                    {
                        log::trace!(
                            "timer: conn {}'s deadline fired: checking its timeouts",
                            tag.key
                        );
                        if c.armed != clock::NEVER && clock::instant(c.armed) <= self.core.now {
                            c.armed = clock::NEVER;
                        }
                        self.shared.set_current(Some(tag));
                        c.on_timer(tag, &mut self.core);
                        self.shared.set_current(None);
                        self.after_conn_visit(tag);
                    }
                }
                TimerKind::AcceptResume(tag) => self.resume_listener(tag, AcceptState::Backoff),
                TimerKind::User(tag) => self.fire_user_timer(tag),
            }
        }
        self.due_timers = due;

        // 6. Deliveries queued from this thread during the turn (mailboxes), then reap and
        //    give freed room to listeners that were waiting for it.
        //    Work those commands queue from this thread runs too, until none is left (a
        //    few rounds at most: a chain longer than that continues next turn, which then
        //    polls without sleeping, as Redis's beforeSleep does).
        for _ in 0..LOCAL_ROUNDS {
            let deferred = self.run_deferred();
            if !self.shared.take_local_mark() && !deferred {
                break;
            }
            self.run_commands();
        }
        self.reap();
        self.settle_drain();
        Ok(handled)
    }

    /// Delivers a readiness event for `token` as if the poller had returned it, then reaps.
    ///
    /// For the unit tests of the stale-token guard: a token kept from a connection that
    /// has closed is dropped here exactly as a late event from the poller would be, and
    /// counted in [`Stats::stale_events`].
    #[cfg(test)]
    fn inject_readable(&mut self, token: mio::Token) {
        self.core.now = Instant::now();
        self.dispatch(
            token,
            Ready {
                readable: true,
                ..Ready::default()
            },
        );
        self.reap();
    }

    fn dispatch(&mut self, token: mio::Token, ready: impl Readiness) {
        match Wake::from_token(token) {
            Wake::Waker => {
                log::trace!("event: waker");
                self.core.stats.wakeups += 1;
                self.run_commands();
            }
            Wake::Source(tag) => {
                log::trace!(
                    "event: slot {} gen {}: readable={} writable={} read_closed={} error={}{}",
                    tag.key,
                    tag.gen,
                    ready.readable(),
                    ready.writable(),
                    ready.read_closed(),
                    ready.error(),
                    if ready.priority() { " priority" } else { "" }
                );
                self.visit(tag, Some(ready));
            }
        }
    }

    /// Handles readiness (`Some`) or a revisit (`None`) for one source.
    fn visit<R: Readiness>(&mut self, tag: Tag, ready: Option<R>) {
        let Some(entry) = live(&mut self.slots, tag) else {
            log::trace!(
                "stale token: slot {} gen {} is gone or reused; event dropped",
                tag.key,
                tag.gen
            );
            self.core.stats.stale_events += 1;
            return;
        };
        match entry {
            Entry::Listener(l) => {
                match (ready, l.accept) {
                    (Some(_), AcceptState::Idle) | (None, AcceptState::Yielded) => {
                        l.accept = AcceptState::Ready
                    }
                    _ => {}
                }
                self.accept(tag);
            }
            Entry::Conn(conn) => {
                // Deliveries its protocol makes now are this connection's (`Reactor::hold`).
                self.shared.set_current(Some(tag));
                match ready {
                    Some(r) => conn.ready(r, tag, &mut self.core),
                    None => conn.revisit(tag, &mut self.core),
                }
                self.shared.set_current(None);
                // `after_conn_visit`, with the slot in hand rather than looked up again.
                conn.refresh(self.poll.registry(), &mut self.core, tag);
                if !self.core.released.is_empty() {
                    self.release_holds();
                }
            }
            Entry::Datagram(d) => {
                match ready {
                    Some(r) => {
                        d.ready(r.readable() || r.error(), r.writable(), tag, &mut self.core)
                    }
                    None => d.revisit(tag, &mut self.core),
                }
                if let Err(e) = d.update_interest(self.poll.registry(), tag) {
                    log::warn!("datagram {}: reregister failed: {e}", d.local());
                }
            }
            Entry::Timer(_) => {}
            Entry::Watch(w) => {
                let Some(mut callback) = w.callback.take() else {
                    return;
                };
                let ready = ready.map_or_else(Ready::default, Readiness::ready);
                let ran = catch_unwind(AssertUnwindSafe(|| callback(self, tag.id(), ready)));
                match ran {
                    Ok(()) => {
                        if let Some(Entry::Watch(w)) = live(&mut self.slots, tag) {
                            w.callback = Some(callback);
                        }
                    }
                    Err(payload) => {
                        // The watch ends with its callback: it would likely panic again.
                        self.caught("a watch callback", &*payload);
                        self.unwatch(tag.id());
                    }
                }
            }
        }
    }

    /// Derives a connection's interest and deadline again after it was visited, and lets
    /// go of connections it held if it drained.
    fn after_conn_visit(&mut self, tag: Tag) {
        self.refresh_conn(tag);
        if !self.core.released.is_empty() {
            self.release_holds();
        }
    }

    /// Derives a connection's interest and deadline again.
    fn refresh_conn(&mut self, tag: Tag) {
        if let Some(Entry::Conn(conn)) = live(&mut self.slots, tag) {
            conn.refresh(self.poll.registry(), &mut self.core, tag);
        }
    }

    /// Accepts from one listener until `WouldBlock`, the batch size, the connection limit
    /// or a resource error.
    fn accept(&mut self, tag: Tag) {
        for _ in 0..self.core.cfg.accept_batch {
            let open = self.core.stats.open as usize;
            let max = self.core.cfg.max_connections;
            let Some(l) = listener(&mut self.slots, tag) else {
                return;
            };
            if l.accept != AcceptState::Ready {
                return;
            }
            if open >= max {
                log::debug!(
                    "listener {}: {open} connections open, the limit: new ones wait in the backlog",
                    l.addr
                );
                l.accept = AcceptState::Full;
                self.core.stats.accept_limit_hits += 1;
                return;
            }
            match l.sock.accept(&self.core.cfg.socket) {
                Ok((stream, peer)) => {
                    let factory = &mut l.factory;
                    let proto = match catch_unwind(AssertUnwindSafe(factory)) {
                        Ok(proto) => proto,
                        Err(payload) => {
                            // No protocol, no connection: it is closed unopened.
                            self.caught("a listener's protocol factory", &*payload);
                            continue;
                        }
                    };
                    let conn = Conn::accepted(stream, proto, Arc::clone(&l.session_cfg));
                    let local = l.addr.clone();
                    match self.add_conn(conn, &peer) {
                        Ok(conn_tag) => {
                            let (listener_tag, tag) = (tag, conn_tag);
                            if let Some(Entry::Conn(conn)) = live(&mut self.slots, tag) {
                                self.shared.set_current(Some(tag));
                                conn.open(tag, &mut self.core, &peer, (listener_tag, &local));
                                self.shared.set_current(None);
                            }
                            self.after_conn_visit(tag);
                        }
                        Err(e) => log::warn!("dropping connection from {peer}: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    log::trace!("listener {}: accept would block: backlog empty", l.addr);
                    l.accept = AcceptState::Idle;
                    return;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    log::trace!("listener {}: accept: {e}, continuing", l.addr);
                }
                Err(e) => {
                    // EMFILE and friends: retrying at once would spin (the connection stays
                    // queued and the listener stays readable). Pause until a connection
                    // closes or the back-off passes, serving the open connections meanwhile.
                    let backoff = self.core.cfg.accept_backoff;
                    let what = if crate::net::is_resource_exhaustion(&e) {
                        "out of resources"
                    } else {
                        "unexpected error"
                    };
                    // At most one line a second: under churn at the fd limit this fires
                    // ten times a second.
                    if let Some(quiet) = l.warned.allow(self.core.now) {
                        let more = if quiet > 0 {
                            format!(" ({quiet} more since the last warning)")
                        } else {
                            String::new()
                        };
                        log::warn!(
                            "listener {}: accept failed ({what}): {e}; pausing accepts for {backoff:?}{more}",
                            l.addr
                        );
                    }
                    l.accept = AcceptState::Backoff;
                    self.core.stats.accept_errors += 1;
                    self.core
                        .timers
                        .arm(self.core.now + backoff, TimerKind::AcceptResume(tag));
                    return;
                }
            }
        }
        // Batch spent with connections possibly still queued: continue next turn, after
        // the others have had theirs.
        if let Some(l) = listener(&mut self.slots, tag) {
            l.accept = AcceptState::Yielded;
            self.core.revisit.push(tag);
        }
    }

    /// Registers a connection and gives it a slot; the caller opens it.
    fn add_conn(&mut self, mut conn: Conn, peer: &Endpoint) -> io::Result<Tag> {
        let tag = self.next_tag()?;
        let interest = conn.interest();
        self.poll
            .registry()
            .register(conn.stream_mut(), tag.token(), interest)?;
        if conn.phase() == Phase::Open {
            let how = match peer {
                Endpoint::Inet(_) => ": the kernel completed its three-way handshake",
                Endpoint::Unix(_) => "",
            };
            log::debug!("accept {peer} as conn {} (gen {}){how}", tag.key, tag.gen);
            log::trace!(
                "conn {}: slot {} gen {} in the slab; mio token {} = gen << 32 | slot",
                tag.key,
                tag.key,
                tag.gen,
                tag.token().0
            );
            self.core.stats.accepted += 1;
        }
        self.core.stats.open += 1;
        let key = self.slots.insert(Slot {
            gen: tag.gen,
            entry: Entry::Conn(conn),
        });
        debug_assert_eq!(key, tag.key);
        Ok(tag)
    }

    /// The tag for the next slot to be filled, with a fresh generation.
    fn next_tag(&mut self) -> io::Result<Tag> {
        let key = self.slots.vacant_key();
        if key > MAX_KEY {
            return Err(io::Error::other("reactor slab is full"));
        }
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1);
        Ok(Tag { key, gen })
    }

    fn resume_listener(&mut self, tag: Tag, from: AcceptState) {
        if let Some(l) = listener(&mut self.slots, tag) {
            if l.accept == from {
                log::trace!("listener {}: resuming accepts", l.addr);
                l.accept = AcceptState::Ready;
                self.accept(tag);
            }
        }
    }

    /// Before a connection's fd closes: on Linux nothing to do, since closing the fd
    /// removes it from epoll (the reactor never duplicates a stream's fd, so no other
    /// reference keeps the registration alive), which saves one `epoll_ctl(DEL)` per
    /// connection; elsewhere it is deregistered first, as mio recommends.
    #[cfg_attr(target_os = "linux", allow(clippy::unused_self))]
    fn forget_registration(&self, conn: &mut Conn, tag: Tag) {
        if cfg!(target_os = "linux") {
            return;
        }
        if let Err(e) = self.poll.registry().deregister(conn.stream_mut()) {
            log::debug!("conn {}: deregister: {e}", tag.key);
        }
    }

    fn reap(&mut self) {
        if self.core.reap.is_empty() {
            return;
        }
        let mut freed = false;
        for tag in std::mem::take(&mut self.core.reap) {
            let Some(slot) = self.slots.get(tag.key) else {
                continue;
            };
            if slot.gen != tag.gen {
                continue;
            }
            if let Entry::Conn(mut conn) = self.slots.remove(tag.key).entry {
                self.forget_registration(&mut conn, tag);
                // Its deadline goes with it: a closed connection never wakes the loop.
                self.core.timers.cancel(tag);
                // Whoever it held (by being over its high-water mark) goes free.
                if self.core.holds.contains_key(&tag) {
                    self.core.released.push(tag);
                }
                log::trace!("conn {}: reaped, fd closed", tag.key);
                self.core.stats.closed += 1;
                self.core.stats.open -= 1;
                freed = true;
            }
        }
        if !self.core.released.is_empty() {
            self.release_holds();
        }
        if freed {
            for tag in self.listeners.clone() {
                self.resume_listener(tag, AcceptState::Full);
                self.resume_listener(tag, AcceptState::Backoff);
            }
        }
        // Resumed listeners may have accepted connections that closed at once, and released
        // connections may have read their way to a close.
        if !self.core.reap.is_empty() {
            self.reap();
        }
    }

    /// `from` delivered to `to`, which is over its high-water mark: `from` stops reading
    /// until `to` drains to its low-water mark or closes. So a publisher is paced by its
    /// slowest live subscriber, as TCP paces a sender by its receiver, and no subscriber's
    /// backlog grows past about one read budget beyond its high-water mark. (One that
    /// stays over it is dropped at its backlog timeout, which releases the publisher.)
    fn hold(&mut self, from: Tag, to: Tag) {
        let waiters = self.core.holds.entry(to).or_default();
        if waiters.contains(&from) {
            return;
        }
        if let Some(Entry::Conn(a)) = live(&mut self.slots, from) {
            waiters.push(from);
            a.hold();
            self.core.stats.holds += 1;
            log::trace!(
                "conn {}: reading held: conn {} it delivers to is over its high-water mark",
                from.key,
                to.key
            );
        }
    }

    /// Lets go of the connections held by those in `core.released` (drained, or closed).
    fn release_holds(&mut self) {
        while let Some(to) = self.core.released.pop() {
            for from in self.core.holds.remove(&to).unwrap_or_default() {
                if let Some(Entry::Conn(a)) = live(&mut self.slots, from) {
                    log::trace!(
                        "conn {}: released: conn {} drained or closed",
                        from.key,
                        to.key
                    );
                    self.shared.set_current(Some(from));
                    a.release(from, &mut self.core);
                    self.shared.set_current(None);
                    self.refresh_conn(from);
                }
            }
        }
    }

    fn run_commands(&mut self) {
        let mut commands = std::mem::take(&mut self.commands);
        self.shared.take(&mut commands);
        for cmd in commands.drain(..) {
            match cmd {
                Command::Run(task) => {
                    self.core.stats.tasks += 1;
                    // A panicking task is that task's end, not the loop's: the rest of the
                    // batch runs (see the panic policy on `Reactor`).
                    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| task(self))) {
                        self.caught("a posted task", &*payload);
                    }
                }
                Command::Shutdown => {
                    log::info!("shutdown requested through the handle");
                    self.shutdown();
                }
                Command::StopNow => {
                    log::info!("immediate stop requested through the handle");
                    self.stop_now();
                }
                Command::Deliver(tag, bytes, from) => {
                    if let Some(Entry::Conn(c)) = live(&mut self.slots, tag) {
                        c.send_external(&bytes, tag, &mut self.core);
                        let congested = c.is_congested();
                        self.after_conn_visit(tag);
                        if let Some(from) = from.filter(|&f| f != tag && congested) {
                            self.hold(from, tag);
                        }
                    }
                }
                Command::CloseConn(tag) => {
                    if let Some(Entry::Conn(c)) = live(&mut self.slots, tag) {
                        c.close_external(tag, &mut self.core);
                        self.after_conn_visit(tag);
                    }
                }
            }
        }
        self.commands = commands;
    }

    /// Closes and forgets every listener (new connects are refused from now on).
    fn close_listeners(&mut self) {
        for tag in std::mem::take(&mut self.listeners) {
            self.forget_listener(tag);
        }
    }

    /// Deregisters and drops one listener (the caller has taken it off `listeners`).
    fn forget_listener(&mut self, tag: Tag) {
        if listener(&mut self.slots, tag).is_none() {
            return;
        }
        if let Entry::Listener(mut l) = self.slots.remove(tag.key).entry {
            if let Err(e) = self.poll.registry().deregister(&mut l.sock) {
                log::debug!("listener {}: deregister: {e}", l.addr);
            }
            // Its key may go to a later listener: its connections must not follow it.
            for (_, slot) in self.slots.iter_mut() {
                if let Entry::Conn(c) = &mut slot.entry {
                    if c.accepted_by(tag.key) {
                        c.forget_listener();
                    }
                }
            }
            self.core.timers.cancel(tag);
            log::info!("stopped listening on {}", l.addr);
        }
    }

    /// Closes everything now: connections without flushing (their protocols are told
    /// [`CloseReason::Shutdown`]), datagram sockets, listeners; cancels user timers.
    fn close_all(&mut self) {
        self.close_listeners();
        let open = self.core.stats.open;
        let keys: Vec<usize> = self.slots.iter().map(|(key, _)| key).collect();
        for key in keys {
            let slot = self.slots.remove(key);
            let tag = Tag { key, gen: slot.gen };
            let res = match slot.entry {
                Entry::Conn(mut c) => {
                    c.close(tag, &mut self.core, CloseReason::Shutdown);
                    self.poll.registry().deregister(c.stream_mut())
                }
                Entry::Datagram(mut d) => self.poll.registry().deregister(d.socket_mut()),
                Entry::Listener(mut l) => self.poll.registry().deregister(&mut l.sock),
                Entry::Watch(w) => self
                    .poll
                    .registry()
                    .deregister(&mut mio::unix::SourceFd(&w.fd)),
                Entry::Timer(_) => Ok(()),
            };
            if let Err(e) = res {
                log::debug!("deregister at shutdown: {e}");
            }
        }
        self.core.reap.clear();
        self.core.revisit.clear();
        self.core.timers = Timers::default();
        self.core.stats.closed += open;
        self.core.stats.open = 0;
        log::info!("reactor stopped: {open} connections closed at the end");
    }
}

/// A factory of concrete protocols as a factory of boxed ones.
fn boxing<P, F>(mut factory: F) -> impl FnMut() -> Box<dyn Protocol> + 'static
where
    P: Protocol + 'static,
    F: FnMut() -> P + 'static,
{
    move || Box::new(factory())
}

/// The entry a tag names, if the slot still holds the owner the tag was issued for.
fn live(slots: &mut Slab<Slot>, tag: Tag) -> Option<&mut Entry> {
    match slots.get_mut(tag.key) {
        Some(slot) if slot.gen == tag.gen => Some(&mut slot.entry),
        _ => None,
    }
}

fn listener(slots: &mut Slab<Slot>, tag: Tag) -> Option<&mut Listener> {
    match live(slots, tag)? {
        Entry::Listener(l) => Some(l),
        _ => None,
    }
}

impl Drop for Reactor {
    /// Stops the reactor if it was not stopped ([`Reactor::stop_now`]): every open
    /// connection's protocol is told [`CloseReason::Shutdown`], so `handle_close` runs
    /// once per opened connection whatever ends it; queued tasks are dropped unrun.
    fn drop(&mut self) {
        self.stop_now();
        self.shared.close();
    }
}

impl std::os::fd::AsRawFd for Reactor {
    /// The poller's own fd (an epoll instance on Linux): readable when this reactor has
    /// events, so the reactor can be nested inside another event loop. Events are not its
    /// only work: wait on it for at most [`Reactor::next_timeout`] (revisits, timers, the
    /// shutdown's grace), then call `run_once(Some(Duration::ZERO))`.
    ///
    /// Watch it **level-triggered** (`poll(2)`, `select`, epoll without `EPOLLET`). An
    /// edge-triggered watcher is told only when the fd *becomes* readable, and one turn
    /// need not take every event (a turn takes at most `events_capacity` of them, and a
    /// busy connection yields after its budget), so it could wait on work already
    /// announced. With an edge-triggered outer loop, run turns with a zero timeout until
    /// `run_once` returns 0 and [`Reactor::next_timeout`] is not zero.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.poll.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    /// An idle connection's whole cost in the reactor is its slab slot (its buffers are
    /// null pointers, its echo machine a zero-sized box); keep it near 100 bytes.
    #[test]
    fn a_slot_stays_small() {
        let slot = std::mem::size_of::<super::Slot>();
        eprintln!("slab slot: {slot} bytes");
        // Release builds: 88. Debug builds add mio's 16-byte selector id to the stream.
        let limit = if cfg!(debug_assertions) { 104 } else { 88 };
        assert!(slot <= limit, "a slot grew to {slot} bytes");
    }

    /// A poller event whose token names a slot never filled, or filled under another
    /// generation, is dropped and counted; it reaches no connection.
    #[test]
    fn a_stale_event_is_dropped_and_counted() {
        use super::token::Tag;
        let mut reactor = super::Reactor::new().unwrap();
        reactor.inject_readable(Tag { key: 999, gen: 7 }.token());
        assert_eq!(reactor.stats().stale_events, 1);
        // A timer's slot, under a generation it never had.
        let id = reactor.set_timer(std::time::Duration::from_secs(60), |_| {});
        let tag = id.0;
        reactor.inject_readable(
            Tag {
                key: tag.key,
                gen: tag.gen.wrapping_add(1),
            }
            .token(),
        );
        assert_eq!(reactor.stats().stale_events, 2);
        assert_eq!(reactor.armed_timers(), 1, "the timer is untouched");
    }
}
