//! Fan-out under a hostile reader: chat with one subscriber that never reads, three that
//! do, and a publisher sending as fast as it can.
//!
//! What must hold (Redis's client-output-buffer-limit and TCP's own flow control are the
//! anchors): backpressure reaches the publisher, so the healthy subscribers get every
//! line, in order; the stuck one is dropped within a bounded time (its backlog timeout)
//! with a count; the server's memory stays bounded (no connection ever holds more than the
//! output limit).

use crate::support::{
    connect, connect_with_buffers, per_driver, wait_until, Driver, InProcServer, DEADLINE, WAIT,
};
use sockloop::reactor::Config;
use sockloop_demos::proto::chat::{Chat, ChatConfig, Room};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Lines the publisher sends, each 1 KiB: 8 MiB in all, several times the stuck
/// subscriber's kernel buffers and the server's output limit.
const LINES: usize = 8192;

fn line(i: usize) -> Vec<u8> {
    let mut l = format!("{i:06} ").into_bytes();
    l.resize(1023, b'x');
    l.push(b'\n');
    l
}

/// Reads until the publisher's last line, checking that every one arrives once, in order.
/// A `paced` reader is slow but healthy: it takes 64 KiB every 4 ms (16 MiB/s), slower
/// than the publisher can send, so without backpressure its backlog would pass the output
/// limit and it would be dropped. (The pause is the load's shape, not a wait for
/// readiness.)
fn read_all_lines(s: &TcpStream, paced: bool) -> Result<usize, String> {
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let mut since_pause = 0;
    let mut next = 0;
    let mut buf = Vec::new();
    while next < LINES {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => return Err(format!("closed after {next} of {LINES} lines")),
            Ok(n) => {
                since_pause += n;
                if paced && since_pause >= 64 * 1024 {
                    since_pause = 0;
                    std::thread::sleep(Duration::from_millis(4));
                }
            }
            Err(e) => return Err(format!("read failed after {next} lines: {e}")),
        }
        // Room notices ("* ... joined") come too; the publisher's lines start "P: ".
        let Some(body) = buf.strip_prefix(b"P: ") else {
            continue;
        };
        let want = line(next);
        if body != want.as_slice() {
            return Err(format!(
                "line {next} came as {:?}",
                String::from_utf8_lossy(&body[..body.len().min(12)])
            ));
        }
        next += 1;
    }
    Ok(next)
}

fn a_stuck_subscriber_costs_the_healthy_ones_nothing(driver: Driver) {
    let cfg = Config {
        high_water: 128 * 1024,
        low_water: 32 * 1024,
        output_limit: 1024 * 1024,
        backlog_timeout: Some(Duration::from_millis(500)),
        max_connections: 64,
        ..Config::default()
    };
    let room = Room::shared();
    let room2 = room.clone();
    let server = InProcServer::start(driver, cfg, move || {
        Chat::new(room2.clone(), ChatConfig::default())
    });
    let members = |n: usize| room.lock().unwrap().len() == n;

    // The stuck subscriber: a tiny receive window, and it never reads.
    let stuck = connect_with_buffers(server.addr(), Some(4096), None, WAIT);
    wait_until(WAIT, "the stuck subscriber joins", || {
        members(1).then_some(())
    });
    // Three healthy subscribers: two fast, one slow (paced).
    let healthy: Vec<_> = (0..3)
        .map(|i| {
            let s = connect(server.addr());
            wait_until(WAIT, "a subscriber joins", || members(2 + i).then_some(()));
            // The socket comes back, so the subscriber stays in the room until the end.
            std::thread::spawn(move || (read_all_lines(&s, i == 2), s))
        })
        .collect();
    let mut publisher = connect(server.addr());
    wait_until(WAIT, "the publisher joins", || members(5).then_some(()));
    publisher.write_all(b"/nick P\n").unwrap();
    let mut notice = [0u8; 64];
    let n = publisher.read(&mut notice).unwrap();
    assert!(
        notice[..n].ends_with(b"is now P\n"),
        "{:?}",
        String::from_utf8_lossy(&notice[..n])
    );

    let start = Instant::now();
    let sender = {
        let mut w = publisher.try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..LINES {
                w.write_all(&line(i))
                    .expect("the publisher is never dropped");
            }
        })
    };
    let mut kept = Vec::new();
    for h in healthy {
        let (got, s) = h.join().unwrap();
        assert_eq!(got, Ok(LINES), "a healthy subscriber under {driver}");
        kept.push(s);
    }
    sender.join().unwrap();
    let took = start.elapsed();
    eprintln!("fan-out under {driver}: {LINES} lines to 3 healthy subscribers in {took:?}");

    // The stuck one was dropped: after what its buffers hold, its stream ends.
    stuck.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut drained = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut s = &stuck;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    assert!(
        drained < LINES * 1024,
        "the stuck subscriber got {drained} bytes: it was dropped, not served everything"
    );
    wait_until(WAIT, "the stuck subscriber leaves the room", || {
        members(4).then_some(())
    });
    if let InProcServer::Reactor(bg) = &server {
        let stats = bg.stats();
        assert!(stats.slow_readers >= 1, "counted: {stats:?}");
        assert!(
            stats.holds >= 1,
            "backpressure reached the publisher: {stats:?}"
        );
        assert!(
            stats.peak_output_buffered <= 1024 * 1024,
            "no connection held more than the output limit: {stats:?}"
        );
    }
    drop((publisher, kept));
    server.stop();
}
per_driver!(
    a_stuck_subscriber_costs_the_healthy_ones_nothing: fanout_reactor, fanout_threaded;
    not_iterative: "five clients in one room at once"
);
