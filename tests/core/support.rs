//! Helpers shared by the scenarios: start servers in process (a reactor on a thread, or a
//! blocking server), wait with deadlines, talk to them.
//!
//! The demos crate's test binary includes this file too (`#[path]`), and adds what runs
//! the `sockloop` binary; the arrow points demos → core, as between the crates.
//!
//! Nothing here sleeps to wait for readiness: every wait polls a condition until a
//! deadline, or blocks on a channel with a timeout, and fails the test with a message if
//! the deadline passes.

#![allow(dead_code)]

use socket2::{Domain, Socket, Type};
use sockloop::blocking::{BlockingListener, BlockingServer, Factory, Mode};
use sockloop::net::Endpoint;
use sockloop::proto::{Out, PeerError, Protocol};
use sockloop::reactor::{Config, Handle, Reactor, Stats};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The drivers: the reactor, and the two blocking drivers of [`sockloop::blocking`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// [`Reactor`], on a thread of the test.
    Reactor,
    /// [`Mode::Threaded`]: a thread per connection.
    Threaded,
    /// [`Mode::Iterative`]: one connection at a time.
    Iterative,
    /// [`sockloop::uring::UringServer`]: io_uring completions on one thread (feature
    /// `uring`, on whenever the workspace is built together, as CI does).
    Uring,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::Reactor => "reactor",
            Driver::Threaded => "threaded",
            Driver::Iterative => "iterative",
            Driver::Uring => "uring",
        })
    }
}

/// Every driver, for scenarios that run under each.
#[cfg(feature = "uring")]
pub const DRIVERS: [Driver; 4] = [
    Driver::Reactor,
    Driver::Threaded,
    Driver::Iterative,
    Driver::Uring,
];
/// Every driver, for scenarios that run under each (without the `uring` feature, which
/// CI always has: `.ci/run` checks that the uring tests are listed).
#[cfg(not(feature = "uring"))]
pub const DRIVERS: [Driver; 3] = [Driver::Reactor, Driver::Threaded, Driver::Iterative];

/// One `#[test]` per driver for a scenario written once as `fn(Driver)`:
/// `per_driver!(scenario: on_reactor, on_threaded, on_iterative)` makes the three tests,
/// and a fourth, `scenario::uring`, for the completion driver (a module of the scenario's
/// name holds it: modules and functions have separate namespaces).
/// A scenario that cannot run under the iterative driver (it needs two clients served at
/// once, which is exactly what that driver cannot do) says why, and the macro requires it:
/// `per_driver!(scenario: on_reactor, on_threaded; not_iterative: "two clients at once")`.
/// Each is a test of its own, so nextest lists (and times) each separately.
macro_rules! per_driver {
    ($scenario:ident: $reactor:ident, $threaded:ident, $iterative:ident) => {
        #[test]
        fn $reactor() {
            $scenario($crate::support::Driver::Reactor)
        }
        #[test]
        fn $threaded() {
            $scenario($crate::support::Driver::Threaded)
        }
        #[test]
        fn $iterative() {
            $scenario($crate::support::Driver::Iterative)
        }
        $crate::support::per_driver!(@uring $scenario);
    };
    ($scenario:ident: $reactor:ident, $threaded:ident; not_iterative: $why:literal) => {
        #[test]
        fn $reactor() {
            $scenario($crate::support::Driver::Reactor)
        }
        #[test]
        fn $threaded() {
            $scenario($crate::support::Driver::Threaded)
        }
        const _: &str = $why;
        $crate::support::per_driver!(@uring $scenario);
    };
    (@uring $scenario:ident) => {
        #[cfg(feature = "uring")]
        mod $scenario {
            #[test]
            fn uring() {
                super::$scenario($crate::support::Driver::Uring)
            }
        }
    };
}
pub(crate) use per_driver;

// `per_driver!` names the drivers one by one: a new driver must get its tests there too.
#[cfg(feature = "uring")]
const _: () = assert!(
    matches!(
        DRIVERS,
        [
            Driver::Reactor,
            Driver::Threaded,
            Driver::Iterative,
            Driver::Uring
        ]
    ),
    "DRIVERS changed: teach per_driver! about the new driver"
);

/// Whether a tool a test needs (`what`: its name and how to install it) is here. Without
/// it the test is skipped with a line on stderr, except under CI (`CI` set, as it is when
/// `.ci/run` runs), where a missing tool fails the test: `.ci/run` installs every tool, so
/// one missing there is a broken install, not a reason to pass.
pub fn have_tool(present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is required under CI (.ci/run installs it)"
    );
    eprintln!("skipped: {what} is not installed");
    false
}

