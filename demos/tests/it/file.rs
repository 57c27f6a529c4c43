//! The file-transfer demo over real sockets on 127.0.0.1, in process.
//!
//! Receivers: a [`FileReceiver`] over a [`DirStore`] served by a reactor on a thread of
//! its own, or by the threaded blocking driver. Senders: a [`FileSender`] connected with
//! `Reactor::connect` on a reactor driven by the test thread, or a plain blocking
//! `std::net` client written here. Every file is generated as it is read
//! ([`PatternReader`]) and checked on disk by streaming it back, so neither side, nor the
//! test, holds a whole file.
//!
//! Each test works in a directory of its own under the system's temp dir, removed at the
//! end. Waits poll a condition against a deadline; nothing sleeps to wait for readiness.

use crate::support::{
    connect, localhost, per_driver, pump_for, pump_until, wait_until, Driver, InProcServer,
    TempDir, DEADLINE,
};
use sha2::{Digest, Sha256};
use socket2::SockRef;
use sockloop::net::Endpoint;
use sockloop::reactor::{Config, Reactor};
use sockloop_demos::proto::file::{
    DirStore, FileReceiver, FileSender, SendError, Sent, CHUNK, TEMP_PREFIX,
};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// How long one whole transfer may take. A 32 MiB file is hashed on both sides, about a
/// second each in a debug build on an idle machine: generous for a loaded CI runner.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Helpers: files that are generated as they are read, receivers, senders.

/// The bytes of a file of `len` bytes that differs per `seed`, produced as they are read
/// (eight at a time from a xorshift generator): a file of any size without holding it.
struct PatternReader {
    x: u64,
    /// The generator's last word and how much of it has been handed out.
    word: [u8; 8],
    used: usize,
    left: u64,
}

