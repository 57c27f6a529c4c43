//! The connection core driven by hand, the way smoltcp tests its TCP socket: no sockets, no
//! clocks, no sleeps. Time is an `Instant` the test moves forward itself; the "socket" is a
//! `Vec<u8>` of what the peer would receive, with an optional amount of room so that partial
//! writes and would-block (`sent(.., 0)`) can be played out.
//!
//! [`Driver`] follows the driver's contract in the module docs to the letter (transmit after
//! every call, FIN when asked, `writable` while asked, collect `poll_close`), and checks on
//! every turn what must always hold: nothing goes on the wire after our FIN or after the
//! close, the driver is never asked to spin, and [`Protocol::handle_close`] is called once,
//! with the reason [`Session::poll_close`] returns.

use super::*;
use crate::proto::{CloseReason, Out, PeerError, Protocol};
use std::cell::{Cell, RefCell};
use std::io::ErrorKind;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Every byte back: the machine with a single state, so what a test sees is the core's.
#[derive(Clone, Copy, Debug, Default)]
struct Echo;

impl Protocol for Echo {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        out.push(input);
        Ok(input.len())
    }
}

// ---- the harness ------------------------------------------------------------------------

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A configuration differing from the default only where a test says so.
fn cfg() -> SessionConfig {
    SessionConfig::default()
}

/// What the protocol was asked to do, in order (queries such as `poll_timeout` aside).
#[derive(Debug, Default)]
struct Log {
    calls: Vec<&'static str>,
    /// Every reason `handle_close` was given.
    closes: Vec<CloseReason>,
    /// Calls (queries included) that came after `handle_close`.
    after_close: Vec<&'static str>,
}

/// Wraps any protocol and records every call into a shared [`Log`].
struct Rec {
    inner: Box<dyn Protocol>,
    log: Rc<RefCell<Log>>,
}

impl Rec {
    fn note(&self, call: &'static str) {
        let mut log = self.log.borrow_mut();
        if !log.closes.is_empty() {
            log.after_close.push(call);
        }
        log.calls.push(call);
    }
}

impl Protocol for Rec {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        self.note("open");
        self.inner.handle_open(out)
    }
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        self.note("input");
        self.inner.handle_input(input, out)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        let mut log = self.log.borrow_mut();
        if !log.closes.is_empty() {
            log.after_close.push("poll_timeout");
        }
        drop(log);
        self.inner.poll_timeout()
    }
    fn handle_timeout(&mut self, out: &mut Out<'_>) {
        self.note("timeout");
        self.inner.handle_timeout(out)
    }
    fn handle_shutdown(&mut self, out: &mut Out<'_>) {
        self.note("shutdown");
        self.inner.handle_shutdown(out)
    }
    fn handle_writable(&mut self, out: &mut Out<'_>) {
        self.note("writable");
        self.inner.handle_writable(out)
    }
    fn handle_close(&mut self, reason: &CloseReason) {
        self.note("close");
        self.log.borrow_mut().closes.push(reason.clone());
        self.inner.handle_close(reason)
    }
    fn handle_eof(&mut self, rest: &[u8], out: &mut Out<'_>) -> Result<(), PeerError> {
        self.note("eof");
        self.inner.handle_eof(rest, out)
    }
}

/// A driver per the contract, with a `Vec` for a socket.
struct Driver {
    t0: Instant,
    cx: Context,
    s: Session<Rec>,
    log: Rc<RefCell<Log>>,
    /// Every byte the peer has received, in order.
    wire: Vec<u8>,
    /// Our FIN went out.
    fin: bool,
    /// What `poll_close` returned (once).
    closed: Option<CloseReason>,
    /// How many more bytes the socket takes before it would block; `None`: unlimited.
    room: Option<usize>,
}

impl Driver {
    /// An accepted connection, not yet opened.
    fn accepted(proto: impl Protocol + 'static, cfg: SessionConfig) -> Driver {
        let t0 = Instant::now();
        let log = Rc::new(RefCell::new(Log::default()));
        let rec = Rec {
            inner: Box::new(proto),
            log: log.clone(),
        };
        let s = Session::accepted(rec, Arc::new(cfg), t0);
        Driver::with_session(t0, s, log)
    }

    /// An accepted connection, opened at `t0`.
    fn open_with(proto: impl Protocol + 'static, cfg: SessionConfig) -> Driver {
        let mut d = Driver::accepted(proto, cfg);
        d.open();
        d
    }

    /// An accepted connection with the default configuration, opened at `t0`.
    fn new(proto: impl Protocol + 'static) -> Driver {
        Driver::open_with(proto, cfg())
    }

    /// An outgoing connect in progress since `t0`.
    fn connecting(
        proto: impl Protocol + 'static,
        cfg: SessionConfig,
        timeout: Option<Duration>,
    ) -> Driver {
        let t0 = Instant::now();
        let log = Rc::new(RefCell::new(Log::default()));
        let rec = Rec {
            inner: Box::new(proto),
            log: log.clone(),
        };
        let s = Session::connecting(rec, Arc::new(cfg), t0, timeout);
        let mut d = Driver::with_session(t0, s, log);
        assert_eq!(d.s.phase(), Phase::Connecting);
        d.pump();
        d
    }

    fn with_session(t0: Instant, s: Session<Rec>, log: Rc<RefCell<Log>>) -> Driver {
        let mut cx = Context::new(t0);
        cx.id = 7;
        Driver {
            t0,
            cx,
            s,
            log,
            wire: Vec::new(),
            fin: false,
            closed: None,
            room: None,
        }
    }

    /// Sets the time of the next call to `t0 + n` ms.
    fn at(&mut self, n: u64) {
        self.cx.now = self.t0 + ms(n);
    }

    // -- events, each followed by the transmit step --

    fn open(&mut self) {
        self.s.open(&mut self.cx, None, None);
        self.pump();
    }

    /// A read returned `bytes`: only while the session wants reading (contract step 5).
    fn feed(&mut self, bytes: &[u8]) {
        assert!(
            self.s.wants_read(),
            "the driver reads only while wants_read ({})",
            self.s.phase()
        );
        self.feed_unchecked(bytes);
    }

    /// A read the contract would not make (to show that it does no harm).
    fn feed_unchecked(&mut self, bytes: &[u8]) {
        self.s.feed(&mut self.cx, bytes);
        self.pump();
    }

    fn eof(&mut self) {
        self.s.eof(&mut self.cx);
        self.pump();
    }

    fn timeout(&mut self) {
        self.s.timeout(&mut self.cx);
        self.pump();
    }

    /// Moves the time to `poll_timeout` (if it is ahead) and calls `timeout`. Returns the
    /// deadline that fired.
    fn fire(&mut self) -> Instant {
        let at = self.s.poll_timeout().expect("a deadline to fire");
        self.cx.now = self.cx.now.max(at);
        self.timeout();
        at
    }

    /// Calls `timeout` if a deadline is left (none is, once closed).
    fn fire_if_due(&mut self) {
        if self.s.poll_timeout().is_some() {
            self.fire();
        }
    }

    fn shutdown(&mut self) {
        self.s.shutdown(&mut self.cx);
        self.pump();
    }

    fn fail(&mut self, reason: CloseReason) {
        self.s.fail(&mut self.cx, reason);
        self.pump();
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        let ok = self.s.send(&mut self.cx, bytes);
        self.pump();
        ok
    }

    fn close(&mut self) {
        self.s.close(&mut self.cx);
        self.pump();
    }

    fn shutdown_write(&mut self) -> bool {
        let ok = self.s.shutdown_write(&mut self.cx);
        self.pump();
        ok
    }

    /// The socket has room for `room` more bytes (`None`: any amount); write what waits.
    fn flush(&mut self, room: Option<usize>) {
        self.room = room;
        self.pump();
    }

    /// Contract steps 3, 4 and 6: transmit until nothing is left or the socket refuses,
    /// send the FIN when asked, ask a streaming protocol for more, collect the close.
    fn pump(&mut self) {
        let mut turns = 0;
        loop {
            turns += 1;
            assert!(turns < 100_000, "the driver is made to spin");
            let bytes = self.s.poll_transmit(&self.cx);
            if !bytes.is_empty() {
                assert!(!self.fin, "bytes offered after our FIN");
                assert!(self.closed.is_none(), "bytes offered after the close");
                let n = self.room.map_or(bytes.len(), |r| r.min(bytes.len()));
                let all = n == bytes.len();
                self.wire.extend_from_slice(&bytes[..n]);
                if let Some(r) = self.room.as_mut() {
                    *r -= n;
                }
                self.s.sent(&mut self.cx, n);
                if !all {
                    break;
                }
            } else if self.s.poll_fin(&self.cx) {
                assert!(!self.fin, "asked for a second FIN");
                assert!(self.closed.is_none(), "asked for a FIN after the close");
                self.fin = true;
                self.s.fin_sent(&mut self.cx);
            } else if self.s.wants_writable(&self.cx) {
                self.s.writable(&mut self.cx);
            } else {
                break;
            }
        }
        if let Some(reason) = self.s.poll_close() {
            assert!(self.closed.is_none(), "poll_close gave a reason twice");
            assert_eq!(self.s.phase(), Phase::Closed);
            assert_eq!(
                self.log.borrow().closes,
                std::slice::from_ref(&reason),
                "handle_close once, with the reason poll_close returns"
            );
            self.closed = Some(reason);
        } else if self.s.phase() != Phase::Closed {
            assert!(
                self.log.borrow().closes.is_empty(),
                "handle_close before the connection closed"
            );
        }
    }