/// The default deadline for a wait in a test.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A shorter bound, for one step of a test against an in-process server (a reply, a turn
/// of the loop reaching a state): a hung loop then fails its test well within [`DEADLINE`].
pub const WAIT: Duration = Duration::from_secs(5);

/// CPU time (user + system) of a process, from `/proc/<pid>/stat`.
pub fn cpu_time_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Polls `probe` until it returns `Some`, or panics after `deadline` naming `what`.
pub fn wait_until<T>(deadline: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Connects with read and write timeouts of [`DEADLINE`], so a broken server fails the
/// test instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    connect_within(addr, DEADLINE)
}

/// Connects with `timeout` as the connect, read and write timeouts.
pub fn connect_within(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, timeout).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s
}

/// Connects like [`connect_within`], with socket buffer sizes set before the handshake
/// (so the window the client advertises is small from the start).
pub fn connect_with_buffers(
    addr: SocketAddr,
    rcvbuf: Option<usize>,
    sndbuf: Option<usize>,
    timeout: Duration,
) -> TcpStream {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
    if let Some(n) = sndbuf {
        sock.set_send_buffer_size(n).expect("SO_SNDBUF");
    }
    sock.connect_timeout(&addr.into(), timeout)
        .unwrap_or_else(|e| panic!("expected to connect to {addr}: {e}"));
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s
}

/// 127.0.0.1, any port.
pub fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Reads exactly `n` bytes or panics (timeouts come from [`connect`]).
pub fn read_exact_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read the expected bytes");
    buf
}

/// One round trip of `msg` to an echo server: sends it and expects exactly it back (the
/// timeouts are the socket's).
pub fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write the message");
    assert_eq!(read_exact_n(s, msg.len()), msg, "the echo is the message");
}

/// Asserts that nothing arrives on `s` within `window`: a bounded wait, not a sleep (it
/// returns early, and fails, if anything does arrive). The socket's read timeout is put
/// back as it was.
pub fn assert_silent(s: &mut TcpStream, window: Duration, what: &str) {
    let before = s.read_timeout().expect("the socket's read timeout");
    s.set_read_timeout(Some(window)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        Ok(0) => panic!("{what}: expected no answer yet, but the server closed the connection"),
        Ok(n) => panic!("{what}: expected no answer yet, but {n} bytes arrived"),
        Err(e) => panic!("{what}: expected no answer yet, but read failed: {e}"),
    }
    s.set_read_timeout(before).unwrap();
}

/// Reads until the peer closes; returns everything read.
pub fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read to end");
    all
}

/// A deterministic byte pattern that differs per `seed`, so crossed streams are caught.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Reactors in process.

/// A reactor [`Config`] with a small connection limit (not the default's "fd limit minus
/// 32"), so tests do not depend on the environment's rlimit.
pub fn test_config() -> Config {
    Config {
        max_connections: 64,
        ..Config::default()
    }
}

/// Runs turns of a reactor driven by the test thread until `cond` holds; panics after
/// `within`, naming `what` (and the loop's stats).
pub fn pump_until(
    reactor: &mut Reactor,
    within: Duration,
    what: &str,
    mut cond: impl FnMut(&mut Reactor) -> bool,
) {
    let start = Instant::now();
    while !cond(reactor) {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} running the loop until: {what} (stats: {:?})",
            reactor.stats()
        );
        reactor
            .run_once(Some(Duration::from_millis(10)))
            .expect("run_once");
    }
}

/// Runs turns of a reactor driven by the test thread for `window` (to show that something
/// does *not* happen).
pub fn pump_for(reactor: &mut Reactor, window: Duration) {
    let end = Instant::now() + window;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        reactor
            .run_once(Some(left.min(Duration::from_millis(10))))
            .expect("run_once");
    }
}

