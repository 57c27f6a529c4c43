//! What a connection learns about itself and what it may ask of its loop: the context
//! `Out` gives in `handle_open` (`id`, `local`, `listener`), deferred actions
//! (`Out::defer`), listener tokens (`connections_of`, `close_listener`), pausing a
//! connection's reading, socket options, and `Reactor::spawn`.
//!
//! Real sockets on 127.0.0.1; the reactor is driven by the test thread (`run_once`) unless
//! it runs on a thread of its own, and every wait polls against a deadline.

use crate::support::{
    assert_silent, connect, localhost, pump_for, pump_until, read_exact_n, round_trip, test_config,
    wait_until, Echo, WAIT,
};
use sockloop::blocking::{BlockingListener, BlockingServer, Factory, Mode};
use sockloop::net::{Endpoint, SocketOptions};
use sockloop::proto::{DatagramProtocol, Out, PeerError, Protocol, Transmit};
use sockloop::reactor::{Config, Reactor, Token};
use std::cell::Cell;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// What a protocol saw in `handle_open`: its id, local end, listener and peer.
type Opened = (Token, Option<Endpoint>, Option<Token>, Option<Endpoint>);

/// Reports what `handle_open` was told, then echoes.
struct Reporter(mpsc::Sender<Opened>);

impl Protocol for Reporter {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        let seen = (
            out.id(),
            out.local().cloned(),
            out.listener(),
            out.peer().cloned(),
        );
        let _ = self.0.send(seen);
    }
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        out.push(input);
        Ok(input.len())
    }
}

/// Writes `msg` and, once the loop (driven here) has sent as many bytes back, expects them
/// to be `msg`: a round trip through an echo on a reactor the test thread drives.
fn pumped_round_trip(reactor: &mut Reactor, client: &mut TcpStream, msg: &[u8]) {
    let before = reactor.stats().bytes_out;
    client.write_all(msg).expect("write the message");
    let want = before + msg.len() as u64;
    pump_until(reactor, WAIT, "the echo is sent", |r| {
        r.stats().bytes_out >= want
    });
    assert_eq!(
        read_exact_n(client, msg.len()),
        msg,
        "the echo is the message"
    );
}

/// The token of the only listener bound at `addr`.
fn listener_at(reactor: &Reactor, addr: SocketAddr) -> Token {
    let found: Vec<Token> = reactor
        .listeners()
        .into_iter()
        .filter(|(_, at)| *at == Endpoint::Inet(addr))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(found.len(), 1, "one listener at {addr}: {found:?}");
    found[0]
}

/// An accepted connection is told, in `handle_open`, its own token (the one
/// `connections()` lists), the listener's address as its local end, the listener's token
/// (the one `listeners()` lists) and its peer; an outgoing one is told no listener, and a
/// 127.0.0.1 local end (the peer's view of it).
#[test]
fn handle_open_sees_its_id_local_end_and_listener() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let addr = reactor
        .listen(localhost(), move || Reporter(tx2.clone()))
        .unwrap();
    let listener = listener_at(&reactor, addr);
    let mut client = connect(addr);
    let mut seen = None;
    pump_until(&mut reactor, WAIT, "handle_open reports", |_| {
        seen = seen.take().or_else(|| rx.try_recv().ok());
        seen.is_some()
    });
    let (id, local, from, peer) = seen.unwrap();
    let conns = reactor.connections();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(id, conns[0].0, "Out::id is the token connections() lists");
    assert_eq!(
        local,
        Some(Endpoint::Inet(addr)),
        "local is the listener's address"
    );
    assert_eq!(
        from,
        Some(listener),
        "listener is the token listeners() lists"
    );
    assert_eq!(peer, Some(Endpoint::Inet(client.local_addr().unwrap())));
    pumped_round_trip(&mut reactor, &mut client, b"still an echo");

    // Outgoing: to a plain std listener.
    let plain = TcpListener::bind(localhost()).unwrap();
    let target = plain.local_addr().unwrap();
    let token = reactor
        .connect(&Endpoint::Inet(target), Some(WAIT), Reporter(tx))
        .unwrap();
    let mut seen = None;
    pump_until(
        &mut reactor,
        WAIT,
        "the outgoing handle_open reports",
        |_| {
            seen = seen.take().or_else(|| rx.try_recv().ok());
            seen.is_some()
        },
    );
    let (id, local, from, peer) = seen.unwrap();
    let (accepted, dialler) = plain.accept().expect("the std listener accepts");
    drop(accepted);
    assert_eq!(id, token, "Out::id is the token connect returned");
    assert_eq!(from, None, "an outgoing connection has no listener");
    assert_eq!(peer, Some(Endpoint::Inet(target)));
    let local = local
        .and_then(|e| e.inet())
        .expect("an outgoing connection knows its local end");
    assert_eq!(local.ip(), localhost().ip());
    assert_eq!(local, dialler, "local is what the peer sees");
}

