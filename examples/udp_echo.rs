//! A UDP echo server on the reactor, with a client round trip over IPv4 and IPv6.
//!
//! Run: `cargo run --example udp_echo`; add `-- --serve` to keep serving afterwards
//! (try `nc -u 127.0.0.1 <port>`) until Ctrl-C. `RUST_LOG=trace` shows each recv and send.

use sockloop::net::Endpoint;
use sockloop::proto::{DatagramProtocol, Transmit};
use sockloop::reactor::Reactor;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Sends each datagram back to whoever sent it. There is no connection and no stream:
/// every datagram arrives whole, with its sender, and one machine serves all peers.
struct Echo;

impl DatagramProtocol for Echo {
    fn handle_datagram(
        &mut self,
        from: &Endpoint,
        bytes: &[u8],
        _: Instant,
        out: &mut Vec<Transmit>,
    ) {
        println!("server: {} bytes from {from}, echoing", bytes.len());
        out.push(Transmit {
            to: from.clone(),
            bytes: bytes.to_vec(),
        });
    }
}

/// Sends one datagram from a plain std socket and waits for its echo. The loop runs on
/// this same thread, so between the send and the reply we must turn it ourselves: until
/// then the datagram just waits in the server socket's receive queue.
fn round_trip(reactor: &mut Reactor, server: SocketAddr, msg: &[u8]) -> std::io::Result<()> {
    let local = if server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let client = UdpSocket::bind(local)?;
    client.send_to(msg, server)?;
    println!(
        "client {}: sent {:?} to {server}",
        client.local_addr()?,
        String::from_utf8_lossy(msg)
    );

    let sent_before = reactor.stats().datagrams_out;
    let give_up = Instant::now() + Duration::from_secs(2);
    while reactor.stats().datagrams_out == sent_before && Instant::now() < give_up {
        reactor.run_once(Some(Duration::from_millis(50)))?;
    }
    // UDP promises nothing: a lost reply would simply never come, hence the timeout.
    client.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = [0u8; 1500];
    let (n, from) = client.recv_from(&mut buf)?;
    println!(
        "client: got {:?} back from {from}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(&buf[..n], msg);
    Ok(())
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let serve = std::env::args().any(|a| a == "--serve");
    let mut reactor = Reactor::new()?;

    let mut bound = Vec::new();
    for at in ["127.0.0.1:0", "[::1]:0"] {
        // Port 0: the kernel picks a free port; the returned endpoint has the real one.
        match reactor.bind_datagram(&Endpoint::parse(at).unwrap(), Echo) {
            Ok((_token, Endpoint::Inet(addr))) => bound.push(addr),
            Ok((_, other)) => unreachable!("an IP address bound as {other}"),
            // Containers often have no IPv6 loopback: say so and carry on with IPv4.
            Err(e) => println!("cannot bind {at} ({e}); skipping that family"),
        }
    }
    for &addr in &bound {
        println!("--- udp echo on {addr}");
        round_trip(&mut reactor, addr, b"ping over udp")?;
    }
    let stats = reactor.stats();
    println!(
        "server stats: {} datagrams in, {} out",
        stats.datagrams_in, stats.datagrams_out
    );

    if serve {
        // Ctrl-C (or SIGTERM) asks for a graceful shutdown through the cross-thread handle;
        // with no stream connections to drain, run() returns at once and closes the sockets.
        let handle = reactor.handle();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?;
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                let _ = handle.shutdown();
            }
        });
        println!("serving on {bound:?}; Ctrl-C to stop");
        reactor.run()?;
        println!("stopped");
    }
    Ok(())
}
