//! Socket set-up shared by every driver, and facts about the process read from the OS.

use socket2::{Domain, Protocol as SockProto, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// The listen backlog sockloop asks for. std and mio use 128, which a burst of a few
/// hundred connects overflows (the kernel then drops SYNs and the client retries after a
/// second); the kernel caps this at `net.core.somaxconn` (4096 on current Linux).
pub const LISTEN_BACKLOG: i32 = 1024;

/// Binds a TCP listener on `addr` with `SO_REUSEADDR` (so a restarted server can rebind
/// while old connections sit in TIME_WAIT) and a [`LISTEN_BACKLOG`] backlog. The socket
/// is left blocking; the reactor switches it to non-blocking itself.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
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
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
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
