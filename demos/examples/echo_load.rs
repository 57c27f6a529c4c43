//! A closed-loop load generator for the echo demo, written directly on mio.
//!
//! Each of N connections does ping-pong: write one `size`-byte message, read the echo
//! back whole, check every byte, time the round trip, repeat. Closed loop means at most
//! N messages are ever in flight, so the numbers measure the server's latency and
//! per-message cost rather than how deep a queue we can build.
//!
//! ```text
//! sockloop serve echo --driver reactor --addr 127.0.0.1:0     # prints the port
//! cargo run --release --example echo_load -- --addr 127.0.0.1:PORT --conns 500 --secs 5
//! ```

use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// The echo server's address.
    #[arg(long)]
    addr: SocketAddr,
    /// Connections, each with one message in flight.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Seconds run before measuring (caches, page faults, thread start-up excluded).
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// The server's PID: report its CPU time (all threads) per message.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Pin this load generator to one CPU so it does not compete with the server's.
    #[arg(long)]
    pin_cpu: Option<usize>,
}

/// One connection's ping-pong state.
struct Conn {
    stream: TcpStream,
    id: u64,
    round: u64,
    /// The message being sent; also what the echo must match.
    msg: Vec<u8>,
    written: usize,
    buf: Vec<u8>,
    got: usize,
    sent_at: Instant,
    /// Round trips completed inside the measured window.
    measured: u64,
}

impl Conn {
    fn new(stream: TcpStream, id: u64, size: usize) -> Conn {
        let now = Instant::now();
        let mut c = Conn {
            stream,
            id,
            round: 0,
            msg: vec![0; size],
            written: 0,
            buf: vec![0; size],
            got: 0,
            sent_at: now,
            measured: 0,
        };
        c.next_round(now);
        c
    }

    /// Fills `msg` for the next round. The pattern mixes connection id and round number,
    /// so an echo delivered to the wrong connection or a stale echo fails the check.
    fn next_round(&mut self, now: Instant) {
        self.round += 1;
        let seed = self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.round;
        for (j, b) in self.msg.iter_mut().enumerate() {
            let x = seed
                .wrapping_add(j as u64)
                .wrapping_mul(0x2545_F491_4F6C_DD1D);
            *b = (x >> 56) as u8;
        }
        self.written = 0;
        self.got = 0;
        self.sent_at = now;
    }
}

/// What the run saw, apart from latencies.
#[derive(Default)]
struct Tally {
    msgs: u64,
    errors: u64,
    latencies_ns: Vec<u64>,
}

/// Drives one connection as far as it can go without blocking. Edge-triggered
/// readiness only fires again on *new* data or room, so we must keep going until the
/// kernel says WouldBlock, or we could wait forever for an edge that already passed.
/// Returns Err on anything that ends the connection.
fn drive(c: &mut Conn, window: (Instant, Instant), t: &mut Tally) -> io::Result<()> {
    loop {
        if c.written < c.msg.len() {
            match c.stream.write(&c.msg[c.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => c.written += n, // may be partial: loop and write the rest
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        // Read no further than this message: the server sends nothing we did not send.
        match c.stream.read(&mut c.buf[c.got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()), // server closed
            Ok(n) => c.got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if c.got == c.msg.len() {
            if c.buf != c.msg {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "echo mismatch"));
            }
            let now = Instant::now();
            // Count only round trips wholly inside the window: warm-up excluded.
            if c.sent_at >= window.0 && now <= window.1 {
                t.msgs += 1;
                c.measured += 1;
                t.latencies_ns.push((now - c.sent_at).as_nanos() as u64);
            }
            c.next_round(now);
        }
    }
}

/// utime + stime of a whole process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; count fields after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain bits; CPU_SET writes inside it; pid 0 = this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn main() -> io::Result<()> {
    env_logger::init();
    let args = Args::parse();
    if let Some(cpu) = args.pin_cpu {
        pin_to(cpu)?;
    }
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::with_capacity(args.conns);
    let mut tally = Tally::default();

    // Connect with std (blocking, bounded by a timeout), then hand over to mio. On
    // loopback the kernel completes the handshake from the backlog whether or not the
    // server calls accept, so this does not stall on the iterative server either.
    for id in 0..args.conns as u64 {
        let std_stream =
            match std::net::TcpStream::connect_timeout(&args.addr, Duration::from_secs(2)) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("connect {id}: {e}");
                    tally.errors += 1;
                    continue;
                }
            };
        // Nagle would hold a small write back while an earlier one is unacknowledged.
        std_stream.set_nodelay(true)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        // Both directions, registered once: no epoll_ctl per message. A fresh socket is
        // writable at once, so the first poll delivers the edge that sends round 1.
        let both = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut stream, Token(conns.vacant_key()), both)?;
        conns.insert(Conn::new(stream, id, args.size));
    }
    let connected = conns.len();

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup_secs);
    let end = measure_from + Duration::from_secs_f64(args.secs);
    let window = (measure_from, end);
    let (mut cpu_start, mut self_start, mut measuring, mut lost_idle) = (None, None, false, 0);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !measuring && now >= measure_from {
            measuring = true;
            cpu_start = args.server_pid.and_then(cpu_ticks);
            self_start = cpu_ticks(std::process::id());
        }
        // Wake at the window's edges even if nothing happens (the iterative server
        // may never answer most connections): every run ends on time.
        let edge = if measuring { end } else { measure_from };
        match poll.poll(&mut events, Some(edge - now)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
        for ev in events.iter() {
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if let Err(e) = drive(c, window, &mut tally) {
                log::warn!("conn {}: {e}", c.id);
                // Count each failed connection once; dropping it closes the socket.
                // Its slot is never reused, so a later event for this key is skipped.
                tally.errors += 1;
                lost_idle += (c.measured == 0) as usize;
                conns.remove(key);
            }
        }
    }
    let cpu_end = args.server_pid.and_then(cpu_ticks);
    let self_end = cpu_ticks(std::process::id());

    // Zero progress: never completed a measured round trip (the iterative server's
    // waiting clients), or never connected at all.
    let zero = conns.iter().filter(|(_, c)| c.measured == 0).count()
        + lost_idle
        + (args.conns - connected);
    tally.latencies_ns.sort_unstable();
    let lat = &tally.latencies_ns;
    let rate = tally.msgs as f64 / args.secs;
    // SAFETY: sysconf only reads a constant. Ticks are usually 10 ms: fine over seconds.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let secs = |a: Option<u64>, b: Option<u64>| Some((b? - a?) as f64 / tck);
    let cpu_us = secs(cpu_start, cpu_end).map_or(f64::NAN, |s| s * 1e6 / tally.msgs as f64);
    // Our own CPU use: near 100% means the generator, not the server, sets the pace.
    let gen_pct = secs(self_start, self_end).map_or(f64::NAN, |s| s * 100.0 / args.secs);
    let (p50, p99, p999) = (pct(lat, 0.5), pct(lat, 0.99), pct(lat, 0.999));
    // One key=value line: easy to read, and easy for a script to pick apart.
    println!(
        "RESULT conns={} connected={connected} size={} msgs_per_s={rate:.0} p50_us={p50:.1} \
         p99_us={p99:.1} p999_us={p999:.1} max_us={:.1} cpu_us_per_msg={cpu_us:.2} gen_cpu_pct={gen_pct:.0} errors={} zero={zero}",
        args.conns, args.size, pct(lat, 1.0), tally.errors
    );
    Ok(())
}
