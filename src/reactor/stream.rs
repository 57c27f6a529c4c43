//! The sockets the reactor drives, TCP or Unix, behind one type each so that connections
//! and listeners run the same code paths for both families.

use crate::net::{Endpoint, SocketOptions};
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;

/// A connected stream socket.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    /// The pending socket error (`SO_ERROR`): how a non-blocking connect reports failure.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// The peer's address (`getpeername`), if connected.
    pub fn peer_endpoint(&self) -> Option<Endpoint> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok().map(Endpoint::Inet),
            Stream::Unix(s) => s.peer_addr().ok().map(|a| Endpoint::from_unix(&a)),
        }
    }

    /// This end's address (`getsockname`).
    pub fn local_endpoint(&self) -> Option<Endpoint> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok().map(Endpoint::Inet),
            Stream::Unix(s) => s.local_addr().ok().map(|a| Endpoint::from_unix(&a)),
        }
    }

    /// Returns true if and only if the socket is connected (it has a peer address).
    pub fn is_connected(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.peer_addr().is_ok(),
            Stream::Unix(s) => s.peer_addr().is_ok(),
        }
    }
}

impl Stream {
    fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

// The system calls themselves, not glibc's cancellation-point wrappers (see
// `net::recv_raw`); mio's streams would call those wrappers through std.
impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::net::recv_raw(self.fd(), buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::net::send_raw(self.fd(), buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// A listening stream socket.
pub(crate) enum ListenSocket {
    Tcp(TcpListener),
    /// The path is removed when the listener is dropped: we created the file.
    Unix(UnixListener, PathBuf),
}

impl ListenSocket {
    pub fn accept(&self, opts: &SocketOptions) -> io::Result<(Stream, Endpoint)> {
        match self {
            ListenSocket::Tcp(l) => {
                let (s, peer) = l.accept()?;
                if let Err(e) = opts.apply_tcp(&socket2::SockRef::from(&s), false) {
                    log::debug!("socket options for {peer}: {e}");
                }
                Ok((Stream::Tcp(s), Endpoint::Inet(peer)))
            }
            ListenSocket::Unix(l, _) => {
                let (s, peer) = l.accept()?;
                Ok((Stream::Unix(s), Endpoint::from_unix(&peer)))
            }
        }
    }
}

impl Drop for ListenSocket {
    fn drop(&mut self) {
        if let ListenSocket::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Source for ListenSocket {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(s) => s.register(r, t, i),
            ListenSocket::Unix(s, _) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(s) => s.reregister(r, t, i),
            ListenSocket::Unix(s, _) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            ListenSocket::Tcp(s) => s.deregister(r),
            ListenSocket::Unix(s, _) => s.deregister(r),
        }
    }
}
