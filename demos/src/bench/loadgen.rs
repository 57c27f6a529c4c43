//! The load generator: one thread, one sockloop [`Reactor`], up to 10,000 outgoing
//! connections.
//!
//! Every connection is a `Pinger`, a sans-I/O [`Protocol`] like the servers' own: on
//! open it sends `depth` messages of `size` bytes; every byte that comes back is checked
//! against what was sent, and each message echoed whole is a round trip, timed into an
//! HdrHistogram and answered with the next message (so `depth` stay in flight: closed
//! loop, K-deep pipelining). Message bytes are a window into one pseudo-random table at
//! an offset that mixes connection id and sequence number, so an echo delivered to the
//! wrong connection, out of order or stale fails the check; sending and checking are
//! then a copy and a compare.
//!
//! Connections are opened at a bounded rate (at most [`MAX_CONNECTING`] handshakes in
//! flight; the server's listen backlog is 1024). The measured window starts after every
//! connection is open and the warm-up has passed; round trips that started before it or
//! ended after it are not counted. A run that makes no progress for [`STALL`] ends with
//! an error rather than hanging.

use crate::procfs;
use crate::proto::{CloseReason, Out, PeerError, Protocol};
use hdrhistogram::Histogram;
use sockloop::net::Endpoint;
use sockloop::reactor::Reactor;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Most connects in flight at once.
pub const MAX_CONNECTING: usize = 128;

/// How long one connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A run with no progress (no connection opened, no round trip completed) for this long
/// ends with an error.
pub const STALL: Duration = Duration::from_secs(5);

/// The largest message size.
pub const MAX_SIZE: usize = 1 << 16;

/// Bytes of the pattern table: any `MAX_SIZE` window from an offset below `MAX_SIZE`.
const TABLE_LEN: usize = 2 * MAX_SIZE;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// The echo server.
    pub addr: SocketAddr,
    /// Connections.
    pub conns: usize,
    /// Message size in bytes (1 to [`MAX_SIZE`]).
    pub size: usize,
    /// Messages in flight per connection (1: ping-pong).
    pub depth: usize,
    /// Run before the measured window.
    pub warmup: Duration,
    /// The measured window.
    pub secs: Duration,
    /// Idle-memory run: each connection does one round trip, then stays silent; the
    /// server's RSS is read once all have.
    pub idle: bool,
    /// The server's pid, for its CPU time, RSS and threads.
    pub server_pid: u32,
}

/// What a run measured.
#[derive(Debug)]
pub struct LoadResult {
    /// Round trips inside the measured window.
    pub msgs: u64,
    /// Payload bytes echoed inside the window.
    pub bytes: u64,
    /// The measured window's length.
    pub window: Duration,
    /// Round-trip times in nanoseconds.
    pub hist: Histogram<u64>,
    /// Connections that failed, closed early or broke the echo, plus a stall.
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
    /// Server CPU time over the window.
    pub server_cpu: Option<Duration>,
    /// Server RSS at the end (idle: with every connection open).
    pub rss: Option<u64>,
    /// Server RSS before the first connection (idle runs).
    pub rss_base: Option<u64>,
    /// Server threads at the end.
    pub threads: Option<usize>,
    /// Connections that opened.
    pub connected: usize,
}

/// The shared pattern table.
fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..TABLE_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    })
}

/// The table offset of message `seq` of connection `id`.
fn offset(id: u64, seq: u64) -> usize {
    let h = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq).wrapping_mul(0x2545_F491_4F6C_DD1D);
    (h >> 48) as usize % MAX_SIZE
}

