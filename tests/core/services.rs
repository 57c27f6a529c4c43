//! The reactor's services beyond serving a listener: user timers, the cross-thread
//! handle, graceful shutdown, outgoing connects, idle and write-stall timeouts, protocol
//! timers (under the reactor and the threaded blocking driver) and nesting the reactor
//! in another loop through its raw fd.
//!
//! Reactors run in-process, either on the test thread (driven turn by turn with
//! `run_once`) or on a thread of their own (looked into through a [`Handle`]). Clients
//! are blocking sockets on 127.0.0.1. Waits poll a condition against a deadline; the only
//! sleeps pace a client on purpose (a slow reader, a client that speaks every 100 ms),
//! and the only fixed windows assert that something does *not* happen.

use crate::support::Echo;
use crate::support::{
    connect_with_buffers, connect_within, localhost, pattern, pump_for, pump_until, test_config,
    wait_until, BgReactor, Driver, InProcServer, WAIT,
};
use socket2::{Domain, Socket, Type};
use sockloop::net::Endpoint;
use sockloop::proto::{CloseReason, Out, PeerError, Protocol};
use sockloop::reactor::{Config, Phase, Reactor, Timeouts};
use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A TCP listener on 127.0.0.1 whose `SO_SNDBUF` is fixed at `sndbuf` (accepted sockets
/// inherit it, and a set size turns off autotuning), for [`Reactor::listen_std`]: a peer
/// that reads slowly then backs output up in the reactor, not in megabytes of kernel
/// buffer.
fn listener_with_sndbuf(sndbuf: usize) -> TcpListener {
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.set_send_buffer_size(sndbuf).unwrap();
    l.bind(&localhost().into()).unwrap();
    l.listen(128).unwrap();
    l.into()
}

/// Asserts `got == want` without dumping megabytes: names the first differing offset.
fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: got {} bytes, expected {}; first difference at offset {at}",
            got.len(),
            want.len()
        );
    }
}

/// Reads until the peer ends the stream: `Ok(0)`, or an error such as a reset. Returns
/// the bytes read and the error, if it ended with one. Panics if it does not end within
/// the read timeout.
fn read_until_end(s: &mut TcpStream) -> (Vec<u8>, Option<io::Error>) {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (all, None),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "the stream did not end within the read timeout ({} bytes read)",
                    all.len()
                )
            }
            Err(e) => return (all, Some(e)),
        }
    }
}

/// A tiny deterministic PRNG (xorshift64*), so timer delays are "random" but repeatable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

// ---------------------------------------------------------------------------------------
// 1. Many timers, in deadline order.

