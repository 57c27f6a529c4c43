//! The echo demo under every driver, over real sockets on 127.0.0.1, served by child
//! processes of the real binary.
//!
//! Each scenario is a `fn(Driver)` written once; [`per_driver!`] turns it into one
//! `#[test]` per driver so that nextest lists (and times) each separately.

use crate::support::{
    connect, connect_with_buffers, pattern, per_driver, read_exact_n, read_to_end, wait_until,
    InProcServer, ServerProc, DEADLINE,
};
use socket2::SockRef;
use sockloop_demos::proto::echo::Echo;
use sockloop_demos::serve::Driver;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// Helpers local to these scenarios.

/// Panics unless `got == want`, naming the first differing offset rather than dumping
/// megabytes of bytes.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(at) => panic!(
            "{what}: expected the bytes sent back unchanged; first difference at offset {at} \
             (got {:#04x}, expected {:#04x}; {} bytes received, {} expected)",
            got[at],
            want[at],
            got.len(),
            want.len()
        ),
        None => panic!(
            "{what}: expected {} bytes back, got {} (the common prefix matches)",
            want.len(),
            got.len()
        ),
    }
}

/// Sends `msg` and panics unless exactly `msg` comes back.
fn echo_once(s: &mut TcpStream, msg: &[u8], what: &str) {
    s.write_all(msg)
        .unwrap_or_else(|e| panic!("{what}: sending {} bytes failed: {e}", msg.len()));
    let got = read_exact_n(s, msg.len());
    assert_same(&got, msg, what);
}

/// Half-closes, then expects the server to close without sending anything more.
fn finish(mut s: TcpStream, what: &str) {
    s.shutdown(Shutdown::Write)
        .unwrap_or_else(|e| panic!("{what}: shutdown(Write) failed: {e}"));
    let rest = read_to_end(&mut s);
    assert!(
        rest.is_empty(),
        "{what}: expected EOF right after the last echo, got {} more bytes",
        rest.len()
    );
}

/// Waits (up to `timeout`) until `s` is writable; returns false on timeout.
fn wait_writable(s: &TcpStream, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd that lives across the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            return true;
        }
        if rc == 0 {
            return false;
        }
        let e = io::Error::last_os_error();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll failed: {e}");
    }
}

/// The server's open fds, one `fd -> target` per line, for failure messages.
fn fd_listing(server: &ServerProc) -> String {
    let dir = format!("/proc/{}/fd", server.pid());
    let mut lines: Vec<(u32, String)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let fd = e.file_name().to_str()?.parse().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                Some((fd, format!("  {fd} -> {}", target.display())))
            })
            .collect()
        })
        .unwrap_or_default();
    lines.sort();
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

/// Waits until the server has exactly `want` fds open; on timeout, panics with its fd
/// table and whether it is still running.
fn wait_for_fds(server: &mut ServerProc, want: usize, what: &str) {
    let start = Instant::now();
    let mut last = 0;
    let reached = wait_until(DEADLINE * 2, what, || {
        last = server.open_fds();
        (last == want || start.elapsed() > DEADLINE).then_some(last == want)
    });
    if !reached {
        let listing = fd_listing(server);
        let status = server.child.try_wait();
        panic!(
            "{what}: expected {want} open fds within {DEADLINE:?}, the server has {last} \
             (exit status: {status:?}):\n{listing}"
        );
    }
}

/// Waits until the server has installed its SIGINT handler (`SigCgt` in
/// `/proc/<pid>/status`). `sockloop serve` prints its `listening` line *before* it installs
/// the handler (and opens the handler's socket pair), so until then a SIGINT kills it
/// outright and its fd count is still growing. Tests that are not about that window wait
/// here; [`ctrl_c_right_after_listening`] probes the window itself.
fn wait_for_sigint_handler(server: &ServerProc) {
    wait_until(DEADLINE, "the server to install its SIGINT handler", || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).ok()?;
        let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
        let mask = u64::from_str_radix(mask.trim(), 16).ok()?;
        (mask & (1 << (libc::SIGINT - 1)) != 0).then_some(())
    });
}

