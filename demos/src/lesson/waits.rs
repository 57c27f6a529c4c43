//! `sockloop demo --svg FILE`: a picture of who waits where.
//!
//! The same short scenario runs under each driver. Four clients connect 5 ms apart;
//! clients 1, 2 and 4 each send a line, wait for its echo and pause 15 ms, three times,
//! then leave (or give up on an echo after 150 ms, and leave); client 3 connects and
//! says nothing until the others are done. Each server is a child process (`sockloop
//! serve echo --driver D --addr 127.0.0.1:0`) run with `RUST_LOG=sockloop=trace`, and
//! its trace, which narrates every blocking call and every turn of the reactor with
//! microsecond timestamps, becomes one lane per OS thread:
//!
//! - blocking drivers: "blocked in read()" spans from `blocking in read()` to `read()
//!   returned`, likewise for write(); "blocked in accept()" is the time between accepts
//!   (from the listening line, or the end of the previous connection on the iterative
//!   server, to the next `accept` line: no trace line marks the call's start, and the
//!   accept thread does nothing else); "running" is the rest of a connection's life;
//! - reactor: "asleep in epoll_wait" spans from a `poll: sleeping` line to the loop's
//!   next line, then the turn's work up to the next `poll:` line, with its events,
//!   accepts, reads, writes and WouldBlocks as marks (and one turn zoomed in);
//! - uring: "asleep in io_uring_enter" spans from each `io_uring_enter` line to the
//!   loop's next line, then the turn's work, with the accepts and the receives and sends
//!   that completed as marks.
//!
//! The threads are told apart by the trace's text: the blocking drivers name the thread
//! in every `blocking in` line; a connection's other lines belong to the thread that
//! serves it (the accept thread for the iterative server, `conn-N` for the threaded
//! one); the reactor is one thread. The clients' sends, echoes and give-ups are drawn
//! under the server's lanes, on the same clock (wall-clock microseconds, one machine).
//! Time 0 is client 1's connect.

use crate::bench::svg::{escape, nice_step};
use crate::procfs::ChildGuard;
use crate::serve::Driver;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many clients connect.
pub const CLIENTS: usize = 4;
/// The client (numbered from 1) that connects and says nothing.
pub const SILENT_CLIENT: usize = 3;
/// How many lines each talking client sends, one echo at a time.
pub const ROUNDS: usize = 3;
/// The pause after each echo (and between one client's connect and the next's).
const GAP: Duration = Duration::from_millis(15);
const STAGGER: Duration = Duration::from_millis(5);
/// How long a talking client waits for an echo before it gives up and leaves.
pub const PATIENCE: Duration = Duration::from_millis(150);
/// The line each talking client sends.
const LINE: &[u8] = b"ping\n";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A bound on the silent client's wait for the others (they are bounded themselves).
const SILENT_BOUND: Duration = Duration::from_secs(10);

/// One line sent and what came of it, in ms from client 1's connect.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Round {
    /// When the client wrote the line.
    pub sent: f64,
    /// When its echo was complete, or `None`: the client gave up (or the server closed).
    pub echo: Option<f64>,
    /// When the wait ended: the echo, or the moment the client gave up.
    pub until: f64,
}

impl Round {
    /// How long the client waited for the echo, in ms.
    pub fn waited(&self) -> f64 {
        self.until - self.sent
    }
}

/// What one client did, in ms from client 1's connect.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientLog {
    /// 1 to [`CLIENTS`], in connect order.
    pub number: usize,
    /// False for the silent client.
    pub talks: bool,
    /// Its local port: the server's trace names it in the `accept` line.
    pub port: u16,
    /// When it started to connect.
    pub connected: f64,
    /// When it closed its socket.
    pub closed: f64,
    /// Its lines, in order (none for the silent client).
    pub rounds: Vec<Round>,
}

impl ClientLog {
    /// Returns true if and only if the client gave up waiting for an echo.
    pub fn gave_up(&self) -> bool {
        self.rounds.iter().any(|r| r.echo.is_none())
    }

    /// Its longest wait for an echo, in ms.
    pub fn longest_wait(&self) -> Option<f64> {
        self.rounds.iter().map(Round::waited).reduce(f64::max)
    }
}

/// What a server thread was doing over a span of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Blocked in accept() (a blocking driver's accept thread between connections).
    Accept,
    /// Blocked in read().
    Read,
    /// Blocked in write().
    Write,
    /// Running: serving a connection between its blocking calls.
    Running,
    /// The reactor, asleep in epoll_wait.
    Asleep,
    /// The reactor's work in one turn: what epoll_wait reported.
    Turn,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Accept => "accept",
            State::Read => "read",
            State::Write => "write",
            State::Running => "running",
            State::Asleep => "asleep",
            State::Turn => "turn",
        }
    }

    fn color(self) -> &'static str {
        match self {
            State::Accept => "#8d6cab",
            State::Read => "#d1495b",
            State::Write => "#f08a4b",
            State::Running => "#2e933c",
            State::Asleep => "#a9d3f0",
            State::Turn => "#1b3a6b",
        }
    }
}

/// One span of a thread's time, in ms.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// What the thread was doing.
    pub state: State,
    /// From.
    pub start: f64,
    /// To.
    pub end: f64,
    /// What the trace said, for the picture's tooltip.
    pub title: String,
    /// What the span was about, shortly ("conn 3"), drawn inside it where it fits.
    pub what: String,
}

/// Something the reactor did inside a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkKind {
    /// epoll_wait reported readiness (or the waker).
    Event,
    /// A connection accepted.
    Accept,
    /// Bytes read (or the end of the stream).
    Read,
    /// Bytes written.
    Wrote,
    /// A call that said WouldBlock (EAGAIN): accept with the backlog empty, or read.
    WouldBlock,
}

/// One thing the reactor did, at a moment, in ms.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    /// What it did.
    pub kind: MarkKind,
    /// When (the trace line's timestamp).
    pub at: f64,
    /// A short label ("read 5 B").
    pub label: String,
    /// The trace line.
    pub title: String,
}

/// One OS thread of a server, as its trace tells it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lane {
    /// The thread's name (`iterative-accept`, `conn-2`, `reactor`).
    pub thread: String,
    /// Its time, in order.
    pub spans: Vec<Span>,
    /// The reactor's steps (empty for the blocking drivers).
    pub marks: Vec<Mark>,
}

/// A connection the server accepted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accepted {
    /// The server's connection number.
    pub conn: u64,
    /// The peer's port (a client's [`ClientLog::port`]).
    pub port: u16,
    /// When the server's accept returned it, in ms.
    pub at: f64,
}

/// The scenario under one driver.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    /// The server's driver.
    pub driver: Driver,
    /// Its threads that served anyone, in order of appearance.
    pub lanes: Vec<Lane>,
    /// The clients, by number.
    pub clients: Vec<ClientLog>,
    /// Its accepts, in order.
    pub accepts: Vec<Accepted>,
    /// When the last client closed, in ms: the picture ends there.
    pub end: f64,
}

