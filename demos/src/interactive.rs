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
//!
//! Keep-alive: the chat server sends `PING` to a client silent for a while and drops one
//! silent for longer. A person idle at the prompt is not a dead peer, so the client
//! answers `PONG` itself and does not show the `PING` (`RUST_LOG=debug` logs each one).
//!
//! Over datagram transports each line is one datagram. The client stops once every
//! datagram it sent has been answered, or [`REPLY_WAIT`] after the end of input at the
//! latest (a reply may be lost). Its socket is connected, so the kernel reports an ICMP
//! error for it (`ECONNREFUSED`: nothing listens on that port) on the next receive or
//! send; the client then says so and fails.

use crate::proto::{CloseReason, Out, PeerError, Protocol};
use crate::serve::{Demo, Transport};
use sockloop::net::Endpoint;
use sockloop::reactor::{Interest, Reactor};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::Duration;

/// How long a client waits for its server's answer at connect time.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Over datagrams, how long to wait for replies after the end of input.
pub const REPLY_WAIT: Duration = Duration::from_secs(2);

/// What the stream client makes of a `PING` line from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeepAlive {
    /// Not a keep-alive protocol: every line is shown as it came.
    Off,
    /// The chat protocol: a `PING` line is the server's keep-alive, answered `PONG`.
    Answer,
    /// The demo is unknown: a `PING` line is a keep-alive unless it is the echo of a
    /// `PING` line the user sent (an echo server sends those back).
    Guess,
}

/// The keep-alive line a chat server sends to a silent client, and the answer.
const PING_LINES: [&[u8]; 2] = [b"PING\n", b"PING\r\n"];
const PONG_LINE: &[u8] = b"PONG\n";

/// Whether `rest`, at the start of a line, is a `PING` line: `Some(Ok(len))` if it
/// begins with a whole one, `Some(Err(()))` if it could still become one (more bytes are
/// needed to tell), `None` if it is some other line.
fn ping_line(rest: &[u8]) -> Option<Result<usize, ()>> {
    for ping in PING_LINES {
        if rest.starts_with(ping) {
            return Some(Ok(ping.len()));
        }
    }
    PING_LINES
        .iter()
        .any(|ping| ping.starts_with(rest))
        .then_some(Err(()))
}

/// What the stream client's input side and its [`Printer`] share.
#[derive(Default)]
struct Shared {
    /// `PING` lines the user sent whose echo has not come back yet ([`KeepAlive::Guess`]).
    user_pings: Cell<usize>,
    /// The user's input has ended: the client sends nothing more.
    input_done: Cell<bool>,
}

/// Prints what the server sends, answers its keep-alive, and remembers how the
/// connection ended.
struct Printer {
    ended: Rc<RefCell<Option<CloseReason>>>,
    keepalive: KeepAlive,
    shared: Rc<Shared>,
    /// The server's output is at the start of a line (where a `PING` may begin).
    line_start: bool,
}

impl Printer {
    /// A `PING` line `raw` came: answer it, or show it if it is the echo of the user's.
    fn on_ping(&mut self, raw: &[u8], show: &mut Vec<u8>, out: &mut Out<'_>) {
        let echoed = self.shared.user_pings.get();
        if self.keepalive == KeepAlive::Guess && echoed > 0 {
            self.shared.user_pings.set(echoed - 1);
            show.extend_from_slice(raw);
        } else if self.shared.input_done.get() {
            log::debug!("keep-alive: the server sent PING after the end of input; not answered");
        } else {
            log::debug!("keep-alive: the server sent PING; answered PONG");
            out.push(PONG_LINE);
        }
    }
}

fn print(bytes: &[u8]) -> Result<(), PeerError> {
    if bytes.is_empty() {
        return Ok(());
    }
    // The terminal is this client's application: showing the bytes is its job.
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| PeerError::new(format!("cannot print: {e}")))
}

impl Protocol for Printer {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        if self.keepalive == KeepAlive::Off {
            print(input)?;
            return Ok(input.len());
        }
        let mut show = Vec::with_capacity(input.len());
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            if self.line_start {
                match ping_line(rest) {
                    Some(Ok(n)) => {
                        self.on_ping(&rest[..n], &mut show, out);
                        used += n;
                        continue;
                    }
                    // Perhaps a PING, perhaps not: wait for the next bytes (or the end).
                    Some(Err(())) => break,
                    None => {}
                }
            }
            let n = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            show.extend_from_slice(&rest[..n]);
            self.line_start = rest[n - 1] == b'\n';
            used += n;
        }
        print(&show)?;
        Ok(used)
    }

    fn handle_eof(&mut self, rest: &[u8], _out: &mut Out<'_>) -> Result<(), PeerError> {
        // What was held back as a possible `PING` was not one.
        print(rest)
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        *self.ended.borrow_mut() = Some(reason.clone());
    }
}