    /// How many times the protocol was called with `call`.
    fn count(&self, call: &str) -> usize {
        self.log
            .borrow()
            .calls
            .iter()
            .filter(|c| **c == call)
            .count()
    }

    fn wire_str(&self) -> String {
        String::from_utf8_lossy(&self.wire).into_owned()
    }
}

/// `at` is `want`, up to the session's rounding onto its millisecond grid (never early).
#[track_caller]
fn assert_near(at: Option<Instant>, want: Instant) {
    let at = at.expect("a deadline");
    assert!(
        at >= want && at <= want + ms(1),
        "deadline {:?} after the expected one (negative: early)",
        at.checked_duration_since(want)
    );
}

// ---- test protocols -----------------------------------------------------------------------

/// Consumes only complete lines (`\n`), answering each with `> line\n`. `quit` answers
/// `bye\n` and closes; `abort` answers `x\n` and aborts; a line starting with `!` answers
/// `err\n` and is a [`PeerError`] ("bad line"). An unfinished line at EOF is the default
/// `handle_eof`'s error. An optional banner goes out on open.
#[derive(Default)]
struct Lines {
    banner: &'static [u8],
}

impl Protocol for Lines {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        out.push(self.banner);
    }

    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        let mut used = 0;
        while let Some(nl) = input[used..].iter().position(|&b| b == b'\n') {
            let line = &input[used..used + nl];
            used += nl + 1;
            match line {
                b"quit" => {
                    out.push(b"bye\n");
                    out.close();
                    return Ok(used);
                }
                b"abort" => {
                    out.push(b"x\n");
                    out.abort();
                    return Ok(used);
                }
                l if l.starts_with(b"!") => {
                    out.push(b"err\n");
                    return Err(PeerError::new("bad line"));
                }
                l => {
                    out.push(b"> ");
                    out.push(l);
                    out.push(b"\n");
                }
            }
        }
        Ok(used)
    }
}

/// Byte `i` of a download.
fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

fn pattern_bytes(total: usize) -> Vec<u8> {
    (0..total).map(pattern).collect()
}

/// After its first complete line (the request), streams `total` bytes of [`pattern`] in
/// `piece`-sized pieces from `handle_writable`. Later lines are consumed and ignored.
struct Download {
    total: usize,
    piece: usize,
    done: usize,
    started: bool,
}

impl Download {
    fn new(total: usize, piece: usize) -> Download {
        Download {
            total,
            piece,
            done: 0,
            started: false,
        }
    }
}

impl Protocol for Download {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        let Some(last) = input.iter().rposition(|&b| b == b'\n') else {
            return Ok(0);
        };
        if !self.started {
            self.started = true;
            out.want_writable();
        }
        Ok(last + 1)
    }

    fn handle_writable(&mut self, out: &mut Out<'_>) {
        let n = self.piece.min(self.total - self.done);
        let piece: Vec<u8> = (self.done..self.done + n).map(pattern).collect();
        out.push(&piece);
        self.done += n;
        if self.done < self.total {
            out.want_writable();
        }
    }
}

/// Echoes its input, and ticks (`tick\n`) every `every` from open, `left` times.
struct Ticker {
    every: Duration,
    left: usize,
    next: Option<Instant>,
}

impl Ticker {
    fn new(every: Duration, left: usize) -> Ticker {
        Ticker {
            every,
            left,
            next: None,
        }
    }
}

impl Protocol for Ticker {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        if self.left > 0 {
            self.next = Some(out.now() + self.every);
        }
    }

    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        out.push(input);
        Ok(input.len())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    fn handle_timeout(&mut self, out: &mut Out<'_>) {
        let Some(at) = self.next else { return };
        assert!(at <= out.now(), "handle_timeout before poll_timeout's time");
        out.push(b"tick\n");
        self.left -= 1;
        self.next = (self.left > 0).then(|| at + self.every);
    }
}

/// Any input starts a stream whose `handle_writable` has nothing to give ("not now": it
/// asks again) until `ready` is set, and then sends `data` and stops. If `wake` is given,
/// its own timer sets `ready` that long after the input.
struct Stall {
    ready: Rc<Cell<bool>>,
    wake: Option<Duration>,
    wake_at: Option<Instant>,
}

impl Stall {
    fn new(wake: Option<Duration>) -> (Stall, Rc<Cell<bool>>) {
        let ready = Rc::new(Cell::new(false));
        let stall = Stall {
            ready: ready.clone(),
            wake,
            wake_at: None,
        };
        (stall, ready)
    }
}

impl Protocol for Stall {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        out.want_writable();
        if let Some(w) = self.wake {
            self.wake_at = Some(out.now() + w);
        }
        Ok(input.len())
    }

    fn handle_writable(&mut self, out: &mut Out<'_>) {
        if self.ready.get() {
            out.push(b"data");
        } else {
            out.want_writable();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.wake_at
    }

    fn handle_timeout(&mut self, _out: &mut Out<'_>) {
        self.wake_at = None;
        self.ready.set(true);
    }
}

// ---- Open ----------------------------------------------------------------------------------

mod open {
    use super::*;

    #[test]
    fn echo_fed_whole() {
        let mut d = Driver::new(Echo);
        d.feed(b"hello\nworld\n");
        assert_eq!(d.wire, b"hello\nworld\n");
        assert_eq!(d.s.phase(), Phase::Open);
        assert_eq!(d.s.buffered_output(), 0);
        assert!(d.s.wants_read() && !d.s.wants_write());
        assert_eq!(d.closed, None);
        assert_eq!(d.count("input"), 1);
    }

    #[test]
    fn echo_fed_byte_by_byte() {
        let msg = b"hello\r\nworld\x00\xff";
        let mut d = Driver::new(Echo);
        for b in msg.chunks(1) {
            d.feed(b);
        }
        assert_eq!(d.wire, msg);
        assert_eq!(d.count("input"), msg.len());
        assert_eq!(d.s.phase(), Phase::Open);
    }

    #[test]
    fn lines_whole_byte_by_byte_and_with_the_next_message_trailing() {
        let stream = b"one\ntwo\nthree\n";
        let want = "> one\n> two\n> three\n";

        let mut whole = Driver::new(Lines::default());
        whole.feed(stream);
        assert_eq!(whole.wire_str(), want);

        let mut bytewise = Driver::new(Lines::default());
        for b in stream.chunks(1) {
            bytewise.feed(b);
        }
        assert_eq!(bytewise.wire_str(), want);

        // Each read ends with the start of the next message: only whole lines are answered.
        let mut d = Driver::new(Lines::default());
        d.feed(b"one\ntw");
        assert_eq!(d.wire_str(), "> one\n");
        d.feed(b"o\nthr");
        assert_eq!(d.wire_str(), "> one\n> two\n");
        d.feed(b"ee\n");
        assert_eq!(d.wire_str(), want);
        assert_eq!(d.s.phase(), Phase::Open);
    }

    #[test]
    fn partial_input_is_kept_across_feeds() {
        let mut d = Driver::new(Lines::default());
        d.feed(b"par");
        d.feed(b"tia");
        assert!(
            d.wire.is_empty(),
            "nothing answered before the line is whole"
        );
        assert_eq!(
            d.count("input"),
            2,
            "the protocol saw the partial line twice"
        );
        d.feed(b"l\n");
        assert_eq!(d.wire_str(), "> partial\n");
        // Consumed input is not presented again.
        d.feed(b"next\n");
        assert_eq!(d.wire_str(), "> partial\n> next\n");
    }

    #[test]
    fn banner_goes_out_on_open() {
        let mut d = Driver::accepted(Lines { banner: b"HELLO\n" }, cfg());
        assert!(d.wire.is_empty());
        assert_eq!(d.count("open"), 0);
        d.open();
        assert_eq!(d.wire, b"HELLO\n");
        assert_eq!(d.count("open"), 1);
    }

