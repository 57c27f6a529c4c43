//! Socket set-up shared by every driver, and facts about the process read from the OS.

use socket2::{Domain, Protocol as SockProto, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// The listen backlog sockloop asks for. std and mio use 128, which a burst of a few
/// hundred connects overflows (the kernel then drops SYNs and the client retries after a
/// second); the kernel caps this at `net.core.somaxconn` (4096 on current Linux).
pub const LISTEN_BACKLOG: i32 = 1024;

/// Binds a TCP listener on `addr` with `SO_REUSEADDR` (so a restarted server can rebind
/// while old connections sit in TIME_WAIT) and a [`LISTEN_BACKLOG`] backlog. The socket
/// is left blocking; the reactor switches it to non-blocking itself.
///
/// # Errors
///
/// As [`bind_tcp_with`].
pub fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    bind_tcp_with(addr, &SocketOptions::default())
}

/// [`bind_tcp`] with `opts`' buffer sizes set before `listen` (where the kernel reads them
/// to choose the window scale of every connection accepted from it).
///
/// # Errors
///
/// Any failure of `socket`, `setsockopt`, `bind` (the address is in use, say) or `listen`.
pub fn bind_tcp_with(addr: SocketAddr, opts: &SocketOptions) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(SockProto::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // Bind v6 only: `[::]` should not silently also take the v4 port.
        socket.set_only_v6(true)?;
    }
    opts.apply_buffers(&socket)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Socket options for every socket a reactor makes: its listeners (and the connections
/// accepted from them), its outgoing connections, and its datagram sockets. One value, in
/// [`Config::socket`](crate::reactor::Config::socket).
///
/// ```
/// use sockloop::net::SocketOptions;
/// use sockloop::reactor::{Config, Reactor};
/// use std::time::Duration;
///
/// let cfg = Config {
///     socket: SocketOptions {
///         recv_buffer: Some(4 << 20), // a UDP burst waits in the kernel, not lost
///         keepalive: Some(Duration::from_secs(60)),
///         ..SocketOptions::default()
///     },
///     ..Config::default()
/// };
/// let reactor = Reactor::with_config(cfg)?;
/// # drop(reactor);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// `SO_RCVBUF` in bytes, or the kernel's default (which autotunes TCP). The kernel
    /// doubles what it is given and caps it at `net.core.rmem_max`.
    pub recv_buffer: Option<usize>,
    /// `SO_SNDBUF` in bytes, or the kernel's default.
    pub send_buffer: Option<usize>,
    /// TCP keepalive: probes start after this long without traffic (`TCP_KEEPIDLE`), so a
    /// peer that vanished is found; `None` (the default) sends none.
    pub keepalive: Option<Duration>,
    /// `TCP_NODELAY` on TCP connections: on by default, since the demos' replies are small
    /// and latency matters more than packet count; off lets Nagle coalesce small writes.
    pub nodelay: bool,
    /// `SO_REUSEPORT` on listeners and datagram sockets: several sockets (one per reactor
    /// of a [`Group`](crate::reactor::Group)) bind the same address and the kernel spreads
    /// new connections across them. Off by default.
    pub reuse_port: bool,
}

impl Default for SocketOptions {
    fn default() -> SocketOptions {
        SocketOptions {
            recv_buffer: None,
            send_buffer: None,
            keepalive: None,
            nodelay: true,
            reuse_port: false,
        }
    }
}

impl SocketOptions {
    /// Sets the buffer sizes asked for on any socket.
    pub(crate) fn apply_buffers(&self, sock: &Socket) -> io::Result<()> {
        if let Some(n) = self.recv_buffer {
            sock.set_recv_buffer_size(n)?;
        }
        if let Some(n) = self.send_buffer {
            sock.set_send_buffer_size(n)?;
        }
        Ok(())
    }

    /// Sets what applies to one TCP connection: buffers (inherited from the listener on
    /// accept, so only dialled connections need them), NODELAY and keepalive.
    pub(crate) fn apply_tcp(&self, sock: &Socket, buffers: bool) -> io::Result<()> {
        if buffers {
            self.apply_buffers(sock)?;
        }
        sock.set_tcp_nodelay(self.nodelay)?;
        if let Some(idle) = self.keepalive {
            sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle))?;
        }
        Ok(())
    }
}

/// The soft limit on open file descriptors for this process (`RLIMIT_NOFILE`), if known.
pub fn fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    // rlim_t is u64 on Linux but not on every Unix.
    #[allow(clippy::unnecessary_cast)]
    (rc == 0).then_some(lim.rlim_cur as u64)
}

/// The number of file descriptors this process has open, counted in `/proc/self/fd`
/// (Linux only; `None` elsewhere).
pub fn open_fds() -> Option<usize> {
    // The directory handle itself is one of the entries; do not count it.
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count().saturating_sub(1))
}

/// Returns true if and only if `e` means the process or system is out of a resource that
/// frees up when connections close: too many open files, or no buffer memory.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Where a stream or datagram socket lives: an IP socket address or a Unix socket path.
///
/// Parsed from text by [`Endpoint::parse`]: anything containing a `/` is a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix domain socket path. Empty for an unnamed socket (a client that never bound).
    Unix(std::path::PathBuf),
}

