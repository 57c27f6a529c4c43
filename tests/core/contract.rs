//! The contracts the drivers promise around failure and ending: the panic policy (a
//! panic ends only what panicked, is counted, and the loop goes on), the close contract
//! (`handle_close` once per connection, mailboxes and handles that say when the reactor
//! or the connection is gone instead of hanging), and a reactor driven only by `run_once`
//! (shutdown, grace and datagram sockets behave as under `run`).
//!
//! Real sockets on 127.0.0.1; every wait polls against a deadline, and the only fixed
//! windows assert that something does *not* happen.

use crate::support::{
    connect_within, localhost, per_driver, pump_for, pump_until, round_trip, test_config,
    wait_until, BgReactor, Driver, Echo, InProcServer, WAIT,
};
use sockloop::net::Endpoint;
use sockloop::proto::{CloseReason, DatagramProtocol, Mailbox, Out, PeerError, Protocol, Transmit};
use sockloop::reactor::{CallError, Closed, Config, Handle, Reactor, State};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers.

/// Every reason `handle_close` was given, in order.
type Closes = Arc<Mutex<Vec<CloseReason>>>;

fn closes_of(closes: &Closes) -> Vec<CloseReason> {
    closes.lock().unwrap().clone()
}

/// An echo machine with knobs: it records every `handle_close` reason in `closes`; panics
/// ("boom in the stream") on input holding b"boom"; panics ("panic in <call>") in the call
/// `panic_in` names (`poll_timeout` and `handle_timeout` only once input has arrived);
/// ignores a graceful shutdown if `stubborn`; sends its mailbox to `mailbox` when opened.
#[derive(Clone, Default)]
struct Probe {
    closes: Closes,
    panic_in: Option<&'static str>,
    stubborn: bool,
    mailbox: Option<mpsc::Sender<Mailbox>>,
    /// When input last arrived.
    woken: Option<Instant>,
}

impl Probe {
    fn panicking(call: &'static str) -> Probe {
        let panic_in = Some(call);
        Probe {
            panic_in,
            ..Probe::default()
        }
    }
    fn stubborn() -> Probe {
        Probe {
            stubborn: true,
            ..Probe::default()
        }
    }
    fn maybe_panic(&self, call: &str) {
        if self.panic_in == Some(call) {
            panic!("panic in {call}");
        }
    }
}

impl Protocol for Probe {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        self.maybe_panic("handle_open");
        if let Some(tx) = &self.mailbox {
            let _ = tx.send(out.mailbox().expect("the driver offers a mailbox"));
        }
    }
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        self.maybe_panic("handle_input");
        if input.windows(4).any(|w| w == b"boom") {
            panic!("boom in the stream");
        }
        self.woken = Some(out.now());
        if self.panic_in == Some("handle_writable") {
            out.want_writable();
        }
        out.push(input);
        Ok(input.len())
    }
    fn poll_timeout(&self) -> Option<Instant> {
        if self.woken.is_some() {
            self.maybe_panic("poll_timeout");
        }
        self.woken
            .filter(|_| self.panic_in == Some("handle_timeout"))
    }
    fn handle_timeout(&mut self, _out: &mut Out<'_>) {
        self.maybe_panic("handle_timeout");
    }
    fn handle_writable(&mut self, _out: &mut Out<'_>) {
        self.maybe_panic("handle_writable");
    }
    fn handle_eof(&mut self, _rest: &[u8], _out: &mut Out<'_>) -> Result<(), PeerError> {
        self.maybe_panic("handle_eof");
        Ok(())
    }
    fn handle_shutdown(&mut self, out: &mut Out<'_>) {
        self.maybe_panic("handle_shutdown");
        if !self.stubborn {
            out.close();
        }
    }
    fn handle_close(&mut self, reason: &CloseReason) {
        self.closes.lock().unwrap().push(reason.clone());
    }
}

/// UDP echo: every datagram back to its sender.
struct UdpEcho;

