//! The reactor on a background thread, driven from the main thread through a `Handle`.
//!
//! Run: `cargo run --example embed` (add `RUST_LOG=trace` to watch the loop wake up for
//! each posted task). It opens an echo server, adds a second listener and a timer from
//! the main thread, talks to both, then shuts the loop down gracefully and joins it.

use sockloop::proto::{Out, PeerError, Protocol};
use sockloop::reactor::{Handle, Reactor};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// Every byte back, in order.
struct Echo;

impl Protocol for Echo {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        out.push(input);
        Ok(input.len())
    }
}

/// Runs `f` on the loop's thread and waits for its answer. The reactor is not `Send`, so
/// other threads never touch it: they send it closures, and it sends back plain values.
fn ask<T, F>(handle: &Handle, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&mut Reactor) -> T + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    handle
        .post(move |r| tx.send(f(r)).unwrap())
        .expect("reactor stopped");
    rx.recv().expect("the task was dropped")
}

/// One request and its echo over a fresh blocking connection. Keeps the stream open.
fn round_trip(addr: SocketAddr, line: &str) -> std::io::Result<BufReader<TcpStream>> {
    let mut conn = TcpStream::connect(addr)?;
    conn.write_all(line.as_bytes())?;
    let mut reader = BufReader::new(conn);
    let mut reply = String::new();
    reader.read_line(&mut reply)?;
    println!("client: {addr} echoed {:?}", reply.trim_end());
    Ok(reader)
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    // The reactor holds Rc's and boxed closures that are not Send, so it is built inside
    // the thread that runs it; only the address and the Handle (which is Send) come out.
    let (ready_tx, ready_rx) = mpsc::channel();
    let loop_thread = std::thread::spawn(move || -> std::io::Result<()> {
        let mut reactor = Reactor::new()?;
        let addr = reactor.listen("127.0.0.1:0".parse().unwrap(), || Echo)?;
        ready_tx.send((addr, reactor.handle())).unwrap();
        reactor.run()?;
        let s = reactor.stats();
        println!(
            "loop: run() returned: {} accepted, {} closed",
            s.accepted, s.closed
        );
        Ok(())
    });
    let (addr, handle) = ready_rx.recv().expect("the loop thread failed to start");
    println!("main: echo server on {addr}, running on its own thread");

    // Listeners can be added while the loop runs, but only by the loop's own thread.
    let extra = ask(&handle, |r| {
        r.listen("127.0.0.1:0".parse().unwrap(), || Echo)
    })?;
    println!("main: a task opened a second listener on {extra}");

    // Timers too: the callback runs later on the loop thread, long after the task returned.
    let (fired_tx, fired_rx) = mpsc::channel();
    handle
        .post(move |r| {
            r.set_timer(Duration::from_millis(100), move |r| {
                fired_tx.send(r.stats().timers_fired).unwrap();
            });
        })
        .unwrap();

    let mut first = round_trip(addr, "hello from main\n")?;
    round_trip(extra, "hello, second listener\n")?;
    let fired = fired_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    println!("main: the timer fired on the loop thread (timers fired so far: {fired})");

    // Stats live on the loop thread; a task copies them out.
    let stats = ask(&handle, |r| r.stats().clone());
    println!(
        "main: stats: accepted {}, open {}, bytes in {}, out {}, tasks run {}",
        stats.accepted, stats.open, stats.bytes_in, stats.bytes_out, stats.tasks
    );

    // Graceful: listeners close now, and the open connection is asked to finish. Echo
    // finishes at once, so the client sees end-of-stream; run() returns when it closes too.
    handle.shutdown().unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest)?;
    println!("client: end of stream after {} more bytes", rest.len());
    drop(first);
    loop_thread.join().expect("the loop thread panicked")?;

    // With the reactor gone, posting fails instead of queueing work nobody will run.
    println!("main: post after join: {:?}", handle.post(|_| {}));
    Ok(())
}
