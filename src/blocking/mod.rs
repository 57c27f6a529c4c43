//! The blocking drivers: the same sessions and protocols over `std::net`, the way the
//! tutorials do it.
//!
//! - [`Mode::Threaded`]: the accept loop hands every connection to a new OS thread, which
//!   blocks in `read` and `write` for that one peer. Simple, and each waiting peer costs
//!   a thread (a stack, a kernel task, a context switch per message).
//! - [`Mode::Iterative`]: the accept loop serves each connection itself, to the end,
//!   before accepting the next. One silent client blocks everyone behind it: that is the
//!   lesson it exists to teach.
//!
//! Both drive a connection's [`Session`] (the connection core the reactor drives too) with
//! [`serve_connection`], a short loop: write what the session owes (blocks until the peer
//! has taken it), send the FIN it asks for, else read (blocks) and feed what arrived. The
//! session decides everything else, so the close reasons, limits and half-close rules are
//! the reactor's exactly.
//!
//! The session's one deadline ([`Session::poll_timeout`]: the protocol's timers, the idle
//! and write-stall timeouts, the linger after our FIN) becomes the read or write timeout
//! of the blocking call; when it expires, the session's `timeout` runs.
//!
//! Stopping a blocking server needs help from outside, because a thread blocked in
//! `accept` or `read` does not look at flags: [`BlockingServer::shutdown`] wakes every
//! connection with `shutdown(Read)` (its `read` returns 0; its writes still work) and asks
//! its protocol to finish; [`BlockingServer::stop`] shuts down both directions at once.
//! Either makes one connection to the listener so that `accept` returns.
//!
//! Datagram protocols get [`serve_datagrams`]: one blocking `recv_from` loop (threads buy
//! nothing for datagrams, so both modes serve them the same way).

use crate::net::Endpoint;
use crate::proto::{CloseReason, DatagramProtocol, Deliver, Mailbox, Protocol};
use crate::session::{Context, Session, SessionConfig};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A blocking stream socket: TCP or Unix.
pub trait BlockingStream: Read + Write + Send + 'static {
    /// Shuts down one or both directions (`shutdown(2)`).
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// Bounds how long `read` blocks (`None`: forever).
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// Bounds how long `write` blocks (`None`: forever).
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// A second handle to the same socket (for a mailbox's writer).
    fn try_clone_boxed(&self) -> io::Result<Box<dyn BlockingStream>>;
    /// The socket's fd, for [`BlockingServer::stop`] to shut it down without a `dup`.
    fn raw_fd(&self) -> std::os::fd::RawFd;
}

impl BlockingStream for TcpStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, t)
    }
    fn try_clone_boxed(&self) -> io::Result<Box<dyn BlockingStream>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

impl BlockingStream for UnixStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        UnixStream::shutdown(self, how)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, t)
    }
    fn try_clone_boxed(&self) -> io::Result<Box<dyn BlockingStream>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

/// A blocking listening socket: TCP or Unix (whose file is removed on drop).
pub enum BlockingListener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix stream listener and the path it is bound to.
    Unix(UnixListener, PathBuf),
}

impl BlockingListener {
    /// Binds a listener at `at`: TCP with sockloop's backlog, or a Unix socket path
    /// (a stale socket file is removed first).
    pub fn bind(at: &Endpoint) -> io::Result<BlockingListener> {
        match at {
            Endpoint::Inet(a) => Ok(BlockingListener::Tcp(crate::net::bind_tcp(*a)?)),
            Endpoint::Unix(p) => {
                crate::net::clear_stale_unix_socket(p)?;
                Ok(BlockingListener::Unix(UnixListener::bind(p)?, p.clone()))
            }
        }
    }

    /// The bound endpoint.
    pub fn local_addr(&self) -> io::Result<Endpoint> {
        match self {
            BlockingListener::Tcp(l) => l.local_addr().map(Endpoint::Inet),
            BlockingListener::Unix(_, p) => Ok(Endpoint::Unix(p.clone())),
        }
    }

    fn accept(&self) -> io::Result<(Box<dyn BlockingStream>, Endpoint)> {
        match self {
            BlockingListener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                let _ = s.set_nodelay(true);
                Ok((Box::new(s), Endpoint::Inet(peer)))
            }
            BlockingListener::Unix(l, _) => {
                let (s, peer) = l.accept()?;
                Ok((Box::new(s), Endpoint::from_unix(&peer)))
            }
        }
    }
}

