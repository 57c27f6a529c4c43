//! `sockloop demo`, the blocking vs non-blocking lesson, run against the real binary with
//! small numbers: the iterative server blocks, the others answer, and threads grow with
//! the clients only under the threaded driver.

use sockloop_demos::lesson::{self, LessonOptions};
use sockloop_demos::serve::{Demo, Driver};
use std::time::{Duration, Instant};

const SMALL: usize = 1;
const MANY: usize = 20;

fn options() -> LessonOptions {
    LessonOptions {
        silent_clients: vec![SMALL, MANY],
        timeout: Duration::from_millis(500),
        ..LessonOptions::new(env!("CARGO_BIN_EXE_sockloop"))
    }
}

#[test]
fn iterative_blocks_threaded_and_reactor_answer() {
    let opts = options();
    let mut out = Vec::new();
    let start = Instant::now();
    let report = lesson::run(&opts, &mut out).expect("the lesson runs");
    let took = start.elapsed();
    let table = String::from_utf8(out).expect("utf-8 table");
    // Two 500 ms timeouts plus six short servers: far below this, even on a slow runner.
    assert!(
        took < Duration::from_secs(20),
        "the lesson took {took:?}\n{table}"
    );

    assert_eq!(report.rows.len(), 6, "{table}");
    for silent in [SMALL, MANY] {
        let row = |d| {
            report
                .row(d, silent)
                .unwrap_or_else(|| panic!("no row for {d} with {silent}\n{table}"))
        };
        let it = row(Driver::Iterative);
        assert!(
            it.answer.blocked(),
            "iterative with {silent}: {}\n{table}",
            it.answer
        );
        for d in [Driver::Threaded, Driver::Reactor] {
            let r = row(d);
            assert!(
                r.answer.answered(),
                "{d} with {silent}: {}\n{table}",
                r.answer
            );
        }
    }

    if cfg!(target_os = "linux") {
        let threads = |d| {
            report
                .row(d, MANY)
                .and_then(|r| r.threads)
                .expect("threads")
        };
        let (threaded, reactor) = (threads(Driver::Threaded), threads(Driver::Reactor));
        assert!(
            threaded >= reactor + MANY,
            "threaded used {threaded} threads, the reactor {reactor}, with {MANY} silent \
             clients\n{table}"
        );
        assert!(
            report
                .rows
                .iter()
                .all(|r| r.rss_bytes.is_some_and(|b| b > 0)),
            "{table}"
        );
    }

    let lines: Vec<&str> = table.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("driver") && l.contains("OS threads"))
        .unwrap_or_else(|| panic!("no header\n{table}"));
    let rows = &lines[header + 1..header + 7];
    for d in ["iterative", "threaded", "reactor"] {
        assert_eq!(
            rows.iter().filter(|l| l.starts_with(d)).count(),
            2,
            "{d} rows\n{table}"
        );
    }
    assert!(rows[0].contains("blocked (>500 ms)"), "{table}");
    // Aligned: every row's second column starts where the header's does.
    let col = lines[header].find("silent clients").unwrap();
    for r in rows {
        assert!(
            r[..col].ends_with(' ') && !r[col..].starts_with(' '),
            "misaligned row {r:?}\n{table}"
        );
    }
    assert!(table.contains("Why:"), "{table}");
}

#[test]
fn refuses_a_demo_without_an_answer_before_starting_anything() {
    let opts = LessonOptions {
        demo: Demo::Chat,
        ..options()
    };
    let mut out = Vec::new();
    let err = lesson::run(&opts, &mut out).expect_err("chat answers nobody's own line");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(out.is_empty());
}

#[test]
fn a_missing_binary_is_an_error_not_a_hang() {
    let opts = LessonOptions {
        exe: "/nonexistent/sockloop".into(),
        ..options()
    };
    let err = lesson::run(&opts, &mut Vec::new()).expect_err("no binary");
    assert!(err.to_string().contains("cannot start"), "{err}");
}