#[test]
fn ten_thousand_timers_fire_in_deadline_order_and_never_early() {
    const N: usize = 10_000;
    const SPREAD_US: u64 = 300_000;
    let tolerance = Duration::from_millis(50);
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let fired: Rc<RefCell<Vec<(usize, Instant)>>> = Rc::new(RefCell::new(Vec::with_capacity(N)));
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    // The reactor reads the clock itself inside set_timer; its deadline for timer i lies
    // in window[i] = (clock before the call + delay, clock after the call + delay).
    let mut window = Vec::with_capacity(N);
    let arming = Instant::now();
    for i in 0..N {
        let delay = Duration::from_micros(rng.below(SPREAD_US));
        let fired = Rc::clone(&fired);
        let before = Instant::now();
        reactor.set_timer(delay, move |_| fired.borrow_mut().push((i, Instant::now())));
        window.push((before + delay, Instant::now() + delay));
    }
    let armed = Instant::now();
    let start = Instant::now();
    while fired.borrow().len() < N {
        assert!(
            start.elapsed() < WAIT,
            "only {} of {N} timers fired within {WAIT:?} (stats: {:?})",
            fired.borrow().len(),
            reactor.stats()
        );
        reactor
            .run_once(Some(Duration::from_millis(100)))
            .expect("run_once");
    }
    // Nothing more is due, so nothing more fires.
    pump_for(&mut reactor, Duration::from_millis(20));
    let fired = fired.borrow();
    assert_eq!(fired.len(), N, "each timer fires exactly once");
    let mut seen = vec![false; N];
    for &(i, _) in fired.iter() {
        assert!(!seen[i], "timer {i} fired twice");
        seen[i] = true;
    }
    assert_eq!(reactor.stats().timers_fired, N as u64);

    // Lateness is measured from the deadline, or from when the loop first ran if that
    // was later (timers with tiny delays are due before arming all 10,000 has finished).
    let mut max_late = Duration::ZERO;
    let mut max_raw_late = Duration::ZERO;
    let mut sum_late = Duration::ZERO;
    for (k, &(i, at)) in fired.iter().enumerate() {
        let (earliest, latest) = window[i];
        assert!(
            at >= earliest,
            "timer {i} fired {:?} before its deadline",
            earliest - at
        );
        max_raw_late = max_raw_late.max(at.saturating_duration_since(latest));
        let late = at.saturating_duration_since(latest.max(armed));
        max_late = max_late.max(late);
        sum_late += late;
        if k > 0 {
            // Deadline order: the timer fired next cannot be due earlier than this one.
            let (prev, _) = fired[k - 1];
            assert!(
                window[i].1 >= window[prev].0,
                "timer {i} (due {:?} after arming) fired after timer {prev} (due {:?} later)",
                window[i].0.saturating_duration_since(armed),
                window[prev].0.saturating_duration_since(window[i].1)
            );
        }
    }
    eprintln!(
        "timers: {N} armed in {:?}, fired in deadline order; lateness max {max_late:?}, \
         mean {:?} (max {max_raw_late:?} counting the arming time); {} polls",
        armed - arming,
        sum_late / N as u32,
        reactor.stats().polls
    );
    assert!(
        max_late <= tolerance,
        "the latest timer fired {max_late:?} after its deadline (tolerance {tolerance:?})"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Cancelling, intervals, timers that arm timers.

#[test]
fn cancelled_timers_never_fire() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let fired: Rc<RefCell<Vec<usize>>> = Rc::default();
    let ids: Vec<_> = (0..1000usize)
        .map(|i| {
            let fired = Rc::clone(&fired);
            let delay = Duration::from_millis(1 + (i % 50) as u64);
            reactor.set_timer(delay, move |_| fired.borrow_mut().push(i))
        })
        .collect();
    for id in ids.iter().step_by(2) {
        assert!(reactor.cancel_timer(*id), "an armed timer cancels");
        assert!(!reactor.cancel_timer(*id), "cancelling twice is a no-op");
    }
    pump_until(&mut reactor, WAIT, "the 500 live timers fire", |_| {
        fired.borrow().len() >= 500
    });
    // The last deadline was 50 ms after arming; give cancelled ones every chance.
    pump_for(&mut reactor, Duration::from_millis(100));
    let mut got = fired.borrow().clone();
    got.sort_unstable();
    let want: Vec<usize> = (1..1000).step_by(2).collect();
    assert_eq!(
        got, want,
        "exactly the uncancelled (odd) timers fire, once each"
    );
    assert_eq!(reactor.stats().timers_fired, 500);
    assert!(
        !reactor.cancel_timer(ids[1]),
        "cancelling a timer that already fired returns false"
    );
}

#[test]
fn interval_repeats_and_cancels_itself_from_its_callback() {
    let every = Duration::from_millis(20);
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let times: Rc<RefCell<Vec<Instant>>> = Rc::default();
    let armed = Instant::now();
    let log = Rc::clone(&times);
    let id = reactor.set_interval(every, move |r, me| {
        log.borrow_mut().push(Instant::now());
        if log.borrow().len() == 5 {
            assert!(
                r.cancel_timer(me),
                "an interval can cancel itself while firing"
            );
        }
    });
    pump_until(&mut reactor, WAIT, "the interval fires 5 times", |_| {
        times.borrow().len() >= 5
    });
    pump_for(&mut reactor, every * 6);
    let times = times.borrow();
    assert_eq!(times.len(), 5, "no firing after it cancelled itself");
    assert!(!reactor.cancel_timer(id), "already cancelled");
    assert!(
        times[0] - armed >= every,
        "first firing one period after arming"
    );
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= every,
            "firings at least one period apart, got {:?}",
            w[1] - w[0]
        );
    }
    assert_eq!(reactor.stats().timers_fired, 5);
}