impl DatagramProtocol for UdpEcho {
    fn handle_datagram(
        &mut self,
        from: &Endpoint,
        bytes: &[u8],
        _now: Instant,
        out: &mut Vec<Transmit>,
    ) {
        out.push(Transmit {
            to: from.clone(),
            bytes: bytes.to_vec(),
        });
    }
}

/// The panics `server` has caught: the reactor's `Stats::panics`, or the blocking
/// server's `BlockingStats::panics`.
fn panics(server: &InProcServer) -> u64 {
    match server {
        InProcServer::Reactor(bg) => bg.stats().panics,
        InProcServer::Blocking(s, _) => s.stats().panics.load(Ordering::SeqCst),
        #[cfg(feature = "uring")]
        InProcServer::Uring(s, _) => s.stats().panics.load(Ordering::SeqCst),
    }
}

/// Reads (blocking, bounded by [`WAIT`]) until the server ends the stream: EOF or an error
/// such as a reset. Returns what arrived before the end.
fn assert_ended(s: &mut TcpStream, what: &str) -> Vec<u8> {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("{what}: the stream did not end within {WAIT:?}")
            }
            Err(_) => return got,
        }
    }
}

/// Runs the loop until `n` bytes arrive on `s` (or it ends, if `n` is `None`).
fn pump_read(reactor: &mut Reactor, s: &mut TcpStream, n: Option<usize>) -> Vec<u8> {
    s.set_nonblocking(true).unwrap();
    let (mut got, mut ended) = (Vec::new(), false);
    pump_until(reactor, WAIT, "bytes or the end arrive", |_| {
        let mut buf = [0u8; 1024];
        while !ended {
            match s.read(&mut buf) {
                Ok(0) => ended = true,
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => ended = true,
            }
        }
        match n {
            Some(n) if got.len() >= n => true,
            Some(_) if ended => panic!("the stream ended after {} bytes", got.len()),
            Some(_) => false,
            None => ended,
        }
    });
    s.set_nonblocking(false).unwrap();
    got
}

/// One round trip to an echo server on the loop the test thread drives.
fn pump_round_trip(reactor: &mut Reactor, s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("a small write");
    assert_eq!(pump_read(reactor, s, Some(msg.len())), msg, "the echo");
}

/// Runs `Handle::call` on a helper thread: a call that hangs fails the test.
fn call_within(handle: &Handle) -> Result<u64, CallError> {
    let (h, (tx, rx)) = (handle.clone(), mpsc::channel());
    std::thread::spawn(move || {
        let _ = tx.send(h.call(|r| r.stats().tasks));
    });
    rx.recv_timeout(WAIT)
        .expect("Handle::call returned within WAIT")
}

/// Waits (at most `within`) for `fd` to be readable; returns whether it is.
fn wait_readable(fd: std::os::fd::RawFd, within: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = within.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) == 1 }
}

fn draining(reactor: &Reactor) -> bool {
    matches!(reactor.state(), State::Draining { .. })
}

/// A reactor (on the test thread) listening with clones of `probe`.
fn reactor_with_probe(cfg: Config, probe: &Probe) -> (Reactor, SocketAddr) {
    let mut reactor = Reactor::with_config(cfg).unwrap();
    let probe = probe.clone();
    let addr = reactor.listen(localhost(), move || probe.clone()).unwrap();
    (reactor, addr)
}

// ---------------------------------------------------------------------------------------
// 1. The panic policy.

/// A protocol panic ends only its own connection: 100 clients round-trip, one sends
/// b"boom" and its stream ends, the other 99 still round-trip, and one panic is counted.
fn one_of_100_connections_panics_mid_stream(driver: Driver) {
    let cfg = Config {
        max_connections: 256,
        ..test_config()
    };
    let server = InProcServer::start(driver, cfg, Probe::default);
    let mut clients: Vec<TcpStream> = (0..100)
        .map(|_| connect_within(server.addr(), WAIT))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        round_trip(c, format!("hello {i}\n").as_bytes());
    }
    let victim = 37;
    clients[victim].write_all(b"boom").unwrap();
    let after = assert_ended(&mut clients[victim], "the panicking connection");
    assert!(after.is_empty(), "{driver}: nothing echoed after the panic");
    for (i, c) in clients.iter_mut().enumerate().filter(|(i, _)| *i != victim) {
        round_trip(c, format!("still here {i}\n").as_bytes());
    }
    wait_until(WAIT, "the panic is counted", || {
        (panics(&server) == 1).then_some(())
    });
}

