//! The `get` client over real sockets on 127.0.0.1: against a raw-socket server written
//! here (each body style, each way a server can misbehave), Python's `http.server`,
//! nginx when it is installed, and sockloop's own `http` demo.
//!
//! Every wait is bounded: servers read with timeouts, the client has its own, and the
//! servers that must start up are polled with connects until they answer.

use crate::support::{
    have_tool, localhost, pattern, wait_until, BgReactor, KillOnDrop, TempDir, DEADLINE,
};
use sockloop::reactor::Config;
use sockloop_demos::client::get::{
    fetch, get, BodyTarget, GetError, GetOptions, GetOutcome, Waiting,
};
use sockloop_demos::proto::http::client::{Framing, Method};
use sockloop_demos::proto::http::server::{HttpConfig, HttpServer};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The client's timeout where a test expects no timeout at all.
const PATIENT: Duration = Duration::from_secs(10);

/// The client's timeout where a test waits for one to strike.
const SHORT: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------
// Helpers.

/// A `Write` into memory that the test keeps a handle on.
#[derive(Clone, Default)]
struct Sink(Rc<RefCell<Vec<u8>>>);

impl Sink {
    fn bytes(&self) -> Vec<u8> {
        self.0.borrow().clone()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.borrow()).into_owned()
    }
}

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a fetch into memory produced.
struct Fetched {
    result: Result<GetOutcome, GetError>,
    head: String,
    body: Vec<u8>,
    took: Duration,
}

impl Fetched {
    fn outcome(&self) -> &GetOutcome {
        match &self.result {
            Ok(o) => o,
            Err(e) => panic!("expected a response, got: {e}"),
        }
    }
    fn error(&self) -> &GetError {
        match &self.result {
            Ok(o) => panic!("expected an error, got status {}", o.status()),
            Err(e) => e,
        }
    }
}

fn fetch_with(url: &str, method: Method, timeout: Duration) -> Fetched {
    let (head, body) = (Sink::default(), Sink::default());
    let opts = GetOptions { timeout, method };
    let start = Instant::now();
    let result = fetch(
        url,
        &opts,
        Box::new(head.clone()),
        BodyTarget::Writer(Box::new(body.clone())),
    );
    Fetched {
        result,
        head: head.text(),
        body: body.bytes(),
        took: start.elapsed(),
    }
}

fn fetch_mem(url: &str, timeout: Duration) -> Fetched {
    fetch_with(url, Method::Get, timeout)
}

/// What the raw server does after sending its pieces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Close the connection (FIN).
    Close,
    /// Keep it open, reading, until the client closes it.
    Hold,
}

/// A raw-socket HTTP "server" on 127.0.0.1: for one connection, reads the request head,
/// writes `pieces` one write each, then ends as told. The thread returns the request.
struct RawServer {
    addr: SocketAddr,
    thread: Option<JoinHandle<Vec<u8>>>,
}

impl RawServer {
    fn start(pieces: Vec<Vec<u8>>, end: End) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        RawServer::serve(listener, pieces, end)
    }

    fn serve(listener: TcpListener, pieces: Vec<Vec<u8>>, end: End) -> RawServer {
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s.set_nodelay(true).unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return request,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            for piece in &pieces {
                if s.write_all(piece).is_err() {
                    return request;
                }
            }
            match end {
                End::Close => {
                    let _ = s.shutdown(Shutdown::Write);
                }
                End::Hold => {
                    // Until the client gives up (EOF or reset), or the test's deadline.
                    let _ = io::copy(&mut s, &mut io::sink());
                }
            }
            request
        });
        RawServer {
            addr,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The request the server received.
    fn request(mut self) -> String {
        let bytes = self
            .thread
            .take()
            .unwrap()
            .join()
            .expect("raw server thread");
        String::from_utf8(bytes).expect("ASCII request")
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pieces(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// A port nothing listens on right now (bound, then released). Another process could
/// take it in between; the servers started on it would then fail to start, loudly.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Polls connects until something accepts on `addr` (the server is up).
fn wait_for_listener(addr: SocketAddr, what: &str, child: &mut Child) {
    wait_until(DEADLINE, what, || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what}: exited early with {status}");
        }
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .ok()
            .map(|_| ())
    });
}

// ---------------------------------------------------------------------------------------
// Against the raw server: each body style.

