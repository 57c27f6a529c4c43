//! `sockloop demo`: the blocking vs non-blocking lesson, in one command.
//!
//! For every driver (iterative, threaded, reactor, uring) and every number of silent clients
//! asked for, the lesson
//!
//! 1. starts `sockloop serve <demo> --driver <driver> --addr 127.0.0.1:0` as a child
//!    process and reads its `listening` line (with a deadline);
//! 2. connects the silent clients: connected, sending nothing;
//! 3. waits (with a deadline) until the server has taken them where its driver takes
//!    them: the first one for the iterative server, every one for the others;
//! 4. connects a second, talking client, sends one line and times how long it takes
//!    until the first line comes back, or gives up after [`LessonOptions::timeout`]
//!    ("blocked");
//! 5. reads the server's OS thread count and resident memory from `/proc/<pid>/status`
//!    ("n/a" where there is no `/proc`);
//! 6. closes every client and stops the server (SIGINT, then SIGKILL past a deadline).
//!
//! Each row of the table is printed as soon as it is measured. Every wait has a
//! deadline, all traffic stays on 127.0.0.1, and a server is killed on every path out
//! (a guard kills it when dropped).
//!
//! With [`LessonOptions::svg`] set it then draws [`waits`]: a picture of who waits
//! where, each driver's threads over time under the same four clients.

pub mod waits;

use crate::procfs::{conn_threads, open_fds, threads_and_rss, ServerGuard};
use crate::serve::{Demo, Driver};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The numbers of silent clients the lesson tries by default.
pub const DEFAULT_SILENT_CLIENTS: [usize; 2] = [1, 100];

/// How long the talking client waits for its answer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The drivers in the order the table shows them: from the one that blocks to the one
/// that needs no threads.
pub const DRIVERS: [Driver; 4] = [
    Driver::Iterative,
    Driver::Threaded,
    Driver::Reactor,
    Driver::Uring,
];

/// The line the talking client sends.
const MESSAGE: &[u8] = b"are you there?\n";

/// How long connecting all the silent clients may take, in total.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);

/// How long the lesson waits for the server to take the silent clients before it goes
/// on anyway.
const ACCEPT_DEADLINE: Duration = Duration::from_secs(2);

/// What the lesson runs.
#[derive(Clone, Debug)]
pub struct LessonOptions {
    /// The numbers of silent clients to try, one group of rows each (default `[1, 100]`).
    pub silent_clients: Vec<usize>,
    /// How long the talking client waits for its answer before it counts as blocked
    /// (default 2 s).
    pub timeout: Duration,
    /// The demo the servers serve (default echo). It must answer a line with a line over
    /// TCP: echo, ack, stamp or greet (greet's `Welcome!` counts as its answer).
    pub demo: Demo,
    /// The drivers to compare, in table order (default [`DRIVERS`]).
    pub drivers: Vec<Driver>,
    /// The `sockloop` binary to start servers with (the CLI passes
    /// `std::env::current_exe()`).
    pub exe: PathBuf,
    /// After the table, also draw [`waits`] (the echo demo under each of the drivers)
    /// into this SVG file (default none).
    pub svg: Option<PathBuf>,
}

impl LessonOptions {
    /// The defaults, with servers started from the binary at `exe`.
    pub fn new(exe: impl Into<PathBuf>) -> LessonOptions {
        LessonOptions {
            silent_clients: DEFAULT_SILENT_CLIENTS.to_vec(),
            timeout: DEFAULT_TIMEOUT,
            demo: Demo::Echo,
            drivers: DRIVERS.to_vec(),
            exe: exe.into(),
            svg: None,
        }
    }
}

/// What happened to the talking client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Its first line came back this long after it started to connect.
    Answered(Duration),
    /// Nothing came back within the timeout (carried here).
    Blocked(Duration),
    /// The server closed the connection without answering.
    Closed,
}

impl Answer {
    /// Returns true if and only if the talking client got its answer.
    pub fn answered(&self) -> bool {
        matches!(self, Answer::Answered(_))
    }

    /// Returns true if and only if the talking client waited in vain until the timeout.
    pub fn blocked(&self) -> bool {
        matches!(self, Answer::Blocked(_))
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Answered(d) => f.write_str(&duration(*d)),
            Answer::Blocked(t) => write!(f, "blocked (>{})", duration(*t)),
            Answer::Closed => f.write_str("closed, no answer"),
        }
    }
}

/// One row of the table: one driver with one number of silent clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LessonRow {
    /// The server's driver.
    pub driver: Driver,
    /// How many silent clients were connected.
    pub silent_clients: usize,
    /// What happened to the talking client.
    pub answer: Answer,
    /// The server's OS threads at the moment of the answer (`None`: no `/proc`).
    pub threads: Option<usize>,
    /// The server's resident memory in bytes at the same moment (`None`: no `/proc`).
    pub rss_bytes: Option<u64>,
}

