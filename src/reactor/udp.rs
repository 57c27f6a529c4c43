//! Datagram sockets in the reactor: UDP and Unix datagram, one code path for both.
//!
//! On READABLE the socket is drained with `recv_from` until `WouldBlock` (or the per-turn
//! budget), each datagram handed whole to the [`DatagramProtocol`]. Replies go out with
//! `send_to` at once; when the socket's send buffer is full (`WouldBlock`) they wait in a
//! bounded queue and WRITABLE is registered until it drains. Over the bound, new replies
//! are dropped and counted: datagrams may be lost anyway, and a queue that grows without
//! bound is worse than a lost reply.
//!
//! A datagram larger than the read buffer would arrive truncated (the kernel discards the
//! rest). A `recv_from` that fills the whole buffer is therefore treated as truncated:
//! counted in `Stats::datagrams_truncated`, logged, and not handed to the protocol.
//! UDP datagrams are at most 65,507 bytes, under the 64 KiB buffer, so only Unix datagrams
//! of 64 KiB or more can meet this.
//!
//! Errors of one send (say `ECONNREFUSED` from an ICMP port-unreachable after an earlier
//! datagram) are counted and logged but never close the socket: they concern one peer,
//! and the socket serves them all.

use super::token::Tag;
use super::Core;
use crate::net::Endpoint;
use crate::proto::{DatagramProtocol, Transmit};
use mio::event::Source;
use mio::net::{UdpSocket, UnixDatagram};
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// How many datagrams one socket receives in one turn before the others get theirs.
const RECV_BUDGET: usize = 64;

/// What one queued reply costs against `Config::datagram_queue_limit` besides its bytes:
/// about the size of a `Transmit` and its queue slot, so empty datagrams are bounded too.
const ENTRY_COST: usize = 64;

pub(crate) enum DgramSocket {
    Udp(UdpSocket),
    /// The path, if we created the socket file (removed on drop).
    Unix(UnixDatagram, Option<PathBuf>),
}

impl DgramSocket {
    /// Receives one datagram into `buf`: its whole length (over `buf.len()` when
    /// truncated) and its sender ([`crate::net::recv_datagram`]).
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Endpoint)> {
        match self {
            DgramSocket::Udp(s) => crate::net::recv_datagram(socket2::SockRef::from(s), buf, false),
            DgramSocket::Unix(s, _) => {
                crate::net::recv_datagram(socket2::SockRef::from(s), buf, true)
            }
        }
    }

    fn send_to(&self, bytes: &[u8], to: &Endpoint, connected: bool) -> io::Result<usize> {
        match (self, to) {
            (DgramSocket::Udp(s), _) if connected => s.send(bytes),
            (DgramSocket::Unix(s, _), _) if connected => s.send(bytes),
            (DgramSocket::Udp(s), Endpoint::Inet(a)) => s.send_to(bytes, *a),
            (DgramSocket::Unix(s, _), Endpoint::Unix(p)) if !p.as_os_str().is_empty() => {
                s.send_to(bytes, p)
            }
            (DgramSocket::Unix(_, _), Endpoint::Unix(_)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the peer's Unix datagram socket is unnamed (never bound): it cannot be answered",
            )),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot send to {to} from this socket's family"),
            )),
        }
    }
}

impl Drop for DgramSocket {
    fn drop(&mut self) {
        if let DgramSocket::Unix(_, Some(path)) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Source for DgramSocket {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            DgramSocket::Udp(s) => s.register(r, t, i),
            DgramSocket::Unix(s, _) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            DgramSocket::Udp(s) => s.reregister(r, t, i),
            DgramSocket::Unix(s, _) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            DgramSocket::Udp(s) => s.deregister(r),
            DgramSocket::Unix(s, _) => s.deregister(r),
        }
    }
}

pub(crate) struct Datagram {
    sock: DgramSocket,
    local: Endpoint,
    /// Set for a connected socket: every datagram goes there and only its come back.
    connected: Option<Endpoint>,
    proto: Box<dyn DatagramProtocol>,
    queue: VecDeque<Transmit>,
    /// What the queue holds, in bytes plus `ENTRY_COST` an entry.
    queued_bytes: usize,
    read_ready: bool,
    /// On the revisit list for next turn (budget spent): no more reading this turn.
    revisit_queued: bool,
    registered: Interest,
}

impl Datagram {
    pub fn new(
        sock: DgramSocket,
        local: Endpoint,
        connected: Option<Endpoint>,
        proto: Box<dyn DatagramProtocol>,
    ) -> Datagram {
        Datagram {
            sock,
            local,
            connected,
            proto,
            queue: VecDeque::new(),
            queued_bytes: 0,
            read_ready: false,
            revisit_queued: false,
            registered: Interest::READABLE,
        }
    }

    pub fn local(&self) -> &Endpoint {
        &self.local
    }

    pub fn socket_mut(&mut self) -> &mut DgramSocket {
        &mut self.sock
    }

    pub fn ready(&mut self, readable: bool, writable: bool, tag: Tag, core: &mut Core) {
        if writable {
            self.flush(tag, core);
        }
        if readable {
            self.read_ready = true;
        }
        if !self.revisit_queued {
            self.recv(tag, core);
        }
    }

    pub fn revisit(&mut self, tag: Tag, core: &mut Core) {
        self.revisit_queued = false;
        self.recv(tag, core);
    }

