//! In-process reactor tests: a [`Reactor`] on the test thread (driven turn by turn with
//! `run_once`) or on a thread of its own (looked into through its [`Handle`]), with
//! blocking clients on real 127.0.0.1 sockets.
//!
//! Every wait here polls a condition against a deadline; the only fixed-length waits are
//! read timeouts that *assert silence* (a client that must not be answered yet).

use crate::support::Echo;
use crate::support::{
    assert_silent, connect_within, localhost, pattern, pump_until, read_exact_n, round_trip,
    test_config, wait_until, BgReactor, WAIT,
};
use sockloop::proto::{Out, PeerError, Protocol};
use sockloop::reactor::{Config, Handle, Phase, Reactor};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The slab slot a token names (its `Display` is `slot#generation`).
fn key_of(token: sockloop::reactor::Token) -> String {
    let shown = token.to_string();
    shown.split('#').next().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------
// Driving a reactor on the test thread.

/// Reads without blocking into `got`; returns true once `got` holds `want` bytes.
fn try_read_into(s: &mut TcpStream, got: &mut Vec<u8>, want: usize) -> bool {
    let mut buf = [0u8; 4096];
    while got.len() < want {
        match s.read(&mut buf) {
            Ok(0) => panic!("peer closed after {} of {want} bytes", got.len()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => panic!("read failed after {} of {want} bytes: {e}", got.len()),
        }
    }
    true
}

/// Sends `msg` on a non-blocking client and runs the loop until the echo is back.
fn echo_via_pump(reactor: &mut Reactor, s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("small write to a fresh socket");
    let mut got = Vec::new();
    pump_until(reactor, WAIT, "the echo comes back", |_| {
        try_read_into(s, &mut got, msg.len())
    });
    assert_eq!(got, msg, "the echo is the message, byte for byte");
}

// ---------------------------------------------------------------------------------------
// 1. Stale tokens.

#[test]
fn stale_token_is_dropped_and_the_reused_slot_is_untouched() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let addr = reactor.listen(localhost(), || Echo).unwrap();

    // A arrives, is served, and leaves.
    let mut a = TcpStream::connect(addr).unwrap();
    a.set_nonblocking(true).unwrap();
    pump_until(&mut reactor, WAIT, "A is accepted", |r| {
        r.connections().len() == 1
    });
    let old_token = reactor.connections()[0].0;
    echo_via_pump(&mut reactor, &mut a, b"from A");
    drop(a);
    pump_until(&mut reactor, WAIT, "A is reaped", |r| r.stats().closed == 1);
    assert!(
        reactor.connections().is_empty(),
        "no connection is left once A is reaped"
    );

    // B takes A's slot, under a new generation.
    let mut b = TcpStream::connect(addr).unwrap();
    b.set_nonblocking(true).unwrap();
    pump_until(&mut reactor, WAIT, "B is accepted", |r| {
        r.connections().len() == 1
    });
    let only_b = reactor.connections();
    let (new_token, b_peer, phase) = &only_b[0];
    let new_token = *new_token;
    assert_eq!(
        b_peer.to_string(),
        b.local_addr().unwrap().to_string(),
        "the one connection is B"
    );
    assert_eq!(*phase, Phase::Open, "B is open");
    assert_eq!(
        key_of(new_token),
        key_of(old_token),
        "the slab reuses A's freed key for B"
    );
    assert_ne!(
        new_token, old_token,
        "B's token differs from A's in its generation"
    );

    // Whatever names A's old token must not reach B. (A late poller event for it is
    // dropped the same way: the reactor's unit tests inject one.)
    let before = reactor.stats().clone();
    assert!(
        reactor.send(old_token, b"for A").is_err(),
        "A's token sends nothing"
    );
    assert!(!reactor.close(old_token), "A's token closes nothing");
    assert!(
        !reactor.pause_reading(old_token),
        "A's token pauses nothing"
    );
    assert_eq!(
        reactor.phase(old_token),
        None,
        "A's token names no connection"
    );
    let after = reactor.stats().clone();
    assert_eq!(
        (after.closed, after.open, after.bytes_in, after.io_errors),
        (
            before.closed,
            before.open,
            before.bytes_in,
            before.io_errors
        ),
        "the stale event touched no connection"
    );
    assert_eq!(
        reactor.connections(),
        only_b,
        "B is still open under its own token"
    );

    // And B is served as if nothing happened.
    echo_via_pump(&mut reactor, &mut b, b"from B, after the stale event");
    echo_via_pump(&mut reactor, &mut b, &pattern(2, 4000));
    assert_eq!(reactor.stats().closed, 1, "only A has closed");
}

// ---------------------------------------------------------------------------------------
// 2. Fairness: a flooding connection does not starve a chatty one.

#[test]
fn flood_does_not_starve_ping_pong() {
    // The flood stops when the ping-pong is done, or at these caps (which fail the test).
    const FLOOD_CAP: u64 = 1 << 30;
    const FLOOD_TIME_CAP: Duration = Duration::from_secs(6);
    const ROUNDS: usize = 200;
    const PING_DEADLINE: Duration = Duration::from_secs(5);

    let cfg = Config {
        read_buffer: 16 * 1024,
        read_budget: 32 * 1024,
        ..test_config()
    };
    let server = BgReactor::start(cfg, |r| r.listen(localhost(), || Echo));
    let addr = server.addr();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let echoed = Arc::new(AtomicU64::new(0));
    let flood = connect_within(addr, WAIT);
    let mut flood_rd = flood.try_clone().unwrap();
    let writer = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        let mut flood = flood;
        std::thread::spawn(move || {
            let chunk = pattern(1, 256 * 1024);
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed)
                && sent.load(Ordering::Relaxed) < FLOOD_CAP
                && start.elapsed() < FLOOD_TIME_CAP
            {
                flood.write_all(&chunk).expect("flood write");
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            flood.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let reader = {
        let echoed = Arc::clone(&echoed);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match flood_rd.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => echoed.fetch_add(n as u64, Ordering::Relaxed),
                    Err(e) => panic!("flood read: {e}"),
                };
            }
        })
    };

    // Start the chatty client once the flood is well under way.
    wait_until(WAIT, "the flood is flowing (1 MiB echoed)", || {
        (echoed.load(Ordering::Relaxed) > 1 << 20).then_some(())
    });
    let mut chatty = connect_within(addr, WAIT);
    let echoed_before = echoed.load(Ordering::Relaxed);
    let start = Instant::now();
    for i in 0..ROUNDS {
        round_trip(&mut chatty, format!("ping {i:03}").as_bytes());
        assert!(
            start.elapsed() < PING_DEADLINE,
            "the chatty client should finish {ROUNDS} round trips within {PING_DEADLINE:?} \
             despite the flood; only {i} done"
        );
    }
    let ping_time = start.elapsed();
    let flood_during = echoed.load(Ordering::Relaxed) - echoed_before;
    let flood_still_on = !writer.is_finished();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("flood writer");
    reader.join().expect("flood reader");
    assert!(
        flood_still_on,
        "the flood should still be running when the ping-pong ends (it hit its cap first: \
         {} bytes sent)",
        sent.load(Ordering::Relaxed)
    );
    assert!(
        flood_during > 0,
        "the flood should have made progress during the ping-pong"
    );
    assert_eq!(
        echoed.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        "every flooded byte came back"
    );
    let stats = server.stats();
    assert!(
        stats.budget_yields > 0,
        "the flooding connection should have spent its read budget and yielded: {stats:?}"
    );
    eprintln!(
        "fairness: {ROUNDS} round trips in {ping_time:?} while {flood_during} flood bytes \
         were echoed; budget_yields={}",
        stats.budget_yields
    );
}

