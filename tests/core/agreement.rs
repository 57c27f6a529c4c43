//! The drivers agree: one table of scenarios, each run under the reactor, the threaded and
//! the iterative driver, asserting the same bytes on the wire and the same
//! [`CloseReason`] told to the protocol.
//!
//! Every driver drives the one connection core ([`sockloop::session::Session`]), so for one
//! byte stream and one event order they must produce the same result; a row that differs
//! between drivers is a bug in a driver. The protocol is [`Script`], a line protocol whose
//! requests exercise each rule: replies, pipelining, streaming after the peer's FIN, a
//! peer error, input over the limit, a close it asks for, idle timeout, a graceful
//! shutdown followed or ignored.

use crate::support::{
    connect, pattern, per_driver, wait_until, Driver, InProcServer, DEADLINE, WAIT,
};
use sockloop::proto::{CloseReason, Out, PeerError, Protocol};
use sockloop::reactor::{Config, Timeouts};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// A line protocol. `stream N` answers with N bytes of [`pattern`] through
/// `handle_writable`, 64 KiB a piece; `bad` answers `ERR` and is a peer error; `bye`
/// answers `bye` and closes; `stay` answers `staying` and from then on ignores a graceful
/// shutdown; any other line is echoed. Only whole lines are consumed.
struct Script {
    left: usize,
    sent: usize,
    stay: bool,
    closed: mpsc::Sender<CloseReason>,
}

const PIECE: usize = 64 * 1024;

impl Protocol for Script {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        let mut used = 0;
        while let Some(nl) = input[used..].iter().position(|&b| b == b'\n') {
            let line = &input[used..used + nl];
            used += nl + 1;
            match line {
                b"bad" => {
                    out.push(b"ERR\n");
                    return Err(PeerError::new("a bad line"));
                }
                b"bye" => {
                    out.push(b"bye\n");
                    out.close();
                    return Ok(used);
                }
                b"stay" => {
                    out.push(b"staying\n");
                    self.stay = true;
                    continue;
                }
                _ => {}
            }
            if let Some(n) = line.strip_prefix(b"stream ") {
                self.left = std::str::from_utf8(n).unwrap().parse().unwrap();
                self.handle_writable(out);
            } else {
                out.push(line);
                out.push(b"\n");
            }
        }
        Ok(used)
    }

    fn handle_writable(&mut self, out: &mut Out<'_>) {
        if self.left == 0 {
            return;
        }
        let n = self.left.min(PIECE);
        out.push(&stream_bytes()[self.sent..self.sent + n]);
        self.sent += n;
        self.left -= n;
        if self.left > 0 {
            out.want_writable();
        }
    }

    fn handle_shutdown(&mut self, out: &mut Out<'_>) {
        if !self.stay {
            out.close();
        }
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        let _ = self.closed.send(reason.clone());
    }
}

const STREAM: usize = 4 << 20;

fn stream_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| pattern(11, STREAM))
}