per_driver!(one_of_100_connections_panics_mid_stream:
    one_of_100_connections_panics_mid_stream_on_reactor,
    one_of_100_connections_panics_mid_stream_on_threaded;
    not_iterative: "100 clients served at once");

/// Clients one after another (so the iterative driver is covered too): a panic in the 4th
/// of 8 connections ends only it, is counted once, and its `handle_close` is told
/// `Panicked` with the panic's message, once (stopping the server does not tell it again).
fn handle_close_is_told_panicked_once(driver: Driver) {
    let probe = Probe::default();
    let server = InProcServer::start(driver, test_config(), {
        let probe = probe.clone();
        move || probe.clone()
    });
    for i in 0..8 {
        let mut c = connect_within(server.addr(), WAIT);
        round_trip(&mut c, format!("client {i}\n").as_bytes());
        if i == 3 {
            c.write_all(b"boom").unwrap();
            assert_ended(&mut c, "the panicking connection");
        }
    }
    let all_closed = || (closes_of(&probe.closes).len() == 8).then_some(());
    wait_until(WAIT, "every connection closed", all_closed);
    wait_until(WAIT, "the panic is counted", || {
        (panics(&server) == 1).then_some(())
    });
    drop(server);
    let closes = closes_of(&probe.closes);
    let panicked: Vec<_> = closes
        .iter()
        .filter(|r| matches!(r, CloseReason::Panicked(_)))
        .collect();
    let want = CloseReason::Panicked("boom in the stream".into());
    assert_eq!(panicked, [&want], "{driver}");
    assert_eq!(closes.len(), 8, "{driver}: once per connection: {closes:?}");
}

per_driver!(handle_close_is_told_panicked_once:
    panicked_close_on_reactor, panicked_close_on_threaded, panicked_close_on_iterative);

/// A panic in any protocol call (each of the seven, in turn) closes that connection with
/// `Panicked("panic in <call>")`, told once, counted once; another connection on the same
/// reactor is still served.
#[test]
fn a_panic_in_any_protocol_call_closes_only_that_connection() {
    for call in [
        "handle_open",
        "handle_input",
        "handle_eof",
        "handle_timeout",
        "poll_timeout",
        "handle_writable",
        "handle_shutdown",
    ] {
        let probe = Probe::panicking(call);
        let (mut reactor, addr) = reactor_with_probe(test_config(), &probe);
        let echo = reactor.listen(localhost(), || Echo).unwrap();
        let mut bystander = connect_within(echo, WAIT);
        let mut client = connect_within(addr, WAIT);
        pump_until(&mut reactor, WAIT, "both accepted", |r| {
            r.stats().accepted == 2
        });
        match call {
            "handle_open" => {}
            "handle_eof" => client.shutdown(Shutdown::Write).unwrap(),
            "handle_shutdown" => reactor.shutdown(),
            _ => client.write_all(b"ping").unwrap(),
        }
        pump_until(&mut reactor, WAIT, call, |_| {
            !closes_of(&probe.closes).is_empty()
        });
        let want = [CloseReason::Panicked(format!("panic in {call}"))];
        assert_eq!(closes_of(&probe.closes), want, "{call}");
        assert_eq!(reactor.stats().panics, 1, "{call}: one panic counted");
        pump_read(&mut reactor, &mut client, None);
        if call != "handle_shutdown" {
            pump_round_trip(&mut reactor, &mut bystander, b"still served");
        }
        drop(reactor);
        assert_eq!(closes_of(&probe.closes).len(), 1, "{call}: once");
    }
}