/// A [`Reactor`] running [`Reactor::run`] on a thread of its own, looked into through its
/// [`Handle`].
///
/// - [`BgReactor::start`] builds the reactor on its thread (a reactor is not `Send`, and
///   its protocols need not be), lets `setup` add its socket there, and returns once the
///   socket is bound: connecting to [`BgReactor::addr`] then needs no wait.
/// - [`BgReactor::call`] (and [`BgReactor::stats`]) runs a closure on the loop's thread
///   and returns its result, failing the test if the loop does not run it within
///   [`DEADLINE`].
/// - [`BgReactor::join`] waits, with a deadline, for `run()` to return by itself (after
///   a shutdown the test asked for), and [`BgReactor::shutdown_and_join`] asks for a
///   graceful shutdown first. Both give the loop's final stats and when `run()` returned.
/// - Dropped while still running (the test did not join it, or failed), it stops the loop
///   at once ([`Handle::stop_now`]) and joins its thread; a loop that does not stop
///   within [`DEADLINE`] is left behind rather than hang the test.
pub struct BgReactor {
    addr: SocketAddr,
    handle: Handle,
    /// Sent once `run()` has returned: the final stats, and when it returned.
    done: mpsc::Receiver<(Stats, Instant)>,
    thread: Option<JoinHandle<()>>,
}

impl BgReactor {
    /// Starts a reactor with `cfg`; `setup`, run on the reactor's thread, binds its
    /// socket (`|r| r.listen(localhost(), || Echo)`, say) and returns the address. An
    /// error from `setup`, or a loop that is not ready within [`DEADLINE`], fails the test.
    pub fn start(
        cfg: Config,
        setup: impl FnOnce(&mut Reactor) -> io::Result<SocketAddr> + Send + 'static,
    ) -> BgReactor {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bg-reactor".into())
            .spawn(move || {
                let ready = Reactor::with_config(cfg).and_then(|mut reactor| {
                    let addr = setup(&mut reactor)?;
                    Ok((reactor, addr))
                });
                let mut reactor = match ready {
                    Ok((reactor, addr)) => {
                        let _ = ready_tx.send(Ok((addr, reactor.handle())));
                        reactor
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                reactor.run().expect("the background reactor's run()");
                let ended = Instant::now();
                let stats = reactor.stats().clone();
                drop(reactor);
                let _ = done_tx.send((stats, ended));
            })
            .expect("spawn the reactor thread");
        match ready_rx.recv_timeout(DEADLINE) {
            Ok(Ok((addr, handle))) => BgReactor {
                addr,
                handle,
                done,
                thread: Some(thread),
            },
            Ok(Err(e)) => panic!("the background reactor could not start: {e}"),
            Err(RecvTimeoutError::Disconnected) => {
                // `setup` panicked: fail with its message.
                join_thread(thread);
                unreachable!("the reactor thread ended without saying it was ready")
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("the background reactor was not ready within {DEADLINE:?}")
            }
        }
    }

    /// The address `setup` returned.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The reactor's handle, for posts and shutdowns of the test's own.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `f` on the loop's thread and returns its result ([`Handle::call`]).
    ///
    /// `Handle::call` waits without a deadline, so it waits here on a helper thread: a
    /// loop that does not run `f` within [`DEADLINE`] fails the test instead of hanging it.
    pub fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Reactor) -> R + Send + 'static) -> R {
        let handle = self.handle.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(handle.call(f));
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("the background reactor did not run a call: {e}"),
            Err(_) => panic!("the background reactor did not run a call within {DEADLINE:?}"),
        }
    }

    /// The loop's stats, now.
    pub fn stats(&self) -> Stats {
        self.call(|r| r.stats().clone())
    }

    /// Waits (at most `within`) for `run()` to return by itself, after a shutdown the test
    /// asked for; returns the final stats and when `run()` returned.
    pub fn join(mut self, within: Duration) -> (Stats, Instant) {
        let ended = match self.done.recv_timeout(within) {
            Ok(ended) => ended,
            Err(RecvTimeoutError::Timeout) => {
                panic!("the background reactor's run() did not return within {within:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                // The loop's thread panicked: fail with its message.
                join_thread(self.thread.take().unwrap());
                unreachable!("the reactor thread ended without its final stats")
            }
        };
        join_thread(self.thread.take().unwrap());
        ended
    }

    /// Asks for a graceful shutdown ([`Handle::shutdown`]), then [`BgReactor::join`]s.
    pub fn shutdown_and_join(self, within: Duration) -> (Stats, Instant) {
        self.handle.shutdown().expect("the reactor is running");
        self.join(within)
    }
}

impl Drop for BgReactor {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.handle.stop_now();
            match self.done.recv_timeout(DEADLINE) {
                // A loop that does not stop is left behind: joining it would hang.
                Err(RecvTimeoutError::Timeout) => {}
                Ok(_) | Err(RecvTimeoutError::Disconnected) => {
                    let _ = t.join();
                }
            }
        }
    }
}