impl Endpoint {
    /// Parses `127.0.0.1:7000`, `[::1]:7000` or a path such as `/tmp/x.sock` / `./x.sock`.
    ///
    /// # Errors
    ///
    /// A message naming the text, if it is neither a socket address nor a path.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if text.contains('/') {
            Ok(Endpoint::Unix(text.into()))
        } else {
            text.parse().map(Endpoint::Inet).map_err(|_| {
                format!("{text:?} is neither an IP address with a port (127.0.0.1:7000, [::1]:7000) nor a path containing '/'")
            })
        }
    }

    /// The IP socket address, if this is one.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            Endpoint::Inet(a) => Some(*a),
            Endpoint::Unix(_) => None,
        }
    }

    pub(crate) fn from_unix(addr: &std::os::unix::net::SocketAddr) -> Endpoint {
        Endpoint::Unix(addr.as_pathname().map(Into::into).unwrap_or_default())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Inet(a) => write!(f, "{a}"),
            Endpoint::Unix(p) if p.as_os_str().is_empty() => f.write_str("(unnamed unix socket)"),
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Endpoint {
        Endpoint::Inet(a)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Endpoint, String> {
        Endpoint::parse(s)
    }
}

/// Prepares `path` for a Unix socket to bind there.
///
/// A socket file left behind by a server that died is *stale*: nothing accepts on it, so
/// a connect is refused. Such a file is removed. A file some live server still accepts
/// on, or a file that is not a socket at all, is left alone and reported as an error.
/// The probe is a real connect, so a live server sees one connection that closes at once;
/// nothing short of that tells a live socket from a dead one.
///
/// # Errors
///
/// `AddrInUse` if a server answers at `path`; any error removing the stale file.
pub fn clear_stale_unix_socket(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not touching it",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running server", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale socket file {}", path.display());
            std::fs::remove_file(path)
        }
        // A datagram socket file answers a stream connect with "wrong type" (EPROTOTYPE):
        // probe it with a datagram instead.
        Err(_) => {
            let probe = std::os::unix::net::UnixDatagram::unbound()?;
            match probe.connect(path) {
                Ok(()) => Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running server", path.display()),
                )),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    log::info!("removing stale socket file {}", path.display());
                    std::fs::remove_file(path)
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// Lets a repeated log line through at most once a second, counting the ones it held back
/// (accept failures at the fd limit recur ten times a second under churn).
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Option<std::time::Instant>,
    quiet: u64,
}

impl Throttle {
    /// At `now`: `Some(n)` if the line may be logged (`n` were held back since the last),
    /// `None` if it is held back.
    pub fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(last)
                if now.saturating_duration_since(last) < std::time::Duration::from_secs(1) =>
            {
                self.quiet += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.quiet))
            }
        }
    }
}

/// Receives one datagram on `sock` into `buf` and returns its *whole* length (larger than
/// `buf` when the kernel truncated it: `MSG_TRUNC` asks for the real length, so
/// truncation is known rather than guessed from a full buffer) and its sender. `unix`
/// says how to read the sender's address. Shared by the reactor and the blocking drivers.
pub(crate) fn recv_datagram(
    sock: socket2::SockRef<'_>,
    buf: &mut [u8],
    unix: bool,
) -> std::io::Result<(usize, Endpoint)> {
    // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and the bytes are
    // initialised already; recvfrom(2) only writes initialised bytes into them, so they
    // stay valid `u8`s.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    let (n, from) = sock.recv_from_with_flags(uninit, libc::MSG_TRUNC)?;
    let from = if unix {
        Endpoint::Unix(from.as_pathname().map(Into::into).unwrap_or_default())
    } else {
        Endpoint::Inet(from.as_socket().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a UDP datagram from a non-IP address",
            )
        })?)
    };
    Ok((n, from))
}

/// `recv(fd, buf, 0)` as the system call itself.
///
/// glibc's `recv` and `send` are pthread cancellation points: in a process with more
/// than one thread (the CLI's reactor has a signal thread and a waiting main thread
/// beside it) each call enables and disables asynchronous cancellation around the
/// syscall, about 75 instructions per echo message measured with callgrind. Nothing in
/// sockloop uses thread cancellation, so the reactor's stream I/O calls the kernel
/// directly.
pub(crate) fn recv_raw(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call, and a
    // null address with a zero length asks for no sender address.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `send(fd, buf, MSG_NOSIGNAL)` as the system call itself (see [`recv_raw`]):
/// `MSG_NOSIGNAL` turns a write to a closed peer into `EPIPE` rather than `SIGPIPE`, as
/// std's own `send` does.
pub(crate) fn send_raw(fd: std::os::fd::RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call, and a
    // null address with a zero length sends on the connected socket.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::Throttle;
    use std::time::{Duration, Instant};

    #[test]
    fn one_line_a_second_with_a_count_of_the_rest() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        assert_eq!(t.allow(t0), Some(0));
        for ms in [100, 200, 900] {
            assert_eq!(t.allow(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(t.allow(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(t.allow(t0 + Duration::from_millis(1500)), None);
        assert_eq!(t.allow(t0 + Duration::from_millis(2500)), Some(1));
    }
}
