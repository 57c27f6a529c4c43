//! Micro-benchmarks, each measuring one named thing (see BENCHMARKING.md when it lands).
//!
//! - `echo_machine/<size>`: bytes per second through the echo protocol machine alone,
//!   no sockets: the floor of what any driver adds on top.
//! - `token/encode_decode`: packing a slab key and generation into a mio token and back,
//!   done once per event.
//! - `outbuf/partial_writes`: queueing and draining output through `OutBuf` when the sink
//!   takes it in small pieces (the slow-reader path).
//!
//! Run: `cargo bench --bench proto`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sockloop::buf::OutBuf;
use sockloop::proto::{echo::Echo, Out, Protocol};
use sockloop::reactor::token::{Tag, Wake};
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

fn token(c: &mut Criterion) {
    c.bench_function("token/encode_decode", |b| {
        let mut key = 0usize;
        b.iter(|| {
            key = (key + 1) & 0xffff;
            let tag = Tag {
                key,
                gen: key as u32 ^ 0x5555,
            };
            let back = Wake::from_token(black_box(tag.token()));
            assert_eq!(back, Wake::Source(tag));
        })
    });
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

criterion_group!(benches, echo_machine, token, outbuf);
criterion_main!(benches);