    #[test]
    fn peer_error_closes_after_the_output_so_far() {
        let mut d = Driver::new(Lines::default());
        d.feed(b"ok\n!boom\nafter\n");
        // The answer to `ok` and the error reply go out; `after` is never answered.
        assert_eq!(d.wire_str(), "> ok\nerr\n");
        assert!(d.fin, "our FIN follows the output");
        assert_eq!(d.s.phase(), Phase::Draining);
        assert_eq!(d.closed, None, "the close waits for the peer's FIN");
        d.eof();
        assert_eq!(d.closed, Some(CloseReason::PeerError("bad line".into())));
        assert_eq!(d.wire_str(), "> ok\nerr\n");
    }

    #[test]
    fn peer_error_with_the_socket_full_waits_for_the_output() {
        let mut d = Driver::new(Lines::default());
        d.room = Some(0);
        d.feed(b"!boom\n");
        assert_eq!(d.s.phase(), Phase::Closing);
        assert!(!d.fin && d.wire.is_empty());
        assert_eq!(d.s.buffered_output(), 4);
        d.flush(None);
        assert_eq!(d.wire, b"err\n");
        assert!(d.fin);
        assert_eq!(d.s.phase(), Phase::Draining);
        d.eof();
        assert_eq!(d.closed, Some(CloseReason::PeerError("bad line".into())));
    }

    #[test]
    fn abort_drops_queued_output() {
        let mut d = Driver::new(Lines::default());
        d.room = Some(0);
        d.feed(b"a\n");
        assert_eq!(d.s.buffered_output(), 4, "`> a\\n` waits for the socket");
        d.feed(b"abort\n");
        assert_eq!(d.closed, Some(CloseReason::Aborted));
        assert_eq!(d.s.buffered_output(), 0);
        d.flush(None);
        assert!(d.wire.is_empty(), "nothing queued survives an abort");
        assert!(!d.fin, "an abort sends no FIN");
    }

    #[test]
    fn protocol_close_goes_closing_then_fin_then_draining() {
        let mut d = Driver::new(Lines::default());
        d.room = Some(0);
        d.feed(b"quit\n");
        assert_eq!(d.s.phase(), Phase::Closing);
        assert!(!d.s.poll_fin(&d.cx), "no FIN before the output is sent");
        assert!(d.s.wants_write());
        d.flush(Some(2));
        assert_eq!(d.wire, b"by");
        assert_eq!(d.s.phase(), Phase::Closing);
        assert!(!d.fin);
        d.flush(None);
        assert_eq!(d.wire, b"bye\n");
        assert!(d.fin);
        assert_eq!(d.s.phase(), Phase::Draining);
        assert!(d.s.wants_read(), "reading on, to see the peer's FIN");
        d.eof();
        assert_eq!(d.closed, Some(CloseReason::Closed));
    }

    #[test]
    fn input_after_a_close_in_the_same_read_is_not_delivered() {
        let mut d = Driver::new(Lines::default());
        d.feed(b"a\nquit\nb\n");
        assert_eq!(d.wire_str(), "> a\nbye\n");
        assert_eq!(d.count("input"), 1);
        assert_eq!(d.s.phase(), Phase::Draining);
    }

    #[test]
    fn partial_writes_keep_the_order() {
        let mut d = Driver::new(Lines::default());
        d.room = Some(3);
        d.feed(b"one\n");
        assert_eq!(d.wire, b"> o");
        d.feed(b"two\n");
        assert_eq!(d.wire, b"> o", "the socket is still full");
        assert_eq!(d.s.buffered_output(), 3 + 6);
        d.flush(Some(5));
        assert_eq!(d.wire_str(), "> one\n> ");
        d.flush(None);
        assert_eq!(d.wire_str(), "> one\n> two\n");
        assert!(!d.s.wants_write());
        assert_eq!(d.s.phase(), Phase::Open);
    }
}

// ---- limits ---------------------------------------------------------------------------------

mod limits {
    use super::*;

    #[test]
    fn unconsumed_input_over_max_input_is_input_limit() {
        let mut d = Driver::open_with(
            Lines::default(),
            SessionConfig {
                max_input: 16,
                ..cfg()
            },
        );
        d.feed(b"hi\n");
        d.feed(&[b'a'; 16]);
        assert_eq!(
            d.s.phase(),
            Phase::Open,
            "16 bytes unconsumed is at the limit"
        );
        d.feed(b"a");
        assert_eq!(d.wire_str(), "> hi\n");
        assert!(d.fin);
        assert_eq!(d.s.phase(), Phase::Draining);
        d.eof();
        assert_eq!(d.closed, Some(CloseReason::InputLimit));
    }

    #[test]
    fn input_limit_sends_the_output_of_the_same_read_first() {
        let mut d = Driver::open_with(
            Lines::default(),
            SessionConfig {
                max_input: 16,
                ..cfg()
            },
        );
        let mut read = b"one\ntwo\n".to_vec();
        read.extend_from_slice(&[b'z'; 17]);
        d.feed(&read);
        assert_eq!(d.wire_str(), "> one\n> two\n");
        assert!(d.fin);
        // However the drain ends, the reason stands.
        d.fire();
        assert_eq!(d.closed, Some(CloseReason::InputLimit));
    }

    #[test]
    fn output_queued_over_output_limit_is_output_limit() {
        let limits = SessionConfig {
            output_limit: 100,
            high_water: 80,
            low_water: 20,
            ..cfg()
        };
        let mut d = Driver::open_with(Echo, limits.clone());
        d.room = Some(0);
        d.feed(&[b'a'; 50]);
        assert_eq!(d.s.buffered_output(), 50);
        d.feed(&[b'b'; 50]);
        assert_eq!(d.s.buffered_output(), 100, "at the limit is allowed");
        assert_eq!(d.closed, None);
        assert!(!d.send(b"c"), "one byte over the limit");
        assert_eq!(d.closed, Some(CloseReason::OutputLimit));
        d.flush(None);
        assert!(d.wire.is_empty(), "unsent output is dropped");

        // The limit counts what the socket refused, not what was produced.
        let mut d = Driver::open_with(Echo, limits.clone());
        d.room = Some(10);
        d.feed(&[b'a'; 110]);
        assert_eq!(d.closed, None, "100 queued after the socket took 10");
        d.flush(None);
        assert_eq!(d.wire, [b'a'; 110]);

        let mut d = Driver::open_with(Echo, limits);
        d.room = Some(10);
        d.feed(&[b'a'; 111]);
        assert_eq!(d.closed, Some(CloseReason::OutputLimit));
        assert_eq!(d.wire.len(), 10);
    }

    #[test]
    fn backpressure_stops_reading_at_high_water_and_resumes_at_low_water() {
        let mut d = Driver::open_with(
            Echo,
            SessionConfig {
                output_limit: 1000,
                high_water: 100,
                low_water: 40,
                ..cfg()
            },
        );
        d.room = Some(0);
        d.feed(&[b'a'; 99]);
        assert!(
            d.s.wants_read() && !d.s.is_paused(),
            "just under high water"
        );
        d.feed(b"b");
        assert!(d.s.is_paused(), "at high water");
        assert!(!d.s.wants_read());
        assert!(d.s.wants_write());
        d.flush(Some(59));
        assert_eq!(d.s.buffered_output(), 41);
        assert!(!d.s.wants_read(), "still above low water");
        d.flush(Some(1));
        assert_eq!(d.s.buffered_output(), 40);
        assert!(
            d.s.wants_read() && !d.s.is_paused(),
            "at low water: read again"
        );
        d.flush(None);
        let mut want = vec![b'a'; 99];
        want.push(b'b');
        assert_eq!(d.wire, want);
        assert_eq!(d.closed, None);
    }

    #[test]
    fn input_left_after_a_protocol_close_is_not_an_input_limit() {
        let limits = SessionConfig {
            max_input: 16,
            ..cfg()
        };
        let pipelined = [b"quit\n".as_slice(), &[b'z'; 40]].concat();

        let mut apart = Driver::open_with(Lines::default(), limits.clone());
        apart.feed(&pipelined[..5]);
        apart.feed(&pipelined[5..]);
        apart.eof();
        assert_eq!(apart.closed, Some(CloseReason::Closed));

        let mut at_once = Driver::open_with(Lines::default(), limits);
        at_once.feed(&pipelined);
        at_once.eof();
        assert_eq!(at_once.wire, apart.wire);
        assert_eq!(
            at_once.closed, apart.closed,
            "the same stream, the same reason"
        );
    }
}

// ---- PeerClosed -----------------------------------------------------------------------------

mod peer_closed {
    use super::*;

