//! Outgoing TCP connections as a state machine: one that succeeds, one refused, and one
//! that never completes and is given up on after a timeout.
//!
//! Run: `cargo run --example connect`. With `RUST_LOG=trace` the log shows each phase:
//! `Connecting (SYN_SENT)` until the poller reports WRITABLE, then `SO_ERROR` decides.

use sockloop::net::Endpoint;
use sockloop::proto::{CloseReason, Out, PeerError, Protocol};
use sockloop::reactor::Reactor;
use sockloop_demos::proto::echo::Echo;
use std::cell::Cell;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The client side: send one request line as soon as the connection opens, print the
/// reply line, then close. The reactor calls `handle_close` exactly once, whether the
/// connection was ever opened or not, so that is where success and failure both land.
struct Request {
    done: Rc<Cell<bool>>,
}

impl Protocol for Request {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        println!("  open: connected; sending the request");
        out.push(b"GET /hello\n");
    }

    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        let Some(nl) = input.iter().position(|&b| b == b'\n') else {
            return Ok(0); // not a whole line yet: the reactor keeps the bytes for later
        };
        println!("  reply: {:?}", String::from_utf8_lossy(&input[..nl]));
        out.close();
        Ok(nl + 1)
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        println!("  handle_close: {reason} ({reason:?})");
        self.done.set(true);
    }
}

/// Starts a connect and turns the loop until its protocol has been closed (or 3 s pass).
fn attempt(r: &mut Reactor, to: SocketAddr, timeout: Option<Duration>) -> std::io::Result<()> {
    let done = Rc::new(Cell::new(false));
    let proto = Request { done: done.clone() };
    let start = Instant::now();
    let token = match r.connect(&Endpoint::Inet(to), timeout, proto) {
        Ok(token) => token,
        // Errors the OS reports straight away come back here instead of handle_close.
        Err(e) => {
            println!("  connect() failed at once: {e}");
            return Ok(());
        }
    };
    // connect() never waits for the handshake: it returns with the SYN sent.
    let conns = r.connections();
    let phase = conns.iter().find(|c| c.0 == token).map(|c| c.2).unwrap();
    println!("  connect() returned at once; phase: {phase}");
    while !done.get() && start.elapsed() < Duration::from_secs(3) {
        r.run_once(Some(Duration::from_millis(100)))?;
    }
    match done.get() {
        true => println!("  finished after {} ms", start.elapsed().as_millis()),
        false => println!("  still not closed after 3 s"),
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut reactor = Reactor::new()?;

    let echo = reactor.listen("127.0.0.1:0".parse().unwrap(), || Echo)?;
    println!("1. to an echo server on {echo}, same reactor");
    attempt(&mut reactor, echo, None)?;

    // A port that was just free and is closed again: the kernel answers the SYN with RST.
    let closed = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    println!("2. to {closed}, where nothing listens");
    attempt(&mut reactor, closed, None)?;

    // A listener that never accepts, with a backlog of 0. Once its accept queue holds what
    // Linux allows (backlog + 1), further SYNs are dropped, so a connect hangs in SYN_SENT
    // and retries until the timeout. (A kernel that answers or queues instead makes this
    // connect succeed, and the request then waits for a reply that never comes.)
    let stuck = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    stuck.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())?;
    stuck.listen(0)?;
    let stuck_addr = stuck.local_addr()?.as_socket().unwrap();
    let mut fillers = Vec::new();
    while let Ok(s) = TcpStream::connect_timeout(&stuck_addr, Duration::from_millis(200)) {
        fillers.push(s);
        if fillers.len() == 8 {
            println!("  (8 connects queued and the queue is still not full)");
            break;
        }
    }
    println!(
        "3. to {stuck_addr}, accept queue full after {} connects; 500 ms timeout",
        fillers.len()
    );
    attempt(&mut reactor, stuck_addr, Some(Duration::from_millis(500)))?;

    let s = reactor.stats();
    println!(
        "stats: {} connected, {} connect failures",
        s.connected, s.connect_failures
    );
    Ok(())
}
