//! One stream connection inside the reactor: its lifecycle, its buffers, its interest.
//!
//! # Lifecycle
//!
//! ```text
//!   connect() ──▶ Connecting ── WRITABLE, SO_ERROR clear ──┐     (refused / timeout: Closed)
//!            accept()                                      ▼
//!   ───────────────────────────────────────────────────▶  Open ── peer's FIN ──▶ PeerClosed
//!                          │                                         │ output drained
//!        protocol asks to  │                                         ▼ close(): our FIN
//!        close / PeerError ▼                                       Closed
//!                        Closing ── output drained: shutdown(Write) ──▶ Draining
//!                          │ peer's FIN first: behaves as PeerClosed     │ peer's FIN,
//!                          ▼                                             │ or linger timeout
//!                      PeerClosed                                        ▼
//!                                                                      Closed
//!   any I/O error, or Action::Abort, from any state ─────────────────▶ Closed
//! ```
//!
//! Invariants:
//! - `Closed` is entered once, through [`Conn::close`], which tells the protocol why
//!   (`handle_close`) and queues the slot for reaping at the end of the turn; no I/O
//!   happens on a `Closed` connection.
//! - A connection has at most one deadline that matters (the earliest of its connect or
//!   linger deadline, idle and write-stall timeouts and its protocol's `poll_timeout`);
//!   a timer is armed only when that deadline moves *earlier* than the one already armed,
//!   so activity that pushes an idle deadline later costs no timer operation.
//! - The protocol sees input only while `Open`; after `Closing` it is never called again.
//! - `out` never holds more than the configured output limit: above it the connection
//!   is closed rather than allowed to grow.
//! - Registered interest is derived from the state ([`Conn::interest`]), never set by hand:
//!   READABLE always, WRITABLE exactly while `out` is non-empty.

use super::handle::ConnMailbox;
use super::stream::Stream;
use super::timers::TimerKind;
use super::token::Tag;
use super::{Core, Timeouts};
use crate::buf::{write_nb, InBuf, OutBuf};
use crate::net::Endpoint;
use crate::proto::{Action, CloseReason, Mailbox, Out, Protocol};
use mio::{Interest, Registry};
use std::fmt;
use std::io::{self, Read};
use std::net::Shutdown;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// No deadline: the sentinel for the millisecond times below.
pub(crate) const NEVER: u64 = u64::MAX;

/// A duration in whole milliseconds, rounded up.
fn ms_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(NEVER)
}

/// Where a connection is in its life. Named after what the socket is doing; the TCP state
/// each corresponds to is in the `Display` text and in ARCHITECTURE.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Our SYN is sent (a non-blocking connect returned `EINPROGRESS`); waiting for
    /// WRITABLE, then `SO_ERROR` tells success from failure (TCP SYN_SENT).
    Connecting,
    /// Both directions open: bytes flow to the protocol and back (TCP ESTABLISHED).
    Open,
    /// The peer sent FIN; we still send what we owe, then close (TCP CLOSE_WAIT).
    PeerClosed,
    /// We decided to close; we still send what we owe, then send FIN (TCP ESTABLISHED,
    /// FIN not yet sent).
    Closing,
    /// Our FIN is sent; we discard input until the peer's FIN or a deadline, so that
    /// closing with unread input does not turn into a reset that destroys the reply we
    /// just sent (TCP FIN_WAIT_1 / FIN_WAIT_2).
    Draining,
    /// We sent FIN because the application has nothing more to say (a client at the end
    /// of its input), and keep reading: the peer's replies still reach the protocol
    /// (TCP FIN_WAIT_2). Ends at the peer's FIN.
    HalfClosed,
    /// Finished; the slot is freed and the fd closed at the end of this turn.
    Closed,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connecting => "Connecting (SYN_SENT)",
            Phase::Open => "Open (ESTABLISHED)",
            Phase::PeerClosed => "PeerClosed (CLOSE_WAIT)",
            Phase::Closing => "Closing (flushing before FIN)",
            Phase::Draining => "Draining (FIN_WAIT)",
            Phase::HalfClosed => "HalfClosed (FIN sent, still reading)",
            Phase::Closed => "Closed",
        })
    }
}

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
}

