//! The tutorial demos over real sockets on 127.0.0.1: ack, stamp and greet (line
//! protocols over TCP) under the reactor and the threaded driver, and hello over UDP
//! under the reactor and the blocking datagram loop.
//!
//! Servers run in this process: a [`Reactor`] built on a thread of its own, or a
//! [`BlockingServer`]. Each TCP scenario is a `fn(Driver)` written once; [`per_driver!`]
//! turns it into one `#[test]` per driver.
//!
//! The scenarios cover the clients the tutorials' servers meet:
//! (a) `nc`-style, each message a line ending in `\n`;
//! (b) the tutorials' own clients, which send `Michael` with no newline and wait: the reply
//!     comes once the client has been quiet for [`QUIET`], never sooner;
//! (c) a line split across two writes, answered once: the second half is sent only once
//!     the server's protocol has consumed the first (each server's machines are wrapped
//!     in [`Counted`], which counts the bytes they consume), so the halves really arrive
//!     as two reads;
//! (d) two lines in one write, answered twice, in order;
//! (e) for greet, `Welcome!` first and `exit` closing the connection.

use crate::support::{
    connect, localhost, per_driver, read_exact_n, read_to_end, wait_until, BgReactor, Driver,
    InProcServer, DEADLINE,
};
use sockloop::blocking::{self, BlockingDatagram};
use sockloop::net::Endpoint;
use sockloop::proto::{CloseReason, Out, PeerError, Protocol};
use sockloop::reactor::Config;
use sockloop_demos::proto::ack::{self, Ack};
use sockloop_demos::proto::greet::{Greeter, WELCOME};
use sockloop_demos::proto::hello::Hello;
use sockloop_demos::proto::line::QUIET;
use sockloop_demos::proto::stamp::{ctime, Stamp};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Servers.

/// A stream server under one of the drivers.
struct Server {
    addr: SocketAddr,
    /// Bytes the protocols of this server have consumed so far, over all connections.
    consumed: Arc<AtomicUsize>,
    running: InProcServer,
}

impl Server {
    /// Serves `make()` per connection on 127.0.0.1 (any port) under `drive`.
    fn start<P: Protocol + Send + 'static>(drive: Driver, make: fn() -> P) -> Server {
        let consumed = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&consumed);
        let factory = move || Counted {
            inner: make(),
            consumed: Arc::clone(&counter),
        };
        let running = InProcServer::start(drive, Config::default(), factory);
        Server {
            addr: running.addr(),
            consumed,
            running,
        }
    }

    /// Sends `first`, waits until the server's protocol has consumed it (so it was read
    /// on its own, not joined with what follows by the kernel), then sends `second`.
    fn send_split(&self, s: &mut TcpStream, first: &[u8], second: &[u8]) {
        let before = self.consumed.load(Ordering::SeqCst);
        send(s, first);
        wait_until(
            DEADLINE,
            "the server reads the first half of the line",
            || (self.consumed.load(Ordering::SeqCst) >= before + first.len()).then_some(()),
        );
        send(s, second);
    }

    /// Stops the server and waits for it (bounded).
    fn stop(self) {
        self.running.stop()
    }
}

/// A demo machine, unchanged, that also counts the bytes it consumes: how a test knows
/// the server has read something without looking inside the driver.
struct Counted<P> {
    inner: P,
    consumed: Arc<AtomicUsize>,
}

impl<P: Protocol> Protocol for Counted<P> {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        self.inner.handle_open(out)
    }
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        let used = self.inner.handle_input(input, out)?;
        self.consumed.fetch_add(used, Ordering::SeqCst);
        Ok(used)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
    fn handle_timeout(&mut self, out: &mut Out<'_>) {
        self.inner.handle_timeout(out)
    }
    fn handle_shutdown(&mut self, out: &mut Out<'_>) {
        self.inner.handle_shutdown(out)
    }
    fn handle_close(&mut self, reason: &CloseReason) {
        self.inner.handle_close(reason)
    }
    fn handle_eof(&mut self, rest: &[u8], out: &mut Out<'_>) -> Result<(), PeerError> {
        self.inner.handle_eof(rest, out)
    }
}

// ---------------------------------------------------------------------------------------
// Client helpers.

/// A client connection with Nagle off, so each write leaves at once as its own segment.
fn client(addr: SocketAddr) -> TcpStream {
    let s = connect(addr);
    s.set_nodelay(true).unwrap();
    s
}

fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes)
        .unwrap_or_else(|e| panic!("sending {:?}: {e}", String::from_utf8_lossy(bytes)));
}

/// Reads exactly `want.len()` bytes and panics unless they are `want`.
fn expect(s: &mut TcpStream, want: &[u8], what: &str) {
    let got = read_exact_n(s, want.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(want),
        "{what}"
    );
}

/// Reads one line, up to and including its `\n`.
fn read_line(s: &mut TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while line.last() != Some(&b'\n') {
        match s.read(&mut byte) {
            Ok(0) => panic!(
                "the server closed in the middle of a line: {:?}",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!("reading a line: {e} (have {line:?})"),
        }
    }
    line
}

/// Sends `msg` with no newline, as the tutorials' clients do, and returns when the reply
/// of `reply_len` bytes has arrived: not before the client has been quiet for [`QUIET`].
fn send_unterminated(s: &mut TcpStream, msg: &[u8], reply_len: usize) -> Vec<u8> {
    let sent_at = Instant::now();
    send(s, msg);
    let reply = read_exact_n(s, reply_len);
    let waited = sent_at.elapsed();
    assert!(
        waited >= QUIET,
        "a message with no newline is answered only after {QUIET:?} of quiet, \
         but the reply came after {waited:?}"
    );
    reply
}

/// Half-closes and expects the server to close without sending anything more: no reply
/// was duplicated or left over.
fn expect_nothing_more(mut s: TcpStream) {
    s.shutdown(Shutdown::Write).expect("half-close");
    let rest = read_to_end(&mut s);
    assert!(
        rest.is_empty(),
        "expected no more replies, got {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// Expects the server to close the connection (a read returns 0) without sending more,
/// then closes our side too (so the server is not left waiting for our FIN).
fn expect_server_closes(mut s: TcpStream) {
    let rest = read_to_end(&mut s);
    assert!(
        rest.is_empty(),
        "expected the server to close with nothing more, got {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// The ctime text of the second `secs` seconds after the Unix epoch.
fn ctime_at(secs: u64) -> String {
    ctime(UNIX_EPOCH + Duration::from_secs(secs))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// Panics unless `line` is `[<ctime>] <msg>\n` with a time between `before` and now
/// (a second of slack either side: the server's clock is read apart from ours).
fn assert_stamped(line: &[u8], msg: &str, before: SystemTime) {
    let text = String::from_utf8_lossy(line);
    let after = SystemTime::now();
    let suffix = format!("] {msg}\n");
    let stamp = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(suffix.as_str()))
        .unwrap_or_else(|| panic!("expected `[<time>] {msg}\\n`, got {text:?}"));
    let window = unix_secs(before) - 1..=unix_secs(after) + 1;
    assert!(
        window.clone().any(|s| ctime_at(s) == stamp),
        "the stamp {stamp:?} is not a UTC ctime between {:?} and {:?}",
        ctime_at(*window.start()),
        ctime_at(*window.end())
    );
}

// ---------------------------------------------------------------------------------------
// Ack (tutorial 000).

fn ack_newline_terminated(drive: Driver) {
    let server = Server::start(drive, Ack::new);
    let mut s = client(server.addr);
    send(&mut s, b"Michael\n");
    expect(&mut s, ack::REPLY, "the ack for Michael");
    send(&mut s, b"Tracy\r\n");
    expect(&mut s, ack::REPLY, "the ack for Tracy");
    expect_nothing_more(s);
    server.stop();
}
per_driver!(ack_newline_terminated: ack_newline_terminated_reactor, ack_newline_terminated_threaded, ack_newline_terminated_iterative);

fn ack_tutorial_client(drive: Driver) {
    let server = Server::start(drive, Ack::new);
    let mut s = client(server.addr);
    for msg in [&b"Michael"[..], b"Tracy"] {
        let reply = send_unterminated(&mut s, msg, ack::REPLY.len());
        assert_eq!(reply, ack::REPLY);
    }
    expect_nothing_more(s);
    server.stop();
}
per_driver!(ack_tutorial_client: ack_tutorial_client_reactor, ack_tutorial_client_threaded, ack_tutorial_client_iterative);

fn ack_split_line(drive: Driver) {
    let server = Server::start(drive, Ack::new);
    let mut s = client(server.addr);
    server.send_split(&mut s, b"Mich", b"ael\n");
    expect(
        &mut s,
        ack::REPLY,
        "one ack for the line sent in two writes",
    );
    expect_nothing_more(s);
    server.stop();
}
per_driver!(ack_split_line: ack_split_line_reactor, ack_split_line_threaded, ack_split_line_iterative);

fn ack_two_lines_in_one_write(drive: Driver) {
    let server = Server::start(drive, Ack::new);
    let mut s = client(server.addr);
    send(&mut s, b"Michael\nTracy\n");
    expect(&mut s, &ack::REPLY.repeat(2), "two acks for two lines");
    expect_nothing_more(s);
    server.stop();
}
per_driver!(ack_two_lines_in_one_write: ack_two_lines_in_one_write_reactor, ack_two_lines_in_one_write_threaded, ack_two_lines_in_one_write_iterative);

// ---------------------------------------------------------------------------------------
// Stamp (tutorial 002).

fn stamp_newline_terminated(drive: Driver) {
    let server = Server::start(drive, Stamp::default);
    let mut s = client(server.addr);
    let before = SystemTime::now();
    send(&mut s, b"Michael\n");
    assert_stamped(&read_line(&mut s), "Michael", before);
    send(&mut s, "你好\r\n".as_bytes());
    assert_stamped(&read_line(&mut s), "你好", before);
    expect_nothing_more(s);
    server.stop();
}
per_driver!(stamp_newline_terminated: stamp_newline_terminated_reactor, stamp_newline_terminated_threaded, stamp_newline_terminated_iterative);

fn stamp_tutorial_client(drive: Driver) {
    let server = Server::start(drive, Stamp::default);
    let mut s = client(server.addr);
    let before = SystemTime::now();
    // `[` + 24 characters of ctime (a 4-digit year) + `] ` + message + `\n`.
    let reply = send_unterminated(&mut s, b"Michael", 1 + 24 + 2 + 7 + 1);
    assert_stamped(&reply, "Michael", before);
    expect_nothing_more(s);
    server.stop();
}
per_driver!(stamp_tutorial_client: stamp_tutorial_client_reactor, stamp_tutorial_client_threaded, stamp_tutorial_client_iterative);

fn stamp_split_line(drive: Driver) {
    let server = Server::start(drive, Stamp::default);
    let mut s = client(server.addr);
    let before = SystemTime::now();
    server.send_split(&mut s, b"Mich", b"ael\n");
    assert_stamped(&read_line(&mut s), "Michael", before);
    expect_nothing_more(s);
    server.stop();
}
per_driver!(stamp_split_line: stamp_split_line_reactor, stamp_split_line_threaded, stamp_split_line_iterative);

fn stamp_two_lines_in_one_write(drive: Driver) {
    let server = Server::start(drive, Stamp::default);
    let mut s = client(server.addr);
    let before = SystemTime::now();
    send(&mut s, b"Michael\nTracy\n");
    assert_stamped(&read_line(&mut s), "Michael", before);
    assert_stamped(&read_line(&mut s), "Tracy", before);
    expect_nothing_more(s);
    server.stop();
}
per_driver!(stamp_two_lines_in_one_write: stamp_two_lines_in_one_write_reactor, stamp_two_lines_in_one_write_threaded, stamp_two_lines_in_one_write_iterative);

// ---------------------------------------------------------------------------------------
// Greet (tutorial 003).

/// Connects and expects `Welcome!\n` before sending anything.
fn welcomed(addr: SocketAddr) -> TcpStream {
    let mut s = client(addr);
    expect(&mut s, WELCOME, "the welcome, first and unprompted");
    s
}

fn greet_newline_terminated(drive: Driver) {
    let server = Server::start(drive, Greeter::new);
    let mut s = welcomed(server.addr);
    send(&mut s, b"Michael\n");
    expect(&mut s, b"Hello, Michael!\n", "the greeting");
    send(&mut s, b"Tracy\r\n");
    expect(&mut s, b"Hello, Tracy!\n", "the greeting, CRLF dropped");
    send(&mut s, b"exit\n");
    expect_server_closes(s);
    server.stop();
}
per_driver!(greet_newline_terminated: greet_newline_terminated_reactor, greet_newline_terminated_threaded, greet_newline_terminated_iterative);

/// The tutorial's client, step for step: read the welcome, send three names with no
/// newline, each after the previous greeting, then `exit`.
fn greet_tutorial_client(drive: Driver) {
    let server = Server::start(drive, Greeter::new);
    let mut s = welcomed(server.addr);
    for name in ["Michael", "Tracy", "Sarah"] {
        let want = format!("Hello, {name}!\n");
        let reply = send_unterminated(&mut s, name.as_bytes(), want.len());
        assert_eq!(String::from_utf8_lossy(&reply), want);
    }
    // `exit` with no newline too: the server closes once the client has gone quiet.
    send(&mut s, b"exit");
    expect_server_closes(s);
    server.stop();
}
per_driver!(greet_tutorial_client: greet_tutorial_client_reactor, greet_tutorial_client_threaded, greet_tutorial_client_iterative);

fn greet_split_line(drive: Driver) {
    let server = Server::start(drive, Greeter::new);
    let mut s = welcomed(server.addr);
    server.send_split(&mut s, b"Mich", b"ael\n");
    // A line taken as two would start `Hello, Mich!\n`.
    expect(
        &mut s,
        b"Hello, Michael!\n",
        "one greeting for the split line",
    );
    expect_nothing_more(s);
    server.stop();
}
per_driver!(greet_split_line: greet_split_line_reactor, greet_split_line_threaded, greet_split_line_iterative);

fn greet_two_lines_in_one_write(drive: Driver) {
    let server = Server::start(drive, Greeter::new);
    let mut s = welcomed(server.addr);
    send(&mut s, b"Michael\nTracy\n");
    expect(
        &mut s,
        b"Hello, Michael!\nHello, Tracy!\n",
        "two greetings, in order",
    );
    expect_nothing_more(s);
    server.stop();
}
per_driver!(greet_two_lines_in_one_write: greet_two_lines_in_one_write_reactor, greet_two_lines_in_one_write_threaded, greet_two_lines_in_one_write_iterative);

fn greet_exit_closes_and_drops_what_follows(drive: Driver) {
    let server = Server::start(drive, Greeter::new);
    let mut s = welcomed(server.addr);
    send(&mut s, b"Michael\nexit\nTracy\n");
    expect(&mut s, b"Hello, Michael!\n", "the greeting before exit");
    // Nothing for Tracy: the server closed after exit.
    expect_server_closes(s);
    server.stop();
}
per_driver!(greet_exit_closes_and_drops_what_follows: greet_exit_closes_reactor, greet_exit_closes_threaded, greet_exit_closes_iterative);

// ---------------------------------------------------------------------------------------
// Hello over UDP (tutorial 003).

/// The tutorial's UDP client, and the edge cases: a line ending is stripped, an empty
/// datagram is an empty name.
fn udp_round_trips(server: SocketAddr) {
    let c = UdpSocket::bind(localhost()).expect("bind the client");
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 2048];
    for (request, want) in [
        (&b"Michael"[..], &b"Hello, Michael!"[..]),
        (b"Tracy\n", b"Hello, Tracy!"),
        (b"Sarah\r\n", b"Hello, Sarah!"),
        (b"", b"Hello, !"),
    ] {
        c.send_to(request, server).expect("send_to");
        let (n, from) = c
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no reply to {:?}: {e}", String::from_utf8_lossy(request)));
        assert_eq!(from, server, "the reply comes from the server's address");
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            String::from_utf8_lossy(want),
            "reply to {:?}",
            String::from_utf8_lossy(request)
        );
    }
}

#[test]
fn hello_udp_reactor() {
    let bg = BgReactor::start(Config::default(), |r| {
        let (_, bound) = r.bind_datagram(&Endpoint::Inet(localhost()), Hello::new())?;
        Ok(bound.inet().expect("a UDP address"))
    });
    udp_round_trips(bg.addr());
    bg.shutdown_and_join(DEADLINE);
}

#[test]
fn hello_udp_blocking() {
    let sock = BlockingDatagram::bind(&Endpoint::Inet(localhost()), Duration::from_millis(20))
        .expect("bind");
    let addr = sock.local_addr().unwrap().inet().expect("a UDP address");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || blocking::serve_datagrams(&sock, &mut Hello, &flag));
    udp_round_trips(addr);
    stop.store(true, Ordering::SeqCst);
    // The socket's 20 ms read timeout bounds how long the loop takes to see the flag.
    wait_until(DEADLINE, "serve_datagrams returns after stop", || {
        thread.is_finished().then_some(())
    });
    thread
        .join()
        .expect("datagram thread")
        .expect("serve_datagrams");
}
