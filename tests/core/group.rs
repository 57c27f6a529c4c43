//! N reactors on one address (`Group`, SO_REUSEPORT): the kernel spreads connections,
//! every loop serves its own, shutdown reaches all, stats are summed.

use crate::support::{round_trip, Echo, DEADLINE};
use sockloop::reactor::{Config, Group};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// 64 clients on a group of 2: both loops accept some (the kernel hashes each
/// connection's addresses: all 64 on one loop would be a 2^-63 chance), each client is
/// served, the summed stats count all 64, and one shutdown ends both loops.
#[test]
fn a_group_spreads_connections_and_shuts_down_as_one() {
    let (group, addr) = Group::listen(2, Config::default(), "127.0.0.1:0".parse().unwrap(), || {
        Echo
    })
    .expect("two reactors listening");
    let mut clients: Vec<TcpStream> = (0..64)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s
        })
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        round_trip(c, format!("client {i}\n").as_bytes());
    }
    let per_loop: Vec<u64> = group
        .handles()
        .iter()
        .map(|h| h.call(|r| r.stats().accepted).expect("the loop runs"))
        .collect();
    assert_eq!(
        per_loop.iter().sum::<u64>(),
        64,
        "every client accepted once: {per_loop:?}"
    );
    assert!(
        per_loop.iter().all(|&n| n > 0),
        "the kernel spread the connections over both loops: {per_loop:?}"
    );
    assert_eq!(group.stats().accepted, 64, "the group's stats are the sum");

    drop(clients);
    let started = Instant::now();
    group.shutdown();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(group.join());
    });
    let joined = rx
        .recv_timeout(DEADLINE)
        .expect("both loops end after one shutdown");
    joined.expect("run() returned Ok in both loops");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        TcpStream::connect(addr).is_err(),
        "no loop listens after the shutdown"
    );
}

/// A group of none is refused before anything is bound.
#[test]
fn a_group_of_zero_is_refused() {
    let err = Group::listen(0, Config::default(), "127.0.0.1:0".parse().unwrap(), || {
        Echo
    })
    .expect_err("zero reactors");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
