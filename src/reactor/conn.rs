//! One stream connection inside the reactor: its socket, its readiness, its interest.
//!
//! What the connection *means* (input, output, phases, limits, deadlines, the close
//! reason) lives in its [`Session`], the connection core every driver drives. A `Conn` is
//! the reactor's side only: the non-blocking socket, what the poller said about it, the
//! interest registered for it, the per-turn budget, and the timer armed for it.
//!
//! One visit ([`Conn::drive`]) and the invariants it keeps are described where `cargo doc`
//! shows them: the [reactor's module docs](super), *One connection's visit*.

use super::handle::ConnMailbox;
use super::stream::Stream;
use super::timers::TimerKind;
use super::token::Tag;
use super::Core;
use crate::buf::write_nb;
use crate::net::Endpoint;
use crate::proto::{CloseReason, Mailbox, Protocol};
use crate::session::{clock, Opening, Phase, Session, SessionConfig};
use mio::{Interest, Registry};
use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the poller reported for one source in one event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Bytes (or a connection, or end of stream) can be read.
    pub readable: bool,
    /// The socket's send buffer has room.
    pub writable: bool,
    /// The peer closed its sending side (`EPOLLRDHUP`) or the fd hung up.
    pub read_closed: bool,
    /// An error is pending on the fd.
    pub error: bool,
    /// Urgent (out-of-band) data arrived (`EPOLLPRI`).
    pub priority: bool,
}

/// Readiness as the loop hands it on: a [`Ready`], or the poller's event itself, whose
/// flags are then read only where they are asked for (a connection's visit tests a few;
/// packing all five first showed in the profile of every message).
pub(crate) trait Readiness: Copy {
    /// Bytes (or a connection, or end of stream) can be read.
    fn readable(self) -> bool;
    /// The socket's send buffer has room.
    fn writable(self) -> bool;
    /// The peer closed its sending side, or the fd hung up.
    fn read_closed(self) -> bool;
    /// An error is pending on the fd.
    fn error(self) -> bool;
    /// Urgent (out-of-band) data arrived.
    fn priority(self) -> bool;
    /// All of it, as a [`Ready`].
    fn ready(self) -> Ready {
        Ready {
            readable: self.readable(),
            writable: self.writable(),
            read_closed: self.read_closed(),
            error: self.error(),
            priority: self.priority(),
        }
    }
}

impl Readiness for Ready {
    fn readable(self) -> bool {
        self.readable
    }
    fn writable(self) -> bool {
        self.writable
    }
    fn read_closed(self) -> bool {
        self.read_closed
    }
    fn error(self) -> bool {
        self.error
    }
    fn priority(self) -> bool {
        self.priority
    }
}

impl Readiness for &mio::event::Event {
    fn readable(self) -> bool {
        self.is_readable()
    }
    fn writable(self) -> bool {
        self.is_writable()
    }
    fn read_closed(self) -> bool {
        self.is_read_closed()
    }
    fn error(self) -> bool {
        self.is_error()
    }
    fn priority(self) -> bool {
        self.is_priority()
    }
}

/// What a connection always wants from the poller: readable, and (on Linux) urgent data,
/// since TCP stops a read at the urgent mark and that short read does not mean the
/// receive queue is empty.
#[cfg(any(target_os = "linux", target_os = "android"))]
const READ: Interest = Interest::READABLE.add(Interest::PRIORITY);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const READ: Interest = Interest::READABLE;

/// Why a connection is visited: readiness or a revisit may read; anything else only
/// transmits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Visit {
    Read,
    Write,
}

/// How much one visit may move: bytes read, and bytes a streaming protocol produces.
struct Budget {
    read: usize,
    produce: usize,
}