fn assert_alive(server: &mut ServerProc, what: &str) {
    let status = server.child.try_wait().expect("try_wait on the server");
    assert!(
        status.is_none(),
        "{what}: expected the server process to still be running, it exited with {status:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 1. Basic echo.

fn basic_echo(driver: Driver) {
    let server = ServerProc::start("echo", driver, &[]);
    let mut s = connect(server.addr);
    let every_byte: Vec<u8> = (0..=255).collect();
    let messages: [Vec<u8>; 8] = [
        b"x".to_vec(),
        b"hello\n".to_vec(),
        every_byte,
        vec![0; 1000],
        pattern(1, 1460),
        pattern(2, 4096),
        pattern(3, 64 * 1024 + 3),
        pattern(4, 200_000),
    ];
    for (i, msg) in messages.iter().enumerate() {
        let what = format!("{driver}: message {i} ({} bytes)", msg.len());
        echo_once(&mut s, msg, &what);
    }
    // Pipelined: several messages in one go come back in order.
    let batch: Vec<u8> = (10..20).flat_map(|seed| pattern(seed, 777)).collect();
    echo_once(&mut s, &batch, &format!("{driver}: ten pipelined messages"));
    finish(s, &format!("{driver}: basic echo"));
}

per_driver!(basic_echo: basic_echo_reactor, basic_echo_threaded, basic_echo_iterative);

// ---------------------------------------------------------------------------------------
// 2. 8 MiB in one write_all while the reader takes 4 KiB at a time.

const BIG: usize = 8 << 20;

fn big_write_slow_reader(driver: Driver) {
    let server = ServerProc::start("echo", driver, &[]);
    // A small receive buffer keeps the window small: the server meets backpressure
    // (partial writes, WouldBlock, the reactor's high-water mark) almost at once.
    let reader = connect_with_buffers(server.addr, Some(16 * 1024), None, DEADLINE);
    let mut writer = reader.try_clone().expect("clone the stream for the writer");
    let data = Arc::new(pattern(8, BIG));
    let sent = Arc::clone(&data);
    let writer = std::thread::spawn(move || -> io::Result<()> {
        writer.write_all(&sent)?;
        writer.shutdown(Shutdown::Write)
    });

    let mut reader = reader;
    let mut buf = [0u8; 4096];
    let mut got = 0;
    loop {
        let n = reader.read(&mut buf).unwrap_or_else(|e| {
            panic!("{driver}: read failed after {got} of {BIG} echoed bytes: {e}")
        });
        if n == 0 {
            break;
        }
        assert!(
            got + n <= BIG,
            "{driver}: expected exactly {BIG} bytes back, got more"
        );
        if buf[..n] != data[got..got + n] {
            assert_same(
                &buf[..n],
                &data[got..got + n],
                &format!("{driver}: chunk at offset {got}"),
            );
        }
        got += n;
    }
    assert_eq!(
        got, BIG,
        "{driver}: expected all {BIG} bytes back before the server closed"
    );
    writer
        .join()
        .expect("writer thread panicked")
        .unwrap_or_else(|e| {
            panic!("{driver}: expected write_all(8 MiB) + shutdown to succeed: {e}")
        });
}

per_driver!(
    big_write_slow_reader: big_write_slow_reader_reactor,
    big_write_slow_reader_threaded,
    big_write_slow_reader_iterative
);

// ---------------------------------------------------------------------------------------
// 3. 500 concurrent clients, each checking its own bytes.

const CLIENTS: usize = 500;

/// A gate the client threads wait at once connected, so that all of them are connected
/// at the same time before any sends.
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

fn one_of_many(
    i: usize,
    addr: SocketAddr,
    connected: &AtomicUsize,
    gate: &Gate,
) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, DEADLINE)
        .map_err(|e| format!("client {i}: connect: {e}"))?;
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    connected.fetch_add(1, Ordering::SeqCst);
    {
        let open = gate.open.lock().unwrap_or_else(|p| p.into_inner());
        let (open, _) = gate
            .cv
            .wait_timeout_while(open, DEADLINE, |open| !*open)
            .unwrap_or_else(|p| p.into_inner());
        if !*open {
            return Err(format!("client {i}: the gate never opened"));
        }
    }
    for round in 0..2 {
        let len = 100 + (i * 37 + round * 1013) % 4000;
        let msg = pattern((1000 + i * 2 + round) as u64, len);
        s.write_all(&msg)
            .map_err(|e| format!("client {i} round {round}: send {len} bytes: {e}"))?;
        let mut got = vec![0; len];
        s.read_exact(&mut got)
            .map_err(|e| format!("client {i} round {round}: read {len} echoed bytes: {e}"))?;
        if got != msg {
            let at = got.iter().zip(&msg).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!(
                "client {i} round {round}: expected its own bytes back, first difference at {at}"
            ));
        }
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("client {i}: shutdown: {e}"))?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .map_err(|e| format!("client {i}: waiting for EOF: {e}"))?;
    if !rest.is_empty() {
        return Err(format!(
            "client {i}: expected EOF, got {} more bytes",
            rest.len()
        ));
    }
    Ok(())
}

