//! The blocking drivers: the same protocols over `std::net`, the way the tutorials do it.
//!
//! - [`Mode::Threaded`]: the accept loop hands every connection to a new OS thread, which
//!   blocks in `read` and `write` for that one peer. Simple, and each waiting peer costs
//!   a thread (a stack, a kernel task, a context switch per message).
//! - [`Mode::Iterative`]: the accept loop serves each connection itself, to the end,
//!   before accepting the next. One silent client blocks everyone behind it: that is the
//!   lesson it exists to teach.
//!
//! Both drive a connection with [`serve_connection`], a plain loop: read (blocks), hand
//! the bytes to the protocol, write the reply (blocks until the peer has taken it all).
//!
//! A protocol's timers ([`Protocol::poll_timeout`]) become the read timeout of the
//! blocking `read`: when it times out, [`Protocol::handle_timeout`] runs.
//!
//! Stopping a blocking server needs help from outside, because a thread blocked in
//! `accept` or `read` does not look at flags: [`BlockingServer::stop`] sets the flag,
//! shuts down every open connection (their `read` returns 0) and makes one connection to
//! the listener so that `accept` returns.
//!
//! Datagram protocols get [`serve_datagrams`]: one blocking `recv_from` loop (threads buy
//! nothing for datagrams, so both modes serve them the same way).

use crate::net::Endpoint;
use crate::proto::{Action, CloseReason, DatagramProtocol, Deliver, Mailbox, Out, Protocol};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// How long [`serve_connection`] waits for the peer's FIN after sending its own.
pub const LINGER: Duration = Duration::from_secs(2);

/// Drives one connection to its end with blocking I/O, following the
/// [protocol contract](crate::proto). Returns how it ended once either side has closed;
/// the protocol has been told the same through [`Protocol::handle_close`].
pub fn serve_connection<S, P>(stream: &mut S, proto: &mut P) -> CloseReason
where
    S: BlockingStream + ?Sized,
    P: Protocol + ?Sized,
{
    serve_connection_from(stream, None, proto)
}

/// [`serve_connection`], telling the protocol who the peer is ([`Out::peer`]).
pub fn serve_connection_from<S, P>(
    stream: &mut S,
    peer: Option<&Endpoint>,
    proto: &mut P,
) -> CloseReason
where
    S: BlockingStream + ?Sized,
    P: Protocol + ?Sized,
{
    let reason = drive(stream, peer, proto).unwrap_or_else(|e| CloseReason::Io(e.kind()));
    proto.handle_close(&reason);
    reason
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
    fn write_all<S: BlockingStream + ?Sized>(
        &self,
        stream: &mut S,
        bytes: &[u8],
    ) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match self.shared.get() {
            Some(w) => w.lock().unwrap_or_else(|p| p.into_inner()).write_all(bytes),
            None => stream.write_all(bytes),
        }
    }
}

fn drive<S, P>(stream: &mut S, peer: Option<&Endpoint>, proto: &mut P) -> io::Result<CloseReason>
where
    S: BlockingStream + ?Sized,
    P: Protocol + ?Sized,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut input: Vec<u8> = Vec::new();
    let mut output = Vec::new();
    let writer = Writer {
        shared: std::cell::OnceCell::new(),
    };

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
    let mut out = Out::new(&mut output, Instant::now()).with_mailbox(&make);
    if let Some(peer) = peer {
        out = out.with_peer(peer);
    }
    proto.handle_open(&mut out);
    let mut wants_writable = out.wants_writable();
    let mut action = out.action();
    let mut timeout_set = None;
    loop {
        if action != Action::Abort {
            writer.write_all(stream, &output)?;
        }
        output.clear();
        // A streaming protocol produces its next piece each time the last one is sent.
        while wants_writable && action == Action::Continue {
            let mut out = Out::new(&mut output, Instant::now());
            proto.handle_writable(&mut out);
            wants_writable = out.wants_writable();
            action = out.action();
            if output.is_empty() {
                break;
            }
            if action != Action::Abort {
                writer.write_all(stream, &output)?;
            }
            output.clear();
        }
        match action {
            Action::Continue => {}
            Action::CloseAfterFlush => return linger_close(stream, &mut buf),
            Action::Abort => return Ok(CloseReason::Aborted),
        }
        // The protocol's next deadline bounds the blocking read.
        let deadline = proto.poll_timeout();
        let wait = deadline.map(|d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        if wait != timeout_set {
            stream.set_read_timeout(wait)?;
            timeout_set = wait;
        }
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let mut out = Out::new(&mut output, Instant::now());
                if deadline.is_some_and(|d| d <= out.now()) {
                    proto.handle_timeout(&mut out);
                }
                wants_writable |= out.wants_writable();
                action = out.action();
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut out = Out::new(&mut output, Instant::now());
        if n == 0 {
            let result = proto.handle_eof(&input, &mut out);
            let aborted = out.action() == Action::Abort;
            if !aborted {
                writer.write_all(stream, &output)?;
            }
            return Ok(match result {
                Err(e) => CloseReason::PeerError(e.reason().to_string()),
                Ok(()) if aborted => CloseReason::Aborted,
                Ok(()) => CloseReason::PeerClosed,
            });
        }
        input.extend_from_slice(&buf[..n]);
        match proto.handle_input(&input, &mut out) {
            Ok(used) => {
                input.drain(..used.min(input.len()));
                wants_writable |= out.wants_writable();
                action = out.action();
            }
            Err(e) => {
                log::debug!("closing: {e}");
                action = match out.action() {
                    Action::Abort => Action::Abort,
                    _ => Action::CloseAfterFlush,
                };
            }
        }
    }
}

