//! Shared by the fuzz targets: a driver that runs any protocol through the connection core
//! ([`Session`]) along an event sequence the fuzzer chooses, checking the contract as it
//! goes.
//!
//! The input is read as a list of operations. Each operation's first byte picks it; the
//! ones that need a size take the next byte:
//!
//! | byte % 10 | operation |
//! |---|---|
//! | 0-3 | bytes arrive: the next `n % 64 + 1` input bytes (`feed`) |
//! | 4 | the socket takes `n` bytes of what is offered (`sent`, possibly 0) |
//! | 5 | time passes (`n` × 7 ms) and the deadline is checked (`timeout`) |
//! | 6 | the peer's FIN (`eof`) |
//! | 7 | the protocol's next piece, if it streams (`writable`) |
//! | 8 | the application: `send`, `close`, `shutdown_write` or a graceful `shutdown` |
//! | 9 | the socket fails (`fail`) |
//!
//! Between operations the driver keeps the contract: it offers the socket what is owed
//! (with room for `n` bytes only where an operation said so), sends the FIN it is asked
//! for, and collects the close. What it checks: no panic anywhere; nothing goes out after
//! our FIN or after the close; the FIN goes out once; the close is reported once and then
//! nothing is called; unsent output stays under the output limit.

use sockloop::proto::{CloseReason, Protocol};
use sockloop::session::{Context, Phase, Session, SessionConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Small limits, so that the fuzzer reaches them.
pub fn config() -> SessionConfig {
    SessionConfig {
        max_input: 4096,
        output_limit: 16 * 1024,
        high_water: 8 * 1024,
        low_water: 2 * 1024,
        linger: Duration::from_millis(200),
        idle: Some(Duration::from_millis(500)),
        write_stall: Some(Duration::from_millis(300)),
        backlog_timeout: Some(Duration::from_millis(400)),
    }
}

struct Driver<P: Protocol> {
    s: Session<P>,
    cx: Context,
    wire: usize,
    fin: bool,
    closed: Option<CloseReason>,
}

impl<P: Protocol> Driver<P> {
    /// Offers the socket what is owed, `room` bytes of it at most (`None`: all), then the
    /// FIN if asked, then collects the close.
    fn transmit(&mut self, mut room: Option<usize>) {
        loop {
            let bytes = self.s.poll_transmit(&self.cx);
            if bytes.is_empty() {
                break;
            }
            assert!(!self.fin, "bytes offered after our FIN");
            assert!(self.closed.is_none(), "bytes offered after the close");
            let n = room.map_or(bytes.len(), |r| r.min(bytes.len()));
            self.wire += n;
            self.s.sent(&mut self.cx, n);
            if let Some(r) = room.as_mut() {
                *r -= n;
                if *r == 0 {
                    // The socket is full: what is left must stay queued, in order.
                    if !self.s.poll_transmit(&self.cx).is_empty() {
                        self.s.sent(&mut self.cx, 0);
                    }
                    break;
                }
            }
        }
        assert!(
            self.s.buffered_output() <= self.s.config().output_limit,
            "output over the limit"
        );
        if self.s.poll_fin(&self.cx) {
            assert!(!self.fin, "a second FIN");
            self.fin = true;
            self.s.fin_sent(&mut self.cx);
        }
        if let Some(reason) = self.s.poll_close() {
            assert!(self.closed.is_none(), "closed twice");
            assert_eq!(self.s.phase(), Phase::Closed);
            self.closed = Some(reason);
        }
        assert!(
            self.s.poll_close().is_none(),
            "the reason is handed out once"
        );
    }
}

/// Runs `proto` through the session along the operations in `data`.
pub fn drive<P: Protocol>(proto: P, data: &[u8]) {
    let t0 = Instant::now();
    let mut d = Driver {
        s: Session::accepted(proto, Arc::new(config()), t0),
        cx: Context::new(t0),
        wire: 0,
        fin: false,
        closed: None,
    };
    d.s.open(&mut d.cx, None, None);
    d.transmit(None);
    let mut i = 0;
    while i < data.len() {
        let op = data[i] % 10;
        let n = data.get(i + 1).copied().unwrap_or(0) as usize;
        i += 2;
        let mut room = None;
        match op {
            0..=3 => {
                let from = i.min(data.len());
                let len = (n % 64 + 1).min(data.len() - from);
                let bytes = &data[from..from + len];
                i = from + len;
                if d.s.wants_read() {
                    d.s.feed(&mut d.cx, bytes);
                }
            }
            4 => room = Some(n),
            5 => {
                d.cx.now += Duration::from_millis(7 * n as u64);
                d.s.timeout(&mut d.cx);
            }
            6 => {
                if d.s.wants_read() {
                    d.s.eof(&mut d.cx);
                }
            }
            7 => d.s.writable(&mut d.cx),
            8 => match n % 4 {
                0 => {
                    d.s.send(&mut d.cx, b"application bytes\n");
                }
                1 => d.s.close(&mut d.cx),
                2 => {
                    d.s.shutdown_write(&mut d.cx);
                }
                _ => d.s.shutdown(&mut d.cx),
            },
            _ => d.s.fail(
                &mut d.cx,
                CloseReason::Io(std::io::ErrorKind::ConnectionReset),
            ),
        }
        d.transmit(room);
        if d.closed.is_some() {
            break;
        }
    }
}