/// A panicking posted task is that task's end only: of three tasks taken in one batch the
/// first and third run, one panic is counted, and the reactor goes on serving.
#[test]
fn a_panicking_task_does_not_lose_the_rest_of_its_batch() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let addr = reactor.listen(localhost(), || Echo).unwrap();
    let (handle, (tx, rx)) = (reactor.handle(), mpsc::channel());
    for i in 1..=3 {
        let tx = tx.clone();
        handle
            .post(move |_| {
                if i == 2 {
                    panic!("task 2 panics");
                }
                tx.send(i).unwrap();
            })
            .unwrap();
    }
    // All three were queued before this turn, so it takes them as one batch.
    reactor.run_once(Some(WAIT)).expect("run_once");
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), [1, 3]);
    assert_eq!((reactor.stats().tasks, reactor.stats().panics), (3, 1));
    let mut c = connect_within(addr, WAIT);
    pump_round_trip(&mut reactor, &mut c, b"after the task panicked");
}

/// A panicking timer callback does not lose another timer due in the same turn.
#[test]
fn a_panicking_timer_does_not_lose_another_due_at_the_same_time() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let fired = Rc::new(Cell::new(false));
    reactor.set_timer(Duration::ZERO, |_| panic!("the first timer panics"));
    let f = Rc::clone(&fired);
    reactor.set_timer(Duration::ZERO, move |_| f.set(true));
    // Both are due before this turn's clock is read: they fire in it.
    reactor.run_once(Some(WAIT)).expect("run_once");
    assert!(fired.get(), "the second timer fired in the same turn");
    let s = reactor.stats();
    assert_eq!((s.timers_fired, s.panics), (2, 1));
    assert_eq!(reactor.armed_timers(), 0, "both timers are done");
}

/// After a caught protocol panic `run_once` keeps returning Ok and serving: a second
/// client round-trips on another listener of the same reactor.
#[test]
fn run_once_stays_usable_after_a_caught_panic() {
    let probe = Probe::panicking("handle_input");
    let (mut reactor, bad) = reactor_with_probe(test_config(), &probe);
    let good = reactor.listen(localhost(), || Echo).unwrap();
    let mut c1 = connect_within(bad, WAIT);
    c1.write_all(b"hello").unwrap();
    pump_until(&mut reactor, WAIT, "the panic is caught", |r| {
        r.stats().panics == 1
    });
    let mut c2 = connect_within(good, WAIT);
    pump_round_trip(&mut reactor, &mut c2, b"after the panic");
    assert_eq!(reactor.stats().open, 1, "only the echo connection is open");
    assert_ended(&mut c1, "the panicking connection");
}

// ---------------------------------------------------------------------------------------
// 2. The close contract.

/// Dropping a reactor with open connections tells each opened one `Shutdown`, once, and
/// closes its socket.
#[test]
fn dropping_the_reactor_closes_each_connection_once_with_shutdown() {
    let probe = Probe::default();
    let (mut reactor, addr) = reactor_with_probe(test_config(), &probe);
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect_within(addr, WAIT)).collect();
    for c in &mut clients {
        pump_round_trip(&mut reactor, c, b"open");
    }
    assert_eq!(reactor.stats().open, 3);
    drop(reactor);
    assert_eq!(closes_of(&probe.closes), vec![CloseReason::Shutdown; 3]);
    for c in &mut clients {
        assert_ended(c, "a connection of a dropped reactor");
    }
}

/// `Mailbox::deliver` delivers (true) while its connection is open, and says false once
/// the connection is gone.
#[test]
fn mailbox_deliver_is_false_once_its_connection_is_gone() {
    let (tx, rx) = mpsc::channel();
    let probe = Probe {
        mailbox: Some(tx),
        ..Probe::default()
    };
    let (mut reactor, addr) = reactor_with_probe(test_config(), &probe);
    let mut c = connect_within(addr, WAIT);
    let mut mailbox = None;
    pump_until(&mut reactor, WAIT, "the mailbox", |_| {
        mailbox = rx.try_recv().ok();
        mailbox.is_some()
    });
    let mailbox = mailbox.unwrap();
    assert!(mailbox.deliver(b"x"), "delivered while open");
    assert_eq!(pump_read(&mut reactor, &mut c, Some(1)), b"x");
    drop(c);
    pump_until(&mut reactor, WAIT, "the connection closed", |r| {
        r.stats().closed == 1
    });
    assert!(!mailbox.deliver(b"x"), "refused once the conn is gone");
    drop(reactor);
    assert!(!mailbox.deliver(b"x"), "refused once the reactor is gone");
}