/// State every connection of a run shares (one thread: `Rc<RefCell>`).
struct Tally {
    window: Option<(Instant, Instant)>,
    hist: Histogram<u64>,
    msgs: u64,
    bytes: u64,
    /// Opens and round trips, measured or not: the stall detector's clock.
    progress: u64,
    connecting: usize,
    open: usize,
    opened: usize,
    idle_ready: usize,
    errors: u64,
    first_error: Option<String>,
    /// Set when the run is over: closes from here on are ours, not errors.
    finished: bool,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// One connection's side of the echo.
struct Pinger {
    id: u64,
    size: usize,
    depth: usize,
    idle: bool,
    next_seq: u64,
    /// Table offset and send time of every message in flight, oldest first.
    inflight: VecDeque<(usize, Instant)>,
    /// Bytes of the oldest message already echoed.
    got: usize,
    opened: bool,
    tally: Rc<RefCell<Tally>>,
}

impl Pinger {
    fn send(&mut self, out: &mut Out<'_>, now: Instant) {
        let off = offset(self.id, self.next_seq);
        self.next_seq += 1;
        out.push(&table()[off..off + self.size]);
        self.inflight.push_back((off, now));
    }
}

impl Protocol for Pinger {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        self.opened = true;
        {
            let mut t = self.tally.borrow_mut();
            t.connecting -= 1;
            t.open += 1;
            t.opened += 1;
            t.progress += 1;
        }
        let now = Instant::now();
        let n = if self.idle { 1 } else { self.depth };
        for _ in 0..n {
            self.send(out, now);
        }
    }

    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        let mut i = 0;
        while i < input.len() {
            let Some(&(off, sent)) = self.inflight.front() else {
                return Err(PeerError::new(format!(
                    "connection {}: {} bytes arrived that were never sent",
                    self.id,
                    input.len() - i
                )));
            };
            let n = (self.size - self.got).min(input.len() - i);
            let want = &table()[off + self.got..off + self.got + n];
            if &input[i..i + n] != want {
                return Err(PeerError::new(format!(
                    "connection {}: echo mismatch in message {}",
                    self.id,
                    self.next_seq - self.inflight.len() as u64
                )));
            }
            i += n;
            self.got += n;
            if self.got < self.size {
                continue;
            }
            self.got = 0;
            self.inflight.pop_front();
            let now = Instant::now();
            let finished = {
                let mut t = self.tally.borrow_mut();
                t.progress += 1;
                if let Some((from, end)) = t.window {
                    if sent >= from && now <= end {
                        t.msgs += 1;
                        t.bytes += self.size as u64;
                        let ns = u64::try_from((now - sent).as_nanos()).unwrap_or(u64::MAX);
                        t.hist.saturating_record(ns.max(1));
                    }
                }
                if self.idle {
                    t.idle_ready += 1;
                }
                t.finished
            };
            if !self.idle && !finished {
                self.send(out, now);
            }
        }
        Ok(input.len())
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        let mut t = self.tally.borrow_mut();
        if self.opened {
            t.open -= 1;
        } else {
            t.connecting -= 1;
        }
        if !t.finished {
            t.error(format!("connection {}: {reason}", self.id));
        }
    }

    fn handle_eof(&mut self, _rest: &[u8], _out: &mut Out<'_>) -> Result<(), PeerError> {
        Err(PeerError::new("the server closed the connection"))
    }
}

