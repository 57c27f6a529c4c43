//! An HTTP/1.1 `Hello, World` server: hyper on tokio's single-threaded runtime, the peer
//! sockloop's `http` demo is compared to in `sockloop bench` (driver `tokio`, HTTP
//! scenarios).
//!
//! Both sides send the same response to every request: `200 OK`, `Content-Type:
//! text/plain`, body `Hello, World` (hyper adds `Date` and `Content-Length`), with
//! keep-alive, `TCP_NODELAY` on every connection and a 1024-connection listen backlog.
//!
//! ```text
//! cargo run --release --example hyper_hello -- --addr 127.0.0.1:0
//! listening http tcp 127.0.0.1:40123
//! ```
//!
//! It prints exactly that one line once bound (the line `sockloop serve http` prints, so
//! the bench tool finds the port the same way), then serves until killed.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::{self, Write};
use std::net::SocketAddr;
use tokio::net::TcpSocket;

fn main() -> io::Result<()> {
    let addr = parse_addr().unwrap_or_else(|e| {
        eprintln!("hyper_hello: {e}");
        std::process::exit(2);
    });
    // `current_thread`: every connection task runs on this thread, like sockloop's
    // single-threaded reactor.
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

/// Every request, whatever its method or path, gets the same `200 OK`.
async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(b"Hello, World")));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(res)
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
    writeln!(stdout, "listening http tcp {}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);

    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                // Like the reactor: no Nagle delay on small responses.
                if let Err(e) = stream.set_nodelay(true) {
                    eprintln!("set_nodelay: {e}");
                }
                // One task per connection, on this same thread; keep-alive is hyper's
                // default, spelled out. A failed connection (reset, bad request) just ends.
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service_fn(hello))
                        .await;
                });
            }
            // Out of file descriptors, or a peer that reset before accept: say so, and
            // let the connection tasks run before trying again.
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::task::yield_now().await;
            }
        }
    }
}
