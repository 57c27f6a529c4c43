//! Timers: one-shot, repeating and cancelled ones set by the embedder, and a protocol
//! that keeps its own deadline to push a heartbeat line to its client every 500 ms.
//!
//! Run: `cargo run --example timers` (about 2.5 s). With `RUST_LOG=trace` each turn shows
//! the poll timeout the loop derived from its nearest deadline.

use sockloop::proto::{Out, PeerError, Protocol};
use sockloop::reactor::Reactor;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const BEAT: Duration = Duration::from_millis(500);

/// Server push: every `BEAT` the connection gets a line, whether the client speaks or not.
/// The machine never reads a clock or owns a timer: it names its next deadline in
/// `poll_timeout`, and the reactor calls `handle_timeout` once that time has come.
struct Heartbeat {
    next: Instant,
    beats: u32,
}

impl Protocol for Heartbeat {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        out.push(b"hello: a heartbeat follows every 500 ms\n");
        self.next = out.now() + BEAT;
    }

    fn handle_input(&mut self, input: &[u8], _out: &mut Out<'_>) -> Result<usize, PeerError> {
        Ok(input.len()) // whatever the client says is ignored
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }

    fn handle_timeout(&mut self, out: &mut Out<'_>) {
        // Timers fire late, never early; the check still costs nothing and keeps the
        // machine correct if it is ever woken for another deadline of the connection.
        if out.now() < self.next {
            return;
        }
        self.beats += 1;
        out.push(format!("heartbeat {}\n", self.beats).as_bytes());
        // From now rather than from `self.next`: after a late turn, no burst of catch-up beats.
        self.next = out.now() + BEAT;
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let start = Instant::now();
    let ms = move || start.elapsed().as_millis();

    let mut reactor = Reactor::new()?;
    let addr = reactor.listen("127.0.0.1:0".parse().unwrap(), || Heartbeat {
        next: Instant::now(),
        beats: 0,
    })?;

    // A one-shot timer: runs once, on the loop thread, with the reactor in hand.
    reactor.set_timer(Duration::from_millis(300), move |_| {
        println!("{:>5} ms  one-shot timer fired", ms());
    });

    // A repeating timer, stopped from inside its own callback after four ticks.
    let mut ticks = 0;
    reactor.set_interval(Duration::from_millis(200), move |r, id| {
        ticks += 1;
        println!("{:>5} ms  interval tick {ticks}", ms());
        if ticks == 4 {
            println!(
                "{:>5} ms  interval cancels itself: {}",
                ms(),
                r.cancel_timer(id)
            );
        }
    });

    // A timer cancelled before it is due never runs; cancelling twice reports false.
    let doomed = reactor.set_timer(Duration::from_millis(100), |_| unreachable!("cancelled"));
    println!("cancel the 100 ms timer: {}", reactor.cancel_timer(doomed));
    println!("cancel it again:         {}", reactor.cancel_timer(doomed));

    // The end of the demo is a timer too. Graceful shutdown asks Heartbeat to finish
    // (by default: close after its queued output), so the client below sees end-of-stream.
    reactor.set_timer(Duration::from_millis(2300), move |r| {
        println!("{:>5} ms  shutdown timer fired", ms());
        r.shutdown();
    });

    // A plain blocking client on another thread, printing each line as it arrives.
    let client = std::thread::spawn(move || -> std::io::Result<u32> {
        let mut lines = 0;
        for line in BufReader::new(TcpStream::connect(addr)?).lines() {
            println!("{:>5} ms  client got {:?}", ms(), line?);
            lines += 1;
        }
        println!("{:>5} ms  client: end of stream", ms());
        Ok(lines)
    });

    reactor.run()?;
    let lines = client.join().expect("client panicked")?;
    let fired = reactor.stats().timers_fired;
    println!("client read {lines} lines; embedder timers fired: {fired} (1 + 4 + 1)");
    Ok(())
}