impl PatternReader {
    fn new(seed: u64, len: u64) -> PatternReader {
        PatternReader {
            x: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            word: [0; 8],
            used: 8,
            left: len,
        }
    }
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut at = 0;
        while at < n {
            if self.used == 8 {
                self.x ^= self.x << 13;
                self.x ^= self.x >> 7;
                self.x ^= self.x << 17;
                self.word = self.x.to_le_bytes();
                self.used = 0;
            }
            let take = (8 - self.used).min(n - at);
            buf[at..at + take].copy_from_slice(&self.word[self.used..self.used + take]);
            self.used += take;
            at += take;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Reads `r` to the end in chunks, handing each to `f`.
fn for_each_chunk(mut r: impl Read, mut f: impl FnMut(&[u8])) {
    let mut buf = vec![0; CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => f(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Panics unless the file at `path` holds exactly the pattern (`seed`, `len`), naming
/// the first differing offset; compares chunk by chunk.
fn assert_file_is_pattern(path: &Path, seed: u64, len: u64) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let size = file.metadata().unwrap().len();
    assert_eq!(size, len, "{}: size", path.display());
    let mut want = PatternReader::new(seed, len);
    let mut expected = vec![0; CHUNK];
    let mut offset = 0u64;
    for_each_chunk(file, |got| {
        let expected = &mut expected[..got.len()];
        want.read_exact(expected).unwrap();
        if got != expected {
            let i = got.iter().zip(&*expected).position(|(a, b)| a != b);
            panic!(
                "{}: first difference at offset {}",
                path.display(),
                offset + i.unwrap_or(0) as u64
            );
        }
        offset += got.len() as u64;
    });
}

/// SHA-256 of the file at `path`, in hex.
fn sha256_of_file(path: &Path) -> String {
    let mut digest = Sha256::new();
    for_each_chunk(File::open(path).unwrap(), |c| digest.update(c));
    hex(&digest.finalize())
}

/// A receiver storing into `dir`, on 127.0.0.1, under `driver`; stopped when dropped.
fn serve_receiver(driver: Driver, dir: &Path) -> InProcServer {
    let dir = dir.to_path_buf();
    InProcServer::start(driver, Config::default(), move || {
        FileReceiver::new(DirStore::new(dir.clone()))
    })
}

/// Sends the pattern file (`seed`, `len`) as `name` with a [`FileSender`] on a reactor of
/// its own, driven by this thread until the connection is gone. Also checks that the
/// sender's loop never held more than one chunk of unsent output.
fn send_with_reactor(addr: SocketAddr, name: &str, seed: u64, len: u64) -> Result<Sent, SendError> {
    let sender = FileSender::new(name, len, PatternReader::new(seed, len)).expect("a valid name");
    let outcome = sender.outcome();
    let mut reactor = Reactor::new().expect("a reactor");
    let conn = reactor
        .connect(&Endpoint::Inet(addr), Some(DEADLINE), sender)
        .expect("connect");
    pump_until(
        &mut reactor,
        TRANSFER_DEADLINE,
        &format!("{name} ({len} bytes) is sent"),
        |r| r.phase(conn).is_none(),
    );
    let peak = reactor.stats().peak_output_buffered;
    assert!(
        peak <= CHUNK,
        "the sender's loop held {peak} bytes of unsent output: more than one chunk"
    );
    outcome
        .get()
        .expect("an outcome is recorded once the connection is gone")
}

/// A plain blocking sender: writes `header`, then `body` in chunks, then reads the reply
/// until the receiver closes. Returns the reply and the SHA-256 of the body sent.
fn send_raw(addr: SocketAddr, header: &[u8], body: impl Read) -> (String, String) {
    let mut s = connect(addr);
    s.write_all(header).expect("send the header");
    let mut digest = Sha256::new();
    for_each_chunk(body, |c| {
        digest.update(c);
        s.write_all(c).expect("send the body")
    });
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read the reply");
    (reply, hex(&digest.finalize()))
}

/// The blocking sender for a whole file: returns what the receiver confirmed, after
/// checking its size and digest against the bytes sent (as [`FileSender`] does).
fn send_with_blocking(addr: SocketAddr, name: &str, seed: u64, len: u64) -> Sent {
    let (reply, sha256) = send_raw(
        addr,
        format!("FILE {name} {len}\n").as_bytes(),
        PatternReader::new(seed, len),
    );
    assert_eq!(reply, format!("OK {len} {sha256}\n"), "sending {name}");
    Sent {
        name: name.to_owned(),
        size: len,
        sha256,
    }
}

#[derive(Clone, Copy, Debug)]
enum Sender {
    Reactor,
    Blocking,
}

fn send(kind: Sender, addr: SocketAddr, name: &str, seed: u64, len: u64) -> Sent {
    match kind {
        Sender::Reactor => send_with_reactor(addr, name, seed, len)
            .unwrap_or_else(|e| panic!("sending {name} ({len} bytes): {e}")),
        Sender::Blocking => send_with_blocking(addr, name, seed, len),
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios.

/// 0 B, 1 B and 32 MiB files arrive byte-identical, with the digest of what was sent,
/// and no temporary file is left behind.
fn files_arrive_intact(receiver: Driver, sender: Sender) {
    let dir = TempDir::new("intact");
    let server = serve_receiver(receiver, dir.path());
    let files = [("empty.bin", 0), ("one.bin", 1), ("big.bin", 32 * MIB)];
    for (seed, &(name, len)) in files.iter().enumerate() {
        let seed = seed as u64 + 1;
        let sent = send(sender, server.addr(), name, seed, len);
        assert_eq!(sent.size, len);
        // The receiver commits before it answers: the file is complete now and holds
        // exactly what was sent.
        let path = dir.path().join(name);
        assert_file_is_pattern(&path, seed, len);
        // The sender checked the receiver's digest against its own. Hashing the file
        // once more as well costs a second per 32 MiB in a debug build: small ones only.
        if len <= MIB {
            assert_eq!(sent.sha256, sha256_of_file(&path), "{name}: digest");
        }
    }
    assert_eq!(
        dir.entries(),
        ["big.bin", "empty.bin", "one.bin"],
        "the three files and nothing else"
    );
}

#[test]
fn files_arrive_intact_reactor_sender_to_reactor_receiver() {
    files_arrive_intact(Driver::Reactor, Sender::Reactor)
}

#[test]
fn files_arrive_intact_reactor_sender_to_threaded_receiver() {
    files_arrive_intact(Driver::Threaded, Sender::Reactor)
}

#[test]
fn files_arrive_intact_blocking_sender_to_reactor_receiver() {
    files_arrive_intact(Driver::Reactor, Sender::Blocking)
}

#[test]
fn files_arrive_intact_blocking_sender_to_threaded_receiver() {
    files_arrive_intact(Driver::Threaded, Sender::Blocking)
}

/// Names that would leave the directory, hide, or garble a listing get `ERR` and write
/// nothing, inside the directory or next to it.
fn refused_names_write_nothing(receiver: Driver) {
    let parent = TempDir::new("refused-parent");
    let dir = parent.path().join("inbox");
    std::fs::create_dir(&dir).unwrap();
    let server = serve_receiver(receiver, &dir);
    let names: [&[u8]; 8] = [
        b"../escaped",
        b"..",
        b".hidden",
        b"a/b",
        b"a\\b",
        b"two words",
        b"bell\x07",
        b"",
    ];
    for name in names {
        let header = [&b"FILE "[..], name, b" 5\n"].concat();
        let (reply, _) = send_raw(server.addr(), &header, &b"hello"[..]);
        assert!(
            reply.starts_with("ERR bad name: ") && reply.ends_with('\n'),
            "{:?}: expected ERR bad name, got {reply:?}",
            String::from_utf8_lossy(name)
        );
    }
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing written into the directory"
    );
    assert_eq!(parent.entries(), ["inbox"], "nothing written next to it");
}

per_driver!(refused_names_write_nothing: refused_names_write_nothing_reactor, refused_names_write_nothing_threaded, refused_names_write_nothing_iterative);

/// A second file under a name already received is refused; the first stays as it was.
fn an_existing_file_is_never_replaced(receiver: Driver) {
    let dir = TempDir::new("exists");
    let server = serve_receiver(receiver, dir.path());
    send(Sender::Reactor, server.addr(), "notes.txt", 1, 1000);
    let second = send_with_reactor(server.addr(), "notes.txt", 2, 2000);
    assert_eq!(second, Err(SendError::Refused("exists".into())));
    assert_file_is_pattern(&dir.path().join("notes.txt"), 1, 1000);
    assert_eq!(dir.entries(), ["notes.txt"]);
}

per_driver!(an_existing_file_is_never_replaced: an_existing_file_is_never_replaced_reactor, an_existing_file_is_never_replaced_threaded, an_existing_file_is_never_replaced_iterative);

/// How the killed sender's socket ends.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// Closed with nothing unread: the kernel sends FIN.
    Fin,
    /// Closed with `SO_LINGER` 0, as a socket with unread data is: the kernel sends RST.
    Reset,
}

/// A sender that dies 1 MiB into a 32 MiB file leaves neither the file nor a temporary
/// file, and the receiver goes on serving: the same name can be sent afterwards.
fn a_killed_sender_leaves_nothing(receiver: Driver, death: Death) {
    let dir = TempDir::new("killed");
    let server = serve_receiver(receiver, dir.path());
    let mut s = connect(server.addr());
    s.write_all(format!("FILE big.bin {}\n", 32 * MIB).as_bytes())
        .unwrap();
    for_each_chunk(PatternReader::new(7, MIB), |c| s.write_all(c).unwrap());
    // The receiver has begun a temporary file (so the emptiness checked below is a
    // clean-up, not a transfer that never started) and nothing under the final name.
    let entries = wait_until(DEADLINE, "the receiver starts a temporary file", || {
        let e = dir.entries();
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].starts_with(TEMP_PREFIX), "{entries:?}");
    if let Death::Reset = death {
        SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
    }
    drop(s);
    wait_until(DEADLINE, "the temporary file is removed", || {
        dir.entries().is_empty().then_some(())
    });
    let sent = send(Sender::Reactor, server.addr(), "big.bin", 8, MIB);
    let path = dir.path().join("big.bin");
    assert_file_is_pattern(&path, 8, MIB);
    assert_eq!(sent.sha256, sha256_of_file(&path));
    assert_eq!(dir.entries(), ["big.bin"]);
}

#[test]
fn a_killed_sender_leaves_nothing_reactor_fin() {
    a_killed_sender_leaves_nothing(Driver::Reactor, Death::Fin)
}

#[test]
fn a_killed_sender_leaves_nothing_reactor_reset() {
    a_killed_sender_leaves_nothing(Driver::Reactor, Death::Reset)
}

#[test]
fn a_killed_sender_leaves_nothing_threaded_fin() {
    a_killed_sender_leaves_nothing(Driver::Threaded, Death::Fin)
}

#[test]
fn a_killed_sender_leaves_nothing_threaded_reset() {
    a_killed_sender_leaves_nothing(Driver::Threaded, Death::Reset)
}

/// A size announced but not delivered before a clean close gets `ERR truncated`, and
/// nothing is stored.
fn a_short_body_is_truncated(receiver: Driver) {
    let dir = TempDir::new("short");
    let server = serve_receiver(receiver, dir.path());
    let mut s = connect(server.addr());
    s.write_all(b"FILE short.txt 10\nhello").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "ERR truncated: got 5 of 10 bytes\n");
    wait_until(DEADLINE, "the temporary file is removed", || {
        dir.entries().is_empty().then_some(())
    });
}

per_driver!(a_short_body_is_truncated: a_short_body_is_truncated_reactor, a_short_body_is_truncated_threaded, a_short_body_is_truncated_iterative);

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A receiver that stops reading stops the sender: once the kernel's buffers are full,
/// the sender reads no more of the file and its loop holds at most one chunk, however
/// large the file. When the receiver reads again, the transfer completes.
#[test]
fn a_stalled_receiver_holds_the_sender_to_one_chunk() {
    let len = 32 * MIB;
    // A small receive buffer, set before listen so accepted sockets inherit it.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    sock.bind(&localhost().into()).unwrap();
    sock.listen(1).unwrap();
    let listener: std::net::TcpListener = sock.into();
    let addr = listener.local_addr().unwrap();

    let read = Arc::new(AtomicU64::new(0));
    let file = Counting {
        inner: PatternReader::new(3, len),
        read: Arc::clone(&read),
    };
    let sender = FileSender::new("big.bin", len, file).unwrap();
    let outcome = sender.outcome();
    let mut reactor = Reactor::new().unwrap();
    let conn = reactor
        .connect(&Endpoint::Inet(addr), Some(DEADLINE), sender)
        .unwrap();
    // The kernel completes the handshake; the receiver accepts and reads nothing yet.
    let (mut peer, _) = listener.accept().unwrap();

    // Run the sender until a 200 ms window passes in which it read nothing more.
    let start = Instant::now();
    let mut last = read.load(Ordering::Relaxed);
    loop {
        pump_for(&mut reactor, Duration::from_millis(200));
        let now = read.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
        assert!(
            start.elapsed() < DEADLINE,
            "the sender never stopped reading the file ({now} bytes read)"
        );
    }
    assert!(
        reactor.phase(conn).is_some(),
        "the sender stalled because its connection closed: {:?}",
        outcome.get()
    );
    assert!(
        last >= CHUNK as u64 && last < 16 * MIB,
        "stalled after reading {last} bytes of a {len}-byte file"
    );
    let peak = reactor.stats().peak_output_buffered;
    assert!(peak <= CHUNK, "{peak} bytes of unsent output held");

    // The receiver reads again: everything arrives, and it answers like a FileReceiver.
    let receiver = std::thread::spawn(move || {
        peer.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut header = Vec::new();
        let mut byte = [0u8];
        while byte[0] != b'\n' {
            peer.read_exact(&mut byte).unwrap();
            header.push(byte[0]);
        }
        assert_eq!(header, format!("FILE big.bin {len}\n").as_bytes());
        let mut digest = Sha256::new();
        let mut body = (&mut peer).take(len);
        for_each_chunk(&mut body, |c| digest.update(c));
        let sha256 = hex(&digest.finalize());
        peer.write_all(format!("OK {len} {sha256}\n").as_bytes())
            .unwrap();
        let _ = peer.read(&mut byte); // until the sender closes
    });
    pump_until(
        &mut reactor,
        TRANSFER_DEADLINE,
        "the transfer finishes",
        |r| r.phase(conn).is_none(),
    );
    receiver.join().expect("the receiver thread");
    assert!(
        matches!(outcome.get(), Some(Ok(Sent { size, .. })) if size == len),
        "{:?}",
        outcome.get()
    );
    let peak = reactor.stats().peak_output_buffered;
    assert!(peak <= CHUNK, "{peak} bytes of unsent output held");
}

/// A sender whose receiver is not there learns why.
#[test]
fn a_refused_connect_is_reported() {
    // Bind, learn the port, close: nothing listens there now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let got = send_with_reactor(addr, "a.txt", 1, 10);
    assert!(
        matches!(got, Err(SendError::Disconnected(_))),
        "expected a connect failure, got {got:?}"
    );
}
