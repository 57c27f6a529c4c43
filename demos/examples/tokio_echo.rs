//! A TCP echo server on tokio's single-threaded runtime: this is what sockloop's reactor is
//! compared to in `sockloop bench` (driver `tokio`).
//!
//! Both sides do the same work, so the comparison measures the event loops and not the
//! servers: one thread, one epoll instance, non-blocking sockets, `TCP_NODELAY` on every
//! connection, a 1024-connection listen backlog, one shared 64 KiB read buffer, each read
//! echoed back at once. The difference is the programming model: here each connection is
//! an `async` task and tokio's scheduler decides which task runs when its socket is ready;
//! sockloop hand-writes that dispatch (a slab of connections indexed by token).
//!
//! ```text
//! cargo run --release --example tokio_echo -- --addr 127.0.0.1:0
//! listening echo tcp 127.0.0.1:40123
//! ```
//!
//! It prints exactly that one line once bound (the same line `sockloop serve` prints, so
//! the bench tool finds the port the same way), then serves until killed.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Poll};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// The most bytes read per call: the reactor's default read buffer, so both servers make
/// the same number of reads for large messages.
const READ_BUFFER: usize = 64 * 1024;

fn main() -> io::Result<()> {
    let addr = parse_addr().unwrap_or_else(|e| {
        eprintln!("tokio_echo: {e}");
        std::process::exit(2);
    });
    // `current_thread`: every task runs on this thread, like sockloop's single-threaded
    // reactor. (`#[tokio::main]` would start one worker per core instead.)
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(serve(addr))
}

/// `--addr ADDR` (default `127.0.0.1:0`, an ephemeral port), parsed by hand.
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

async fn serve(addr: SocketAddr) -> io::Result<()> {
    // TcpSocket rather than TcpListener::bind, to ask for the same backlog as sockloop.
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(sockloop::net::LISTEN_BACKLOG as u32)?;

    // The one line on stdout, flushed, so a parent process can read the bound port.
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening echo tcp {}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);

    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                // Like the reactor: no Nagle delay on small echoes. (It fails only if the
                // peer is already gone; the task then finds out on its first read.)
                if let Err(e) = stream.set_nodelay(true) {
                    eprintln!("set_nodelay: {e}");
                }
                // One task per connection; it runs on this same thread.
                tokio::spawn(echo(stream));
            }
            // Out of file descriptors (raise `ulimit -n`), or a peer that reset before
            // accept: say so, and let the connection tasks run before trying again.
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

thread_local! {
    /// One read buffer for every connection, as the reactor has: all tasks run on this one
    /// thread, and a task holds the buffer only inside one poll, never across an `.await`.
    /// (A `vec![0; 64 KiB]` per task would cost every idle connection ~54 KB of RSS, where
    /// the reactor's cost ~300 B, and the idle-memory comparison would measure that.)
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUFFER]);
}

/// Echoes everything the peer sends until it closes (or the connection fails).
async fn echo(mut stream: TcpStream) {
    // The part of an echo the socket would not take at once (a slow reader): the only
    // per-connection buffer, empty (unallocated) the rest of the time, like the
    // reactor's per-connection output queue.
    let mut pending = Vec::new();
    loop {
        // Wait until readable, then read into the shared buffer and write straight back,
        // all in one poll. `poll_read` is the path `stream.read(..).await` takes: a read
        // shorter than the buffer tells tokio the socket is drained, so the next wait goes
        // to epoll instead of costing an extra read that would only say EAGAIN.
        let step = poll_fn(|cx| {
            READ_BUF.with_borrow_mut(|buf| {
                let mut read = ReadBuf::new(buf);
                ready!(Pin::new(&mut stream).poll_read(cx, &mut read))?;
                let n = read.filled().len();
                if n == 0 {
                    return Poll::Ready(Ok(0)); // the peer closed its side
                }
                let sent = match stream.try_write(&buf[..n]) {
                    Ok(sent) => sent,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                pending.extend_from_slice(&buf[sent..n]);
                Poll::Ready(Ok(n))
            })
        })
        .await;
        match step {
            Ok(0) | Err(_) => return, // end of stream, or reset: dropping closes the socket
            Ok(_) => {}
        }
        if !pending.is_empty() {
            // The socket pushed back: wait for room (this task only; others keep going).
            if stream.write_all(&pending).await.is_err() {
                return;
            }
            pending = Vec::new(); // give the memory back while idle
        }
    }
}