// Bits of `Conn::flags`.
/// A readable edge arrived and we have not yet read to `WouldBlock`. mio is
/// edge-triggered and will not report it again, so we must remember it ourselves.
const READ_READY: u8 = 1 << 0;
/// The poller has reported the peer's FIN (EPOLLRDHUP): a short read no longer means
/// the socket is drained, since the end of stream is still to be read.
const FIN_SEEN: u8 = 1 << 1;
/// Urgent data was reported and not yet read past: a short read may have stopped at
/// the urgent mark, so only `WouldBlock` says the socket is drained.
const URGENT: u8 = 1 << 2;
/// The slot is on the revisit list for next turn: it spent its budget this turn and
/// must not read again before then, even if a new edge arrives.
const REVISIT_QUEUED: u8 = 1 << 3;
/// The session's backpressure as last seen, to count each pause once (and, when it
/// ends, to release the connections it held).
const PAUSED: u8 = 1 << 4;
/// The application paused its reading ([`Reactor::pause_reading`]): one of the holds
/// counted in `held`.
///
/// [`Reactor::pause_reading`]: super::Reactor::pause_reading
const USER_PAUSED: u8 = 1 << 5;
/// The last write stopped at `WouldBlock`: the send buffer is full until the poller says
/// WRITABLE (an edge it will raise, since WRITABLE is registered while output waits), so
/// writing before then would only return `EAGAIN` again.
const WRITE_BLOCKED: u8 = 1 << 6;

pub(crate) struct Conn {
    session: Session<Box<dyn Protocol>>,
    stream: Stream,
    /// The earliest deadline for which a timer is armed in the heap, in session clock ms.
    pub armed: u64,
    /// Small state, packed so the slot stays 88 bytes (see `flags`).
    flags: u8,
    /// How many connections over their high-water mark hold this one's reading: it
    /// delivered to them (see `Reactor::hold`). Reading waits until it is 0.
    held: u16,
    /// The slab key of the listener that accepted it (`u32::MAX`: none, or that listener
    /// has closed, which clears it: so a key reused by a later listener names only its
    /// own connections). A key alone, to fit beside the flags: the slot stays 88 bytes.
    listener_key: u32,
    /// The interest currently registered with the poller.
    registered: Interest,
}

impl Conn {
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// An accepted connection (`Open`), whose protocol is opened by [`Conn::open`].
    pub fn accepted(stream: Stream, proto: Box<dyn Protocol>, cfg: Arc<SessionConfig>) -> Conn {
        Conn::new(stream, Session::accepted(proto, cfg, Instant::now()))
    }

    /// A connection we dialled (`Connecting`), given up after `timeout`.
    pub fn connecting(
        stream: Stream,
        proto: Box<dyn Protocol>,
        cfg: Arc<SessionConfig>,
        timeout: Option<Duration>,
    ) -> Conn {
        let now = Instant::now();
        Conn::new(stream, Session::connecting(proto, cfg, now, timeout))
    }

    fn new(stream: Stream, session: Session<Box<dyn Protocol>>) -> Conn {
        let mut conn = Conn {
            session,
            stream,
            armed: clock::NEVER,
            flags: 0,
            held: 0,
            listener_key: u32::MAX,
            registered: READ,
        };
        conn.registered = conn.interest();
        conn
    }

    pub fn phase(&self) -> Phase {
        self.session.phase()
    }

    /// The peer's address, asked of the socket (`getpeername`): not stored, since it is
    /// needed only for logs and introspection and would cost every connection 32 bytes.
    /// `None` once the OS no longer knows (after a reset).
    pub fn peer(&self) -> Option<Endpoint> {
        self.stream.peer_endpoint()
    }

    /// The peer for a log line: its address while known, else a placeholder.
    fn who(&self) -> String {
        self.peer()
            .map_or_else(|| "(peer gone)".to_string(), |p| p.to_string())
    }

    pub fn stream_mut(&mut self) -> &mut Stream {
        &mut self.stream
    }

    pub fn buffered_output(&self) -> usize {
        self.session.buffered_output()
    }

    /// Returns true if and only if its unsent output is over the high-water mark (it is
    /// not reading, and those who deliver to it should not either).
    pub fn is_congested(&self) -> bool {
        self.session.is_paused()
    }