/// Everything the lesson measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LessonReport {
    /// The rows in the order they were printed.
    pub rows: Vec<LessonRow>,
}

impl LessonReport {
    /// The row of `driver` with `silent_clients` silent clients, if it was measured.
    pub fn row(&self, driver: Driver, silent_clients: usize) -> Option<&LessonRow> {
        self.rows
            .iter()
            .find(|r| r.driver == driver && r.silent_clients == silent_clients)
    }
}

/// The table's columns: header and width.
const COLUMNS: [(&str, usize); 5] = [
    ("driver", 11),
    ("silent clients", 16),
    ("2nd client answered", 21),
    ("OS threads", 12),
    ("server RSS", 0),
];

/// Runs the lesson: prints the table to `out` row by row as it is measured, then a few
/// lines of explanation, and returns what was measured.
pub fn run(opts: &LessonOptions, out: &mut dyn Write) -> io::Result<LessonReport> {
    check(opts)?;
    writeln!(
        out,
        "One talking client behind silent ones (connected, sending nothing), for each\n\
         driver in turn: the {} demo over TCP on 127.0.0.1. \"2nd client answered\" is the\n\
         time from the talking client's connect to the first line back.\n",
        opts.demo.name()
    )?;
    let answer_width = COLUMNS[2]
        .1
        .max(Answer::Blocked(opts.timeout).to_string().len() + 2);
    let cells: Vec<String> = COLUMNS.iter().map(|(h, _)| h.to_string()).collect();
    writeln!(out, "{}", line(&cells, answer_width))?;
    out.flush()?;

    let mut report = LessonReport::default();
    for &silent in &opts.silent_clients {
        for &driver in &opts.drivers {
            let row = measure(opts, driver, silent)?;
            let cells = [
                driver.to_string(),
                silent.to_string(),
                row.answer.to_string(),
                row.threads.map_or_else(|| "n/a".into(), |t| t.to_string()),
                row.rss_bytes.map_or_else(|| "n/a".into(), mib),
            ];
            writeln!(out, "{}", line(&cells, answer_width))?;
            out.flush()?;
            report.rows.push(row);
        }
    }
    writeln!(out)?;
    explain(&report, opts, out)?;
    out.flush()?;
    if let Some(path) = &opts.svg {
        writeln!(out)?;
        waits::draw(&opts.exe, &opts.drivers, path, out)?;
        out.flush()?;
    }
    Ok(report)
}

/// Refuses options the lesson cannot run with, before any server starts.
fn check(opts: &LessonOptions) -> io::Result<()> {
    let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    if !matches!(
        opts.demo,
        Demo::Echo | Demo::Ack | Demo::Stamp | Demo::Greet
    ) {
        return invalid(format!(
            "the lesson needs a demo that answers a line over TCP (echo, ack, stamp or \
             greet), not {}",
            opts.demo.name()
        ));
    }
    if opts.timeout.is_zero() {
        return invalid("the lesson's answer timeout must be more than zero".into());
    }
    if let Some(n) = opts.silent_clients.iter().find(|&&n| n > 1000) {
        return invalid(format!(
            "{n} silent clients is more than the lesson's limit of 1000"
        ));
    }
    Ok(())
}

/// One table line: the cells padded to their columns (the last one not padded).
fn line(cells: &[String], answer_width: usize) -> String {
    let mut s = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let width = if i == 2 { answer_width } else { COLUMNS[i].1 };
        if i + 1 == cells.len() {
            s.push_str(cell);
        } else {
            s.push_str(&format!("{cell:<width$}"));
        }
    }
    s
}

/// A duration as a person reads it: `0.12 ms`, `12.3 ms`, `500 ms`, `2 s`, `1.25 s`.
fn duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 && d.subsec_nanos() % 1_000_000 != 0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// Bytes in MiB with one decimal: `1.9 MiB`.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One row: a fresh server, the silent clients, the talking client, the readings.
fn measure(opts: &LessonOptions, driver: Driver, silent: usize) -> io::Result<LessonRow> {
    let mut server = start_server(&opts.exe, opts.demo, driver)?;
    let pid = server.pid();
    let base_fds = open_fds(pid);

    let mut silent_clients = Vec::with_capacity(silent);
    let connect_by = Instant::now() + CONNECT_DEADLINE;
    for i in 0..silent {
        let left = connect_by.saturating_duration_since(Instant::now());
        let s = TcpStream::connect_timeout(&server.addr, left.max(Duration::from_millis(1)))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "silent client {} of {silent} cannot connect to the {driver} server \
                         at {}: {e}",
                        i + 1,
                        server.addr
                    ),
                )
            })?;
        silent_clients.push(s);
    }
    wait_for_accepts(pid, driver, silent, base_fds);

    let (answer, talking) = talk(server.addr, opts.timeout)?;
    let (threads, rss_bytes) = threads_and_rss(pid);

    // Close every client before the server is asked to stop, so it has nothing to
    // finish.
    drop(talking);
    drop(silent_clients);
    server.stop();
    Ok(LessonRow {
        driver,
        silent_clients: silent,
        answer,
        threads,
        rss_bytes,
    })
}

