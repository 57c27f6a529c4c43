//! A TCP echo server written directly on mio: the floor sockloop's reactor is compared
//! against in `sockloop bench` (driver `mio`).
//!
//! This is the least an event loop can do to echo correctly, with nothing of sockloop in
//! the way: one thread, one epoll instance in edge-triggered mode, a [`Slab`] of
//! connections indexed by token, `TCP_NODELAY` on every connection, the reactor's
//! 1024-connection listen backlog, one shared 64 KiB read buffer. Each readable event
//! reads until `WouldBlock` and writes every read straight back; what the socket refuses
//! waits in that connection's `Vec`, and only then is `WRITABLE` registered. A connection
//! closes on end of stream or on any error. No timeouts, limits or graceful shutdown: what
//! the reactor costs above this is the price of those and of its abstractions.
//!
//! ```text
//! cargo run --release --example mio_echo -- --addr 127.0.0.1:0
//! listening echo tcp 127.0.0.1:40123
//! ```
//!
//! It prints exactly that one line once bound (the line `sockloop serve` and tokio_echo
//! print, so the bench tool finds the port the same way), then serves until killed
//! (SIGINT or SIGTERM end it with the default action, as they end tokio_echo).

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

/// The most bytes read per call: the reactor's default read buffer, as in tokio_echo.
const READ_BUFFER: usize = 64 * 1024;

/// The listener's token; connections are `Token(slab key)`.
const LISTENER: Token = Token(usize::MAX);

/// One connection: the socket and what it has not yet taken of its echoes.
struct Conn {
    stream: TcpStream,
    /// Bytes waiting for room in the socket; empty (unallocated) the rest of the time.
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let addr = parse_addr().unwrap_or_else(|e| {
        eprintln!("mio_echo: {e}");
        std::process::exit(2);
    });
    // sockloop's own bind (SO_REUSEADDR, backlog 1024): mio's `bind` asks for only 128.
    let listener = sockloop::net::bind_tcp(addr)?;
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;

    // The one line on stdout, flushed, so a parent process can read the bound port.
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening echo tcp {}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);

    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0; READ_BUFFER];
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            if event.token() == LISTENER {
                accept(&poll, &mut listener, &mut conns)?;
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue; // closed earlier in this batch
            };
            // Edge-triggered: on any event, do everything the socket allows now.
            if serve(&poll, Token(key), conn, &mut buf).is_err() {
                let mut conn = conns.remove(key);
                let _ = poll.registry().deregister(&mut conn.stream);
                // Dropping the stream closes it.
            }
        }
    }
}

/// Accepts until `WouldBlock`. Out of file descriptors (or a peer that reset before
/// accept): say so and let the connections run before trying again, as tokio_echo does.
fn accept(poll: &Poll, listener: &mut TcpListener, conns: &mut Slab<Conn>) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((mut stream, _peer)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    eprintln!("set_nodelay: {e}");
                }
                let entry = conns.vacant_entry();
                poll.registry()
                    .register(&mut stream, Token(entry.key()), Interest::READABLE)?;
                entry.insert(Conn {
                    stream,
                    pending: Vec::new(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("accept: {e}");
                return Ok(());
            }
        }
    }
}

/// Flushes what waits, then reads until `WouldBlock`, echoing each read. `Err(())`: close.
fn serve(poll: &Poll, token: Token, conn: &mut Conn, buf: &mut [u8]) -> Result<(), ()> {
    let was_waiting = !conn.pending.is_empty();
    if was_waiting {
        let sent = write_some(&mut conn.stream, &conn.pending)?;
        conn.pending.drain(..sent);
    }
    // While an echo waits, read nothing more: a peer that does not read its echoes must
    // not make the server buffer without bound (its data stays in the kernel's buffers).
    if conn.pending.is_empty() {
        loop {
            let n = match conn.stream.read(buf) {
                Ok(0) => return Err(()), // the peer closed its side
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(()),
            };
            let sent = write_some(&mut conn.stream, &buf[..n])?;
            if sent < n {
                conn.pending.extend_from_slice(&buf[sent..n]);
                break;
            }
        }
    }
    let waiting = !conn.pending.is_empty();
    if waiting != was_waiting {
        let interest = if waiting {
            Interest::READABLE | Interest::WRITABLE
        } else {
            conn.pending = Vec::new(); // give the memory back while idle
            Interest::READABLE
        };
        poll.registry()
            .reregister(&mut conn.stream, token, interest)
            .map_err(|_| ())?;
    }
    Ok(())
}

/// Writes as much of `data` as the socket takes now: the count, or `Err(())` to close.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> Result<usize, ()> {
    let mut sent = 0;
    while sent < data.len() {
        match stream.write(&data[sent..]) {
            Ok(0) => return Err(()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    Ok(sent)
}

/// `--addr ADDR` (default `127.0.0.1:0`, an ephemeral port), parsed by hand as in
/// tokio_echo.
fn parse_addr() -> io::Result<SocketAddr> {
    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let mut addr = "127.0.0.1:0".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                addr = args
                    .next()
                    .ok_or_else(|| bad("--addr needs a value".into()))?
            }
            other => {
                return Err(bad(format!(
                    "unknown argument {other:?}; usage: --addr ADDR"
                )))
            }
        }
    }
    addr.parse()
        .map_err(|e| bad(format!("--addr {addr:?}: {e}")))
}