impl Drop for BlockingListener {
    fn drop(&mut self) {
        if let BlockingListener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

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

/// Drives one connection to its end with blocking I/O and the default
/// [`SessionConfig`], following the [protocol contract](crate::proto). Returns how it ended
/// once either side has closed; the protocol has been told the same through
/// [`Protocol::handle_close`].
pub fn serve_connection<S, P>(stream: &mut S, proto: &mut P) -> CloseReason
where
    S: BlockingStream + ?Sized,
    P: Protocol + ?Sized,
{
    serve_connection_from(stream, None, proto)
}

/// [`serve_connection`], telling the protocol who the peer is ([`crate::proto::Out::peer`]).
pub fn serve_connection_from<S, P>(
    stream: &mut S,
    peer: Option<&Endpoint>,
    proto: &mut P,
) -> CloseReason
where
    S: BlockingStream + ?Sized,
    P: Protocol + ?Sized,
{
    serve_connection_with(stream, peer, proto, Arc::new(SessionConfig::default()))
}

/// [`serve_connection_from`] with the given limits and timeouts: the same
/// [`Session`] rules as the reactor's, applied with blocking reads and writes whose
/// timeouts are the session's deadline.
pub fn serve_connection_with<S, P>(
    stream: &mut S,
    peer: Option<&Endpoint>,
    proto: &mut P,
    cfg: Arc<SessionConfig>,
) -> CloseReason
where
    S: BlockingStream + ?Sized,
    P: Protocol + ?Sized,
{
    let mut session = Session::accepted(proto, cfg, Instant::now());
    drive(stream, peer, &mut session, 0, None)
}

/// How long a [`Mailbox`] delivery may block on a peer that does not read before that
/// peer is dropped: a slow reader must not hold up the connection delivering to it.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The blocking side of a [`Mailbox`]: another thread writes straight to the socket,
/// under the same lock as the connection's own writes so messages never interleave.
struct StreamMailbox {
    writer: Arc<Mutex<Box<dyn BlockingStream>>>,
}

impl Deliver for StreamMailbox {
    fn deliver(&self, bytes: &[u8]) -> bool {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        match w.write_all(bytes) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("delivery failed ({e}): dropping the connection");
                let _ = w.shutdown(Shutdown::Both);
                false
            }
        }
    }

    fn close(&self) {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        // Our blocking read then returns 0 and the connection ends.
        let _ = w.shutdown(Shutdown::Both);
    }
}

/// Stands in for a socket that could not be cloned: every operation fails.
struct DeadStream;

impl Read for DeadStream {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::NotConnected.into())
    }
}

