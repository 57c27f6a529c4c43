//! The HTTP/1.1 server machine over real sockets on 127.0.0.1, under the reactor and the
//! threaded blocking driver, with real clients: curl, Python's `http.client`, wrk when it
//! is installed, and raw sockets for what polite clients never do (pipelining, a slow
//! head, half-close, garbage).
//!
//! Servers run in-process (a reactor on a thread of its own, or a [`BlockingServer`]) with
//! short timeouts and a fixed `Date`. Waits are bounded reads; the only sleeps pace a
//! client on purpose (a slowloris trickle, a pause shorter than the keep-alive timeout).

use crate::support::{connect, have_tool, per_driver, read_to_end, Driver, InProcServer};
use sockloop::reactor::Config;
use sockloop_demos::proto::http::server::{HttpConfig, HttpServer};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// RFC 9110's example date: every test server's wall clock.
fn fixed_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(784_111_777)
}

const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

/// Test-sized timeouts: the head deadline and the keep-alive timeout.
const HEADER_TIMEOUT: Duration = Duration::from_millis(300);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(400);

fn test_config() -> HttpConfig {
    HttpConfig {
        header_timeout: HEADER_TIMEOUT,
        keepalive_timeout: KEEPALIVE_TIMEOUT,
        body_timeout: Duration::from_millis(300),
        clock: fixed_clock,
        ..HttpConfig::default()
    }
}

/// An HTTP server on 127.0.0.1:0, stopped when dropped.
struct Server {
    addr: SocketAddr,
    _running: InProcServer,
}