    /// One more connection it delivered to is over its high-water mark: hold its reading.
    pub fn hold(&mut self) {
        self.held += 1;
        self.session.hold_input(true);
    }

    /// One connection that held it drained (or closed). Once none holds it, it reads what
    /// waits at once (no new edge will come for input that arrived meanwhile), before any
    /// of its protocol's timers can take the pause for the peer's silence.
    pub fn release(&mut self, tag: Tag, core: &mut Core) {
        self.held = self.held.saturating_sub(1);
        if self.held == 0 {
            self.session.hold_input(false);
            self.drive(tag, core, Visit::Read);
        }
    }

    /// The application pauses reading; returns false if it was paused already.
    pub fn pause_reading(&mut self) -> bool {
        if self.has(USER_PAUSED) {
            return false;
        }
        self.set(USER_PAUSED, true);
        self.hold();
        true
    }

    /// The application resumes reading; returns false if it had not paused it.
    pub fn resume_reading(&mut self, tag: Tag, core: &mut Core) -> bool {
        if !self.has(USER_PAUSED) {
            return false;
        }
        self.set(USER_PAUSED, false);
        self.release(tag, core);
        true
    }

    /// The interest this connection needs now.
    pub fn interest(&self) -> Interest {
        // A connect completes (or fails) with WRITABLE; otherwise WRITABLE is wanted
        // exactly while output waits.
        if self.session.wants_write() || self.phase() == Phase::Connecting {
            READ | Interest::WRITABLE
        } else {
            READ
        }
    }

    /// Derives the interest and the deadline again after a visit: re-registers if the
    /// interest changed (closing the connection if that fails), arms a timer if the
    /// deadline moved earlier.
    #[inline(always)]
    pub fn refresh(&mut self, registry: &Registry, core: &mut Core, tag: Tag) {
        // Nearly always neither changed: only the comparisons are inline.
        if self.interest() != self.registered {
            self.reregister(registry, core, tag);
        }
        // Armed on the millisecond grid, rounded up: late by under 1 ms, never early
        // (`NEVER`, no deadline, is never below the one armed).
        let at_ms = self.session.poll_timeout_ms();
        if at_ms < self.armed {
            self.arm_at(at_ms, core, tag);
        }
    }

    /// [`Conn::refresh`] once the derived interest differs from the registered one.
    #[cold]
    #[inline(never)]
    fn reregister(&mut self, registry: &Registry, core: &mut Core, tag: Tag) {
        if let Err(e) = self.update_interest(registry, tag) {
            log::warn!("conn {}: reregister failed: {e}", tag.key);
            self.close(tag, core, CloseReason::Io(e.kind()));
        }
    }

    /// Re-registers with the poller if and only if the derived interest changed.
    pub fn update_interest(&mut self, registry: &Registry, tag: Tag) -> io::Result<()> {
        let want = self.interest();
        if want != self.registered && self.phase() != Phase::Closed {
            log::trace!(
                "conn {}: interest {:?} -> {:?}",
                tag.key,
                self.registered,
                want
            );
            registry.reregister(&mut self.stream, tag.token(), want)?;
            self.registered = want;
        }
        Ok(())
    }

    /// Arms a timer for `at_ms`: this connection's deadline is now earlier than the one
    /// armed.
    #[inline(never)]
    fn arm_at(&mut self, at_ms: u64, core: &mut Core, tag: Tag) {
        if log::log_enabled!(log::Level::Trace) {
            let left = clock::instant(at_ms).saturating_duration_since(core.now);
            let was = if self.armed == clock::NEVER {
                String::new()
            } else {
                " (moved earlier)".to_string()
            };
            log::trace!(
                "conn {}: deadline armed: {:.1} ms from now{was}",
                tag.key,
                left.as_secs_f64() * 1e3
            );
        }
        core.timers.arm(clock::instant(at_ms), TimerKind::Conn(tag));
        self.armed = at_ms;
    }

    // ---- events -----------------------------------------------------------------------