    #[test]
    fn a_truncated_request_at_eof_ends_the_stream_it_started() {
        // The request line starts a 1 MiB download; the bytes after it are half a line,
        // which the default handle_eof calls a truncated message.
        let mut d = Driver::new(Download::new(1 << 20, 1024));
        d.room = Some(0);
        d.feed(b"GET\nhalf a li");
        d.eof();
        d.flush(None);
        assert!(
            d.wire.len() < 1 << 20,
            "the stream stopped at the peer error ({} bytes sent)",
            d.wire.len()
        );
        assert!(matches!(d.closed, Some(CloseReason::PeerError(_))));
    }

    #[test]
    fn eof_with_nothing_owed_closes_at_once() {
        let mut d = Driver::new(Echo);
        d.feed(b"hi");
        d.eof();
        assert_eq!(d.wire, b"hi");
        assert_eq!(d.closed, Some(CloseReason::PeerClosed));
        assert!(!d.fin);
        assert_eq!(d.count("eof"), 1);
    }

    #[test]
    fn eof_while_output_is_queued_waits_until_everything_is_sent() {
        let mut d = Driver::new(Echo);
        d.room = Some(0);
        d.feed(b"hello");
        d.eof();
        assert_eq!(d.s.phase(), Phase::PeerClosed);
        assert_eq!(d.closed, None);
        assert!(!d.s.wants_read(), "no reading after the peer's FIN");
        assert!(d.s.wants_write());
        d.flush(Some(3));
        assert_eq!(d.s.phase(), Phase::PeerClosed);
        assert_eq!(d.wire, b"hel");
        d.flush(Some(0));
        assert_eq!(d.s.phase(), Phase::PeerClosed, "would block: still owed");
        d.flush(None);
        assert_eq!(d.wire, b"hello");
        assert_eq!(d.closed, Some(CloseReason::PeerClosed));
        assert!(!d.fin, "the driver's close sends the FIN, not the session");
    }

    #[test]
    fn a_download_keeps_streaming_after_eof_then_closes() {
        const TOTAL: usize = 4 << 20;
        const PIECE: usize = 64 << 10;
        let mut d = Driver::new(Download::new(TOTAL, PIECE));
        d.room = Some(0);
        d.feed(b"GET /big\n");
        assert_eq!(d.s.buffered_output(), PIECE, "the first piece waits");
        d.eof();
        assert_eq!(d.s.phase(), Phase::PeerClosed);
        assert_eq!(d.closed, None, "the protocol still streams");
        // The peer reads 100 KB at a time: the session never holds more than a piece.
        while d.closed.is_none() {
            assert_eq!(d.s.phase(), Phase::PeerClosed);
            d.flush(Some(100_000));
            assert!(d.s.buffered_output() <= PIECE);
        }
        assert_eq!(d.closed, Some(CloseReason::PeerClosed));
        assert_eq!(d.wire.len(), TOTAL);
        assert!(d.wire == pattern_bytes(TOTAL), "every byte, in order");
        assert_eq!(d.count("writable"), TOTAL / PIECE);
    }

    #[test]
    fn eof_in_the_middle_of_a_message_is_a_peer_error() {
        let mut d = Driver::new(Lines::default());
        d.feed(b"x\nabc");
        d.eof();
        assert_eq!(d.wire_str(), "> x\n");
        assert_eq!(
            d.closed,
            Some(CloseReason::PeerError(
                "stream ended in the middle of a message (3 bytes unconsumed)".into()
            ))
        );
    }

    #[test]
    fn eof_with_a_rest_and_output_queued_sends_it_then_reports_the_peer_error() {
        let mut d = Driver::new(Lines::default());
        d.room = Some(0);
        d.feed(b"x\nab");
        d.eof();
        assert_eq!(d.s.phase(), Phase::PeerClosed);
        assert_eq!(d.closed, None);
        d.flush(None);
        assert_eq!(d.wire_str(), "> x\n");
        assert!(matches!(d.closed, Some(CloseReason::PeerError(ref e)) if e.contains("2 bytes")));
    }

    #[test]
    fn application_output_still_goes_out_after_eof() {
        let mut d = Driver::new(Echo);
        d.room = Some(0);
        d.feed(b"a");
        d.eof();
        assert!(d.send(b"b"), "PeerClosed still sends");
        d.flush(None);
        assert_eq!(d.wire, b"ab");
        assert_eq!(d.closed, Some(CloseReason::PeerClosed));
    }
}

// ---- Closing --------------------------------------------------------------------------------

mod closing {
    use super::*;

    /// Says `bye` and closes on its first input; always has a timer 10 ms out and asks to
    /// stream: neither may be acted on once it has closed.
    struct ByeWithTimer {
        t0: Instant,
    }

    impl Protocol for ByeWithTimer {
        fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
            out.push(b"bye\n");
            out.close();
            Ok(input.len())
        }
        fn poll_timeout(&self) -> Option<Instant> {
            Some(self.t0 + ms(10))
        }
        fn handle_timeout(&mut self, out: &mut Out<'_>) {
            out.push(b"tick\n");
            out.want_writable();
        }
        fn handle_writable(&mut self, out: &mut Out<'_>) {
            out.push(b"more\n");
        }
    }

    #[test]
    fn the_protocol_is_not_called_once_it_closed_even_when_the_fins_cross() {
        let t0 = Instant::now();
        let mut d = Driver::new(ByeWithTimer { t0 });
        d.room = Some(0);
        d.feed(b"x");
        d.eof();
        assert_eq!(d.s.phase(), Phase::PeerClosed, "the peer's FIN beat ours");
        assert_eq!(d.s.poll_timeout(), None, "its timer no longer counts");
        d.cx.now = t0 + ms(50);
        d.timeout();
        assert_eq!(d.count("timeout"), 0);
        assert_eq!(d.count("writable"), 0);
        d.flush(None);
        assert_eq!(d.wire, b"bye\n");
        assert_eq!(d.closed, Some(CloseReason::Closed));
    }

    #[test]
    fn a_failure_after_the_fins_crossed_is_reported_as_itself() {
        let mut d = Driver::new(Lines::default());
        d.room = Some(0);
        d.feed(b"quit\n");
        d.eof();
        assert_eq!(d.s.phase(), Phase::PeerClosed);
        d.fail(CloseReason::Io(std::io::ErrorKind::ConnectionReset));
        assert_eq!(
            d.closed,
            Some(CloseReason::Io(std::io::ErrorKind::ConnectionReset)),
            "the reply never arrived: not Closed"
        );
    }

    #[test]
    fn input_is_discarded_while_closing() {
        let mut d = Driver::new(Lines::default());
        d.room = Some(0);
        d.feed(b"quit\n");
        assert_eq!(d.s.phase(), Phase::Closing);
        assert!(d.s.wants_read(), "Closing reads, to see the peer's FIN");
        d.feed(b"hello\n");
        assert_eq!(d.count("input"), 1, "the protocol is not called again");
        d.flush(None);
        assert_eq!(d.wire, b"bye\n");
        assert_eq!(d.s.phase(), Phase::Draining);
    }

    #[test]
    fn application_send_while_closing_goes_out_before_the_fin() {
        let mut d = Driver::new(Lines::default());
        d.room = Some(0);
        d.feed(b"quit\n");
        assert!(d.send(b"ps\n"));
        assert!(!d.fin);
        d.flush(None);
        assert_eq!(d.wire, b"bye\nps\n");
        assert!(d.fin);
    }

    #[test]
    fn peer_fin_while_closing_still_ends_closed_once_sent() {
        let mut d = Driver::new(Lines::default());
        d.room = Some(0);
        d.feed(b"quit\n");
        d.eof();
        assert_eq!(d.s.phase(), Phase::PeerClosed, "the peer beat us to it");
        assert_eq!(
            d.count("eof"),
            0,
            "the protocol is not called after its close"
        );
        d.flush(None);
        assert_eq!(d.wire, b"bye\n");
        assert_eq!(
            d.closed,
            Some(CloseReason::Closed),
            "the close was ours, however the FINs crossed"
        );
        assert!(!d.fin);
    }

    #[test]
    fn application_close_flushes_then_fin() {
        let mut d = Driver::new(Echo);
        d.room = Some(0);
        d.feed(b"last");
        d.close();
        assert_eq!(d.s.phase(), Phase::Closing);
        d.flush(None);
        assert_eq!(d.wire, b"last");
        assert!(d.fin);
        d.eof();
        assert_eq!(d.closed, Some(CloseReason::Closed));
    }

    #[test]
    fn graceful_shutdown_by_default_closes_after_the_output() {
        let mut d = Driver::new(Lines::default());
        d.room = Some(0);
        d.feed(b"a\n");
        d.shutdown();
        assert_eq!(d.count("shutdown"), 1);
        assert_eq!(d.s.phase(), Phase::Closing);
        assert!(!d.fin);
        d.flush(None);
        assert_eq!(d.wire, b"> a\n");
        assert!(d.fin);
        assert_eq!(d.s.phase(), Phase::Draining);
        d.eof();
        assert_eq!(d.closed, Some(CloseReason::Closed));
    }
}

