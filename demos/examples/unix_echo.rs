//! Echo over Unix domain sockets: a stream listener and a datagram socket, both at paths
//! under the temp directory, and what happens to the socket files they leave behind.
//!
//! Run: `cargo run --example unix_echo`; add `-- --serve` to keep serving afterwards
//! (try `nc -U <path>`) until Ctrl-C. `RUST_LOG=debug` shows the stale-file check.

use sockloop::net::Endpoint;
use sockloop::reactor::{Reactor, Stats, Timeouts};
use sockloop_demos::proto::echo::{DatagramEcho, Echo};
use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// Turns the loop until `done` holds. Client and server share this thread, so the
/// client's bytes just wait in the kernel until the loop turns and answers them.
fn turn_until(reactor: &mut Reactor, done: impl Fn(&Stats) -> bool) -> std::io::Result<()> {
    let give_up = Instant::now() + Duration::from_secs(2);
    while !done(reactor.stats()) && Instant::now() < give_up {
        reactor.run_once(Some(Duration::from_millis(50)))?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let serve = std::env::args().any(|a| a == "--serve");
    let pid = std::process::id();
    let path = |what: &str| std::env::temp_dir().join(format!("sockloop-{pid}-{what}.sock"));
    let (stream_path, dgram_path, client_path) = (path("stream"), path("dgram"), path("client"));

    // A Unix socket's address is a file, and closing the socket does not delete it. Here a
    // std listener plays a server that died: its file stays, and nothing accepts on it.
    drop(UnixListener::bind(&stream_path)?);
    println!(
        "stale: {} left behind: {}",
        stream_path.display(),
        stream_path.exists()
    );

    // A plain bind() would now fail with "address in use". The reactor first probes the
    // file: a refused connect proves it stale, so it is removed and the bind goes ahead.
    let mut reactor = Reactor::new()?;
    let at = Endpoint::Unix(stream_path.clone());
    reactor.listen_with(&at, Timeouts::default(), || Echo)?;
    println!("stream echo on {} (stale file replaced)", at);

    // A file some live server still accepts on is never taken over, not even by itself.
    match reactor.listen_with(&at, Timeouts::default(), || Echo) {
        Err(e) => println!("second bind while the first still serves: refused: {e}"),
        Ok(_) => unreachable!("two listeners on one path"),
    }

    let mut client = UnixStream::connect(&stream_path)?;
    client.write_all(b"ping over a unix stream")?;
    turn_until(&mut reactor, |s| s.bytes_out >= 23)?;
    let mut reply = [0u8; 23];
    client.set_read_timeout(Some(Duration::from_secs(1)))?;
    client.read_exact(&mut reply)?;
    println!("stream client got {:?}", String::from_utf8_lossy(&reply));
    drop(client); // or a graceful shutdown would wait for it (up to the linger time)

    let dgram_at = Endpoint::Unix(dgram_path.clone());
    reactor.bind_datagram(&dgram_at, DatagramEcho)?;
    println!("datagram echo on {}", dgram_at);
    // The client binds a path of its own: a reply needs an address to go to, and an
    // unnamed (never bound) Unix datagram socket has none.
    let _ = std::fs::remove_file(&client_path);
    let dclient = UnixDatagram::bind(&client_path)?;
    dclient.send_to(b"ping over unix datagrams", &dgram_path)?;
    turn_until(&mut reactor, |s| s.datagrams_out >= 1)?;
    let mut buf = [0u8; 64];
    dclient.set_read_timeout(Some(Duration::from_secs(1)))?;
    let (n, from) = dclient.recv_from(&mut buf)?;
    let from = from.as_pathname().map(|p| p.display().to_string());
    println!(
        "datagram client got {:?} from {from:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(dclient);
    std::fs::remove_file(&client_path)?; // ours to clean up: std leaves it, like any bind

    if serve {
        let handle = reactor.handle();
        let signals = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
        let mut signals = signal_hook::iterator::Signals::new(signals)?;
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                let _ = handle.shutdown();
            }
        });
        println!("serving; Ctrl-C to stop");
        reactor.run()?;
    }

    // The reactor made these files, so closing its sockets removes them: the next run
    // finds nothing stale.
    drop(reactor);
    for p in [&stream_path, &dgram_path] {
        println!(
            "after the reactor is dropped, {} exists: {}",
            p.display(),
            p.exists()
        );
    }
    Ok(())
}
