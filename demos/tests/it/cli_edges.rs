//! The command line's rough edges for a newcomer: `--addr` wording and host names, the
//! usage shown once, each demo's own default port, port ranges checked before anything is
//! bound, a taken port named, `bench --secs` with `--quick`, and the `serve all` banner's
//! commands runnable as printed. Every run of the binary is bounded by a deadline.

use crate::support::{drain, first_line, run_sockloop, sockloop_cmd, KillOnDrop, ServerProc};
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;

/// Asserts a usage error: exit 2, stderr names every one of `problems`, shows the usage
/// once and clap's "For more information" line once, and nothing went to stdout.
fn assert_usage_error(args: &[&str], problems: &[&str]) -> String {
    let run = run_sockloop(args, b"");
    let cmd = format!("`sockloop {}`", args.join(" "));
    assert_eq!(
        run.status.code(),
        Some(2),
        "{cmd}: expected exit code 2 for a usage error; stderr:\n{}",
        run.stderr
    );
    for problem in problems {
        assert!(
            run.stderr.contains(problem),
            "{cmd}: expected stderr to say {problem:?}; stderr:\n{}",
            run.stderr
        );
    }
    assert_eq!(
        run.stderr.matches("Usage:").count(),
        1,
        "{cmd}: expected the usage exactly once; stderr:\n{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.matches("For more information").count(),
        1,
        "{cmd}: expected \"For more information, try '--help'.\" exactly once; stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stdout.is_empty(),
        "{cmd}: expected nothing on stdout for a usage error, got:\n{}",
        run.stdout
    );
    run.stderr
}

/// A port that was free a moment ago (nothing listens there now).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// A fresh directory for a file server's inbox, removed first if a run left it.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sockloop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

#[test]
fn an_addr_port_above_65535_says_out_of_range() {
    for args in [
        &["serve", "echo", "--addr", "127.0.0.1:99999"][..],
        &["serve", "echo", "--addr", "[::1]:70000"],
        &["client", "echo", "--addr", "127.0.0.1:99999"],
        &["send", "Cargo.toml", "--addr", "localhost:99999"],
    ] {
        assert_usage_error(args, &["port", "out of range", "65535"]);
    }
}

#[test]
fn an_invalid_value_prints_the_help_hint_once() {
    // Each kind of bad value: our own parser's, clap's enum, a missing subcommand's.
    for args in [
        &["serve", "echo", "--addr", "not-an-address"][..],
        &["serve", "echo", "--driver", "bogus"],
        &["serve", "--base-port", "70000"],
        &["bench", "--secs", "0"],
        &["send", "Cargo.toml", "--addr", ":7007"],
    ] {
        assert_usage_error(args, &[args[args.len() - 1]]);
    }
    assert_usage_error(&["frobnicate"], &["frobnicate"]);
}

