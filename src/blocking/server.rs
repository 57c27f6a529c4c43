//! `BlockingServer`: the accept loop of the threaded and iterative drivers, and stopping
//! it, gracefully or at once.

use super::socket::{BlockingListener, BlockingStream};
use super::{drive, DRAINING, RUNNING, STOPPED};
use crate::net::Endpoint;
use crate::proto::Protocol;
use crate::session::{Session, SessionConfig};
use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which blocking driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One OS thread per connection.
    Threaded,
    /// One connection at a time, on the accept thread.
    Iterative,
}

/// Makes a fresh protocol value for each connection; shared by the accepting threads.
pub type Factory = Arc<dyn Fn() -> Box<dyn Protocol + Send> + Send + Sync>;

/// Counters of a blocking server.
#[derive(Debug, Default)]
pub struct BlockingStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections finished.
    pub closed: AtomicU64,
    /// Panics caught: in a protocol (its connection closed with
    /// [`CloseReason::Panicked`](crate::proto::CloseReason::Panicked)) or in the factory
    /// (the connection closed unopened). Each ended only its own connection.
    pub panics: AtomicU64,
}

struct Inner {
    state: AtomicU8,
    /// The fd of every connection being served, so a stop can shut them down. A `dup`
    /// per connection would do too, but would halve how many connections fit under the
    /// fd limit. Entries are added by the serving thread itself and removed, under this
    /// lock, before its socket is closed, so a stop never touches a reused fd.
    open: Mutex<HashMap<u64, std::os::fd::RawFd>>,
    /// Signalled whenever an entry leaves `open` (a graceful stop waits on it).
    closed: Condvar,
    /// The limits and timeouts of every connection.
    cfg: Arc<SessionConfig>,
    stats: BlockingStats,
}

/// A running blocking server (threaded or iterative).
pub struct BlockingServer {
    addr: Endpoint,
    inner: Arc<Inner>,
    accept_thread: Option<JoinHandle<()>>,
}

impl BlockingServer {
    /// Starts serving `listener` in `mode` on a new accept thread, with the default
    /// [`SessionConfig`].
    ///
    /// # Errors
    ///
    /// If the listener's address cannot be read or the thread cannot be started.
    pub fn spawn(listener: BlockingListener, mode: Mode, factory: Factory) -> io::Result<Self> {
        BlockingServer::spawn_with(listener, mode, factory, SessionConfig::default())
    }