impl Recording {
    /// Client `number` (from 1).
    pub fn client(&self, number: usize) -> Option<&ClientLog> {
        self.clients.iter().find(|c| c.number == number)
    }

    /// The server's connection for `client`, if it accepted it while the picture ran.
    pub fn accepted(&self, client: &ClientLog) -> Option<Accepted> {
        self.accepts
            .iter()
            .copied()
            .find(|a| a.port == client.port && a.at <= self.end)
    }

    /// Returns true if and only if `round` of `client` waited unaccepted: sent while the
    /// client was still in the kernel's listen backlog, its echo waiting for an accept.
    pub fn waited_in_backlog(&self, client: &ClientLog, round: &Round) -> bool {
        self.accepted(client).map_or(true, |a| a.at > round.sent)
    }
}

/// Runs the scenario under each of `drivers` (servers started from `exe`), writes the
/// picture to `path`, prints a line per driver to `out`, and returns the recordings.
pub fn draw(
    exe: &Path,
    drivers: &[Driver],
    path: &Path,
    out: &mut dyn Write,
) -> io::Result<Vec<Recording>> {
    writeln!(
        out,
        "Who waits where: {CLIENTS} clients connect {} ms apart; 1, 2 and 4 each send a \
         line and wait for\nits echo, {ROUNDS} times, {} ms apart; client {SILENT_CLIENT} \
         says nothing. Each talker's longest wait\nfor an echo, and the threads that \
         served anyone:",
        STAGGER.as_millis(),
        GAP.as_millis()
    )?;
    out.flush()?;
    let mut recs = Vec::new();
    for &driver in drivers {
        let rec = record(exe, driver)?;
        let waits: Vec<String> = rec
            .clients
            .iter()
            .filter(|c| c.talks)
            .map(|c| {
                let w = c.longest_wait().unwrap_or(0.0);
                let backlog = c
                    .rounds
                    .iter()
                    .any(|r| rec.waited_in_backlog(c, r) && r.waited() >= 1.0);
                match (c.gave_up(), backlog) {
                    (true, _) => format!("{}: gave up after {}", c.number, ms_text(w)),
                    (false, true) => format!("{}: {} (in the backlog)", c.number, ms_text(w)),
                    (false, false) => format!("{}: {}", c.number, ms_text(w)),
                }
            })
            .collect();
        writeln!(
            out,
            "  {:<10} {}  ({} thread{})",
            driver.to_string(),
            waits.join(", "),
            rec.lanes.len(),
            if rec.lanes.len() == 1 { "" } else { "s" }
        )?;
        out.flush()?;
        recs.push(rec);
    }
    let svg = render(&recs);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, svg)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))?;
    writeln!(out, "wrote {}", path.display())?;
    Ok(recs)
}

/// Runs the scenario once against a fresh `driver` server from `exe`.
pub fn record(exe: &Path, driver: Driver) -> io::Result<Recording> {
    let server = TracedServer::start(exe, driver)?;
    let addr = server.addr;
    let t0 = Instant::now();
    let wall0 = wall_us(SystemTime::now());
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut done_rx = Some(done_rx);
    let mut talkers = Vec::new();
    let mut silent = None;
    for n in 1..=CLIENTS {
        let b = std::thread::Builder::new().name(format!("waits-client-{n}"));
        if n == SILENT_CLIENT {
            let rx = done_rx.take();
            silent = Some(b.spawn(move || silent_client(addr, t0, n, rx))?);
        } else {
            talkers.push(b.spawn(move || talking_client(addr, t0, n))?);
        }
    }
    let joined = |h: std::thread::JoinHandle<io::Result<ClientLog>>| {
        h.join()
            .unwrap_or_else(|_| Err(io::Error::other("a client thread panicked")))
    };
    let mut results: Vec<io::Result<ClientLog>> = talkers.into_iter().map(joined).collect();
    // The talkers are done: the silent client leaves too.
    drop(done_tx);
    results.extend(silent.map(joined));
    let lines = server.stop();
    let mut clients = Vec::new();
    for r in results {
        clients.push(r.map_err(|e| {
            io::Error::new(e.kind(), format!("a client of the {driver} server: {e}"))
        })?);
    }
    clients.sort_by_key(|c| c.number);
    let end = clients.iter().map(|c| c.closed).fold(0.0, f64::max);
    let (lanes, accepts) = lanes_from_trace(driver, &lines, wall0, end);
    Ok(Recording {
        driver,
        lanes,
        clients,
        accepts,
        end,
    })
}

fn since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

fn sleep_until(at: Instant) {
    let left = at.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        std::thread::sleep(left);
    }
}

fn connect(addr: SocketAddr, t0: Instant, n: usize) -> io::Result<(TcpStream, f64, u16)> {
    sleep_until(t0 + STAGGER * (n as u32 - 1));
    let connected = since(t0);
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_nodelay(true)?;
    let port = s.local_addr()?.port();
    Ok((s, connected, port))
}

/// Sends [`ROUNDS`] lines, each after the previous one's echo and a [`GAP`].
fn talking_client(addr: SocketAddr, t0: Instant, n: usize) -> io::Result<ClientLog> {
    let (mut s, connected, port) = connect(addr, t0, n)?;
    let mut rounds = Vec::new();
    for i in 0..ROUNDS {
        if i > 0 {
            std::thread::sleep(GAP);
        }
        let sent = since(t0);
        s.write_all(LINE)?;
        let echoed = wait_for_echo(&mut s, Instant::now() + PATIENCE)?;
        let until = since(t0);
        rounds.push(Round {
            sent,
            echo: echoed.then_some(until),
            until,
        });
        if !echoed {
            break;
        }
    }
    if rounds.last().is_some_and(|r| r.echo.is_some()) {
        std::thread::sleep(GAP);
    }
    drop(s);
    Ok(ClientLog {
        number: n,
        talks: true,
        port,
        connected,
        closed: since(t0),
        rounds,
    })
}

/// Reads until a whole line is back (true), or the deadline passes or the server
/// closes (false).
fn wait_for_echo(s: &mut TcpStream, deadline: Instant) -> io::Result<bool> {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.contains(&b'\n') {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
    }
}

/// Connects and says nothing until the talkers are done (`done`'s sender dropped).
fn silent_client(
    addr: SocketAddr,
    t0: Instant,
    n: usize,
    done: Option<mpsc::Receiver<()>>,
) -> io::Result<ClientLog> {
    let (s, connected, port) = connect(addr, t0, n)?;
    if let Some(done) = done {
        let _ = done.recv_timeout(SILENT_BOUND);
    }
    drop(s);
    Ok(ClientLog {
        number: n,
        talks: false,
        port,
        connected,
        closed: since(t0),
        rounds: Vec::new(),
    })
}

/// A server child with its stderr (the trace) collected.
struct TracedServer {
    child: ChildGuard,
    addr: SocketAddr,
    stderr: std::thread::JoinHandle<Vec<String>>,
}