fn many_clients(driver: Driver) {
    let server = ServerProc::start("echo", driver, &[]);
    wait_for_sigint_handler(&server);
    let base_fds = server.open_fds();
    let addr = server.addr;
    let connected = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Gate {
        open: Mutex::new(false),
        cv: Condvar::new(),
    });
    let (tx, rx) = mpsc::channel::<(usize, Result<(), String>)>();
    for i in 0..CLIENTS {
        let (connected, gate, tx) = (Arc::clone(&connected), Arc::clone(&gate), tx.clone());
        std::thread::Builder::new()
            .name(format!("client-{i}"))
            .stack_size(128 * 1024)
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    one_of_many(i, addr, &connected, &gate)
                }))
                .unwrap_or_else(|_| Err(format!("client {i} panicked")));
                let _ = tx.send((i, result));
            })
            .expect("spawn a client thread");
    }
    drop(tx);

    // Every client connected (a client that failed early ends the wait too).
    let mut results = Vec::new();
    wait_until(DEADLINE, "all 500 clients connected", || {
        results.extend(rx.try_iter());
        (connected.load(Ordering::SeqCst) == CLIENTS || !results.is_empty()).then_some(())
    });
    if driver != Driver::Iterative && results.is_empty() {
        // The concurrent drivers hold all 500 connections open at once (the iterative one
        // leaves 499 in the listen backlog).
        wait_until(DEADLINE, "the server holds 500 connections at once", || {
            (server.open_fds() >= base_fds + CLIENTS).then_some(())
        });
    }
    *gate.open.lock().unwrap() = true;
    gate.cv.notify_all();

    let deadline = Instant::now() + DEADLINE;
    while results.len() < CLIENTS {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) => results.push(r),
            Err(_) => panic!(
                "{driver}: expected all {CLIENTS} clients to finish within {DEADLINE:?}; {} did",
                results.len()
            ),
        }
    }
    let failures: Vec<String> = results.into_iter().filter_map(|(_, r)| r.err()).collect();
    assert!(
        failures.is_empty(),
        "{driver}: expected every client to get its own bytes back; {} failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

per_driver!(many_clients: many_clients_reactor, many_clients_threaded, many_clients_iterative);

// ---------------------------------------------------------------------------------------
// 4. Half-close: everything sent before our FIN comes back, then the server's FIN.

fn half_close(driver: Driver) {
    let server = ServerProc::start("echo", driver, &[]);

    // Small: a few writes, FIN, then read everything back.
    let mut s = connect(server.addr);
    let parts = [pattern(40, 10), pattern(41, 3000), pattern(42, 20_000)];
    for p in &parts {
        s.write_all(p).expect("send a part");
    }
    s.shutdown(Shutdown::Write).expect("shutdown(Write)");
    let got = read_to_end(&mut s);
    assert_same(
        &got,
        &parts.concat(),
        &format!("{driver}: half-close, small"),
    );

    // Larger: 1 MiB from a writer thread, then FIN, while this thread reads.
    let data = Arc::new(pattern(43, 1 << 20));
    let mut r = connect_with_buffers(server.addr, Some(32 * 1024), None, DEADLINE);
    let mut w = r.try_clone().unwrap();
    let sent = Arc::clone(&data);
    let writer = std::thread::spawn(move || -> io::Result<()> {
        w.write_all(&sent)?;
        w.shutdown(Shutdown::Write)
    });
    let got = read_to_end(&mut r);
    writer
        .join()
        .unwrap()
        .expect("expected write_all(1 MiB) + shutdown(Write) to succeed");
    assert_same(&got, &data, &format!("{driver}: half-close, 1 MiB"));
}

per_driver!(half_close: half_close_reactor, half_close_threaded, half_close_iterative);

/// The reactor keeps unsent output in user space (up to its high-water mark), so the
/// peer's FIN can arrive while a large reply is still queued: the connection must stay in
/// PeerClosed and send it all before closing. (The blocking drivers cannot get there:
/// they stop reading while blocked in `write`.)
#[test]
fn half_close_while_output_queued_reactor() {
    let server = ServerProc::start("echo", Driver::Reactor, &[]);
    let data = Arc::new(pattern(44, 256 * 1024));
    // A tiny window: nearly all of the echo must wait in the reactor's output buffer.
    let mut r = connect_with_buffers(server.addr, Some(4 * 1024), None, DEADLINE);
    let mut w = r.try_clone().unwrap();
    let sent = Arc::clone(&data);
    let writer = std::thread::spawn(move || -> io::Result<()> {
        w.write_all(&sent)?;
        w.shutdown(Shutdown::Write)
    });
    // Not reading until the FIN is out: the reactor holds the echo when the FIN arrives.
    writer
        .join()
        .unwrap()
        .expect("expected write_all(256 KiB) + shutdown(Write) to finish without our reading");
    let got = read_to_end(&mut r);
    assert_same(
        &got,
        &data,
        "reactor: FIN with 256 KiB of echo still queued",
    );
}

// ---------------------------------------------------------------------------------------
// 5. A reset in mid-stream hurts only the connection that was reset.

fn reset_mid_stream(driver: Driver) {
    let mut server = ServerProc::start("echo", driver, &[]);
    // The iterative server serves one connection at a time, so there B cannot stay open
    // across A's life: it is closed before A and a fresh one follows A.
    let keep_b = driver != Driver::Iterative;
    let mut b = connect(server.addr);
    echo_once(&mut b, &pattern(50, 5000), &format!("{driver}: B before A"));
    let b = if keep_b {
        Some(b)
    } else {
        finish(b, &format!("{driver}: B closes before A"));
        None
    };
    // B's echo (and, iterative, B's EOF) means the server's table is settled here; the
    // signal handler's fds are made after the `listening` line: wait for them too.
    wait_for_sigint_handler(&server);
    let fds_before_a = server.open_fds();

    // A: tiny buffers, so the server's echo to A backs up at once.
    let mut a = connect_with_buffers(server.addr, Some(4 * 1024), Some(4 * 1024), DEADLINE);
    echo_once(
        &mut a,
        &pattern(51, 16 * 1024),
        &format!("{driver}: A, first echo"),
    );
    // Flood without reading until the pipeline is full: the server is then holding (or
    // blocked writing) echo that A will never read.
    a.set_nonblocking(true).unwrap();
    let chunk = pattern(52, 64 * 1024);
    let mut flooded = 0usize;
    loop {
        match a.write(&chunk) {
            Ok(n) => flooded += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if flooded >= 1 << 20 {
                    break;
                }
                assert!(
                    wait_writable(&a, DEADLINE),
                    "{driver}: expected the server to keep reading A until 1 MiB was sent \
                     ({flooded} bytes so far)"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{driver}: A's flood failed after {flooded} bytes: {e}"),
        }
        if flooded >= 32 << 20 {
            break;
        }
    }
    // RST: close with SO_LINGER = 0 while the server still owes A its echo.
    SockRef::from(&a)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(a);

    // The reset connection is closed and forgotten...
    wait_for_fds(
        &mut server,
        fds_before_a,
        &format!("{driver}: the server to close the reset connection"),
    );
    assert_alive(&mut server, &format!("{driver}: after A's reset"));
    // ...and everyone else is served as before.
    if let Some(mut b) = b {
        echo_once(
            &mut b,
            &pattern(53, 70_000),
            &format!("{driver}: B after A's reset"),
        );
        finish(b, &format!("{driver}: B"));
    }
    let mut c = connect(server.addr);
    echo_once(
        &mut c,
        &pattern(54, 70_000),
        &format!("{driver}: C, connected after A's reset"),
    );
    finish(c, &format!("{driver}: C"));
    assert_alive(&mut server, &format!("{driver}: at the end"));
}

per_driver!(
    reset_mid_stream: reset_mid_stream_reactor,
    reset_mid_stream_threaded,
    reset_mid_stream_iterative
);

// ---------------------------------------------------------------------------------------
// 6. Closed connections give back their fds.

const FD_CLIENTS: usize = 50;

fn fds_return_to_baseline(driver: Driver) {
    let mut server = ServerProc::start("echo", driver, &[]);
    // The signal handler's fds are made after the `listening` line: wait for them.
    wait_for_sigint_handler(&server);
    // Warm-up: whatever the first connection opens lazily is part of the baseline. The
    // server's FIN comes from closing its last fd for the connection, so our EOF means
    // the warm-up connection is gone from the server's table.
    let mut warm = connect(server.addr);
    echo_once(&mut warm, b"warm-up", &format!("{driver}: warm-up"));
    finish(warm, &format!("{driver}: warm-up"));
    let baseline = server.open_fds();

    let mut clients: Vec<TcpStream> = (0..FD_CLIENTS).map(|_| connect(server.addr)).collect();
    if driver == Driver::Iterative {
        // One at a time, in accept order (= connect order): each must close before the
        // server gets to the next.
        for (i, mut c) in clients.drain(..).enumerate() {
            echo_once(
                &mut c,
                &pattern(60 + i as u64, 1000),
                &format!("{driver}: client {i}"),
            );
        }
    } else {
        for (i, c) in clients.iter_mut().enumerate() {
            echo_once(
                c,
                &pattern(60 + i as u64, 1000),
                &format!("{driver}: client {i}"),
            );
        }
        let open = server.open_fds();
        assert!(
            open >= baseline + FD_CLIENTS,
            "{driver}: expected at least {} fds with {FD_CLIENTS} clients open (baseline \
             {baseline}), found {open}",
            baseline + FD_CLIENTS
        );
        drop(clients);
    }
    wait_for_fds(
        &mut server,
        baseline,
        &format!("{driver}: the fd count back to its baseline once all clients closed"),
    );
}

per_driver!(
    fds_return_to_baseline: fds_return_to_baseline_reactor,
    fds_return_to_baseline_threaded,
    fds_return_to_baseline_iterative
);

// ---------------------------------------------------------------------------------------
// 7. Ctrl-C (SIGINT) stops every driver cleanly, idle or with a client connected.

fn ctrl_c_idle(driver: Driver) {
    let server = ServerProc::start("echo", driver, &[]);
    // One exchange first, so the server is past its start-up (see
    // ctrl_c_right_after_listening for the start-up itself).
    let mut s = connect(server.addr);
    echo_once(&mut s, b"ping", &format!("{driver}: before Ctrl-C"));
    finish(s, &format!("{driver}: before Ctrl-C"));
    wait_for_sigint_handler(&server);
    let status = server.interrupt_and_wait();
    assert!(
        status.success(),
        "{driver}: expected exit status 0 after SIGINT, got {status}"
    );
}

per_driver!(ctrl_c_idle: ctrl_c_idle_reactor, ctrl_c_idle_threaded, ctrl_c_idle_iterative);

/// Panics unless `s` has ended: EOF, or a reset.
fn assert_ended(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: expected EOF, got {n} more bytes"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            ),
            "{what}: expected EOF or a reset, got {e}"
        ),
    }
}