// ---- Draining -------------------------------------------------------------------------------

mod draining {
    use super::*;

    /// A connection whose protocol closed, FIN sent at `t0 + 100 ms`.
    fn draining(cfg: SessionConfig) -> Driver {
        let mut d = Driver::open_with(Lines::default(), cfg);
        d.at(100);
        d.feed(b"quit\n");
        assert!(d.fin);
        assert_eq!(d.s.phase(), Phase::Draining);
        d
    }

    /// A connection closing for a peer error, FIN sent at `t0 + 100 ms`.
    fn draining_after_peer_error() -> Driver {
        let mut d = Driver::new(Lines::default());
        d.at(100);
        d.feed(b"!x\n");
        assert!(d.fin);
        assert_eq!(d.s.phase(), Phase::Draining);
        d
    }

    #[test]
    fn peer_eof_closes() {
        let mut d = draining(cfg());
        d.eof();
        assert_eq!(d.closed, Some(CloseReason::Closed));
        assert_eq!(d.count("eof"), 0);
    }

    #[test]
    fn no_fin_from_the_peer_within_linger_is_linger_timeout() {
        let mut d = draining(SessionConfig {
            linger: ms(2000),
            ..cfg()
        });
        let t0 = d.t0;
        assert_near(d.s.poll_timeout(), t0 + ms(2100));
        d.cx.now = t0 + ms(2099);
        d.timeout();
        assert_eq!(d.s.phase(), Phase::Draining, "not yet");
        assert!(d.fire() >= t0 + ms(2100));
        assert_eq!(d.closed, Some(CloseReason::LingerTimeout));
    }

    #[test]
    fn input_is_discarded_while_draining() {
        let mut d = draining(cfg());
        assert!(d.s.wants_read());
        d.feed(b"hello\n");
        d.feed(b"more\n");
        assert_eq!(d.count("input"), 1);
        assert_eq!(d.wire, b"bye\n");
        assert_eq!(d.s.phase(), Phase::Draining);
    }

    #[test]
    fn a_peer_error_stands_when_the_peer_fin_ends_the_drain() {
        let mut d = draining_after_peer_error();
        d.eof();
        assert_eq!(d.closed, Some(CloseReason::PeerError("bad line".into())));
    }

    #[test]
    fn a_peer_error_stands_when_the_linger_deadline_ends_the_drain() {
        let mut d = draining_after_peer_error();
        d.fire();
        assert_eq!(d.closed, Some(CloseReason::PeerError("bad line".into())));
    }

    #[test]
    fn a_peer_error_stands_when_a_reset_ends_the_drain() {
        let mut d = draining_after_peer_error();
        d.fail(CloseReason::Io(ErrorKind::ConnectionReset));
        assert_eq!(d.closed, Some(CloseReason::PeerError("bad line".into())));
    }

    #[test]
    fn a_reset_while_draining_a_plain_close_is_the_io_error() {
        let mut d = draining(cfg());
        d.fail(CloseReason::Io(ErrorKind::ConnectionReset));
        assert_eq!(d.closed, Some(CloseReason::Io(ErrorKind::ConnectionReset)));
    }
}

// ---- HalfClosed -----------------------------------------------------------------------------

mod half_closed {
    use super::*;

    /// A connection the application half-closed: `> a\n` sent, then our FIN.
    fn half_closed() -> Driver {
        let mut d = Driver::new(Lines::default());
        d.room = Some(0);
        d.feed(b"a\n");
        assert!(d.shutdown_write());
        assert_eq!(d.s.phase(), Phase::Open, "the FIN waits for the output");
        assert!(!d.fin && !d.s.poll_fin(&d.cx));
        d.flush(None);
        assert_eq!(d.wire, b"> a\n");
        assert!(d.fin);
        assert_eq!(d.s.phase(), Phase::HalfClosed);
        d
    }

    #[test]
    fn shutdown_write_sends_fin_after_queued_output() {
        let d = half_closed();
        assert!(d.s.wants_read(), "still reading");
        assert_eq!(d.closed, None);
    }

    #[test]
    fn input_still_reaches_the_protocol_and_its_output_is_dropped() {
        let mut d = half_closed();
        d.feed(b"b\nc\n");
        assert_eq!(d.count("input"), 2);
        assert_eq!(d.wire, b"> a\n", "nothing can follow our FIN");
        assert_eq!(d.s.buffered_output(), 0);
        assert_eq!(d.s.phase(), Phase::HalfClosed);
    }

    #[test]
    fn application_send_after_our_fin_is_refused() {
        let mut d = half_closed();
        assert!(!d.send(b"late"));
        assert_eq!(d.wire, b"> a\n");
    }

    #[test]
    fn peer_eof_closes_peer_closed() {
        let mut d = half_closed();
        d.feed(b"b\n");
        d.eof();
        assert_eq!(d.closed, Some(CloseReason::PeerClosed));
        assert_eq!(d.count("eof"), 1);
        assert_eq!(d.wire, b"> a\n");
    }

    #[test]
    fn shutdown_write_only_when_open() {
        let mut d = Driver::new(Lines::default());
        d.room = Some(0);
        d.feed(b"quit\n");
        assert!(!d.shutdown_write(), "Closing already");
        let mut d = half_closed();
        assert!(!d.shutdown_write(), "HalfClosed already");
        assert!(d.fin);
    }

    #[test]
    fn a_stream_finishes_before_the_fin() {
        const TOTAL: usize = 300_000;
        let mut d = Driver::new(Download::new(TOTAL, 64 << 10));
        d.room = Some(0);
        d.feed(b"get\n");
        assert!(d.shutdown_write());
        d.flush(None);
        assert!(d.wire == pattern_bytes(TOTAL));
        assert!(d.fin);
        assert_eq!(d.s.phase(), Phase::HalfClosed);
    }

    #[test]
    fn protocol_close_while_half_closed_drains() {
        let mut d = half_closed();
        d.feed(b"quit\n");
        assert_eq!(d.s.phase(), Phase::Draining);
        assert_eq!(d.wire, b"> a\n", "`bye` comes after our FIN: dropped");
        d.eof();
        assert_eq!(d.closed, Some(CloseReason::Closed));
    }

    #[test]
    fn a_peer_error_while_half_closed_stands() {
        let mut d = half_closed();
        d.feed(b"!x\n");
        assert_eq!(d.s.phase(), Phase::Draining);
        d.eof();
        assert_eq!(d.closed, Some(CloseReason::PeerError("bad line".into())));
    }

    #[test]
    fn graceful_shutdown_while_half_closed_drains_until_the_peer_fin() {
        let mut d = half_closed();
        d.shutdown();
        assert_eq!(d.count("shutdown"), 1);
        assert_eq!(d.s.phase(), Phase::Draining);
        d.eof();
        assert_eq!(d.closed, Some(CloseReason::Closed));

        // ... or the linger deadline.
        let mut d = half_closed();
        d.shutdown();
        d.fire();
        assert_eq!(d.closed, Some(CloseReason::LingerTimeout));
    }
}

// ---- Connecting -----------------------------------------------------------------------------

mod connecting {
    use super::*;

    fn banner() -> Lines {
        Lines { banner: b"HELLO\n" }
    }

    #[test]
    fn send_while_connecting_waits_then_goes_before_the_banner() {
        let mut d = Driver::connecting(banner(), cfg(), Some(ms(5000)));
        assert!(d.send(b"EHLO\n"));
        assert!(d.wire.is_empty());
        assert!(
            d.s.poll_transmit(&d.cx).is_empty(),
            "no socket to write to yet"
        );
        assert!(!d.s.wants_read());
        assert_eq!(d.count("open"), 0);
        d.at(10);
        d.open();
        assert_eq!(d.s.phase(), Phase::Open);
        assert_eq!(d.wire, b"EHLO\nHELLO\n");
        d.feed(b"hi\n");
        assert_eq!(d.wire, b"EHLO\nHELLO\n> hi\n");
    }

    #[test]
    fn connect_timeout() {
        let mut d = Driver::connecting(banner(), cfg(), Some(ms(5000)));
        let t0 = d.t0;
        assert_near(d.s.poll_timeout(), t0 + ms(5000));
        d.cx.now = t0 + ms(4999);
        d.timeout();
        assert_eq!(d.s.phase(), Phase::Connecting);
        d.fire();
        assert_eq!(d.closed, Some(CloseReason::ConnectTimeout));
        assert_eq!(d.count("open"), 0, "the protocol never opened");
        assert!(d.wire.is_empty());
    }