/// Sends FIN, then reads and discards until the peer's FIN (or [`LINGER`]), so unread
/// input does not make the kernel reset the connection under our last reply.
fn linger_close<S: BlockingStream + ?Sized>(
    stream: &mut S,
    buf: &mut [u8],
) -> io::Result<CloseReason> {
    stream.shutdown(Shutdown::Write)?;
    stream.set_read_timeout(Some(LINGER))?;
    loop {
        match stream.read(buf) {
            Ok(0) => return Ok(CloseReason::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(CloseReason::LingerTimeout),
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

struct Inner {
    stop: AtomicBool,
    /// The fd of every connection being served, so `stop` can shut them down. A `dup`
    /// per connection would do too, but would halve how many connections fit under the
    /// fd limit. Entries are added by the serving thread itself and removed, under this
    /// lock, before its socket is closed, so `stop` never touches a reused fd.
    open: Mutex<HashMap<u64, std::os::fd::RawFd>>,
    stats: BlockingStats,
}

/// A running blocking server (threaded or iterative).
pub struct BlockingServer {
    addr: Endpoint,
    inner: Arc<Inner>,
    accept_thread: Option<JoinHandle<()>>,
}

impl BlockingServer {
    /// Starts serving `listener` in `mode` on a new accept thread.
    pub fn spawn(listener: BlockingListener, mode: Mode, factory: Factory) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            stop: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            stats: BlockingStats::default(),
        });
        let shared = Arc::clone(&inner);
        let accept_thread = std::thread::Builder::new()
            .name(format!("{mode:?}-accept").to_lowercase())
            .spawn(move || accept_loop(listener, mode, factory, shared))?;
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

    /// A `Send` closure that stops this server; see [`BlockingServer::stop`].
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let inner = Arc::clone(&self.inner);
        let addr = self.addr.clone();
        move || stop(&inner, &addr)
    }

    /// Stops accepting and closes every open connection. Idempotent.
    pub fn stop(&self) {
        stop(&self.inner, &self.addr)
    }

    /// Waits for the accept thread to finish (after [`BlockingServer::stop`]).
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

fn stop(inner: &Inner, addr: &Endpoint) {
    if inner.stop.swap(true, Ordering::SeqCst) {
        return;
    }
    for &fd in inner
        .open
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
    {
        // SAFETY: shutdown(2) on an fd that is open while we hold the lock (see `open`);
        // it touches no memory. A blocked read on it then returns 0.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
    // The accept thread is blocked in accept(): a connection of our own wakes it.
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
    log::info!("blocking server on {addr} stopped");
}

fn accept_loop(listener: BlockingListener, mode: Mode, factory: Factory, inner: Arc<Inner>) {
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(pair) => pair,
            Err(_) if inner.stop.load(Ordering::SeqCst) => return,
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
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        next_id += 1;
        let id = next_id;
        inner.stats.accepted.fetch_add(1, Ordering::Relaxed);
        log::debug!("accept {peer} as conn {id}");
        let proto = factory();
        match mode {
            Mode::Iterative => run_one(stream, peer, id, proto, &inner),
            Mode::Threaded => {
                let inner2 = Arc::clone(&inner);
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
        // Checked under the lock `stop` takes: either stop sees this entry, or we see stop.
        if inner.stop.load(Ordering::SeqCst) {
            inner.stats.closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        open.insert(id, stream.raw_fd());
    }
    let reason = serve_connection_from(&mut *stream, Some(&peer), &mut *proto);
    log::debug!("close {peer} (conn {id}): {reason}");
    inner
        .open
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    inner.stats.closed.fetch_add(1, Ordering::Relaxed);
    // Only now, with the entry gone, may the fd be closed (and its number reused).
    drop(stream);
}