/// The read budget bounds what one connection gets per turn: driving the loop by hand,
/// no turn reads much more than one budget from the single flooding connection.
#[test]
fn read_budget_bounds_bytes_per_turn() {
    const TOTAL: usize = 64 << 20;
    let cfg = Config {
        read_buffer: 16 * 1024,
        read_budget: 32 * 1024,
        ..test_config()
    };
    let (budget, buf) = (cfg.read_budget as u64, cfg.read_buffer as u64);
    let mut reactor = Reactor::with_config(cfg).unwrap();
    let addr = reactor.listen(localhost(), || Echo).unwrap();

    let flood = connect_within(addr, WAIT);
    let mut flood_rd = flood.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut flood = flood;
        let chunk = pattern(3, 256 * 1024);
        let mut sent = 0;
        while sent < TOTAL {
            flood.write_all(&chunk).expect("flood write");
            sent += chunk.len();
        }
    });
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        while got < TOTAL {
            match flood_rd.read(&mut buf) {
                Ok(0) => panic!("server closed after {got} of {TOTAL} bytes"),
                Ok(n) => got += n,
                Err(e) => panic!("flood read after {got} of {TOTAL} bytes: {e}"),
            }
        }
    });

    // The most one visit can read: the budget, overshot by less than one buffer.
    let cap = budget + buf - 1;
    let mut worst = (0u64, 0u64); // (bytes in one turn, at turn)
    let mut turns = 0u64;
    let start = Instant::now();
    while (reactor.stats().bytes_in as usize) < TOTAL {
        assert!(
            start.elapsed() < WAIT,
            "the flood should be echoed within {WAIT:?}"
        );
        let before = reactor.stats().bytes_in;
        reactor
            .run_once(Some(Duration::from_millis(10)))
            .expect("run_once");
        turns += 1;
        let got = reactor.stats().bytes_in - before;
        if got > worst.0 {
            worst = (got, turns);
        }
    }
    writer.join().expect("flood writer");
    while !reader.is_finished() {
        assert!(start.elapsed() < WAIT, "the echo should drain");
        reactor
            .run_once(Some(Duration::from_millis(10)))
            .expect("run_once");
    }
    reader.join().expect("flood reader");
    let stats = reactor.stats();
    assert!(stats.budget_yields > 0, "the budget was spent: {stats:?}");
    assert!(
        worst.0 <= cap,
        "one connection should get at most one read budget per turn ({budget} bytes, \
         + < one {buf}-byte buffer of overshoot = {cap}), but turn {} read {} bytes from it \
         ({turns} turns, {stats:?})",
        worst.1,
        worst.0
    );
}