impl Write for DeadStream {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::NotConnected.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlockingStream for DeadStream {
    fn shutdown(&self, _: Shutdown) -> io::Result<()> {
        Ok(())
    }
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn set_write_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn try_clone_boxed(&self) -> io::Result<Box<dyn BlockingStream>> {
        Ok(Box::new(DeadStream))
    }
    fn raw_fd(&self) -> std::os::fd::RawFd {
        -1
    }
}

/// Where a connection's own output goes: straight to the socket, or, once a mailbox
/// exists, through the lock it shares with deliveries from other threads.
struct Writer {
    shared: std::cell::OnceCell<Arc<Mutex<Box<dyn BlockingStream>>>>,
}

impl Writer {
    fn write<S: BlockingStream + ?Sized>(&self, stream: &mut S, bytes: &[u8]) -> io::Result<usize> {
        match self.shared.get() {
            Some(w) => w.lock().unwrap_or_else(|p| p.into_inner()).write(bytes),
            None => stream.write(bytes),
        }
    }
}

/// The loop of a blocking driver: the [`Session`] decides, this only waits. It writes
/// while the session has output (blocking, at most until its deadline), sends the FIN it
/// asks for, feeds a streaming protocol, and otherwise reads (blocking, at most until the
/// deadline). A read or write that times out is the session's deadline coming.
///
/// `stop` is the server's state: after a graceful stop began, a read that returns 0 may be
/// our own `shutdown(Read)` rather than the peer's FIN (a blocking driver cannot tell), and
/// is taken as the shutdown request; after an immediate stop, the end is `Shutdown`.
fn drive<S, P>(
    stream: &mut S,
    peer: Option<&Endpoint>,
    session: &mut Session<P>,
    id: u64,
    stop: Option<&AtomicU8>,
) -> CloseReason
where
    S: BlockingStream + ?Sized,
    P: Protocol,
{
    let state = || stop.map_or(RUNNING, |s| s.load(Ordering::SeqCst));
    let writer = Writer {
        shared: std::cell::OnceCell::new(),
    };
    let mut cx = Context::new(Instant::now());
    cx.id = id;
    {
        let shared_stream: &S = stream;
        // The socket is cloned (one dup) only if the protocol asks for a mailbox.
        let make = || {
            let w = writer.shared.get_or_init(|| {
                let clone = shared_stream.try_clone_boxed().unwrap_or_else(|e| {
                    // Out of fds: deliveries fail (the mailbox reports the connection gone).
                    log::warn!("cannot clone a socket for its mailbox: {e}");
                    Box::new(DeadStream)
                });
                let _ = clone.set_write_timeout(Some(DELIVERY_TIMEOUT));
                Arc::new(Mutex::new(clone))
            });
            Mailbox::new(Arc::new(StreamMailbox {
                writer: Arc::clone(w),
            }))
        };
        session.open(&mut cx, peer, Some(&make));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut told_to_stop = false;
    // The socket timeouts as last set (`None`: block for as long as it takes).
    let (mut read_timeout, mut write_timeout) = (None, None);
    loop {
        cx.now = Instant::now();
        if let Some(reason) = session.poll_close() {
            return reason;
        }
        if !told_to_stop && state() == DRAINING {
            told_to_stop = true;
            session.shutdown(&mut cx);
            continue;
        }
        let wait = session
            .poll_timeout()
            .map(|t| t.saturating_duration_since(cx.now));
        if wait == Some(Duration::ZERO) {
            session.timeout(&mut cx);
            continue;
        }
        // A zero socket timeout would mean "forever": at least a millisecond.
        let wait = wait.map(|w| w.max(Duration::from_millis(1)));
        let bytes = session.poll_transmit(&cx);
        let result = if !bytes.is_empty() {
            if write_timeout != wait {
                write_timeout = wait;
                if let Err(e) = stream.set_write_timeout(wait) {
                    session.fail(&mut cx, CloseReason::Io(e.kind()));
                    continue;
                }
            }
            let result = writer.write(stream, bytes);
            cx.now = Instant::now();
            session.sent(&mut cx, *result.as_ref().unwrap_or(&0));
            result.map(|_| ())
        } else if session.poll_fin(&cx) {
            let result = stream.shutdown(Shutdown::Write);
            if result.is_ok() {
                log::trace!("conn {id}: shutdown(Write): FIN sent");
                session.fin_sent(&mut cx);
            }
            result
        } else if session.wants_writable(&cx) {
            session.writable(&mut cx);
            Ok(())
        } else if session.wants_read() {
            if read_timeout != wait {
                read_timeout = wait;
                if let Err(e) = stream.set_read_timeout(wait) {
                    session.fail(&mut cx, CloseReason::Io(e.kind()));
                    continue;
                }
            }
            let result = stream.read(&mut buf);
            cx.now = Instant::now();
            match result {
                Ok(0) if state() == STOPPED => {
                    session.fail(&mut cx, CloseReason::Shutdown);
                }
                Ok(0) if state() == DRAINING && !told_to_stop => {
                    // Our own shutdown(Read) woke the read; the loop tells the session.
                }
                Ok(0) => session.eof(&mut cx),
                Ok(n) => session.feed(&mut cx, &buf[..n]),
                Err(_) => {}
            }
            result.map(|_| ())
        } else {
            // Nothing to send and nothing to read: only time can move the session (a
            // streaming protocol that had nothing to give). Wait for the deadline, or
            // briefly, then let it try again.
            std::thread::sleep(wait.unwrap_or(Duration::from_millis(10)));
            cx.now = Instant::now();
            session.timeout(&mut cx);
            Ok(())
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // The socket timeout was the session's deadline.
                cx.now = Instant::now();
                session.timeout(&mut cx);
            }
            Err(_) if state() == STOPPED => session.fail(&mut cx, CloseReason::Shutdown),
            Err(e) => {
                log::trace!("conn {id}: I/O failed: {e}");
                session.fail(&mut cx, CloseReason::Io(e.kind()));
            }
        }
    }
}

/// Serves a datagram protocol on a blocking socket until `stop` is set (checked between
/// datagrams; the socket's read timeout bounds the wait) or the socket fails.
pub fn serve_datagrams<P: DatagramProtocol + ?Sized>(
    sock: &BlockingDatagram,
    proto: &mut P,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut replies = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(pair) => pair,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                log::debug!("recv_from: {e}");
                continue;
            }
        };
        if n >= buf.len() {
            log::warn!(
                "dropped a datagram from {from}: larger than {} bytes",
                buf.len()
            );
            continue;
        }
        proto.handle_datagram(&from, &buf[..n], Instant::now(), &mut replies);
        for t in replies.drain(..) {
            if let Err(e) = sock.send_to(&t.bytes, &t.to) {
                log::debug!("send_to {}: {e}", t.to);
            }
        }
    }
    Ok(())
}

