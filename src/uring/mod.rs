//! The completion driver: the same sessions and protocols, driven from io_uring
//! completions on one thread (cargo feature `uring`, Linux only).
//!
//! # Three ways to wait
//!
//! - **Blocking** ([`crate::blocking`]): the thread waits *inside* `read`; the kernel
//!   copies the bytes into the caller's buffer before the call returns.
//! - **Readiness** ([`crate::reactor`]): the thread waits in `epoll_wait` for "this socket
//!   may be read now", then calls `read` itself, which returns at once. One wait serves
//!   many sockets, but every byte still costs a system call of its own: one `recv`, one
//!   `send` per message, and a `recv` that returns `EAGAIN` to learn the queue is empty.
//! - **Completion** (this module): the thread *hands the kernel the operation* (receive
//!   on this socket, send these bytes, accept on that listener) as an entry in a
//!   submission queue shared with the kernel, and later reads its result from a
//!   completion queue. One `io_uring_enter` submits every operation the turn prepared and
//!   waits for the next completions, so at 64 busy connections one system call carries
//!   about 128 socket operations.
//!
//! # Buffer ownership: the lesson
//!
//! Under readiness a buffer is *lent* to the kernel for the length of one call. Under
//! completion it is *given*: from submission until its completion the kernel may read
//! (a send) or write (a receive) it at any moment, so the program must neither touch,
//! move nor free it (monoio's "rent" API makes this a type: a buffer passed in is only
//! returned with the result). Here that shapes three things:
//!
//! - **Receives** take their buffers from a provided-buffer ring (`buffers.rs`): the kernel
//!   picks a buffer only when data arrives, so a silent connection holds none, and the
//!   buffer goes back to the pool as soon as its bytes have been fed to the session.
//!   (Where the kernel has no buffer rings, before Linux 5.19, each connection gets a
//!   buffer of its own instead.)
//! - **Sends** are copied out of the session into a buffer the connection owns while the
//!   send is in flight. The session keeps its own copy, counted as unsent, so its limits,
//!   backpressure and write-stall clock see exactly what the reactor's would: a send in
//!   flight is output the socket has not taken yet. What the socket took is reported when
//!   the completion says so ([`Session::sent`](crate::session::Session::sent)), the rest
//!   is offered again.
//! - **Closing** a connection cancels its operations and waits for their completions
//!   before the slot (and its send buffer) is freed; stopping the driver waits for every
//!   operation to end before the buffers are.
//!
//! Completion is not free: a send the kernel cannot finish at once is parked on the
//! socket's wait queue inside the kernel, and the per-operation bookkeeping (a request
//! allocation, task work to complete it) costs about what the system call it saves did.
//! Where a loop does one operation per wake-up the two models cost the same
//! (liburing#189 measured epoll ahead on small-message echo). BENCHMARKING.md has the
//! figures measured here.
//!
//! # What it does
//!
//! [`UringServer`] binds a TCP (IPv4, IPv6) or Unix stream listener and serves each
//! connection with a fresh protocol from a [`Factory`], on one thread, through a
//! [`Session`](crate::session::Session) per connection: the connection core the reactor
//! and the blocking drivers drive, so close reasons, limits, half-close and deadlines
//! agree. Accepts are multishot where the kernel has it (5.19+: one submission accepts
//! until cancelled), single-shot otherwise. Receives are single-shot: one in flight per
//! connection, submitted again only while the session wants input, so backpressure is
//! simply not asking (a multishot receive would have to be cancelled to pause). Timers
//! are the wait's own timeout (`IORING_ENTER_EXT_ARG`), the earliest session deadline.
//! Other threads reach the loop through an eventfd it keeps a read on: a stop, a
//! shutdown, a [`Mailbox`](crate::proto::Mailbox) delivery.
//!
//! Datagrams stay on the reactor and the blocking drivers: a UDP socket has no
//! per-connection state to keep, and one `recvmmsg` loop already takes many datagrams a
//! call.
//!
//! `RUST_LOG=trace` narrates every submission, every completion and every wait.
//!
//! # Errors where io_uring is missing
//!
//! [`UringServer::spawn_with`] creates the ring before anything else and returns a clear
//! error (never a panic) where the kernel refuses it: an old kernel (`ENOSYS`),
//! `kernel.io_uring_disabled` or a seccomp filter (`EPERM`), or a kernel without the
//! features relied on (`IORING_FEAT_EXT_ARG`, Linux 5.11+).