impl Ready {
    pub(crate) fn of(ev: &mio::event::Event) -> Ready {
        Ready {
            readable: ev.is_readable(),
            writable: ev.is_writable(),
            read_closed: ev.is_read_closed(),
            error: ev.is_error(),
        }
    }
}

pub(crate) struct Conn {
    stream: Stream,
    proto: Box<dyn Protocol>,
    phase: Phase,
    /// Bytes read but not yet consumed by the protocol (a partial message).
    input: InBuf,
    /// Bytes produced by the protocol that the socket has not taken yet.
    out: OutBuf,
    /// A readable edge arrived and we have not yet read to `WouldBlock`. mio is
    /// edge-triggered and will not report it again, so we must remember it ourselves.
    read_ready: bool,
    /// The poller has reported the peer's FIN (EPOLLRDHUP): a short read no longer means
    /// the socket is drained, since the end of stream is still to be read.
    fin_seen: bool,
    /// Reading is suspended because `out` reached the high-water mark.
    paused: bool,
    /// The slot is on the revisit list for next turn: it spent its read budget this turn
    /// and must not read again before then, even if a new edge arrives.
    revisit_queued: bool,
    /// The protocol asked for `handle_writable` once its output has drained.
    wants_writable: bool,
    /// The application asked to half-close: send FIN once `out` drains, keep reading.
    fin_pending: bool,
    /// The interest currently registered with the poller.
    registered: Interest,
    /// Idle and write-stall timeouts, shared with the listener that accepted us.
    timeouts: Rc<Timeouts>,
    // Times below are milliseconds since the reactor's epoch (`Core::ms`), rounded up so a
    // deadline derived from them is never early; `NEVER` means none. Four `Instant`s would
    // cost 64 bytes a connection, these cost 32.
    /// When a byte last moved either way (for the idle timeout).
    last_io: u64,
    /// The connect deadline while `Connecting`, the linger deadline while `Draining`.
    phase_deadline: u64,
    /// The earliest deadline for which a timer is armed in the heap.
    pub armed: u64,
}