/// A blocking datagram socket: UDP or Unix datagram (whose file is removed on drop).
pub enum BlockingDatagram {
    /// A UDP socket.
    Udp(std::net::UdpSocket),
    /// A Unix datagram socket and the path it is bound to.
    Unix(UnixDatagram, PathBuf),
}

impl BlockingDatagram {
    /// Binds at `at`, with a read timeout of `poll` so a stop request is noticed.
    pub fn bind(at: &Endpoint, poll: Duration) -> io::Result<BlockingDatagram> {
        let sock = match at {
            Endpoint::Inet(a) => BlockingDatagram::Udp(std::net::UdpSocket::bind(a)?),
            Endpoint::Unix(p) => {
                crate::net::clear_stale_unix_socket(p)?;
                BlockingDatagram::Unix(UnixDatagram::bind(p)?, p.clone())
            }
        };
        match &sock {
            BlockingDatagram::Udp(s) => s.set_read_timeout(Some(poll))?,
            BlockingDatagram::Unix(s, _) => s.set_read_timeout(Some(poll))?,
        }
        Ok(sock)
    }

    /// The bound endpoint.
    pub fn local_addr(&self) -> io::Result<Endpoint> {
        match self {
            BlockingDatagram::Udp(s) => s.local_addr().map(Endpoint::Inet),
            BlockingDatagram::Unix(_, p) => Ok(Endpoint::Unix(p.clone())),
        }
    }

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Endpoint)> {
        match self {
            BlockingDatagram::Udp(s) => s.recv_from(buf).map(|(n, a)| (n, Endpoint::Inet(a))),
            BlockingDatagram::Unix(s, _) => {
                s.recv_from(buf).map(|(n, a)| (n, Endpoint::from_unix(&a)))
            }
        }
    }

    fn send_to(&self, bytes: &[u8], to: &Endpoint) -> io::Result<usize> {
        match (self, to) {
            (BlockingDatagram::Udp(s), Endpoint::Inet(a)) => s.send_to(bytes, a),
            (BlockingDatagram::Unix(s, _), Endpoint::Unix(p)) if !p.as_os_str().is_empty() => {
                s.send_to(bytes, p)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot answer {to} from this socket"),
            )),
        }
    }
}

