//! The transports besides TCP: UDP over IPv4 and IPv6, Unix streams and Unix datagrams,
//! served by the real `sockloop` binary and by in-process reactors; connected datagram
//! sockets; oversized datagrams; and the lifecycle of Unix socket files (stale ones are
//! replaced, live ones and regular files are left alone, ours are removed at exit).
//!
//! Unix socket paths live in a per-test temporary directory, removed when the test ends.
//! Every wait is bounded: children are killed and the test fails past a deadline.

use crate::support::{
    drain, first_line, pattern, per_driver, pump_for, pump_until, run_sockloop, sockloop_cmd,
    wait_until, Run, ServerProc, TempDir, DEADLINE, WAIT,
};
use sockloop::net::Endpoint;
use sockloop::proto::{DatagramProtocol, Transmit};
use sockloop::reactor::{Config, Reactor};
use sockloop_demos::proto::echo::DatagramEcho;
use sockloop_demos::serve::Driver;
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers.

/// A `sockloop serve` child that announced itself; killed on drop.
struct Serving {
    child: Child,
    /// The address from the `listening` line (a path for the Unix transports).
    addr: String,
    stderr: Option<JoinHandle<String>>,
}

/// How a `sockloop serve` started: serving, or exited (a bind error, say).
enum Started {
    Listening(Serving),
    Exited { status: ExitStatus, stderr: String },
}