#[test]
fn a_timer_callback_can_arm_another_timer() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let turn = Rc::new(Cell::new(0u32));
    // (which timer, the turn it fired in, when)
    type Log = Rc<RefCell<Vec<(&'static str, u32, Instant)>>>;
    let events: Log = Rc::default();
    let start = Instant::now();
    let (t, ev) = (Rc::clone(&turn), Rc::clone(&events));
    reactor.set_timer(Duration::from_millis(10), move |r| {
        ev.borrow_mut().push(("parent", t.get(), Instant::now()));
        let (t2, ev2) = (Rc::clone(&t), Rc::clone(&ev));
        r.set_timer(Duration::from_millis(10), move |r| {
            ev2.borrow_mut().push(("child", t2.get(), Instant::now()));
            // Due at once: it must still wait for a later turn, not run in this one.
            let (t3, ev3) = (Rc::clone(&t2), Rc::clone(&ev2));
            r.set_timer(Duration::ZERO, move |_| {
                ev3.borrow_mut()
                    .push(("grandchild", t3.get(), Instant::now()))
            });
        });
    });
    pump_until(&mut reactor, WAIT, "the chain of timers fires", |_| {
        turn.set(turn.get() + 1);
        events.borrow().len() >= 3
    });
    let ev = events.borrow();
    let names: Vec<&str> = ev.iter().map(|e| e.0).collect();
    assert_eq!(names, ["parent", "child", "grandchild"]);
    assert!(ev[1].2 - ev[0].2 >= Duration::from_millis(10));
    assert!(ev[1].2 - start >= Duration::from_millis(20));
    assert!(
        ev[2].1 > ev[1].1,
        "a zero-delay timer armed while firing runs on a later turn"
    );
}

// ---------------------------------------------------------------------------------------
// 3. The cross-thread handle; an idle turn.

#[test]
fn posts_from_several_threads_are_all_delivered_in_per_thread_order() {
    const THREADS: usize = 4;
    const EACH: usize = 250;
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let got: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let posters: Vec<_> = (0..THREADS)
        .map(|t| {
            let handle = reactor.handle();
            let got = Arc::clone(&got);
            std::thread::spawn(move || {
                for k in 0..EACH {
                    let got = Arc::clone(&got);
                    handle
                        .post(move |_| got.lock().unwrap().push((t, k)))
                        .expect("the reactor is alive");
                }
            })
        })
        .collect();
    // A task has the reactor in hand: it can arm a timer on the loop's thread.
    let fired = Arc::new(Mutex::new(false));
    let flag = Arc::clone(&fired);
    reactor
        .handle()
        .post(move |r| {
            r.set_timer(Duration::from_millis(1), move |_| {
                *flag.lock().unwrap() = true
            });
        })
        .unwrap();
    pump_until(&mut reactor, WAIT, "every posted task runs", |_| {
        got.lock().unwrap().len() == THREADS * EACH && *fired.lock().unwrap()
    });
    for p in posters {
        p.join().expect("poster thread");
    }
    let got = got.lock().unwrap();
    for t in 0..THREADS {
        let seq: Vec<usize> = got.iter().filter(|e| e.0 == t).map(|e| e.1).collect();
        assert_eq!(
            seq,
            (0..EACH).collect::<Vec<_>>(),
            "thread {t}'s tasks all ran, in the order posted"
        );
    }
    let stats = reactor.stats();
    assert_eq!(stats.tasks, (THREADS * EACH + 1) as u64);
    assert!(stats.wakeups >= 1 && stats.wakeups <= stats.tasks);
    // Once the reactor is gone, posting fails instead of queueing forever.
    let handle = reactor.handle();
    drop(reactor);
    assert!(handle.post(|_| {}).is_err(), "post after drop is refused");
}

#[test]
fn a_post_from_the_loop_thread_between_turns_runs_promptly() {
    // An embedder driving the loop with run_once may post from that same thread between
    // turns (a Handle is used from anywhere). The next turn must run the task, not sleep
    // through its whole timeout first.
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let handle = reactor.handle();
    reactor
        .run_once(Some(Duration::ZERO))
        .expect("a first turn");
    let ran = Arc::new(Mutex::new(None));
    let flag = Arc::clone(&ran);
    handle
        .post(move |_| *flag.lock().unwrap() = Some(Instant::now()))
        .unwrap();
    let start = Instant::now();
    reactor
        .run_once(Some(Duration::from_secs(2)))
        .expect("run_once");
    let took = start.elapsed();
    assert!(
        ran.lock().unwrap().is_some(),
        "the posted task ran during the next turn"
    );
    assert!(
        took < Duration::from_millis(500),
        "the turn ran the task at once instead of sleeping first (run_once took {took:?})"
    );
}