/// Runs `spec` on the calling thread. `progress` is told what is happening about five
/// times a second. Errors only if the reactor itself fails.
pub fn run(spec: &LoadSpec, progress: &mut dyn FnMut(String)) -> io::Result<LoadResult> {
    let size = spec.size.clamp(1, MAX_SIZE);
    let depth = spec.depth.max(1);
    let tally = Rc::new(RefCell::new(Tally {
        window: None,
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| io::Error::other(e.to_string()))?,
        msgs: 0,
        bytes: 0,
        progress: 0,
        connecting: 0,
        open: 0,
        opened: 0,
        idle_ready: 0,
        errors: 0,
        first_error: None,
        finished: false,
    }));
    let to = Endpoint::Inet(spec.addr);
    let pid = spec.server_pid;
    let rss_base = procfs::threads_and_rss(pid).1;
    let mut reactor = Reactor::new()?;
    let mut issued = 0usize;
    let mut window: Option<(Instant, Instant)> = None;
    let mut cpu_start = None;
    let (mut last_progress, mut last_progress_at) = (0u64, Instant::now());
    let mut last_report = Instant::now();
    let mut result_rss_threads = (None, None);
    let mut server_cpu = None;
    loop {
        // Open more connections, a bounded number at a time.
        while issued < spec.conns && tally.borrow().connecting < MAX_CONNECTING {
            let pinger = Pinger {
                id: issued as u64,
                size,
                depth,
                idle: spec.idle,
                next_seq: 0,
                inflight: VecDeque::with_capacity(depth),
                got: 0,
                opened: false,
                tally: Rc::clone(&tally),
            };
            issued += 1;
            tally.borrow_mut().connecting += 1;
            if let Err(e) = reactor.connect(&to, Some(CONNECT_TIMEOUT), pinger) {
                let mut t = tally.borrow_mut();
                t.connecting -= 1;
                t.error(format!("connect {issued}: {e}"));
            }
        }
        reactor.run_once(Some(Duration::from_millis(20)))?;
        let now = Instant::now();
        let mut t = tally.borrow_mut();

        if t.progress != last_progress {
            (last_progress, last_progress_at) = (t.progress, now);
        } else if now - last_progress_at > STALL {
            let what = format!(
                "no progress for {} s ({} of {} connections open, {} echoed; the server \
                 has {} fds open)",
                STALL.as_secs(),
                t.open,
                spec.conns,
                if spec.idle {
                    t.idle_ready as u64
                } else {
                    t.progress - t.opened as u64
                },
                procfs::open_fds(pid).map_or_else(|| "?".into(), |n| n.to_string())
            );
            t.error(what);
            drop(t);
            result_rss_threads = procfs::threads_and_rss(pid);
            break;
        }
        let all_issued = issued == spec.conns && t.connecting == 0;
        if all_issued && t.open == 0 {
            if t.errors == 0 {
                t.error("no connection opened".into());
            }
            break;
        }
        if spec.idle {
            if all_issued && t.idle_ready >= t.opened {
                drop(t);
                // Let the server finish setting up what each connection costs it.
                std::thread::sleep(Duration::from_millis(200));
                result_rss_threads = procfs::threads_and_rss(pid);
                break;
            }
        } else if window.is_none() && all_issued {
            let from = now + spec.warmup;
            window = Some((from, from + spec.secs));
            t.window = window;
        }
        if let Some((from, end)) = window {
            if cpu_start.is_none() && now >= from {
                cpu_start = Some(procfs::cpu_time(pid));
            }
            if now >= end {
                if let (Some(Some(a)), Some(b)) = (cpu_start, procfs::cpu_time(pid)) {
                    server_cpu = Some(b.saturating_sub(a));
                }
                result_rss_threads = procfs::threads_and_rss(pid);
                break;
            }
        }
        if now - last_report >= Duration::from_millis(200) {
            last_report = now;
            let what = match window {
                None => format!("connecting {}/{}", t.opened, spec.conns),
                Some((from, _)) if now < from => "warming up".to_string(),
                Some((from, end)) => format!(
                    "measuring {:.1}/{:.1} s, {} round trips",
                    (now - from).as_secs_f64(),
                    (end - from).as_secs_f64(),
                    t.msgs
                ),
            };
            drop(t);
            progress(what);
        }
    }
    tally.borrow_mut().finished = true;
    drop(reactor);
    let t = Rc::try_unwrap(tally)
        .map_err(|_| io::Error::other("a connection outlived the reactor"))?
        .into_inner();
    Ok(LoadResult {
        msgs: t.msgs,
        bytes: t.bytes,
        window: spec.secs,
        hist: t.hist,
        errors: t.errors,
        first_error: t.first_error,
        server_cpu,
        rss: result_rss_threads.1,
        rss_base,
        threads: result_rss_threads.0,
        connected: t.opened,
    })
}