impl TracedServer {
    fn start(exe: &Path, driver: Driver) -> io::Result<TracedServer> {
        let what = format!("the {driver} server");
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "echo", "--driver", &driver.to_string()])
            .args(["--addr", "127.0.0.1:0", "--shutdown-grace", "0.5"])
            .env("RUST_LOG", "sockloop=trace")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {what} ({:?}): {e}", cmd.get_program()),
            )
        })?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let mut child = ChildGuard::new(child);
        let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
            return Err(io::Error::other("the server's output is not piped"));
        };
        // Both pipes are drained until the server exits, so it never blocks on a log line.
        let stderr = std::thread::Builder::new()
            .name("server-trace".into())
            .spawn(move || {
                BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                    .collect()
            })?;
        let addr = crate::procfs::listening_addr(&mut child, stdout, &what)?;
        Ok(TracedServer {
            child,
            addr,
            stderr,
        })
    }

    /// Stops the server (SIGINT, then SIGKILL past a deadline) and returns its trace.
    fn stop(mut self) -> Vec<String> {
        self.child.stop();
        // The child is reaped: its end of the pipe is closed, so the reader ends.
        self.stderr.join().unwrap_or_default()
    }
}

/// Microseconds since the Unix epoch.
fn wall_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An RFC 3339 UTC timestamp (`2026-12-01T18:46:15.257817Z`) in µs since the epoch.
pub fn parse_timestamp(ts: &str) -> Option<i64> {
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac: String = frac.chars().chain("000000".chars()).take(6).collect();
    let us = frac.parse::<i64>().ok()?;
    Some((days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000 + us)
}

/// One line of env_logger's default format: `[TIMESTAMP LEVEL module] message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine<'a> {
    /// µs since the epoch.
    pub at_us: i64,
    /// The module path (the log target).
    pub module: &'a str,
    /// The message.
    pub msg: &'a str,
}

/// Parses one trace line (None for anything else).
pub fn parse_line(line: &str) -> Option<TraceLine<'_>> {
    let (head, msg) = line.strip_prefix('[')?.split_once("] ")?;
    let mut it = head.split_whitespace();
    let at_us = parse_timestamp(it.next()?)?;
    let _level = it.next()?;
    let module = it.next()?;
    Some(TraceLine { at_us, module, msg })
}

/// `conn N: rest` → (N, rest).
fn conn_line(msg: &str) -> Option<(u64, &str)> {
    let (id, rest) = msg.strip_prefix("conn ")?.split_once(": ")?;
    Some((id.parse().ok()?, rest))
}

/// The leading digits of `s` as a number.
fn leading_number(s: &str) -> Option<u64> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// `accept PEER as conn N...` → (PEER, N).
fn accept_line(msg: &str) -> Option<(&str, u64)> {
    let (peer, rest) = msg.strip_prefix("accept ")?.split_once(" as conn ")?;
    Some((peer, leading_number(rest)?))
}

/// `close PEER (conn N): reason` → N.
fn close_line(msg: &str) -> Option<u64> {
    let rest = msg.strip_prefix("close ")?;
    leading_number(&rest[rest.find("(conn ")? + 6..])
}