/// A client that behaves: it reads while the server stops, sees the server's EOF and
/// closes its end.
fn ctrl_c_with_client(driver: Driver) {
    let server = ServerProc::start("echo", driver, &[]);
    let mut s = connect(server.addr);
    // After this echo the server has accepted us and (threaded, iterative) a thread sits
    // blocked in read() on our connection.
    echo_once(&mut s, b"ping", &format!("{driver}: before Ctrl-C"));
    wait_for_sigint_handler(&server);
    let what = format!("{driver}: the connected client after Ctrl-C");
    let client = std::thread::spawn(move || assert_ended(&mut s, &what));
    let status = server.interrupt_and_wait();
    assert!(
        status.success(),
        "{driver}: expected exit status 0 after SIGINT with a client connected, got {status}"
    );
    client.join().expect("the client saw its connection end");
}

per_driver!(
    ctrl_c_with_client: ctrl_c_with_client_reactor,
    ctrl_c_with_client_threaded,
    ctrl_c_with_client_iterative
);

/// A client that does nothing at all while the server stops: the server must still
/// exit (it may give the connection a bounded grace period first).
fn ctrl_c_with_idle_client(driver: Driver) {
    let server = ServerProc::start("echo", driver, &[]);
    let mut s = connect(server.addr);
    echo_once(&mut s, b"ping", &format!("{driver}: before Ctrl-C"));
    wait_for_sigint_handler(&server);
    let status = server.interrupt_and_wait();
    assert!(
        status.success(),
        "{driver}: expected exit status 0 after SIGINT with an idle client connected, got \
         {status}"
    );
    assert_ended(
        &mut s,
        &format!("{driver}: the idle client after the server exited"),
    );
}