    /// The connection was just accepted (or its connect succeeded): let the protocol speak
    /// first. `peer` is the address `accept` returned, if known; otherwise it is asked of
    /// the socket.
    pub fn open(&mut self, tag: Tag, core: &mut Core, peer: &Endpoint, listener: (Tag, &Endpoint)) {
        self.listener_key = listener.0.key as u32;
        self.open_session(tag, core, Some(peer), Some(listener.1), Some(listener.0));
        self.drive(tag, core, Visit::Write);
    }

    /// Returns true if and only if the listener in slot `key` (open now) accepted it.
    pub fn accepted_by(&self, key: usize) -> bool {
        self.listener_key as usize == key
    }

    /// Its listener has closed: it belongs to none from now on.
    pub fn forget_listener(&mut self) {
        self.listener_key = u32::MAX;
    }

    /// Tells the session the connection is established, with this connection's mailbox.
    fn open_session(
        &mut self,
        tag: Tag,
        core: &mut Core,
        peer: Option<&Endpoint>,
        local: Option<&Endpoint>,
        listener_tag: Option<Tag>,
    ) {
        let (fetched, fetched_local);
        let peer = match peer {
            Some(p) => Some(p),
            None => {
                fetched = self.peer();
                fetched.as_ref()
            }
        };
        let local = match local {
            Some(l) => Some(l),
            None => {
                fetched_local = self.stream.local_endpoint();
                fetched_local.as_ref()
            }
        };
        let listener = listener_tag.map(Tag::id);
        let shared = Arc::clone(&core.shared);
        // One flag for all of this connection's mailboxes, made only if one is asked for:
        // set when the connection closes, so `deliver` says false from then on.
        let gone = std::cell::OnceCell::new();
        let make = || {
            Mailbox::new(Arc::new(ConnMailbox {
                shared: Arc::clone(&shared),
                tag,
                gone: Arc::clone(gone.get_or_init(|| Arc::new(AtomicBool::new(false)))),
            }))
        };
        let cx = core.cx(tag);
        let opening = Opening {
            peer,
            local,
            listener,
            mailbox: Some(&make),
        };
        self.session.open_with(cx, &opening);
        if let Some(gone) = gone.into_inner() {
            if self.phase() == Phase::Closed {
                gone.store(true, Ordering::Release);
            } else {
                core.mailboxes.insert(tag, gone);
            }
        }
    }

    /// The poller reported readiness for this connection.
    pub fn ready(&mut self, ev: impl Readiness, tag: Tag, core: &mut Core) {
        if self.phase() == Phase::Closed {
            return;
        }
        // A connect is decided by WRITABLE (or an error); until then nothing else applies.
        if self.phase() == Phase::Connecting {
            let decided = ev.writable() || ev.error() || ev.read_closed();
            if !decided || !self.finish_connect(tag, core) {
                return self.finish(tag, core);
            }
        }
        if ev.read_closed() {
            self.set(FIN_SEEN, true);
        }
        if ev.priority() {
            log::trace!("conn {}: urgent data: reading to WouldBlock", tag.key);
            self.set(URGENT, true);
        }
        // An error event also counts as readable: the read will return the error itself.
        if ev.readable() || ev.read_closed() || ev.error() || ev.priority() {
            self.set(READ_READY, true);
        }
        if ev.writable() || ev.error() {
            self.set(WRITE_BLOCKED, false);
        }
        self.drive(tag, core, Visit::Read);
    }

    /// Revisited on the next turn after its budget ran out, without a new edge.
    pub fn revisit(&mut self, tag: Tag, core: &mut Core) {
        self.set(REVISIT_QUEUED, false);
        self.drive(tag, core, Visit::Read);
    }

    /// A timer for this connection fired: the session acts on whichever deadline passed.
    pub fn on_timer(&mut self, tag: Tag, core: &mut Core) {
        let cx = core.cx(tag);
        self.session.timeout(cx);
        self.drive(tag, core, Visit::Write);
    }