/// Closes on its first input: the connection goes Closing, sends its FIN and starts
/// Draining in the middle of a read.
struct CloseAtOnce;

impl Protocol for CloseAtOnce {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        out.close();
        Ok(input.len())
    }
}

/// Entering Draining from inside a read (the FIN goes out, and the peer's FIN may be
/// waiting) must not start a second read with a budget of its own: one turn reads at most
/// one budget, and the connection is put on the revisit list once.
#[test]
fn closing_mid_read_reads_one_budget_per_turn() {
    let budget = 16 * 1024;
    let cfg = Config {
        read_buffer: 4096,
        read_budget: budget,
        ..test_config()
    };
    let mut reactor = Reactor::with_config(cfg).unwrap();
    let addr = reactor.listen(localhost(), || CloseAtOnce).unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_nonblocking(true).unwrap();
    let data = pattern(3, 256 * 1024);
    let mut sent = 0;
    while sent < data.len() {
        match client.write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(sent >= 4 * budget, "the kernel took only {sent} bytes");
    pump_until(&mut reactor, WAIT, "the connection is accepted", |r| {
        r.connections().len() == 1
    });
    assert_eq!(reactor.stats().bytes_in, 0, "accepted, not yet read");
    pump_until(&mut reactor, WAIT, "the connection is read", |r| {
        r.stats().bytes_in > 0
    });
    let stats = reactor.stats().clone();
    assert!(
        stats.bytes_in <= budget as u64,
        "one turn read {} bytes, over the budget of {budget}: {stats:?}",
        stats.bytes_in
    );
    assert_eq!(
        stats.budget_yields, 1,
        "queued for a revisit once: {stats:?}"
    );
    assert_eq!(
        reactor.connections()[0].2,
        Phase::Draining,
        "our FIN is out; the rest is read and discarded on later turns"
    );
}

/// TCP stops a read at the urgent mark: `abc`, an out-of-band `X`, then `def`, all queued
/// before the server reads, come back as `abc` from one read and `def` from the next. The
/// first read is short, and yet the receive queue is not empty: the connection must read
/// on rather than wait for an edge that never comes.
#[test]
fn urgent_data_does_not_strand_what_follows_it() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let addr = reactor.listen(localhost(), || Echo).unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    pump_until(&mut reactor, WAIT, "the connection is accepted", |r| {
        r.connections().len() == 1
    });
    client.write_all(b"abc").unwrap();
    socket2::SockRef::from(&client)
        .send_out_of_band(b"X")
        .unwrap();
    client.write_all(b"def").unwrap();
    client.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    pump_until(
        &mut reactor,
        WAIT,
        "everything after the mark is echoed",
        |_| try_read_into(&mut client, &mut got, 6),
    );
    assert_eq!(
        got, b"abcdef",
        "the urgent byte is out of band; the rest in order"
    );
}

