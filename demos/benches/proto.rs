//! Micro-benchmarks, each measuring one named thing (see BENCHMARKING.md).
//!
//! - `echo_machine/<size>`: bytes per second through the echo protocol machine alone,
//!   no sockets: the floor of what any driver adds on top.
//! - `outbuf/partial_writes`: queueing and draining output through `OutBuf` when the sink
//!   takes it in small pieces (the slow-reader path).
//! - `http_machine/get`: one keep-alive `GET /` (curl's 78-byte head,
//!   `testdata/http/get.http`) through the HTTP server machine, reply written, per
//!   iteration; bytes/s of request, requests/s = 1 / time.
//! - `http_machine/pipelined16`: 16 of those requests in one input, all answered in one
//!   `handle_input` call; requests/s = 16 / time.
//! - `http_parse/head`: the head parser alone (`parse::parse` on a request, httparse plus
//!   the size limits) on a 588-byte browser head (`testdata/http/get_browser.http`).
//! - `line_framer/lines`: `LineFramer::feed` splitting one 16 KiB buffer of 1,024 short
//!   lines (16 bytes each, `\n`-terminated); lines/s = 1,024 / time.
//!
//! Every benchmark checks its result inside the timed loop (cheap asserts: lengths,
//! counts, a status line), so a regression that makes one faster by breaking it fails.
//!
//! Run: `cargo bench -p sockloop-demos --bench proto` (or `-- --quick`, or a filter such as `-- http`).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sockloop::buf::OutBuf;
use sockloop::proto::{Action, Out, Protocol};
use sockloop_demos::proto::echo::Echo;
use sockloop_demos::proto::http::parse::{self, HeadLimits, MAX_HEADERS};
use sockloop_demos::proto::http::server::HttpServer;
use sockloop_demos::proto::line::{Flow, LineFramer};
use std::io::{self, Write};
use std::time::Instant;

fn echo_machine(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo_machine");
    for size in [64usize, 16 * 1024] {
        let input = vec![b'x'; size];
        let mut sink = Vec::with_capacity(size);
        let now = Instant::now();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &input, |b, input| {
            b.iter(|| {
                sink.clear();
                let mut out = Out::new(&mut sink, now);
                let used = Echo.handle_input(black_box(input), &mut out).unwrap();
                // Check while timing: the machine must have consumed and echoed it all.
                assert_eq!(used, input.len());
                black_box(&sink);
            })
        });
    }
    group.finish();
}

/// A sink that accepts at most 1,000 bytes per write, like a slow peer's socket.
struct Trickle(usize);

impl Write for Trickle {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = b.len().min(1000).min(self.0);
        self.0 -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn outbuf(c: &mut Criterion) {
    let chunk = vec![7u8; 4096];
    let mut group = c.benchmark_group("outbuf");
    group.throughput(Throughput::Bytes(64 * 4096));
    group.bench_function("partial_writes", |b| {
        b.iter(|| {
            let mut buf = OutBuf::new();
            let mut sent = 0;
            for _ in 0..64 {
                buf.extend(&chunk);
                sent += buf.flush_to(&mut Trickle(3000)).unwrap();
            }
            while !buf.is_empty() {
                sent += buf.flush_to(&mut Trickle(usize::MAX)).unwrap();
            }
            assert_eq!(sent, 64 * 4096);
        })
    });
    group.finish();
}

/// What curl sends for `curl http://localhost:8080/`.
const GET: &[u8] = include_bytes!("../testdata/http/get.http");
/// A Chromium navigation request, ~600 bytes with the usual client hints.
const BROWSER_GET: &[u8] = include_bytes!("../testdata/http/get_browser.http");

/// The machine's reply to one `GET /`, learned once outside the timed part (its length is
/// fixed: the `Date` value always has 29 bytes).
fn http_reply_len(server: &mut HttpServer, now: Instant) -> usize {
    let mut sent = Vec::new();
    let mut out = Out::new(&mut sent, now);
    assert_eq!(server.handle_input(GET, &mut out), Ok(GET.len()));
    assert!(
        sent.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{:?}",
        String::from_utf8_lossy(&sent)
    );
    assert!(sent.ends_with(b"\r\n\r\nHello, World"));
    sent.len()
}

/// One HTTP server machine (default config: the real wall clock for `Date`, read once per
/// call as in production) kept alive across iterations, like one keep-alive connection.
fn http_machine(c: &mut Criterion) {
    let mut group = c.benchmark_group("http_machine");
    let now = Instant::now();
    for count in [1usize, 16] {
        let input = GET.repeat(count);
        let mut server = HttpServer::default();
        let mut sent = Vec::new();
        server.handle_open(&mut Out::new(&mut sent, now));
        let reply_len = http_reply_len(&mut server, now);
        let name = if count == 1 {
            "get".to_string()
        } else {
            format!("pipelined{count}")
        };
        sent = Vec::with_capacity(reply_len * count);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                sent.clear();
                let mut out = Out::new(&mut sent, now);
                let used = server.handle_input(black_box(&input), &mut out);
                // Every request consumed and answered, in one call; the connection kept.
                assert_eq!(used, Ok(input.len()));
                assert_eq!(out.action(), Action::Continue);
                assert_eq!(sent.len(), reply_len * count);
                for reply in sent.chunks_exact(reply_len) {
                    assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"));
                }
            })
        });
    }
    group.finish();
}

fn http_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("http_parse");
    group.throughput(Throughput::Bytes(BROWSER_GET.len() as u64));
    // The header array is filled in place, as the server does; it is not cleared between
    // parses (httparse overwrites the slots it uses).
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    group.bench_function("head", |b| {
        b.iter(|| {
            let mut req = httparse::Request::new(&mut headers);
            let n = parse::parse(black_box(BROWSER_GET), &mut req, HeadLimits::REQUEST);
            assert_eq!(n, Ok(Some(BROWSER_GET.len())));
            assert_eq!(req.method, Some("GET"));
            assert_eq!(req.headers.len(), 14);
        })
    });
    group.finish();
}

fn line_framer(c: &mut Criterion) {
    const LINES: usize = 1024;
    // "line 000123 abc\n": 16 bytes a line, like a short chat message.
    let input: Vec<u8> = (0..LINES)
        .flat_map(|i| format!("line {i:06} abc\n").into_bytes())
        .collect();
    let now = Instant::now();
    let mut framer = LineFramer::default();
    let mut group = c.benchmark_group("line_framer");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("lines", |b| {
        b.iter(|| {
            let (mut lines, mut bytes) = (0usize, 0usize);
            let used = framer.feed(black_box(&input), now, |line| {
                lines += 1;
                bytes += line.len();
                Flow::Continue
            });
            assert_eq!(used, Ok(input.len()));
            assert_eq!((lines, bytes), (LINES, LINES * 15));
            assert!(!framer.has_partial());
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    echo_machine,
    outbuf,
    http_machine,
    http_parse,
    line_framer
);
criterion_main!(benches);