mod buffers;
mod driver;

use crate::blocking::Factory;
use crate::net::Endpoint;
use crate::session::SessionConfig;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Counters of a [`UringServer`].
#[derive(Debug, Default)]
pub struct UringStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections finished.
    pub closed: AtomicU64,
    /// Panics caught (in a protocol, which closed its connection with
    /// [`CloseReason::Panicked`](crate::proto::CloseReason::Panicked), or in the factory).
    pub panics: AtomicU64,
    /// `io_uring_enter` calls made (each submits and waits).
    pub enters: AtomicU64,
    /// Completions handled.
    pub completions: AtomicU64,
    /// Connections accepted at the connection limit (they waited for a free slot).
    pub accept_limit_hits: AtomicU64,
}

/// How the driver uses the ring. The defaults use what the kernel has; the fallbacks can be
/// forced, to test them where the kernel has everything.
#[derive(Clone, Debug)]
pub struct UringOptions {
    /// Submission queue entries (a power of two). Default 1,024.
    pub entries: u32,
    /// Receive buffers in the provided-buffer ring (a power of two). Default 256.
    pub buffers: u16,
    /// Size of each receive buffer. Default 16 KiB.
    pub buffer_size: u32,
    /// Use a provided-buffer ring if the kernel has one (5.19+). Default true; false gives
    /// each connection a receive buffer of its own.
    pub buffer_ring: bool,
    /// Use multishot accept if the kernel has it (5.19+). Default true.
    pub multishot_accept: bool,
    /// Most connections open at once; at the limit accepting pauses and new connections
    /// wait in the kernel's listen backlog until one closes. Default: the process's fd
    /// limit minus 32, as the reactor's ([`crate::reactor::Config::max_connections`]).
    pub max_connections: usize,
}

impl Default for UringOptions {
    fn default() -> UringOptions {
        UringOptions {
            entries: 1024,
            buffers: 256,
            buffer_size: 16 * 1024,
            buffer_ring: true,
            multishot_accept: true,
            max_connections: crate::reactor::Config::default().max_connections,
        }
    }
}

/// The server's state, in `Inbox::state`.
const RUNNING: u8 = 0;
/// A graceful stop: no more accepts; each connection's protocol is asked to finish.
const DRAINING: u8 = 1;
/// An immediate stop: every connection is closed now.
const STOPPED: u8 = 2;

/// What other threads hand the loop, and the eventfd that wakes it.
struct Inbox {
    state: AtomicU8,
    /// The grace of a graceful stop, once asked for.
    grace: Mutex<Option<Duration>>,
    /// Mailbox deliveries, in order: (slot, generation, what).
    queue: Mutex<Vec<driver::Delivery>>,
    /// Written to wake the loop; the loop keeps a read submitted on it.
    wake: OwnedFd,
    /// The connection whose protocol the loop is calling, as `(key << 24 | gen) + 1` (0:
    /// none): a delivery made from the loop's thread comes from it.
    current: AtomicU64,
    /// The loop's thread, once it runs.
    loop_thread: std::sync::OnceLock<std::thread::ThreadId>,
}

