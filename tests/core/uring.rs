//! What only the completion driver has: its fallbacks (a receive buffer per connection
//! where the kernel has no buffer rings, one accept at a time where it has no multishot
//! accept), which this kernel would never take by itself, its option checks, and Unix
//! streams. The scenarios every driver shares run under it through `per_driver!`.

use crate::support::{connect, pattern, read_exact_n, Echo, TempDir, DEADLINE};
use sockloop::blocking::Factory;
use sockloop::net::Endpoint;
use sockloop::proto::Protocol;
use sockloop::session::SessionConfig;
use sockloop::uring::{UringOptions, UringServer};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn echo() -> Factory {
    Arc::new(|| Box::new(Echo) as Box<dyn Protocol + Send>)
}

fn start(at: Endpoint, opts: UringOptions) -> UringServer {
    UringServer::spawn_with(&at, echo(), SessionConfig::default(), opts)
        .expect("start the uring driver (io_uring works on this machine kind)")
}

/// 8 clients at once, each echoing 1 MiB in 16 KiB writes while reading (so sends are
/// partial and receives fill whole buffers): every byte back, in order, per client.
fn eight_big_echoes(server: &UringServer) {
    let addr = server.local_addr().inet().unwrap();
    let clients: Vec<_> = (0..8u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let data = pattern(i, 1 << 20);
                let mut w = s.try_clone().unwrap();
                let sent = data.clone();
                let writer = std::thread::spawn(move || {
                    for piece in sent.chunks(16 * 1024) {
                        w.write_all(piece).unwrap();
                    }
                });
                let got = read_exact_n(&mut s, data.len());
                writer.join().unwrap();
                assert!(
                    got == data,
                    "client {i}: the echo differs from what was sent"
                );
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(server.stats().accepted.load(Ordering::SeqCst), 8);
}

#[test]
fn the_fallbacks_serve_the_same_bytes() {
    let server = start(
        Endpoint::Inet("127.0.0.1:0".parse().unwrap()),
        UringOptions {
            buffer_ring: false,
            multishot_accept: false,
            ..UringOptions::default()
        },
    );
    eight_big_echoes(&server);
    server.shutdown(Duration::from_secs(1));
    server.join();
}

#[test]
fn the_buffer_ring_serves_many_connections_from_a_small_pool() {
    // 4 buffers for 8 busy connections: receives find the ring empty (ENOBUFS) and are
    // submitted again once buffers come back; nothing is lost.
    let server = start(
        Endpoint::Inet("127.0.0.1:0".parse().unwrap()),
        UringOptions {
            buffers: 4,
            buffer_size: 4096,
            ..UringOptions::default()
        },
    );
    eight_big_echoes(&server);
    let s = server.stats();
    assert!(
        s.completions.load(Ordering::SeqCst) > s.enters.load(Ordering::SeqCst),
        "one io_uring_enter reaps several completions under load: {s:?}"
    );
    server.shutdown(Duration::from_secs(1));
    server.join();
}

#[test]
fn nonsense_options_are_refused_before_anything_is_bound() {
    let at = Endpoint::Inet("127.0.0.1:0".parse().unwrap());
    for opts in [
        UringOptions {
            entries: 1000,
            ..UringOptions::default()
        },
        UringOptions {
            buffers: 300,
            ..UringOptions::default()
        },
        UringOptions {
            buffer_size: 0,
            ..UringOptions::default()
        },
    ] {
        let e = UringServer::spawn_with(&at, echo(), SessionConfig::default(), opts.clone())
            .err()
            .unwrap_or_else(|| panic!("{opts:?} was accepted"));
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{opts:?}: {e}");
    }
}

#[test]
fn unix_streams_are_served_and_the_socket_file_removed() {
    let dir = TempDir::new("uring-unix");
    let path = dir.socket_path("echo.sock");
    let server = start(Endpoint::Unix(path.clone()), UringOptions::default());
    let mut c = UnixStream::connect(&path).expect("connect to the unix socket");
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.write_all(b"over a unix socket").unwrap();
    let mut got = [0u8; 18];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"over a unix socket");
    drop(c);
    server.shutdown(Duration::from_secs(1));
    server.join();
    assert!(
        !path.exists(),
        "the socket file is removed when the server ends"
    );
}

#[test]
fn a_stop_closes_every_connection_at_once() {
    let server = start(
        Endpoint::Inet("127.0.0.1:0".parse().unwrap()),
        UringOptions::default(),
    );
    let mut c = connect(server.local_addr().inet().unwrap());
    c.write_all(b"x").unwrap();
    assert_eq!(read_exact_n(&mut c, 1), b"x");
    server.stop();
    server.join();
    let mut rest = Vec::new();
    // The stop closed it: EOF (or a reset), not a hang.
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after the stop: {rest:?}");
}

#[test]
fn at_the_connection_limit_clients_wait_until_a_slot_frees() {
    let server = start(
        Endpoint::Inet("127.0.0.1:0".parse().unwrap()),
        UringOptions {
            max_connections: 3,
            ..UringOptions::default()
        },
    );
    let addr = server.local_addr().inet().unwrap();
    let mut clients: Vec<Option<std::net::TcpStream>> =
        (0..5).map(|_| Some(connect(addr))).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.as_mut()
            .unwrap()
            .write_all(format!("client {i}").as_bytes())
            .unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate().take(3) {
        assert_eq!(
            read_exact_n(c.as_mut().unwrap(), 8),
            format!("client {i}").as_bytes(),
            "client {i} is within the limit and is served"
        );
    }
    for (i, c) in clients.iter_mut().enumerate().skip(3) {
        crate::support::assert_silent(
            c.as_mut().unwrap(),
            Duration::from_millis(300),
            &format!("client {i} is over the limit of 3"),
        );
    }
    // Two leave: the two that waited are served, in order.
    drop(clients[0].take());
    drop(clients[1].take());
    for (i, c) in clients.iter_mut().enumerate().skip(3) {
        assert_eq!(
            read_exact_n(c.as_mut().unwrap(), 8),
            format!("client {i}").as_bytes(),
            "client {i} is served once a slot frees"
        );
    }
    assert!(server.stats().accept_limit_hits.load(Ordering::SeqCst) > 0);
    server.shutdown(Duration::from_secs(1));
    server.join();
}

#[test]
fn tcp_over_ipv6_is_served() {
    let server = start(
        Endpoint::Inet("[::1]:0".parse().unwrap()),
        UringOptions::default(),
    );
    let addr = server.local_addr().inet().unwrap();
    assert!(addr.is_ipv6(), "bound {addr}");
    let mut c = connect(addr);
    crate::support::round_trip(&mut c, b"over IPv6");
    drop(c);
    server.shutdown(Duration::from_secs(1));
    server.join();
}