impl Server {
    fn start(driver: Driver, cfg: HttpConfig) -> Server {
        let cfg = Arc::new(cfg);
        let reactor_cfg = Config {
            max_connections: 256,
            shutdown_grace: Duration::from_secs(1),
            ..Config::default()
        };
        let running = InProcServer::start(driver, reactor_cfg, move || {
            HttpServer::new(Arc::clone(&cfg))
        });
        Server {
            addr: running.addr(),
            _running: running,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

// ---------------------------------------------------------------------------------------
// Reading replies.

#[derive(Debug)]
struct Response {
    status: u16,
    /// The whole head, for assertions on exact header lines.
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one reply from `r` (its body too, unless it answers a HEAD). `None` if the
/// stream ended cleanly before the first byte.
fn read_response(r: &mut impl BufRead, head_request: bool) -> Option<Response> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("read a reply head line");
        if n == 0 {
            assert!(
                head.is_empty(),
                "the stream ended inside a reply head: {head:?}"
            );
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {head:?}"));
    let mut response = Response {
        status,
        head,
        body: Vec::new(),
    };
    if !head_request {
        let len: usize = response
            .header("Content-Length")
            .expect("every reply has a Content-Length")
            .parse()
            .expect("a numeric Content-Length");
        response.body = vec![0; len];
        r.read_exact(&mut response.body).expect("read the body");
    }
    Some(response)
}

/// A raw client: a writer and a buffered reader on one connection.
struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = connect(addr);
        let reader = BufReader::new(stream.try_clone().expect("clone the stream"));
        Client { stream, reader }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send a request");
    }

    fn response(&mut self, head_request: bool) -> Response {
        read_response(&mut self.reader, head_request).expect("a reply, not the end")
    }

    /// Asserts that the server closes the connection (FIN) with nothing more to say.
    fn assert_closed(&mut self, what: &str) {
        let mut rest = Vec::new();
        self.reader
            .read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{what}: expected a clean close, got {e}"));
        assert!(
            rest.is_empty(),
            "{what}: expected the close and nothing else, got {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

fn assert_hello(r: &Response) {
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("Content-Length"), Some("12"));
    assert_eq!(r.header("Date"), Some(DATE));
    assert_eq!(r.body, b"Hello, World");
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

// ---------------------------------------------------------------------------------------
// curl

/// Runs curl with `args` (silent, bounded by --max-time) and returns its output.
fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl (installed as /usr/bin/curl)")
}

fn curl_status(args: &[&str]) -> String {
    let out = curl(&[&["-o", "/dev/null", "-w", "%{http_code}"], args].concat());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl_statuses(via: Driver) {
    let server = Server::start(via, test_config());
    let url = server.url();

    let get = curl(&["-i", &url]);
    let text = String::from_utf8_lossy(&get.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    for line in [
        "Content-Type: text/plain",
        "Content-Length: 12",
        &format!("Date: {DATE}"),
    ] {
        assert!(
            head.contains(&format!("\r\n{line}")),
            "missing {line:?} in {head}"
        );
    }
    assert_eq!(body, "Hello, World");

    let head = curl(&["-I", &url]);
    let text = String::from_utf8_lossy(&head.stdout).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\nContent-Length: 12\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "HEAD has no body: {text:?}");

    assert_eq!(curl_status(&[&format!("{url}missing")]), "404");
    assert_eq!(curl_status(&["-X", "POST", &url]), "405");
    assert_eq!(curl_status(&["-X", "DELETE", &url]), "405");
    let allow = curl(&["-i", "-X", "PUT", &url]);
    assert!(String::from_utf8_lossy(&allow.stdout).contains("\r\nAllow: GET, HEAD\r\n"));

    let long = format!("{url}{}", "a".repeat(9000));
    assert_eq!(curl_status(&[&long]), "414");
    let big = format!("X-Big: {}", "b".repeat(9000));
    assert_eq!(curl_status(&["-H", &big, &url]), "431");
    let many: Vec<String> = (1..=150).map(|i| format!("X-{i}: 1")).collect();
    let mut args: Vec<&str> = many.iter().flat_map(|h| ["-H", h.as_str()]).collect();
    args.push(&url);
    assert_eq!(curl_status(&args), "431");
    let body = "x".repeat(2 * 1024 * 1024);
    let path = std::env::temp_dir().join(format!("sockloop-http-413-{}", std::process::id()));
    std::fs::write(&path, &body).unwrap();
    let data = format!("@{}", path.display());
    let status = curl_status(&["--data-binary", &data, &url]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(status, "413");
    // And the server still serves.
    assert_eq!(curl_status(&[&url]), "200");
}
per_driver!(curl_statuses: curl_statuses_reactor, curl_statuses_threaded, curl_statuses_iterative);

fn curl_reuses_the_connection(via: Driver) {
    let server = Server::start(via, test_config());
    let url = server.url();
    let out = curl(&["-v", &url, &url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout, "Hello, WorldHello, World");
    assert!(stderr.contains("Re-using"), "curl did not reuse: {stderr}");
    assert!(stderr.contains("left intact"), "{stderr}");
    assert_eq!(
        stderr.matches("Connected to").count(),
        1,
        "one connection: {stderr}"
    );
}
per_driver!(curl_reuses_the_connection: curl_keepalive_reactor, curl_keepalive_threaded, curl_keepalive_iterative);

// ---------------------------------------------------------------------------------------
// Python's http.client

const PYTHON_CLIENT: &str = r#"
import http.client, sys
conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
ports = []
for _ in range(3):
    conn.request("GET", "/")
    r = conn.getresponse()
    body = r.read().decode()
    ports.append(conn.sock.getsockname()[1])
    print(r.status, r.getheader("Content-Type"), r.getheader("Content-Length"), body, sep="|")
print("one connection" if len(set(ports)) == 1 else "reconnected: %s" % ports)
conn.close()
"#;

fn python_keepalive(via: Driver) {
    let server = Server::start(via, test_config());
    let out = Command::new("python3")
        .args(["-c", PYTHON_CLIENT])
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "200|text/plain|12|Hello, World\n".repeat(3) + "one connection\n"
    );
}
per_driver!(python_keepalive: python_keepalive_reactor, python_keepalive_threaded, python_keepalive_iterative);

// ---------------------------------------------------------------------------------------
// Raw sockets

fn pipelining(via: Driver) {
    let server = Server::start(via, test_config());
    let mut batch = Vec::new();
    let mut expect = Vec::new();
    for i in 0..16 {
        let (req, status, head) = match i % 3 {
            0 => (GET.to_vec(), 200, false),
            1 => (
                format!("GET /{i} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes(),
                404,
                false,
            ),
            _ => (b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(), 200, true),
        };
        batch.extend_from_slice(&req);
        expect.push((status, head));
    }
    batch.extend_from_slice(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    expect.push((200, false));

    let mut c = Client::connect(server.addr);
    c.send(&batch);
    for (i, &(status, head)) in expect.iter().enumerate() {
        let r = c.response(head);
        assert_eq!(r.status, status, "reply {i}: {}", r.head);
        if head {
            assert_eq!(r.header("Content-Length"), Some("12"), "HEAD reply {i}");
        }
    }
    c.assert_closed("after the request that said close");
}
per_driver!(pipelining: pipelining_reactor, pipelining_threaded, pipelining_iterative);

fn slowloris_is_closed_at_the_head_deadline(via: Driver) {
    let server = Server::start(via, test_config());
    let mut c = Client::connect(server.addr);
    let start = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: test\r\n");
    // Keep the head growing, a byte every 50 ms for up to 3 s: a timer re-armed by each
    // byte would never fire while this runs.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = c.stream.try_clone().unwrap();
    let trickle = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            for &b in b"X-Slow: ".iter().cycle().take(60) {
                if stop.load(Ordering::SeqCst) || writer.write_all(&[b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let r = c.response(false);
    let elapsed = start.elapsed();
    c.assert_closed("after the 408");
    stop.store(true, Ordering::SeqCst);
    trickle.join().unwrap();
    assert_eq!(r.status, 408, "{}", r.head);
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(
        elapsed >= HEADER_TIMEOUT,
        "closed after {elapsed:?}, before the {HEADER_TIMEOUT:?} deadline"
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "closed only after {elapsed:?}: the deadline was re-armed by the trickle"
    );

    // A connection that never sends a byte is closed at the same deadline, silently.
    let mut quiet = Client::connect(server.addr);
    let start = Instant::now();
    quiet.assert_closed("a connection that never spoke");
    assert!(start.elapsed() >= HEADER_TIMEOUT, "{:?}", start.elapsed());
}
per_driver!(slowloris_is_closed_at_the_head_deadline: slowloris_reactor, slowloris_threaded, slowloris_iterative);

fn keepalive_idle_timeout(via: Driver) {
    let server = Server::start(via, test_config());
    let mut c = Client::connect(server.addr);
    c.send(GET);
    assert_hello(&c.response(false));
    // A request well inside the idle timeout is served, and restarts it.
    std::thread::sleep(KEEPALIVE_TIMEOUT / 3);
    // The server's idle clock cannot start before it has the request, so the idleness is
    // measured from just before sending it: from the moment the answer arrives it could
    // read a fraction of a millisecond short (the client may wake later than the server
    // answered).
    let asked = Instant::now();
    c.send(GET);
    assert_hello(&c.response(false));
    c.assert_closed("an idle keep-alive connection (no 408: nothing was asked)");
    let idle = asked.elapsed();
    assert!(
        idle >= KEEPALIVE_TIMEOUT,
        "closed after {idle:?} of idleness"
    );
    assert!(idle < Duration::from_secs(3), "closed only after {idle:?}");
}
per_driver!(keepalive_idle_timeout: keepalive_idle_reactor, keepalive_idle_threaded, keepalive_idle_iterative);

fn half_close(via: Driver) {
    let server = Server::start(via, test_config());
    // HTTP/1.0: answered, then closed.
    let mut s = connect(server.addr);
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let all = String::from_utf8(read_to_end(&mut s)).unwrap();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.contains("\r\nConnection: close\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\nHello, World"), "{all}");

    // HTTP/1.1 keep-alive, then the client's FIN: answered, then closed too.
    let mut c = Client::connect(server.addr);
    c.send(GET);
    c.send(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n");
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_hello(&c.response(false));
    assert_eq!(c.response(true).status, 200);
    c.assert_closed("after the client's FIN");

    // A head cut short by the FIN: 400, then closed.
    let mut s = connect(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: te").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let all = String::from_utf8(read_to_end(&mut s)).unwrap();
    assert!(all.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{all}");
}
per_driver!(half_close: half_close_reactor, half_close_threaded, half_close_iterative);

fn malformed_is_400_then_close(via: Driver) {
    let server = Server::start(via, test_config());
    let mut c = Client::connect(server.addr);
    c.send(b"GARBAGE\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 400, "{}", r.head);
    assert_eq!(r.header("Connection"), Some("close"));
    c.assert_closed("after the 400");

    // A good request followed by garbage: the first is answered, then 400 and close.
    let mut c = Client::connect(server.addr);
    let mut batch = GET.to_vec();
    batch.extend_from_slice(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03");
    c.send(&batch);
    assert_hello(&c.response(false));
    assert_eq!(c.response(false).status, 400);
    c.assert_closed("after the 400");
}
per_driver!(malformed_is_400_then_close: malformed_reactor, malformed_threaded, malformed_iterative);

fn bodies_are_discarded_and_limited(via: Driver) {
    let server = Server::start(via, test_config());
    let mut c = Client::connect(server.addr);
    let body = vec![b'x'; 200 * 1024];
    c.send(
        format!(
            "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    c.send(GET);
    assert_eq!(c.response(false).status, 405);
    assert_hello(&c.response(false));

    let mut c = Client::connect(server.addr);
    c.send(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 2000000\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 413, "{}", r.head);
    c.assert_closed("after the 413");

    let mut c = Client::connect(server.addr);
    c.send(
        b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(c.response(false).status, 501);
    c.assert_closed("after the 501");
}
per_driver!(bodies_are_discarded_and_limited: bodies_reactor, bodies_threaded, bodies_iterative);

fn one_bad_client_does_not_disturb_another(via: Driver) {
    let server = Server::start(
        via,
        HttpConfig {
            header_timeout: Duration::from_secs(3),
            ..test_config()
        },
    );
    // A slow head, garbage, an over-large head and a client that vanishes mid-request.
    let mut slow = Client::connect(server.addr);
    slow.send(b"GET / HTTP/1.1\r\nHo");
    let mut garbage = Client::connect(server.addr);
    garbage.send(b"\x00\x01\x02\x03 nonsense\r\n\r\n");
    let mut big = Client::connect(server.addr);
    big.send(
        format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
            "y".repeat(9000)
        )
        .as_bytes(),
    );
    {
        let mut gone = connect(server.addr);
        gone.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
            .unwrap();
    }

    // A healthy client is served throughout, on one connection, promptly.
    let mut good = Client::connect(server.addr);
    let start = Instant::now();
    for _ in 0..20 {
        good.send(GET);
        assert_hello(&good.response(false));
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "20 requests took {:?} next to the bad clients",
        start.elapsed()
    );
    assert_eq!(garbage.response(false).status, 400);
    garbage.assert_closed("garbage");
    assert_eq!(big.response(false).status, 431);
    big.assert_closed("the over-large head");
    // The slow client is still waiting for its deadline; finishing its head now works.
    slow.send(b"st: t\r\nConnection: close\r\n\r\n");
    assert_hello(&slow.response(false));
    slow.assert_closed("the slow client, served");
}
per_driver!(
    one_bad_client_does_not_disturb_another: one_bad_client_reactor, one_bad_client_threaded;
    not_iterative: "a good client served while a bad one holds its connection: two at once"
);

/// The cases of `testdata/http/cases.txt`: file name, bytes, status, kept alive.
fn testdata() -> Vec<(String, Vec<u8>, u16, bool)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/http");
    let list = std::fs::read_to_string(dir.join("cases.txt")).expect("cases.txt");
    list.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let bytes = std::fs::read(dir.join(f[0])).expect("a case file");
            (
                f[0].to_string(),
                bytes,
                f[1].parse().unwrap(),
                f[2] == "keep",
            )
        })
        .collect()
}

fn testdata_cases_over_the_wire(via: Driver) {
    let server = Server::start(via, test_config());
    for (name, bytes, status, keep) in testdata() {
        let mut c = Client::connect(server.addr);
        c.send(&bytes);
        let r = c.response(name.starts_with("head"));
        assert_eq!(r.status, status, "{name}: {}", r.head);
        if keep {
            // Still open, and framed right: the next request gets its own reply.
            c.send(GET);
            assert_hello(&c.response(false));
        } else {
            assert_eq!(r.header("Connection"), Some("close"), "{name}");
            c.assert_closed(&name);
        }
    }
}
per_driver!(testdata_cases_over_the_wire: testdata_reactor, testdata_threaded, testdata_iterative);

// ---------------------------------------------------------------------------------------
// wrk

fn wrk_load(via: Driver) {
    match Command::new("wrk").arg("--version").output() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !have_tool(false, "wrk (apt-get install wrk)") {
                return;
            }
        }
        Err(e) => panic!("running wrk failed: {e}"),
        Ok(_) => {}
    }
    let server = Server::start(
        via,
        HttpConfig {
            clock: fixed_clock,
            ..HttpConfig::default()
        },
    );
    let out = Command::new("wrk")
        .args(["-t1", "-c10", "-d1s", &server.url()])
        .output()
        .expect("run wrk");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests: u64 = stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().to_string())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's report: {stdout}"));
    assert!(requests > 0, "{stdout}");
    assert!(!stdout.contains("Socket errors"), "{stdout}");
    assert!(!stdout.contains("Non-2xx"), "{stdout}");
    eprintln!("wrk via {via:?}: {requests} requests in 1 s");
}
per_driver!(wrk_load: wrk_reactor, wrk_threaded, wrk_iterative);