/// Waits (up to [`ACCEPT_DEADLINE`]) until the server has taken the silent clients where
/// its driver takes them: the iterative server the first one (the rest wait in the
/// backlog), the threaded one each on its own `conn-*` thread, the reactor each as an
/// open fd. Without `/proc` it pauses briefly instead. It goes on either way: the
/// measurement is then only less telling.
fn wait_for_accepts(pid: u32, driver: Driver, silent: usize, base_fds: Option<usize>) {
    if silent == 0 {
        return;
    }
    let Some(base_fds) = base_fds else {
        std::thread::sleep(Duration::from_millis(100));
        return;
    };
    let done = || match driver {
        Driver::Iterative => open_fds(pid).is_some_and(|n| n > base_fds),
        Driver::Reactor | Driver::Uring => open_fds(pid).is_some_and(|n| n >= base_fds + silent),
        Driver::Threaded => conn_threads(pid).is_some_and(|n| n >= silent),
    };
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    while !done() && start.elapsed() < ACCEPT_DEADLINE {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The talking client: connects, sends [`MESSAGE`], and waits for the first line back.
/// Its connection is returned open (when there is one), so that the server's thread
/// count read next still includes whatever serves it.
fn talk(addr: SocketAddr, timeout: Duration) -> io::Result<(Answer, Option<TcpStream>)> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut s = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) if is_timeout(&e) => return Ok((Answer::Blocked(timeout), None)),
        Err(e) => return Err(e),
    };
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(timeout))?;
    match s.write_all(MESSAGE) {
        Ok(()) => {}
        Err(e) if is_timeout(&e) => return Ok((Answer::Blocked(timeout), Some(s))),
        Err(e) => return Err(e),
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok((Answer::Blocked(timeout), Some(s)));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => return Ok((Answer::Closed, Some(s))),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.contains(&b'\n') {
                    return Ok((Answer::Answered(start.elapsed()), Some(s)));
                }
            }
            Err(e) if is_timeout(&e) => return Ok((Answer::Blocked(timeout), Some(s))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok((Answer::Closed, Some(s)))
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Starts `<exe> serve <demo> --driver <driver> --addr 127.0.0.1:0` and waits for its
/// `listening` line.
fn start_server(exe: &Path, demo: Demo, driver: Driver) -> io::Result<ServerGuard> {
    let mut cmd = Command::new(exe);
    cmd.args(["serve", demo.name(), "--driver", &driver.to_string()])
        .args(["--addr", "127.0.0.1:0", "--shutdown-grace", "0.5"]);
    ServerGuard::start(cmd, &format!("the {driver} server"))
}

/// The explanation under the table, with the numbers just measured where they help.
fn explain(report: &LessonReport, opts: &LessonOptions, out: &mut dyn Write) -> io::Result<()> {
    let most = opts.silent_clients.iter().copied().max().unwrap_or(0);
    writeln!(
        out,
        "Why:\n\
         - iterative: one thread serves one client at a time, to the end. The silent client\n  \
         holds it in a blocking read() that only returns when that client sends or leaves,\n  \
         so the second client waits unserved in the kernel's listen backlog. One silent\n  \
         client is enough to block everyone behind it."
    )?;
    writeln!(
        out,
        "- threaded: every connection gets an OS thread of its own, blocked in its own\n  \
         read(), so a silent client blocks only its own thread. But every waiting client\n  \
         costs a thread: a kernel task to schedule and a stack (2 MiB of address space\n  \
         reserved, its touched pages resident)."
    )?;
    let at_most = |d| {
        report
            .row(d, most)
            .and_then(|r| Some((r.threads?, r.rss_bytes?)))
    };
    if let (Some((t, tm)), Some((r, rm))) = (at_most(Driver::Threaded), at_most(Driver::Reactor)) {
        if most > 0 {
            writeln!(
                out,
                "  With {most} silent clients: {t} threads and {} here, {r} threads and {} for\n  \
                 the reactor.",
                mib(tm),
                mib(rm)
            )?;
        }
    }
    writeln!(
        out,
        "- reactor: non-blocking sockets on one thread. The kernel's poller (epoll) says\n  \
         which sockets are ready, and only those are read, so a silent client never makes\n  \
         anyone wait and costs a slot in the connection table, not a thread.\n\
         - uring: one thread too, but it does not wait for \"ready\": it hands the kernel\n  \
         each receive, send and accept up front (io_uring's submission queue) and sleeps\n  \
         in io_uring_enter until some have completed. A silent client is a receive the\n  \
         kernel holds, with no buffer of its own until data arrives.\n\n\
         Every server also has a few threads that serve no client: main (waiting for the\n\
         server to stop), the Ctrl-C handler, and for the blocking drivers the accept loop\n\
         and a thread waiting for it to end."
    )
}
