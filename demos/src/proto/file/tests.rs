//! The file transfer's tests: the header, the receiver with its store, the sender, and
//! the two together.

use super::wire::hex;
use super::*;
use crate::proto::Action;
use crate::proto::{CloseReason, Out, Protocol};
use crate::testing::test_epoch;
use sha2::{Digest, Sha256};
use std::io::Cursor;
use std::io::{self, Read};

const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Bytes that differ per `seed`, so a misplaced chunk changes the digest.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A driver in miniature for one receiver: feeds `chunks` in order, keeping what is
/// not consumed, as the contract says; then EOF if `eof`. Returns the reply and the
/// last action.
fn feed_receiver<S: Store>(
    rx: &mut FileReceiver<S>,
    chunks: &[&[u8]],
    eof: bool,
) -> (String, Action) {
    let now = test_epoch();
    let mut sent = Vec::new();
    let mut kept = Vec::new();
    let mut action = Action::Continue;
    for c in chunks {
        kept.extend_from_slice(c);
        let mut out = Out::new(&mut sent, now);
        let used = rx.handle_input(&kept, &mut out).expect("no peer error");
        assert!(used <= kept.len());
        kept.drain(..used);
        action = out.action();
        if action != Action::Continue {
            break;
        }
    }
    if eof && action == Action::Continue {
        let mut out = Out::new(&mut sent, now);
        let _ = rx.handle_eof(&kept, &mut out);
        action = out.action();
    }
    rx.handle_close(&CloseReason::PeerClosed);
    (String::from_utf8(sent).unwrap(), action)
}

fn receive(store: &MemStore, stream: &[u8]) -> String {
    feed_receiver(&mut FileReceiver::new(store.clone()), &[stream], true).0
}

// --- the header ---------------------------------------------------------------------

#[test]
fn header_whole_byte_by_byte_and_with_trailing_bytes() {
    let stream = b"FILE notes.txt 12\nhello world!";
    let want = Header {
        name: "notes.txt",
        size: 12,
    };
    assert_eq!(
        parse_header(stream, DEFAULT_MAX_SIZE),
        Ok(Parsed::Complete(want, 18)),
        "trailing body bytes are left for the body"
    );
    for cut in 0..18 {
        assert_eq!(
            parse_header(&stream[..cut], DEFAULT_MAX_SIZE),
            Ok(Parsed::Partial),
            "cut at {cut}"
        );
    }
    assert_eq!(
        parse_header(b"FILE a 0\r\n", DEFAULT_MAX_SIZE),
        Ok(Parsed::Complete(Header { name: "a", size: 0 }, 10))
    );

    // The machine, fed one byte per call, stores the same file.
    let store = MemStore::new();
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let (reply, action) = feed_receiver(&mut FileReceiver::new(store.clone()), &bytes, false);
    assert_eq!(reply, format!("OK 12 {}\n", sha256_hex(b"hello world!")));
    assert_eq!(action, Action::CloseAfterFlush);
    assert_eq!(store.file("notes.txt").unwrap(), b"hello world!");
}

#[test]
fn a_partial_header_is_not_consumed() {
    let mut rx = FileReceiver::new(MemStore::new());
    let mut sent = Vec::new();
    let mut out = Out::new(&mut sent, test_epoch());
    assert_eq!(rx.handle_input(b"FILE notes.t", &mut out).unwrap(), 0);
    assert!(sent.is_empty());
}