    #[test]
    fn no_connect_timeout_no_deadline() {
        let d = Driver::connecting(banner(), cfg(), None);
        assert_eq!(d.s.poll_timeout(), None);
    }

    #[test]
    fn connect_failed() {
        let mut d = Driver::connecting(banner(), cfg(), Some(ms(5000)));
        assert!(d.send(b"EHLO\n"));
        d.fail(CloseReason::ConnectFailed(ErrorKind::ConnectionRefused));
        assert_eq!(
            d.closed,
            Some(CloseReason::ConnectFailed(ErrorKind::ConnectionRefused))
        );
        assert!(d.wire.is_empty());
        assert_eq!(d.count("open"), 0);
    }

    #[test]
    fn close_and_shutdown_while_connecting_give_up() {
        let mut d = Driver::connecting(banner(), cfg(), Some(ms(5000)));
        d.close();
        assert_eq!(d.closed, Some(CloseReason::Aborted));
        let mut d = Driver::connecting(banner(), cfg(), Some(ms(5000)));
        d.shutdown();
        assert_eq!(d.closed, Some(CloseReason::Shutdown));
        assert_eq!(
            d.count("shutdown"),
            0,
            "no protocol to ask: it never opened"
        );
    }

    #[test]
    fn the_idle_clock_starts_at_open() {
        let mut d = Driver::connecting(
            banner(),
            SessionConfig {
                idle: Some(ms(1000)),
                ..cfg()
            },
            Some(ms(5000)),
        );
        let t0 = d.t0;
        assert_near(d.s.poll_timeout(), t0 + ms(5000));
        d.cx.now = t0 + ms(3000);
        d.open();
        assert_near(d.s.poll_timeout(), t0 + ms(4000));
        d.fire();
        assert_eq!(d.closed, Some(CloseReason::IdleTimeout));
    }

    #[test]
    fn the_write_stall_clock_starts_at_open() {
        let mut d = Driver::connecting(
            banner(),
            SessionConfig {
                write_stall: Some(ms(1000)),
                ..cfg()
            },
            Some(ms(5000)),
        );
        let t0 = d.t0;
        assert!(d.send(b"EHLO\n"));
        // Nobody can take bytes before the connect: only the connect deadline counts.
        assert_near(d.s.poll_timeout(), t0 + ms(5000));
        d.cx.now = t0 + ms(2000);
        d.timeout();
        assert_eq!(d.s.phase(), Phase::Connecting);
        // Connected at 3 s into a full socket: the stall clock starts now.
        d.cx.now = t0 + ms(3000);
        d.room = Some(0);
        d.open();
        assert_near(d.s.poll_timeout(), t0 + ms(4000));
        d.cx.now = t0 + ms(3500);
        d.timeout();
        assert_eq!(d.closed, None);
    }
}

// ---- deadlines ------------------------------------------------------------------------------

mod deadlines {
    use super::*;

    #[test]
    fn idle_timeout() {
        let mut d = Driver::open_with(
            Echo,
            SessionConfig {
                idle: Some(ms(1000)),
                ..cfg()
            },
        );
        let t0 = d.t0;
        assert_near(d.s.poll_timeout(), t0 + ms(1000));
        d.cx.now = t0 + ms(999);
        d.timeout();
        assert_eq!(d.s.phase(), Phase::Open);
        d.fire();
        assert_eq!(d.closed, Some(CloseReason::IdleTimeout));
    }

    #[test]
    fn activity_either_way_pushes_the_idle_timeout_later() {
        let mut d = Driver::open_with(
            Echo,
            SessionConfig {
                idle: Some(ms(1000)),
                ..cfg()
            },
        );
        let t0 = d.t0;
        d.room = Some(0);
        d.cx.now = t0 + ms(600);
        d.feed(b"x");
        assert_near(d.s.poll_timeout(), t0 + ms(1600));
        d.cx.now = t0 + ms(1500);
        d.timeout();
        assert_eq!(d.s.phase(), Phase::Open);
        // The peer taking our output counts too.
        d.cx.now = t0 + ms(1500);
        d.flush(None);
        assert_eq!(d.wire, b"x");
        assert_near(d.s.poll_timeout(), t0 + ms(2500));
        // A write that would block is no activity.
        d.cx.now = t0 + ms(2000);
        d.room = Some(0);
        assert!(d.send(b"y"));
        assert_near(d.s.poll_timeout(), t0 + ms(2500));
        assert!(d.fire() >= t0 + ms(2500));
        assert_eq!(d.closed, Some(CloseReason::IdleTimeout));
    }

    #[test]
    fn write_stall() {
        let mut d = Driver::open_with(
            Echo,
            SessionConfig {
                write_stall: Some(ms(1000)),
                ..cfg()
            },
        );
        let t0 = d.t0;
        assert_eq!(
            d.s.poll_timeout(),
            None,
            "no output pending, no stall clock"
        );
        d.room = Some(0);
        d.cx.now = t0 + ms(100);
        d.feed(b"hello");
        assert_near(d.s.poll_timeout(), t0 + ms(1100));
        d.cx.now = t0 + ms(1099);
        d.timeout();
        assert_eq!(d.s.phase(), Phase::Open);
        d.fire();
        assert_eq!(d.closed, Some(CloseReason::WriteStall));
        assert!(d.wire.is_empty());
    }

    #[test]
    fn write_progress_restarts_the_stall_clock() {
        let mut d = Driver::open_with(
            Echo,
            SessionConfig {
                write_stall: Some(ms(1000)),
                ..cfg()
            },
        );
        let t0 = d.t0;
        d.room = Some(0);
        d.feed(b"0123456789");
        assert_near(d.s.poll_timeout(), t0 + ms(1000));
        // Would block: no progress, the clock keeps running.
        d.cx.now = t0 + ms(500);
        d.flush(Some(0));
        assert_near(d.s.poll_timeout(), t0 + ms(1000));
        // More output behind the backlog does not restart it either.
        assert!(d.send(b"ab"));
        assert_near(d.s.poll_timeout(), t0 + ms(1000));
        // The peer takes 3 bytes: a fresh second.
        d.cx.now = t0 + ms(800);
        d.flush(Some(3));
        assert_near(d.s.poll_timeout(), t0 + ms(1800));
        d.cx.now = t0 + ms(1500);
        d.timeout();
        assert_eq!(d.s.phase(), Phase::Open, "would have stalled at 1 s");
        // Everything sent: no stall clock at all.
        d.flush(None);
        assert_eq!(d.wire, b"0123456789ab");
        assert_eq!(d.s.poll_timeout(), None);
        // A new backlog starts a new clock.
        d.cx.now = t0 + ms(3000);
        d.room = Some(0);
        d.feed(b"z");
        assert_near(d.s.poll_timeout(), t0 + ms(4000));
        d.fire();
        assert_eq!(d.closed, Some(CloseReason::WriteStall));
    }

    #[test]
    fn protocol_timer_runs() {
        let mut d = Driver::new(Ticker::new(ms(300), 2));
        let t0 = d.t0;
        assert_eq!(d.s.poll_timeout(), Some(t0 + ms(300)));
        d.cx.now = t0 + ms(299);
        d.timeout();
        assert_eq!(d.count("timeout"), 0, "nothing due: only an event");
        assert!(d.wire.is_empty());
        assert_eq!(d.fire(), t0 + ms(300));
        assert_eq!(d.wire, b"tick\n");
        assert_eq!(d.fire(), t0 + ms(600));
        assert_eq!(d.wire, b"tick\ntick\n");
        assert_eq!(d.count("timeout"), 2);
        assert_eq!(d.s.poll_timeout(), None, "the protocol wants no more");
        assert_eq!(d.s.phase(), Phase::Open);
    }

