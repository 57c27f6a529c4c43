//! The reactor's user timers at scale: 100,000 armed at once, each benchmark timing one
//! operation over all of them (divide the time by 100,000 for the cost of one).
//!
//! - `timers_100k/arm`: `set_timer` 100k times, delays spread over a minute (a heap push
//!   each, plus a slab slot and a boxed callback).
//! - `timers_100k/cancel`: `cancel_timer` on 100k armed timers (a slab removal each; the
//!   heap entries are left behind and skipped later).
//! - `timers_100k/expire`: `run_once` until 100k due timers have all fired (a heap pop and
//!   a callback each); they are armed, and made due, outside the timed part.
//!
//! Each iteration builds its own reactor and fills it outside the timed part, then checks
//! the result (every timer armed, cancelled or fired exactly once) after timing it.
//!
//! Run: `cargo bench --bench timers` (or `-- --quick` for a shorter run).

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use sockloop::reactor::{Reactor, TimerId};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

const N: usize = 100_000;

/// Delays spread pseudo-randomly over `0..span`, so that the heap sees arbitrary order
/// (increasing deadlines only would make every push the cheapest case).
fn delays(span: Duration) -> Vec<Duration> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..N)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            span.mul_f64((x >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect()
}

/// Arms one timer per delay, each bumping `fired` when it runs.
fn arm_all(r: &mut Reactor, delays: &[Duration], fired: &Rc<Cell<usize>>) -> Vec<TimerId> {
    delays
        .iter()
        .map(|&d| {
            let fired = Rc::clone(fired);
            r.set_timer(d, move |_| fired.set(fired.get() + 1))
        })
        .collect()
}

/// Runs `iters` iterations of: `setup` (untimed), `timed`, `check` (untimed).
fn measure<S, T>(
    iters: u64,
    mut setup: impl FnMut() -> S,
    mut timed: impl FnMut(&mut S) -> T,
    mut check: impl FnMut(S, T),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut state = setup();
        let start = Instant::now();
        let out = timed(&mut state);
        total += start.elapsed();
        check(state, out); // also drops the reactor, outside the timed part
    }
    total
}

fn timers(c: &mut Criterion) {
    let mut group = c.benchmark_group("timers_100k");
    group.throughput(Throughput::Elements(N as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    let minute = delays(Duration::from_secs(60));
    let fresh = || (Reactor::new().unwrap(), Rc::new(Cell::new(0)));

    group.bench_function("arm", |b| {
        b.iter_custom(|iters| {
            measure(
                iters,
                fresh,
                |(r, fired)| arm_all(r, &minute, fired),
                |(r, _), ids| assert_eq!((ids.len(), r.stats().timers_fired), (N, 0)),
            )
        })
    });

    group.bench_function("cancel", |b| {
        b.iter_custom(|iters| {
            measure(
                iters,
                || {
                    let (mut r, fired) = fresh();
                    let ids = arm_all(&mut r, &minute, &fired);
                    (r, ids)
                },
                |(r, ids)| ids.iter().filter(|&&id| r.cancel_timer(id)).count(),
                |_, cancelled| assert_eq!(cancelled, N),
            )
        })
    });

    // Delays under a millisecond, then a short sleep: all are due when the clock starts.
    let short = delays(Duration::from_millis(1));
    group.bench_function("expire", |b| {
        b.iter_custom(|iters| {
            measure(
                iters,
                || {
                    let (mut r, fired) = fresh();
                    arm_all(&mut r, &short, &fired);
                    std::thread::sleep(Duration::from_millis(2));
                    (r, fired)
                },
                |(r, fired)| {
                    let mut turns = 0;
                    while fired.get() < N && turns < 1000 {
                        r.run_once(Some(Duration::ZERO)).unwrap();
                        turns += 1;
                    }
                    turns
                },
                |(r, fired), turns| {
                    assert_eq!((fired.get(), r.stats().timers_fired), (N, N as u64));
                    assert_eq!(turns, 1, "every timer was due, so one turn fires them all");
                },
            )
        })
    });
    group.finish();
}

criterion_group!(benches, timers);
criterion_main!(benches);