/// Answers `now` to any input and defers: a send of `deferred` on itself, and (if given)
/// a dial to `dial`. Records whether the deferred action ran, and when it ran that the
/// connection was still open.
struct Deferrer {
    ran: Rc<Cell<bool>>,
    dial: Option<SocketAddr>,
}

impl Protocol for Deferrer {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        out.push(b"now,");
        let ran = Rc::clone(&self.ran);
        let dial = self.dial;
        let queued = out.defer(move |reactor, me| {
            reactor.send(me, b"deferred").expect("send to myself");
            if let Some(to) = dial {
                reactor
                    .connect(&Endpoint::Inet(to), Some(WAIT), Echo)
                    .expect("dial from a deferred action");
            }
            ran.set(true);
        });
        assert!(queued, "the reactor takes deferred actions");
        Ok(input.len())
    }
}

/// A deferred action runs after the call that deferred it (its send goes out after what
/// the call pushed), in the same turn (done by the time the turn that read the input
/// returns), with the connection's token; a deferred `connect` reaches another listener.
#[test]
fn deferred_actions_run_after_the_call_in_the_same_turn() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let b = reactor.listen(localhost(), || Echo).unwrap();
    let ran = Rc::new(Cell::new(false));
    let ran2 = Rc::clone(&ran);
    let a = reactor
        .listen(localhost(), move || Deferrer {
            ran: Rc::clone(&ran2),
            dial: Some(b),
        })
        .unwrap();
    let (token_a, token_b) = (listener_at(&reactor, a), listener_at(&reactor, b));
    let mut client = connect(a);
    pump_until(&mut reactor, WAIT, "A accepts", |r| r.stats().accepted == 1);
    assert!(!ran.get(), "nothing deferred before any input");
    client.write_all(b"go").unwrap();
    pump_until(&mut reactor, WAIT, "the input is read", |r| {
        r.stats().bytes_in >= 2
    });
    assert!(
        ran.get(),
        "the deferred action ran in the turn that read the input"
    );
    assert_eq!(read_exact_n(&mut client, 12), b"now,deferred");
    pump_until(&mut reactor, WAIT, "B accepts the deferred dial", |r| {
        r.stats().accepted == 2 && r.stats().connected == 1
    });
    assert_eq!(reactor.connections_of(token_b).len(), 1);
    assert_eq!(reactor.connections_of(token_a).len(), 1);
    assert_eq!(reactor.connections().len(), 3, "client, dialler, dialled");
}

/// Records what `Out::defer` returned (under a blocking driver), then echoes.
struct DeferUnderBlocking(mpsc::Sender<bool>);

impl Protocol for DeferUnderBlocking {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        let queued = out.defer(|_, _| panic!("a blocking driver has no loop to run this"));
        let _ = self.0.send(queued);
        out.push(input);
        Ok(input.len())
    }
}

/// Under the blocking drivers `Out::defer` returns false (there is no loop to run the
/// action on) and drops the action, and the connection goes on.
#[test]
fn defer_returns_false_under_blocking_drivers() {
    for mode in [Mode::Threaded, Mode::Iterative] {
        let (tx, rx) = mpsc::channel();
        let listener = BlockingListener::bind(&Endpoint::Inet(localhost())).unwrap();
        let factory: Factory =
            Arc::new(move || Box::new(DeferUnderBlocking(tx.clone())) as Box<dyn Protocol + Send>);
        let server = BlockingServer::spawn(listener, mode, factory).unwrap();
        let addr = server.local_addr().inet().expect("a TCP address");
        let mut client = connect(addr);
        round_trip(&mut client, b"defer?");
        assert_eq!(rx.recv_timeout(WAIT), Ok(false), "defer under {mode:?}");
        drop(client);
        server.shutdown(WAIT);
        server.join();
    }
}