    #[test]
    fn poll_timeout_is_the_earliest_deadline() {
        let mut d = Driver::open_with(
            Ticker::new(ms(300), 2),
            SessionConfig {
                idle: Some(ms(1000)),
                write_stall: Some(ms(500)),
                ..cfg()
            },
        );
        let t0 = d.t0;
        // Idle at 1000, the protocol's tick at 300.
        assert_eq!(d.s.poll_timeout(), Some(t0 + ms(300)));
        d.room = Some(0);
        d.feed(b"x");
        // Now also the write stall at 500.
        assert_eq!(d.s.poll_timeout(), Some(t0 + ms(300)));
        assert_eq!(d.fire(), t0 + ms(300));
        assert_eq!(d.count("timeout"), 1);
        // Tick at 600, stall at 500, idle at 1000.
        assert_near(d.s.poll_timeout(), t0 + ms(500));
        // Progress at 400: stall at 900, idle at 1400, tick at 600.
        d.cx.now = t0 + ms(400);
        d.flush(Some(1));
        assert_eq!(d.s.poll_timeout(), Some(t0 + ms(600)));
        assert_eq!(d.fire(), t0 + ms(600));
        assert_near(d.s.poll_timeout(), t0 + ms(900));
        d.fire();
        assert_eq!(d.closed, Some(CloseReason::WriteStall));
        assert_eq!(d.wire, b"x");
        assert_eq!(d.s.poll_timeout(), None, "closed: no deadline");
    }

    #[test]
    fn protocol_timer_wakes_a_waiting_stream() {
        let (stall, ready) = Stall::new(Some(ms(200)));
        let mut d = Driver::new(stall);
        let t0 = d.t0;
        d.feed(b"go");
        assert_eq!(d.count("writable"), 1);
        assert!(!d.s.wants_writable(&d.cx), "not now: waiting");
        assert_eq!(d.s.poll_timeout(), Some(t0 + ms(200)));
        d.fire();
        assert!(ready.get());
        assert_eq!(
            d.count("writable"),
            2,
            "the timer was the event it waited for"
        );
        assert_eq!(d.wire, b"data");
        assert!(!d.s.wants_writable(&d.cx), "done streaming");
    }

    #[test]
    fn write_stall_while_streaming_to_a_peer_that_stopped_reading() {
        let mut d = Driver::open_with(
            Download::new(1 << 20, 64 << 10),
            SessionConfig {
                write_stall: Some(ms(1000)),
                ..cfg()
            },
        );
        let t0 = d.t0;
        d.room = Some(100_000);
        d.feed(b"get\n");
        assert_eq!(d.wire.len(), 100_000);
        assert_near(d.s.poll_timeout(), t0 + ms(1000));
        d.fire();
        assert_eq!(d.closed, Some(CloseReason::WriteStall));
        let writes = d.count("writable");
        d.flush(None);
        assert_eq!(d.wire.len(), 100_000, "nothing after the close");
        assert_eq!(d.count("writable"), writes);
    }

    #[test]
    fn idle_timeout_while_half_closed_and_draining() {
        let idle = SessionConfig {
            idle: Some(ms(1000)),
            linger: ms(5000),
            ..cfg()
        };
        let mut d = Driver::open_with(Echo, idle.clone());
        assert!(d.shutdown_write());
        assert_eq!(d.s.phase(), Phase::HalfClosed);
        d.fire();
        assert_eq!(d.closed, Some(CloseReason::IdleTimeout));

        // Draining: the idle timeout comes before a longer linger.
        let mut d = Driver::open_with(Lines::default(), idle);
        d.feed(b"quit\n");
        assert_eq!(d.s.phase(), Phase::Draining);
        assert_near(d.s.poll_timeout(), d.t0 + ms(1000));
        d.fire();
        assert_eq!(d.closed, Some(CloseReason::IdleTimeout));
    }
}

// ---- Closed ---------------------------------------------------------------------------------

mod closed {
    use super::*;

    #[test]
    fn poll_close_gives_the_reason_once() {
        let mut d = Driver::new(Echo);
        assert_eq!(d.s.poll_close(), None, "not closed yet");
        d.eof();
        // The driver took it; it is not handed out again.
        assert_eq!(d.closed, Some(CloseReason::PeerClosed));
        assert_eq!(d.s.poll_close(), None);
        assert_eq!(d.s.poll_close(), None);
        assert_eq!(d.s.phase(), Phase::Closed);
    }

    #[test]
    fn nothing_after_the_close_produces_output_or_calls_the_protocol() {
        let mut d = Driver::open_with(
            Ticker::new(ms(300), 10),
            SessionConfig {
                idle: Some(ms(1000)),
                write_stall: Some(ms(1000)),
                ..cfg()
            },
        );
        d.feed(b"before");
        d.fail(CloseReason::Io(ErrorKind::BrokenPipe));
        assert_eq!(d.closed, Some(CloseReason::Io(ErrorKind::BrokenPipe)));
        let calls = d.log.borrow().calls.len();

        d.at(60_000);
        d.feed_unchecked(b"more\n");
        d.eof();
        d.timeout();
        d.s.writable(&mut d.cx);
        d.s.fin_sent(&mut d.cx);
        d.s.sent(&mut d.cx, 0);
        d.shutdown();
        assert!(!d.send(b"x"));
        d.close();
        assert!(!d.shutdown_write());
        d.open();
        d.fail(CloseReason::Aborted);

        assert_eq!(
            d.log.borrow().calls.len(),
            calls,
            "the protocol is not called"
        );
        assert!(d.log.borrow().after_close.is_empty());
        assert_eq!(
            d.log.borrow().closes,
            [CloseReason::Io(ErrorKind::BrokenPipe)]
        );
        assert_eq!(d.wire, b"before");
        assert!(d.s.poll_transmit(&d.cx).is_empty());
        assert_eq!(d.s.buffered_output(), 0);
        assert_eq!(d.s.poll_close(), None);
        assert_eq!(d.s.poll_timeout(), None);
        assert!(!d.s.wants_read() && !d.s.wants_write());
        assert!(!d.s.wants_writable(&d.cx) && !d.s.poll_fin(&d.cx));
        assert_eq!(d.s.phase(), Phase::Closed);
    }

    #[test]
    fn handle_close_exactly_once_whatever_the_way_in() {
        type Scenario = (&'static str, fn(&mut Driver), CloseReason);
        let scenarios: [Scenario; 8] = [
            ("peer eof", |d| d.eof(), CloseReason::PeerClosed),
            (
                "quit, eof",
                |d| {
                    d.feed(b"quit\n");
                    d.eof()
                },
                CloseReason::Closed,
            ),
            (
                "quit, linger",
                |d| {
                    d.feed(b"quit\n");
                    d.fire();
                },
                CloseReason::LingerTimeout,
            ),
            ("abort", |d| d.feed(b"abort\n"), CloseReason::Aborted),
            (
                "peer error, reset",
                |d| {
                    d.feed(b"!\n");
                    d.fail(CloseReason::Io(ErrorKind::ConnectionReset))
                },
                CloseReason::PeerError("bad line".into()),
            ),
            (
                "shutdown, eof",
                |d| {
                    d.shutdown();
                    d.eof()
                },
                CloseReason::Closed,
            ),
            (
                "half-close, eof",
                |d| {
                    assert!(d.shutdown_write());
                    d.eof()
                },
                CloseReason::PeerClosed,
            ),
            (
                "grace over",
                |d| d.fail(CloseReason::Shutdown),
                CloseReason::Shutdown,
            ),
        ];
        for (name, drive, want) in scenarios {
            let mut d = Driver::new(Lines::default());
            drive(&mut d);
            assert_eq!(d.closed.as_ref(), Some(&want), "{name}");
            // Whatever comes after cannot close it again.
            d.fail(CloseReason::Io(ErrorKind::ConnectionReset));
            d.eof();
            d.fire_if_due();
            assert_eq!(d.log.borrow().closes, [want], "{name}: handle_close once");
            assert_eq!(d.count("close"), 1, "{name}");
        }
    }
}

// ---- streaming ------------------------------------------------------------------------------

mod streaming {
    use super::*;

    #[test]
    fn nothing_to_give_waits_for_another_event_instead_of_spinning() {
        let (stall, ready) = Stall::new(None);
        let mut d = Driver::new(stall);
        d.feed(b"go");
        assert_eq!(d.count("writable"), 1);
        assert!(
            !d.s.wants_writable(&d.cx),
            "asked again with nothing: not now"
        );
        d.pump();
        d.pump();
        assert_eq!(d.count("writable"), 1, "a pump with no event asks no more");
        // Any event is what it may have waited for.
        d.feed(b"more");
        assert_eq!(d.count("writable"), 2);
        assert!(!d.s.wants_writable(&d.cx));
        ready.set(true);
        d.timeout(); // with nothing due: only an event
        assert_eq!(d.count("writable"), 3);
        assert_eq!(d.wire, b"data");
        assert!(!d.s.wants_writable(&d.cx), "it stopped asking");
        assert_eq!(d.s.phase(), Phase::Open);
    }