#[test]
fn an_idle_turn_waits_for_its_timeout() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let want = Duration::from_millis(50);
    for round in 0..3 {
        let start = Instant::now();
        let n = reactor.run_once(Some(want)).expect("run_once");
        let took = start.elapsed();
        eprintln!("idle run_once(Some(50ms)) round {round}: {took:?}");
        assert_eq!(n, 0, "nothing to handle");
        assert!(
            took >= want - Duration::from_millis(2),
            "returned early: after {took:?}"
        );
        assert!(
            took < want + Duration::from_millis(150),
            "returned far too late: after {took:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Graceful shutdown.

#[test]
fn graceful_shutdown_drains_a_slow_reader_and_refuses_new_connects() {
    const TOTAL: usize = 4 << 20;
    let grace = Duration::from_secs(3);
    let bg = BgReactor::start(
        Config {
            shutdown_grace: grace,
            ..test_config()
        },
        |r| r.listen_std(listener_with_sndbuf(64 * 1024), || Echo),
    );
    let addr = bg.addr();
    let mut client = connect_with_buffers(addr, Some(4096), None, WAIT);
    let data = Arc::new(pattern(4, TOTAL));
    let writer = {
        let mut w = client.try_clone().unwrap();
        let data = Arc::clone(&data);
        std::thread::spawn(move || -> (usize, Option<io::Error>) {
            let mut sent = 0;
            for chunk in data.chunks(64 * 1024) {
                if let Err(e) = w.write_all(chunk) {
                    return (sent, Some(e));
                }
                sent += chunk.len();
            }
            (sent, w.shutdown(Shutdown::Write).err())
        })
    };

    let mut got = Vec::with_capacity(TOTAL);
    let mut buf = [0u8; 4096];
    let mut shutdown: Option<(Instant, u64)> = None;
    loop {
        if shutdown.is_none() && got.len() >= 256 * 1024 {
            // Mid-stream: note how much the server has read (and so owes back), and start
            // the shutdown in the same task, so no read slips in between.
            let (tx, rx) = mpsc::channel();
            let t0 = Instant::now();
            bg.handle()
                .post(move |r| {
                    let owed = r.stats().bytes_in;
                    r.shutdown();
                    let _ = tx.send(owed);
                })
                .unwrap();
            let owed = rx.recv_timeout(WAIT).expect("the shutdown task runs");
            shutdown = Some((t0, owed));
            // The listener is closed: new connects are refused from now on.
            wait_until(
                WAIT,
                "new connects are refused",
                || match TcpStream::connect_timeout(&addr, WAIT) {
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Some(()),
                    Err(e) => panic!("expected ConnectionRefused after shutdown, got {e}"),
                    Ok(_) => None,
                },
            );
        }
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read failed after {} bytes: {e}", got.len()),
        }
        // A slow reader: the server's output backs up behind it.
        std::thread::sleep(Duration::from_millis(1));
    }
    let (t0, owed) = shutdown.expect("the shutdown happened mid-stream");
    assert!(
        (owed as usize) < TOTAL,
        "shutdown came mid-stream ({owed} of {TOTAL} bytes read by the server)"
    );
    assert_same_bytes(
        &got,
        &data[..owed as usize],
        "the client receives every byte the server read before the shutdown, in order, then EOF",
    );
    let (sent, werr) = writer.join().expect("writer thread");
    assert!(
        werr.is_none(),
        "the server let the client finish sending (no reset); after {sent} bytes: {werr:?}"
    );
    let (stats, ended) = bg.join(grace + Duration::from_secs(2));
    let took = ended - t0;
    eprintln!("graceful shutdown: {owed} bytes owed were drained; run() returned after {took:?}");
    assert!(
        took < grace,
        "run() returned once the connection finished, before the grace period ({took:?})"
    );
    assert_eq!(stats.open, 0);
    assert_eq!(stats.closed, stats.accepted);
}

#[test]
fn graceful_shutdown_closes_a_client_that_never_reads_at_the_grace_deadline() {
    let grace = Duration::from_millis(500);
    let bg = BgReactor::start(
        Config {
            shutdown_grace: grace,
            ..test_config()
        },
        |r| r.listen_std(listener_with_sndbuf(64 * 1024), || Echo),
    );
    let mut client = connect_with_buffers(bg.addr(), Some(4096), None, WAIT);
    let writer = {
        let mut w = client.try_clone().unwrap();
        // Writes until the connection fails (the kernel buffers on both sides can absorb
        // megabytes first), for at most twice the wait.
        std::thread::spawn(move || -> (usize, io::Result<()>) {
            let chunk = pattern(5, 64 * 1024);
            let start = Instant::now();
            let mut sent = 0;
            while start.elapsed() < 2 * WAIT {
                if let Err(e) = w.write_all(&chunk) {
                    return (sent, Err(e));
                }
                sent += chunk.len();
            }
            (sent, Ok(()))
        })
    };
    // The server has echoed so much that it stopped reading: output is stuck behind us.
    wait_until(WAIT, "the server pauses reading (backpressure)", || {
        (bg.stats().read_pauses >= 1).then_some(())
    });
    let t0 = Instant::now();
    bg.handle().shutdown().unwrap();
    let (stats, ended) = bg.join(grace + Duration::from_secs(3));
    let took = ended - t0;
    eprintln!("shutdown with a non-reading client: run() returned after {took:?}");
    assert!(
        took >= grace,
        "run() waited for the grace period ({took:?})"
    );
    assert!(
        took <= grace + Duration::from_secs(1),
        "run() returned soon after the grace period ({took:?})"
    );
    assert_eq!(stats.open, 0);
    assert_eq!(stats.closed, 1);
    // The client sees its connection gone: the blocked writer fails, reads end.
    wait_until(WAIT, "the client's blocked write fails", || {
        writer.is_finished().then_some(())
    });
    let (sent, result) = writer.join().unwrap();
    assert!(
        result.is_err(),
        "the client's writes fail once the server has closed (sent {sent} bytes)"
    );
    let (_, err) = read_until_end(&mut client);
    if let Some(e) = err {
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "the stream ends with EOF or a reset, not {e}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 5. Outgoing connects.

#[derive(Default)]
struct DialLog {
    opened: bool,
    input: Vec<u8>,
    closed: Option<CloseReason>,
}

/// Sends `greeting` once open, closes when it has come back; records what happened.
struct Dialer {
    log: Rc<RefCell<DialLog>>,
    greeting: &'static [u8],
}

impl Protocol for Dialer {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        self.log.borrow_mut().opened = true;
        out.push(self.greeting);
    }

    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        let mut log = self.log.borrow_mut();
        log.input.extend_from_slice(input);
        if log.input.len() >= self.greeting.len() {
            out.close();
        }
        Ok(input.len())
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        let mut log = self.log.borrow_mut();
        assert!(log.closed.is_none(), "handle_close is called once");
        log.closed = Some(reason.clone());
    }
}

fn dialer(greeting: &'static [u8]) -> (Dialer, Rc<RefCell<DialLog>>) {
    let log = Rc::new(RefCell::new(DialLog::default()));
    (
        Dialer {
            log: Rc::clone(&log),
            greeting,
        },
        log,
    )
}

#[test]
fn connect_to_a_closed_port_fails_with_connection_refused() {
    let addr = TcpListener::bind(localhost())
        .and_then(|l| l.local_addr())
        .expect("find a free port"); // the listener is dropped: nothing listens there now
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let (proto, log) = dialer(b"ping");
    let token = reactor
        .connect(&Endpoint::Inet(addr), Some(WAIT), proto)
        .expect("a non-blocking connect starts (the refusal comes later)");
    let phase = reactor
        .connections()
        .into_iter()
        .find(|c| c.0 == token)
        .map(|c| c.2);
    assert_eq!(phase, Some(Phase::Connecting), "SYN sent, not yet decided");
    pump_until(&mut reactor, WAIT, "the connect is decided", |_| {
        log.borrow().closed.is_some()
    });
    let log = log.borrow();
    assert_eq!(
        log.closed,
        Some(CloseReason::ConnectFailed(io::ErrorKind::ConnectionRefused))
    );
    assert!(!log.opened, "handle_open never ran");
    let stats = reactor.stats();
    assert_eq!(stats.connect_failures, 1);
    assert_eq!(stats.connected, 0);
    pump_until(&mut reactor, WAIT, "the failed connection is reaped", |r| {
        r.connections().is_empty()
    });
}

#[test]
fn connect_to_an_echo_listener_opens_and_round_trips() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let addr = reactor.listen(localhost(), || Echo).expect("listen");
    let (proto, log) = dialer(b"ping");
    let token = reactor
        .connect(&Endpoint::Inet(addr), Some(WAIT), proto)
        .expect("connect");
    pump_until(&mut reactor, WAIT, "the connect completes", |_| {
        log.borrow().opened
    });
    if log.borrow().input.is_empty() {
        let phase = reactor
            .connections()
            .into_iter()
            .find(|c| c.0 == token)
            .map(|c| c.2);
        assert_eq!(phase, Some(Phase::Open), "connected, waiting for the echo");
    }
    pump_until(
        &mut reactor,
        WAIT,
        "the echo comes back and both sides close",
        |r| log.borrow().closed.is_some() && r.connections().is_empty(),
    );
    let log = log.borrow();
    assert_eq!(
        log.input, b"ping",
        "the echo comes back through handle_input"
    );
    assert_eq!(
        log.closed,
        Some(CloseReason::Closed),
        "we closed, the peer followed"
    );
    let stats = reactor.stats();
    assert_eq!((stats.connected, stats.accepted), (1, 1));
    assert_eq!(stats.connect_failures, 0);
}