/// `--addr localhost:PORT` is resolved for `serve`, `client` and `send` alike (the first
/// address the resolver returns; the same one on both sides).
#[test]
fn host_names_are_resolved_for_addr() {
    let echo = ServerProc::spawn(sockloop_cmd(&["serve", "echo", "--addr", "localhost:0"]));
    assert!(
        echo.addr.ip().is_loopback(),
        "`serve --addr localhost:0` should listen on a loopback address, not {}",
        echo.addr
    );
    let at = format!("localhost:{}", echo.addr.port());
    let run = run_sockloop(&["client", "echo", "--addr", &at], b"by name\n");
    assert!(
        run.status.success(),
        "`client --addr {at}`: exit {}; stderr:\n{}",
        run.status,
        run.stderr
    );
    assert_eq!(run.stdout, "by name\n", "the line came back");

    let dir = temp_dir("resolve");
    let inbox = dir.join("inbox");
    let file = dir.join("hello.txt");
    std::fs::write(&file, b"sent to a name\n").unwrap();
    let server = ServerProc::spawn(sockloop_cmd(&[
        "serve",
        "file",
        "--addr",
        "localhost:0",
        "--dir",
        inbox.to_str().unwrap(),
    ]));
    let at = format!("localhost:{}", server.addr.port());
    let run = run_sockloop(&["send", file.to_str().unwrap(), "--addr", &at], b"");
    assert!(
        run.status.success(),
        "`send --addr {at}`: exit {}; stderr:\n{}",
        run.status,
        run.stderr
    );
    assert_eq!(
        std::fs::read(inbox.join("hello.txt")).expect("the file arrived"),
        b"sent to a name\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A demo served alone takes its own port from the `serve all` table, which
/// `--base-port` moves: `serve file --base-port B` listens on B + 7, and the table's
/// `send --addr` works against it.
#[test]
fn a_demo_alone_takes_its_table_port() {
    let dir = temp_dir("table-port");
    let file = dir.join("note.txt");
    std::fs::write(&file, b"to the table's port\n").unwrap();
    // A free port for the file demo, at least 7 above the lowest port.
    let port = (0..20)
        .map(|_| free_port())
        .find(|&p| p > 1024 + 7)
        .expect("a free port above 1031");
    let base = (port - 7).to_string();
    let inbox = dir.join("inbox");
    let server = ServerProc::spawn(sockloop_cmd(&[
        "serve",
        "file",
        "--base-port",
        &base,
        "--dir",
        inbox.to_str().unwrap(),
    ]));
    assert_eq!(
        server.addr,
        SocketAddr::from(([127, 0, 0, 1], port)),
        "`serve file --base-port {base}` should listen on 127.0.0.1:{port} (base + 7, the \
         file demo's place in the `serve all` table)"
    );
    let at = format!("127.0.0.1:{port}");
    let run = run_sockloop(&["send", file.to_str().unwrap(), "--addr", &at], b"");
    assert!(
        run.status.success(),
        "`send --addr {at}`: exit {}; stderr:\n{}",
        run.status,
        run.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without any port flag, `serve stamp` uses 127.0.0.1:7002, its port in the table (it
/// was 7000 for every demo). If something else holds 7002 on this machine, the error
/// must name 127.0.0.1:7002, which shows the default just as well.
#[test]
fn a_demo_alone_defaults_to_its_own_port() {
    let expected = "127.0.0.1:7002";
    let mut child = KillOnDrop(
        sockloop_cmd(&["serve", "stamp"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockloop"),
    );
    let stderr = drain(child.0.stderr.take().expect("piped stderr"));
    let line = first_line(
        &mut child.0,
        "`sockloop serve stamp` announces itself or fails",
    );
    if line.is_empty() {
        // It exited without a `listening` line: the port must have been taken.
        drop(child);
        let stderr = stderr.join().expect("stderr reader");
        assert!(
            stderr.contains(expected) && stderr.to_lowercase().contains("in use"),
            "`sockloop serve stamp` printed no `listening` line; expected it to fail only \
             because its default address {expected} is in use, and to say so; stderr:\n{stderr}"
        );
    } else {
        assert_eq!(
            line.trim_end(),
            format!("listening stamp tcp {expected}"),
            "`sockloop serve stamp` with no --addr or --base-port"
        );
    }
}

/// A range that cannot fit is refused before any socket exists: exit 2 with the usage,
/// naming the ports, and nothing bound (the reactor logs each bind at info).
#[test]
fn a_base_port_too_high_is_a_usage_error_before_any_bind() {
    for (args, problems) in [
        (
            &["serve", "--base-port", "65530"][..],
            &["65530", "65537", "65528"][..],
        ),
        (
            &["serve", "all", "--base-port", "65529"],
            &["65529", "65528"],
        ),
        (
            &["serve", "file", "--base-port", "65530"],
            &["file", "65537"],
        ),
    ] {
        let stderr = assert_usage_error(args, problems);
        assert!(
            !stderr.contains("listening on") && !stderr.contains("bound"),
            "`sockloop {}`: expected nothing bound before the range was refused; stderr:\n\
             {stderr}",
            args.join(" ")
        );
    }
}

/// `serve all` with one port of its range taken fails (exit 1, not a usage error) naming
/// that port and its demo, and prints no `listening` line.
#[test]
fn serve_all_names_the_port_that_is_taken() {
    let mut last = String::new();
    // The taken port is greet's (the 4th); another program may hold one of the 3 ports
    // before it, in which case that one is named: try a few ranges.
    for _ in 0..5 {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to take");
        let port = taken.local_addr().unwrap().port();
        if !(1024 + 3..=u16::MAX - 4).contains(&port) {
            continue;
        }
        let base = (port - 3).to_string();
        let run = run_sockloop(&["serve", "--base-port", &base], b"");
        assert_eq!(
            run.status.code(),
            Some(1),
            "`serve --base-port {base}` with {port} taken: expected exit 1 (a bind failure, \
             not a usage error); stderr:\n{}",
            run.stderr
        );
        assert!(
            !run.stdout.contains("listening"),
            "expected no `listening` line when a bind fails; stdout:\n{}",
            run.stdout
        );
        let named = format!("greet over tcp on 127.0.0.1:{port}");
        if run.stderr.contains(&named) {
            assert!(
                run.stderr.to_lowercase().contains("in use"),
                "expected stderr to say the port is in use; stderr:\n{}",
                run.stderr
            );
            return;
        }
        last = run.stderr;
    }
    panic!("expected stderr to name the taken port (`greet over tcp on 127.0.0.1:PORT`); last stderr:\n{last}");
}

/// `bench --quick --secs 0.5` measures for 0.5 s, not --quick's 1 s.
#[test]
fn bench_secs_wins_over_quick() {
    let run = run_sockloop(
        &[
            "bench",
            "--quick",
            "--secs",
            "0.5",
            "--scenario",
            "echo-64-c1",
            "--drivers",
            "reactor",
        ],
        b"",
    );
    assert!(
        run.status.success(),
        "exit {}; stdout:\n{}\nstderr:\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
    assert!(
        run.stdout.contains("0.5 s measured after 0.25 s warm-up"),
        "expected the header to say --secs' 0.5 s window (and --quick's warm-up); \
         stdout:\n{}",
        run.stdout
    );
}

/// The `serve all` banner's `send` command runs as printed: it spells the binary
/// `sockloop` only when that is on PATH, else by a path that exists.
#[test]
fn the_banner_spells_a_runnable_sockloop() {
    use std::io::BufRead;
    let mut child = KillOnDrop(
        sockloop_cmd(&["serve", "--base-port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sockloop"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + crate::support::DEADLINE;
    let mut seen = String::new();
    let line = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(" send FILE --addr ") => break l,
            Ok(l) => {
                seen.push_str(&l);
                seen.push('\n');
            }
            Err(_) => panic!("no `send FILE` line in the banner within the deadline:\n{seen}"),
        }
    };
    drop(child);
    let program = line.split_whitespace().next().unwrap();
    let runnable = if program == "sockloop" {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("sockloop").is_file()))
    } else {
        std::path::Path::new(program).is_file()
    };
    assert!(
        runnable,
        "the banner's {program:?} is neither a `sockloop` on PATH nor an existing file:\n{line}"
    );
}

#[test]
fn serve_help_says_where_inbox_is_and_how_shutdown_goes() {
    let run = run_sockloop(&["serve", "--help"], b"");
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    for words in [
        "relative to the current directory",
        "shutdown(Read)",
        "--shutdown-grace",
        "its own port",
    ] {
        assert!(
            run.stdout.contains(words),
            "`sockloop serve --help`: expected {words:?}; stdout:\n{}",
            run.stdout
        );
    }
}

/// `serve echo --reactors 2`: two reactor threads, each with its own SO_REUSEPORT
/// listener on the one address printed; every client is served, and Ctrl-C ends both.
#[test]
fn serve_with_two_reactors_runs_two_loops_and_stops_on_ctrl_c() {
    use crate::support::{round_trip, Driver};
    let server = ServerProc::start("echo", Driver::Reactor, &["--reactors", "2"]);
    let reactor_threads = || {
        std::fs::read_dir(format!("/proc/{}/task", server.pid()))
            .map(|tasks| {
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .filter(|name| name.trim() == "sockloop-reacto")
                    .count()
            })
            .unwrap_or(0)
    };
    // Thread names are cut to 15 bytes by the kernel: "sockloop-reactor" reads as above.
    assert_eq!(reactor_threads(), 2, "one thread per reactor");
    let mut clients: Vec<_> = (0..16)
        .map(|_| crate::support::connect(server.addr))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        round_trip(c, format!("client {i}\n").as_bytes());
    }
    drop(clients);
    let status = server.interrupt_and_wait();
    assert!(status.success(), "a graceful stop exits 0, got {status:?}");
}

/// `--reactors` needs the reactor driver over tcp: said before anything is bound.
#[test]
fn reactors_with_a_blocking_driver_is_refused() {
    let run = run_sockloop(
        &[
            "serve",
            "echo",
            "--driver",
            "threaded",
            "--reactors",
            "2",
            "--addr",
            "127.0.0.1:0",
        ],
        b"",
    );
    assert_ne!(run.status.code(), Some(0), "refused: {}", run.stderr);
    assert!(
        run.stderr.contains("--reactors"),
        "the error names the option: {}",
        run.stderr
    );
    assert!(
        !run.stdout.contains("listening"),
        "nothing was bound: {}",
        run.stdout
    );
}