/// Echoes, with a protocol deadline that swings between 10 s and 100 s away with each
/// message, so the connection's deadline moves earlier every other message.
struct Swinging {
    next: Option<Instant>,
    n: u64,
}

impl Protocol for Swinging {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        self.n += 1;
        let secs = if self.n % 2 == 0 { 10 } else { 100 };
        self.next = Some(out.now() + Duration::from_secs(secs));
        out.push(input);
        Ok(input.len())
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }
}

/// The timer heap holds only live deadlines: connection churn under an idle timeout leaves
/// nothing armed once the connections are gone (so an idle server does not wake for them),
/// and a deadline that moves back and forth with every message keeps one entry.
#[test]
fn the_timer_heap_holds_only_live_deadlines() {
    let cfg = Config {
        timeouts: sockloop::reactor::Timeouts {
            idle: Some(Duration::from_secs(300)),
            write_stall: None,
        },
        ..test_config()
    };
    let mut reactor = Reactor::with_config(cfg).unwrap();
    let addr = reactor.listen(localhost(), || Echo).unwrap();
    for i in 0..300 {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_nonblocking(true).unwrap();
        echo_via_pump(&mut reactor, &mut c, b"x");
        drop(c);
        pump_until(&mut reactor, WAIT, "the connection is reaped", |r| {
            r.stats().closed == i + 1
        });
    }
    assert_eq!(reactor.connections().len(), 0);
    assert_eq!(
        reactor.armed_timers(),
        0,
        "no deadline outlives its connection"
    );
    assert_eq!(
        reactor.next_timeout(),
        None,
        "an idle server sleeps until an event"
    );

    let swing = reactor
        .listen(localhost(), || Swinging { next: None, n: 0 })
        .unwrap();
    let mut c = TcpStream::connect(swing).unwrap();
    c.set_nonblocking(true).unwrap();
    for _ in 0..500 {
        echo_via_pump(&mut reactor, &mut c, b"y");
    }
    assert_eq!(
        reactor.armed_timers(),
        1,
        "one entry for the one connection, however often its deadline moved"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Backpressure: a peer that does not read stops being read, within the limits.

#[test]
fn backpressure_pauses_reading_and_bounds_output() {
    const BOUND: usize = 8 << 20;
    let cfg = Config {
        read_buffer: 16 * 1024,
        read_budget: 32 * 1024,
        high_water: 128 * 1024,
        low_water: 32 * 1024,
        output_limit: 512 * 1024,
        ..test_config()
    };
    let (high_water, read_buffer, output_limit) =
        (cfg.high_water, cfg.read_buffer, cfg.output_limit);

    // Small kernel buffers on both ends (accepted sockets inherit the listener's), so a
    // few hundred KiB fill them; the host's tcp_rmem may allow tens of MiB otherwise.
    let server = BgReactor::start(cfg, |r| {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(32 * 1024).unwrap();
        sock.set_send_buffer_size(32 * 1024).unwrap();
        sock.bind(&localhost().into()).unwrap();
        sock.listen(128).unwrap();
        r.listen_std(sock.into(), || Echo)
    });
    let slow = {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(32 * 1024).unwrap();
        sock.set_send_buffer_size(32 * 1024).unwrap();
        sock.connect_timeout(&server.addr().into(), WAIT)
            .expect("connect");
        TcpStream::from(sock)
    };

    // Write without reading until a write makes no progress for 300 ms.
    let data = pattern(7, BOUND);
    slow.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut sent = 0;
    let mut w = &slow;
    let mut stalled = false;
    let start = Instant::now();
    while sent < BOUND {
        assert!(start.elapsed() < WAIT, "writing should stall or finish");
        match w.write(&data[sent..(sent + 64 * 1024).min(BOUND)]) {
            Ok(n) => sent += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                stalled = true;
                break;
            }
            Err(e) => panic!("write to the server failed after {sent} bytes: {e}"),
        }
    }
    assert!(
        stalled,
        "a peer that never reads should stall the writer well before {BOUND} bytes"
    );

    let (stats, buffered, conns) =
        server.call(|r| (r.stats().clone(), r.buffered_output(), r.connections()));
    eprintln!("backpressure: stalled after {sent} bytes; buffered {buffered}; {stats:?}");
    assert!(
        stats.read_pauses > 0,
        "the server should have paused reading the non-reading peer: {stats:?}"
    );
    assert!(
        buffered >= high_water,
        "the stalled connection should hold at least the high-water mark ({high_water}) \
         of output, holds {buffered}"
    );
    assert!(
        stats.peak_output_buffered <= output_limit,
        "peak output {} should stay within the output limit {output_limit}",
        stats.peak_output_buffered
    );
    assert!(
        stats.peak_output_buffered <= high_water + read_buffer,
        "peak output {} should stay within high water + one read ({})",
        stats.peak_output_buffered,
        high_water + read_buffer
    );
    assert_eq!(
        (stats.closed, conns.len()),
        (0, 1),
        "the slow connection is paused, not closed"
    );

    // Meanwhile another client is served normally.
    let mut other = connect_within(server.addr(), WAIT);
    for i in 0..20 {
        round_trip(&mut other, format!("still here {i}").as_bytes());
    }
    drop(other);

    // Now the slow peer reads: everything it sent comes back, in order.
    let mut r = &slow;
    let mut got = vec![0u8; sent];
    slow.set_read_timeout(Some(WAIT)).unwrap();
    r.read_exact(&mut got)
        .expect("every byte sent is echoed once the peer reads");
    if let Some(i) = got.iter().zip(&data[..sent]).position(|(a, b)| a != b) {
        panic!("echo differs from what was sent at byte {i} of {sent}");
    }
    drop(slow);
    let (stats, _) = server.shutdown_and_join(WAIT);
    assert_eq!(stats.bytes_out as usize, sent + 20 * 13 - 10, "{stats:?}");
}

// ---------------------------------------------------------------------------------------
// 4. The cross-thread handle.

/// A task that counts itself in `done` and, while `left > 0`, posts the next one from the
/// loop's own thread.
fn chain(h: Handle, done: Arc<AtomicU64>, left: u64) -> impl FnOnce(&mut Reactor) + Send {
    move |_| {
        done.fetch_add(1, Ordering::SeqCst);
        if left > 0 {
            let next = chain(h.clone(), Arc::clone(&done), left - 1);
            h.post(next).unwrap();
        }
    }
}

/// Work queued from the loop's own thread while the turn ends (a task posted by a task, a
/// mailbox delivery made during another) runs in that turn, or the next turn polls
/// without sleeping: it never waits for an unrelated event or a full poll timeout.
#[test]
fn work_queued_at_the_end_of_a_turn_does_not_wait_for_the_next_event() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let handle = reactor.handle();
    let done = Arc::new(AtomicU64::new(0));
    handle
        .post(chain(handle.clone(), Arc::clone(&done), 4))
        .unwrap();
    reactor.run_once(Some(WAIT)).unwrap();
    assert_eq!(
        done.load(Ordering::SeqCst),
        5,
        "a chain of five runs in one turn"
    );

    // A chain longer than one turn drains: the turn ends with work left, and says so.
    done.store(0, Ordering::SeqCst);
    handle
        .post(chain(handle.clone(), Arc::clone(&done), 99))
        .unwrap();
    let polls = reactor.stats().polls;
    while done.load(Ordering::SeqCst) < 100 {
        assert!(
            reactor.stats().polls - polls < 20,
            "the chain stalled at {}",
            done.load(Ordering::SeqCst)
        );
        reactor.run_once(Some(WAIT)).unwrap();
        if done.load(Ordering::SeqCst) < 100 {
            assert_eq!(
                reactor.next_timeout(),
                Some(Duration::ZERO),
                "work is left: the loop must not sleep"
            );
        }
    }
}

