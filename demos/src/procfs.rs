//! Child servers and what `/proc` says about them, shared by `sockloop demo` (the lesson)
//! and `sockloop bench`.
//!
//! [`ServerGuard`] starts a server as a child process, reads its `listening` line with a
//! deadline, and kills and reaps it when dropped, whatever happened. The readers take a
//! process's open fds, threads, resident memory and CPU time from `/proc/<pid>`; each
//! returns `None` where there is no `/proc` (or the process is gone).

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server gets to print its `listening` line.
pub const START_DEADLINE: Duration = Duration::from_secs(5);

/// How long a server gets to exit after SIGINT before it is killed.
pub const STOP_DEADLINE: Duration = Duration::from_secs(3);

/// A child process, killed and reaped when dropped unless it has exited already.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard { child: Some(child) }
    }

    /// The child's pid (0 once it has been reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The child, while it has not been reaped.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Waits up to `deadline` for the child to exit; its status if it did (the child is
    /// then reaped and no longer guarded).
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if start.elapsed() < deadline => {}
                _ => return None,
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Asks the child to stop (SIGINT) and waits up to [`STOP_DEADLINE`]; kills it past
    /// that.
    pub fn stop(&mut self) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet
            // (so the pid cannot have been reused); no memory is involved.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        if self.wait_exit(STOP_DEADLINE).is_none() {
            self.kill();
        }
    }

    /// Kills and reaps the child now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server child process that printed `listening <demo> <transport> <addr>`; killed
/// and reaped when dropped, whatever happened.
#[derive(Debug)]
pub struct ServerGuard {
    child: ChildGuard,
    /// The address from its `listening` line.
    pub addr: SocketAddr,
}

impl ServerGuard {
    /// Spawns `cmd` (its stdout piped, stdin and stderr null, `RUST_LOG` removed) and
    /// waits up to [`START_DEADLINE`] for its first line, `listening <demo> <transport>
    /// <addr>`. `what` names the server in errors ("the reactor server").
    pub fn start(mut cmd: Command, what: &str) -> io::Result<ServerGuard> {
        // The server's log would only slow it down: nobody reads it here.
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {what} ({:?}): {e}", cmd.get_program()),
            )
        })?;
        let stdout = child.stdout.take();
        let mut child = ChildGuard::new(child);
        let Some(stdout) = stdout else {
            return Err(io::Error::other("the server's stdout is not piped"));
        };
        let addr = listening_addr(&mut child, stdout, what)?;
        Ok(ServerGuard { child, addr })
    }

    /// The server's pid (0 once it has been reaped).
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Asks the server to stop (SIGINT), waits up to [`STOP_DEADLINE`], kills it past
    /// that.
    pub fn stop(&mut self) {
        self.child.stop();
    }
}

/// Waits up to [`START_DEADLINE`] for a server child's first line on `stdout`,
/// `listening <demo> <transport> <addr>`, and returns the address. The line is read on a
/// thread so the wait has a deadline; the thread then drains the pipe until the server
/// exits, so it never blocks on a write. `what` names the server in errors.
///
/// # Errors
///
/// `TimedOut` past the deadline; an error naming what it printed (or how it exited) if
/// the first line is not a `listening` line.
pub fn listening_addr(
    child: &mut ChildGuard,
    stdout: std::process::ChildStdout,
    what: &str,
) -> io::Result<SocketAddr> {
    {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("server-stdout".into())
            .spawn(move || {
                let mut out = BufReader::new(stdout);
                let mut first = String::new();
                let _ = out.read_line(&mut first);
                let _ = tx.send(first);
                let _ = io::copy(&mut out, &mut io::sink());
            })?;
        let Ok(line) = rx.recv_timeout(START_DEADLINE) else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{what} did not print its listening line within {} s",
                    START_DEADLINE.as_secs_f64()
                ),
            ));
        };
        if line.is_empty() {
            let status = child.wait_exit(Duration::from_millis(500));
            return Err(io::Error::other(format!(
                "{what} exited before it was listening ({})",
                status.map_or_else(|| "still running".into(), |s| s.to_string())
            )));
        }
        line.split_whitespace()
            .nth(3)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{what} printed {:?}, not `listening <demo> <transport> <addr>`",
                    line.trim_end()
                ))
            })
    }
}

/// The process's open fd count, from `/proc/<pid>/fd`.
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// How many of the process's threads serve one connection each (named `conn-<id>` by
/// the threaded driver), from `/proc/<pid>/task/*/comm`.
pub fn conn_threads(pid: u32) -> Option<usize> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .filter_map(|t| t.ok())
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .filter(|comm| comm.starts_with("conn-"))
            .count(),
    )
}

/// The process's thread count and resident memory in bytes, from `/proc/<pid>/status`.
pub fn threads_and_rss(pid: u32) -> (Option<usize>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let threads = field("Threads:").and_then(|t| usize::try_from(t).ok());
    let rss = field("VmRSS:").map(|kib| kib * 1024);
    (threads, rss)
}

/// CPU time (user + system, every thread, living or exited) of a process, from
/// `/proc/<pid>/stat`. Resolution: one clock tick (usually 10 ms).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; count fields after its ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a constant.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_sec = u64::try_from(per_sec).ok().filter(|&t| t > 0)?;
    Some(Duration::from_secs_f64(ticks as f64 / per_sec as f64))
}

/// The CPUs this thread may run on (empty where that cannot be read).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain bits, zeroed is a valid (empty) set; sched_getaffinity
    // writes at most `size_of::<cpu_set_t>()` bytes into it; pid 0 is this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the thread (or process main thread) `tid` to `cpu`; 0 is the calling thread.
/// Threads it starts afterwards inherit the pin.
pub fn pin(tid: u32, cpu: usize) -> io::Result<()> {
    let tid = libc::pid_t::try_from(tid).map_err(io::Error::other)?;
    // SAFETY: cpu_set_t is plain bits; CPU_SET writes inside it (cpu is checked against
    // CPU_SETSIZE first); sched_setaffinity only reads it.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no such CPU"));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pins every thread of process `pid` to `cpu` (threads it starts later inherit it from
/// their creator). Errors if `/proc/<pid>/task` cannot be read or a pin fails.
pub fn pin_process(pid: u32, cpu: usize) -> io::Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid = task?.file_name().to_string_lossy().parse::<u32>();
        if let Ok(tid) = tid {
            match pin(tid, cpu) {
                Ok(()) => {}
                // A thread that exited meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
