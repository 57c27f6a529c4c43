//! Attacks run beside one healthy echo connection, for the "healthy client under attack"
//! scenarios: what a hostile peer costs the others (RELIABILITY.md R3, R11, R12).
//!
//! Each runs on a thread of the load generator's CPU until told to stop, and is bounded
//! in count and bytes as well as time. Its own failures (a refused connect, a reset)
//! are counted, not errors of the measurement: the healthy client's are.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// An attack (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attack {
    /// `conns` connections trickling one byte each every 100 ms, never reading
    /// (slowloris against a line or HTTP server: each holds a connection open for ever).
    Slowloris {
        /// Connections.
        conns: usize,
    },
    /// Connects, each closed at once, as fast as one thread can, `total` at most.
    ConnectStorm {
        /// Connects at most.
        total: usize,
    },
    /// One connection sending `mib` MiB as fast as it can (reading back and discarding
    /// the echo, so the server's backpressure does not simply stop it).
    Blast {
        /// MiB to send at most.
        mib: usize,
    },
    /// `rate` 64-byte UDP datagrams a second at the same server's UDP echo (it is started
    /// with `--also-udp`, on the TCP port's number), paced in 1 ms batches.
    UdpFlood {
        /// Datagrams a second.
        rate: usize,
    },
}

impl Attack {
    /// The scenario name's tail: `slowloris-c<conns>`, `storm-<total>`, `blast-<mib>`.
    pub fn name(&self) -> String {
        match *self {
            Attack::Slowloris { conns } => format!("slowloris-c{conns}"),
            Attack::ConnectStorm { total } => format!("storm-{total}"),
            Attack::Blast { mib } => format!("blast-{mib}"),
            Attack::UdpFlood { rate } => format!("udpflood-{rate}"),
        }
    }

    /// Returns true if and only if the server must also serve UDP (`--also-udp`).
    pub fn needs_udp(&self) -> bool {
        matches!(self, Attack::UdpFlood { .. })
    }

    /// Connections it holds open at once (besides the healthy one).
    pub fn conns(&self) -> usize {
        match *self {
            Attack::Slowloris { conns } => conns,
            Attack::ConnectStorm { .. } | Attack::Blast { .. } | Attack::UdpFlood { .. } => 1,
        }
    }
}

/// What an attack did.
#[derive(Clone, Debug, Default)]
pub struct AttackStats {
    /// Connections opened (slowloris, storm) or 1 (blast); datagrams sent (UDP flood).
    pub connects: u64,
    /// Connects refused or timed out, and writes that failed.
    pub failures: u64,
    /// Bytes sent.
    pub bytes: u64,
}

/// Runs `attack` against `addr` until `stop` is set (or its bound is reached).
pub fn run(addr: SocketAddr, attack: Attack, stop: &AtomicBool) -> AttackStats {
    let mut stats = AttackStats::default();
    match attack {
        Attack::Slowloris { conns } => {
            let mut socks = Vec::with_capacity(conns);
            for _ in 0..conns {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(s) => {
                        let _ = s.set_nonblocking(true);
                        stats.connects += 1;
                        socks.push(s);
                    }
                    Err(_) => stats.failures += 1,
                }
            }
            // One byte from each, every 100 ms; the load's shape, not a wait for
            // readiness.
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                for s in &mut socks {
                    match s.write(b"a") {
                        Ok(n) => stats.bytes += n as u64,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => stats.failures += 1,
                    }
                }
                let pause = Duration::from_millis(100).saturating_sub(started.elapsed());
                pause_unless_stopped(pause, stop);
            }
        }
        Attack::ConnectStorm { total } => {
            for _ in 0..total {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    Ok(s) => {
                        stats.connects += 1;
                        drop(s);
                    }
                    Err(_) => stats.failures += 1,
                }
            }
        }
        Attack::Blast { mib } => {
            let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                stats.failures += 1;
                return stats;
            };
            stats.connects = 1;
            let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            let Ok(mut reader) = s.try_clone() else {
                stats.failures += 1;
                return stats;
            };
            let mut writer = s;
            let done = AtomicBool::new(false);
            std::thread::scope(|scope| {
                // The echo comes back: read and drop it, until the writer is done.
                scope.spawn(|| {
                    let mut buf = vec![0u8; 64 * 1024];
                    while !done.load(Ordering::SeqCst) {
                        match reader.read(&mut buf) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => return,
                        }
                    }
                });
                let chunk = vec![b'b'; 64 * 1024];
                let limit = (mib as u64) << 20;
                while stats.bytes < limit && !stop.load(Ordering::SeqCst) {
                    match writer.write(&chunk) {
                        Ok(n) => stats.bytes += n as u64,
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => {
                            stats.failures += 1;
                            break;
                        }
                    }
                }
                done.store(true, Ordering::SeqCst);
            });
        }
        Attack::UdpFlood { rate } => {
            let sock = match std::net::UdpSocket::bind(("127.0.0.1", 0))
                .and_then(|s| s.connect(addr).map(|()| s))
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
            {
                Ok(s) => s,
                Err(_) => {
                    stats.failures += 1;
                    return stats;
                }
            };
            let per_ms = rate.div_ceil(1000).max(1);
            let datagram = [b'u'; 64];
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                for _ in 0..per_ms {
                    match sock.send(&datagram) {
                        Ok(n) => {
                            stats.connects += 1;
                            stats.bytes += n as u64;
                        }
                        // A full send buffer (or an ICMP error from an earlier one): the
                        // flood goes on; the count says how much got out.
                        Err(_) => stats.failures += 1,
                    }
                }
                // The echoes would fill our receive buffer; the kernel drops the rest.
                let pause = Duration::from_millis(1).saturating_sub(started.elapsed());
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
        }
    }
    stats
}

/// Sleeps for `pause`, in steps short enough to notice `stop` soon.
fn pause_unless_stopped(pause: Duration, stop: &AtomicBool) {
    let end = Instant::now() + pause;
    while !stop.load(Ordering::SeqCst) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}