#[test]
fn connect_that_gets_no_answer_times_out() {
    // A listener that never accepts, with backlog 0: once its accept queue holds one
    // connection the kernel drops further SYNs, so a connect hangs in SYN_SENT.
    let hang = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    hang.bind(&localhost().into()).unwrap();
    hang.listen(0).unwrap();
    let addr = hang.local_addr().unwrap().as_socket().unwrap();
    let fillers: Vec<TcpStream> = (0..3)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
        other => {
            eprintln!(
                "SKIPPED: cannot make a loopback connect hang on this kernel \
                 ({} fillers connected; a probe connect gave {other:?})",
                fillers.len()
            );
            return;
        }
    }
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let (proto, log) = dialer(b"ping");
    let timeout = Duration::from_millis(200);
    let start = Instant::now();
    reactor
        .connect(&Endpoint::Inet(addr), Some(timeout), proto)
        .expect("connect starts");
    pump_until(&mut reactor, WAIT, "the connect times out", |_| {
        log.borrow().closed.is_some()
    });
    let took = start.elapsed();
    assert_eq!(log.borrow().closed, Some(CloseReason::ConnectTimeout));
    assert!(!log.borrow().opened);
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "timed out at its deadline ({took:?})"
    );
    assert_eq!(reactor.stats().connect_failures, 1);
    drop(fillers);
}