/// Each listener has its token: `connections_of` counts what each accepted; closing one
/// refuses new connects to it, empties its `connections_of`, and leaves its accepted
/// connections and the other listener serving; closing it again returns false.
#[test]
fn listener_tokens_count_and_close_their_own() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let a = reactor.listen(localhost(), || Echo).unwrap();
    let b = reactor.listen(localhost(), || Echo).unwrap();
    let (token_a, token_b) = (listener_at(&reactor, a), listener_at(&reactor, b));
    assert_ne!(token_a, token_b);
    let mut a1 = connect(a);
    let mut a2 = connect(a);
    let mut b1 = connect(b);
    pump_until(&mut reactor, WAIT, "three accepted", |r| {
        r.stats().accepted == 3
    });
    assert_eq!(reactor.connections_of(token_a).len(), 2);
    assert_eq!(reactor.connections_of(token_b).len(), 1);

    assert!(reactor.close_listener(token_a));
    match TcpStream::connect(a) {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(s) => panic!("connected to a closed listener from {:?}", s.local_addr()),
    }
    pumped_round_trip(&mut reactor, &mut a1, b"a1 still served");
    pumped_round_trip(&mut reactor, &mut a2, b"a2 still served");
    pumped_round_trip(&mut reactor, &mut b1, b"b1 unaffected");
    assert!(reactor.connections_of(token_a).is_empty());
    assert_eq!(reactor.connections_of(token_b).len(), 1);
    assert_eq!(reactor.listeners().len(), 1);
    let mut b2 = connect(b);
    pumped_round_trip(&mut reactor, &mut b2, b"B still accepts");
    assert_eq!(reactor.connections_of(token_b).len(), 2);
    assert!(!reactor.close_listener(token_a), "closed already");
}

/// A paused connection's input is not read (no echo while the loop runs), while another
/// connection is served; resumed, what waited is read at once. Pausing twice, resuming an
/// unpaused one, and either on a closed connection's token return false.
#[test]
fn pause_and_resume_reading() {
    let mut reactor = Reactor::with_config(test_config()).unwrap();
    let addr = reactor.listen(localhost(), || Echo).unwrap();
    let mut paused = connect(addr);
    pump_until(&mut reactor, WAIT, "the first is accepted", |r| {
        r.connections().len() == 1
    });
    let token = reactor.connections()[0].0;
    let mut other = connect(addr);
    pump_until(&mut reactor, WAIT, "the second is accepted", |r| {
        r.connections().len() == 2
    });

    assert!(reactor.pause_reading(token));
    assert!(!reactor.pause_reading(token), "paused already");
    paused.write_all(b"waits in the kernel").unwrap();
    pump_for(&mut reactor, Duration::from_millis(200));
    assert_eq!(reactor.stats().bytes_in, 0, "nothing read while paused");
    assert_silent(&mut paused, Duration::from_millis(50), "paused");
    pumped_round_trip(&mut reactor, &mut other, b"the other is served");

    let before = reactor.stats().bytes_out;
    assert!(reactor.resume_reading(token));
    assert!(!reactor.resume_reading(token), "not paused any more");
    pump_until(&mut reactor, WAIT, "the waiting input is echoed", |r| {
        r.stats().bytes_out >= before + 19
    });
    assert_eq!(read_exact_n(&mut paused, 19), b"waits in the kernel");

    drop(paused);
    pump_until(&mut reactor, WAIT, "the paused one closes", |r| {
        r.phase(token).is_none()
    });
    assert!(
        !reactor.pause_reading(token),
        "pause on a closed connection"
    );
    assert!(
        !reactor.resume_reading(token),
        "resume on a closed connection"
    );
}

/// Takes datagrams and answers none (the burst's sender does not read).
struct Sink;

impl DatagramProtocol for Sink {
    fn handle_datagram(&mut self, _: &Endpoint, _: &[u8], _: Instant, _: &mut Vec<Transmit>) {}
}