/// Counts the user's `PING` lines, for [`KeepAlive::Guess`] to tell their echo from the
/// server's keep-alive. Only the first bytes of a line are kept.
#[derive(Default)]
struct LineWatch {
    head: Vec<u8>,
    long: bool,
}

impl LineWatch {
    /// Feeds sent bytes; returns how many `PING` lines they completed.
    fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut pings = 0;
        for &b in bytes {
            if b == b'\n' {
                if !self.long && (self.head == b"PING" || self.head == b"PING\r") {
                    pings += 1;
                }
                self.head.clear();
                self.long = false;
            } else if !self.long {
                self.long = self.head.len() == 5;
                if !self.long {
                    self.head.push(b);
                }
            }
        }
        pings
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

/// Talks to the `demo` server at `addr` over `transport` until the user's input ends and
/// the server has answered (stream: until it closes; datagrams: until every datagram is
/// answered, [`REPLY_WAIT`] at most). Talking to chat, it answers the server's `PING`.
pub fn run_demo(demo: Demo, transport: Transport, addr: &Endpoint) -> io::Result<()> {
    let keepalive = match demo {
        Demo::Chat => KeepAlive::Answer,
        _ => KeepAlive::Off,
    };
    run_with(keepalive, transport, addr)
}

/// [`run_demo`] for a server whose demo is not known: a `PING` line from it is answered
/// as chat's keep-alive unless it is the echo of a `PING` line the user sent.
pub fn run(transport: Transport, addr: &Endpoint) -> io::Result<()> {
    run_with(KeepAlive::Guess, transport, addr)
}

fn run_with(keepalive: KeepAlive, transport: Transport, addr: &Endpoint) -> io::Result<()> {
    let mut reactor = Reactor::new()?;
    if transport.is_datagram() {
        run_datagrams(&mut reactor, transport, addr)
    } else {
        run_stream(&mut reactor, addr, keepalive)
    }
}

fn run_stream(reactor: &mut Reactor, addr: &Endpoint, keepalive: KeepAlive) -> io::Result<()> {
    let ended = Rc::new(RefCell::new(None));
    let shared = Rc::new(Shared::default());
    let printer = Printer {
        ended: Rc::clone(&ended),
        keepalive,
        shared: Rc::clone(&shared),
        line_start: true,
    };
    let conn = reactor.connect(addr, Some(CONNECT_TIMEOUT), printer)?;
    let lines = RefCell::new(LineWatch::default());
    let on_input: OnInput = Rc::new(move |r: &mut Reactor, chunk: Option<&[u8]>| match chunk {
        Some(bytes) => {
            if keepalive == KeepAlive::Guess {
                let pings = lines.borrow_mut().feed(bytes);
                shared.user_pings.set(shared.user_pings.get() + pings);
            }
            let _ = r.send(conn, bytes);
        }
        None => {
            shared.input_done.set(true);
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

/// The datagram client's socket, connected to the server: only its datagrams come back,
/// and the kernel reports ICMP errors about it to this socket.
enum DgramSock {
    Udp(std::net::UdpSocket),
    Unix(std::os::unix::net::UnixDatagram),
}

impl DgramSock {
    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            DgramSock::Udp(s) => s.send(bytes),
            DgramSock::Unix(s) => s.send(bytes),
        }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DgramSock::Udp(s) => s.recv(buf),
            DgramSock::Unix(s) => s.recv(buf),
        }
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            DgramSock::Udp(s) => s.as_raw_fd(),
            DgramSock::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// The largest datagram the client prints whole (a UDP datagram is at most 65,507 bytes).
const DATAGRAM_MAX: usize = 64 * 1024;

/// Where a datagram exchange stands.
struct Dgram {
    sock: DgramSock,
    /// Input not yet sent: a line still without its newline.
    partial: Vec<u8>,
    /// Datagrams the socket did not take yet (its send buffer was full), oldest first.
    queue: VecDeque<Vec<u8>>,
    /// A retry of the queue is armed.
    retrying: bool,
    sent: usize,
    answered: usize,
    input_done: bool,
    /// The bound on the wait for the last replies is armed.
    waiting: bool,
    /// What ended the exchange early (`ECONNREFUSED`: nothing listens there).
    failed: Option<io::Error>,
}

/// A send error that concerns one datagram (too large, no buffer now); any other says
/// the peer cannot be reached and ends the exchange.
fn one_datagram_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::ENOBUFS))
}

impl Dgram {
    /// Sends what is queued until the socket refuses more.
    fn flush(state: &Rc<RefCell<Dgram>>, r: &mut Reactor) {
        let mut d = state.borrow_mut();
        while let Some(front) = d.queue.front() {
            match d.sock.send(front) {
                Ok(_) => {
                    d.sent += 1;
                    d.queue.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !d.retrying {
                        d.retrying = true;
                        let state = Rc::clone(state);
                        r.set_timer(BACKPRESSURE_RETRY, move |r| {
                            state.borrow_mut().retrying = false;
                            Dgram::flush(&state, r);
                            Dgram::check_done(&state, r);
                        });
                    }
                    return;
                }
                Err(e) if one_datagram_error(&e) => {
                    log::warn!("a datagram of {} bytes was not sent: {e}", front.len());
                    d.queue.pop_front();
                }
                Err(e) => {
                    d.failed = Some(e);
                    drop(d);
                    r.stop_now();
                    return;
                }
            }
        }
    }

