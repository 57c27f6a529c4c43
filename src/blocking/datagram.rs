//! Datagram protocols on a blocking socket: one `recv_from` loop.

use crate::net::Endpoint;
use crate::proto::DatagramProtocol;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Serves a datagram protocol on a blocking socket until `stop` is set (checked between
/// datagrams; the socket's read timeout bounds the wait). Errors of single datagrams
/// are logged and skipped, so it returns `Ok` once stopped.
///
/// # Errors
///
/// None today; the `Result` leaves room for a socket that fails for good.
pub fn serve_datagrams<P: DatagramProtocol + ?Sized>(
    sock: &BlockingDatagram,
    proto: &mut P,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut replies = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(pair) => pair,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                log::debug!("recv_from: {e}");
                continue;
            }
        };
        if n > buf.len() {
            log::warn!(
                "dropped a datagram from {from} of {n} bytes: larger than {} bytes",
                buf.len()
            );
            continue;
        }
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            proto.handle_datagram(&from, &buf[..n], Instant::now(), &mut replies)
        }));
        if let Err(payload) = handled {
            // That datagram's end, not the socket's (as in the reactor).
            replies.clear();
            log::error!(
                "the datagram protocol panicked on a datagram from {from}: {}; dropped it",
                crate::error::panic_message(&*payload)
            );
        }
        for t in replies.drain(..) {
            if let Err(e) = sock.send_to(&t.bytes, &t.to) {
                log::debug!("send_to {}: {e}", t.to);
            }
        }
    }
    Ok(())
}

/// A blocking datagram socket: UDP or Unix datagram (whose file is removed on drop).
pub enum BlockingDatagram {
    /// A UDP socket.
    Udp(std::net::UdpSocket),
    /// A Unix datagram socket and the path it is bound to.
    Unix(UnixDatagram, PathBuf),
}

impl BlockingDatagram {
    /// Binds at `at`, with a read timeout of `poll` so a stop request is noticed.
    ///
    /// # Errors
    ///
    /// If the socket cannot be bound (the address is in use, a live socket file is at the
    /// path) or its timeout set.
    pub fn bind(at: &Endpoint, poll: Duration) -> io::Result<BlockingDatagram> {
        let sock = match at {
            Endpoint::Inet(a) => BlockingDatagram::Udp(std::net::UdpSocket::bind(a)?),
            Endpoint::Unix(p) => {
                crate::net::clear_stale_unix_socket(p)?;
                BlockingDatagram::Unix(UnixDatagram::bind(p)?, p.clone())
            }
        };
        match &sock {
            BlockingDatagram::Udp(s) => s.set_read_timeout(Some(poll))?,
            BlockingDatagram::Unix(s, _) => s.set_read_timeout(Some(poll))?,
        }
        Ok(sock)
    }

    /// The bound endpoint.
    ///
    /// # Errors
    ///
    /// If the OS cannot say (`getsockname` failed).
    pub fn local_addr(&self) -> io::Result<Endpoint> {
        match self {
            BlockingDatagram::Udp(s) => s.local_addr().map(Endpoint::Inet),
            BlockingDatagram::Unix(_, p) => Ok(Endpoint::Unix(p.clone())),
        }
    }

    /// Receives one datagram into `buf`: its whole length (over `buf.len()` when
    /// truncated) and its sender ([`crate::net::recv_datagram`]).
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Endpoint)> {
        match self {
            BlockingDatagram::Udp(s) => {
                crate::net::recv_datagram(socket2::SockRef::from(s), buf, false)
            }
            BlockingDatagram::Unix(s, _) => {
                crate::net::recv_datagram(socket2::SockRef::from(s), buf, true)
            }
        }
    }

    fn send_to(&self, bytes: &[u8], to: &Endpoint) -> io::Result<usize> {
        match (self, to) {
            (BlockingDatagram::Udp(s), Endpoint::Inet(a)) => s.send_to(bytes, a),
            (BlockingDatagram::Unix(s, _), Endpoint::Unix(p)) if !p.as_os_str().is_empty() => {
                s.send_to(bytes, p)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot answer {to} from this socket"),
            )),
        }
    }
}

impl Drop for BlockingDatagram {
    fn drop(&mut self) {
        if let BlockingDatagram::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}
