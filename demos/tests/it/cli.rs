//! The `sockloop` command line: usage errors, `--help`, the interactive client, and a
//! bind that fails. Every run of the binary is bounded by a deadline and killed past it.

use crate::support::{run_sockloop, ServerProc, DRIVERS};
use sockloop_demos::serve::Driver;

/// Asserts a usage error: exit code 2, and stderr names `problem` and shows the usage.
fn assert_usage_error(args: &[&str], problem: &str) {
    let run = run_sockloop(args, b"");
    let cmd = format!("`sockloop {}`", args.join(" "));
    assert_eq!(
        run.status.code(),
        Some(2),
        "{cmd}: expected exit code 2 for a usage error; stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(problem),
        "{cmd}: expected stderr to name the problem ({problem:?}); stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Usage"),
        "{cmd}: expected stderr to show the usage (\"Usage\"); stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stdout.is_empty(),
        "{cmd}: expected nothing on stdout for a usage error, got:\n{}",
        run.stdout
    );
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    assert_usage_error(&["frobnicate"], "frobnicate");
}

#[test]
fn bad_addr_is_a_usage_error() {
    assert_usage_error(
        &["serve", "echo", "--addr", "not-an-address"],
        "not-an-address",
    );
}

#[test]
fn unknown_driver_is_a_usage_error() {
    assert_usage_error(&["serve", "echo", "--driver", "bogus"], "bogus");
}

#[test]
fn help_works() {
    for args in [&["--help"][..], &["serve", "--help"], &["client", "--help"]] {
        let run = run_sockloop(args, b"");
        let cmd = format!("`sockloop {}`", args.join(" "));
        assert!(
            run.status.success(),
            "{cmd}: expected exit status 0, got {}; stderr:\n{}",
            run.status,
            run.stderr
        );
        assert!(
            run.stdout.contains("Usage"),
            "{cmd}: expected the usage on stdout; stdout:\n{}",
            run.stdout
        );
    }
    let top = run_sockloop(&["--help"], b"");
    for word in ["serve", "client"] {
        assert!(
            top.stdout.contains(word),
            "`sockloop --help`: expected the `{word}` subcommand to be listed; stdout:\n{}",
            top.stdout
        );
    }
    let serve = run_sockloop(&["serve", "--help"], b"");
    for word in ["--driver", "--addr", "reactor", "threaded", "iterative"] {
        assert!(
            serve.stdout.contains(word),
            "`sockloop serve --help`: expected {word:?} to be documented; stdout:\n{}",
            serve.stdout
        );
    }
}

/// A large input is sent whole: the client reads stdin only while the connection keeps
/// up, so it neither piles the input up in memory nor passes the output limit (20 MB in
/// came back as 4-5 MB, with exit 0, before). 32 MiB, 32 times the output limit.
fn client_sends_a_large_input_whole(driver: Driver) {
    let server = ServerProc::start("echo", driver, &[]);
    let addr = server.addr.to_string();
    let input: Vec<u8> = (0..32usize << 20)
        .map(|i| {
            if i % 64 == 63 {
                b'\n'
            } else {
                b'a' + (i % 23) as u8
            }
        })
        .collect();
    let run = run_sockloop(&["client", "echo", "--addr", &addr], &input);
    assert!(
        run.status.success(),
        "{driver}: exit {}; stderr:\n{}",
        run.status,
        run.stderr
    );
    assert_eq!(
        run.stdout.len(),
        input.len(),
        "{driver}: every byte came back"
    );
    assert!(
        run.stdout.as_bytes() == input.as_slice(),
        "{driver}: in order"
    );
}
crate::support::per_driver!(
    client_sends_a_large_input_whole: client_large_input_reactor,
    client_large_input_threaded,
    client_large_input_iterative
);

fn client_echo(driver: Driver) {
    let server = ServerProc::start("echo", driver, &[]);
    let addr = server.addr.to_string();
    let run = run_sockloop(&["client", "echo", "--addr", &addr], b"hello\nworld\n");
    assert!(
        run.status.success(),
        "{driver}: expected `sockloop client echo` to exit 0 at the end of its input, got {}; \
         stderr:\n{}",
        run.status,
        run.stderr
    );
    assert_eq!(
        run.stdout, "hello\nworld\n",
        "{driver}: expected the client to print exactly the lines it sent, echoed"
    );
}

#[test]
fn client_echo_reactor() {
    client_echo(Driver::Reactor)
}

