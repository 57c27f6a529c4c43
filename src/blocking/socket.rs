//! The blocking sockets the drivers serve: streams and listeners, TCP or Unix.

use crate::net::Endpoint;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

/// A blocking stream socket: TCP or Unix.
pub trait BlockingStream: Read + Write + Send + 'static {
    /// Shuts down one or both directions (`shutdown(2)`).
    ///
    /// # Errors
    ///
    /// The OS's (`ENOTCONN` once the peer is gone).
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// Bounds how long `read` blocks (`None`: forever).
    ///
    /// # Errors
    ///
    /// The OS's.
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// Bounds how long `write` blocks (`None`: forever).
    ///
    /// # Errors
    ///
    /// The OS's.
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// A second handle to the same socket (for a mailbox's writer).
    ///
    /// # Errors
    ///
    /// The OS's (`EMFILE` when out of fds).
    fn try_clone_boxed(&self) -> io::Result<Box<dyn BlockingStream>>;
    /// The socket's fd, for [`BlockingServer::stop`](super::BlockingServer::stop) to shut it down without a `dup`.
    fn raw_fd(&self) -> std::os::fd::RawFd;
    /// This end's address (`getsockname`), told to the protocol in `handle_open`.
    fn local_endpoint(&self) -> Option<Endpoint> {
        None
    }
}

impl BlockingStream for TcpStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, t)
    }
    fn try_clone_boxed(&self) -> io::Result<Box<dyn BlockingStream>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
    fn local_endpoint(&self) -> Option<Endpoint> {
        self.local_addr().ok().map(Endpoint::Inet)
    }
}

impl BlockingStream for UnixStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        UnixStream::shutdown(self, how)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, t)
    }
    fn try_clone_boxed(&self) -> io::Result<Box<dyn BlockingStream>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

/// A blocking listening socket: TCP or Unix (whose file is removed on drop).
pub enum BlockingListener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix stream listener and the path it is bound to.
    Unix(UnixListener, PathBuf),
}

impl BlockingListener {
    /// Binds a listener at `at`: TCP with sockloop's backlog, or a Unix socket path
    /// (a stale socket file is removed first).
    ///
    /// # Errors
    ///
    /// If the socket cannot be bound or listen (the address is in use, a live socket file
    /// is at the path).
    pub fn bind(at: &Endpoint) -> io::Result<BlockingListener> {
        match at {
            Endpoint::Inet(a) => Ok(BlockingListener::Tcp(crate::net::bind_tcp(*a)?)),
            Endpoint::Unix(p) => {
                crate::net::clear_stale_unix_socket(p)?;
                Ok(BlockingListener::Unix(UnixListener::bind(p)?, p.clone()))
            }
        }
    }

    /// The bound endpoint.
    ///
    /// # Errors
    ///
    /// If the OS cannot say (`getsockname` failed).
    pub fn local_addr(&self) -> io::Result<Endpoint> {
        match self {
            BlockingListener::Tcp(l) => l.local_addr().map(Endpoint::Inet),
            BlockingListener::Unix(_, p) => Ok(Endpoint::Unix(p.clone())),
        }
    }

    pub(super) fn accept(&self) -> io::Result<(Box<dyn BlockingStream>, Endpoint)> {
        match self {
            BlockingListener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                let _ = s.set_nodelay(true);
                Ok((Box::new(s), Endpoint::Inet(peer)))
            }
            BlockingListener::Unix(l, _) => {
                let (s, peer) = l.accept()?;
                Ok((Box::new(s), Endpoint::from_unix(&peer)))
            }
        }
    }
}

impl Drop for BlockingListener {
    fn drop(&mut self) {
        if let BlockingListener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Stands in for a socket that could not be cloned: every operation fails.
pub(super) struct DeadStream;

impl Read for DeadStream {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::NotConnected.into())
    }
}

impl Write for DeadStream {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::NotConnected.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlockingStream for DeadStream {
    fn shutdown(&self, _: Shutdown) -> io::Result<()> {
        Ok(())
    }
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn set_write_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn try_clone_boxed(&self) -> io::Result<Box<dyn BlockingStream>> {
        Ok(Box::new(DeadStream))
    }
    fn raw_fd(&self) -> std::os::fd::RawFd {
        -1
    }
}
