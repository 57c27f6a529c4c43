//! One stream connection inside the reactor: its lifecycle, its buffers, its interest.
//!
//! # Lifecycle
//!
//! ```text
//!            accept()                     peer's FIN (read returns 0)
//!   ───────────────────▶  Open  ─────────────────────────────────▶  PeerClosed
//!                          │                                           │ output drained
//!        protocol asks to  │                                           ▼ close(): our FIN
//!        close / PeerError ▼                                         Closed
//!                        Closing ── output drained: shutdown(Write) ──▶ Draining
//!                          │ peer's FIN first: behaves as PeerClosed     │ peer's FIN,
//!                          ▼                                             │ or linger timeout
//!                      PeerClosed                                        ▼
//!                                                                      Closed
//!   any I/O error, or Action::Abort, from any state ─────────────────▶ Closed
//! ```
//!
//! Invariants:
//! - `Closed` is entered once, through [`Conn::set_phase`], which also queues the slot
//!   for reaping at the end of the turn; no I/O happens on a `Closed` connection.
//! - The protocol sees input only while `Open`; after `Closing` it is never called again.
//! - `out` never holds more than the configured output limit: above it the connection
//!   is closed rather than allowed to grow.
//! - Registered interest is derived from the state ([`Conn::interest`]), never set by hand:
//!   READABLE always, WRITABLE exactly while `out` is non-empty.

use super::token::Tag;
use super::Core;
use crate::buf::{write_nb, OutBuf};
use crate::proto::{Action, Out, Protocol};
use mio::net::TcpStream;
use mio::{Interest, Registry};
use std::fmt;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};

/// Where a connection is in its life. Named after what the socket is doing; the TCP state
/// each corresponds to is in the `Display` text and in ARCHITECTURE.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
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
    /// Finished; the slot is freed and the fd closed at the end of this turn.
    Closed,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Open => "Open (ESTABLISHED)",
            Phase::PeerClosed => "PeerClosed (CLOSE_WAIT)",
            Phase::Closing => "Closing (flushing before FIN)",
            Phase::Draining => "Draining (FIN_WAIT)",
            Phase::Closed => "Closed",
        })
    }
}

/// What the poller reported for one source in one event.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Readiness {
    pub readable: bool,
    pub writable: bool,
    pub read_closed: bool,
    pub error: bool,
}

impl Readiness {
    pub fn of(ev: &mio::event::Event) -> Readiness {
        Readiness {
            readable: ev.is_readable(),
            writable: ev.is_writable(),
            read_closed: ev.is_read_closed(),
            error: ev.is_error(),
        }
    }
}

pub(crate) struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    proto: Box<dyn Protocol>,
    phase: Phase,
    /// Bytes read but not yet consumed by the protocol (a partial message).
    input: Vec<u8>,
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
    /// The interest currently registered with the poller.
    registered: Interest,
}