fn port_of(peer: &str) -> u16 {
    peer.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// A span being drawn: what a lane is doing since `start`.
struct Open {
    state: State,
    start: f64,
    what: String,
}

/// Turns trace lines into lanes, one span at a time.
#[derive(Default)]
struct Lanes {
    lanes: Vec<Lane>,
    open: Vec<Option<Open>>,
    conn_thread: Vec<(u64, usize)>,
    accepts: Vec<Accepted>,
}

impl Lanes {
    fn lane(&mut self, thread: &str) -> usize {
        if let Some(i) = self.lanes.iter().position(|l| l.thread == thread) {
            return i;
        }
        self.lanes.push(Lane {
            thread: thread.to_string(),
            ..Lane::default()
        });
        self.open.push(None);
        self.lanes.len() - 1
    }

    fn thread_of(&self, conn: u64) -> Option<usize> {
        self.conn_thread
            .iter()
            .rev()
            .find(|(c, _)| *c == conn)
            .map(|&(_, l)| l)
    }

    fn serves(&mut self, conn: u64, lane: usize) {
        self.conn_thread.push((conn, lane));
    }

    fn state(&self, lane: usize) -> Option<State> {
        self.open[lane].as_ref().map(|o| o.state)
    }

    /// Ends lane `i`'s open span at `at` (its tooltip ending with `how`) and opens `next`
    /// (state and what it is about).
    fn switch(&mut self, i: usize, at: f64, how: &str, next: Option<(State, String)>) {
        if let Some(o) = self.open[i].take() {
            let doing = match o.state {
                State::Accept => "blocked in accept()".to_string(),
                State::Read => format!("blocked in read() on {}", o.what),
                State::Write => format!("blocked in write() on {}", o.what),
                State::Running => format!("running: serving {}", o.what),
                State::Asleep if o.what.starts_with("io_uring_enter") => {
                    format!("asleep in {}", o.what)
                }
                State::Asleep => format!("asleep in epoll_wait ({})", o.what),
                State::Turn => format!("a turn's work ({})", o.what),
            };
            let mut title = format!(
                "{}: {doing}, {} ({:.3} to {:.3} ms)",
                self.lanes[i].thread,
                ms_text(at - o.start),
                o.start,
                at
            );
            if !how.is_empty() {
                title.push_str(": ");
                title.push_str(how);
            }
            self.lanes[i].spans.push(Span {
                state: o.state,
                start: o.start,
                end: at,
                title,
                what: o.what,
            });
        }
        self.open[i] = next.map(|(state, what)| Open {
            state,
            start: at,
            what,
        });
    }

    fn finish(mut self, end: f64) -> (Vec<Lane>, Vec<Accepted>) {
        for i in 0..self.lanes.len() {
            if self.open[i].as_ref().is_some_and(|o| o.start < end) {
                self.switch(i, end, "still so when the last client left", None);
            }
        }
        (self.lanes, self.accepts)
    }
}

/// The lanes of `driver`'s server from its trace `lines` (timestamps made relative to
/// `wall0_us`, in ms), up to `end` ms, and its accepts.
pub fn lanes_from_trace(
    driver: Driver,
    lines: &[String],
    wall0_us: i64,
    end: f64,
) -> (Vec<Lane>, Vec<Accepted>) {
    let mut b = Lanes::default();
    let parsed = lines
        .iter()
        .filter_map(|l| parse_line(l))
        // The core library's lines only: `sockloop` alone is the binary's main thread.
        .filter(|l| l.module.starts_with("sockloop::"))
        .map(|l| ((l.at_us - wall0_us) as f64 / 1000.0, l))
        .take_while(|(t, _)| *t <= end);
    match driver {
        Driver::Reactor => {
            let r = b.lane("reactor");
            let mut turn: Vec<String> = Vec::new();
            for (t, l) in parsed {
                reactor_line(&mut b, r, &mut turn, t, l.msg);
            }
        }
        Driver::Uring => {
            let r = b.lane("uring");
            let mut turn: Vec<String> = Vec::new();
            for (t, l) in parsed {
                uring_line(&mut b, r, &mut turn, t, l.msg);
            }
        }
        Driver::Iterative | Driver::Threaded => {
            let accept = b.lane(&format!("{driver}-accept"));
            for (t, l) in parsed {
                blocking_line(&mut b, driver, accept, t, l.msg);
            }
        }
    }
    b.finish(end)
}

fn blocking_line(b: &mut Lanes, driver: Driver, accept: usize, t: f64, msg: &str) {
    let iterative = driver == Driver::Iterative;
    if msg.starts_with("listening on ") {
        b.switch(accept, t, "", Some((State::Accept, String::new())));
    } else if let Some((peer, id)) = accept_line(msg) {
        b.accepts.push(Accepted {
            conn: id,
            port: port_of(peer),
            at: t,
        });
        b.switch(accept, t, &format!("returned conn {id} from {peer}"), None);
        let what = format!("conn {id}");
        if iterative {
            b.serves(id, accept);
            b.switch(accept, t, "", Some((State::Running, what)));
        } else {
            // It runs between the accept it returned from and the next: not traced, so
            // drawn as a sliver.
            let thread = b.lanes[accept].thread.clone();
            b.lanes[accept].spans.push(Span {
                state: State::Running,
                start: t,
                end: t,
                title: format!(
                    "{thread}: running at {t:.3} ms: accept() returned conn {id} from {peer}; \
                     starting thread conn-{id} for it, then back to accept()"
                ),
                what,
            });
            let what = format!("conn {id}");
            b.switch(accept, t, "", Some((State::Accept, String::new())));
            let c = b.lane(&format!("conn-{id}"));
            b.serves(id, c);
            b.switch(c, t, "", Some((State::Running, what)));
        }
    } else if let Some(id) = close_line(msg) {
        if let Some(c) = b.thread_of(id) {
            let next = iterative.then(|| (State::Accept, String::new()));
            b.switch(c, t, msg, next);
        }
    } else if let Some((id, rest)) = conn_line(msg) {
        let what = format!("conn {id}");
        if let Some((who, call)) = rest.split_once(" blocking in ") {
            let state = if call.starts_with("read") {
                State::Read
            } else if call.starts_with("write") {
                State::Write
            } else {
                return;
            };
            let c = match who.strip_prefix("thread ") {
                Some(name) => b.lane(name),
                None => match b.thread_of(id) {
                    Some(c) => c,
                    None => return,
                },
            };
            b.serves(id, c);
            b.switch(c, t, "", Some((state, what)));
        } else if rest.starts_with("read() ") || rest.starts_with("write() ") {
            if let Some(c) = b.thread_of(id) {
                b.switch(c, t, rest, Some((State::Running, what)));
            }
        }
    }
}

/// One line of a single-threaded loop's trace (the reactor's or the uring driver's).
/// `sleep` is what the loop's "going to sleep" line says it waits in (`None` for any
/// other line): the lane is asleep from there to the next line, which wakes it into a
/// turn. `mark` parses the turn's other lines into marks.
fn loop_line(
    b: &mut Lanes,
    r: usize,
    turn: &mut Vec<String>,
    t: f64,
    msg: &str,
    sleep: Option<String>,
    mark: impl FnOnce(&mut Lanes) -> Option<(MarkKind, String)>,
) {
    if msg.starts_with("listening on ") {
        b.switch(r, t, "", Some((State::Turn, "starting".into())));
        return;
    }
    if let Some(sleep) = sleep {
        let did = if turn.is_empty() {
            "nothing traced".to_string()
        } else {
            turn.join(", ")
        };
        turn.clear();
        b.switch(r, t, &did, Some((State::Asleep, sleep)));
        return;
    }
    if b.state(r) == Some(State::Asleep) {
        b.switch(
            r,
            t,
            &format!("woken: {msg}"),
            Some((State::Turn, String::new())),
        );
    }
    let Some((kind, label)) = mark(b) else {
        return;
    };
    turn.push(label.clone());
    b.lanes[r].marks.push(Mark {
        kind,
        at: t,
        label,
        title: format!("{t:.3} ms: {msg}"),
    });
}

/// An `accept PEER as conn N` line, noted among the accepts: N.
fn accepted_line(b: &mut Lanes, t: f64, msg: &str) -> Option<u64> {
    let (peer, id) = accept_line(msg)?;
    b.accepts.push(Accepted {
        conn: id,
        port: port_of(peer),
        at: t,
    });
    Some(id)
}

/// The completion driver's trace: asleep in `io_uring_enter` from each line that says
/// it submits and waits; the accepts and the receives and sends that completed are the
/// marks.
fn uring_line(b: &mut Lanes, r: usize, turn: &mut Vec<String>, t: f64, msg: &str) {
    let sleep = msg
        .strip_prefix("uring: io_uring_enter: ")
        .map(|p| format!("io_uring_enter: {p}"));
    loop_line(b, r, turn, t, msg, sleep, |b| {
        if let Some(id) = accepted_line(b, t, msg) {
            return Some((MarkKind::Accept, format!("accept conn {id} completed")));
        }
        let (id, rest) = conn_line(msg)?;
        if let Some(n) = rest
            .strip_prefix("recv completed: ")
            .and_then(leading_number)
        {
            let label = if n == 0 {
                format!("conn {id} recv completed: 0 B, EOF")
            } else {
                format!("conn {id} recv completed: {n} B")
            };
            Some((MarkKind::Read, label))
        } else {
            let n = rest
                .strip_prefix("send completed: the socket took ")
                .and_then(leading_number)?;
            Some((MarkKind::Wrote, format!("conn {id} send completed: {n} B")))
        }
    });
}

/// The reactor's trace: asleep in `epoll_wait` from each `poll:` line; events, accepts,
/// reads, writes and WouldBlocks are the marks.
fn reactor_line(b: &mut Lanes, r: usize, turn: &mut Vec<String>, t: f64, msg: &str) {
    let sleep = msg.strip_prefix("poll: ").map(str::to_string);
    loop_line(b, r, turn, t, msg, sleep, |b| {
        if let Some(ev) = msg.strip_prefix("event: ") {
            return Some((MarkKind::Event, event_label(ev)));
        }
        if let Some(id) = accepted_line(b, t, msg) {
            return Some((MarkKind::Accept, format!("accept conn {id}")));
        }
        if msg.starts_with("listener ") && msg.contains("accept would block") {
            return Some((MarkKind::WouldBlock, "accept: WouldBlock".to_string()));
        }
        let (id, rest) = conn_line(msg)?;
        if rest.starts_with("read: WouldBlock") {
            Some((MarkKind::WouldBlock, format!("conn {id} read: WouldBlock")))
        } else if let Some(n) = rest.strip_prefix("read ").and_then(leading_number) {
            let label = if n == 0 {
                format!("conn {id} read 0 B: EOF")
            } else {
                format!("conn {id} read {n} B")
            };
            Some((MarkKind::Read, label))
        } else {
            let n = rest.strip_prefix("wrote ").and_then(leading_number)?;
            Some((MarkKind::Wrote, format!("conn {id} wrote {n} B")))
        }
    });
}

/// `slot 1 gen 1: readable=true writable=false ...` → `event: slot 1 readable`.
fn event_label(ev: &str) -> String {
    let Some((slot, flags)) = ev.split_once(':') else {
        return format!("event: {ev}");
    };
    let slot = slot.split(" gen ").next().unwrap_or(slot);
    let on: Vec<&str> = flags
        .split_whitespace()
        .filter_map(|f| f.strip_suffix("=true"))
        .collect();
    format!("event: {slot} {}", on.join("+"))
}

/// A duration in ms as a person reads it: `0.35 ms`, `12.3 ms`, `150 ms`.
fn ms_text(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 170.0;
const RIGHT: f64 = 20.0;
const PLOT: f64 = WIDTH - LEFT - RIGHT;
const LANE_H: f64 = 20.0;
const BAR_H: f64 = 14.0;
const CLIENT_H: f64 = 16.0;
const CLIENT_BAR_H: f64 = 10.0;
const WAIT_COLOR: &str = "#f3c969";
const GIVE_UP_COLOR: &str = "#c1121f";

/// What each driver's heading says.
fn blurb(d: Driver) -> &'static str {
    match d {
        Driver::Iterative => "one thread serves one client at a time, to the end",
        Driver::Threaded => "a thread per connection, each blocked in its own read()",
        Driver::Reactor => "one thread, asleep in epoll_wait until a socket is ready",
        Driver::Uring => "one thread, asleep in io_uring_enter until an operation completes",
    }
}

/// The threads of `d`'s server that serve no client (not drawn).
fn idle_threads(d: Driver) -> &'static str {
    match d {
        Driver::Reactor => "main (waiting for the reactor thread to end) and the Ctrl-C thread",
        Driver::Uring => {
            "main (waiting for the server to end), uring-server (joining the uring thread) \
             and the Ctrl-C thread"
        }
        _ => {
            "main (waiting for the server to end), blocking-server (joining the accept \
             thread) and the Ctrl-C thread"
        }
    }
}

