//! Rough edges of `sockloop client`: the chat keep-alive while the user sits idle at the
//! prompt, and the UDP client's end (an ICMP error from a closed port; stopping once every
//! datagram is answered). Every child process is bounded by deadlines and killed past them.

use crate::support::{
    connect_within, drain, run_sockloop, sockloop_cmd, KillOnDrop, ServerProc, WAIT,
};
use sockloop_demos::serve::Driver;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The chat server's keep-alive in these tests: PING after 0.2 s of silence, dropped
/// after 0.6 s.
const PING_AFTER: &str = "0.2";
const DROP_AFTER: Duration = Duration::from_millis(600);

/// Lines read from `pipe` on a thread of their own, as they arrive.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits up to `within` for a line that `pick` accepts; panics naming `what` otherwise.
/// Every line seen on the way is kept in `seen`.
fn wait_line<T>(
    rx: &Receiver<String>,
    within: Duration,
    what: &str,
    seen: &mut Vec<String>,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let got = pick(&line);
                seen.push(line);
                if let Some(v) = got {
                    return v;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line {what} within {within:?}; seen so far: {seen:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the stream ended before a line {what}; seen: {seen:?}")
            }
        }
    }
}

/// A person idle at `sockloop client chat`'s prompt is not dropped: the client answers
/// the server's `PING` itself (without showing it), stays in the room well past the drop
/// time, and still gets the others' messages and sends its own.
fn idle_chat_client_is_kept(driver: Driver) {
    let drop_after = format!("{}", DROP_AFTER.as_secs_f64());
    let server = ServerProc::start(
        "chat",
        driver,
        &["--ping-after", PING_AFTER, "--drop-after", &drop_after],
    );

    // An observer in the room, a raw socket that answers its own PINGs: it sees the client
    // join (and would see it dropped), and talks to it.
    let observer = connect_within(server.addr, crate::support::DEADLINE);
    let observer_name = observer.local_addr().unwrap().to_string();
    let mut observer_out = observer.try_clone().unwrap();
    let (obs_tx, obs_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut answer = observer.try_clone().unwrap();
        for line in BufReader::new(observer).lines() {
            let Ok(line) = line else { return };
            if line == "PING" && answer.write_all(b"PONG\n").is_err() {
                return;
            }
            if obs_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut obs_seen = Vec::new();

    let addr = server.addr.to_string();
    let child = sockloop_cmd(&["client", "chat", "--addr", &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sockloop client chat");
    let mut child = KillOnDrop(child);
    // Kept open (not written to) until the end: the user sits at the prompt.
    let mut stdin = child.0.stdin.take().expect("piped stdin");
    let client_rx = lines_of(child.0.stdout.take().expect("piped stdout"));
    let stderr = drain(child.0.stderr.take().expect("piped stderr"));
    let mut client_seen = Vec::new();

    let name = wait_line(
        &obs_rx,
        WAIT,
        "announcing the client (`* NAME joined`)",
        &mut obs_seen,
        |l| {
            l.strip_prefix("* ")
                .and_then(|r| r.strip_suffix(" joined"))
                .map(str::to_string)
        },
    );

    // Three drop times of silence from the user. The client must still be in the room.
    let idle_until = Instant::now() + DROP_AFTER * 3;
    let mut observer_pinged = false;
    loop {
        let left = idle_until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match obs_rx.recv_timeout(left) {
            Ok(line) => {
                assert_ne!(
                    line,
                    format!("* {name} left"),
                    "{driver}: the idle client was dropped; its stdout: {client_seen:?}"
                );
                observer_pinged |= line == "PING";
                obs_seen.push(line);
            }
            Err(RecvTimeoutError::Timeout) => break,
            Err(RecvTimeoutError::Disconnected) => {
                panic!("{driver}: the observer was disconnected; it saw {obs_seen:?}")
            }
        }
        while let Ok(line) = client_rx.try_recv() {
            client_seen.push(line);
        }
    }
    assert!(
        observer_pinged,
        "{driver}: the server's keep-alive is on at {PING_AFTER} s (the observer got PING); \
         observer saw {obs_seen:?}"
    );
    assert!(
        child.0.try_wait().expect("try_wait").is_none(),
        "{driver}: the idle client is still running; its stdout: {client_seen:?}"
    );

    // The others' messages still reach it, and its own reach them.
    observer_out.write_all(b"still there?\n").unwrap();
    let expected = format!("{observer_name}: still there?");
    wait_line(
        &client_rx,
        WAIT,
        &format!("{expected:?} on the idle client's stdout"),
        &mut client_seen,
        |l| (l == expected).then_some(()),
    );
    stdin.write_all(b"yes\n").unwrap();
    let expected = format!("{name}: yes");
    wait_line(
        &obs_rx,
        WAIT,
        &format!("{expected:?} from the idle client"),
        &mut obs_seen,
        |l| (l == expected).then_some(()),
    );

    // The end of input ends the client, cleanly.
    drop(stdin);
    let status = crate::support::wait_until(WAIT, "the chat client exits at end of input", || {
        child.0.try_wait().expect("try_wait")
    });
    client_seen.extend(client_rx.iter());
    let stderr = stderr.join().expect("stderr reader");
    assert!(
        status.success(),
        "{driver}: exit 0 at the end of input, got {status}; stderr:\n{stderr}"
    );
    assert!(
        !client_seen
            .iter()
            .any(|l| l == "PING" || l.contains("idle too long")),
        "{driver}: the keep-alive is answered, not shown, and never ends in a drop; \
         stdout: {client_seen:?}"
    );
}
crate::support::per_driver!(
    idle_chat_client_is_kept: idle_chat_client_kept_reactor,
    idle_chat_client_kept_threaded;
    not_iterative: "the observer and the client are in the room at once"
);

/// The chat client's keep-alive answer does not eat an echo server's echo of a `PING`
/// line the user typed: every line comes back as sent.
#[test]
fn echo_client_shows_an_echoed_ping() {
    let server = ServerProc::start("echo", Driver::Reactor, &[]);
    let addr = server.addr.to_string();
    let input = "PING\nhi\nPING\r\nPIN\nPINGS\nPING";
    let run = run_sockloop(&["client", "echo", "--addr", &addr], input.as_bytes());
    assert!(
        run.status.success(),
        "exit {}; stderr:\n{}",
        run.status,
        run.stderr
    );
    assert_eq!(
        run.stdout, input,
        "every line is shown as the server sent it"
    );
}

/// A port that was free a moment ago, with nothing bound to it now.
fn closed_udp_port() -> String {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("find a free UDP port")
        .to_string()
}

/// The UDP client against a closed port reports the ICMP error (connection refused) and
/// fails, at once rather than after the reply wait.
#[test]
fn udp_client_to_a_closed_port_fails_fast() {
    let addr = closed_udp_port();
    let start = Instant::now();
    let run = run_sockloop(&["client", "hello", "--addr", &addr], b"Michael\n");
    let took = start.elapsed();
    assert_eq!(
        run.status.code(),
        Some(1),
        "exit 1 with nothing listening at {addr}; stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.contains(&addr) && run.stderr.to_lowercase().contains("refused"),
        "stderr names {addr} and says the connection was refused; stderr:\n{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "no reply printed: {:?}", run.stdout);
    assert!(
        took < Duration::from_millis(1500),
        "failed within 1.5 s, not after the 2 s reply wait ({took:?})"
    );
}

/// The UDP client stops as soon as every datagram it sent has been answered.
#[test]
fn udp_client_stops_once_every_line_is_answered() {
    let server = ServerProc::start("hello", Driver::Reactor, &[]);
    let addr = server.addr.to_string();
    let start = Instant::now();
    let run = run_sockloop(&["client", "hello", "--addr", &addr], b"a\nb\nc\n");
    let took = start.elapsed();
    assert!(
        run.status.success(),
        "exit 0; got {}; stderr:\n{}",
        run.status,
        run.stderr
    );
    assert_eq!(run.stdout, "Hello, a!\nHello, b!\nHello, c!\n");
    assert!(
        took < Duration::from_millis(1500),
        "stopped after the third reply, well before the 2 s bound ({took:?})"
    );

    // Nothing to send: nothing to wait for.
    let start = Instant::now();
    let run = run_sockloop(&["client", "hello", "--addr", &addr], b"");
    let took = start.elapsed();
    assert!(run.status.success(), "exit 0; stderr:\n{}", run.stderr);
    assert!(run.stdout.is_empty(), "{:?}", run.stdout);
    assert!(
        took < Duration::from_millis(1500),
        "no input, no wait ({took:?})"
    );
}