/// What the client does, in order.
enum Step {
    Send(&'static [u8]),
    /// Our FIN (`shutdown(Write)`), as `sockloop client` does at the end of its input.
    HalfClose,
    /// The server stops gracefully.
    StopServer,
}

/// One row of the table.
struct Case {
    name: &'static str,
    steps: &'static [Step],
    /// The server's settings (the same under every driver).
    cfg: fn() -> Config,
    /// Everything the client reads until the server's FIN.
    expect: fn() -> Vec<u8>,
    reason: fn() -> CloseReason,
}

fn plain() -> Config {
    Config {
        max_connections: 64,
        shutdown_grace: Duration::from_secs(3),
        ..Config::default()
    }
}

fn short_grace() -> Config {
    Config {
        shutdown_grace: Duration::from_millis(300),
        ..plain()
    }
}

fn small_input() -> Config {
    Config {
        max_input: 1024,
        ..plain()
    }
}

fn idle() -> Config {
    Config {
        timeouts: Timeouts {
            idle: Some(Duration::from_millis(200)),
            write_stall: None,
        },
        ..plain()
    }
}

const CASES: &[Case] = &[
    Case {
        name: "request and reply, then our FIN",
        steps: &[Step::Send(b"hello\n"), Step::HalfClose],
        cfg: plain,
        expect: || b"hello\n".to_vec(),
        reason: || CloseReason::PeerClosed,
    },
    Case {
        name: "pipelined requests in one write, a partial line kept across writes",
        steps: &[Step::Send(b"a\nb\nc"), Step::Send(b"d\n"), Step::HalfClose],
        cfg: plain,
        expect: || b"a\nb\ncd\n".to_vec(),
        reason: || CloseReason::PeerClosed,
    },
    Case {
        name: "4 MiB streamed after our FIN",
        steps: &[Step::Send(b"stream 4194304\n"), Step::HalfClose],
        cfg: plain,
        expect: || stream_bytes().to_vec(),
        reason: || CloseReason::PeerClosed,
    },
    Case {
        name: "a peer error: the reply so far, then FIN",
        steps: &[Step::Send(b"x\nbad\nnever answered\n")],
        cfg: plain,
        expect: || b"x\nERR\n".to_vec(),
        reason: || CloseReason::PeerError("a bad line".into()),
    },
    Case {
        name: "input over max_input",
        steps: &[Step::Send(b"ok\n"), Step::Send(&[b'z'; 4096])],
        cfg: small_input,
        expect: || b"ok\n".to_vec(),
        reason: || CloseReason::InputLimit,
    },
    Case {
        name: "the protocol closes: FIN, the peer's FIN",
        steps: &[Step::Send(b"one\nbye\nignored\n")],
        cfg: plain,
        expect: || b"one\nbye\n".to_vec(),
        reason: || CloseReason::Closed,
    },
    Case {
        name: "idle timeout",
        steps: &[Step::Send(b"hi\n")],
        cfg: idle,
        expect: || b"hi\n".to_vec(),
        reason: || CloseReason::IdleTimeout,
    },
    Case {
        name: "graceful shutdown of the server",
        steps: &[Step::Send(b"hi\n"), Step::StopServer],
        cfg: plain,
        expect: || b"hi\n".to_vec(),
        reason: || CloseReason::Closed,
    },
    Case {
        name: "graceful shutdown a protocol ignores: closed at the grace deadline",
        steps: &[Step::Send(b"stay\n"), Step::StopServer],
        cfg: short_grace,
        expect: || b"staying\n".to_vec(),
        reason: || CloseReason::Shutdown,
    },
];

/// Runs `case` under `driver`: the bytes the client read and the reason the protocol was
/// told.
fn run(case: &Case, driver: Driver) -> (Vec<u8>, CloseReason) {
    let (tx, rx) = mpsc::channel();
    let server = InProcServer::start(driver, (case.cfg)(), move || Script {
        left: 0,
        sent: 0,
        stay: false,
        closed: tx.clone(),
    });
    let mut client = connect(server.addr());
    let mut server = Some(server);
    // Reads until the server's FIN, counting as it goes.
    let arrived = Arc::new(AtomicUsize::new(0));
    let reader = {
        let mut r = client.try_clone().unwrap();
        let arrived = Arc::clone(&arrived);
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => return (all, Ok(())),
                    Ok(n) => {
                        all.extend_from_slice(&buf[..n]);
                        arrived.store(all.len(), Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return (all, Err(e)),
                }
            }
        })
    };
    for step in case.steps {
        match step {
            Step::Send(bytes) => {
                // The server may close before it has read everything (a peer error, the
                // input limit): a write the peer refuses is part of the scenario.
                let _ = client.write_all(bytes);
            }
            Step::HalfClose => client.shutdown(Shutdown::Write).unwrap(),
            Step::StopServer => {
                // The reply arrived first, so the request was served before the stop.
                wait_until(WAIT, "the reply before the stop", || {
                    (arrived.load(Ordering::SeqCst) > 0).then_some(())
                });
                let s = server.take().unwrap();
                std::thread::spawn(move || s.stop());
            }
        }
    }
    let what = format!("{} under {driver}: the server closes", case.name);
    wait_until(DEADLINE, &what, || reader.is_finished().then_some(()));
    let (got, result) = reader.join().unwrap();
    result.unwrap_or_else(|e| panic!("{}: reading failed: {e}", case.name));
    // Our close answers the server's FIN (its Draining phase waits for it).
    drop(client);
    let reason = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{}: no handle_close under {driver}", case.name));
    drop(server);
    (got, reason)
}

fn check(driver: Driver) {
    for case in CASES {
        let (got, reason) = run(case, driver);
        let want = (case.expect)();
        assert!(
            got == want,
            "{} under {driver}: {} bytes arrived, {} expected (first difference at {:?})",
            case.name,
            got.len(),
            want.len(),
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
        assert_eq!(reason, (case.reason)(), "{} under {driver}", case.name);
    }
}

per_driver!(check: agreement_reactor, agreement_threaded, agreement_iterative);