/// A rough width of `s` in px at font size `size` (sans-serif).
fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * 0.56
}

/// Draws the recordings: one group of lanes per driver on one time axis, then one of
/// the reactor's turns zoomed in.
pub fn render(recs: &[Recording]) -> String {
    let range = recs.iter().map(|r| r.end).fold(1.0, f64::max);
    let step = nice_step(range / 9.0);
    let range = (range / step).ceil() * step;
    let x = move |t: f64| LEFT + t.clamp(0.0, range) / range * PLOT;

    let mut body = String::new();
    let mut y = 0.0;
    // Title and legend.
    let _ = writeln!(
        body,
        "<text x=\"20\" y=\"26\" font-size=\"17\" font-weight=\"bold\">Who waits where: \
         the same {CLIENTS} clients under each driver</text>\n\
         <text x=\"20\" y=\"46\" fill=\"#444\">Clients 1, 2 and 4 connect {} ms apart; \
         each sends a line, waits for its echo and pauses {} ms, {ROUNDS} times (giving up \
         after {} ms).</text>\n\
         <text x=\"20\" y=\"62\" fill=\"#444\">Client {SILENT_CLIENT} connects and says \
         nothing until the others leave. A lane for each server thread that served anyone, \
         from the server's</text>\n\
         <text x=\"20\" y=\"78\" fill=\"#444\">own trace (RUST_LOG=sockloop=trace), then \
         the clients. Time: ms from client 1's connect, on one clock for all. Hover for \
         details.</text>",
        STAGGER.as_millis(),
        GAP.as_millis(),
        PATIENCE.as_millis()
    );
    y += 94.0;
    let rows: [&[(State, &str)]; 2] = [
        &[
            (State::Accept, "blocked in accept()"),
            (State::Read, "blocked in read()"),
            (State::Write, "blocked in write()"),
            (State::Running, "running: serving a connection"),
        ],
        &[
            (
                State::Asleep,
                "reactor, uring: asleep in epoll_wait, io_uring_enter",
            ),
            (
                State::Turn,
                "a turn's work (events or completions, accepts, reads, writes)",
            ),
        ],
    ];
    for row in rows {
        let mut lx = 20.0;
        for &(state, text) in row {
            let _ = writeln!(
                body,
                "<rect x=\"{lx}\" y=\"{y}\" width=\"16\" height=\"11\" fill=\"{}\"/>\
                 <text x=\"{}\" y=\"{}\">{text}</text>",
                state.color(),
                lx + 21.0,
                y + 10.0
            );
            lx += 21.0 + text_width(text, 12.0) + 18.0;
        }
        y += 18.0;
    }
    let mid = y + 5.5;
    let _ = writeln!(
        body,
        "<line x1=\"20\" x2=\"36\" y1=\"{mid}\" y2=\"{mid}\" stroke=\"#aaa\" \
         stroke-width=\"2\"/><text x=\"41\" y=\"{}\">client connected</text>\n\
         <rect x=\"161\" y=\"{y}\" width=\"16\" height=\"11\" fill=\"{WAIT_COLOR}\"/>\
         <text x=\"182\" y=\"{}\">client waiting for its echo</text>\n\
         <line x1=\"375\" x2=\"375\" y1=\"{}\" y2=\"{}\" stroke=\"#111\" \
         stroke-width=\"2\"/><text x=\"382\" y=\"{}\">client sends a line</text>\n\
         <circle cx=\"520\" cy=\"{mid}\" r=\"3\" fill=\"#111\"/>\
         <text x=\"528\" y=\"{}\">its echo arrives</text>\n\
         {}<text x=\"657\" y=\"{}\">client gives up, leaves</text>",
        y + 10.0,
        y + 10.0,
        y - 1.0,
        y + 12.0,
        y + 10.0,
        y + 10.0,
        cross(646.0, mid, "client gives up"),
        y + 10.0,
    );
    y += 36.0;

    // The time axis, on top; its grid runs through every group.
    let axis_y = y;
    y += 8.0;
    let grid_top = y;
    let mut groups = String::new();
    for rec in recs {
        y = group(&mut groups, rec, y, &x);
    }
    let grid_bottom = y;
    let ticks = (range / step).round() as usize;
    for i in 0..=ticks {
        let t = step * i as f64;
        let unit = if i == 0 { " ms" } else { "" };
        let _ = writeln!(
            body,
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{grid_top}\" y2=\"{grid_bottom}\" \
             stroke=\"#e4e4e4\"/><text x=\"{px:.1}\" y=\"{axis_y}\" text-anchor=\"middle\" \
             fill=\"#444\">{t}{unit}</text>",
            px = x(t)
        );
    }
    body.push_str(&groups);

    if let Some(rec) = recs.iter().find(|r| r.driver == Driver::Reactor) {
        y = zoom(&mut body, rec, y + 6.0);
    }
    y += 8.0;
    let _ = writeln!(
        body,
        "<text x=\"20\" y=\"{}\" font-size=\"11\" fill=\"#555\">How the spans are found: \
         blocked in read() runs from the trace's \"blocking in read()\" to \"read() \
         returned\", likewise write(); accept() has no line of its own,</text>\n\
         <text x=\"20\" y=\"{}\" font-size=\"11\" fill=\"#555\">so an accept thread's time \
         between accepts is drawn as blocked in it. The reactor sleeps from \"poll: \
         sleeping\" to its next line, and works until the next \"poll:\".</text>\n\
         <text x=\"20\" y=\"{}\" font-size=\"11\" fill=\"#555\">The uring driver \
         likewise sleeps from each \"io_uring_enter\" line to its next line.</text>",
        y + 4.0,
        y + 18.0,
        y + 32.0
    );
    y += 44.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{y}\" \
         viewBox=\"0 0 {WIDTH} {y}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{WIDTH}\" height=\"{y}\" fill=\"white\"/>"
    );
    s.push_str(&body);
    s.push_str("</svg>\n");
    s
}