#[test]
fn handle_posts_run_on_the_loop_in_order_and_shutdown_stops_it() {
    const THREADS: usize = 4;
    const POSTS: u64 = 1000;
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let loop_thread = std::thread::spawn(move || {
        let mut reactor = Reactor::with_config(test_config()).unwrap();
        let addr = reactor.listen(localhost(), || Echo).unwrap();
        ready_tx
            .send((reactor.handle(), addr, std::thread::current().id()))
            .unwrap();
        let result = reactor.run();
        let stats = reactor.stats().clone();
        drop(reactor);
        done_tx.send((result.is_ok(), stats)).unwrap();
    });
    let (handle, addr, loop_id) = ready_rx.recv_timeout(WAIT).expect("reactor starts");

    // Per poster: the last sequence number seen on the loop, and violations.
    let last = Arc::new(Mutex::new(vec![None::<u64>; THREADS]));
    let ran = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let posters: Vec<_> = (0..THREADS)
        .map(|t| {
            let (handle, last, ran, wrong) = (
                handle.clone(),
                Arc::clone(&last),
                Arc::clone(&ran),
                Arc::clone(&wrong),
            );
            std::thread::spawn(move || {
                for seq in 0..POSTS {
                    let (last, ran, wrong) =
                        (Arc::clone(&last), Arc::clone(&ran), Arc::clone(&wrong));
                    handle
                        .post(move |_r| {
                            let mut last = last.lock().unwrap();
                            let in_order = last[t].map_or(seq == 0, |prev| seq == prev + 1);
                            let on_loop = std::thread::current().id() == loop_id;
                            if !(in_order && on_loop) {
                                wrong.fetch_add(1, Ordering::Relaxed);
                            }
                            last[t] = Some(seq);
                            ran.fetch_add(1, Ordering::Relaxed);
                        })
                        .expect("post to a running reactor");
                }
            })
        })
        .collect();
    for p in posters {
        p.join().expect("poster thread");
    }

    // A client is open when the loop stops: run() must close it.
    let mut client = connect_within(addr, WAIT);
    round_trip(&mut client, b"before shutdown");

    // Posted after every poster finished, so it runs after all their tasks.
    let (tx, rx) = mpsc::channel();
    handle
        .post(move |r| {
            let _ = tx.send(r.stats().clone());
        })
        .unwrap();
    let stats = rx.recv_timeout(WAIT).expect("the final post runs");
    let total = THREADS as u64 * POSTS;
    assert_eq!(
        ran.load(Ordering::Relaxed),
        total,
        "every one of the {total} posted tasks ran"
    );
    assert_eq!(
        wrong.load(Ordering::Relaxed),
        0,
        "every task ran on the loop's thread, in its poster's order"
    );
    assert_eq!(stats.tasks, total + 1, "stats count every task: {stats:?}");
    assert!(
        stats.wakeups >= 1 && stats.wakeups <= stats.tasks,
        "wake-ups are coalesced, never more than tasks: {stats:?}"
    );

    // Shutdown: the client's connection is closed (gracefully: our FIN, then theirs), and
    // run() returns.
    handle.shutdown().expect("shutdown of a running reactor");
    let mut rest = Vec::new();
    let eof = client.read_to_end(&mut rest);
    assert!(
        matches!(eof, Ok(0))
            || matches!(&eof, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
        "the client sees the connection closed after shutdown, got {eof:?}"
    );
    drop(client);
    let (ok, final_stats) = done_rx
        .recv_timeout(WAIT)
        .expect("run() returns after handle.shutdown()");
    loop_thread.join().expect("reactor thread");
    assert!(ok, "run() returns Ok after a requested shutdown");
    assert_eq!(
        (final_stats.open, final_stats.closed),
        (0, 1),
        "the open connection is closed at shutdown"
    );

    // The reactor is gone: the handle says so instead of queueing forever.
    assert_eq!(
        handle.post(|_| unreachable!("no loop runs this")),
        Err(sockloop::reactor::Closed),
        "post after the reactor is dropped"
    );
    assert_eq!(handle.shutdown(), Err(sockloop::reactor::Closed));
}

// ---------------------------------------------------------------------------------------
// 5. The connection limit, and tunables that make no sense.

/// `Reactor::close` on a connection that has half-closed (our FIN is out, we still read)
/// does what it says: the connection stops reading for the protocol and drains to the
/// peer's FIN under the linger deadline, instead of returning true and doing nothing.
#[test]
fn close_after_shutdown_write_drains_and_ends() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let addr = reactor.listen(localhost(), || Echo).unwrap();
    let to = sockloop::net::Endpoint::Inet(addr);
    let token = reactor.connect(&to, Some(WAIT), Echo).unwrap();
    pump_until(&mut reactor, WAIT, "the connect completes", |r| {
        r.phase(token) == Some(Phase::Open)
    });
    assert!(reactor.shutdown_write(token));
    pump_until(&mut reactor, WAIT, "our FIN is out", |r| {
        r.phase(token) == Some(Phase::HalfClosed)
    });
    assert!(reactor.close(token));
    assert_eq!(reactor.phase(token), Some(Phase::Draining));
    pump_until(&mut reactor, WAIT, "the peer's FIN ends it", |r| {
        r.phase(token).is_none()
    });
}

