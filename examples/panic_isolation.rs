//! One buggy connection does not take the server down: a protocol that panics on one
//! connection is caught at the call, that connection is closed with
//! `CloseReason::Panicked`, and the reactor goes on serving the others.
//!
//! `cargo run --example panic_isolation`: serves 100 clients from threads of this
//! process, one of which sends the bytes that trigger the bug, and prints what happened.

use sockloop::proto::{CloseReason, Out, PeerError, Protocol};
use sockloop::reactor::{Config, Reactor};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// Echo, with a bug: it panics on `boom` (an `unwrap` on input it did not expect, say).
struct Buggy;

impl Protocol for Buggy {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        if input.windows(4).any(|w| w == b"boom") {
            panic!("the protocol met input it did not expect");
        }
        out.push(input);
        Ok(input.len())
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        if let CloseReason::Panicked(message) = reason {
            eprintln!("a connection closed because its protocol panicked: {message}");
        }
    }
}

fn main() -> std::io::Result<()> {
    // The panic's own message still goes to stderr through the panic hook; keep it short.
    std::panic::set_hook(Box::new(|info| eprintln!("caught panic: {info}")));
    let (tx, rx) = mpsc::channel::<SocketAddr>();
    let (handle, server) = Reactor::spawn(Config::default(), move |reactor| {
        let addr = reactor.listen("127.0.0.1:0".parse().unwrap(), || Buggy)?;
        let _ = tx.send(addr);
        Ok(())
    })?;
    let addr = rx.recv().expect("the reactor's address");

    let mut clients: Vec<TcpStream> = (0..100)
        .map(|_| {
            let s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            Ok(s)
        })
        .collect::<std::io::Result<_>>()?;
    // Client 42 trips the bug; its connection ends.
    clients[42].write_all(b"boom")?;
    let mut buf = [0u8; 16];
    let ended = matches!(clients[42].read(&mut buf), Ok(0) | Err(_));
    println!("client 42 sent boom; its connection ended: {ended}");

    // Everyone else is still served.
    let mut served = 0;
    for (i, c) in clients.iter_mut().enumerate().filter(|(i, _)| *i != 42) {
        let msg = format!("hello from {i}\n");
        c.write_all(msg.as_bytes())?;
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got)?;
        assert_eq!(got, msg.as_bytes());
        served += 1;
    }
    let stats = handle
        .call(|r| r.stats().clone())
        .expect("the reactor runs");
    println!(
        "the other {served} clients were served; panics caught: {}, connections open: {}",
        stats.panics, stats.open
    );
    handle.shutdown().expect("the reactor runs");
    drop(clients);
    server.join().expect("the reactor thread")?;
    Ok(())
}