/// A red × centred on (cx, cy) with a tooltip.
fn cross(cx: f64, cy: f64, title: &str) -> String {
    let d = 4.0;
    format!(
        "<path d=\"M{:.1} {:.1}L{:.1} {:.1}M{:.1} {:.1}L{:.1} {:.1}\" stroke=\"{GIVE_UP_COLOR}\" \
         stroke-width=\"2.2\"><title>{}</title></path>",
        cx - d,
        cy - d,
        cx + d,
        cy + d,
        cx - d,
        cy + d,
        cx + d,
        cy - d,
        escape(title)
    )
}

/// Draws one driver's group from `y`; returns the y below it.
fn group(s: &mut String, rec: &Recording, mut y: f64, x: &dyn Fn(f64) -> f64) -> f64 {
    let d = rec.driver;
    let _ = writeln!(
        s,
        "<g class=\"driver\" data-driver=\"{d}\">\n<text x=\"20\" y=\"{}\" \
         font-size=\"14\"><tspan font-weight=\"bold\">{d}</tspan><tspan fill=\"#444\" dx=\"6\">\
         — {}</tspan></text>",
        y + 15.0,
        blurb(d)
    );
    y += 22.0;
    for lane in &rec.lanes {
        let serves: Vec<String> = lane_clients(rec, lane);
        // A thread of one connection says whose; the others serve (or would serve) all.
        let label = match serves.as_slice() {
            [one] if lane.thread != "reactor" => format!("{} (client {one})", lane.thread),
            _ => lane.thread.clone(),
        };
        let top = y + (LANE_H - BAR_H) / 2.0;
        let _ = writeln!(
            s,
            "<g class=\"lane\" data-driver=\"{d}\" data-thread=\"{}\">\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{LEFT}\" y=\"{top}\" width=\"{PLOT}\" height=\"{BAR_H}\" \
             fill=\"#f4f4f4\"/>",
            escape(&lane.thread),
            LEFT - 8.0,
            y + 14.0,
            escape(&label)
        );
        for sp in &lane.spans {
            let (x0, x1) = (x(sp.start), x(sp.end));
            if x1 <= x0 && sp.end < 0.0 {
                continue;
            }
            let min = if matches!(sp.state, State::Running | State::Turn) {
                1.0
            } else {
                0.0
            };
            let w = (x1 - x0).max(min);
            if w <= 0.0 {
                continue;
            }
            let _ = writeln!(
                s,
                "<rect class=\"{}\" x=\"{x0:.2}\" y=\"{top}\" width=\"{w:.2}\" \
                 height=\"{BAR_H}\" fill=\"{}\"><title>{}</title></rect>",
                sp.state.name(),
                sp.state.color(),
                escape(&sp.title)
            );
            let whose = client_of(rec, &sp.what).map_or(sp.what.clone(), |c| {
                let role = if c.talks { "" } else { ", silent" };
                format!("client {}{role}", c.number)
            });
            let call = match sp.state {
                State::Read => "read()",
                State::Write => "write()",
                State::Accept => "accept()",
                _ => "",
            };
            // The longest text that fits: the call and whose, the call, nothing.
            let inside = [format!("{call} on {whose}"), call.to_string()]
                .into_iter()
                .filter(|t| sp.state != State::Accept || t == call)
                .find(|t| text_width(t, 10.0) + 8.0 < w)
                .unwrap_or_default();
            if !call.is_empty() && !inside.is_empty() {
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" fill=\"white\" \
                     pointer-events=\"none\">{inside}</text>",
                    x0 + 4.0,
                    top + 10.5
                );
            }
        }
        s.push_str("</g>\n");
        y += LANE_H;
    }
    y += 2.0;
    for c in &rec.clients {
        y = client_lane(s, rec, c, y, x);
    }
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"{}\" font-size=\"10.5\" fill=\"#666\">Not drawn: {}: \
         asleep throughout, serving no one.</text>\n</g>",
        y + 11.0,
        idle_threads(d)
    );
    y + 22.0
}

/// The client whose connection `what` (`conn N`) is.
fn client_of<'a>(rec: &'a Recording, what: &str) -> Option<&'a ClientLog> {
    let conn: u64 = what.strip_prefix("conn ")?.parse().ok()?;
    let a = rec.accepts.iter().find(|a| a.conn == conn)?;
    rec.clients.iter().find(|c| c.port == a.port)
}

/// The clients a lane served (numbers), by the connections it handled.
fn lane_clients(rec: &Recording, lane: &Lane) -> Vec<String> {
    let mut out = Vec::new();
    for a in &rec.accepts {
        let here = lane
            .spans
            .iter()
            .any(|sp| sp.what == format!("conn {}", a.conn));
        if let Some(c) = rec.clients.iter().find(|c| c.port == a.port) {
            if here && !out.contains(&c.number.to_string()) {
                out.push(c.number.to_string());
            }
        }
    }
    out
}