    #[test]
    fn writable_is_asked_only_once_everything_queued_is_sent() {
        const PIECE: usize = 1000;
        let mut d = Driver::new(Download::new(3 * PIECE, PIECE));
        d.room = Some(0);
        d.feed(b"get\n");
        assert_eq!(d.count("writable"), 1);
        assert_eq!(d.s.buffered_output(), PIECE);
        assert!(!d.s.wants_writable(&d.cx), "a piece still waits");
        d.flush(Some(PIECE - 1));
        assert!(!d.s.wants_writable(&d.cx));
        assert_eq!(d.count("writable"), 1);
        // The last byte of the first piece goes, and the second piece is asked for.
        d.flush(Some(1));
        assert_eq!(d.count("writable"), 2);
        d.flush(None);
        assert_eq!(d.count("writable"), 3);
        assert!(d.wire == pattern_bytes(3 * PIECE));
        assert!(!d.s.wants_writable(&d.cx));
        assert_eq!(
            d.s.phase(),
            Phase::Open,
            "streaming ends; the connection does not"
        );
    }

    #[test]
    fn a_stream_goes_out_whole_with_an_unlimited_socket() {
        const TOTAL: usize = 4 << 20;
        let mut d = Driver::new(Download::new(TOTAL, 64 << 10));
        d.feed(b"GET\n");
        assert!(d.wire == pattern_bytes(TOTAL));
        assert_eq!(d.s.buffered_output(), 0);
        assert_eq!(d.count("writable"), 64);
        // Later requests are ignored: one download per connection.
        d.feed(b"GET\n");
        assert_eq!(d.wire.len(), TOTAL);
    }

    #[test]
    fn a_stream_with_nothing_to_give_after_eof_waits_for_its_timer() {
        let (stall, ready) = Stall::new(Some(ms(200)));
        let mut d = Driver::new(stall);
        d.feed(b"go");
        d.eof();
        assert_eq!(d.s.phase(), Phase::PeerClosed, "the protocol still streams");
        assert_eq!(d.closed, None);
        d.fire();
        assert!(ready.get());
        assert_eq!(d.wire, b"data");
        assert_eq!(d.closed, Some(CloseReason::PeerClosed));
    }

    #[test]
    fn application_close_ends_a_stream() {
        let mut d = Driver::new(Download::new(1 << 20, 1000));
        d.room = Some(2500);
        d.feed(b"get\n");
        assert_eq!(d.wire.len(), 2500);
        d.close();
        assert_eq!(d.s.phase(), Phase::Closing);
        let writes = d.count("writable");
        d.flush(None);
        assert_eq!(
            d.count("writable"),
            writes,
            "not asked for more after the close"
        );
        assert_eq!(d.wire.len(), 3000, "the piece begun is finished");
        assert!(d.fin);
    }
}

// ---- any split of a stream ------------------------------------------------------------------

mod splits {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::Index;

    const MAX_INPUT: usize = 32;

    /// How a stream of lines ends.
    #[derive(Clone, Debug)]
    enum Tail {
        /// Nothing more.
        Clean,
        /// An unfinished line.
        Partial(Vec<u8>),
        /// A malformed line, and lines after it that are never answered.
        Malformed,
        /// An unfinished line longer than the input limit.
        OverLimit(usize),
        /// `quit` (the protocol closes), then pipelined bytes, more than the input limit,
        /// that are never consumed.
        Quit(usize),
    }

    fn tail() -> impl Strategy<Value = Tail> {
        prop_oneof![
            Just(Tail::Clean),
            vec(b'a'..=b'm', 1..10).prop_map(Tail::Partial),
            Just(Tail::Malformed),
            (MAX_INPUT + 1..MAX_INPUT + 20).prop_map(Tail::OverLimit),
            (0..MAX_INPUT * 2).prop_map(Tail::Quit),
        ]
    }

    /// The stream's bytes, and what a correct session must answer: the wire, the close
    /// reason (if the peer's FIN ends the stream), and the phase otherwise.
    fn build(lines: &[Vec<u8>], tail: &Tail, eof: bool) -> (Vec<u8>, Vec<u8>, Expect) {
        let mut bytes = Vec::new();
        let mut wire = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
            wire.extend_from_slice(b"> ");
            wire.extend_from_slice(l);
            wire.push(b'\n');
        }
        let (reason, phase) = match tail {
            Tail::Clean => (CloseReason::PeerClosed, Phase::Open),
            Tail::Partial(p) => {
                bytes.extend_from_slice(p);
                let e = format!(
                    "stream ended in the middle of a message ({} bytes unconsumed)",
                    p.len()
                );
                (CloseReason::PeerError(e), Phase::Open)
            }
            Tail::Malformed => {
                bytes.extend_from_slice(b"!bad\nafter\nmore\n");
                wire.extend_from_slice(b"err\n");
                (CloseReason::PeerError("bad line".into()), Phase::Draining)
            }
            Tail::OverLimit(n) => {
                bytes.extend_from_slice(&vec![b'z'; *n]);
                (CloseReason::InputLimit, Phase::Draining)
            }
            Tail::Quit(n) => {
                bytes.extend_from_slice(b"quit\n");
                bytes.extend_from_slice(&vec![b'z'; *n]);
                wire.extend_from_slice(b"bye\n");
                // Whether the peer's FIN comes before ours or after, the close was ours.
                (CloseReason::Closed, Phase::Draining)
            }
        };
        let expect = if eof {
            Expect::Closed(reason)
        } else {
            Expect::Still(phase)
        };
        (bytes, wire, expect)
    }

    #[derive(Clone, Debug, PartialEq)]
    enum Expect {
        Closed(CloseReason),
        Still(Phase),
    }

    /// Feeds `bytes` cut at `cuts`, the socket's room before each read set from `rooms` in
    /// turn, then the peer's FIN if `eof`, then lets the peer read everything.
    fn run(
        bytes: &[u8],
        eof: bool,
        cuts: &[usize],
        rooms: &[Option<usize>],
    ) -> (Vec<u8>, Expect, usize) {
        let mut d = Driver::open_with(
            Lines::default(),
            SessionConfig {
                max_input: MAX_INPUT,
                ..cfg()
            },
        );
        let mut rooms = rooms.iter().cycle();
        let mut from = 0;
        for &to in cuts.iter().chain([&bytes.len()]) {
            d.room = *rooms.next().unwrap();
            if !d.s.wants_read() {
                // Backpressure: the driver waits until the peer reads.
                d.flush(None);
            }
            if to > from {
                d.feed(&bytes[from..to]);
                from = to;
            }
        }
        if eof {
            d.room = *rooms.next().unwrap();
            d.eof();
        }
        d.flush(None);
        let end = match d.closed.clone() {
            Some(reason) => Expect::Closed(reason),
            None => Expect::Still(d.s.phase()),
        };
        let closes = d.log.borrow().closes.len();
        (d.wire, end, closes)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            // Nothing written next to the sources when a case fails; the failure is printed.
            failure_persistence: None,
            ..ProptestConfig::with_cases(256)
        })]

        #[test]
        fn any_split_and_any_socket_room_answer_like_the_whole_stream(
            lines in vec(vec(b'a'..=b'm', 0..10), 0..6),
            tail in tail(),
            eof in any::<bool>(),
            cuts in vec(any::<Index>(), 0..12),
            rooms in vec(prop_oneof![Just(None), (0usize..6).prop_map(Some)], 1..6),
        ) {
            let (bytes, want_wire, want_end) = build(&lines, &tail, eof);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();

            let whole = run(&bytes, eof, &[], &[None]);
            prop_assert_eq!(&whole.0, &want_wire, "whole: wire");
            prop_assert_eq!(&whole.1, &want_end, "whole: end");

            let split = run(&bytes, eof, &cuts, &rooms);
            prop_assert_eq!(&split.0, &whole.0, "split: wire");
            prop_assert_eq!(&split.1, &whole.1, "split: end");
            prop_assert_eq!(split.2, usize::from(eof), "handle_close once iff closed");
        }

        #[test]
        fn a_download_arrives_whole_whatever_the_socket_takes(
            total in 0usize..20_000,
            piece in 1usize..5_000,
            rooms in vec(0usize..7_000, 1..8),
            eof_after in 0usize..8,
        ) {
            let mut d = Driver::new(Download::new(total, piece));
            d.room = Some(0);
            d.feed(b"get\n");
            for (turn, room) in rooms.iter().cycle().take(64).enumerate() {
                if turn == eof_after {
                    d.eof();
                }
                d.flush(Some(*room));
                prop_assert!(d.s.buffered_output() <= piece, "one piece at most is held");
                if d.closed.is_some() {
                    break;
                }
            }
            if d.s.phase() == Phase::Open {
                d.eof();
            }
            d.flush(None);
            prop_assert!(d.wire == pattern_bytes(total), "every byte, in order");
            prop_assert_eq!(d.closed, Some(CloseReason::PeerClosed));
        }
    }
}