per_driver!(
    ctrl_c_with_idle_client: ctrl_c_with_idle_client_reactor,
    ctrl_c_with_idle_client_threaded,
    ctrl_c_with_idle_client_iterative
);

/// A SIGINT sent as soon as the `listening` line has been read must still be a clean
/// stop. Repeated, because the window it probes is narrow.
fn ctrl_c_right_after_listening(driver: Driver) {
    for attempt in 0..20 {
        let server = ServerProc::start("echo", driver, &[]);
        let status = server.interrupt_and_wait();
        assert!(
            status.success(),
            "{driver}: attempt {attempt}: expected exit status 0 for a SIGINT right after the \
             `listening` line, got {status} (the SIGINT handler is not installed yet)"
        );
    }
}

per_driver!(
    ctrl_c_right_after_listening: ctrl_c_right_after_listening_reactor,
    ctrl_c_right_after_listening_threaded,
    ctrl_c_right_after_listening_iterative
);

/// Urgent (out-of-band) data in the middle of a stream: the bytes after it are served
/// without the peer sending again, under every driver. (Deterministic for the reactor in
/// `reactor::urgent_data_does_not_strand_what_follows_it`.)
fn urgent_data_mid_stream(driver: Driver) {
    let server = InProcServer::start(driver, crate::support::test_config(), || Echo);
    let mut client = connect(server.addr());
    client.write_all(b"abc").unwrap();
    SockRef::from(&client).send_out_of_band(b"X").unwrap();
    client.write_all(b"def").unwrap();
    assert_eq!(read_exact_n(&mut client, 6), b"abcdef");
    drop(client);
    server.stop();
}
per_driver!(urgent_data_mid_stream: urgent_data_reactor, urgent_data_threaded, urgent_data_iterative);
