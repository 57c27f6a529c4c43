//! Helpers shared by the scenarios: start servers, wait with deadlines, count fds.
//!
//! Nothing here sleeps to wait for readiness: every wait polls a condition until a
//! deadline and fails the test with a message if the deadline passes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use sockloop::demos::Driver;

/// Every driver, for scenarios that run under each.
pub const DRIVERS: [Driver; 3] = [Driver::Reactor, Driver::Threaded, Driver::Iterative];

/// The default deadline for a wait in a test.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A `sockloop serve` child process, killed when dropped.
pub struct ServerProc {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ServerProc {
    /// Starts `sockloop serve <demo> --driver <driver> --addr 127.0.0.1:0 <extra...>`
    /// and waits (with a deadline) for its `listening` line.
    pub fn start(demo: &str, driver: Driver, extra: &[&str]) -> ServerProc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockloop"));
        cmd.args(["serve", demo, "--driver", &driver.to_string()])
            .args(["--addr", "127.0.0.1:0"])
            .args(extra);
        ServerProc::spawn(cmd)
    }

    /// Starts a prepared `sockloop serve` command (for tests that set limits with
    /// `pre_exec`, say) and waits for its `listening` line.
    pub fn spawn(mut cmd: Command) -> ServerProc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(
            if std::env::var_os("SOCKLOOP_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            },
        );
        let mut child = cmd.spawn().expect("spawn sockloop");
        let stdout = child.stdout.take().expect("piped stdout");
        // Read the announcement on a thread so the wait has a deadline.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not announce itself within {DEADLINE:?}");
            }
        };
        let addr = line
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected announcement: {line:?}"));
        ServerProc { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's open fd count, from /proc.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read server's /proc fd dir")
            .count()
    }

    /// The server's CPU time (user + system) so far, from /proc.
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(self.pid())
    }

    /// Sends SIGINT and waits (with a deadline) for a clean exit.
    pub fn interrupt_and_wait(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = wait_until(DEADLINE, "server exits after SIGINT", || {
            self.child.try_wait().expect("try_wait")
        });
        std::mem::forget(self);
        status
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// Connects with read and write timeouts set, so a broken server fails the test instead
/// of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Reads exactly `n` bytes or panics (timeouts come from [`connect`]).
pub fn read_exact_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read the expected bytes");
    buf
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