/// Joins `t`; if it panicked, fails the test with its panic.
fn join_thread(t: JoinHandle<()>) {
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A stream server in this process on 127.0.0.1 (any port), under any driver: a
/// [`BgReactor`] under [`Driver::Reactor`], a [`BlockingServer`] under the blocking
/// drivers. [`InProcServer::stop`] stops it gracefully and waits (bounded); dropped, it
/// stops at once and is joined (see [`BgReactor`]; a `BlockingServer` stops and joins on
/// drop).
pub enum InProcServer {
    Reactor(BgReactor),
    /// A blocking server and the grace period of its graceful stop.
    Blocking(BlockingServer, Duration),
    /// The completion driver and the grace period of its graceful stop.
    #[cfg(feature = "uring")]
    Uring(sockloop::uring::UringServer, Duration),
}

impl InProcServer {
    /// Serves each connection with a protocol made by `make`, under `driver`. `cfg`
    /// configures the reactor; the blocking drivers take its connection settings
    /// ([`Config::session_config`]) and its shutdown grace.
    pub fn start<P, F>(driver: impl Into<Driver>, cfg: Config, make: F) -> InProcServer
    where
        P: Protocol + Send + 'static,
        F: Fn() -> P + Send + Sync + 'static,
    {
        let mode = match driver.into() {
            Driver::Reactor => {
                let bg = BgReactor::start(cfg, move |r| r.listen(localhost(), make));
                return InProcServer::Reactor(bg);
            }
            Driver::Threaded => Mode::Threaded,
            Driver::Iterative => Mode::Iterative,
            #[cfg(feature = "uring")]
            Driver::Uring => {
                let factory: Factory =
                    Arc::new(move || Box::new(make()) as Box<dyn Protocol + Send>);
                let session = cfg.session_config(&cfg.timeouts);
                let server = sockloop::uring::UringServer::spawn_with(
                    &Endpoint::Inet(localhost()),
                    factory,
                    session,
                    sockloop::uring::UringOptions {
                        max_connections: cfg.max_connections,
                        ..sockloop::uring::UringOptions::default()
                    },
                )
                .expect("start the uring driver (io_uring works on this machine kind)");
                return InProcServer::Uring(server, cfg.shutdown_grace);
            }
            #[cfg(not(feature = "uring"))]
            Driver::Uring => panic!("the uring driver needs the `uring` feature"),
        };
        let listener =
            BlockingListener::bind(&Endpoint::Inet(localhost())).expect("bind a blocking listener");
        let factory: Factory = Arc::new(move || Box::new(make()) as Box<dyn Protocol + Send>);
        let session = cfg.session_config(&cfg.timeouts);
        let server =
            BlockingServer::spawn_with(listener, mode, factory, session).expect("spawn the server");
        InProcServer::Blocking(server, cfg.shutdown_grace)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        match self {
            InProcServer::Reactor(bg) => bg.addr(),
            InProcServer::Blocking(s, _) => s.local_addr().inet().expect("a TCP address"),
            #[cfg(feature = "uring")]
            InProcServer::Uring(s, _) => s.local_addr().inet().expect("a TCP address"),
        }
    }

    /// Stops the server gracefully and waits for it (bounded).
    pub fn stop(self) {
        match self {
            InProcServer::Reactor(bg) => {
                bg.shutdown_and_join(DEADLINE);
            }
            InProcServer::Blocking(s, grace) => {
                // `join` returns once every connection has ended, at most `grace` after
                // the stop began (then the rest are shut down).
                s.shutdown(grace);
                s.join();
            }
            #[cfg(feature = "uring")]
            InProcServer::Uring(s, grace) => {
                s.shutdown(grace);
                s.join();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Files.

/// A fresh, empty directory under the system's temp dir (its name made of the process id,
/// a sequence number and `tag`, short enough for socket paths), removed with its contents
/// when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sockloop-it-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A socket path inside the directory; asserts that it fits `sun_path`'s 108 bytes.
    pub fn socket_path(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        assert!(
            p.as_os_str().len() < 100,
            "socket path too long for sun_path: {}",
            p.display()
        );
        p
    }

    /// The names in the directory, sorted (hidden and temporary files included).
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .expect("read the temp dir")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Protocols.

/// Echo: every byte back, in order. The tests' stand-in for a real machine: it has one
/// state, so whatever a test observes is the driver's doing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Protocol for Echo {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        out.push(input);
        Ok(input.len())
    }
}
