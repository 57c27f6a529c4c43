//! Resource limits, on `sockloop serve` child processes: running out of file descriptors
//! (`EMFILE`) and the `--max-connections` flag.
//!
//! The fd limit is lowered in the child only (`setrlimit` in `pre_exec`), so the test
//! process keeps its own.

use crate::support::{
    assert_silent, connect, round_trip, wait_until, Driver, ServerProc, DEADLINE,
};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// The fd limit (soft and hard) of the servers in the `EMFILE` tests.
const NOFILE: u64 = 40;

/// Read and write timeout of the clients here: a server that hangs fails the test well
/// within its 20 s.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A client with [`IO_TIMEOUT`] timeouts.
fn client(addr: std::net::SocketAddr) -> TcpStream {
    let s = connect(addr);
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Starts `sockloop serve echo --driver <driver>` with `RLIMIT_NOFILE` lowered to `nofile`.
fn serve_with_nofile(driver: Driver, nofile: u64) -> ServerProc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockloop"));
    cmd.args(["serve", "echo", "--driver", &driver.to_string()])
        .args(["--addr", "127.0.0.1:0"])
        // The default limit is the fd limit minus 32: with a tiny rlimit it would be 1,
        // and the connection limit, not the fd limit, would be what the test hits.
        .args(["--max-connections", "1000"]);
    // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile as libc::rlim_t,
                rlim_max: nofile as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = ServerProc::spawn(cmd);
    wait_for_signal_handlers(&server);
    server
}

/// Waits until the server has installed its SIGINT/SIGTERM handlers. `sockloop serve`
/// prints its `listening` line first and opens the signal pipe (two fds) just after: a
/// test that fills the fd table at once could make that fail, so it waits for the
/// handlers, which are installed after the pipe exists.
fn wait_for_signal_handlers(server: &ServerProc) {
    let want = (1u64 << (libc::SIGINT - 1)) | (1u64 << (libc::SIGTERM - 1));
    wait_until(DEADLINE, "the server installs its signal handlers", || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("SigCgt:"))?;
        let mask = u64::from_str_radix(line["SigCgt:".len()..].trim(), 16).ok()?;
        (mask & want == want).then_some(())
    });
}

/// How many of the server's fd slots below `limit` are taken. An fd the server inherited
/// with a number at or above its limit (the test harness may leak one) is open but takes
/// no slot `accept` could use, so [`ServerProc::open_fds`] would overcount.
fn fd_slots_used(server: &ServerProc, limit: u64) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("read the server's /proc fd dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&fd| fd < limit)
        .count()
}

/// The `EMFILE` scenario: fill the server's fd table with served clients, queue more,
/// check it keeps serving without spinning, then free fds and see every queued client
/// served.
fn emfile_recovery(driver: Driver) {
    let server = serve_with_nofile(driver, NOFILE);

    // Connect and serve clients one at a time until the server's fd table is full. After
    // each echo the server's fds for that client exist, so the count is exact.
    let mut served = Vec::new();
    while fd_slots_used(&server, NOFILE) < NOFILE as usize {
        assert!(
            served.len() < NOFILE as usize,
            "{driver}: {} clients served but the server has only {} of {NOFILE} fds open",
            served.len(),
            fd_slots_used(&server, NOFILE)
        );
        let mut c = client(server.addr);
        round_trip(&mut c, format!("served {:02}", served.len()).as_bytes());
        served.push(c);
    }
    let full = served.len();
    assert!(
        full >= 4,
        "{driver}: expected room for at least 4 clients under an fd limit of {NOFILE}, \
         got {full}"
    );

    // More clients than there are fds: the kernel completes their handshakes and queues
    // them in the listen backlog; accept fails with EMFILE.
    let queued_n = (full - 1).min(20);
    let mut queued: Vec<TcpStream> = (0..queued_n)
        .map(|i| {
            let mut c = client(server.addr);
            c.write_all(format!("queued {i:02}").as_bytes()).unwrap();
            c
        })
        .collect();

    // The existing clients are still served.
    round_trip(&mut served[0], b"still served");
    round_trip(&mut served[full - 1], b"last one too");

    // Backing off, not spinning: over a one-second window (spent asserting that the first
    // queued client is not answered) the server uses little CPU.
    let cpu0 = server.cpu_time();
    let t0 = Instant::now();
    assert_silent(
        &mut queued[0],
        Duration::from_secs(1),
        &format!("{driver}: a client queued while the server is out of fds"),
    );
    let wall = t0.elapsed();
    let cpu = server.cpu_time().saturating_sub(cpu0);
    assert!(
        cpu < wall / 5,
        "{driver}: a server out of fds should back off, not spin: it used {cpu:?} of CPU \
         in {wall:?}"
    );
    round_trip(&mut served[0], b"served during the back-off");

    // Free fds: all served clients but the first leave. Every queued client is then
    // served within the deadline.
    served.truncate(1);
    let deadline = Duration::from_secs(8);
    let t0 = Instant::now();
    for (i, c) in queued.iter_mut().enumerate() {
        let left = deadline
            .saturating_sub(t0.elapsed())
            .max(Duration::from_millis(1));
        c.set_read_timeout(Some(left)).unwrap();
        let mut got = [0u8; 9];
        if let Err(e) = c.read_exact(&mut got) {
            panic!(
                "{driver}: queued client {i} of {queued_n} should be served within \
                 {deadline:?} of fds being freed: {e}"
            );
        }
        assert_eq!(
            got,
            format!("queued {i:02}").as_bytes(),
            "{driver}: echo of {i}"
        );
    }
    let recovery = t0.elapsed();
    for c in queued.iter_mut().chain(served.iter_mut()) {
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        round_trip(c, b"after recovery");
    }
    eprintln!(
        "{driver}: {full} clients filled {NOFILE} fds; {queued_n} queued; CPU {cpu:?} in \
         {wall:?} while out of fds; all queued served {recovery:?} after freeing fds"
    );
}

#[test]
fn emfile_backoff_and_recovery_reactor() {
    emfile_recovery(Driver::Reactor);
}

#[test]
fn emfile_backoff_and_recovery_threaded() {
    emfile_recovery(Driver::Threaded);
}

/// `--max-connections` reaches the reactor and the uring driver (the blocking drivers
/// have no limit of their own: a thread or a turn per connection): over the limit,
/// clients wait in the backlog until a served one leaves.
#[test]
fn max_connections_flag_limits_the_reactor() {
    max_connections_flag_limits(Driver::Reactor)
}

#[test]
fn max_connections_flag_limits_the_uring_driver() {
    max_connections_flag_limits(Driver::Uring)
}

fn max_connections_flag_limits(driver: Driver) {
    let server = ServerProc::start("echo", driver, &["--max-connections", "2"]);
    let mut clients: Vec<Option<TcpStream>> = (0..3).map(|_| Some(client(server.addr))).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.as_mut()
            .unwrap()
            .write_all(format!("client {i}").as_bytes())
            .unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate().take(2) {
        let mut got = [0u8; 8];
        c.as_mut().unwrap().read_exact(&mut got).unwrap();
        assert_eq!(
            got,
            format!("client {i}").as_bytes(),
            "client {i} is served"
        );
    }
    assert_silent(
        clients[2].as_mut().unwrap(),
        Duration::from_millis(300),
        "the third client, over --max-connections 2",
    );
    drop(clients[0].take());
    let mut got = [0u8; 8];
    clients[2]
        .as_mut()
        .unwrap()
        .read_exact(&mut got)
        .expect("the third client is served once the first leaves");
    assert_eq!(&got, b"client 2");
    round_trip(clients[1].as_mut().unwrap(), b"still here");
}