    /// [`BlockingServer::spawn`] with the given limits and timeouts for every connection:
    /// the same ones the reactor applies ([`crate::reactor::Config::session_config`]).
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `cfg` is nonsense ([`SessionConfig::validate`]); otherwise if the
    /// listener's address cannot be read or the thread cannot be started.
    pub fn spawn_with(
        listener: BlockingListener,
        mode: Mode,
        factory: Factory,
        cfg: SessionConfig,
    ) -> io::Result<Self> {
        cfg.validate()?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            state: AtomicU8::new(RUNNING),
            open: Mutex::new(HashMap::new()),
            closed: Condvar::new(),
            cfg: Arc::new(cfg),
            stats: BlockingStats::default(),
        });
        let shared = Arc::clone(&inner);
        let accept_thread = std::thread::Builder::new()
            .name(format!("{mode:?}-accept").to_lowercase())
            .spawn(move || {
                accept_loop(listener, mode, factory, &shared);
                finish(&shared);
            })?;
        log::info!("listening on {addr} ({mode:?} driver)");
        Ok(BlockingServer {
            addr,
            inner,
            accept_thread: Some(accept_thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> &Endpoint {
        &self.addr
    }

    /// Counters so far.
    pub fn stats(&self) -> &BlockingStats {
        &self.inner.stats
    }

    /// A `Send` closure that stops this server: the first call gracefully (see
    /// [`BlockingServer::shutdown`]), any later call at once.
    pub fn stopper(&self, grace: Duration) -> impl Fn() + Send + Sync + 'static {
        let inner = Arc::clone(&self.inner);
        let addr = self.addr.clone();
        move || {
            if !begin_shutdown(&inner, &addr, grace) {
                stop(&inner, &addr);
            }
        }
    }

    /// Starts a graceful stop and returns: no more connections are accepted, each open
    /// connection's protocol is asked to finish ([`Protocol::handle_shutdown`]; by
    /// default it closes once its output is sent), and after `grace` whatever is still
    /// open is shut down. [`BlockingServer::join`] returns once every connection has
    /// ended. Does nothing if a stop has begun already.
    ///
    /// A blocked `read` does not look at flags: each connection is woken with
    /// `shutdown(Read)`, which makes its `read` return 0 while its writes still work.
    pub fn shutdown(&self, grace: Duration) {
        begin_shutdown(&self.inner, &self.addr, grace);
    }

    /// Stops accepting and shuts down every open connection now (their protocols are
    /// told [`crate::proto::CloseReason::Shutdown`]). Idempotent.
    pub fn stop(&self) {
        stop(&self.inner, &self.addr)
    }

    /// Waits for the server to finish (after a stop): the accept thread, and every
    /// connection it started.
    pub fn join(mut self) {
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BlockingServer {
    fn drop(&mut self) {
        if self.accept_thread.is_some() {
            self.stop();
            if let Some(t) = self.accept_thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Starts a graceful stop; returns false if a stop had begun already. A thread of its own
/// enforces the grace period, so it holds whatever the accept thread is doing (serving a
/// connection itself, in iterative mode).
fn begin_shutdown(inner: &Arc<Inner>, addr: &Endpoint, grace: Duration) -> bool {
    // Under the lock a connection registers with, so none slips in between the state
    // change and the wake-ups below.
    let open = inner.open.lock().unwrap_or_else(|p| p.into_inner());
    if inner
        .state
        .compare_exchange(RUNNING, DRAINING, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return false;
    }
    log::info!(
        "shutdown: stopped accepting; waiting up to {grace:?} for {} connections to finish",
        open.len()
    );
    for &fd in open.values() {
        // SAFETY: shutdown(2) on an fd that is open while we hold the lock (see `open`);
        // it touches no memory. A blocked read on it then returns 0; writes still work.
        unsafe { libc::shutdown(fd, libc::SHUT_RD) };
    }
    drop(open);
    wake_accept(addr);
    let (timer_inner, timer_addr) = (Arc::clone(inner), addr.clone());
    let spawned = std::thread::Builder::new()
        .name("shutdown-grace".into())
        .spawn(move || {
            let (inner, addr) = (timer_inner, timer_addr);
            let open = inner.open.lock().unwrap_or_else(|p| p.into_inner());
            let (open, waited) = inner
                .closed
                .wait_timeout_while(open, grace, |open| {
                    !open.is_empty() && inner.state.load(Ordering::SeqCst) == DRAINING
                })
                .unwrap_or_else(|p| p.into_inner());
            let left = open.len();
            drop(open);
            if waited.timed_out() && left > 0 {
                log::info!("shutdown: grace period over; closing {left} connections still open");
                stop(&inner, &addr);
            } else if left == 0 {
                log::info!("shutdown: every connection finished");
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the shutdown's grace timer ({e}): stopping at once");
        stop(inner, addr);
    }
    true
}

fn stop(inner: &Inner, addr: &Endpoint) {
    let was = inner.state.swap(STOPPED, Ordering::SeqCst);
    if was == STOPPED {
        return;
    }
    shut_all(inner);
    // After the state change and under the lock once (in `shut_all`), so a waiter that
    // checked the state before cannot miss this.
    inner.closed.notify_all();
    if was == RUNNING {
        // (A graceful stop has woken the accept loop already.)
        wake_accept(addr);
    }
    log::info!("blocking server on {addr} stopped");
}

/// Shuts down both directions of every open connection: its blocked read returns 0, its
/// blocked write fails.
fn shut_all(inner: &Inner) {
    for &fd in inner
        .open
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
    {
        // SAFETY: shutdown(2) on an fd that is open while we hold the lock (see `open`);
        // it touches no memory.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

/// The accept thread is blocked in accept(): a connection of our own wakes it.
fn wake_accept(addr: &Endpoint) {
    match addr {
        Endpoint::Inet(a) => {
            let mut wake = *a;
            if wake.ip().is_unspecified() {
                wake.set_ip(match wake {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        }
        Endpoint::Unix(p) => {
            let _ = UnixStream::connect(p);
        }
    }
}

/// After the accept loop: wait for every connection to end. While a graceful stop drains,
/// its grace timer stops what outlives the grace; after a stop every connection ends
/// promptly (its socket is shut down), and the bound keeps one wedged thread from hanging
/// `join` forever.
fn finish(inner: &Inner) {
    let open = inner.open.lock().unwrap_or_else(|p| p.into_inner());
    let open = inner
        .closed
        .wait_while(open, |open| {
            !open.is_empty() && inner.state.load(Ordering::SeqCst) == DRAINING
        })
        .unwrap_or_else(|p| p.into_inner());
    let (open, waited) = inner
        .closed
        .wait_timeout_while(open, Duration::from_secs(5), |open| !open.is_empty())
        .unwrap_or_else(|p| p.into_inner());
    if waited.timed_out() {
        log::warn!(
            "{} connections did not end within 5 s of the stop",
            open.len()
        );
    }
}

fn accept_loop(listener: BlockingListener, mode: Mode, factory: Factory, inner: &Arc<Inner>) {
    let mut next_id = 0u64;
    let mut warned = crate::net::Throttle::default();
    let running = || inner.state.load(Ordering::SeqCst) == RUNNING;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(pair) => pair,
            Err(_) if !running() => return,
            Err(e) if crate::net::is_resource_exhaustion(&e) => {
                // Blocking twin of the reactor's back-off: accept would fail again at once.
                // One line a second at most, with a count of those held back.
                if let Some(quiet) = warned.allow(Instant::now()) {
                    log::warn!(
                        "accept failed: {e}; pausing accepts for 100ms ({quiet} more since the last warning)"
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => {
                log::debug!("accept: {e}");
                continue;
            }
        };
        if !running() {
            return;
        }
        next_id += 1;
        let id = next_id;
        inner.stats.accepted.fetch_add(1, Ordering::Relaxed);
        log::debug!("accept {peer} as conn {id}");
        let proto = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&*factory)) {
            Ok(proto) => proto,
            Err(payload) => {
                inner.stats.panics.fetch_add(1, Ordering::Relaxed);
                inner.stats.closed.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "the protocol factory panicked: {}; closing conn {id} unopened",
                    crate::error::panic_message(&*payload)
                );
                continue;
            }
        };
        match mode {
            Mode::Iterative => {
                log::trace!(
                    "serving conn {id} to the end on the accept thread; new clients wait in \
                     the kernel's backlog meanwhile"
                );
                run_one(stream, peer, id, proto, inner)
            }
            Mode::Threaded => {
                let inner2 = Arc::clone(inner);
                let who = peer.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("conn-{id}"))
                    .spawn(move || run_one(stream, peer, id, proto, &inner2));
                // A failed spawn drops the closure and with it the stream: closed.
                if let Err(e) = spawned {
                    log::warn!("cannot start a thread for {who}: {e}; closing it");
                    inner.stats.closed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A connection's entry in `Inner::open` while it is served: removed when dropped (also
/// when its protocol panics), before the connection's fd is closed.
struct Registered<'a> {
    inner: &'a Inner,
    id: u64,
}

impl<'a> Registered<'a> {
    /// Registers `fd`, unless a stop has begun (checked under the lock a stop takes: either
    /// the stop sees this entry, or we see the stop).
    fn new(inner: &'a Inner, id: u64, fd: std::os::fd::RawFd) -> Option<Registered<'a>> {
        let mut open = inner.open.lock().unwrap_or_else(|p| p.into_inner());
        if inner.state.load(Ordering::SeqCst) != RUNNING {
            inner.stats.closed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        open.insert(id, fd);
        Some(Registered { inner, id })
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.inner
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.inner.closed.notify_all();
        self.inner.stats.closed.fetch_add(1, Ordering::Relaxed);
    }
}

fn run_one(
    stream: Box<dyn BlockingStream>,
    peer: Endpoint,
    id: u64,
    mut proto: Box<dyn Protocol + Send>,
    inner: &Inner,
) {
    // Declared before the entry, so dropped after it: the fd (and its number) is released
    // only once no stop can shut it down any more.
    let mut stream = stream;
    let Some(_entry) = Registered::new(inner, id, stream.raw_fd()) else {
        return;
    };
    let mut session = Session::accepted(&mut *proto, Arc::clone(&inner.cfg), Instant::now());
    let reason = drive(
        &mut *stream,
        Some(&peer),
        &mut session,
        id,
        Some(&inner.state),
    );
    if matches!(reason, crate::proto::CloseReason::Panicked(_)) {
        inner.stats.panics.fetch_add(1, Ordering::Relaxed);
    }
    log::debug!("close {peer} (conn {id}): {reason}");
}
