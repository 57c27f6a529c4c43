//! `sockloop bench --quick`, restricted to two small scenarios and the reactor and
//! threaded drivers, run against the real binary: every scenario completes with zero
//! errors, and the JSON and SVG outputs are written.

use crate::support::have_tool;
use sockloop_demos::bench::{self, BenchDriver, BenchOptions, Outcome, Scenario};
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn quick_bench_measures_without_errors() {
    let dir = std::env::temp_dir().join(format!("sockloop-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let svg = dir.join("svg");
    let scenarios = vec![
        Scenario::Echo {
            size: 64,
            conns: 8,
            depth: 1,
        },
        Scenario::Echo {
            size: 1024,
            conns: 4,
            depth: 4,
        },
        Scenario::Idle { conns: 20 },
    ];
    let opts = BenchOptions {
        scenarios: scenarios.clone(),
        drivers: vec![BenchDriver::Reactor, BenchDriver::Threaded],
        quick: true,
        json: Some(json.clone()),
        svg: Some(svg.clone()),
        ..BenchOptions::new(env!("CARGO_BIN_EXE_sockloop"))
    };
    let mut out = Vec::new();
    let start = Instant::now();
    let report = bench::run(&opts, &mut out).expect("the bench runs");
    let took = start.elapsed();
    let table = String::from_utf8(out).expect("utf-8 table");
    assert!(took < Duration::from_secs(60), "took {took:?}\n{table}");

    assert_eq!(report.rows.len(), 6, "{table}");
    assert_eq!(report.errors(), 0, "{table}");
    for row in &report.rows {
        let Outcome::Measured(m) = &row.outcome else {
            panic!(
                "{} {}: {:?}\n{table}",
                row.scenario, row.driver, row.outcome
            );
        };
        assert_eq!(m.errors, 0, "{table}");
        if matches!(row.scenario, Scenario::Idle { .. }) {
            if cfg!(target_os = "linux") {
                assert!(m.rss_per_conn.is_some(), "{table}");
            }
        } else {
            assert!(m.msgs > 0, "{} {}\n{table}", row.scenario, row.driver);
            assert!(m.p99_us.is_some_and(|p| p > 0.0), "{table}");
        }
        assert!(table.contains(&row.scenario.name()), "{table}");
    }
    assert!(table.contains("reactor / threaded"), "{table}");

    let text = std::fs::read_to_string(&json).expect("the JSON file");
    check_json(&text);
    for s in &scenarios {
        assert!(text.contains(&format!("\"{}\"", s.name())), "{text}");
    }
    for name in ["throughput.svg", "p99.svg", "rss_per_conn.svg"] {
        let chart = std::fs::read_to_string(svg.join(name)).expect("an SVG chart");
        assert!(chart.starts_with("<svg"), "{name}: {chart}");
        assert!(chart.trim_end().ends_with("</svg>"), "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The mio peer (the mio_echo example, beside the binary under test) measures one short
/// echo scenario with zero errors, on one thread.
#[test]
fn mio_peer_measures_an_echo_scenario() {
    let exe = Path::new(env!("CARGO_BIN_EXE_sockloop"));
    if !have_tool(build_mio_echo(exe), "the mio_echo example") {
        return;
    }
    let scenario = Scenario::Echo {
        size: 64,
        conns: 4,
        depth: 1,
    };
    let opts = BenchOptions {
        scenarios: vec![scenario],
        drivers: vec![BenchDriver::Mio],
        quick: true,
        secs: Some(0.5),
        ..BenchOptions::new(exe)
    };
    let mut out = Vec::new();
    let report = bench::run(&opts, &mut out).expect("the bench runs");
    let table = String::from_utf8(out).expect("utf-8 table");
    assert_eq!(report.rows.len(), 1, "{table}");
    assert_eq!(report.errors(), 0, "{table}");
    let Outcome::Measured(m) = &report.rows[0].outcome else {
        panic!("{:?}\n{table}", report.rows[0].outcome);
    };
    assert!(m.msgs > 0, "{table}");
    assert!(m.p99_us.is_some_and(|p| p > 0.0), "{table}");
    if cfg!(target_os = "linux") {
        assert_eq!(m.threads, Some(1), "{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.contains("echo-64-c4") && l.contains("mio")),
        "{table}"
    );
}

/// Makes sure `<dir of exe>/examples/mio_echo` exists: `cargo nextest run` builds the
/// examples, but a run filtered to `--test it` does not, so it is built here, in the
/// profile and target directory of `exe`. False if it cannot be built.
fn build_mio_echo(exe: &Path) -> bool {
    let path = bench::mio_echo_path(exe);
    if path.is_file() {
        return true;
    }
    let (Some(profile_dir), Some(target_dir)) = (exe.parent(), exe.parent().and_then(Path::parent))
    else {
        return false;
    };
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => return false,
    };
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "sockloop-demos",
            "--example",
            "mio_echo",
        ])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status();
    matches!(status, Ok(s) if s.success()) && path.is_file()
}

/// A small JSON well-formedness check: balanced brackets outside strings, valid escapes,
/// no trailing commas, one top-level object.
fn check_json(text: &str) {
    let mut stack = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut last = ' ';
    for c in text.chars() {
        if in_string {
            if escaped {
                assert!("\"\\/bfnrtu".contains(c), "bad escape \\{c}");
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            } else {
                assert!(c >= ' ', "raw control character in a string");
            }
            last = '"';
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => stack.push(c),
            '}' | ']' => {
                assert_ne!(last, ',', "trailing comma before {c}");
                let open = stack.pop().expect("unbalanced close");
                assert!(
                    (open, c) == ('{', '}') || (open, c) == ('[', ']'),
                    "mismatched {open}{c}"
                );
            }
            c if c.is_whitespace() => continue,
            _ => {}
        }
        last = c;
    }
    assert!(!in_string && stack.is_empty(), "unbalanced JSON");
    assert!(text.trim_start().starts_with('{') && text.trim_end().ends_with('}'));
    // Where python3 is around, let it judge too.
    if let Ok(status) = std::process::Command::new("python3")
        .args(["-c", "import json,sys; json.loads(sys.stdin.read())"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait()
        })
    {
        assert!(status.success(), "python3 rejects the JSON:\n{text}");
    }
}