#[test]
fn malformed_headers_are_refused_as_soon_as_they_are_known_to_be() {
    for bad in [&b"GET / HTTP/1.1\r\n"[..], b"G", b"file a 1\n", b"FILE\n"] {
        assert_eq!(
            parse_header(bad, DEFAULT_MAX_SIZE),
            Err(Refusal::Malformed),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    for bad in [&b"FILE a\n"[..], b"FILE \n", b"FILE a1\n"] {
        assert_eq!(parse_header(bad, DEFAULT_MAX_SIZE), Err(Refusal::Malformed));
    }
    let long = [&b"FILE "[..], &[b'a'; MAX_HEADER]].concat();
    assert_eq!(
        parse_header(&long, DEFAULT_MAX_SIZE),
        Err(Refusal::HeaderTooLong)
    );
    let store = MemStore::new();
    assert_eq!(
        receive(&store, b"GET / HTTP/1.1\r\n\r\n"),
        "ERR malformed header: expected FILE <name> <size>\n"
    );
    assert_eq!(receive(&store, &long), "ERR header too long\n");
    assert_eq!(
        receive(&store, b"FILE a 5"),
        "ERR malformed header: expected FILE <name> <size>\n",
        "EOF inside the header"
    );
    assert!(store.names().is_empty());
}

#[test]
fn every_refused_name() {
    let long = "a".repeat(MAX_NAME + 1);
    let cases: &[(&[u8], NameError)] = &[
        (b"", NameError::Empty),
        (long.as_bytes(), NameError::TooLong),
        (b"a/b", NameError::Separator),
        (b"/etc", NameError::Separator),
        (b"a\\b", NameError::Separator),
        (b"..", NameError::LeadingDot),
        (b"a..b", NameError::DotDot),
        (b"x..", NameError::DotDot),
        (b".hidden", NameError::LeadingDot),
        (b"a\0b", NameError::Nul),
        (b"a b", NameError::Space),
        (b"a\tb", NameError::Control),
        (b"a\x1b[2Jb", NameError::Control),
        (b"a\x7fb", NameError::Control),
        ("a\u{85}b".as_bytes(), NameError::Control),
        (b"\xff\xfe", NameError::NotUtf8),
    ];
    for &(name, why) in cases {
        assert_eq!(check_name(name), Err(why), "{name:?}");
        let store = MemStore::new();
        let stream = [&b"FILE "[..], name, b" 5\nhello"].concat();
        assert_eq!(
            receive(&store, &stream),
            format!("ERR bad name: {why}\n"),
            "{name:?}"
        );
        assert!(store.names().is_empty(), "{name:?}: nothing stored");
        assert_eq!(store.open_temps(), 0, "{name:?}: no file begun");
    }
    assert!(FileSender::new("../x", 1, Cursor::new(b"x")).is_err());
}

#[test]
fn names_that_are_fine() {
    let longest = "a".repeat(MAX_NAME);
    for name in [
        "notes.txt",
        "a",
        "a.b.c",
        "résumé.pdf",
        "x-y_z(1)",
        &longest,
    ] {
        assert_eq!(check_name(name.as_bytes()), Ok(name));
    }
}

#[test]
fn bad_and_excessive_sizes() {
    for size in ["", "-1", "+5", "1e3", "0x10", " 5", "5 "] {
        let header = format!("FILE a {size}\n");
        let got = parse_header(header.as_bytes(), DEFAULT_MAX_SIZE);
        assert!(
            matches!(got, Err(Refusal::BadSize | Refusal::BadName(_))),
            "{size:?}: {got:?}"
        );
    }
    let over = Err(Refusal::TooLarge { limit: 10 });
    assert_eq!(parse_header(b"FILE a 11\n", 10), over);
    assert_eq!(parse_header(b"FILE a 99999999999999999999\n", 10), over);
    assert!(matches!(
        parse_header(b"FILE a 10\n", 10),
        Ok(Parsed::Complete(_, _))
    ));

    let store = MemStore::new();
    let mut rx = FileReceiver::new(store.clone()).with_max_size(10);
    let (reply, action) = feed_receiver(&mut rx, &[b"FILE a 11\nhello world"], false);
    assert_eq!(reply, "ERR too large: the limit is 10 bytes\n");
    assert_eq!(action, Action::CloseAfterFlush);
    assert!(store.names().is_empty());
}

// --- the body and the store ---------------------------------------------------------

#[test]
fn the_digest_is_sha256_of_the_body() {
    let store = MemStore::new();
    assert_eq!(
        receive(&store, b"FILE abc 3\nabc"),
        format!("OK 3 {ABC_SHA256}\n")
    );
    assert_eq!(store.file("abc").unwrap(), b"abc");
    // The empty file is complete with its header.
    assert_eq!(
        receive(&store, b"FILE empty 0\n"),
        format!("OK 0 {}\n", sha256_hex(b""))
    );
    assert_eq!(store.file("empty").unwrap(), b"");
}

#[test]
fn bytes_past_the_size_are_not_stored() {
    let store = MemStore::new();
    let mut rx = FileReceiver::new(store.clone());
    let (reply, _) = feed_receiver(&mut rx, &[b"FILE abc 3\nab", b"cdef", b"more"], false);
    assert_eq!(reply, format!("OK 3 {ABC_SHA256}\n"));
    assert_eq!(store.file("abc").unwrap(), b"abc");
}

#[test]
fn early_eof_commits_nothing() {
    let store = MemStore::new();
    let mut rx = FileReceiver::new(store.clone());
    let mut sent = Vec::new();
    let now = test_epoch();
    let mut out = Out::new(&mut sent, now);
    assert_eq!(rx.handle_input(b"FILE a 10\nhello", &mut out).unwrap(), 15);
    assert_eq!(store.open_temps(), 1);
    let mut out = Out::new(&mut sent, now);
    assert!(rx.handle_eof(b"", &mut out).is_err(), "a truncated file");
    assert_eq!(out.action(), Action::CloseAfterFlush);
    rx.handle_close(&CloseReason::PeerClosed);
    assert_eq!(sent, b"ERR truncated: got 5 of 10 bytes\n");
    assert!(store.names().is_empty());
    assert_eq!(store.open_temps(), 0, "the temporary file is discarded");
}

#[test]
fn any_close_mid_body_commits_nothing() {
    for reason in [
        CloseReason::Io(io::ErrorKind::ConnectionReset),
        CloseReason::IdleTimeout,
        CloseReason::Shutdown,
        CloseReason::PeerClosed,
    ] {
        let store = MemStore::new();
        let mut rx = FileReceiver::new(store.clone());
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, test_epoch());
        rx.handle_input(b"FILE a 10\nhello", &mut out).unwrap();
        rx.handle_close(&reason);
        assert!(sent.is_empty(), "{reason}");
        assert!(store.names().is_empty(), "{reason}");
        assert_eq!(store.open_temps(), 0, "{reason}");
    }
    // Dropped without a close (a driver that panicked): the temp goes with it.
    let store = MemStore::new();
    let mut rx = FileReceiver::new(store.clone());
    let mut sent = Vec::new();
    rx.handle_input(b"FILE a 10\nhello", &mut Out::new(&mut sent, test_epoch()))
        .unwrap();
    drop(rx);
    assert_eq!(store.open_temps(), 0);
}

#[test]
fn an_existing_name_is_refused_and_kept() {
    let store = MemStore::new();
    store.insert("a", b"old");
    assert_eq!(receive(&store, b"FILE a 3\nnew"), "ERR exists\n");
    assert_eq!(store.file("a").unwrap(), b"old");
}

#[test]
fn a_name_taken_during_the_transfer_is_not_replaced() {
    let store = MemStore::new();
    let mut rx = FileReceiver::new(store.clone());
    let mut sent = Vec::new();
    let now = test_epoch();
    rx.handle_input(b"FILE a 3\nn", &mut Out::new(&mut sent, now))
        .unwrap();
    store.insert("a", b"old");
    let mut out = Out::new(&mut sent, now);
    rx.handle_input(b"ew", &mut out).unwrap();
    assert_eq!(out.action(), Action::CloseAfterFlush);
    assert_eq!(sent, b"ERR exists\n");
    assert_eq!(store.file("a").unwrap(), b"old");
    assert_eq!(store.open_temps(), 0);
}

#[test]
fn a_failing_store_is_an_error_not_a_file() {
    let store = MemStore::with_limit(4);
    assert_eq!(
        receive(&store, b"FILE a 10\nhelloworld"),
        "ERR cannot store\n"
    );
    assert!(store.names().is_empty());
    assert_eq!(store.open_temps(), 0);
}

#[test]
fn shutdown_lets_a_transfer_finish_and_closes_an_idle_connection() {
    let now = test_epoch();
    let mut sent = Vec::new();
    let mut idle = FileReceiver::new(MemStore::new());
    let mut out = Out::new(&mut sent, now);
    idle.handle_shutdown(&mut out);
    assert_eq!(out.action(), Action::CloseAfterFlush);

    let store = MemStore::new();
    let mut busy = FileReceiver::new(store.clone());
    busy.handle_input(b"FILE a 3\na", &mut Out::new(&mut sent, now))
        .unwrap();
    let mut out = Out::new(&mut sent, now);
    busy.handle_shutdown(&mut out);
    assert_eq!(out.action(), Action::Continue);
    let mut out = Out::new(&mut sent, now);
    busy.handle_input(b"bc", &mut out).unwrap();
    assert_eq!(sent, format!("OK 3 {ABC_SHA256}\n").as_bytes());
    assert_eq!(store.file("a").unwrap(), b"abc");
}

// --- the sender ---------------------------------------------------------------------

/// Opens `tx` and drains it as a driver would, one `handle_writable` per chunk.
/// Returns everything it sent and checks no call produced more than one chunk.
fn drain_sender<R: Read>(tx: &mut FileSender<R>) -> (Vec<u8>, Action) {
    let now = test_epoch();
    let mut wire = Vec::new();
    let mut out = Out::new(&mut wire, now);
    tx.handle_open(&mut out);
    let mut wants = out.wants_writable();
    let mut action = out.action();
    while wants && action == Action::Continue {
        let mut piece = Vec::new();
        let mut out = Out::new(&mut piece, now);
        tx.handle_writable(&mut out);
        wants = out.wants_writable();
        action = out.action();
        assert!(piece.len() <= CHUNK, "one chunk per call");
        wire.extend_from_slice(&piece);
    }
    (wire, action)
}

fn reply_to<R: Read>(tx: &mut FileSender<R>, reply: &[u8]) -> Action {
    let mut sent = Vec::new();
    let mut out = Out::new(&mut sent, test_epoch());
    assert_eq!(tx.handle_input(reply, &mut out).unwrap(), reply.len());
    let action = out.action();
    assert!(sent.is_empty());
    action
}

#[test]
fn the_sender_streams_header_then_body() {
    let mut tx = FileSender::new("abc", 3, Cursor::new(b"abc".to_vec())).unwrap();
    let outcome = tx.outcome();
    let (wire, action) = drain_sender(&mut tx);
    assert_eq!(wire, b"FILE abc 3\nabc");
    assert_eq!(action, Action::Continue, "it waits for the reply");
    assert_eq!(outcome.get(), None);
    // A reply may arrive in pieces: nothing is consumed until its newline.
    let mut sent = Vec::new();
    let mut out = Out::new(&mut sent, test_epoch());
    assert_eq!(tx.handle_input(b"OK 3 ba78", &mut out).unwrap(), 0);
    let reply = format!("OK 3 {ABC_SHA256}\n");
    assert_eq!(reply_to(&mut tx, reply.as_bytes()), Action::CloseAfterFlush);
    assert_eq!(
        outcome.get(),
        Some(Ok(Sent {
            name: "abc".into(),
            size: 3,
            sha256: ABC_SHA256.into()
        }))
    );
    tx.handle_close(&CloseReason::Closed);
    assert!(outcome.get().unwrap().is_ok(), "the first outcome stays");
}

/// Sends "abc", answers with `reply`, and returns the error the sender records.
fn failure_after(reply: &str) -> SendError {
    let mut tx = FileSender::new("abc", 3, Cursor::new(b"abc".to_vec())).unwrap();
    let outcome = tx.outcome();
    drain_sender(&mut tx);
    assert_eq!(reply_to(&mut tx, reply.as_bytes()), Action::CloseAfterFlush);
    outcome.get().unwrap().unwrap_err()
}

#[test]
fn the_sender_believes_only_a_matching_ok() {
    assert_eq!(
        failure_after("ERR exists\n"),
        SendError::Refused("exists".into())
    );
    assert_eq!(
        failure_after(&format!("OK 4 {ABC_SHA256}\n")),
        SendError::Mismatch {
            sent_size: 3,
            sent_sha256: ABC_SHA256.into(),
            stored_size: 4,
            stored_sha256: ABC_SHA256.into(),
        }
    );
    let other = sha256_hex(b"abd");
    assert!(matches!(
        failure_after(&format!("OK 3 {other}\n")),
        SendError::Mismatch { stored_sha256, .. } if stored_sha256 == other
    ));
    for garbage in ["HELLO\n", "ERRATIC\n", "OK three x\n", "OK 3\n", "\n"] {
        let got = failure_after(garbage);
        assert!(
            matches!(got, SendError::BadReply(_)),
            "{garbage:?}: {got:?}"
        );
    }
}

#[test]
fn an_early_err_stops_the_stream() {
    let data = pattern(1, 3 * CHUNK);
    let mut tx = FileSender::new("big", data.len() as u64, Cursor::new(data)).unwrap();
    let outcome = tx.outcome();
    let mut wire = Vec::new();
    let now = test_epoch();
    tx.handle_open(&mut Out::new(&mut wire, now));
    tx.handle_writable(&mut Out::new(&mut wire, now));
    reply_to(&mut tx, b"ERR too large: the limit is 10 bytes\n");
    let mut more = Vec::new();
    let mut out = Out::new(&mut more, now);
    tx.handle_writable(&mut out);
    assert!(!out.wants_writable());
    assert!(more.is_empty());
    assert_eq!(
        outcome.get(),
        Some(Err(SendError::Refused(
            "too large: the limit is 10 bytes".into()
        )))
    );
}

#[test]
fn an_ok_before_the_last_byte_is_not_believed() {
    let data = pattern(2, 2 * CHUNK);
    let mut tx = FileSender::new("big", data.len() as u64, Cursor::new(data)).unwrap();
    let outcome = tx.outcome();
    let mut wire = Vec::new();
    tx.handle_open(&mut Out::new(&mut wire, test_epoch()));
    reply_to(&mut tx, format!("OK 131072 {ABC_SHA256}\n").as_bytes());
    assert!(matches!(outcome.get(), Some(Err(SendError::BadReply(_)))));
}

#[test]
fn a_short_file_aborts_the_connection() {
    let mut tx = FileSender::new("a", 10, Cursor::new(b"hello".to_vec())).unwrap();
    let outcome = tx.outcome();
    let (wire, action) = drain_sender(&mut tx);
    assert_eq!(wire, b"FILE a 10\nhello");
    assert_eq!(
        action,
        Action::Abort,
        "the receiver must see the stream end early"
    );
    assert!(matches!(outcome.get(), Some(Err(SendError::Read(_)))));
}

#[test]
fn a_read_error_aborts_the_connection() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    let mut tx = FileSender::new("a", 10, Broken).unwrap();
    let outcome = tx.outcome();
    let (_, action) = drain_sender(&mut tx);
    assert_eq!(action, Action::Abort);
    assert_eq!(
        outcome.get(),
        Some(Err(SendError::Read("disk on fire".into())))
    );
}