// ---------------------------------------------------------------------------------------
// 6. Idle and write-stall timeouts.

type CloseLog = Arc<Mutex<Vec<(Option<u8>, CloseReason)>>>;

/// Echo that records how its connection ended, keyed by the first byte it received (so
/// the test can tell its clients apart; `None` for one that never spoke).
struct RecordingEcho {
    first: Option<u8>,
    log: CloseLog,
}

impl Protocol for RecordingEcho {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        if self.first.is_none() {
            self.first = input.first().copied();
        }
        out.push(input);
        Ok(input.len())
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        self.log.lock().unwrap().push((self.first, reason.clone()));
    }
}

fn reason_of(log: &CloseLog, first: Option<u8>) -> Option<CloseReason> {
    log.lock()
        .unwrap()
        .iter()
        .find(|e| e.0 == first)
        .map(|e| e.1.clone())
}

#[test]
fn idle_and_write_stall_timeouts_close_only_the_guilty() {
    let limit = Duration::from_millis(300);
    let log: CloseLog = Arc::default();
    let factory_log = Arc::clone(&log);
    let bg = BgReactor::start(
        Config {
            timeouts: Timeouts {
                idle: Some(limit),
                write_stall: Some(limit),
            },
            // Room for the staller's whole backlog: its connection must stay readable (and
            // so not idle) while its output sits unread.
            high_water: 8 << 20,
            low_water: 1 << 20,
            output_limit: 16 << 20,
            ..test_config()
        },
        move |r| {
            // The staller's backlog must pile up in the reactor, where the stall is seen.
            r.listen_std(listener_with_sndbuf(64 * 1024), move || RecordingEcho {
                first: None,
                log: Arc::clone(&factory_log),
            })
        },
    );
    let addr = bg.addr();

    // A chatty client: a message every 100 ms for a second, never idle for 300 ms.
    let chatty = std::thread::spawn(move || {
        let mut s = connect_within(addr, WAIT);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            s.write_all(b"chatty\n").unwrap();
            let mut back = [0u8; 7];
            s.read_exact(&mut back)
                .expect("the chatty client's echo comes back: not closed");
            assert_eq!(&back, b"chatty\n");
            std::thread::sleep(Duration::from_millis(100));
        }
        s.shutdown(Shutdown::Write).unwrap();
        let (rest, err) = read_until_end(&mut s);
        assert!(rest.is_empty() && err.is_none(), "a clean end: {err:?}");
        start.elapsed()
    });

    // A staller: sends 1 MiB (echoed into a 4 KiB receive buffer it never reads), then a
    // byte every 50 ms so the connection is never idle; only its output is stuck.
    let staller = std::thread::spawn(move || {
        let mut s = connect_with_buffers(addr, Some(4096), None, WAIT);
        s.write_all(b"S").unwrap();
        s.write_all(&pattern(0x73, 1 << 20)).unwrap();
        let start = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            if s.write_all(b"s").is_err() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < WAIT,
                "the staller's connection was never closed"
            );
        }
    });

    // A silent client: connected, says nothing.
    let start = Instant::now();
    let mut silent = connect_within(addr, WAIT);
    let (rest, err) = read_until_end(&mut silent);
    let silent_took = start.elapsed();
    assert!(rest.is_empty());
    assert!(
        err.as_ref()
            .map_or(true, |e| e.kind() == io::ErrorKind::ConnectionReset),
        "the silent client sees EOF or a reset, not {err:?}"
    );
    eprintln!("idle timeout: silent client closed after {silent_took:?}");
    assert!(
        silent_took >= limit - Duration::from_millis(10) && silent_took <= Duration::from_secs(1),
        "the silent client is closed roughly at the idle timeout (after {silent_took:?})"
    );

    let chatty_took = chatty.join().expect("the chatty client was never cut off");
    assert!(chatty_took >= Duration::from_secs(1));
    let stall_seen = staller.join().expect("staller thread");
    eprintln!("write stall: the staller's writes failed {stall_seen:?} after it began dribbling");

    wait_until(WAIT, "all three connections have closed", || {
        (log.lock().unwrap().len() == 3).then_some(())
    });
    assert_eq!(reason_of(&log, None), Some(CloseReason::IdleTimeout));
    assert_eq!(reason_of(&log, Some(b'c')), Some(CloseReason::PeerClosed));
    assert_eq!(
        reason_of(&log, Some(b'S')),
        Some(CloseReason::WriteStall),
        "the staller kept sending (never idle) but read nothing: a write stall"
    );
    let stats = bg.stats();
    assert_eq!(stats.timeouts, 2, "one idle timeout and one write stall");
}

