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
//! the reactor's. Two differences are the blocking socket's own and are named where they
//! arise: a [`Mailbox`] delivery is written by the delivering thread (the connection's
//! thread sits in `read`), so it is not counted against the session's output limits; and
//! after its own `shutdown(Read)` (a stop, a mailbox's close) a connection can no longer
//! see the peer's FIN, so its drain ends at once.
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
use crate::session::{Context, Phase, Session, SessionConfig};
use mailbox::{lock, Shared, StreamMailbox};
use socket::DeadStream;
use std::cell::OnceCell;
use std::io::{self, Write};
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

/// A socket timeout (`SO_RCVTIMEO` or `SO_SNDTIMEO`) as last set. Those are relative to
/// each call, so bounding every call exactly by the session's deadline would cost a
/// `setsockopt` per read and write; instead it is set again only when the wait it must
/// bound is far from it: when it would wake more than 1/64 of the wait (plus 1 ms) late,
/// or before half the wait has passed. An early wake-up is harmless (the session finds
/// nothing due and the loop waits again), so a deadline is met at most 1/64 late.
#[derive(Default)]
struct SocketTimeout {
    set: Option<Duration>,
}

impl SocketTimeout {
    /// Whether the socket needs `wait` set now.
    fn stale(&self, wait: Option<Duration>) -> bool {
        match (self.set, wait) {
            (None, None) => false,
            (Some(_), None) | (None, Some(_)) => true,
            (Some(set), Some(w)) => set > w + w / 64 + Duration::from_millis(1) || set < w / 2,
        }
    }

    fn arm(
        &mut self,
        wait: Option<Duration>,
        apply: impl FnOnce(Option<Duration>) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.stale(wait) {
            apply(wait)?;
            self.set = wait;
        }
        Ok(())
    }
}

/// Offers `w` everything the session owes, until it is all taken or a write fails (a
/// timeout included); reports each write to the session.
/// The calling thread's name, for the trace: which thread blocks where.
fn thread_name() -> String {
    match std::thread::current().name() {
        Some(name) => format!("thread {name}"),
        None => "the thread".to_string(),
    }
}

fn write_owed<W, P>(w: &mut W, session: &mut Session<P>, cx: &mut Context) -> io::Result<()>
where
    W: Write + ?Sized,
    P: Protocol,
{
    loop {
        let bytes = session.poll_transmit(cx);
        if bytes.is_empty() {
            return Ok(());
        }
        let offered = bytes.len();
        log::trace!(
            "conn {}: {} blocking in write() with {offered} bytes",
            cx.id,
            thread_name()
        );
        let result = match w.write(bytes) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            other => other,
        };
        cx.now = Instant::now();
        match result {
            Ok(n) => {
                log::trace!("conn {}: write() took {n} of {offered} bytes", cx.id);
                session.sent(cx, n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                session.sent(cx, 0);
                return Err(e);
            }
        }
    }
}