impl Conn {
    pub fn new(stream: TcpStream, peer: SocketAddr, proto: Box<dyn Protocol>) -> Conn {
        Conn {
            stream,
            peer,
            proto,
            phase: Phase::Open,
            input: Vec::new(),
            out: OutBuf::new(),
            read_ready: false,
            fin_seen: false,
            paused: false,
            registered: Interest::READABLE,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub fn buffered_output(&self) -> usize {
        self.out.len()
    }

    /// The interest this connection needs now.
    pub fn interest(&self) -> Interest {
        if self.out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        }
    }

    /// Re-registers with the poller if and only if the derived interest changed.
    pub fn update_interest(&mut self, registry: &Registry, tag: Tag) -> io::Result<()> {
        let want = self.interest();
        if want != self.registered && self.phase != Phase::Closed {
            log::trace!(
                "conn {} {}: interest {:?} -> {:?}",
                tag.key,
                self.peer,
                self.registered,
                want
            );
            registry.reregister(&mut self.stream, tag.token(), want)?;
            self.registered = want;
        }
        Ok(())
    }

    /// The connection was just accepted: let the protocol speak first.
    pub fn open(&mut self, tag: Tag, core: &mut Core) {
        core.scratch.clear();
        let mut out = Out::new(&mut core.scratch, core.now);
        self.proto.handle_open(&mut out);
        let action = out.action();
        self.send_scratch(tag, core, action);
    }

    /// The poller reported readiness for this connection.
    pub fn ready(&mut self, ev: Readiness, tag: Tag, core: &mut Core) {
        if self.phase == Phase::Closed {
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
        self.read(tag, core);
    }

    /// Revisited on the next turn after its read budget ran out, without a new edge.
    pub fn revisit(&mut self, tag: Tag, core: &mut Core) {
        self.read(tag, core);
    }

    /// Reads until `WouldBlock`, the per-turn budget, the high-water mark, or the end of
    /// the stream, handing each chunk to the protocol as it arrives.
    fn read(&mut self, tag: Tag, core: &mut Core) {
        let mut budget = core.cfg.read_budget;
        while self.read_ready && !self.paused && self.phase != Phase::Closed {
            match self.stream.read(&mut core.read_buf) {
                Ok(0) => {
                    log::trace!(
                        "conn {} {}: read 0 bytes: end of stream",
                        tag.key,
                        self.peer
                    );
                    self.read_ready = false;
                    self.on_eof(tag, core);
                    return;
                }
                Ok(n) => {
                    log::trace!("conn {} {}: read {n} bytes", tag.key, self.peer);
                    core.stats.bytes_in += n as u64;
                    match self.phase {
                        Phase::Open => self.deliver(n, tag, core),
                        _ => log::trace!(
                            "conn {} {}: discarding {n} bytes while {}",
                            tag.key,
                            self.peer,
                            self.phase
                        ),
                    }
                    if n < core.read_buf.len() && !self.fin_seen {
                        // A short read emptied the kernel's receive queue. Anything that
                        // arrives later raises a new edge, so the read that would only
                        // say WouldBlock can be skipped.
                        log::trace!(
                            "conn {} {}: short read: receive queue drained",
                            tag.key,
                            self.peer
                        );
                        self.read_ready = false;
                        break;
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 && self.read_ready && !self.paused {
                        log::trace!(
                            "conn {} {}: read budget spent, yielding to others until next turn",
                            tag.key,
                            self.peer
                        );
                        core.stats.budget_yields += 1;
                        core.revisit.push(tag);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    log::trace!("conn {} {}: read would block", tag.key, self.peer);
                    self.read_ready = false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(tag, core, "read", &e);
                    return;
                }
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
                    self.input.extend_from_slice(&fresh[used..]);
                }
            })
        } else {
            self.input.extend_from_slice(&read_buf[..n]);
            self.proto.handle_input(&self.input, &mut out).map(|used| {
                self.input.drain(..used.min(self.input.len()));
                if self.input.is_empty() {
                    self.input = Vec::new();
                }
            })
        };
        let mut action = out.action();
        match result {
            Ok(()) if self.input.len() > cfg.max_input => {
                log::debug!(
                    "conn {} {}: closing: {} bytes of unconsumed input exceed the limit of {}",
                    tag.key,
                    self.peer,
                    self.input.len(),
                    cfg.max_input
                );
                action = Action::CloseAfterFlush;
            }
            Ok(()) => {}
            Err(e) => {
                log::debug!("conn {} {}: closing: {e}", tag.key, self.peer);
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
                let result = self.proto.handle_eof(&self.input, &mut out);
                let mut action = out.action();
                if let Err(e) = result {
                    log::debug!("conn {} {}: {e}", tag.key, self.peer);
                    if action == Action::Continue {
                        action = Action::CloseAfterFlush;
                    }
                }
                self.input = Vec::new();
                self.set_phase(Phase::PeerClosed, tag, core);
                self.send_scratch(tag, core, action);
            }
            Phase::Closing => {
                // We were about to close anyway; the peer beat us to it.
                self.set_phase(Phase::PeerClosed, tag, core);
                self.finish_if_flushed(tag, core);
            }
            Phase::Draining => {
                log::debug!(
                    "close {} (conn {}): closed by us, peer acknowledged with FIN",
                    self.peer,
                    tag.key
                );
                self.set_phase(Phase::Closed, tag, core);
            }
            Phase::PeerClosed | Phase::Closed => {}
        }
    }

    /// Sends what the protocol left in `core.scratch` and obeys its action.
    fn send_scratch(&mut self, tag: Tag, core: &mut Core, action: Action) {
        if action == Action::Abort {
            log::debug!(
                "close {} (conn {}): aborted by the protocol",
                self.peer,
                tag.key
            );
            self.out.clear();
            self.set_phase(Phase::Closed, tag, core);
            return;
        }
        if !core.scratch.is_empty() {
            if self.out.is_empty() {
                // Write first and keep only what the socket refuses: in the common case
                // the reply leaves in this very write and WRITABLE is never registered.
                match write_nb(&mut self.stream, &core.scratch) {
                    Ok(w) => {
                        self.trace_write(tag, w, core.scratch.len());
                        core.stats.bytes_out += w as u64;
                        if w < core.scratch.len() {
                            self.out.extend(&core.scratch[w..]);
                        }
                    }
                    Err(e) => return self.fail(tag, core, "write", &e),
                }
            } else {
                // Earlier bytes are still queued; these must go after them.
                self.out.extend(&core.scratch);
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

    fn trace_write(&self, tag: Tag, written: usize, offered: usize) {
        if written == offered {
            log::trace!("conn {} {}: wrote {written} bytes", tag.key, self.peer);
        } else {
            log::trace!(
                "conn {} {}: wrote {written} of {offered} bytes, then write would block \
                 (partial write): {} bytes wait for WRITABLE",
                tag.key,
                self.peer,
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
                "close {} (conn {}): {queued} bytes of output queued, over the limit of {}: the peer is not reading",
                self.peer,
                tag.key,
                core.cfg.output_limit
            );
            self.out.clear();
            self.set_phase(Phase::Closed, tag, core);
        } else if queued >= core.cfg.high_water && !self.paused {
            log::trace!(
                "conn {} {}: backpressure: {queued} bytes unsent (high water {}), stop reading",
                tag.key,
                self.peer,
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
            }
            Err(e) => return self.fail(tag, core, "write", &e),
        }
        if self.paused && self.out.len() <= core.cfg.low_water {
            log::trace!(
                "conn {} {}: backpressure released: {} bytes unsent (low water {}), resume reading",
                tag.key,
                self.peer,
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
            Phase::PeerClosed => {
                log::debug!(
                    "close {} (conn {}): peer closed, all output sent",
                    self.peer,
                    tag.key
                );
                self.set_phase(Phase::Closed, tag, core);
            }
            Phase::Closing => {
                if let Err(e) = self.stream.shutdown(Shutdown::Write) {
                    return self.fail(tag, core, "shutdown", &e);
                }
                log::trace!("conn {} {}: shutdown(Write): FIN sent", tag.key, self.peer);
                self.set_phase(Phase::Draining, tag, core);
                core.timers.arm(
                    core.now + core.cfg.linger,
                    super::timers::TimerKind::Linger(tag),
                );
                // The peer's FIN may already be waiting in the receive queue.
                self.read_ready = true;
                self.read(tag, core);
            }
            _ => {}
        }
    }

    /// The linger deadline passed while waiting for the peer's FIN.
    pub fn linger_expired(&mut self, tag: Tag, core: &mut Core) {
        if self.phase == Phase::Draining {
            log::debug!(
                "close {} (conn {}): peer did not close within {:?} of our FIN",
                self.peer,
                tag.key,
                core.cfg.linger
            );
            self.set_phase(Phase::Closed, tag, core);
        }
    }

    /// An I/O error on this connection: close it, and only it.
    fn fail(&mut self, tag: Tag, core: &mut Core, op: &str, e: &io::Error) {
        log::debug!(
            "close {} (conn {}): {op} failed: {e} ({:?})",
            self.peer,
            tag.key,
            e.kind()
        );
        core.stats.io_errors += 1;
        self.out.clear();
        self.set_phase(Phase::Closed, tag, core);
    }

    fn set_phase(&mut self, next: Phase, tag: Tag, core: &mut Core) {
        if next == self.phase {
            return;
        }
        log::trace!(
            "conn {} {}: state {} => {}",
            tag.key,
            self.peer,
            self.phase,
            next
        );
        self.phase = next;
        if next == Phase::Closed {
            core.reap.push(tag);
        }
    }
}