#[test]
fn client_echo_threaded() {
    client_echo(Driver::Threaded)
}

#[test]
fn client_echo_iterative() {
    client_echo(Driver::Iterative)
}

#[test]
fn client_to_a_closed_port_fails_clearly() {
    // A port that was free a moment ago and has no listener now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port");
    let addr = addr.to_string();
    let run = run_sockloop(&["client", "echo", "--addr", &addr], b"hello\n");
    assert!(
        !run.status.success(),
        "expected `sockloop client` to fail with no server at {addr}; stdout:\n{}",
        run.stdout
    );
    assert!(
        run.stderr.contains(&addr) && run.stderr.to_lowercase().contains("refused"),
        "expected stderr to name {addr} and say the connection was refused; stderr:\n{}",
        run.stderr
    );
}

#[test]
fn bind_in_use_fails_clearly() {
    // std's listener sets SO_REUSEADDR too; Linux still refuses a second bind on a port
    // with a listener, so this is exactly "address in use".
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to take");
    let addr = taken.local_addr().unwrap().to_string();
    for driver in DRIVERS {
        let run = run_sockloop(
            &[
                "serve",
                "echo",
                "--driver",
                &driver.to_string(),
                "--addr",
                &addr,
            ],
            b"",
        );
        assert!(
            !run.status.success(),
            "{driver}: expected `sockloop serve` on the taken address {addr} to fail, got {}",
            run.status
        );
        assert_ne!(
            run.status.code(),
            Some(2),
            "{driver}: a bind failure is not a usage error: expected an exit code other than 2"
        );
        assert!(
            !run.stdout.contains("listening"),
            "{driver}: expected no `listening` line when the bind fails; stdout:\n{}",
            run.stdout
        );
        let stderr = run.stderr.to_lowercase();
        assert!(
            stderr.contains(&addr) && stderr.contains("in use"),
            "{driver}: expected stderr to name {addr} and say it is in use; stderr:\n{}",
            run.stderr
        );
    }
}

/// The HTTP deadlines are flags: a head that never completes is answered 408 and closed at
/// `--header-timeout`, under every driver (the blocking ones take the same settings).
fn http_header_timeout_flag(driver: Driver) {
    use std::io::{Read, Write};
    let server = ServerProc::start("http", driver, &["--header-timeout", "0.3"]);
    let mut c = crate::support::connect(server.addr);
    let start = std::time::Instant::now();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    let took = start.elapsed();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert!(
        took >= std::time::Duration::from_millis(250),
        "not before the deadline ({took:?})"
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "the flag's 0.3 s, not the default 60 s ({took:?})"
    );
}
crate::support::per_driver!(
    http_header_timeout_flag: http_header_timeout_flag_reactor,
    http_header_timeout_flag_threaded,
    http_header_timeout_flag_iterative
);

#[test]
fn a_negative_http_deadline_is_a_usage_error() {
    let run = run_sockloop(&["serve", "http", "--header-timeout=-1"], b"");
    assert!(!run.status.success(), "refused");
    assert!(
        run.stderr.contains("--header-timeout"),
        "names the flag: {}",
        run.stderr
    );
}

/// `serve echo --also-udp` serves the datagram echo on the TCP port's number too, in the
/// same server, under the reactor and the threaded driver (what the bench's UDP flood
/// aims at); a demo without a datagram form refuses the flag.
fn serve_also_udp(driver: Driver) {
    use std::io::{Read, Write};
    let server = ServerProc::start("echo", driver, &["--also-udp"]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(crate::support::WAIT)).unwrap();
    udp.send_to(b"over udp", server.addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = udp.recv_from(&mut buf).expect("the UDP echo");
    assert_eq!(&buf[..n], b"over udp");
    let mut tcp = crate::support::connect(server.addr);
    tcp.write_all(b"over tcp\n").unwrap();
    let mut back = [0u8; 9];
    tcp.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"over tcp\n");
}
crate::support::per_driver!(
    serve_also_udp: serve_also_udp_reactor, serve_also_udp_threaded, serve_also_udp_iterative
);

#[test]
fn also_udp_needs_a_demo_with_a_datagram_form() {
    let run = run_sockloop(
        &["serve", "ack", "--addr", "127.0.0.1:0", "--also-udp"],
        b"",
    );
    assert!(!run.status.success());
    assert!(run.stderr.contains("--also-udp"), "{}", run.stderr);
}