impl Drop for BlockingDatagram {
    fn drop(&mut self) {
        if let BlockingDatagram::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Counters of a blocking server.
#[derive(Debug, Default)]
pub struct BlockingStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections finished.
    pub closed: AtomicU64,
}

/// The server's state, in `Inner::state`.
const RUNNING: u8 = 0;
/// A graceful stop: no more accepts; each connection's protocol is asked to finish.
const DRAINING: u8 = 1;
/// An immediate stop: every connection is shut down now.
const STOPPED: u8 = 2;

struct Inner {
    state: AtomicU8,
    /// The fd of every connection being served, so a stop can shut them down. A `dup`
    /// per connection would do too, but would halve how many connections fit under the
    /// fd limit. Entries are added by the serving thread itself and removed, under this
    /// lock, before its socket is closed, so a stop never touches a reused fd.
    open: Mutex<HashMap<u64, std::os::fd::RawFd>>,
    /// Signalled whenever an entry leaves `open` (a graceful stop waits on it).
    closed: Condvar,
    /// The grace period of a graceful stop, in milliseconds, set when it begins.
    grace_ms: AtomicU64,
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
    /// If the listener's address cannot be read or the thread cannot be started.
    pub fn spawn_with(
        listener: BlockingListener,
        mode: Mode,
        factory: Factory,
        cfg: SessionConfig,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            state: AtomicU8::new(RUNNING),
            open: Mutex::new(HashMap::new()),
            closed: Condvar::new(),
            grace_ms: AtomicU64::new(0),
            cfg: Arc::new(cfg),
            stats: BlockingStats::default(),
        });
        let shared = Arc::clone(&inner);
        let wake = addr.clone();
        let accept_thread = std::thread::Builder::new()
            .name(format!("{mode:?}-accept").to_lowercase())
            .spawn(move || {
                accept_loop(listener, mode, factory, &shared);
                finish(&shared, &wake);
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
    /// told [`CloseReason::Shutdown`]). Idempotent.
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

/// Starts a graceful stop; returns false if a stop had begun already.
fn begin_shutdown(inner: &Inner, addr: &Endpoint, grace: Duration) -> bool {
    if inner
        .state
        .compare_exchange(RUNNING, DRAINING, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return false;
    }
    let open = inner.open.lock().unwrap_or_else(|p| p.into_inner());
    log::info!(
        "shutdown: stopped accepting; waiting up to {grace:?} for {} connections to finish",
        open.len()
    );
    let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    inner.grace_ms.store(ms, Ordering::SeqCst);
    for &fd in open.values() {
        // SAFETY: shutdown(2) on an fd that is open while we hold the lock (see `open`);
        // it touches no memory. A blocked read on it then returns 0; writes still work.
        unsafe { libc::shutdown(fd, libc::SHUT_RD) };
    }
    drop(open);
    wake_accept(addr);
    true
}

fn stop(inner: &Inner, addr: &Endpoint) {
    if inner.state.swap(STOPPED, Ordering::SeqCst) == STOPPED {
        return;
    }
    shut_all(inner);
    wake_accept(addr);
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

/// After the accept loop: wait for the connections still open, for the grace period of a
/// graceful stop, then shut down the rest and wait for them to end.
fn finish(inner: &Inner, addr: &Endpoint) {
    if inner.state.load(Ordering::SeqCst) == DRAINING {
        let grace = Duration::from_millis(inner.grace_ms.load(Ordering::SeqCst));
        let open = inner.open.lock().unwrap_or_else(|p| p.into_inner());
        let (open, waited) = inner
            .closed
            .wait_timeout_while(open, grace, |open| !open.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        if waited.timed_out() {
            log::info!(
                "shutdown: grace period over; closing {} connections still open",
                open.len()
            );
        } else {
            log::info!("shutdown: every connection finished");
        }
        drop(open);
        stop(inner, addr);
    }
    // After an immediate stop every connection ends promptly (its socket is shut down);
    // the bound keeps a wedged thread from hanging `join` forever.
    let open = inner.open.lock().unwrap_or_else(|p| p.into_inner());
    let _ = inner
        .closed
        .wait_timeout_while(open, Duration::from_secs(5), |open| !open.is_empty());
}

fn accept_loop(listener: BlockingListener, mode: Mode, factory: Factory, inner: &Arc<Inner>) {
    let mut next_id = 0u64;
    let running = || inner.state.load(Ordering::SeqCst) == RUNNING;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(pair) => pair,
            Err(_) if !running() => return,
            Err(e) if crate::net::is_resource_exhaustion(&e) => {
                // Blocking twin of the reactor's back-off: accept would fail again at once.
                log::warn!("accept failed: {e}; pausing accepts for 100ms");
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
        let proto = factory();
        match mode {
            Mode::Iterative => run_one(stream, peer, id, proto, inner),
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

fn run_one(
    mut stream: Box<dyn BlockingStream>,
    peer: Endpoint,
    id: u64,
    mut proto: Box<dyn Protocol + Send>,
    inner: &Inner,
) {
    {
        let mut open = inner.open.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock a stop takes: either it sees this entry, or we see it.
        if inner.state.load(Ordering::SeqCst) != RUNNING {
            inner.stats.closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        open.insert(id, stream.raw_fd());
    }
    let mut session = Session::accepted(&mut *proto, Arc::clone(&inner.cfg), Instant::now());
    let reason = drive(
        &mut *stream,
        Some(&peer),
        &mut session,
        id,
        Some(&inner.state),
    );
    log::debug!("close {peer} (conn {id}): {reason}");
    inner
        .open
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    inner.closed.notify_all();
    inner.stats.closed.fetch_add(1, Ordering::Relaxed);
    // Only now, with the entry gone, may the fd be closed (and its number reused).
    drop(stream);
}
