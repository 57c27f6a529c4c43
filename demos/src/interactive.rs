//! The interactive client: stdin and the socket in one reactor.
//!
//! A blocking client has to choose what to wait for: `input()` (the user) or `recv()`
//! (the server). While it waits for the user, a message the server pushes sits unread.
//! Here stdin is registered with the same poller as the socket, so whichever is ready
//! first is served: a chat message prints while the user is idle at the prompt.
//!
//! Stdin is reopened through `/proc/self/fd/0` with `O_NONBLOCK`: a new open file
//! description, so the terminal the user's shell shares is never switched to
//! non-blocking. Where stdin cannot be polled (a regular file: epoll refuses files with
//! `EPERM`; or no `/proc`), a thread reads it and posts each chunk to the loop through
//! the [`Handle`](sockloop::reactor::Handle) instead.
//!
//! At the end of input the client half-closes (`shutdown(Write)`: its FIN says "no more
//! from me") and keeps printing what the server sends until the server closes too.
//! Over datagram transports each line is one datagram; after the end of input the client
//! waits up to [`REPLY_WAIT`] for the last replies.

use crate::proto::{CloseReason, DatagramProtocol, Out, PeerError, Protocol, Transmit};
use crate::serve::Transport;
use sockloop::net::Endpoint;
use sockloop::reactor::{Interest, Reactor};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a client waits for its server's answer at connect time.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Over datagrams, how long to wait for replies after the end of input.
pub const REPLY_WAIT: Duration = Duration::from_secs(2);

/// Prints what the server sends and remembers how the connection ended.
struct Printer {
    ended: Rc<RefCell<Option<CloseReason>>>,
}

impl Protocol for Printer {
    fn handle_input(&mut self, input: &[u8], _out: &mut Out<'_>) -> Result<usize, PeerError> {
        // The terminal is this client's application: showing the bytes is its job.
        let mut stdout = io::stdout().lock();
        stdout
            .write_all(input)
            .and_then(|()| stdout.flush())
            .map_err(|e| PeerError::new(format!("cannot print: {e}")))?;
        Ok(input.len())
    }

    fn handle_eof(&mut self, _rest: &[u8], _out: &mut Out<'_>) -> Result<(), PeerError> {
        Ok(())
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        *self.ended.borrow_mut() = Some(reason.clone());
    }
}

/// Prints each datagram that comes back, one per line.
struct DatagramPrinter;

impl DatagramProtocol for DatagramPrinter {
    fn handle_datagram(&mut self, _: &Endpoint, bytes: &[u8], _: Instant, _: &mut Vec<Transmit>) {
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(bytes);
        if bytes.last() != Some(&b'\n') {
            let _ = stdout.write_all(b"\n");
        }
        let _ = stdout.flush();
    }
}

/// What to do with a chunk of stdin: send it, or (at the end, `None`) finish.
type OnInput = Rc<dyn Fn(&mut Reactor, Option<&[u8]>)>;

/// How often a client whose connection is over its high-water mark looks again whether it
/// may read more of stdin. (Stdin is read only while the connection keeps up: a large
/// input must not pile up in memory, or pass the output limit and end the connection.)
const BACKPRESSURE_RETRY: Duration = Duration::from_millis(2);

/// Returns true if and only if the reactor holds so much unsent output that reading more
/// input would only pile it up. The mark is the low-water mark, well below the high-water
/// mark at which the connection itself would stop reading: a client must keep reading
/// the server's replies while its own input waits, or a server that writes each reply
/// whole before reading more (the blocking drivers do) and this client would each wait
/// for the other.
fn backlogged(r: &Reactor) -> bool {
    r.buffered_output() >= r.config().low_water
}

/// Talks to the server at `addr` over `transport` until the user's input ends and the
/// server has answered (stream: until it closes; datagrams: [`REPLY_WAIT`] after).
pub fn run(transport: Transport, addr: &Endpoint) -> io::Result<()> {
    let mut reactor = Reactor::new()?;
    if transport.is_datagram() {
        run_datagrams(&mut reactor, transport, addr)
    } else {
        run_stream(&mut reactor, addr)
    }
}

fn run_stream(reactor: &mut Reactor, addr: &Endpoint) -> io::Result<()> {
    let ended = Rc::new(RefCell::new(None));
    let printer = Printer {
        ended: Rc::clone(&ended),
    };
    let conn = reactor.connect(addr, Some(CONNECT_TIMEOUT), printer)?;
    let on_input: OnInput = Rc::new(move |r: &mut Reactor, chunk: Option<&[u8]>| match chunk {
        Some(bytes) => {
            let _ = r.send(conn, bytes);
        }
        None => {
            r.shutdown_write(conn);
        }
    });
    let _stdin = watch_stdin(reactor, on_input)?;
    while reactor.phase(conn).is_some() {
        reactor.run_once(None)?;
    }
    let reason = ended.borrow_mut().take();
    match reason {
        // The server closed, after our FIN or before it (as `greet` does at `exit`).
        Some(CloseReason::PeerClosed | CloseReason::Closed) | None => Ok(()),
        Some(CloseReason::ConnectFailed(kind)) => Err(io::Error::new(
            kind,
            format!("cannot connect to {addr}: {}", io::Error::from(kind)),
        )),
        Some(CloseReason::ConnectTimeout) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from {addr} within {CONNECT_TIMEOUT:?}"),
        )),
        Some(CloseReason::Io(kind)) => Err(io::Error::new(
            kind,
            format!("connection to {addr} failed: {}", io::Error::from(kind)),
        )),
        // Anything else ended the connection without the user asking: say why, and fail.
        Some(other) => Err(io::Error::other(format!(
            "the connection to {addr} ended: {other}"
        ))),
    }
}

