//! Helpers for the demos' scenarios: the core crate's test helpers (included from
//! `tests/core/support.rs`, see there), and what starts the real `sockloop` binary as a
//! child process and talks to it.

#![allow(dead_code)]

#[path = "../../../tests/core/support.rs"]
mod core;

pub use self::core::*;
// The demos name their drivers with the CLI's enum; the helpers from the core take either.
pub use sockloop_demos::serve::Driver;

/// Every driver, for scenarios that run under each.
pub const DRIVERS: [Driver; 4] = [
    Driver::Reactor,
    Driver::Threaded,
    Driver::Iterative,
    Driver::Uring,
];

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

impl From<Driver> for self::core::Driver {
    fn from(d: Driver) -> Self {
        match d {
            Driver::Reactor => self::core::Driver::Reactor,
            Driver::Threaded => self::core::Driver::Threaded,
            Driver::Iterative => self::core::Driver::Iterative,
            Driver::Uring => self::core::Driver::Uring,
        }
    }
}

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
        let line = first_line(&mut child, "the server announces itself");
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

// ---------------------------------------------------------------------------------------
// Child processes of the real binary.

/// `sockloop <args>` as a [`Command`], with `RUST_LOG` removed so the child's stderr holds
/// only what it prints itself.
pub fn sockloop_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockloop"));
    cmd.args(args).env_remove("RUST_LOG");
    cmd
}

/// Kills (and reaps) a child the test gave up on: a deadline passed, an assertion failed.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `pipe` to its end on a thread of its own; the thread returns what it read, as
/// (lossy) UTF-8.
pub fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The first line the child prints on its (piped) standard output, read on a thread so
/// the wait has a deadline: empty if standard output closed first. Past [`DEADLINE`] the
/// child is killed and the test fails, naming `what`.
pub fn first_line(child: &mut Child, what: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = BufReader::new(stdout);
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining: a server that announces more than one socket (`--also-udp`)
        // must not find its stdout closed after the first line.
        let _ = io::copy(&mut out, &mut io::sink());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: no line on standard output within {DEADLINE:?}");
        }
    }
}

/// What a finished run of the binary left behind.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `sockloop <args>` with `stdin` piped in (then closed), and waits for it to exit
/// within [`DEADLINE`]; past that it is killed and the test fails.
pub fn run_sockloop(args: &[&str], stdin: &[u8]) -> Run {
    let child = sockloop_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockloop");
    let mut child = KillOnDrop(child);
    let mut input = child.0.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    // On a thread: a child that does not read its input must not block the test.
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
        // Dropping `input` closes the pipe: end of input for the child.
    });
    let stdout = drain(child.0.stdout.take().expect("piped stdout"));
    let stderr = drain(child.0.stderr.take().expect("piped stderr"));
    let what = format!("`sockloop {}` to exit", args.join(" "));
    let status = wait_until(DEADLINE, &what, || child.0.try_wait().expect("try_wait"));
    let _ = feeder.join();
    Run {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}