impl Conn {
    /// A connection in `phase` (`Open` when accepted, `Connecting` when we dialled).
    pub fn new(
        stream: Stream,
        proto: Box<dyn Protocol>,
        phase: Phase,
        timeouts: Rc<Timeouts>,
        now: u64,
    ) -> Conn {
        Conn {
            stream,
            proto,
            phase,
            input: InBuf::new(),
            out: OutBuf::new(),
            read_ready: false,
            fin_seen: false,
            paused: false,
            revisit_queued: false,
            wants_writable: false,
            fin_pending: false,
            registered: Conn::interest_for(phase, false),
            timeouts,
            last_io: now,
            phase_deadline: NEVER,
            armed: NEVER,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
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

    /// Sets the deadline for the current phase (a connect timeout).
    pub fn set_phase_deadline(&mut self, at: Option<Instant>, core: &Core) {
        self.phase_deadline = at.map_or(NEVER, |t| core.ms(t));
    }

    pub fn buffered_output(&self) -> usize {
        self.out.len()
    }

    /// The interest this connection needs now.
    pub fn interest(&self) -> Interest {
        Conn::interest_for(self.phase, !self.out.is_empty())
    }

    fn interest_for(phase: Phase, pending: bool) -> Interest {
        // A connect completes (or fails) with WRITABLE; otherwise WRITABLE is wanted
        // exactly while output waits.
        if pending || phase == Phase::Connecting {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    /// The idle deadline, in reactor milliseconds (`NEVER` if none applies).
    fn idle_deadline(&self) -> u64 {
        match self.timeouts.idle {
            Some(d) if self.phase != Phase::Connecting => self.last_io.saturating_add(ms_of(d)),
            _ => NEVER,
        }
    }

    /// The write-stall deadline, in reactor milliseconds (`NEVER` if none applies).
    fn stall_deadline(&self) -> u64 {
        match self.timeouts.write_stall {
            // The stall clock lives with the backlog: when output started waiting, or the
            // socket last took some of it.
            Some(d) if !self.out.is_empty() => self.out.stamp().saturating_add(ms_of(d)),
            _ => NEVER,
        }
    }

    /// The earliest time this connection needs attention, if any.
    pub fn deadline(&self, core: &Core) -> Option<Instant> {
        let ms = self
            .phase_deadline
            .min(self.idle_deadline())
            .min(self.stall_deadline());
        let mut at = (ms != NEVER).then(|| core.instant(ms));
        if self.phase == Phase::Open {
            if let Some(t) = self.proto.poll_timeout() {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        }
        at
    }

    /// A timer for this connection fired: act on whichever deadline has passed.
    pub fn on_timer(&mut self, tag: Tag, core: &mut Core) {
        let now = core.now;
        // A deadline of `d` ms is due once `d` whole milliseconds have passed.
        let now_ms = core.ms_floor(now);
        let due = |ms: u64| ms != NEVER && ms <= now_ms;
        if due(self.phase_deadline) {
            match self.phase {
                Phase::Connecting => {
                    core.stats.connect_failures += 1;
                    return self.close(tag, core, CloseReason::ConnectTimeout);
                }
                Phase::Draining => return self.close(tag, core, CloseReason::LingerTimeout),
                _ => {}
            }
        }
        if self.phase == Phase::Closed || self.phase == Phase::Connecting {
            return;
        }
        if due(self.idle_deadline()) {
            core.stats.timeouts += 1;
            return self.close(tag, core, CloseReason::IdleTimeout);
        }
        if due(self.stall_deadline()) {
            core.stats.timeouts += 1;
            return self.close(tag, core, CloseReason::WriteStall);
        }
        if self.phase == Phase::Open && self.proto.poll_timeout().is_some_and(|t| t <= now) {
            core.scratch.clear();
            let mut out = Out::new(&mut core.scratch, now);
            self.proto.handle_timeout(&mut out);
            self.wants_writable |= out.wants_writable();
            let action = out.action();
            self.send_scratch(tag, core, action);
        }
    }

    /// Arms a timer if this connection's deadline is now earlier than the one armed.
    pub fn arm_deadline(&mut self, tag: Tag, core: &mut Core) {
        if self.phase == Phase::Closed {
            return;
        }
        if let Some(at) = self.deadline(core) {
            // Armed on the millisecond grid, rounded up: late by under 1 ms, never early.
            let at_ms = core.ms(at);
            if at_ms < self.armed {
                core.timers.arm(core.instant(at_ms), TimerKind::Conn(tag));
                self.armed = at_ms;
            }
        }
    }

    /// Queues `bytes` from outside the protocol (an embedder's `Reactor::send`), behind
    /// any output already queued. Returns false if the connection no longer sends.
    pub fn send_external(&mut self, bytes: &[u8], tag: Tag, core: &mut Core) -> bool {
        if self.phase == Phase::Connecting {
            // Held until the connect completes, then sent before anything else.
            Self::queue(&mut self.out, bytes, core.now_ms());
            self.after_queue(tag, core);
            return self.phase != Phase::Closed;
        }
        if !matches!(self.phase, Phase::Open | Phase::PeerClosed | Phase::Closing) {
            return false;
        }
        core.scratch.clear();
        core.scratch.extend_from_slice(bytes);
        self.send_scratch(tag, core, Action::Continue);
        true
    }

    /// Closes once queued output is sent, as if the protocol had asked
    /// (`Reactor::close`); a pending connect is abandoned.
    pub fn close_external(&mut self, tag: Tag, core: &mut Core) {
        match self.phase {
            Phase::Connecting => self.close(tag, core, CloseReason::Aborted),
            Phase::Open => {
                core.scratch.clear();
                self.send_scratch(tag, core, Action::CloseAfterFlush);
            }
            _ => {}
        }
    }

    /// Half-closes at the application's request (`Reactor::shutdown_write`): FIN goes
    /// out once queued output is sent, and input keeps reaching the protocol.
    pub fn shutdown_write_external(&mut self, tag: Tag, core: &mut Core) -> bool {
        if self.phase != Phase::Open {
            return false;
        }
        self.fin_pending = true;
        self.finish_if_flushed(tag, core);
        true
    }

    /// Graceful shutdown of the server: let the protocol finish, or give up on a connect.
    pub fn shutdown(&mut self, tag: Tag, core: &mut Core) {
        match self.phase {
            Phase::Open => {
                core.scratch.clear();
                let mut out = Out::new(&mut core.scratch, core.now);
                self.proto.handle_shutdown(&mut out);
                self.wants_writable |= out.wants_writable();
                let action = out.action();
                self.send_scratch(tag, core, action);
            }
            Phase::Connecting => self.close(tag, core, CloseReason::Shutdown),
            _ => {}
        }
    }

    /// Re-registers with the poller if and only if the derived interest changed.
    pub fn update_interest(&mut self, registry: &Registry, tag: Tag) -> io::Result<()> {
        let want = self.interest();
        if want != self.registered && self.phase != Phase::Closed {
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

    /// The connection was just accepted: let the protocol speak first.
    /// `peer` is the address `accept` returned, if known; otherwise it is asked of the
    /// socket.
    pub fn open(&mut self, tag: Tag, core: &mut Core, peer: Option<&Endpoint>) {
        let fetched;
        let peer = match peer {
            Some(p) => Some(p),
            None => {
                fetched = self.peer();
                fetched.as_ref()
            }
        };
        let Core {
            scratch,
            now,
            shared,
            ..
        } = &mut *core;
        scratch.clear();
        let make = || {
            Mailbox::new(std::sync::Arc::new(ConnMailbox {
                shared: std::sync::Arc::clone(shared),
                tag,
            }))
        };
        let mut out = Out::new(scratch, *now).with_mailbox(&make);
        if let Some(peer) = peer {
            out = out.with_peer(peer);
        }
        self.proto.handle_open(&mut out);
        self.wants_writable |= out.wants_writable();
        let action = out.action();
        self.send_scratch(tag, core, action);
        self.pump(tag, core);
    }

    /// Feeds a streaming protocol: while it wants more and everything so far has been
    /// sent, ask it for the next piece, up to a per-turn budget (then continue next turn).
    fn pump(&mut self, tag: Tag, core: &mut Core) {
        let mut budget = core.cfg.read_budget.saturating_mul(4);
        while self.wants_writable
            && self.out.is_empty()
            && matches!(self.phase, Phase::Open | Phase::PeerClosed)
        {
            if budget == 0 {
                if !self.revisit_queued {
                    self.revisit_queued = true;
                    core.revisit.push(tag);
                }
                return;
            }
            self.wants_writable = false;
            core.scratch.clear();
            let mut out = Out::new(&mut core.scratch, core.now);
            self.proto.handle_writable(&mut out);
            self.wants_writable = out.wants_writable();
            let action = out.action();
            let produced = core.scratch.len();
            self.send_scratch(tag, core, action);
            if produced == 0 {
                // Asked for more but had nothing to give: wait for the next event rather
                // than spin.
                return;
            }
            budget = budget.saturating_sub(produced);
        }
    }

    /// The poller reported readiness for this connection.
    pub fn ready(&mut self, ev: Ready, tag: Tag, core: &mut Core) {
        if self.phase == Phase::Closed {
            return;
        }
        // A connect is decided by WRITABLE (or an error); until then nothing else applies.
        let decided = ev.writable || ev.error || ev.read_closed;
        if self.phase == Phase::Connecting && !(decided && self.finish_connect(tag, core)) {
            return;
        }
        if ev.writable && !self.out.is_empty() {
            self.flush(tag, core);
        }
        if ev.read_closed {
            self.fin_seen = true;
        }
        // An error event also counts as readable: the read will return the error itself.
        if ev.readable || ev.read_closed || ev.error {
            self.read_ready = true;
        }
        // Already queued to read next turn: this turn's budget is spent.
        if !self.revisit_queued {
            self.read(tag, core);
            self.pump(tag, core);
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
            core.stats.connect_failures += 1;
            self.close(tag, core, CloseReason::ConnectFailed(e.kind()));
            return false;
        }
        log::debug!(
            "connected to {} as conn {}: SYN, SYN-ACK, ACK done",
            self.who(),
            tag.key
        );
        core.stats.connected += 1;
        self.phase_deadline = NEVER;
        self.set_phase(Phase::Open, tag, core);
        self.last_io = core.now_ms();
        // Bytes the application queued while connecting go first. The WRITABLE edge that
        // announced the connect is spent, so write them now rather than wait for another.
        if !self.out.is_empty() {
            self.flush(tag, core);
            if self.phase != Phase::Open {
                return false;
            }
        }
        self.open(tag, core, None);
        self.phase == Phase::Open
    }

    /// Revisited on the next turn after its read budget ran out, without a new edge.
    pub fn revisit(&mut self, tag: Tag, core: &mut Core) {
        self.revisit_queued = false;
        self.read(tag, core);
        self.pump(tag, core);
    }

    /// Reads until `WouldBlock`, the per-turn budget, the high-water mark, or the end of
    /// the stream, handing each chunk to the protocol as it arrives.
    fn read(&mut self, tag: Tag, core: &mut Core) {
        let mut budget = core.cfg.read_budget;
        while self.read_ready && !self.paused && self.phase != Phase::Closed {
            match self.stream.read(&mut core.read_buf) {
                Ok(0) => {
                    log::trace!("conn {}: read 0 bytes: end of stream", tag.key);
                    self.read_ready = false;
                    self.on_eof(tag, core);
                    return;
                }
                Ok(n) => {
                    log::trace!("conn {}: read {n} bytes", tag.key);
                    core.stats.bytes_in += n as u64;
                    self.last_io = core.now_ms();
                    match self.phase {
                        Phase::Open | Phase::HalfClosed => self.deliver(n, tag, core),
                        _ => log::trace!(
                            "conn {}: discarding {n} bytes while {}",
                            tag.key,
                            self.phase
                        ),
                    }
                    if n < core.read_buf.len() && !self.fin_seen {
                        // A short read emptied the kernel's receive queue. Anything that
                        // arrives later raises a new edge, so the read that would only
                        // say WouldBlock can be skipped.
                        log::trace!("conn {}: short read: receive queue drained", tag.key);
                        self.read_ready = false;
                        break;
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 && self.read_ready && !self.paused {
                        log::trace!(
                            "conn {}: read budget spent, yielding to others until next turn",
                            tag.key
                        );
                        core.stats.budget_yields += 1;
                        self.revisit_queued = true;
                        core.revisit.push(tag);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    log::trace!("conn {}: read would block", tag.key);
                    self.read_ready = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(tag, core, "read", &e),
            }
        }
    }

    /// Hands `core.read_buf[..n]` (after any kept partial input) to the protocol.
    fn deliver(&mut self, n: usize, tag: Tag, core: &mut Core) {
        let Core {
            read_buf,
            scratch,
            now,
            cfg,
            ..
        } = &mut *core;
        scratch.clear();
        let mut out = Out::new(scratch, *now);
        let result = if self.input.is_empty() {
            let fresh = &read_buf[..n];
            self.proto.handle_input(fresh, &mut out).map(|used| {
                let used = used.min(n);
                if used < n {
                    self.input.extend(&fresh[used..]);
                }
            })
        } else {
            self.input.extend(&read_buf[..n]);
            self.proto
                .handle_input(self.input.as_slice(), &mut out)
                .map(|used| self.input.consume(used))
        };
        self.wants_writable |= out.wants_writable();
        let mut action = out.action();
        match result {
            Ok(()) if self.input.len() > cfg.max_input => {
                log::debug!(
                    "conn {}: closing: {} bytes of unconsumed input exceed the limit of {}",
                    tag.key,
                    self.input.len(),
                    cfg.max_input
                );
                action = Action::CloseAfterFlush;
            }
            Ok(()) => {}
            Err(e) => {
                log::debug!("conn {}: closing: {e}", tag.key);
                if action == Action::Continue {
                    action = Action::CloseAfterFlush;
                }
            }
        }
        self.send_scratch(tag, core, action);
    }

    fn on_eof(&mut self, tag: Tag, core: &mut Core) {
        match self.phase {
            Phase::Open => {
                core.scratch.clear();
                let mut out = Out::new(&mut core.scratch, core.now);
                let result = self.proto.handle_eof(self.input.as_slice(), &mut out);
                self.wants_writable |= out.wants_writable();
                let mut action = out.action();
                if let Err(e) = result {
                    log::debug!("conn {}: {e}", tag.key);
                    if action == Action::Continue {
                        action = Action::CloseAfterFlush;
                    }
                }
                self.input.clear();
                self.set_phase(Phase::PeerClosed, tag, core);
                self.send_scratch(tag, core, action);
            }
            Phase::Closing => {
                // We were about to close anyway; the peer beat us to it.
                self.set_phase(Phase::PeerClosed, tag, core);
                self.finish_if_flushed(tag, core);
            }
            Phase::Draining => self.close(tag, core, CloseReason::Closed),
            Phase::HalfClosed => {
                core.scratch.clear();
                let mut out = Out::new(&mut core.scratch, core.now);
                if let Err(e) = self.proto.handle_eof(self.input.as_slice(), &mut out) {
                    log::debug!("conn {}: {e}", tag.key);
                }
                self.close(tag, core, CloseReason::PeerClosed);
            }
            Phase::Connecting | Phase::PeerClosed | Phase::Closed => {}
        }
    }

    /// Sends what the protocol left in `core.scratch` and obeys its action.
    fn send_scratch(&mut self, tag: Tag, core: &mut Core, action: Action) {
        if action == Action::Abort {
            return self.close(tag, core, CloseReason::Aborted);
        }
        if self.phase == Phase::HalfClosed && !core.scratch.is_empty() {
            // Our FIN is sent: nothing more can go out.
            log::debug!(
                "conn {}: dropping {} bytes of output produced after our FIN",
                tag.key,
                core.scratch.len()
            );
            core.scratch.clear();
        }
        if !core.scratch.is_empty() {
            if self.out.is_empty() {
                // Write first and keep only what the socket refuses: in the common case
                // the reply leaves in this very write and WRITABLE is never registered.
                match write_nb(&mut self.stream, &core.scratch) {
                    Ok(w) => {
                        self.trace_write(tag, w, core.scratch.len());
                        core.stats.bytes_out += w as u64;
                        if w > 0 {
                            self.last_io = core.now_ms();
                        }
                        if w < core.scratch.len() {
                            let rest = &core.scratch[w..];
                            Self::queue(&mut self.out, rest, core.now_ms());
                        }
                    }
                    Err(e) => return self.fail(tag, core, "write", &e),
                }
            } else {
                // Earlier bytes are still queued; these must go after them.
                Self::queue(&mut self.out, &core.scratch, core.now_ms());
            }
            self.after_queue(tag, core);
            if self.phase == Phase::Closed {
                return;
            }
        }
        if action == Action::CloseAfterFlush && self.phase == Phase::Open {
            self.set_phase(Phase::Closing, tag, core);
        }
        self.finish_if_flushed(tag, core);
    }

    /// Queues output behind what waits; a backlog that starts now starts the write-stall
    /// clock. (An associated function, so callers may lend `core.scratch` as `bytes`.)
    fn queue(out: &mut OutBuf, bytes: &[u8], now_ms: u64) {
        let started = out.is_empty();
        out.extend(bytes);
        if started {
            out.set_stamp(now_ms);
        }
    }

    fn trace_write(&self, tag: Tag, written: usize, offered: usize) {
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

    /// Enforces the output limit and the high-water mark after output was queued.
    fn after_queue(&mut self, tag: Tag, core: &mut Core) {
        let queued = self.out.len();
        core.stats.peak_output_buffered = core.stats.peak_output_buffered.max(queued);
        if queued > core.cfg.output_limit {
            log::debug!(
                "conn {}: {queued} bytes of output queued, over the limit of {}",
                tag.key,
                core.cfg.output_limit
            );
            self.close(tag, core, CloseReason::OutputLimit);
        } else if queued >= core.cfg.high_water && !self.paused {
            log::trace!(
                "conn {}: backpressure: {queued} bytes unsent (high water {}), stop reading",
                tag.key,
                core.cfg.high_water
            );
            core.stats.read_pauses += 1;
            self.paused = true;
        }
    }

    /// Sends queued output on WRITABLE; resumes reading once below the low-water mark.
    fn flush(&mut self, tag: Tag, core: &mut Core) {
        let offered = self.out.len();
        match self.out.flush_to(&mut self.stream) {
            Ok(w) => {
                self.trace_write(tag, w, offered);
                core.stats.bytes_out += w as u64;
                if w > 0 {
                    self.last_io = core.now_ms();
                    // The peer took some: the write-stall clock starts again.
                    self.out.set_stamp(core.now_ms());
                }
            }
            Err(e) => return self.fail(tag, core, "write", &e),
        }
        if self.paused && self.out.len() <= core.cfg.low_water {
            log::trace!(
                "conn {}: backpressure released: {} bytes unsent (low water {}), resume reading",
                tag.key,
                self.out.len(),
                core.cfg.low_water
            );
            self.paused = false;
        }
        self.finish_if_flushed(tag, core);
    }

    /// Takes the next step of an orderly close once everything owed has been sent.
    fn finish_if_flushed(&mut self, tag: Tag, core: &mut Core) {
        if !self.out.is_empty() {
            return;
        }
        match self.phase {
            Phase::PeerClosed => self.close(tag, core, CloseReason::PeerClosed),
            Phase::Open if self.fin_pending => {
                if let Err(e) = self.stream.shutdown(Shutdown::Write) {
                    return self.fail(tag, core, "shutdown", &e);
                }
                log::trace!("conn {}: shutdown(Write): FIN sent, still reading", tag.key);
                self.set_phase(Phase::HalfClosed, tag, core);
            }
            Phase::Closing => {
                if let Err(e) = self.stream.shutdown(Shutdown::Write) {
                    return self.fail(tag, core, "shutdown", &e);
                }
                log::trace!("conn {}: shutdown(Write): FIN sent", tag.key);
                self.set_phase(Phase::Draining, tag, core);
                self.phase_deadline = core.ms(core.now + core.cfg.linger);
                // The peer's FIN may already be waiting in the receive queue.
                self.read_ready = true;
                self.read(tag, core);
            }
            _ => {}
        }
    }

    /// An I/O error on this connection: close it, and only it.
    fn fail(&mut self, tag: Tag, core: &mut Core, op: &str, e: &io::Error) {
        log::trace!("conn {}: {op} failed: {e}", tag.key);
        core.stats.io_errors += 1;
        self.close(tag, core, CloseReason::Io(e.kind()));
    }

    /// Ends the connection now, for `reason`: the one way into `Closed`. Drops unsent
    /// output and unconsumed input; the fd is closed when the slot is reaped.
    pub fn close(&mut self, tag: Tag, core: &mut Core, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        if log::log_enabled!(log::Level::Debug) {
            log::debug!("close {} (conn {}): {reason}", self.who(), tag.key);
        }
        self.out.clear();
        self.input.clear();
        self.set_phase(Phase::Closed, tag, core);
        self.proto.handle_close(&reason);
    }

    fn set_phase(&mut self, next: Phase, tag: Tag, core: &mut Core) {
        if next == self.phase {
            return;
        }
        log::trace!("conn {}: state {} => {}", tag.key, self.phase, next);
        debug_assert!(next != Phase::Closed || core.reap.last() != Some(&tag));
        self.phase = next;
        if next == Phase::Closed {
            core.reap.push(tag);
        }
    }
}