#[test]
fn no_reply_is_a_failure() {
    let mut tx = FileSender::new("abc", 3, Cursor::new(b"abc".to_vec())).unwrap();
    let outcome = tx.outcome();
    drain_sender(&mut tx);
    let mut sent = Vec::new();
    assert!(tx
        .handle_eof(b"", &mut Out::new(&mut sent, test_epoch()))
        .is_ok());
    assert_eq!(
        outcome.get(),
        Some(Err(SendError::Disconnected(CloseReason::PeerClosed)))
    );

    let tx = FileSender::new("abc", 3, Cursor::new(b"abc".to_vec())).unwrap();
    let outcome = tx.outcome();
    let mut tx = tx;
    let refused = CloseReason::ConnectFailed(io::ErrorKind::ConnectionRefused);
    tx.handle_close(&refused);
    assert_eq!(outcome.get(), Some(Err(SendError::Disconnected(refused))));
}

// --- sender and receiver together ---------------------------------------------------

/// A sender and a receiver connected back to back: each one's output is shuttled into
/// the other's input, `piece` bytes per call, as two drivers would, until neither has
/// anything to say. The wire holds at most one chunk at a time.
struct Pair<R> {
    tx: FileSender<R>,
    rx: FileReceiver<MemStore>,
    piece: usize,
    /// The most bytes ever waiting on the sender-to-receiver wire.
    peak_in_flight: usize,
}