// ---------------------------------------------------------------------------------------
// 7. Protocol timers.

/// Says nothing until 100 ms after the connection opened, then "tick\n" and closes.
#[derive(Default)]
struct Ticker {
    due: Option<Instant>,
    ticked: bool,
}

const TICK_AFTER: Duration = Duration::from_millis(100);

impl Protocol for Ticker {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        self.due = Some(out.now() + TICK_AFTER);
    }

    fn handle_input(&mut self, input: &[u8], _: &mut Out<'_>) -> Result<usize, PeerError> {
        Ok(input.len())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.ticked {
            None
        } else {
            self.due
        }
    }

    fn handle_timeout(&mut self, out: &mut Out<'_>) {
        assert!(
            self.due.is_some_and(|d| out.now() >= d),
            "handle_timeout is never called early"
        );
        self.ticked = true;
        out.push(b"tick\n");
        out.close();
    }
}

fn expect_tick(addr: SocketAddr, driver: &str) {
    let start = Instant::now();
    let mut s = connect_within(addr, WAIT);
    let (got, err) = read_until_end(&mut s);
    let took = start.elapsed();
    assert!(
        err.is_none(),
        "{driver}: a clean end after the tick, not {err:?}"
    );
    assert_eq!(got, b"tick\n", "{driver}: the timer's output, then EOF");
    assert!(
        took >= TICK_AFTER && took < TICK_AFTER + Duration::from_secs(1),
        "{driver}: ticked at its deadline ({took:?})"
    );
}

#[test]
fn protocol_timer_writes_and_closes_under_the_reactor() {
    let bg = BgReactor::start(test_config(), |r| r.listen(localhost(), Ticker::default));
    expect_tick(bg.addr(), "reactor");
    let stats = bg.stats();
    assert_eq!(
        stats.timeouts, 0,
        "a protocol timer is not a connection timeout"
    );
}