    /// Queues `bytes` from outside the protocol (an embedder's `Reactor::send`, a mailbox
    /// delivery). Returns false if the connection no longer sends.
    pub fn send_external(&mut self, bytes: &[u8], tag: Tag, core: &mut Core) -> bool {
        let cx = core.cx(tag);
        let sent = self.session.send(cx, bytes);
        self.drive(tag, core, Visit::Write);
        sent
    }

    /// Closes once queued output is sent, as if the protocol had asked
    /// (`Reactor::close`); a pending connect is abandoned.
    pub fn close_external(&mut self, tag: Tag, core: &mut Core) {
        let cx = core.cx(tag);
        self.session.close(cx);
        self.drive(tag, core, Visit::Write);
    }

    /// Half-closes at the application's request (`Reactor::shutdown_write`).
    pub fn shutdown_write_external(&mut self, tag: Tag, core: &mut Core) -> bool {
        let cx = core.cx(tag);
        let done = self.session.shutdown_write(cx);
        self.drive(tag, core, Visit::Write);
        done
    }

    /// Graceful shutdown of the server: let the protocol finish, or give up on a connect.
    pub fn shutdown(&mut self, tag: Tag, core: &mut Core) {
        let cx = core.cx(tag);
        self.session.shutdown(cx);
        self.drive(tag, core, Visit::Write);
    }

    /// Ends the connection now, for `reason` (the reactor stopping, a failed reregister).
    pub fn close(&mut self, tag: Tag, core: &mut Core, reason: CloseReason) {
        let cx = core.cx(tag);
        self.session.fail(cx, reason);
        self.finish(tag, core);
    }

    // ---- moving bytes -----------------------------------------------------------------