fn run_datagrams(reactor: &mut Reactor, transport: Transport, addr: &Endpoint) -> io::Result<()> {
    // A Unix datagram client must bind a path of its own, or replies have nowhere to go.
    let own_path = (transport == Transport::Unixgram)
        .then(|| std::env::temp_dir().join(format!("sockloop-client-{}.sock", std::process::id())));
    let local = own_path.clone().map(Endpoint::Unix);
    let (sock, _) = reactor.connect_datagram(local.as_ref(), addr, DatagramPrinter)?;
    let pending = Rc::new(RefCell::new(Vec::<u8>::new()));
    let target = addr.clone();
    let on_input: OnInput = Rc::new(move |r: &mut Reactor, chunk: Option<&[u8]>| {
        let mut buf = pending.borrow_mut();
        match chunk {
            Some(bytes) => buf.extend_from_slice(bytes),
            None => {
                if !buf.is_empty() {
                    buf.push(b'\n');
                }
            }
        }
        // Each complete line is one datagram, without its newline.
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let _ = r.send_datagram(sock, &target, line);
        }
        if chunk.is_none() {
            r.set_timer(REPLY_WAIT, |r| r.stop_now());
        }
    });
    let _stdin = watch_stdin(reactor, on_input)?;
    let result = reactor.run();
    if let Some(p) = own_path {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// Keeps the reopened stdin open while it is watched.
struct StdinWatch {
    _file: Option<std::fs::File>,
}

/// Feeds stdin to `on_input` from the loop: polled directly when the poller accepts it,
/// else read by a thread that posts each chunk through the handle.
fn watch_stdin(reactor: &mut Reactor, on_input: OnInput) -> io::Result<StdinWatch> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let reopened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/proc/self/fd/0");
    if let Ok(file) = reopened {
        let fd = file.as_raw_fd();
        let feed = Rc::clone(&on_input);
        let reader = Rc::new(RefCell::new(file.try_clone()?));
        let watched = reactor.watch_fd(fd, Interest::READABLE, move |r, token, _ready| {
            read_stdin(r, token, &reader, &feed);
        });
        match watched {
            Ok(_) => {
                return Ok(StdinWatch { _file: Some(file) });
            }
            Err(e) => log::debug!("stdin cannot be polled ({e}); reading it on a thread"),
        }
    }
    // The fallback: a blocking reader thread, posting to the loop. The handler itself is
    // not Send, so it is parked in the loop (a timer slot would do; a thread-local is
    // simplest) and the thread posts only bytes.
    INPUT.with(|slot| *slot.borrow_mut() = Some(on_input));
    let handle = reactor.handle();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let chunk = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => None,
                    Ok(n) => Some(buf[..n].to_vec()),
                };
                let done = chunk.is_none();
                // `call`, not `post`: the chunk is handed over before the next is read, and
                // the answer says whether the connection keeps up.
                let answer = handle.call(move |r| {
                    if let Some(feed) = INPUT.with(|slot| slot.borrow().clone()) {
                        feed(r, chunk.as_deref());
                    }
                    backlogged(r)
                });
                let Ok(mut behind) = answer else { return };
                if done {
                    return;
                }
                while behind {
                    std::thread::sleep(BACKPRESSURE_RETRY);
                    match handle.call(|r| backlogged(r)) {
                        Ok(b) => behind = b,
                        Err(_) => return,
                    }
                }
            }
        })?;
    Ok(StdinWatch { _file: None })
}

/// Reads stdin (edge-triggered: until `WouldBlock`) and feeds each chunk, unless the
/// connection is backlogged: then it stops and looks again shortly, since no new edge
/// will announce the input it left unread.
fn read_stdin(
    r: &mut Reactor,
    token: sockloop::reactor::Token,
    reader: &Rc<RefCell<std::fs::File>>,
    feed: &OnInput,
) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        if backlogged(r) {
            log::trace!("stdin: the connection is behind; reading stdin again shortly");
            let (reader, feed) = (Rc::clone(reader), Rc::clone(feed));
            r.set_timer(BACKPRESSURE_RETRY, move |r| {
                read_stdin(r, token, &reader, &feed)
            });
            return;
        }
        let result = reader.borrow_mut().read(&mut buf);
        match result {
            Ok(0) => {
                log::trace!("stdin: end of input");
                r.unwatch(token);
                feed(r, None);
                return;
            }
            Ok(n) => {
                log::trace!("stdin: read {n} bytes");
                feed(r, Some(&buf[..n]));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("stdin: {e}");
                r.unwatch(token);
                feed(r, None);
                return;
            }
        }
    }
}

thread_local! {
    /// The input handler for the fallback reader thread's posts (run on the loop thread).
    static INPUT: RefCell<Option<OnInput>> = const { RefCell::new(None) };
}