impl Inbox {
    fn new() -> io::Result<Inbox> {
        // SAFETY: eventfd(2) takes no pointers; the fd is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Inbox {
            state: AtomicU8::new(RUNNING),
            grace: Mutex::new(None),
            queue: Mutex::new(Vec::new()),
            current: AtomicU64::new(0),
            loop_thread: std::sync::OnceLock::new(),
            // SAFETY: a fresh fd, owned by nothing else.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Returns true if and only if called on the loop's own thread.
    fn on_loop_thread(&self) -> bool {
        self.loop_thread.get() == Some(&std::thread::current().id())
    }

    /// The connection whose protocol runs now, as (slot, generation).
    fn current(&self) -> Option<(usize, u32)> {
        match self.current.load(Ordering::Relaxed) {
            0 => None,
            v => Some((((v - 1) >> 24) as usize, ((v - 1) & 0xFF_FFFF) as u32)),
        }
    }

    /// Wakes the loop (its read on the eventfd completes).
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        let _ = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

/// A running completion-driven server: one thread, one io_uring.
pub struct UringServer {
    addr: Endpoint,
    inbox: Arc<Inbox>,
    stats: Arc<UringStats>,
    thread: Option<JoinHandle<()>>,
}

impl UringServer {
    /// Binds `at` (a TCP address, or a Unix socket path: a stale socket file is removed
    /// first) and serves it on a new thread with the default [`SessionConfig`] and
    /// [`UringOptions`].
    ///
    /// # Errors
    ///
    /// As [`UringServer::spawn_with`].
    pub fn spawn(at: &Endpoint, factory: Factory) -> io::Result<UringServer> {
        UringServer::spawn_with(
            at,
            factory,
            SessionConfig::default(),
            UringOptions::default(),
        )
    }

    /// [`UringServer::spawn`] with the given limits and timeouts for every connection
    /// (the ones the reactor applies: [`crate::reactor::Config::session_config`]) and ring
    /// settings.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `cfg` is nonsense ([`SessionConfig::validate`]) or `opts` is (sizes
    /// not powers of two); `Unsupported` or `PermissionDenied`, saying so, where io_uring
    /// is unavailable (see the [module docs](self)); otherwise if the listener cannot be
    /// bound or the thread cannot be started.
    pub fn spawn_with(
        at: &Endpoint,
        factory: Factory,
        cfg: SessionConfig,
        opts: UringOptions,
    ) -> io::Result<UringServer> {
        cfg.validate()?;
        if !opts.entries.is_power_of_two()
            || !opts.buffers.is_power_of_two()
            || opts.buffers > 32_768
            || opts.buffer_size == 0
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "io_uring entries and buffers must be powers of two (buffers at most 32768), \
                 and the buffer size above 0",
            ));
        }
        // The ring first: where io_uring is refused, nothing has been bound.
        let inbox = Arc::new(Inbox::new()?);
        let stats = Arc::new(UringStats::default());
        // The ring and the listener are made on the loop's thread (a session's context
        // stays on one thread); what failed comes back here before anything runs.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (at, loop_inbox, loop_stats) = (at.clone(), Arc::clone(&inbox), Arc::clone(&stats));
        let thread = std::thread::Builder::new()
            .name("uring".into())
            .spawn(move || {
                let started =
                    driver::Driver::new(&opts, Arc::new(cfg), factory, loop_inbox, loop_stats)
                        .and_then(|mut d| d.listen(&at).map(|addr| (d, addr)));
                match started {
                    Ok((d, addr)) => {
                        let _ = ready_tx.send(Ok(addr));
                        d.run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        let addr = match ready_rx.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(io::Error::other(
                    "the uring driver's thread ended before it started",
                ));
            }
        };
        log::info!("listening on {addr} (uring driver)");
        Ok(UringServer {
            addr,
            inbox,
            stats,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> &Endpoint {
        &self.addr
    }

    /// Counters so far.
    pub fn stats(&self) -> &UringStats {
        &self.stats
    }

    /// A `Send` closure that stops this server: the first call gracefully (see
    /// [`UringServer::shutdown`]), any later call at once.
    pub fn stopper(&self, grace: Duration) -> impl Fn() + Send + Sync + 'static {
        let inbox = Arc::clone(&self.inbox);
        move || {
            if !begin_shutdown(&inbox, grace) {
                stop(&inbox);
            }
        }
    }

    /// Starts a graceful stop and returns: no more connections are accepted, each open
    /// connection's protocol is asked to finish ([`Protocol::handle_shutdown`]; by
    /// default it closes once its output is sent), and after `grace` whatever is still
    /// open is closed. [`UringServer::join`] returns once every connection has ended.
    /// Does nothing if a stop has begun already.
    ///
    /// [`Protocol::handle_shutdown`]: crate::proto::Protocol::handle_shutdown
    pub fn shutdown(&self, grace: Duration) {
        begin_shutdown(&self.inbox, grace);
    }

    /// Stops accepting and closes every open connection now (their protocols are told
    /// [`CloseReason::Shutdown`](crate::proto::CloseReason::Shutdown)). Idempotent.
    pub fn stop(&self) {
        stop(&self.inbox)
    }

    /// Waits for the server to finish (after a stop).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for UringServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop();
            let _ = t.join();
        }
    }
}

fn begin_shutdown(inbox: &Inbox, grace: Duration) -> bool {
    *inbox.grace.lock().unwrap_or_else(|p| p.into_inner()) = Some(grace);
    let began = inbox
        .state
        .compare_exchange(RUNNING, DRAINING, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if began {
        inbox.wake();
    }
    began
}

fn stop(inbox: &Inbox) {
    if inbox.state.swap(STOPPED, Ordering::SeqCst) != STOPPED {
        inbox.wake();
    }
}