    /// Receives and prints every datagram waiting (the socket is edge-triggered).
    fn receive(state: &Rc<RefCell<Dgram>>, r: &mut Reactor) {
        let mut buf = vec![0u8; DATAGRAM_MAX];
        loop {
            let got = state.borrow().sock.recv(&mut buf);
            match got {
                Ok(n) => {
                    let bytes = &buf[..n];
                    let mut stdout = io::stdout().lock();
                    let _ = stdout.write_all(bytes);
                    if bytes.last() != Some(&b'\n') {
                        let _ = stdout.write_all(b"\n");
                    }
                    let _ = stdout.flush();
                    state.borrow_mut().answered += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // An ICMP error about an earlier datagram: the socket has one peer, so
                    // it is about the server (ECONNREFUSED: nothing listens there).
                    state.borrow_mut().failed = Some(e);
                    r.stop_now();
                    return;
                }
            }
        }
        Dgram::check_done(state, r);
    }

    /// Stops once the input has ended and every datagram sent has been answered.
    fn check_done(state: &Rc<RefCell<Dgram>>, r: &mut Reactor) {
        let d = state.borrow();
        if d.input_done && d.queue.is_empty() && d.answered >= d.sent && d.failed.is_none() {
            drop(d);
            r.stop_now();
        }
    }
}

fn run_datagrams(reactor: &mut Reactor, transport: Transport, addr: &Endpoint) -> io::Result<()> {
    // A Unix datagram client must bind a path of its own, or replies have nowhere to go.
    let own_path = (transport == Transport::Unixgram)
        .then(|| std::env::temp_dir().join(format!("sockloop-client-{}.sock", std::process::id())));
    let result = exchange_datagrams(reactor, transport, addr, own_path.as_deref());
    if let Some(p) = own_path {
        let _ = std::fs::remove_file(p);
    }
    result
}

fn exchange_datagrams(
    reactor: &mut Reactor,
    transport: Transport,
    addr: &Endpoint,
    own_path: Option<&std::path::Path>,
) -> io::Result<()> {
    let sock = match (addr, own_path) {
        (Endpoint::Inet(a), _) => {
            let any: std::net::SocketAddr = match a {
                std::net::SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let s = std::net::UdpSocket::bind(any)?;
            s.connect(a)?;
            s.set_nonblocking(true)?;
            DgramSock::Udp(s)
        }
        (Endpoint::Unix(path), own) => {
            let s = match own {
                Some(own) => {
                    // The name holds our pid: a file there is a dead process's leftover.
                    let _ = std::fs::remove_file(own);
                    std::os::unix::net::UnixDatagram::bind(own)?
                }
                None => std::os::unix::net::UnixDatagram::unbound()?,
            };
            s.connect(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot reach {}: {e}", path.display()))
            })?;
            s.set_nonblocking(true)?;
            DgramSock::Unix(s)
        }
    };
    let fd = sock.raw_fd();
    let state = Rc::new(RefCell::new(Dgram {
        sock,
        partial: Vec::new(),
        queue: VecDeque::new(),
        retrying: false,
        sent: 0,
        answered: 0,
        input_done: false,
        waiting: false,
        failed: None,
    }));
    let on_ready = Rc::clone(&state);
    reactor.watch_fd(fd, Interest::READABLE, move |r, _token, _ready| {
        // Readable, or in error (an ICMP error is reported as EPOLLERR): recv says which.
        Dgram::receive(&on_ready, r);
    })?;
    let fed = Rc::clone(&state);
    let on_input: OnInput = Rc::new(move |r: &mut Reactor, chunk: Option<&[u8]>| {
        {
            let mut d = fed.borrow_mut();
            let d = &mut *d;
            match chunk {
                Some(bytes) => d.partial.extend_from_slice(bytes),
                None => {
                    d.input_done = true;
                    if !d.partial.is_empty() {
                        d.partial.push(b'\n');
                    }
                }
            }
            // Each complete line is one datagram, without its newline.
            while let Some(nl) = d.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = d.partial.drain(..=nl).collect();
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                d.queue.push_back(line.to_vec());
            }
        }
        Dgram::flush(&fed, r);
        if chunk.is_none() {
            Dgram::check_done(&fed, r);
            let mut d = fed.borrow_mut();
            if !d.waiting && !r.is_shutdown() {
                d.waiting = true;
                r.set_timer(REPLY_WAIT, |r| r.stop_now());
            }
        }
    });
    let _stdin = watch_stdin(reactor, on_input)?;
    reactor.run()?;
    let failed = state.borrow_mut().failed.take();
    match failed {
        None => Ok(()),
        Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(io::Error::new(
            e.kind(),
            format!("{addr} over {transport}: {e}: nothing is listening there"),
        )),
        Some(e) => Err(io::Error::new(
            e.kind(),
            format!("{addr} over {transport}: {e}"),
        )),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn printer(keepalive: KeepAlive) -> Printer {
        Printer {
            ended: Rc::default(),
            keepalive,
            shared: Rc::default(),
            line_start: true,
        }
    }

    /// Feeds `chunks` one by one; returns what the printer sent back and what it left
    /// unconsumed at the end.
    fn feed(p: &mut Printer, chunks: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let mut sent = Vec::new();
        let mut kept = Vec::new();
        for chunk in chunks {
            kept.extend_from_slice(chunk);
            let mut out = Out::new(&mut sent, Instant::now());
            let used = p.handle_input(&kept, &mut out).unwrap();
            kept.drain(..used);
        }
        (sent, kept)
    }

    #[test]
    fn ping_lines_are_told_apart() {
        assert_eq!(ping_line(b"PING\nrest"), Some(Ok(5)));
        assert_eq!(ping_line(b"PING\r\n"), Some(Ok(6)));
        assert_eq!(ping_line(b"PIN"), Some(Err(())));
        assert_eq!(ping_line(b"PING\r"), Some(Err(())));
        assert_eq!(ping_line(b"PINGS\n"), None);
        assert_eq!(ping_line(b"bob: PING\n"), None);
    }

    #[test]
    fn chat_keepalive_is_answered_even_split() {
        let mut p = printer(KeepAlive::Answer);
        let (sent, kept) = feed(&mut p, &[b"PI", b"NG\n", b"x: PING\nPING\n"]);
        assert_eq!(sent, b"PONG\nPONG\n", "two keep-alives, not the message");
        assert!(kept.is_empty());
        p.shared.input_done.set(true);
        assert_eq!(
            feed(&mut p, &[b"PING\n"]).0,
            b"",
            "nothing is sent after the end"
        );
    }

    #[test]
    fn unknown_demo_keeps_the_echo_of_the_users_ping() {
        let mut p = printer(KeepAlive::Guess);
        let mut lines = LineWatch::default();
        let pings = lines.feed(b"PING\nPINGS\nPI") + lines.feed(b"NG\r\n");
        assert_eq!(pings, 2);
        p.shared.user_pings.set(pings);
        let (sent, _) = feed(&mut p, &[b"PING\nPING\r\nPING\n"]);
        assert_eq!(
            sent, b"PONG\n",
            "the two echoes are shown, the third is answered"
        );
        assert_eq!(p.shared.user_pings.get(), 0);
    }

    #[test]
    fn other_demos_show_everything() {
        let mut p = printer(KeepAlive::Off);
        let (sent, kept) = feed(&mut p, &[b"PING\nPI"]);
        assert!(sent.is_empty() && kept.is_empty());
    }
}