    /// One visit: transmit, then (for a readiness event or a revisit) read while there is
    /// input and budget, transmitting after each read; then reap if the session has ended.
    ///
    /// Only readiness and revisits read: anything else that visits a connection in a turn
    /// (a timer, a delivery, the application) only transmits, and leaves input it finds
    /// waiting to a revisit, so no turn reads more than one budget.
    fn drive(&mut self, tag: Tag, core: &mut Core, visit: Visit) {
        // The context is this connection's for the whole visit: nothing in it lends the
        // context to another connection (what protocols defer runs at the end of the turn).
        let _ = core.cx(tag);
        let full = core.cfg.read_budget;
        let mut budget = match (self.has(REVISIT_QUEUED), visit) {
            // This turn's budget is spent: only write what is owed.
            (true, _) => Budget {
                read: 0,
                produce: 0,
            },
            (false, Visit::Read) => Budget {
                read: full,
                produce: full.saturating_mul(4),
            },
            (false, Visit::Write) => Budget {
                read: 0,
                produce: full.saturating_mul(4),
            },
        };
        self.transmit(tag, core, &mut budget);
        while self.has(READ_READY) && self.session.wants_read() {
            if budget.read == 0 {
                let why = match visit {
                    Visit::Read => "read budget spent",
                    Visit::Write => "input waiting",
                };
                self.yield_turn(tag, core, why);
                break;
            }
            match self.stream.read(&mut core.read_buf) {
                Ok(0) => {
                    log::trace!("conn {}: read 0 bytes: end of stream", tag.key);
                    self.set(READ_READY, false);
                    let cx = core.cx(tag);
                    self.session.eof(cx);
                }
                Ok(n) => {
                    core.stats.bytes_in += n as u64;
                    let short = n < core.read_buf.len();
                    if short && !self.has(FIN_SEEN) && !self.has(URGENT) {
                        // A short read emptied the kernel's receive queue. Anything that
                        // arrives later raises a new edge, so the read that would only
                        // say WouldBlock can be skipped.
                        log::trace!(
                            "conn {}: read {n} bytes (short read: receive queue drained; \
                             skipping the read that would say WouldBlock)",
                            tag.key
                        );
                        self.set(READ_READY, false);
                    } else if short {
                        log::trace!(
                            "conn {}: read {n} bytes (short, but {} pending: reading on to \
                             WouldBlock)",
                            tag.key,
                            if self.has(FIN_SEEN) {
                                "the peer's FIN is"
                            } else {
                                "urgent data is"
                            }
                        );
                    } else {
                        log::trace!(
                            "conn {}: read {n} bytes (the buffer is full: more may wait)",
                            tag.key
                        );
                    }
                    budget.read = budget.read.saturating_sub(n);
                    let (cx, input) = core.input(n);
                    self.session.feed(cx, input);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    log::trace!(
                        "conn {}: read: WouldBlock (EAGAIN): the receive queue is empty; \
                         waiting for the next readable edge",
                        tag.key
                    );
                    self.set(READ_READY, false);
                    self.set(URGENT, false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.fail(tag, core, "read", &e),
            }
            self.transmit(tag, core, &mut budget);
        }
        if self.session.is_paused() && self.has(READ_READY) {
            log::trace!(
                "conn {}: backpressure: {} bytes unsent, not reading",
                tag.key,
                self.session.buffered_output()
            );
        }
        self.finish(tag, core);
    }

    /// Offers the socket what the session owes, sends the FIN it asks for, and asks a
    /// streaming protocol for more while the budget lasts. The context is this
    /// connection's (set by [`Conn::drive`]).
    #[inline(always)]
    fn transmit(&mut self, tag: Tag, core: &mut Core, budget: &mut Budget) {
        // Nothing owed, no FIN due, no stream waiting, no backpressure to account for: the
        // loop below would only find that out (a visit's first transmit, nearly always).
        if !self.has(PAUSED) && self.session.is_quiet(&core.cx) {
            return;
        }
        self.transmit_owed(tag, core, budget);
    }

    /// [`Conn::transmit`] with something to do.
    #[inline(always)]
    fn transmit_owed(&mut self, tag: Tag, core: &mut Core, budget: &mut Budget) {
        loop {
            let bytes = self.session.poll_transmit(&core.cx);
            if !bytes.is_empty() && self.has(WRITE_BLOCKED) {
                log::trace!(
                    "conn {}: {} bytes wait: the send buffer is full until WRITABLE",
                    tag.key,
                    bytes.len()
                );
                // Fresh output moves into the session's queue, as after a refused write.
                self.session.sent(&mut core.cx, 0);
                break;
            } else if !bytes.is_empty() {
                let offered = bytes.len();
                match write_nb(&mut self.stream, bytes) {
                    Ok(n) => {
                        trace_write(tag, n, offered);
                        core.stats.bytes_out += n as u64;
                        self.session.sent(&mut core.cx, n);
                        if n < offered {
                            self.set(WRITE_BLOCKED, true);
                            break;
                        }
                        // All of it went and nothing else is owed (an echo's reply, nearly
                        // always): what is left below would only find that out again.
                        if !self.has(PAUSED) && self.session.is_quiet(&core.cx) {
                            return;
                        }
                    }
                    Err(e) => {
                        self.fail(tag, core, "write", &e);
                        break;
                    }
                }
            } else if self.session.poll_fin(&core.cx) {
                if let Err(e) = self.stream.shutdown(Shutdown::Write) {
                    self.fail(tag, core, "shutdown", &e);
                    break;
                }
                log::trace!("conn {}: shutdown(Write): FIN sent", tag.key);
                self.session.fin_sent(&mut core.cx);
                // The peer's FIN may already be waiting in the receive queue.
                self.set(READ_READY, true);
            } else if self.session.wants_writable(&core.cx) {
                if budget.produce == 0 {
                    self.yield_turn(tag, core, "streaming budget spent");
                    break;
                }
                self.session.writable(&mut core.cx);
                let produced = self.session.poll_transmit(&core.cx).len();
                budget.produce = budget.produce.saturating_sub(produced.max(1));
            } else {
                break;
            }
        }
        let queued = self.session.buffered_output();
        core.stats.peak_output_buffered = core.stats.peak_output_buffered.max(queued);
        let paused = self.session.is_paused();
        if paused && !self.has(PAUSED) {
            core.stats.read_pauses += 1;
        }
        if !paused && self.has(PAUSED) && core.holds.contains_key(&tag) {
            // Drained to the low-water mark: those it held may read again.
            core.released.push(tag);
        }
        self.set(PAUSED, paused);
    }

    /// Puts the connection on the revisit list (once): it continues next turn, after the
    /// others have had theirs, without waiting for a new edge.
    fn yield_turn(&mut self, tag: Tag, core: &mut Core, why: &str) {
        if !self.has(REVISIT_QUEUED) {
            log::trace!(
                "conn {}: {why}, yielding to others until next turn",
                tag.key
            );
            core.stats.budget_yields += 1;
            self.set(REVISIT_QUEUED, true);
            core.revisit.push(tag);
        }
    }

    /// Our SYN was answered: `SO_ERROR` says whether with SYN-ACK (connected) or RST
    /// (refused). Returns true if and only if the connection is now open.
    fn finish_connect(&mut self, tag: Tag, core: &mut Core) -> bool {
        let failure = match self.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) if !self.stream.is_connected() => {
                // WRITABLE without an error or a peer: not decided yet (spurious wake-up).
                log::trace!("conn {}: connect still in progress", tag.key);
                return false;
            }
            Ok(None) => None,
        };
        if let Some(e) = failure {
            let cx = core.cx(tag);
            self.session.fail(cx, CloseReason::ConnectFailed(e.kind()));
            return false;
        }
        log::debug!(
            "connected to {} as conn {}: SYN, SYN-ACK, ACK done",
            self.who(),
            tag.key
        );
        core.stats.connected += 1;
        // Bytes the application queued while connecting go first; the WRITABLE edge that
        // announced the connect is spent, so the visit that follows writes them now.
        self.open_session(tag, core, None, None, None);
        self.phase() != Phase::Closed
    }