#[test]
fn content_length_body_and_the_request_sent() {
    let server = RawServer::start(
        pieces(&[
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n",
            b"Hello, ",
            b"World",
        ]),
        End::Hold,
    );
    let f = fetch_mem(&server.url("/a/b?c=d#frag"), PATIENT);
    let o = f.outcome();
    assert_eq!(o.status(), 200);
    assert_eq!(o.head.framing, Framing::Length(12));
    assert_eq!(o.body_bytes, 12);
    assert_eq!(f.body, b"Hello, World");
    assert_eq!(
        f.head,
        "HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 12\n\n"
    );
    let port = server.addr.port();
    let request = server.request();
    assert!(
        request.starts_with(&format!(
            "GET /a/b?c=d HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        )),
        "{request}"
    );
    assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let server = RawServer::start(
        pieces(&[
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n",
            b"5;ext=\"v\"\r\nhel",
            b"lo\r",
            b"\n6\r\n, worl\r\n1 ; a=b\r\nd\r\n",
            b"0\r\nX-Checksum: abc\r\n\r\n",
        ]),
        End::Hold,
    );
    let f = fetch_mem(&server.url("/"), PATIENT);
    let o = f.outcome();
    assert_eq!(o.head.framing, Framing::Chunked);
    assert_eq!(f.body, b"hello, world");
    assert_eq!(o.body_bytes, 12);
    assert_eq!(o.trailers.len(), 1);
    assert_eq!(o.trailers[0].name, "X-Checksum");
    // Trailers follow the body on the head's stream, as curl -i prints them.
    assert!(f.head.ends_with("\n\nX-Checksum: abc\n"), "{:?}", f.head);
}

#[test]
fn body_until_the_server_closes() {
    let server = RawServer::start(
        pieces(&[
            b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\n",
            b"no length, ",
            b"just a close",
        ]),
        End::Close,
    );
    let f = fetch_mem(&server.url("/"), PATIENT);
    assert_eq!(f.outcome().head.framing, Framing::UntilClose);
    assert_eq!(f.body, b"no length, just a close");
}

#[test]
fn no_body_for_204_and_head() {
    let server = RawServer::start(
        pieces(&[b"HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n"]),
        End::Hold,
    );
    let f = fetch_mem(&server.url("/"), PATIENT);
    assert_eq!(f.outcome().status(), 204);
    assert!(f.body.is_empty());

    let server = RawServer::start(
        pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"]),
        End::Hold,
    );
    let f = fetch_with(&server.url("/"), Method::Head, PATIENT);
    assert_eq!(f.outcome().head.framing, Framing::None);
    assert!(f.body.is_empty());
    assert!(server.request().starts_with("HEAD / HTTP/1.1\r\n"));
}

#[test]
fn redirects_are_reported_not_followed() {
    let server = RawServer::start(
        pieces(&[b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n"]),
        End::Hold,
    );
    let f = fetch_mem(&server.url("/old"), PATIENT);
    let o = f.outcome();
    assert_eq!(
        o.redirect(),
        Some((301, "http://127.0.0.1:1/elsewhere".to_owned()))
    );
    assert!(f
        .head
        .contains("\nLocation: http://127.0.0.1:1/elsewhere\n"));
}

// ---------------------------------------------------------------------------------------
// Against the raw server: each way it can fail.

#[test]
fn a_malformed_response_is_exit_8() {
    let server = RawServer::start(pieces(&[b"HTTP/1.1 OK 200\r\n\r\n"]), End::Hold);
    let f = fetch_mem(&server.url("/"), PATIENT);
    let e = f.error();
    assert!(matches!(e, GetError::Malformed(_)), "{e:?}");
    assert!(e.to_string().starts_with("malformed response: "), "{e}");
    assert_eq!(e.exit_code(), 8);
    assert!(f.head.is_empty());

    let server = RawServer::start(
        pieces(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]),
        End::Hold,
    );
    let f = fetch_mem(&server.url("/"), PATIENT);
    assert!(
        f.error().to_string().contains("not a hexadecimal number"),
        "{}",
        f.error()
    );
}

#[test]
fn a_body_cut_short_is_exit_18() {
    let server = RawServer::start(
        pieces(&[
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            b"only forty bytes of a hundred, then EOF.",
        ]),
        End::Close,
    );
    let f = fetch_mem(&server.url("/"), PATIENT);
    let e = f.error();
    assert!(matches!(e, GetError::Truncated(_)), "{e:?}");
    assert!(e.to_string().contains("after 40 of 100 bytes"), "{e}");
    assert_eq!(e.exit_code(), 18);
    // What did arrive was written.
    assert_eq!(f.body.len(), 40);

    let server = RawServer::start(
        pieces(&[
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"4\r\nsome\r\n",
        ]),
        End::Close,
    );
    let f = fetch_mem(&server.url("/"), PATIENT);
    assert!(
        f.error().to_string().contains("chunked body cut short"),
        "{}",
        f.error()
    );
    assert_eq!(f.error().exit_code(), 18);
    assert_eq!(f.body, b"some");
}

#[test]
fn a_closed_port_is_refused_exit_7() {
    let port = free_port();
    let f = fetch_mem(&format!("http://127.0.0.1:{port}/"), PATIENT);
    let e = f.error();
    assert!(
        matches!(e, GetError::Refused { addr } if addr.port() == port),
        "{e:?}"
    );
    assert!(e.to_string().contains("connection refused"), "{e}");
    assert_eq!(e.exit_code(), 7);
    assert!(
        f.took < PATIENT,
        "a refusal is immediate, took {:?}",
        f.took
    );
}

#[test]
fn a_refused_download_leaves_no_file() {
    let dir = TempDir::new("refused");
    let out = dir.path().join("never.bin");
    let e = get(
        &format!("http://127.0.0.1:{}/", free_port()),
        Some(&out),
        PATIENT,
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 7);
    assert!(!out.exists());
}

#[test]
fn a_server_that_never_answers_times_out_exit_28() {
    let server = RawServer::start(Vec::new(), End::Hold);
    let f = fetch_mem(&server.url("/"), SHORT);
    let e = f.error();
    assert!(
        matches!(e, GetError::Timeout { during: Waiting::Head(a), limit } if *a == server.addr && *limit == SHORT),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 28);
    assert!(f.took >= SHORT, "timed out early: {:?}", f.took);
    assert!(f.took < SHORT * 10, "timed out late: {:?}", f.took);
    // The client closed: the server's hold ended.
    assert!(server.request().starts_with("GET / HTTP/1.1"));
}

#[test]
fn a_server_that_stalls_in_the_body_times_out() {
    let server = RawServer::start(
        pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]),
        End::Hold,
    );
    let f = fetch_mem(&server.url("/"), SHORT);
    let e = f.error();
    assert!(
        matches!(
            e,
            GetError::Timeout {
                during: Waiting::Body { received: 3 },
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(f.body, b"abc");
    assert!(f.took < SHORT * 10, "timed out late: {:?}", f.took);
}

#[test]
fn a_connect_that_is_never_answered_times_out() {
    // A listener whose accept queue is full drops further SYNs (Linux), so a connect to it
    // stays in SYN_SENT: the one way to get a connect timeout on loopback.
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    let full =
        (0..8).any(
            |_| match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => {
                    fillers.push(s);
                    false
                }
                Err(_) => true,
            },
        );
    if !full {
        eprintln!("skipped: this kernel accepts connects beyond a full backlog");
        return;
    }
    let f = fetch_mem(&format!("http://{addr}/"), SHORT);
    let e = f.error();
    assert!(
        matches!(e, GetError::Timeout { during: Waiting::Connect(a), .. } if *a == addr),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 28);
    assert!(f.took >= SHORT && f.took < SHORT * 10, "took {:?}", f.took);
}

// ---------------------------------------------------------------------------------------
// Names and addresses.

#[test]
fn a_name_is_resolved_off_the_loop_and_each_address_tried() {
    // `localhost` may resolve to ::1 first; the server is on 127.0.0.1 only, so a refused
    // ::1 must fall through to the next address.
    let server = RawServer::start(
        pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
        End::Hold,
    );
    let f = fetch_mem(
        &format!("http://localhost:{}/", server.addr.port()),
        PATIENT,
    );
    assert_eq!(f.body, b"ok");
    assert_eq!(f.outcome().peer, server.addr);
    let port = server.addr.port();
    assert!(server
        .request()
        .contains(&format!("\r\nHost: localhost:{port}\r\n")));
}

#[test]
fn an_unknown_name_is_exit_6() {
    let f = fetch_mem("http://no-such-host.invalid/", PATIENT);
    let e = f.error();
    // A resolver that cannot answer within the timeout is a timeout instead.
    assert!(
        matches!(
            e,
            GetError::Resolve { .. }
                | GetError::Timeout {
                    during: Waiting::Resolve(_),
                    ..
                }
        ),
        "{e:?}"
    );
}

#[test]
fn an_ipv6_literal() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    let server = RawServer::serve(
        listener,
        pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv6"]),
        End::Hold,
    );
    let f = fetch_mem(&format!("http://[::1]:{}/", server.addr.port()), PATIENT);
    assert_eq!(f.body, b"v6");
    let port = server.addr.port();
    assert!(server
        .request()
        .contains(&format!("\r\nHost: [::1]:{port}\r\n")));
}

#[test]
fn https_is_refused_before_any_connect() {
    let f = fetch_mem("https://127.0.0.1:1/", PATIENT);
    assert_eq!(f.error().exit_code(), 1);
    assert!(f.error().to_string().contains("https is not supported"));
}

// ---------------------------------------------------------------------------------------
// Real servers.

/// Checks a download of `size` pattern bytes saved as `name` in `dir`, served at `base`:
/// to a file with `get` (the head goes to the test's stdout), then to memory.
fn check_big_download(base: &str, dir: &Path, name: &str, size: usize) {
    let want = pattern(7, size);
    let out = dir.join("downloaded.bin");
    let o = get(&format!("{base}/{name}"), Some(&out), PATIENT).expect("download");
    assert_eq!(o.status(), 200);
    assert_eq!(o.body_bytes, size as u64);
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == want,
        "downloaded file differs ({} bytes, want {size})",
        got.len()
    );

    let f = fetch_mem(&format!("{base}/missing.txt"), PATIENT);
    assert_eq!(f.outcome().status(), 404);
}

fn write_big_file(dir: &Path, name: &str, size: usize) {
    std::fs::write(dir.join(name), pattern(7, size)).unwrap();
}

const BIG: usize = 1024 * 1024 + 17;

#[test]
fn python_http_server_one_mebibyte() {
    let present = Command::new("python3").arg("--version").output().is_ok();
    if !have_tool(present, "python3") {
        return;
    }
    let dir = TempDir::new("python");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    write_big_file(&root, "big.bin", BIG);
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn python3 -m http.server");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut server = KillOnDrop(child);
    wait_for_listener(addr, "python3 -m http.server", &mut server.0);
    check_big_download(&format!("http://{addr}"), dir.path(), "big.bin", BIG);
}

/// Where nginx is, if installed (it lives in /usr/sbin, often not on a user's PATH).
fn find_nginx() -> Option<PathBuf> {
    let on_path = Command::new("which")
        .arg("nginx")
        .output()
        .ok()
        .and_then(|o| {
            let p = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            (o.status.success() && !p.is_empty()).then(|| PathBuf::from(p))
        });
    on_path.or_else(|| {
        [
            "/usr/sbin/nginx",
            "/usr/local/sbin/nginx",
            "/usr/local/nginx/sbin/nginx",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    })
}

#[test]
fn nginx_one_mebibyte() {
    let nginx = find_nginx();
    if !have_tool(nginx.is_some(), "nginx (apt-get install nginx-light)") {
        return;
    }
    let nginx = nginx.unwrap();
    let dir = TempDir::new("nginx");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    write_big_file(&root, "big.bin", BIG);
    let port = free_port();
    let tmp = dir.path().display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n\
         error_log {tmp}/err.log;\nevents {{}}\nhttp {{\n  access_log off;\n  \
         client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n  \
         fastcgi_temp_path {tmp}/fastcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n  \
         scgi_temp_path {tmp}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n    \
         root {tmp}/root;\n  }}\n}}\n"
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(&nginx)
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nginx");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut server = KillOnDrop(child);
    wait_for_listener(addr, "nginx", &mut server.0);
    check_big_download(&format!("http://{addr}"), dir.path(), "big.bin", BIG);

    let f = fetch_with(&format!("http://{addr}/big.bin"), Method::Head, PATIENT);
    let o = f.outcome();
    assert_eq!(
        o.head.field("content-length"),
        Some(BIG.to_string().as_bytes())
    );
    assert!(f.body.is_empty());
}

#[test]
fn sockloops_own_http_demo() {
    // sockloop's own `http` demo on a reactor thread, stopped when dropped.
    let server = BgReactor::start(Config::default(), |r| {
        let cfg = Arc::new(HttpConfig::default());
        r.listen(localhost(), move || HttpServer::new(Arc::clone(&cfg)))
    });
    let f = fetch_mem(&format!("http://{}/", server.addr()), PATIENT);
    let o = f.outcome();
    assert_eq!(o.status(), 200);
    assert_eq!(f.body, b"Hello, World");
    assert!(f.head.starts_with("HTTP/1.1 200 OK\n"), "{}", f.head);

    let f = fetch_mem(&format!("http://{}/nope", server.addr()), PATIENT);
    assert_eq!(f.outcome().status(), 404);

    let f = fetch_with(&format!("http://{}/", server.addr()), Method::Head, PATIENT);
    assert_eq!(f.outcome().head.framing, Framing::None);
    assert!(f.body.is_empty());
}