    fn recv(&mut self, tag: Tag, core: &mut Core) {
        let mut budget = RECV_BUDGET;
        while self.read_ready {
            if budget == 0 {
                core.stats.budget_yields += 1;
                self.revisit_queued = true;
                core.revisit.push(tag);
                return;
            }
            budget -= 1;
            let (n, from) = match self.sock.recv_from(&mut core.read_buf) {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    log::trace!("datagram {}: recv would block", self.local);
                    self.read_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors from earlier sends surface here; they concern one peer.
                    log::debug!("datagram {}: recv: {e}", self.local);
                    core.stats.datagram_errors += 1;
                    continue;
                }
            };
            if n > core.read_buf.len() {
                core.stats.datagrams_truncated += 1;
                log::warn!(
                    "datagram {}: dropped a datagram from {from} of {n} bytes: larger than the {}-byte buffer, truncated by the kernel",
                    self.local,
                    core.read_buf.len()
                );
                continue;
            }
            let from = self.connected.clone().unwrap_or(from);
            log::trace!("datagram {}: received {n} bytes from {from}", self.local);
            core.stats.datagrams_in += 1;
            core.stats.bytes_in += n as u64;
            let mut replies = std::mem::take(&mut core.transmits);
            let (proto, bytes) = (&mut self.proto, &core.read_buf[..n]);
            let now = core.now;
            let handled = catch_unwind(AssertUnwindSafe(|| {
                proto.handle_datagram(&from, bytes, now, &mut replies)
            }));
            if let Err(payload) = handled {
                // That datagram's end, not the socket's: its other peers go on being served.
                core.stats.panics += 1;
                replies.clear();
                log::error!(
                    "datagram {}: the protocol panicked on a datagram from {from}: {}; dropped it",
                    self.local,
                    crate::error::panic_message(&*payload)
                );
            }
            for t in replies.drain(..) {
                self.send(t, core);
            }
            core.transmits = replies;
        }
    }

    /// Sends one datagram now, or queues it if the socket would block.
    pub fn send(&mut self, t: Transmit, core: &mut Core) {
        if self.queue.is_empty() {
            match self.sock.send_to(&t.bytes, &t.to, self.connected.is_some()) {
                Ok(n) => {
                    log::trace!("datagram {}: sent {n} bytes to {}", self.local, t.to);
                    core.stats.datagrams_out += 1;
                    core.stats.bytes_out += n as u64;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    log::trace!("datagram {}: send would block: queueing", self.local);
                }
                Err(e) => {
                    log::debug!("datagram {}: send to {} failed: {e}", self.local, t.to);
                    core.stats.datagram_errors += 1;
                    return;
                }
            }
        }
        let Some(queued) = admit(
            self.queued_bytes,
            t.bytes.len(),
            core.cfg.datagram_queue_limit,
        ) else {
            log::debug!(
                "datagram {}: send queue full ({} bytes): dropping a datagram to {}",
                self.local,
                self.queued_bytes,
                t.to
            );
            core.stats.datagrams_dropped += 1;
            return;
        };
        self.queued_bytes = queued;
        self.queue.push_back(t);
    }

    fn flush(&mut self, _tag: Tag, core: &mut Core) {
        while let Some(t) = self.queue.front() {
            match self.sock.send_to(&t.bytes, &t.to, self.connected.is_some()) {
                Ok(n) => {
                    core.stats.datagrams_out += 1;
                    core.stats.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::debug!("datagram {}: send to {} failed: {e}", self.local, t.to);
                    core.stats.datagram_errors += 1;
                }
            }
            self.queued_bytes -= t.bytes.len() + ENTRY_COST;
            self.queue.pop_front();
        }
    }

    /// Re-registers if the derived interest changed: WRITABLE exactly while replies wait.
    pub fn update_interest(&mut self, registry: &Registry, tag: Tag) -> io::Result<()> {
        let want = if self.queue.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        if want != self.registered {
            log::trace!(
                "datagram {}: interest {:?} -> {want:?}",
                self.local,
                self.registered
            );
            self.sock.reregister(registry, tag.token(), want)?;
            self.registered = want;
        }
        Ok(())
    }
}

/// Whether a reply of `bytes` fits a send queue holding `queued` (in cost units) under
/// `limit`: the queue's new cost if so. Each entry costs its bytes and [`ENTRY_COST`], so
/// a flood of empty datagrams meets the bound too.
fn admit(queued: usize, bytes: usize, limit: usize) -> Option<usize> {
    let after = queued.saturating_add(bytes).saturating_add(ENTRY_COST);
    (after <= limit).then_some(after)
}

#[cfg(test)]
mod tests {
    use super::{admit, ENTRY_COST};

    #[test]
    fn empty_datagrams_are_bounded_too() {
        let limit = 1000;
        let mut queued = 0;
        let mut admitted = 0;
        while let Some(q) = admit(queued, 0, limit) {
            queued = q;
            admitted += 1;
            assert!(admitted <= limit, "unbounded");
        }
        assert_eq!(
            admitted,
            limit / ENTRY_COST,
            "each empty reply costs {ENTRY_COST} bytes"
        );
        assert_eq!(
            admit(0, limit - ENTRY_COST, limit),
            Some(limit),
            "a full-size one fits"
        );
        assert_eq!(admit(0, limit - ENTRY_COST + 1, limit), None);
    }
}