    /// An I/O error on this connection: close it, and only it.
    fn fail(&mut self, tag: Tag, core: &mut Core, op: &str, e: &io::Error) {
        log::trace!("conn {}: {op} failed: {e}", tag.key);
        let cx = core.cx(tag);
        self.session.fail(cx, CloseReason::Io(e.kind()));
    }

    /// If the session has ended: count and log why, and queue the slot for reaping.
    #[inline]
    fn finish(&mut self, tag: Tag, core: &mut Core) {
        if self.phase() == Phase::Closed {
            self.finish_closed(tag, core);
        }
    }

    /// [`Conn::finish`] once the session is `Closed` (its reason not yet taken, or taken).
    #[cold]
    #[inline(never)]
    fn finish_closed(&mut self, tag: Tag, core: &mut Core) {
        let Some(reason) = self.session.poll_close() else {
            return;
        };
        match reason {
            CloseReason::IdleTimeout | CloseReason::WriteStall => core.stats.timeouts += 1,
            CloseReason::ConnectFailed(_) | CloseReason::ConnectTimeout => {
                core.stats.connect_failures += 1
            }
            CloseReason::Io(_) => core.stats.io_errors += 1,
            CloseReason::OutputLimit => core.stats.slow_readers += 1,
            CloseReason::Panicked(_) => core.stats.panics += 1,
            _ => {}
        }
        if log::log_enabled!(log::Level::Debug) {
            log::debug!("close {} (conn {}): {reason}", self.who(), tag.key);
        }
        if let Some(gone) = core.mailboxes.remove(&tag) {
            gone.store(true, Ordering::Release);
        }
        debug_assert!(core.reap.last() != Some(&tag));
        core.reap.push(tag);
    }
}

#[inline(always)]
fn trace_write(tag: Tag, written: usize, offered: usize) {
    if written == offered {
        log::trace!("conn {}: wrote {written} bytes", tag.key);
    } else {
        log::trace!(
            "conn {}: wrote {written} of {offered} bytes, then write would block \
             (partial write): {} bytes wait for WRITABLE",
            tag.key,
            offered - written
        );
    }
}
