//! The reactor: one thread, one `mio::Poll`, every socket in one slab.
//!
//! # One turn of the loop ([`Reactor::run_once`])
//!
//! ```text
//!   1. timeout = 0 if a connection is waiting to be revisited, else the time to the
//!      nearest timer (min the caller's timeout), else none: sleep until an event
//!   2. poll(events, timeout)                 <- the only place the thread blocks
//!   3. for each event: decode the token ─┬─ Waker     -> run posted tasks
//!                                        ├─ Listener  -> accept until WouldBlock/limits
//!                                        └─ Conn      -> flush if writable, then read
//!                                                        until WouldBlock or budget
//!      (a token whose generation no longer matches its slot is stale: dropped)
//!   4. revisit connections whose read budget ran out last turn (no new edge will come)
//!   5. fire expired timers (linger deadlines, accept back-off)
//!   6. reap: deregister and close every connection that reached Closed this turn,
//!      then let paused listeners accept again into the freed room
//! ```
//!
//! Closing happens at the end of the turn (step 6) rather than where it is decided, so a
//! slot is never freed and reused while events for it may still sit in this turn's batch.
//! The generation in each token guards the turns after that.
//!
//! # Example
//!
//! ```no_run
//! use sockloop::proto::echo::Echo;
//! use sockloop::reactor::Reactor;
//!
//! let mut reactor = Reactor::new()?;
//! let addr = reactor.listen("127.0.0.1:0".parse().unwrap(), || Echo)?;
//! println!("echo on {addr}");
//! reactor.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod conn;
mod handle;
mod timers;
pub mod token;

pub use conn::Phase;
pub use handle::{Closed, Handle, Task};

use crate::proto::Protocol;
use conn::{Conn, Readiness};
use handle::{Command, Shared};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll};
use slab::Slab;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timers::{TimerKind, Timers};
use token::{Tag, Wake, MAX_KEY, WAKER};

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
            accept_batch: 64,
            accept_backoff: Duration::from_millis(100),
            linger: Duration::from_secs(2),
            events_capacity: 1024,
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
    /// The largest unsent output held for any one connection so far, in bytes.
    pub peak_output_buffered: usize,
}

/// State the connections need while the slab is borrowed: everything but the slab.
pub(crate) struct Core {
    cfg: Config,
    stats: Stats,
    timers: Timers,
    /// The one read buffer, lent to whichever connection is being read.
    read_buf: Box<[u8]>,
    /// The one output sink, lent to whichever protocol is being called.
    scratch: Vec<u8>,
    /// Connections to read again next turn (their budget ran out).
    revisit: Vec<Tag>,
    /// Slots whose connection reached `Closed` this turn.
    reap: Vec<Tag>,
    /// The time of this turn, read once after the poll returns.
    now: Instant,
}

struct Listener {
    sock: TcpListener,
    addr: SocketAddr,
    factory: Box<dyn FnMut() -> Box<dyn Protocol>>,
    accept: AcceptState,
}

/// Whether a listener may have connections waiting, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AcceptState {
    /// The accept queue was drained to `WouldBlock`: wait for the next readable edge.
    Idle,
    /// Connections may be waiting (an edge arrived, or we stopped early to be fair).
    Ready,
    /// At `max_connections`: resume when a connection closes.
    Full,
    /// `accept` failed for lack of resources: resume at the back-off deadline or when a
    /// connection closes, whichever comes first.
    Backoff,
}

enum Entry {
    Listener(Listener),
    Conn(Conn),
}

struct Slot {
    gen: u32,
    entry: Entry,
}

/// A single-threaded event loop serving stream protocols over non-blocking sockets.
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
    shutdown: bool,
}

impl Reactor {
    /// A reactor with the default [`Config`].
    pub fn new() -> io::Result<Reactor> {
        Reactor::with_config(Config::default())
    }