impl<R: Read> Pair<R> {
    fn new(tx: FileSender<R>, store: &MemStore, piece: usize) -> Pair<R> {
        Pair {
            tx,
            rx: FileReceiver::new(store.clone()),
            piece,
            peak_in_flight: 0,
        }
    }

    fn run(&mut self) {
        let now = test_epoch();
        let (mut to_rx, mut to_tx) = (Vec::new(), Vec::new());
        let (mut rx_kept, mut tx_kept) = (Vec::new(), Vec::new());

        let mut out = Out::new(&mut to_rx, now);
        self.tx.handle_open(&mut out);
        let mut tx_wants = out.wants_writable();
        let mut tx_action = out.action();
        let mut out = Out::new(&mut to_tx, now);
        self.rx.handle_open(&mut out);
        let mut rx_action = out.action();

        for _turn in 0..1_000_000 {
            let mut moved = false;
            self.peak_in_flight = self.peak_in_flight.max(to_rx.len());
            // The receiver's driver: hand over what arrived, `piece` bytes a call.
            if !to_rx.is_empty() {
                moved = true;
                for p in to_rx.chunks(self.piece) {
                    if rx_action != Action::Continue {
                        break; // a closing driver discards input
                    }
                    rx_kept.extend_from_slice(p);
                    let mut out = Out::new(&mut to_tx, now);
                    let used = self.rx.handle_input(&rx_kept, &mut out).unwrap();
                    rx_kept.drain(..used);
                    rx_action = out.action();
                }
                to_rx.clear();
            }
            // The sender's driver: the reply, then the next chunk once the wire is empty.
            if !to_tx.is_empty() && tx_action == Action::Continue {
                moved = true;
                tx_kept.append(&mut to_tx);
                let mut out = Out::new(&mut to_rx, now);
                let used = self.tx.handle_input(&tx_kept, &mut out).unwrap();
                tx_kept.drain(..used);
                tx_action = out.action();
            }
            if to_rx.is_empty() && tx_wants && tx_action == Action::Continue {
                moved = true;
                let mut out = Out::new(&mut to_rx, now);
                self.tx.handle_writable(&mut out);
                tx_wants = out.wants_writable();
                tx_action = out.action();
            }
            if !moved {
                break;
            }
        }
        assert!(rx_kept.is_empty(), "the receiver consumes everything");
        self.tx.handle_close(&CloseReason::Closed);
        self.rx.handle_close(&CloseReason::PeerClosed);
    }
}