/// The loop of a blocking driver: the [`Session`] decides, this only waits. It writes
/// while the session has output (blocking, at most until its deadline), sends the FIN it
/// asks for, feeds a streaming protocol, and otherwise reads (blocking, at most until the
/// deadline). A read or write that times out is the session's deadline coming.
///
/// `stop` is the server's state. After a graceful stop began, a read that returns 0 is
/// taken as our own `shutdown(Read)` (a blocking driver cannot tell it from the peer's
/// FIN): input is over, the session is asked to shut down, and a drain, which can no
/// longer see the peer's FIN, ends at once. After an immediate stop the end is
/// `Shutdown`.
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
    let delivery_timeout = session.config().backlog_timeout.unwrap_or(DELIVERY_TIMEOUT);
    // The socket as the mailboxes share it, once the protocol has asked for one.
    let shared: OnceCell<Arc<Mutex<Shared>>> = OnceCell::new();
    let mut cx = Context::new(Instant::now());
    cx.id = id;
    cx.token = crate::proto::Token(id);
    {
        let own: &S = stream;
        // The socket is cloned (one dup) only if the protocol asks for a mailbox.
        let make = || {
            let shared = shared.get_or_init(|| {
                let clone = own.try_clone_boxed().unwrap_or_else(|e| {
                    // Out of fds: deliveries fail (the mailbox reports the connection gone).
                    log::warn!("cannot clone a socket for its mailbox: {e}");
                    Box::new(DeadStream)
                });
                Arc::new(Mutex::new(Shared::new(clone, delivery_timeout)))
            });
            Mailbox::new(Arc::new(StreamMailbox {
                shared: Arc::clone(shared),
            }))
        };
        let local = stream.local_endpoint();
        let opening = crate::session::Opening {
            peer,
            local: local.as_ref(),
            listener: None,
            mailbox: Some(&make),
        };
        session.open_with(&mut cx, &opening);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut told_to_stop = false;
    // Our own shutdown(Read) (a stop, a mailbox's close) ended the input.
    let mut input_closed = false;
    let (mut read_timeout, mut write_timeout) =
        (SocketTimeout::default(), SocketTimeout::default());
    let reason = loop {
        cx.now = Instant::now();
        if let Some(reason) = session.poll_close() {
            break reason;
        }
        if state() == STOPPED {
            session.fail(&mut cx, CloseReason::Shutdown);
            continue;
        }
        let wait = session
            .poll_timeout()
            .map(|t| t.saturating_duration_since(cx.now));
        // A zero socket timeout would mean "forever": at least a millisecond.
        let bound = wait.map(|w| w.max(Duration::from_millis(1)));
        // Output first: the context must be empty before the session hears anything else.
        let result = if !session.poll_transmit(&cx).is_empty() {
            match shared.get() {
                // Under the mailboxes' lock for all that is owed, so no delivery lands
                // inside it; the socket's write timeout is ours while we hold it.
                Some(shared) => {
                    let mut sh = lock(shared);
                    sh.set_write_timeout(bound)
                        .and_then(|()| write_owed(&mut *sh.stream, session, &mut cx))
                }
                None => write_timeout
                    .arm(bound, |t| stream.set_write_timeout(t))
                    .and_then(|()| write_owed(stream, session, &mut cx)),
            }
        } else if !told_to_stop && state() == DRAINING {
            told_to_stop = true;
            session.shutdown(&mut cx);
            Ok(())
        } else if wait == Some(Duration::ZERO) && (input_closed || !session.wants_read()) {
            // (A deadline that has come while input may be waiting goes through the read
            // below first, bounded to a millisecond: the peer may not have been silent,
            // only unread while this thread was busy, say blocked in a delivery.)
            session.timeout(&mut cx);
            Ok(())
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
        } else if session.wants_read() && !input_closed {
            log::trace!("conn {id}: {} blocking in read()", thread_name());
            let result = read_timeout
                .arm(bound, |t| stream.set_read_timeout(t))
                .and_then(|()| stream.read(&mut buf));
            cx.now = Instant::now();
            match &result {
                Ok(0) => log::trace!("conn {id}: read() returned 0: end of stream"),
                Ok(n) => log::trace!("conn {id}: read() returned {n} bytes"),
                Err(e) => log::trace!("conn {id}: read() failed: {e}"),
            }
            match result {
                Ok(0) => {
                    let (close_requested, gone) = shared.get().map_or((false, false), |s| {
                        let s = lock(s);
                        (s.close_requested, s.gone)
                    });
                    if gone {
                        session.fail(&mut cx, CloseReason::OutputLimit);
                    } else if close_requested {
                        // A mailbox asked to close: send what is queued, then FIN.
                        input_closed = true;
                        session.close(&mut cx);
                    } else if told_to_stop || state() != RUNNING {
                        input_closed = true;
                    } else {
                        session.eof(&mut cx);
                    }
                    Ok(())
                }
                Ok(n) => {
                    session.feed(&mut cx, &buf[..n]);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else if input_closed && session.phase() == Phase::Draining {
            // Our FIN is out, and the peer's can no longer be seen: the drain ends now.
            session.eof(&mut cx);
            Ok(())
        } else {
            // Nothing to send and nothing to read: only time can move the session (a
            // streaming protocol that had nothing to give, a stop's grace). Wait briefly,
            // so that a stop is noticed, then let it try again.
            std::thread::sleep(bound.map_or(Duration::from_millis(10), |b| {
                b.min(Duration::from_millis(10))
            }));
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
                // The socket timeout: the session's deadline, or a little before it.
                cx.now = Instant::now();
                session.timeout(&mut cx);
            }
            Err(_) if state() == STOPPED => session.fail(&mut cx, CloseReason::Shutdown),
            Err(_) if shared.get().is_some_and(|s| lock(s).gone) => {
                session.fail(&mut cx, CloseReason::OutputLimit)
            }
            Err(e) => {
                log::trace!("conn {id}: I/O failed: {e}");
                session.fail(&mut cx, CloseReason::Io(e.kind()));
            }
        }
    };
    if let Some(shared) = shared.get() {
        // The mailboxes' handle would keep the socket open after ours is closed.
        let mut sh = lock(shared);
        sh.gone = true;
        let _ = sh.stream.shutdown(Shutdown::Both);
    }
    reason
}
