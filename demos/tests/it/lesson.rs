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
fn iterative_blocks_threaded_reactor_and_uring_answer() {
    let opts = options();
    let mut out = Vec::new();
    let start = Instant::now();
    let report = lesson::run(&opts, &mut out).expect("the lesson runs");
    let took = start.elapsed();
    let table = String::from_utf8(out).expect("utf-8 table");
    // Two 500 ms timeouts plus eight short servers: far below this, even on a slow runner.
    assert!(
        took < Duration::from_secs(20),
        "the lesson took {took:?}\n{table}"
    );

    assert_eq!(report.rows.len(), 8, "{table}");
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
        for d in [Driver::Threaded, Driver::Reactor, Driver::Uring] {
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
        let uring = threads(Driver::Uring);
        assert!(
            threaded >= uring + MANY,
            "threaded used {threaded} threads, uring {uring}, with {MANY} silent clients\n{table}"
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
    let rows = &lines[header + 1..header + 9];
    for d in ["iterative", "threaded", "reactor", "uring"] {
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

/// The elements of an SVG (or any XML without a prolog) nest and close, and every `&`
/// starts an entity: panics where not.
fn assert_well_formed(svg: &str) {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find('<') {
        let text = &rest[..i];
        for (j, _) in text.match_indices('&') {
            let e = &text[j..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#"]
                    .iter()
                    .any(|p| e.starts_with(p)),
                "a bare & in {:?}",
                &e[..e.len().min(30)]
            );
        }
        rest = &rest[i + 1..];
        let end = rest.find('>').expect("an unclosed tag");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(open, name.trim(), "<{open}> closed by </{name}>");
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().expect("a tag name");
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
}

/// The `data-ms` of every `class="wait"` element of `driver`'s client `client`.
fn waits(svg: &str, driver: &str, client: usize) -> Vec<(f64, bool)> {
    let key = format!("class=\"wait\" data-driver=\"{driver}\" data-client=\"{client}\"");
    svg.match_indices(&key)
        .map(|(i, _)| {
            let tag = &svg[i..i + svg[i..].find('>').unwrap()];
            let attr = |name: &str| {
                let at = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                &tag[at..at + tag[at..].find('"').unwrap()]
            };
            (
                attr("data-ms").parse().unwrap(),
                attr("data-backlog") == "yes",
            )
        })
        .collect()
}

#[test]
fn svg_shows_who_waits_where() {
    let path = std::env::temp_dir().join(format!("sockloop-waits-{}.svg", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let file = path.to_str().expect("a UTF-8 temp path");
    // No silent clients and a short timeout: the table is quick; the picture runs the
    // same short scenario whatever the table does.
    let start = Instant::now();
    let run = crate::support::run_sockloop(
        &["demo", "--silent", "0", "--timeout", "0.2", "--svg", file],
        b"",
    );
    let took = start.elapsed();
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("wrote {file}")),
        "{}",
        run.stdout
    );
    // Three servers for the table, three for the picture (the slowest 170 ms).
    assert!(took < Duration::from_secs(15), "took {took:?}");

    let svg = std::fs::read_to_string(&path).expect("the SVG was written");
    let _ = std::fs::remove_file(&path);
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.len() < 200_000, "{} bytes", svg.len());
    assert_well_formed(&svg);

    // A heading and a thread lane for every driver.
    for (driver, thread) in [
        ("iterative", "iterative-accept"),
        ("threaded", "threaded-accept"),
        ("reactor", "reactor"),
    ] {
        assert!(
            svg.contains(&format!("<g class=\"driver\" data-driver=\"{driver}\">")),
            "no {driver} group"
        );
        assert!(
            svg.contains(&format!(
                "<g class=\"lane\" data-driver=\"{driver}\" data-thread=\"{thread}\">"
            )),
            "no {thread} lane"
        );
    }
    // The threaded server drew a thread per connection; the silent client's sits in
    // read() until the end.
    for n in 1..=4 {
        assert!(
            svg.contains(&format!("data-thread=\"conn-{n}\"")),
            "no conn-{n}"
        );
    }
    assert!(
        svg.contains("conn-3: blocked in read() on conn 3"),
        "conn-3 never blocked"
    );

    // The iterative server's second client waits, unaccepted, while the first is
    // served: at least two of the first one's 15 ms pauses.
    let second = waits(&svg, "iterative", 2);
    assert!(
        second.iter().any(|&(ms, backlog)| ms >= 25.0 && backlog),
        "client 2 under the iterative server: {second:?}"
    );
    assert!(svg.contains("in the listen backlog, until the server accepted it"));
    // The fourth, behind the silent third, gives up; under the others nobody does.
    assert!(svg.contains("class=\"gave-up\" data-driver=\"iterative\" data-client=\"4\""));
    for driver in ["threaded", "reactor"] {
        assert!(
            !svg.contains(&format!("class=\"gave-up\" data-driver=\"{driver}\"")),
            "someone gave up under the {driver} server"
        );
        for client in [1, 2, 4] {
            let w = waits(&svg, driver, client);
            assert_eq!(w.len(), 3, "{driver} client {client}: {w:?}");
        }
    }
    // The reactor's turns: asleep in epoll_wait, and one turn zoomed in with its steps.
    assert!(svg.contains("class=\"asleep\""));
    assert!(svg.contains("<g class=\"zoom\" data-driver=\"reactor\">"));
    assert!(svg.contains("accept: WouldBlock"));
}