/// After the reactor stops (`stop_now`, the value still alive) and after it is dropped,
/// `Handle::call` returns `Stopped` at once and `post` returns `Closed`.
#[test]
fn handle_refuses_work_once_the_reactor_stopped() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let handle = reactor.handle();
    assert_eq!(reactor.state(), State::Running);
    reactor.stop_now();
    assert_eq!(reactor.state(), State::Stopped);
    let stopped = Err(CallError::Stopped);
    assert_eq!(call_within(&handle), stopped, "stopped, alive");
    assert_eq!(handle.post(|_| {}), Err(Closed));
    drop(reactor);
    assert_eq!(call_within(&handle), stopped, "dropped");
    assert_eq!(handle.post(|_| {}), Err(Closed));
    // Dropped without a stop first: the same.
    let handle = Reactor::with_config(test_config()).unwrap().handle();
    assert_eq!(call_within(&handle), stopped, "dropped unstopped");
    assert_eq!(handle.shutdown(), Err(Closed));
}

/// Work queued before a stop (a `call` and a `post` from other threads) is dropped unrun
/// at the stop, and the waiting `call` returns `Stopped` instead of hanging.
#[test]
fn work_queued_before_a_stop_is_dropped_and_a_waiting_call_returns() {
    struct Guard(mpsc::Sender<()>);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let (h, r, (tx, rx)) = (reactor.handle(), Arc::clone(&ran), mpsc::channel());
    std::thread::spawn(move || {
        let _ = tx.send(h.call(move |_| r.store(true, Ordering::SeqCst)));
    });
    // The call's post woke the poller: its task is queued.
    let fd = reactor.as_raw_fd();
    assert!(wait_readable(fd, WAIT), "the call was queued");
    let (h, r, (dropped_tx, dropped_rx)) = (reactor.handle(), Arc::clone(&ran), mpsc::channel());
    let guard = Guard(dropped_tx);
    let posted = std::thread::spawn(move || {
        h.post(move |_| {
            let _guard = guard;
            r.store(true, Ordering::SeqCst);
        })
    });
    assert_eq!(posted.join().unwrap(), Ok(()), "the post was queued");
    reactor.stop_now();
    assert_eq!(rx.recv_timeout(WAIT), Ok(Err(CallError::Stopped)));
    dropped_rx
        .recv_timeout(WAIT)
        .expect("the posted task was dropped");
    assert!(!ran.load(Ordering::SeqCst), "no queued task ran");
    assert_eq!(reactor.stats().tasks, 0);
}

/// `Handle::call` from the loop's own thread refuses with `OnLoopThread` rather than
/// deadlock: on the thread that runs `run_once`, and inside a posted task.
#[test]
fn call_on_the_loop_thread_is_refused() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    reactor.run_once(Some(Duration::ZERO)).unwrap();
    assert_eq!(reactor.handle().call(|_| ()), Err(CallError::OnLoopThread));
    let bg = BgReactor::start(test_config(), |r| r.listen(localhost(), || Echo));
    let (h, (tx, rx)) = (bg.handle().clone(), mpsc::channel());
    bg.handle()
        .post(move |_| {
            let _ = tx.send(h.call(|_| ()));
        })
        .unwrap();
    assert_eq!(rx.recv_timeout(WAIT), Ok(Err(CallError::OnLoopThread)));
    let mut c = connect_within(bg.addr(), WAIT);
    round_trip(&mut c, b"the loop goes on");
}

// ---------------------------------------------------------------------------------------
// 3. A reactor driven only by run_once.