fn client_lane(
    s: &mut String,
    rec: &Recording,
    c: &ClientLog,
    y: f64,
    x: &dyn Fn(f64) -> f64,
) -> f64 {
    let d = rec.driver;
    let n = c.number;
    let mid = y + CLIENT_H / 2.0;
    let role = if c.talks { "talks" } else { "silent" };
    let _ = writeln!(
        s,
        "<g class=\"client\" data-driver=\"{d}\" data-client=\"{n}\">\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\" fill=\"#555\" \
         font-style=\"italic\">client {n} ({role})</text>\
         <line x1=\"{:.2}\" x2=\"{:.2}\" y1=\"{mid}\" y2=\"{mid}\" stroke=\"#aaa\" \
         stroke-width=\"2\"><title>client {n}: connected from {:.2} to {:.2} ms (port {})\
         </title></line>",
        LEFT - 8.0,
        y + 12.0,
        x(c.connected),
        x(c.closed),
        c.connected,
        c.closed,
        c.port
    );
    for r in &c.rounds {
        let (x0, x1) = (x(r.sent), x(r.until));
        let backlog = rec.waited_in_backlog(c, r);
        let why = match (backlog, rec.accepted(c)) {
            (true, Some(a)) => format!(
                ": unaccepted, in the listen backlog, until the server accepted it at \
                 {:.1} ms",
                a.at
            ),
            (true, None) => ": never accepted, in the listen backlog throughout".into(),
            (false, _) => String::new(),
        };
        let outcome = if r.echo.is_some() {
            "waited"
        } else {
            "gave up after waiting"
        };
        let title = format!(
            "{d}: client {n} sent a line at {:.2} ms and {outcome} {} for its echo{why}",
            r.sent,
            ms_text(r.waited())
        );
        let top = mid - CLIENT_BAR_H / 2.0;
        let _ = writeln!(
            s,
            "<rect class=\"wait\" data-driver=\"{d}\" data-client=\"{n}\" \
             data-ms=\"{:.3}\" data-backlog=\"{}\" x=\"{x0:.2}\" y=\"{top}\" \
             width=\"{:.2}\" height=\"{CLIENT_BAR_H}\" fill=\"{WAIT_COLOR}\">\
             <title>{}</title></rect>",
            r.waited(),
            if backlog { "yes" } else { "no" },
            (x1 - x0).max(0.5),
            escape(&title)
        );
        let inside = match (backlog, r.echo.is_some()) {
            (true, true) => format!("{} in the backlog", ms_text(r.waited())),
            (true, false) => format!("{} in the backlog, gave up", ms_text(r.waited())),
            (false, _) => ms_text(r.waited()),
        };
        if r.waited() >= 2.0 && text_width(&inside, 9.5) + 8.0 < x1 - x0 {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"9.5\" fill=\"#222\" \
                 pointer-events=\"none\">{}</text>",
                x0 + 6.0,
                mid + 3.5,
                escape(&inside)
            );
        }
        let _ = writeln!(
            s,
            "<line class=\"send\" x1=\"{x0:.2}\" x2=\"{x0:.2}\" y1=\"{}\" y2=\"{}\" \
             stroke=\"#111\" stroke-width=\"2\"><title>client {n} sends a line at {:.2} ms\
             </title></line>",
            mid - 7.0,
            mid + 7.0,
            r.sent
        );
        match r.echo {
            Some(t) => {
                let _ = writeln!(
                    s,
                    "<circle cx=\"{x1:.2}\" cy=\"{mid}\" r=\"3\" fill=\"#111\"><title>client \
                     {n}: the echo is back at {t:.2} ms</title></circle>"
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "<g class=\"gave-up\" data-driver=\"{d}\" data-client=\"{n}\">{}</g>",
                    cross(x1, mid, &title)
                );
            }
        }
    }
    s.push_str("</g>\n");
    y + CLIENT_H
}