#[test]
fn protocol_timer_writes_and_closes_under_the_threaded_driver() {
    let server = InProcServer::start(Driver::Threaded, test_config(), Ticker::default);
    expect_tick(server.addr(), "threaded");
    server.stop();
}

// ---------------------------------------------------------------------------------------
// 8. The reactor's fd, for nesting in another loop.

/// `poll(2)` on one fd for readability; returns the revents (0 on timeout).
fn poll_readable(fd: i32, timeout: Duration) -> i16 {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + timeout;
    loop {
        let ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd that lives across the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc >= 0 {
            return if rc == 0 { 0 } else { pfd.revents };
        }
        let e = io::Error::last_os_error();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll failed: {e}");
    }
}

#[test]
fn reactor_fd_becomes_readable_when_a_client_connects() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let addr = reactor.listen(localhost(), || Echo).expect("listen");
    let fd = reactor.as_raw_fd();
    assert_eq!(
        poll_readable(fd, Duration::ZERO),
        0,
        "nothing pending yet: the fd is not readable"
    );
    let mut client = connect_within(addr, WAIT);
    let revents = poll_readable(fd, WAIT);
    assert!(
        revents & libc::POLLIN != 0,
        "the poller fd is readable once a client connects (revents {revents:#x})"
    );
    // And the loop then has work to do.
    pump_until(&mut reactor, WAIT, "the client is accepted", |r| {
        r.stats().accepted == 1
    });
    client.write_all(b"hi").unwrap();
    let revents = poll_readable(fd, WAIT);
    assert!(
        revents & libc::POLLIN != 0,
        "readable again when bytes arrive"
    );
    let mut got = Vec::new();
    client
        .set_nonblocking(true)
        .expect("a non-blocking client for the pump");
    pump_until(&mut reactor, WAIT, "the echo comes back", |_| {
        let mut b = [0u8; 8];
        if let Ok(n) = client.read(&mut b) {
            got.extend_from_slice(&b[..n]);
        }
        got.len() >= 2
    });
    assert_eq!(got, b"hi");
}

/// An embedder's loop around a nested reactor: wait until the reactor's fd is readable
/// or its `next_timeout` passes (at most `quiet`), then run one non-blocking turn.
/// Returns false if nothing happened for `quiet` before `done` held.
fn nested_loop(reactor: &mut Reactor, quiet: Duration, mut done: impl FnMut() -> bool) -> bool {
    let fd = reactor.as_raw_fd();
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < WAIT,
            "the nested loop did not finish in {WAIT:?}"
        );
        // The nesting contract: wait on the fd for at most `next_timeout` (pending
        // revisits and timers are work that no event announces).
        let due = reactor.next_timeout();
        let wait = due.map_or(quiet, |t| t.min(quiet));
        let readable = poll_readable(fd, wait) & libc::POLLIN != 0;
        if !readable && due.map_or(true, |t| t >= quiet) {
            return false;
        }
        reactor.run_once(Some(Duration::ZERO)).expect("run_once");
    }
    true
}

#[test]
fn nested_reactor_finishes_a_read_that_spent_its_budget() {
    // The reactor reads at most 4 KiB per connection per turn and leaves the rest for the
    // next turn (it yields). An embedder that nests it waits on its fd: that fd must
    // become readable while such work is pending, or the rest is never read.
    let mut reactor = Reactor::with_config(Config {
        read_budget: 4096,
        read_buffer: 4096,
        ..test_config()
    })
    .unwrap();
    let addr = reactor.listen(localhost(), || Echo).expect("listen");
    let mut client = connect_within(addr, WAIT);
    let msg = pattern(8, 64 * 1024);
    client.write_all(&msg).unwrap();
    client.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let finished = nested_loop(&mut reactor, Duration::from_millis(500), || {
        let mut b = [0u8; 16 * 1024];
        while let Ok(n) = client.read(&mut b) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&b[..n]);
        }
        got.len() >= msg.len()
    });
    assert!(
        finished,
        "the reactor's fd stayed unreadable for 500 ms with {} of {} bytes echoed: work it \
         deferred to the next turn (budget_yields = {}) is invisible to an embedder polling \
         as_raw_fd()",
        got.len(),
        msg.len(),
        reactor.stats().budget_yields
    );
    assert_same_bytes(
        &got,
        &msg,
        "the whole message is echoed through the nested loop",
    );
}