/// Nonsense tunables are refused with the setting's name, before any socket exists: a
/// zero accept batch would spin the loop, output marks out of order would never resume.
#[test]
fn nonsense_tunables_are_refused_with_their_name() {
    for (cfg, name) in [
        (
            Config {
                accept_batch: 0,
                ..test_config()
            },
            "accept_batch",
        ),
        (
            Config {
                read_budget: 0,
                ..test_config()
            },
            "read_budget",
        ),
        (
            Config {
                low_water: 2 << 20,
                ..test_config()
            },
            "low_water",
        ),
    ] {
        let err = Reactor::with_config(cfg.clone()).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains(name), "{err}");
        let listener =
            sockloop::blocking::BlockingListener::bind(&sockloop::net::Endpoint::Inet(localhost()))
                .unwrap();
        let factory: sockloop::blocking::Factory = Arc::new(|| Box::new(Echo));
        let session = cfg.session_config(&cfg.timeouts);
        let blocking = sockloop::blocking::BlockingServer::spawn_with(
            listener,
            sockloop::blocking::Mode::Threaded,
            factory,
            session.clone(),
        );
        assert_eq!(
            blocking.is_err(),
            session.validate().is_err(),
            "the blocking drivers refuse the same connection settings"
        );
    }
}

#[test]
fn connection_limit_queues_extra_clients_in_the_backlog() {
    let server = BgReactor::start(
        Config {
            max_connections: 3,
            ..test_config()
        },
        |r| r.listen(localhost(), || Echo),
    );
    let mut clients: Vec<Option<TcpStream>> = (0..5)
        .map(|_| Some(connect_within(server.addr(), WAIT)))
        .collect();
    // The kernel completes every handshake; the loop accepts in arrival order.
    for (i, c) in clients.iter_mut().enumerate() {
        c.as_mut()
            .unwrap()
            .write_all(format!("client {i}").as_bytes())
            .unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate().take(3) {
        assert_eq!(
            read_exact_n(c.as_mut().unwrap(), 8),
            format!("client {i}").as_bytes(),
            "client {i} is within the limit and is served"
        );
    }
    for (i, c) in clients.iter_mut().enumerate().skip(3) {
        assert_silent(
            c.as_mut().unwrap(),
            Duration::from_millis(300),
            &format!("client {i} is over the limit of 3"),
        );
    }
    let stats = server.stats();
    assert_eq!(stats.open, 3, "exactly the limit is open: {stats:?}");
    assert!(stats.accept_limit_hits > 0, "the limit was hit: {stats:?}");

    // One served client leaves: the first waiting one takes its place, the other waits on.
    drop(clients[0].take());
    assert_eq!(
        read_exact_n(clients[3].as_mut().unwrap(), 8),
        b"client 3",
        "client 3 is served once a slot frees"
    );
    assert_silent(
        clients[4].as_mut().unwrap(),
        Duration::from_millis(300),
        "client 4, still over the limit",
    );
    drop(clients[1].take());
    assert_eq!(
        read_exact_n(clients[4].as_mut().unwrap(), 8),
        b"client 4",
        "client 4 is served once another slot frees"
    );
    // The survivors still work.
    for c in clients.iter_mut().flatten() {
        round_trip(c, b"again");
    }
    let stats = server.stats();
    assert!(
        stats.open <= 3 && stats.accepted == 5,
        "all five were served, never more than three at once: {stats:?}"
    );
}
