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
//! Stopping a blocking server needs help from outside, because a thread blocked in
//! `accept` or `read` does not look at flags: [`BlockingServer::stop`] sets the flag,
//! shuts down every open connection (their `read` returns 0) and makes one connection to
//! the listener so that `accept` returns.

use crate::proto::{Action, Out, Protocol};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// How long [`serve_connection`] waits for the peer's FIN after sending its own.
pub const LINGER: Duration = Duration::from_secs(2);

/// Drives one connection to its end with blocking I/O, following the
/// [protocol contract](crate::proto). Returns when either side has closed.
pub fn serve_connection<P: Protocol + ?Sized>(
    stream: &mut TcpStream,
    proto: &mut P,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut input: Vec<u8> = Vec::new();
    let mut output = Vec::new();

    let mut out = Out::new(&mut output, Instant::now());
    proto.handle_open(&mut out);
    let mut action = out.action();
    loop {
        if action != Action::Abort {
            stream.write_all(&output)?;
        }
        output.clear();
        match action {
            Action::Continue => {}
            Action::CloseAfterFlush => return linger_close(stream, &mut buf),
            Action::Abort => return Ok(()),
        }
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut out = Out::new(&mut output, Instant::now());
        if n == 0 {
            if let Err(e) = proto.handle_eof(&input, &mut out) {
                log::debug!("{e}");
            }
            if out.action() != Action::Abort {
                stream.write_all(&output)?;
            }
            return Ok(());
        }
        input.extend_from_slice(&buf[..n]);
        match proto.handle_input(&input, &mut out) {
            Ok(used) => {
                input.drain(..used.min(input.len()));
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
fn linger_close(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    stream.set_read_timeout(Some(LINGER))?;
    while let Ok(n) = stream.read(buf) {
        if n == 0 {
            break;
        }
    }
    Ok(())
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
    /// A clone of every open connection's stream, so `stop` can shut them down.
    open: Mutex<HashMap<u64, TcpStream>>,
    stats: BlockingStats,
}

/// A running blocking server (threaded or iterative).
pub struct BlockingServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept_thread: Option<JoinHandle<()>>,
}

impl BlockingServer {
    /// Starts serving `listener` in `mode` on a new accept thread.
    pub fn spawn(listener: TcpListener, mode: Mode, factory: Factory) -> io::Result<Self> {
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
        log::info!("listening on tcp {addr} ({mode:?} driver)");
        Ok(BlockingServer {
            addr,
            inner,
            accept_thread: Some(accept_thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters so far.
    pub fn stats(&self) -> &BlockingStats {
        &self.inner.stats
    }

    /// A `Send` closure that stops this server; see [`BlockingServer::stop`].
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let inner = Arc::clone(&self.inner);
        let addr = self.addr;
        move || stop(&inner, addr)
    }

    /// Stops accepting and closes every open connection. Idempotent.
    pub fn stop(&self) {
        stop(&self.inner, self.addr)
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

fn stop(inner: &Inner, addr: SocketAddr) {
    if inner.stop.swap(true, Ordering::SeqCst) {
        return;
    }
    for stream in inner
        .open
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
    {
        let _ = stream.shutdown(Shutdown::Both);
    }
    // The accept thread is blocked in accept(): a connection of our own wakes it.
    let wake = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        a => a,
    };
    let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
    log::info!("blocking server on {addr} stopped");
}

fn accept_loop(listener: TcpListener, mode: Mode, factory: Factory, inner: Arc<Inner>) {
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
        let _ = stream.set_nodelay(true);
        if let Ok(clone) = stream.try_clone() {
            inner
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, clone);
        }
        let proto = factory();
        match mode {
            Mode::Iterative => run_one(stream, peer, id, proto, &inner),
            Mode::Threaded => {
                let inner2 = Arc::clone(&inner);
                let spawned = std::thread::Builder::new()
                    .name(format!("conn-{id}"))
                    .spawn(move || run_one(stream, peer, id, proto, &inner2));
                if let Err(e) = spawned {
                    log::warn!("cannot start a thread for {peer}: {e}; closing it");
                    forget(&inner, id);
                }
            }
        }
    }
}

fn run_one(
    mut stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    mut proto: Box<dyn Protocol + Send>,
    inner: &Inner,
) {
    match serve_connection(&mut stream, &mut proto) {
        Ok(()) => log::debug!("close {peer} (conn {id})"),
        Err(e) => log::debug!("close {peer} (conn {id}): {e} ({:?})", e.kind()),
    }
    forget(inner, id);
}

fn forget(inner: &Inner, id: u64) {
    inner
        .open
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    inner.stats.closed.fetch_add(1, Ordering::Relaxed);
}