/// Sends `count` datagrams of `size` bytes to a UDP socket of a reactor with `socket`
/// options, without running its loop (the kernel keeps what its buffer holds), then runs
/// it until no more arrive; returns how many the protocol was handed.
fn burst_kept(socket: SocketOptions, count: usize, size: usize) -> u64 {
    let cfg = Config {
        socket,
        ..test_config()
    };
    let mut reactor = Reactor::with_config(cfg).unwrap();
    let (_, bound) = reactor
        .bind_datagram(&Endpoint::Inet(localhost()), Sink)
        .unwrap();
    let to = bound.inet().expect("a UDP address");
    let sender = UdpSocket::bind(localhost()).unwrap();
    let payload = vec![7u8; size];
    for _ in 0..count {
        sender.send_to(&payload, to).expect("send a datagram");
    }
    let (mut last, mut since) = (u64::MAX, Instant::now());
    pump_until(&mut reactor, WAIT, "datagrams stop arriving", |r| {
        let now = r.stats().datagrams_in;
        if now != last {
            (last, since) = (now, Instant::now());
        }
        now > 0 && since.elapsed() > Duration::from_millis(100)
    });
    last
}

/// `SocketOptions::recv_buffer` reaches a datagram socket: with a 1 MiB receive buffer a
/// burst sent while the loop is not running is kept far better than with the kernel's
/// default. The kernel doubles the size asked for and caps it at `net.core.rmem_max`, so
/// the assertion scales with what the cap allows (a cap at or below the default leaves
/// nothing to see, and then only "not worse" is asserted).
#[test]
fn recv_buffer_option_reaches_datagram_sockets() {
    let read = |p: &str| -> Option<usize> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let rmem_max = read("/proc/sys/net/core/rmem_max");
    let rmem_default = read("/proc/sys/net/core/rmem_default");
    let (count, size) = (2_000, 1_000);
    let default = burst_kept(SocketOptions::default(), count, size);
    let large = burst_kept(
        SocketOptions {
            recv_buffer: Some(1 << 20),
            nodelay: false,
            keepalive: Some(Duration::from_secs(30)),
            ..SocketOptions::default()
        },
        count,
        size,
    );
    eprintln!(
        "rmem_max {rmem_max:?}, rmem_default {rmem_default:?}: \
         kept {default} of {count} by default, {large} with a 1 MiB buffer"
    );
    assert!(default > 0 && large > 0, "the socket works at all");
    // The buffer the kernel gives: 2 × min(asked, rmem_max), against rmem_default.
    let given = 2 * rmem_max.unwrap_or(1 << 20).min(1 << 20);
    let ratio = given as f64 / rmem_default.unwrap_or(212_992) as f64;
    if default as usize == count {
        // The default already holds the whole burst: nothing to compare.
        assert_eq!(
            large as usize, count,
            "the large buffer holds what the default does"
        );
    } else if ratio >= 2.0 {
        // Each datagram costs more than its payload (its skb), so the gain is less than
        // the ratio of the sizes; half of it is a safe floor, and at least double.
        let floor = ((default as f64 * ratio / 2.0) as u64).max(2 * default);
        assert!(
            large >= floor.min(count as u64),
            "a {given}-byte buffer should keep at least {floor} datagrams, kept {large} \
             (default kept {default})"
        );
    } else {
        assert!(
            large >= default,
            "kept {large} with the option, {default} without"
        );
    }
}

/// `Reactor::spawn` runs `setup` on the reactor's own thread (its listener serves), and
/// returns a handle whose shutdown makes the thread's `run()` return Ok; a `setup` that
/// fails makes `spawn` fail with its error.
#[test]
fn spawn_runs_setup_and_shuts_down() {
    let (tx, rx) = mpsc::channel();
    let (handle, thread) = Reactor::spawn(test_config(), move |reactor| {
        let addr = reactor.listen(localhost(), || Echo)?;
        tx.send(addr).expect("the test waits for the address");
        Ok(())
    })
    .expect("spawn");
    let addr = rx.recv_timeout(WAIT).expect("setup sends the address");
    let mut client = connect(addr);
    round_trip(&mut client, b"through a spawned reactor");
    drop(client);
    handle.shutdown().expect("the reactor is running");
    wait_until(WAIT, "the reactor thread ends", || {
        thread.is_finished().then_some(())
    });
    let ran = thread.join().expect("the reactor thread did not panic");
    assert!(ran.is_ok(), "run() returned {ran:?}");
    assert!(handle.post(|_| {}).is_err(), "the reactor is gone");

    let failed = Reactor::spawn(test_config(), |_| {
        Err(io::Error::new(io::ErrorKind::AddrInUse, "setup said no"))
    });
    match failed {
        Err(e) => {
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
            assert_eq!(e.to_string(), "setup said no");
        }
        Ok(_) => panic!("spawn succeeded although setup failed"),
    }
}