/// Starts `sockloop serve echo --driver D --transport T --addr A` and waits (bounded) for
/// its `listening` line or its exit.
fn serve(driver: Driver, transport: &str, addr: &str) -> Started {
    let driver = driver.to_string();
    let mut child = sockloop_cmd(&[
        "serve",
        "echo",
        "--driver",
        &driver,
        "--transport",
        transport,
        "--addr",
        addr,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn sockloop");
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let line = first_line(
        &mut child,
        "`sockloop serve` neither announced itself nor exited",
    );
    if line.is_empty() {
        // Standard output closed without a `listening` line: the server is exiting.
        let status = wait_until(DEADLINE, "the failed server exits", || {
            child.try_wait().expect("try_wait")
        });
        return Started::Exited {
            status,
            stderr: stderr.join().expect("stderr reader"),
        };
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields.get(..3),
        Some(&["listening", "echo", transport][..]),
        "unexpected announcement: {line:?}"
    );
    Started::Listening(Serving {
        child,
        addr: fields.get(3).expect("an address").to_string(),
        stderr: Some(stderr),
    })
}

/// Like [`serve`], for a server that must start.
fn serve_ok(driver: Driver, transport: &str, addr: &str) -> Serving {
    match serve(driver, transport, addr) {
        Started::Listening(s) => s,
        Started::Exited { status, stderr } => panic!(
            "{driver}: `sockloop serve --transport {transport} --addr {addr}` failed ({status}); \
             stderr:\n{stderr}"
        ),
    }
}

/// Like [`serve`], for a server that must refuse to start; returns its stderr.
fn serve_fails(driver: Driver, transport: &str, addr: &str) -> String {
    match serve(driver, transport, addr) {
        Started::Listening(s) => panic!(
            "{driver}: expected `sockloop serve --transport {transport} --addr {addr}` to fail, \
             but it is listening on {}",
            s.addr
        ),
        Started::Exited { status, stderr } => {
            assert!(
                !status.success() && status.code() != Some(2),
                "{driver}: expected a failure exit (not success, not a usage error), got {status}"
            );
            stderr
        }
    }
}

impl Serving {
    /// SIGINT, then waits (bounded) for the exit; returns the status and stderr.
    fn interrupt(mut self) -> (ExitStatus, String) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = wait_until(DEADLINE, "the server exits after SIGINT", || {
            self.child.try_wait().expect("try_wait")
        });
        let stderr = self.stderr.take().unwrap().join().expect("stderr reader");
        (status, stderr)
    }

    /// SIGINT, and asserts a clean exit. (The binary installs its handlers before it
    /// prints `listening`, so an early signal is not lost.)
    fn interrupt_ok(self, what: &str) {
        let (status, stderr) = self.interrupt();
        assert!(
            status.success(),
            "{what}: expected a clean exit on SIGINT, got {status}; stderr:\n{stderr}"
        );
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP client bound to the loopback of `server`'s family, with a read timeout.
fn udp_client(server: SocketAddr) -> UdpSocket {
    let local: SocketAddr = if server.is_ipv4() {
        "127.0.0.1:0".parse().unwrap()
    } else {
        "[::1]:0".parse().unwrap()
    };
    let s = UdpSocket::bind(local).expect("bind a UDP client");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Sends each message to `server` and checks the reply: same bytes, from the server.
fn udp_round_trips(server: SocketAddr, what: &str) {
    let client = udp_client(server);
    let mut buf = vec![0u8; 70 * 1024];
    let big = pattern(9, 60_000);
    for msg in [&b"hello"[..], b"", &pattern(3, 1400), &big] {
        client.send_to(msg, server).expect("send_to");
        let (n, from) = client
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{what}: no reply to a {}-byte datagram: {e}", msg.len()));
        assert_eq!(
            from, server,
            "{what}: the reply comes from the server's address"
        );
        assert!(
            buf[..n] == *msg,
            "{what}: a {}-byte datagram came back as {n} different bytes",
            msg.len()
        );
    }
}

/// Starts a UDP echo through the CLI on `addr` (IPv4 or IPv6, port 0).
fn udp_server(driver: Driver, addr: &str) -> ServerProc {
    let mut cmd = sockloop_cmd(&["serve", "echo", "--driver", &driver.to_string()]);
    cmd.args(["--transport", "udp", "--addr", addr]);
    ServerProc::spawn(cmd)
}

/// A Unix datagram client bound at `path`, with a read timeout.
fn unixgram_client(path: &Path) -> UnixDatagram {
    let s = UnixDatagram::bind(path).expect("bind the client's own socket path");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn unixgram_round_trip(client: &UnixDatagram, server: &Path, msg: &[u8], what: &str) {
    client.send_to(msg, server).expect("send_to the server");
    let mut buf = vec![0u8; 64 * 1024];
    let (n, from) = client
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("{what}: no reply: {e}"));
    assert_eq!(&buf[..n], msg, "{what}: the datagram comes back whole");
    assert_eq!(
        from.as_pathname(),
        Some(server),
        "{what}: the reply comes from the server's path"
    );
}

/// A round trip of `len` bytes over a Unix stream, then a half-close and EOF.
fn unix_stream_echo(path: &Path, len: usize, what: &str) {
    let mut s = UnixStream::connect(path).unwrap_or_else(|e| panic!("{what}: connect: {e}"));
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    let data = pattern(len as u64, len);
    let writer = {
        let mut w = s.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || {
            w.write_all(&data).expect("write");
            w.shutdown(Shutdown::Write).expect("half-close");
        })
    };
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("{what}: read the echo to EOF: {e}"));
    writer.join().unwrap();
    assert!(got == data, "{what}: {len} bytes echoed in order, then EOF");
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Waits (bounded) until `path` no longer exists.
fn wait_gone(path: &Path, what: &str) {
    wait_until(
        WAIT,
        &format!("{what}: {} is removed", path.display()),
        || (!path.exists()).then_some(()),
    );
}

// ---------------------------------------------------------------------------------------
// 9. Echo over UDP (v4 and v6), Unix datagrams and Unix streams, through the CLI.

#[test]
fn udp_echo_ipv4_reactor() {
    let server = udp_server(Driver::Reactor, "127.0.0.1:0");
    udp_round_trips(server.addr, "reactor udp v4");
}

#[test]
fn udp_echo_ipv6_reactor() {
    let server = udp_server(Driver::Reactor, "[::1]:0");
    assert!(server.addr.is_ipv6());
    udp_round_trips(server.addr, "reactor udp v6");
}

#[test]
fn udp_echo_ipv4_threaded() {
    let server = udp_server(Driver::Threaded, "127.0.0.1:0");
    udp_round_trips(server.addr, "threaded udp v4");
}

#[test]
fn udp_echo_ipv6_threaded() {
    let server = udp_server(Driver::Threaded, "[::1]:0");
    assert!(server.addr.is_ipv6());
    udp_round_trips(server.addr, "threaded udp v6");
}

fn unixgram_echo(driver: Driver) {
    let dir = TempDir::new("ugram");
    let path = dir.socket_path("s.sock");
    let server = serve_ok(driver, "unixgram", path.to_str().unwrap());
    assert_eq!(Path::new(&server.addr), path, "announces the path it bound");
    assert!(is_socket(&path));
    let client = unixgram_client(&dir.socket_path("c.sock"));
    let what = format!("{driver} unixgram");
    unixgram_round_trip(&client, &path, b"hello", &what);
    // An unnamed sender cannot be answered; the server carries on regardless.
    let anon = UnixDatagram::unbound().unwrap();
    anon.send_to(b"nobody to answer", &path).unwrap();
    unixgram_round_trip(&client, &path, &pattern(7, 30_000), &what);
    server.interrupt_ok(&what);
    wait_gone(&path, &what);
}

per_driver!(unixgram_echo: unixgram_echo_reactor, unixgram_echo_threaded, unixgram_echo_iterative);

fn unix_stream(driver: Driver) {
    let dir = TempDir::new("ustream");
    let path = dir.socket_path("s.sock");
    let server = serve_ok(driver, "unix", path.to_str().unwrap());
    assert_eq!(Path::new(&server.addr), path);
    let what = format!("{driver} unix stream");
    unix_stream_echo(&path, 5, &what);
    unix_stream_echo(&path, 300_000, &what);
    server.interrupt_ok(&what);
    wait_gone(&path, &what);
}

per_driver!(
    unix_stream: unix_stream_echo_reactor,
    unix_stream_echo_threaded,
    unix_stream_echo_iterative
);

fn cli_client(transport: &str, addr: &str, what: &str) {
    let input = "hello\n\nworld\n";
    let Run {
        status,
        stdout,
        stderr,
    } = run_sockloop(
        &["client", "echo", "--transport", transport, "--addr", addr],
        input.as_bytes(),
    );
    assert!(
        status.success(),
        "{what}: `sockloop client` exits 0 at the end of input, got {status}; stderr:\n{stderr}"
    );
    assert_eq!(
        stdout, input,
        "{what}: the client prints each line's reply; stderr:\n{stderr}"
    );
}

#[test]
fn cli_client_over_udp_v4_and_v6() {
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let server = udp_server(Driver::Reactor, addr);
        cli_client("udp", &server.addr.to_string(), &format!("udp {addr}"));
    }
}

#[test]
fn cli_client_over_unix_transports() {
    let dir = TempDir::new("cli");
    let gram = dir.socket_path("g.sock");
    let server = serve_ok(Driver::Reactor, "unixgram", gram.to_str().unwrap());
    cli_client("unixgram", &server.addr, "unixgram");
    let stream = dir.socket_path("s.sock");
    let server2 = serve_ok(Driver::Reactor, "unix", stream.to_str().unwrap());
    cli_client("unix", &server2.addr, "unix stream");
    drop((server, server2));
}

// ---------------------------------------------------------------------------------------
// 10. Connected datagram sockets.

type Received = Rc<RefCell<Vec<(Endpoint, Vec<u8>)>>>;

/// Records every datagram it receives and answers none.
struct Recorder(Received);

impl DatagramProtocol for Recorder {
    fn handle_datagram(
        &mut self,
        from: &Endpoint,
        bytes: &[u8],
        _: Instant,
        _: &mut Vec<Transmit>,
    ) {
        self.0.borrow_mut().push((from.clone(), bytes.to_vec()));
    }
}

/// Connects a datagram socket in `reactor` to `server`, sends `msg` and waits for the
/// echo to reach the connected socket's protocol.
fn connected_round_trip(reactor: &mut Reactor, local: Option<&Endpoint>, server: &Endpoint) {
    let got: Received = Rc::default();
    let (token, bound) = reactor
        .connect_datagram(local, server, Recorder(Rc::clone(&got)))
        .expect("connect_datagram");
    if let Some(l) = local {
        if let (Endpoint::Unix(want), Endpoint::Unix(is)) = (l, &bound) {
            assert_eq!(is, want, "bound at the requested path");
        }
    }
    // `to` is ignored for a connected socket: the datagram goes to its peer.
    let elsewhere = Endpoint::Inet("192.0.2.1:9".parse().unwrap());
    reactor
        .send_datagram(token, &elsewhere, b"hello")
        .expect("send_datagram");
    pump_until(
        reactor,
        WAIT,
        &format!("the echo from {server} arrives"),
        |_| !got.borrow().is_empty(),
    );
    assert_eq!(
        got.borrow()[0],
        (server.clone(), b"hello".to_vec()),
        "the reply reaches the connected socket's protocol, from its peer"
    );
    if let Endpoint::Inet(local_addr) = bound {
        // A stranger's datagram is not for a connected socket: the kernel filters it.
        let stranger = udp_client(local_addr);
        stranger.send_to(b"stranger", local_addr).unwrap();
        reactor.send_datagram(token, server, b"again").unwrap();
        pump_until(reactor, WAIT, "the second echo arrives", |_| {
            got.borrow().len() >= 2
        });
        pump_for(reactor, Duration::from_millis(20));
        let got = got.borrow();
        assert_eq!(got.len(), 2, "only the peer's datagrams arrive: {got:?}");
        assert_eq!(got[1], (server.clone(), b"again".to_vec()));
    }
    assert!(reactor.close_datagram(token));
    assert!(!reactor.close_datagram(token), "closed once");
}

#[test]
fn connected_udp_to_a_server_in_the_same_reactor() {
    let mut reactor = Reactor::with_config(Config::default()).unwrap();
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        let at = Endpoint::Inet(addr.parse().unwrap());
        let (_, server) = reactor.bind_datagram(&at, DatagramEcho).expect("bind");
        connected_round_trip(&mut reactor, None, &server);
    }
    assert!(reactor.stats().datagrams_in >= 4);
}

#[test]
fn connected_udp_to_a_server_in_another_process() {
    let server = udp_server(Driver::Threaded, "127.0.0.1:0");
    let mut reactor = Reactor::with_config(Config::default()).unwrap();
    connected_round_trip(&mut reactor, None, &Endpoint::Inet(server.addr));
}

#[test]
fn connected_unix_datagram_socket_with_its_own_path() {
    let dir = TempDir::new("connected");
    let mut reactor = Reactor::with_config(Config::default()).unwrap();
    let (_, server) = reactor
        .bind_datagram(&Endpoint::Unix(dir.socket_path("s.sock")), DatagramEcho)
        .expect("bind");
    let local = Endpoint::Unix(dir.socket_path("c.sock"));
    connected_round_trip(&mut reactor, Some(&local), &server);
    assert!(
        !dir.socket_path("c.sock").exists(),
        "closing the connected socket removes the file it bound"
    );
}

// ---------------------------------------------------------------------------------------
// 11. Oversized datagrams.

#[test]
fn oversized_unix_datagram_is_dropped_and_counted() {
    let dir = TempDir::new("trunc");
    let mut reactor = Reactor::with_config(Config::default()).unwrap();
    let server_path = dir.socket_path("s.sock");
    reactor
        .bind_datagram(&Endpoint::Unix(server_path.clone()), DatagramEcho)
        .expect("bind");
    let client = unixgram_client(&dir.socket_path("c.sock"));
    // A datagram must fit in the sender's send buffer.
    socket2::SockRef::from(&client)
        .set_send_buffer_size(512 * 1024)
        .expect("SO_SNDBUF");
    let big = pattern(11, 70_000);
    assert_eq!(
        client
            .send_to(&big, &server_path)
            .expect("send 70,000 bytes"),
        big.len()
    );
    pump_until(
        &mut reactor,
        WAIT,
        "the oversized datagram is counted",
        |r| r.stats().datagrams_truncated == 1,
    );
    let stats = reactor.stats().clone();
    assert_eq!(
        (stats.datagrams_in, stats.datagrams_out),
        (0, 0),
        "not handed to the protocol, not answered"
    );
    client.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 128 * 1024];
    match client.recv(&mut buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("expected no reply to the oversized datagram, got {other:?}"),
    }
    // The socket still serves normal datagrams.
    client.send_to(b"small", &server_path).unwrap();
    pump_until(&mut reactor, WAIT, "the small datagram is answered", |r| {
        r.stats().datagrams_out == 1
    });
    client.set_nonblocking(false).unwrap();
    let n = client.recv(&mut buf).expect("the reply");
    assert_eq!(&buf[..n], b"small");
    client.set_nonblocking(true).unwrap();
    assert!(
        matches!(client.recv(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        "and nothing else"
    );
    assert_eq!(reactor.stats().datagrams_truncated, 1);
}

/// Truncation is known, not guessed (`MSG_TRUNC`): a datagram exactly as large as the
/// read buffer is whole and served; one byte more is dropped and counted.
#[test]
fn a_datagram_exactly_the_buffer_size_is_served() {
    let cfg = Config {
        read_buffer: 4096,
        ..Config::default()
    };
    let mut reactor = Reactor::with_config(cfg).unwrap();
    let (_, bound) = reactor
        .bind_datagram(&Endpoint::Inet(crate::support::localhost()), DatagramEcho)
        .expect("bind");
    let server = bound.inet().unwrap();
    let client = std::net::UdpSocket::bind(crate::support::localhost()).unwrap();
    client.send_to(&pattern(3, 4096), server).unwrap();
    pump_until(
        &mut reactor,
        WAIT,
        "the full-size datagram is answered",
        |r| r.stats().datagrams_out == 1,
    );
    client.send_to(&pattern(3, 4097), server).unwrap();
    pump_until(&mut reactor, WAIT, "the larger one is counted", |r| {
        r.stats().datagrams_truncated == 1
    });
    let mut buf = vec![0u8; 8192];
    client.set_read_timeout(Some(WAIT)).unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        pattern(3, 4096).as_slice(),
        "the whole datagram came back"
    );
}

// ---------------------------------------------------------------------------------------
// 12. Unix socket files: stale, in use, not a socket, removed at exit.

#[test]
fn stale_socket_file_is_replaced_and_removed_at_exit() {
    let dir = TempDir::new("stale");
    for driver in [Driver::Reactor, Driver::Threaded] {
        for transport in ["unix", "unixgram"] {
            let what = format!("{driver} {transport}");
            let path = dir.socket_path(&format!("{driver}-{transport}.sock"));
            // A listener that died without removing its file (std never removes it).
            if transport == "unix" {
                drop(UnixListener::bind(&path).unwrap());
            } else {
                drop(UnixDatagram::bind(&path).unwrap());
            }
            assert!(
                is_socket(&path),
                "{what}: a stale socket file is left behind"
            );
            let server = serve_ok(driver, transport, path.to_str().unwrap());
            if transport == "unix" {
                unix_stream_echo(&path, 100, &what);
            } else {
                let client = unixgram_client(&dir.socket_path("c.sock"));
                unixgram_round_trip(&client, &path, b"fresh", &what);
                drop(client);
                std::fs::remove_file(dir.socket_path("c.sock")).unwrap();
            }
            server.interrupt_ok(&what);
            wait_gone(&path, &what);
        }
    }
}

#[test]
fn a_path_a_live_server_uses_is_refused_with_addr_in_use() {
    let dir = TempDir::new("inuse");
    for transport in ["unix", "unixgram"] {
        let path = dir.socket_path(&format!("{transport}.sock"));
        let live = serve_ok(Driver::Reactor, transport, path.to_str().unwrap());
        for driver in [Driver::Reactor, Driver::Threaded] {
            let what = format!("{driver} {transport}");
            let stderr = serve_fails(driver, transport, path.to_str().unwrap());
            assert!(
                stderr.contains("in use") && stderr.contains(path.to_str().unwrap()),
                "{what}: stderr names the path and says it is in use; stderr:\n{stderr}"
            );
            // The live server's file is untouched and it still serves.
            assert!(
                is_socket(&path),
                "{what}: the live server's file is still there"
            );
            if transport == "unix" {
                unix_stream_echo(&path, 100, &what);
            } else {
                let client = unixgram_client(&dir.socket_path("c.sock"));
                unixgram_round_trip(&client, &path, b"still here", &what);
                drop(client);
                std::fs::remove_file(dir.socket_path("c.sock")).unwrap();
            }
        }
        live.interrupt_ok(transport);
        wait_gone(&path, transport);
    }
}

#[test]
fn a_regular_file_at_the_path_is_refused_and_untouched() {
    let dir = TempDir::new("regular");
    let path = dir.socket_path("precious.txt");
    let content = b"not a socket: keep me\n";
    std::fs::write(&path, content).unwrap();
    for driver in [Driver::Reactor, Driver::Threaded] {
        for transport in ["unix", "unixgram"] {
            let what = format!("{driver} {transport}");
            let stderr = serve_fails(driver, transport, path.to_str().unwrap());
            assert!(
                stderr.contains("not a socket") && stderr.contains(path.to_str().unwrap()),
                "{what}: stderr names the path and says it is not a socket; stderr:\n{stderr}"
            );
            assert_eq!(
                std::fs::read(&path).unwrap(),
                content,
                "{what}: the file is left as it was"
            );
        }
    }
}

#[test]
fn in_process_reactor_removes_its_socket_files_when_it_stops() {
    let dir = TempDir::new("inproc");
    let stream = dir.socket_path("s.sock");
    let gram = dir.socket_path("g.sock");
    let mut reactor = Reactor::with_config(Config::default()).unwrap();
    let timeouts = reactor.config().timeouts.clone();
    reactor
        .listen_with(&Endpoint::Unix(stream.clone()), timeouts, || {
            sockloop_demos::proto::echo::Echo
        })
        .expect("listen on a path");
    reactor
        .bind_datagram(&Endpoint::Unix(gram.clone()), DatagramEcho)
        .expect("bind a path");
    assert!(is_socket(&stream) && is_socket(&gram));
    reactor.shutdown();
    assert!(
        !stream.exists(),
        "the listener's file goes when shutdown closes it"
    );
    reactor.run().expect("run returns: nothing to drain");
    assert!(
        !gram.exists(),
        "the datagram socket's file goes when the reactor stops"
    );
}