#[test]
fn pairs_of_many_sizes_arrive_intact() {
    let sizes = [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 1 << 20];
    for (seed, &size) in sizes.iter().enumerate() {
        let data = pattern(seed as u64, size);
        // Odd piece sizes split the header, chunks and reply at every kind of place.
        for piece in [1, 7919, CHUNK] {
            if piece == 1 && size > CHUNK + 1 {
                continue; // a byte per call adds nothing at 1 MiB but time
            }
            let store = MemStore::new();
            let tx = FileSender::new("f.bin", size as u64, Cursor::new(data.clone())).unwrap();
            let outcome = tx.outcome();
            let mut pair = Pair::new(tx, &store, piece);
            pair.run();
            let what = format!("{size} bytes, {piece} per call");
            assert_eq!(
                outcome.get(),
                Some(Ok(Sent {
                    name: "f.bin".into(),
                    size: size as u64,
                    sha256: sha256_hex(&data)
                })),
                "{what}"
            );
            assert!(
                store.file("f.bin").unwrap() == data,
                "{what}: the bytes differ"
            );
            assert_eq!(store.open_temps(), 0, "{what}");
            assert!(
                pair.peak_in_flight <= CHUNK + 64,
                "{what}: {} bytes in flight",
                pair.peak_in_flight
            );
        }
    }
}

#[test]
fn a_pair_reports_a_refusal() {
    let store = MemStore::new();
    store.insert("f.bin", b"old");
    let data = pattern(9, 3 * CHUNK);
    let tx = FileSender::new("f.bin", data.len() as u64, Cursor::new(data)).unwrap();
    let outcome = tx.outcome();
    Pair::new(tx, &store, CHUNK).run();
    assert_eq!(
        outcome.get(),
        Some(Err(SendError::Refused("exists".into())))
    );
    assert_eq!(store.file("f.bin").unwrap(), b"old");
}