/// `shutdown()` then turns of `run_once`: Running → Draining → Stopped with no `run()`;
/// new connects are refused, the idle connection gets our FIN and closes as `Closed`.
#[test]
fn shutdown_completes_under_run_once() {
    let probe = Probe::default();
    let (mut reactor, addr) = reactor_with_probe(test_config(), &probe);
    let mut c = connect_within(addr, WAIT);
    pump_round_trip(&mut reactor, &mut c, b"then idle");
    assert_eq!(reactor.state(), State::Running);
    reactor.shutdown();
    assert!(draining(&reactor), "{:?}", reactor.state());
    let refused = TcpStream::connect(addr).map(|_| ()).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    let rest = pump_read(&mut reactor, &mut c, None);
    assert!(rest.is_empty(), "our FIN, nothing else");
    drop(c);
    pump_until(&mut reactor, WAIT, "Stopped", |r| {
        r.state() == State::Stopped
    });
    assert_eq!(closes_of(&probe.closes), [CloseReason::Closed]);
    reactor.run().expect("run() returns at once when stopped");
}

/// The grace period holds under `run_once`, and `next_timeout()` says when it ends: with
/// a connection whose protocol ignores the shutdown and no timers, `next_timeout()` is
/// `None` before `shutdown()` and at most the grace right after; an outer loop that waits
/// on the reactor's fd that long, then turns (`run_once(Some(ZERO))`), sees the reactor
/// stop at the 300 ms deadline, the connection closed with `Shutdown`.
#[test]
fn shutdown_grace_is_enforced_under_run_once() {
    let grace = Duration::from_millis(300);
    let cfg = Config {
        shutdown_grace: grace,
        ..test_config()
    };
    let probe = Probe::stubborn();
    let (mut reactor, addr) = reactor_with_probe(cfg, &probe);
    let mut c = connect_within(addr, WAIT);
    pump_round_trip(&mut reactor, &mut c, b"stay");
    assert_eq!(reactor.next_timeout(), None, "no work but events");
    let t0 = Instant::now();
    reactor.shutdown();
    let d = reactor.next_timeout().expect("the grace deadline");
    assert!(d <= grace && d > grace / 2, "{d:?} for {grace:?}");
    while reactor.state() != State::Stopped {
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(2), "not stopped after {took:?}");
        wait_readable(reactor.as_raw_fd(), reactor.next_timeout().unwrap_or(WAIT));
        reactor.run_once(Some(Duration::ZERO)).expect("run_once");
    }
    let took = t0.elapsed();
    let early = Duration::from_millis(250);
    assert!(took >= early, "stopped before the grace: {took:?}");
    assert_eq!(closes_of(&probe.closes), [CloseReason::Shutdown]);
    assert_ended(&mut c, "the connection closed at the grace deadline");
}

/// Datagram sockets close at `shutdown()`, while a stream connection still drains: a UDP
/// datagram round-trips before, and one sent after gets no reply.
#[test]
fn datagram_sockets_stop_at_shutdown() {
    let probe = Probe::stubborn();
    let (mut reactor, addr) = reactor_with_probe(test_config(), &probe);
    let (_, bound) = reactor
        .bind_datagram(&Endpoint::Inet(localhost()), UdpEcho)
        .unwrap();
    let server = bound.inet().expect("a UDP address");
    let mut lingering = connect_within(addr, WAIT);
    pump_round_trip(&mut reactor, &mut lingering, b"keeps the reactor draining");
    let udp = UdpSocket::bind(localhost()).unwrap();
    udp.set_read_timeout(Some(WAIT)).unwrap();
    udp.send_to(b"before", server).unwrap();
    pump_until(&mut reactor, WAIT, "the reply is sent", |r| {
        r.stats().datagrams_out == 1
    });
    let mut buf = [0u8; 64];
    let (n, from) = udp.recv_from(&mut buf).expect("the echo");
    assert_eq!((&buf[..n], from), (&b"before"[..], server));
    reactor.shutdown();
    assert!(draining(&reactor), "{:?}", reactor.state());
    udp.send_to(b"after", server).unwrap();
    pump_for(&mut reactor, Duration::from_millis(200));
    assert_eq!(
        reactor.stats().datagrams_in,
        1,
        "nothing read after the shutdown"
    );
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    match udp.recv_from(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected no reply after the shutdown, got {other:?}"),
    }
}
