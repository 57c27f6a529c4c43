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

mod datagram;
mod mailbox;
mod server;
mod socket;

pub use datagram::{serve_datagrams, BlockingDatagram};
pub use mailbox::DELIVERY_TIMEOUT;
pub use server::{BlockingServer, BlockingStats, Factory, Mode};
pub use socket::{BlockingListener, BlockingStream};

use crate::net::Endpoint;
use crate::proto::{CloseReason, Mailbox, Protocol};
use crate::session::{Context, Session, SessionConfig};
use mailbox::{StreamMailbox, Writer};
use socket::DeadStream;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The server's state, in `Inner::state`.
const RUNNING: u8 = 0;
/// A graceful stop: no more accepts; each connection's protocol is asked to finish.
const DRAINING: u8 = 1;
/// An immediate stop: every connection is shut down now.
const STOPPED: u8 = 2;

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