    /// A reactor with the given tunables.
    pub fn with_config(cfg: Config) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        Ok(Reactor {
            events: Events::with_capacity(cfg.events_capacity.max(1)),
            poll,
            slots: Slab::new(),
            next_gen: 0,
            listeners: Vec::new(),
            core: Core {
                read_buf: vec![0; cfg.read_buffer.max(1)].into_boxed_slice(),
                cfg,
                stats: Stats::default(),
                timers: Timers::default(),
                scratch: Vec::new(),
                revisit: Vec::new(),
                reap: Vec::new(),
                now: Instant::now(),
            },
            shared: Arc::new(Shared::new(waker)),
            commands: Vec::new(),
            revisiting: Vec::new(),
            shutdown: false,
        })
    }

    /// Binds a TCP listener on `addr` and serves every connection it accepts with a
    /// protocol made by `factory`. Returns the bound address (useful with port 0).
    pub fn listen<P, F>(&mut self, addr: SocketAddr, factory: F) -> io::Result<SocketAddr>
    where
        P: Protocol + 'static,
        F: FnMut() -> P + 'static,
    {
        self.listen_std(crate::net::bind_tcp(addr)?, factory)
    }

    /// Like [`Reactor::listen`], with a listener the caller has bound and configured.
    pub fn listen_std<P, F>(
        &mut self,
        listener: std::net::TcpListener,
        mut factory: F,
    ) -> io::Result<SocketAddr>
    where
        P: Protocol + 'static,
        F: FnMut() -> P + 'static,
    {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut sock = TcpListener::from_std(listener);
        let tag = self.next_tag()?;
        self.poll
            .registry()
            .register(&mut sock, tag.token(), Interest::READABLE)?;
        self.slots.insert(Slot {
            gen: tag.gen,
            entry: Entry::Listener(Listener {
                sock,
                addr,
                factory: Box::new(move || Box::new(factory())),
                accept: AcceptState::Idle,
            }),
        });
        self.listeners.push(tag);
        log::info!("listening on tcp {addr}");
        Ok(addr)
    }

    /// A handle other threads use to post work and request shutdown.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// The tunables this reactor runs with.
    pub fn config(&self) -> &Config {
        &self.core.cfg
    }

    /// The bound addresses of all listeners.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|t| match &self.slots.get(t.key)?.entry {
                Entry::Listener(l) => Some(l.addr),
                Entry::Conn(_) => None,
            })
            .collect()
    }

    /// Every open connection: its token (slab key and generation) and peer address.
    pub fn connections(&self) -> Vec<(mio::Token, SocketAddr, Phase)> {
        self.slots
            .iter()
            .filter_map(|(key, slot)| match &slot.entry {
                Entry::Conn(c) => Some((Tag { key, gen: slot.gen }.token(), c.peer(), c.phase())),
                Entry::Listener(_) => None,
            })
            .collect()
    }

    /// Unsent output bytes held for all connections together.
    pub fn buffered_output(&self) -> usize {
        self.slots
            .iter()
            .map(|(_, s)| match &s.entry {
                Entry::Conn(c) => c.buffered_output(),
                Entry::Listener(_) => 0,
            })
            .sum()
    }

    /// Asks [`Reactor::run`] to return after the current turn.
    pub fn shutdown(&mut self) {
        self.shutdown = true;
    }

    /// Returns true if and only if shutdown has been requested.
    pub fn is_shutdown(&self) -> bool {
        self.shutdown
    }

    /// Runs turns of the loop until shutdown is requested, then closes every socket.
    pub fn run(&mut self) -> io::Result<()> {
        while !self.shutdown {
            self.run_once(None)?;
        }
        self.close_all();
        Ok(())
    }

    /// Runs one turn of the loop (see the [module docs](self)), waiting at most `timeout`
    /// for an event (`None`: as long as it takes). Returns the number of events handled.
    ///
    /// Errors only if the poller itself fails; errors of single connections close those
    /// connections and are counted in [`Stats`].
    pub fn run_once(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        // 1. How long may we sleep?
        std::mem::swap(&mut self.revisiting, &mut self.core.revisit);
        let timeout = if self.revisiting.is_empty() {
            let now = Instant::now();
            let timer = self
                .core
                .timers
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
        log::trace!("poll: waiting up to {timeout:?}");
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
            self.dispatch(ev.token(), Readiness::of(ev));
        }
        self.events = events;
        self.core.stats.events += handled as u64;

        // 4. Connections that yielded last turn.
        let revisiting = std::mem::take(&mut self.revisiting);
        for &tag in &revisiting {
            self.visit(tag, None);
        }
        self.revisiting = revisiting;
        self.revisiting.clear();

        // 5. Timers.
        while let Some(kind) = self.core.timers.pop_expired(self.core.now) {
            self.core.stats.timers_fired += 1;
            match kind {
                TimerKind::Linger(tag) => {
                    if let Some(Entry::Conn(c)) = live(&mut self.slots, tag) {
                        c.linger_expired(tag, &mut self.core);
                    }
                }
                TimerKind::AcceptResume(tag) => self.resume_listener(tag, AcceptState::Backoff),
            }
        }

        // 6. Reap, then give freed room to listeners that were waiting for it.
        self.reap();
        Ok(handled)
    }

    /// Delivers a readiness event for `token` as if the poller had returned it, then reaps.
    ///
    /// For tests and demonstrations of the stale-token guard: a token kept from a
    /// connection that has closed is dropped here exactly as a late event from the poller
    /// would be, and counted in [`Stats::stale_events`].
    #[doc(hidden)]
    pub fn inject_readable(&mut self, token: mio::Token) {
        self.core.now = Instant::now();
        self.dispatch(
            token,
            Readiness {
                readable: true,
                ..Readiness::default()
            },
        );
        self.reap();
    }

    fn dispatch(&mut self, token: mio::Token, ready: Readiness) {
        match Wake::from_token(token) {
            Wake::Waker => {
                log::trace!("event: waker");
                self.core.stats.wakeups += 1;
                self.run_commands();
            }
            Wake::Source(tag) => {
                log::trace!(
                    "event: slot {} gen {}: readable={} writable={} read_closed={} error={}",
                    tag.key,
                    tag.gen,
                    ready.readable,
                    ready.writable,
                    ready.read_closed,
                    ready.error
                );
                self.visit(tag, Some(ready));
            }
        }
    }

    /// Handles readiness (`Some`) or a revisit (`None`) for one source.
    fn visit(&mut self, tag: Tag, ready: Option<Readiness>) {
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
                if l.accept == AcceptState::Idle {
                    l.accept = AcceptState::Ready;
                }
                self.accept(tag);
            }
            Entry::Conn(conn) => {
                match ready {
                    Some(r) => conn.ready(r, tag, &mut self.core),
                    None => conn.revisit(tag, &mut self.core),
                }
                if let Err(e) = conn.update_interest(self.poll.registry(), tag) {
                    log::warn!("conn {}: reregister failed: {e}", tag.key);
                }
            }
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
            match l.sock.accept() {
                Ok((stream, peer)) => {
                    let proto = (l.factory)();
                    self.add_conn(stream, peer, proto);
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
                    log::warn!(
                        "listener {}: accept failed ({what}): {e}; pausing accepts for {backoff:?}",
                        l.addr
                    );
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
        self.core.revisit.push(tag);
    }

    fn add_conn(
        &mut self,
        mut stream: mio::net::TcpStream,
        peer: SocketAddr,
        proto: Box<dyn Protocol>,
    ) {
        let tag = match self.next_tag() {
            Ok(tag) => tag,
            Err(e) => {
                log::warn!("dropping connection from {peer}: {e}");
                return;
            }
        };
        // Replies are small and latency matters more than packet count: no Nagle delay.
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("set_nodelay for {peer}: {e}");
        }
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, tag.token(), Interest::READABLE)
        {
            log::warn!("dropping connection from {peer}: register failed: {e}");
            return;
        }
        log::debug!(
            "accept {peer} as conn {} (gen {}): the kernel completed its three-way handshake",
            tag.key,
            tag.gen
        );
        self.core.stats.accepted += 1;
        self.core.stats.open += 1;
        let key = self.slots.insert(Slot {
            gen: tag.gen,
            entry: Entry::Conn(Conn::new(stream, peer, proto)),
        });
        debug_assert_eq!(key, tag.key);
        if let Some(Entry::Conn(conn)) = live(&mut self.slots, tag) {
            conn.open(tag, &mut self.core);
            if let Err(e) = conn.update_interest(self.poll.registry(), tag) {
                log::warn!("conn {}: reregister failed: {e}", tag.key);
            }
        }
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
                if let Err(e) = self.poll.registry().deregister(conn.stream_mut()) {
                    log::debug!("conn {}: deregister: {e}", tag.key);
                }
                log::trace!("conn {} {}: reaped, fd closed", tag.key, conn.peer());
                self.core.stats.closed += 1;
                self.core.stats.open -= 1;
                freed = true;
            }
        }
        if freed {
            for tag in self.listeners.clone() {
                self.resume_listener(tag, AcceptState::Full);
                self.resume_listener(tag, AcceptState::Backoff);
            }
            // Resumed listeners may have accepted connections that closed at once.
            if !self.core.reap.is_empty() {
                self.reap();
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
                    task(self);
                }
                Command::Shutdown => {
                    log::info!("shutdown requested");
                    self.shutdown = true;
                }
            }
        }
        self.commands = commands;
    }

    /// Closes every listener and connection now (connections without flushing).
    fn close_all(&mut self) {
        let open = self.core.stats.open;
        for (_, slot) in self.slots.iter_mut() {
            let res = match &mut slot.entry {
                Entry::Listener(l) => self.poll.registry().deregister(&mut l.sock),
                Entry::Conn(c) => self.poll.registry().deregister(c.stream_mut()),
            };
            if let Err(e) = res {
                log::debug!("deregister at shutdown: {e}");
            }
        }
        self.slots.clear();
        self.listeners.clear();
        self.core.stats.closed += open;
        self.core.stats.open = 0;
        log::info!("reactor stopped: {open} connections closed at shutdown");
    }
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
        Entry::Conn(_) => None,
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl std::os::fd::AsRawFd for Reactor {
    /// The poller's own fd (an epoll instance on Linux): readable when this reactor has
    /// events, so the reactor can be nested inside another event loop.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.poll.as_raw_fd()
    }
}