/// The reactor's turns around client 1's first line (from its accept to its echo),
/// zoomed in, with each step labelled; returns the y below it.
fn zoom(s: &mut String, rec: &Recording, mut y: f64) -> f64 {
    let Some(lane) = rec.lanes.iter().find(|l| l.thread == "reactor") else {
        return y;
    };
    let Some(first) = rec
        .client(1)
        .and_then(|c| rec.accepted(c))
        .map(|a| (a.conn, a.at))
    else {
        return y;
    };
    let (conn, accepted) = first;
    let wrote = format!("conn {conn} wrote");
    let Some(echoed) = lane
        .marks
        .iter()
        .find(|m| m.at >= accepted && m.kind == MarkKind::Wrote && m.label.starts_with(&wrote))
        .map(|m| m.at)
    else {
        return y;
    };
    // From a little before the turn that accepted to a little after the one that echoed.
    let turn_of = |t: f64| {
        lane.spans
            .iter()
            .find(|sp| sp.state == State::Turn && sp.start <= t && t <= sp.end)
    };
    let from = turn_of(accepted).map_or(accepted, |sp| sp.start);
    let to = turn_of(echoed).map_or(echoed, |sp| sp.end);
    let pad = ((to - from) * 0.08).max(0.005);
    let (w0, w1) = (from - pad, to + pad);
    let x = |t: f64| LEFT + (t.clamp(w0, w1) - w0) / (w1 - w0) * PLOT;

    let _ = writeln!(
        s,
        "<g class=\"zoom\" data-driver=\"reactor\">\n<text x=\"20\" y=\"{}\" \
         font-size=\"14\"><tspan font-weight=\"bold\">reactor, zoomed in</tspan>\
         <tspan fill=\"#444\" dx=\"6\">— client 1's first line: {} from the turn that accepts \
         it to the turn that echoes it</tspan></text>",
        y + 15.0,
        ms_text(to - from)
    );
    y += 24.0;
    // Axis.
    let step = nice_step((w1 - w0) / 8.0);
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let axis_y = y + 10.0;
    let lane_top = y + 18.0;
    let lane_h = 22.0;
    let mut t = (w0 / step).ceil() * step;
    while t <= w1 {
        let _ = writeln!(
            s,
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{px:.1}\" y=\"{axis_y}\" text-anchor=\"middle\" fill=\"#444\">\
             {t:.decimals$}</text>",
            lane_top - 4.0,
            lane_top + lane_h + 4.0,
            px = x(t)
        );
        t += step;
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{axis_y}\" text-anchor=\"end\" fill=\"#444\">ms</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">reactor</text>",
        LEFT - 8.0,
        LEFT - 8.0,
        lane_top + 15.0
    );
    for sp in &lane.spans {
        if sp.end < w0 || sp.start > w1 {
            continue;
        }
        let (x0, x1) = (x(sp.start), x(sp.end));
        let _ = writeln!(
            s,
            "<rect class=\"{}\" x=\"{x0:.2}\" y=\"{lane_top}\" width=\"{:.2}\" \
             height=\"{lane_h}\" fill=\"{}\" fill-opacity=\"{}\"><title>{}</title></rect>",
            sp.state.name(),
            (x1 - x0).max(1.0),
            sp.state.color(),
            if sp.state == State::Turn { 0.85 } else { 1.0 },
            escape(&sp.title)
        );
        let inside = match sp.state {
            State::Asleep => "asleep in epoll_wait",
            State::Turn => "turn",
            _ => "",
        };
        if !inside.is_empty() && text_width(inside, 10.0) + 8.0 < x1 - x0 {
            let fill = if sp.state == State::Turn {
                "white"
            } else {
                "#1b3a6b"
            };
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" fill=\"{fill}\" \
                 pointer-events=\"none\">{inside}</text>",
                x0 + 4.0,
                lane_top + 14.5
            );
        }
    }
    // The marks: a tick through the lane, its label below, on the first of four rows
    // where it does not overlap the label before it.
    let rows = 4;
    let mut row_end = vec![f64::MIN; rows];
    let label_top = lane_top + lane_h + 14.0;
    let mut lowest = 0;
    let mut labels = String::new();
    for m in lane.marks.iter().filter(|m| m.at >= w0 && m.at <= w1) {
        let px = x(m.at);
        let color = match m.kind {
            MarkKind::Event => "#3a86ff",
            MarkKind::WouldBlock => "#e63946",
            _ => "#111",
        };
        let width = text_width(&m.label, 10.0);
        let row = (0..rows)
            .find(|&r| row_end[r] + 4.0 < px)
            .unwrap_or_else(|| {
                (0..rows)
                    .min_by(|&a, &b| row_end[a].total_cmp(&row_end[b]))
                    .unwrap_or(0)
            });
        row_end[row] = px + width;
        lowest = lowest.max(row);
        let ly = label_top + 13.0 * row as f64;
        // Every tick and leader first, the labels over them (with a white halo).
        let _ = writeln!(
            s,
            "<g class=\"mark\"><title>{}</title><line x1=\"{px:.2}\" x2=\"{px:.2}\" \
             y1=\"{}\" y2=\"{}\" stroke=\"{color}\" stroke-width=\"2\"/>\
             <line x1=\"{px:.2}\" x2=\"{px:.2}\" y1=\"{}\" y2=\"{}\" stroke=\"{color}\" \
             stroke-width=\"0.6\" stroke-dasharray=\"2 2\"/></g>",
            escape(&m.title),
            lane_top - 2.0,
            lane_top + lane_h + 2.0,
            lane_top + lane_h + 2.0,
            ly - 9.0,
        );
        let _ = writeln!(
            labels,
            "<text x=\"{:.2}\" y=\"{ly}\" font-size=\"10\" fill=\"{color}\" \
             stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\"><title>{}</title>{}\
             </text>",
            px + 2.0,
            escape(&m.title),
            escape(&m.label)
        );
    }
    s.push_str(&labels);
    s.push_str("</g>\n");
    label_top + 13.0 * lowest as f64 + 8.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_microseconds_since_the_epoch() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_timestamp("1970-01-02T00:00:01.5Z"),
            Some(86_401_500_000)
        );
        assert_eq!(
            parse_timestamp("2026-12-01T18:46:15.257817Z"),
            Some(1_796_150_775_257_817)
        );
        assert_eq!(parse_timestamp("2026-12-01 18:46:15Z"), None);
        let l =
            parse_line("[2026-12-01T18:46:15.257817Z TRACE sockloop::blocking] conn 1: x").unwrap();
        assert_eq!((l.module, l.msg), ("sockloop::blocking", "conn 1: x"));
    }

    fn at(ms: f64, module: &str, msg: &str) -> String {
        let us = 1_000_000_000 + (ms * 1000.0) as i64;
        let (secs, frac) = (us / 1_000_000, us % 1_000_000);
        let (h, m, s) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
        let days = secs / 86_400;
        assert_eq!(days, 0, "keep the test on the first day");
        format!("[1970-01-01T{h:02}:{m:02}:{s:02}.{frac:06}Z TRACE {module}] {msg}")
    }

    #[test]
    fn blocked_in_read_spans_from_blocking_to_returned() {
        let b = "sockloop::blocking";
        let srv = "sockloop::blocking::server";
        let lines = [
            at(-5.0, srv, "listening on 127.0.0.1:1 (Iterative driver)"),
            at(1.0, srv, "accept 127.0.0.1:5000 as conn 1"),
            at(1.5, b, "conn 1: thread iterative-accept blocking in read()"),
            at(11.5, b, "conn 1: read() returned 5 bytes"),
            at(
                11.6,
                b,
                "conn 1: thread iterative-accept blocking in write() with 5 bytes",
            ),
            at(11.7, b, "conn 1: write() took 5 of 5 bytes"),
            at(12.0, srv, "close 127.0.0.1:5000 (conn 1): peer closed"),
            at(13.0, "sockloop", "main thread noise"),
        ];
        let (lanes, accepts) = lanes_from_trace(Driver::Iterative, &lines, 1_000_000_000, 20.0);
        assert_eq!(accepts.len(), 1);
        assert_eq!((accepts[0].conn, accepts[0].port), (1, 5000));
        assert_eq!(lanes.len(), 1);
        let states: Vec<(State, f64)> = lanes[0]
            .spans
            .iter()
            .map(|s| (s.state, ((s.end - s.start) * 10.0).round() / 10.0))
            .collect();
        assert_eq!(
            states,
            [
                (State::Accept, 6.0),
                (State::Running, 0.5),
                (State::Read, 10.0),
                (State::Running, 0.1),
                (State::Write, 0.1),
                (State::Running, 0.3),
                (State::Accept, 8.0),
            ]
        );
    }

    #[test]
    fn the_reactor_sleeps_from_poll_to_its_next_line() {
        let r = "sockloop::reactor";
        let lines = [
            at(-1.0, r, "listening on 127.0.0.1:1"),
            at(-0.9, r, "poll: sleeping until an event (no timer armed)"),
            at(2.0, r, "event: slot 0 gen 0: readable=true writable=false"),
            at(
                2.1,
                r,
                "accept 127.0.0.1:5000 as conn 1 (gen 1): handshake done",
            ),
            at(
                2.2,
                r,
                "listener 127.0.0.1:1: accept would block: backlog empty",
            ),
            at(
                2.3,
                r,
                "poll: sleeping at most 5.0 ms (then: a timer), or until an event",
            ),
            at(3.0, r, "event: slot 1 gen 1: readable=true writable=false"),
            at(
                3.1,
                "sockloop::reactor::conn",
                "conn 1: read 5 bytes (short read)",
            ),
            at(3.2, "sockloop::reactor::conn", "conn 1: wrote 5 bytes"),
            at(3.3, r, "poll: sleeping until an event (no timer armed)"),
        ];
        let (lanes, accepts) = lanes_from_trace(Driver::Reactor, &lines, 1_000_000_000, 10.0);
        assert_eq!(accepts[0].conn, 1);
        let lane = &lanes[0];
        let asleep: Vec<f64> = lane
            .spans
            .iter()
            .filter(|s| s.state == State::Asleep)
            .map(|s| ((s.end - s.start) * 10.0).round() / 10.0)
            .collect();
        assert_eq!(asleep, [2.9, 0.7, 6.7]);
        let kinds: Vec<MarkKind> = lane.marks.iter().map(|m| m.kind).collect();
        use MarkKind::*;
        assert_eq!(kinds, [Event, Accept, WouldBlock, Event, Read, Wrote]);
        assert_eq!(lane.marks[0].label, "event: slot 0 readable");
    }
}
