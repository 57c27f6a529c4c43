//! A guide to non-blocking I/O, narrated by this crate's own trace.
//!
//! Beej's guide teaches the socket calls, Kegel's C10K page names the problem, epoll(7)
//! states the rules, the libuv design page and mio's `Poll` docs describe real event
//! loops. What this guide adds is a working codebase to try those ideas on: one connection
//! core ([`Session`](crate::session::Session)) that runs unchanged under a blocking
//! one-client-at-a-time driver, a thread-per-connection driver and a readiness
//! (epoll) reactor, and a trace (`RUST_LOG=sockloop=trace`) that narrates every readiness
//! event, read, write, `WouldBlock`, deadline and state change as it happens. Each chapter
//! gives a command to run and the lines to look for in what it prints.
//!
//! # How to read it
//!
//! Build once, then run each chapter's command from the repository root:
//!
//! ```text
//! cargo build --release          # the CLI is target/release/sockloop
//! cargo run --release -- --help
//! ```
//!
//! The clients are `nc`, `python3` snippets (shown in text blocks: paste them into
//! `python3 -`) or `sockloop client`. Output quoted here is real, from a 2-core Linux VM;
//! long lines are trimmed with `...`, and trace lines are shown without their date and
//! module path, some with the time of day where the timing is the point (the trace
//! itself prints `[2026-12-01T18:47:54.711613Z TRACE sockloop::reactor] event: ...`).
//! Every Rust block on these pages is a doctest: `cargo test --doc -p sockloop` compiles
//! all of them and runs those that are not servers.
//!
//! # Chapters
//!
//! 1. [`ch01_blocking_echo`]: the tutorials' blocking echo is the iterative driver, and
//!    the second client waits.
//! 2. [`ch02_thread_per_connection`]: a thread per connection, and what it costs.
//! 3. [`ch03_nonblocking_sockets`]: non-blocking sockets, `WouldBlock`, and why retrying
//!    burns a core.
//! 4. [`ch04_readiness`]: poll and epoll, level- and edge-triggered, what READABLE means.
//! 5. [`ch05_one_turn`]: one turn of the reactor, step by step, in the trace.
//! 6. [`ch06_sans_io`]: sans-I/O machines, and why one machine runs under every driver.
//! 7. [`ch07_partial_writes`]: partial writes, output queues and backpressure.
//! 8. [`ch08_message_boundaries`]: TCP has no message boundaries.
//! 9. [`ch09_handshakes`]: the three- and four-way handshakes as the connection's states.
//! 10. [`ch10_timers`]: timers and deadlines, and the slowloris attack.
//! 11. [`ch11_completion_io`]: completion I/O, the uring driver.
//! 12. [`ch12_costs`]: what the reactor costs you.
//!
//! The reference pages the guide builds on: the [`reactor`](crate::reactor) module docs
//! (one turn, numbered), [`session`](crate::session) (the driver's contract and the
//! lifecycle), [`proto`](crate::proto) (the protocol's contract), and ARCHITECTURE.md in
//! the repository (the path of one byte, the edge-triggered shortcuts).

pub mod ch01_blocking_echo {
    //! 1. The tutorials' blocking echo is the iterative driver.
    //!
    //! Every socket tutorial starts with the same server: `accept()`, then loop on
    //! `recv(1024)` and `send()` until the client leaves, then `accept()` the next one.
    //! Here that server is `--driver iterative`: the accept thread serves each connection
    //! to its end ([`Mode::Iterative`](crate::blocking::Mode::Iterative)).
    //!
    //! # Run it
    //!
    //! ```text
    //! RUST_LOG=sockloop=trace cargo run --release -- serve echo --driver iterative --addr 127.0.0.1:7401
    //! ```
    //!
    //! Then two clients: the first says one line and stays connected, the second
    //! connects and says its line.
    //!
    //! ```text
    //! import socket, time
    //! t0 = time.time()
    //! a = socket.create_connection(("127.0.0.1", 7401))
    //! a.sendall(b"first\n")
    //! print("A got %r after %.1f ms" % (a.recv(1024), (time.time() - t0) * 1000))
    //! b = socket.create_connection(("127.0.0.1", 7401))  # succeeds: the kernel's backlog takes it
    //! b.sendall(b"second\n")
    //! b.settimeout(2.0)
    //! try:
    //!     print("B got %r" % b.recv(1024))
    //! except socket.timeout:
    //!     print("B: no answer after 2.0 s (A is still connected)")
    //! a.close(); t2 = time.time(); b.settimeout(5.0)
    //! print("B got %r %.1f ms after A closed" % (b.recv(1024), (time.time() - t2) * 1000))
    //! ```
    //!
    //! prints
    //!
    //! ```text
    //! A got b'first\n' after 3.1 ms
    //! B: no answer after 2.0 s (A is still connected)
    //! B got b'second\n' 0.3 ms after A closed
    //! ```
    //!
    //! The same with the CLI's own client (`sleep 3 |` keeps the first one connected and
    //! silent for 3 s):
    //!
    //! ```text
    //! sleep 3 | cargo run --release -- client echo --addr 127.0.0.1:7401 &
    //! time (printf 'second\n' | cargo run --release -- client echo --addr 127.0.0.1:7401)
    //! second
    //! real    0m2.688s
    //! ```
    //!
    //! With `--driver threaded` the same pair answers in `real 0m0.010s`.
    //!
    //! # What to look for
    //!
    //! The trace says where the one thread is:
    //!
    //! ```text
    //! 18:47:41.507969 DEBUG accept 127.0.0.1:43702 as conn 1
    //! 18:47:41.508008 TRACE serving conn 1 to the end on the accept thread; new clients wait in the kernel's backlog meanwhile
    //! 18:47:41.508086 TRACE conn 1: read() returned 6 bytes
    //! 18:47:41.508151 TRACE conn 1: write() took 6 of 6 bytes
    //! 18:47:41.508157 TRACE conn 1: thread iterative-accept blocking in read()
    //! 18:47:43.510725 TRACE conn 1: read() returned 0: end of stream
    //! ...
    //! 18:47:43.510850 DEBUG accept 127.0.0.1:43704 as conn 2
    //! ```
    //!
    //! Two seconds pass between `blocking in read()` and `returned 0`: the only thread is
    //! asleep inside conn 1's `read()`, which returns only when conn 1 sends or leaves.
    //! Client B's `connect()` succeeded at once anyway, because the kernel completes the
    //! three-way handshake by itself and queues the connection in the listen backlog; no
    //! one calls `accept()` for it until conn 1 is over. Its line waited in the kernel's
    //! receive queue the whole time and was answered 0.3 ms after A left.
    //!
    //! The tutorials' loop has a second bug, `recv(1024)` taken as "one message": see
    //! [chapter 8](super::ch08_message_boundaries).
}

pub mod ch02_thread_per_connection {
    //! 2. A thread per connection, and what it costs.
    //!
    //! The classic fix for chapter 1: hand every accepted connection to a thread of its
    //! own, which blocks in `read()` for that one peer
    //! ([`Mode::Threaded`](crate::blocking::Mode::Threaded)). A silent client then blocks
    //! only its own thread. The price is a thread per waiting client.
    //!
    //! # Run it
    //!
    //! ```text
    //! cargo run --release -- demo                     # --silent 1,100 --timeout 2 by default
    //! cargo run --release -- demo --silent 1000 --timeout 1
    //! ```
    //!
    //! For each driver it parks silent clients (connected, sending nothing) on an echo
    //! server, times a client that talks, and counts the server's threads and memory:
    //!
    //! ```text
    //! driver     silent clients  2nd client answered  OS threads  server RSS
    //! iterative  1               blocked (>2 s)       4           4.0 MiB
    //! threaded   1               0.24 ms              6           4.2 MiB
    //! reactor    1               0.11 ms              3           4.2 MiB
    //! iterative  100             blocked (>2 s)       4           4.1 MiB
    //! threaded   100             0.25 ms              105         7.8 MiB
    //! reactor    100             0.11 ms              3           4.2 MiB
    //! ```
    //!
    //! and with 1,000 silent clients:
    //!
    //! ```text
    //! iterative  1000            blocked (>1 s)       4           4.0 MiB
    //! threaded   1000            3.4 ms               1005        25.7 MiB
    //! reactor    1000            0.10 ms              3           4.1 MiB
    //! ```
    //!
    //! # What to look for
    //!
    //! - **OS threads** grow one for one with the clients under `threaded` (1005 for
    //!   1,000), and stay at 3 under the reactor. The few extra threads serve no client:
    //!   main, the Ctrl-C handler, and for the blocking drivers the accept loop.
    //! - **RSS** grows about 22 KiB per silent client under `threaded` (25.7 - 4.0 MiB
    //!   over 1,000): each thread reserves a 2 MiB stack of address space but only the
    //!   pages it touches are resident, plus the kernel's own task structure, which RSS
    //!   does not show. Under the reactor a silent client is a slot in the connection
    //!   table ([chapter 12](super::ch12_costs)).
    //! - **The answer time** of the talking client under `threaded` went from 0.25 ms to
    //!   3.4 ms with 1,000 threads in this run, while the reactor's stayed at 0.10 ms (one
    //!   run each: a direction, not a benchmark). Its connection needs a new thread
    //!   before it is read at all; the reactor's needs a slab slot.
    //!
    //! A thousand threads are fine on a modern machine; Kegel's C10K page is about what
    //! happens at ten thousand, and `sockloop bench` measures that (BENCHMARKING.md).
    //! The blocking read is not wrong; it just ties up one thread per wait. The next
    //! chapters take the wait out of the thread.
}

pub mod ch03_nonblocking_sockets {
    //! 3. Non-blocking sockets, `WouldBlock` (EAGAIN), and why retrying burns a core.
    //!
    //! `set_nonblocking(true)` (`fcntl(fd, F_SETFL, O_NONBLOCK)`) changes one thing: a
    //! call that would have to sleep returns at once with `EAGAIN` (`EWOULDBLOCK`), which
    //! Rust names [`std::io::ErrorKind::WouldBlock`]. `accept` says it when the backlog is
    //! empty, `read` when the receive queue is empty, `write` when the send buffer is full.
    //! It is not an error: it means "not now".
    //!
    //! ```
    //! use std::io::{ErrorKind, Read, Write};
    //! use std::net::{TcpListener, TcpStream};
    //! use std::time::Duration;
    //!
    //! /// Retries `f` while it says WouldBlock, for at most 1 s. (Chapter 4 replaces
    //! /// this loop with the poller; it is here only because a doctest has no poller.)
    //! fn patiently<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    //!     for _ in 0..1000 {
    //!         match f() {
    //!             Err(e) if e.kind() == ErrorKind::WouldBlock => {
    //!                 std::thread::sleep(Duration::from_millis(1))
    //!             }
    //!             other => return other,
    //!         }
    //!     }
    //!     f()
    //! }
    //!
    //! let listener = TcpListener::bind("127.0.0.1:0")?;
    //! listener.set_nonblocking(true)?;
    //!
    //! // Nobody has connected: a blocking accept() would sleep; this one says so.
    //! let e = listener.accept().unwrap_err();
    //! assert_eq!(e.kind(), ErrorKind::WouldBlock);
    //! println!("accept: {e}"); // "Resource temporarily unavailable (os error 11)" on Linux
    //!
    //! let mut client = TcpStream::connect(listener.local_addr()?)?;
    //! let (mut conn, _) = patiently(|| listener.accept())?;
    //! conn.set_nonblocking(true)?; // accepted sockets do not inherit O_NONBLOCK on Linux
    //!
    //! // Connected, but the client has said nothing: read() would sleep.
    //! let mut buf = [0u8; 1024];
    //! assert_eq!(conn.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
    //!
    //! client.write_all(b"hi\n")?;
    //! let n = patiently(|| conn.read(&mut buf))?;
    //! assert_eq!(&buf[..n], b"hi\n");
    //!
    //! // The queue is drained again: WouldBlock, not 0. Zero means the peer's FIN.
    //! assert_eq!(conn.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
    //! drop(client);
    //! assert_eq!(patiently(|| conn.read(&mut buf))?, 0);
    //! # Ok::<(), std::io::Error>(())
    //! ```
    //!
    //! # Why a loop that just retries burns a core
    //!
    //! With every socket non-blocking, one thread can serve many connections by trying
    //! each in turn. But when none has anything, the thread retries forever. Measure it,
    //! with `cargo run --release -- serve echo --addr 127.0.0.1:7400` running:
    //!
    //! ```text
    //! import socket, time, resource
    //! s = socket.create_connection(("127.0.0.1", 7400)); s.setblocking(False)
    //! n, t = 0, time.time()
    //! while time.time() - t < 1.0:          # nobody sends: every recv() says EAGAIN
    //!     try: s.recv(1024)
    //!     except BlockingIOError: n += 1
    //! r = resource.getrusage(resource.RUSAGE_SELF)
    //! print(f"{n} EAGAINs in 1 s; CPU: user {r.ru_utime:.2f} s, sys {r.ru_stime:.2f} s")
    //! ```
    //!
    //! ```text
    //! 525167 EAGAINs in 1 s; CPU: user 0.76 s, sys 0.27 s
    //! ```
    //!
    //! Half a million system calls and a whole core, to learn half a million times that
    //! nothing happened. Sleeping between tries saves the core but adds the sleep to every
    //! answer. What is missing is a way to ask the kernel "wake me when any of these
    //! sockets has something": the poller, [chapter 4](super::ch04_readiness).
}

pub mod ch04_readiness {
    //! 4. Readiness: poll and epoll, level- and edge-triggered, and what READABLE means.
    //!
    //! `poll(2)` takes a list of fds and sleeps until one of them is ready; `epoll(7)`
    //! keeps the list in the kernel (`epoll_ctl` once per fd) so each wait costs the
    //! number of ready fds, not the number watched. mio wraps epoll (kqueue on the BSDs),
    //! and this crate's [`reactor`](crate::reactor) sleeps in exactly one place: mio's
    //! `Poll::poll`.
    //!
    //! # Level- and edge-triggered
    //!
    //! Level-triggered (`poll`, epoll's default) reports a socket as readable on every
    //! wait for as long as bytes are queued. Edge-triggered (`EPOLLET`, which mio always
    //! uses) reports a change once: bytes arrived. Read 40 of 100 bytes and wait again:
    //!
    //! ```text
    //! time  what happens                        level-triggered         edge-triggered (mio)
    //! t0    the peer sends 100 bytes            wait: readable          wait: readable
    //! t1    we read 40; 60 stay queued          wait: readable at once  wait: sleeps (no new edge)
    //! t2    nothing arrives                     wait: readable at once  wait: sleeps; the 60 sit unread
    //! t3    the peer sends 10 more              wait: readable          wait: readable (70 queued)
    //! ```
    //!
    //! Hence the rule of edge-triggered code: **read until `WouldBlock`, or remember**
    //! that the socket is still readable. If you stop early (a read budget, so one busy
    //! connection cannot starve the others), nothing will announce those bytes again: the
    //! reactor keeps a `read_ready` flag per connection and puts it on a revisit list for
    //! the next turn (trace: `conn 1: read budget spent, yielding to others until next
    //! turn`, then `poll: not sleeping: work is waiting`). The one shortcut it allows
    //! itself: a read that returned less than the buffer's size emptied the queue, and
    //! anything that arrives later raises a new edge, so the read that would only say
    //! `WouldBlock` is skipped (trace: `short read: receive queue drained; skipping the
    //! read that would say WouldBlock`). Why that is safe, and its two exceptions (a
    //! pending FIN, urgent data), is in ARCHITECTURE.md.
    //!
    //! The timeline above, played with mio itself (the poller this crate is built on):
    //!
    //! ```
    //! use mio::net::TcpStream;
    //! use mio::{Events, Interest, Poll, Token};
    //! use std::io::{Read, Write};
    //! use std::time::Duration;
    //!
    //! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    //! let mut peer = std::net::TcpStream::connect(listener.local_addr()?)?;
    //! let (conn, _) = listener.accept()?;
    //! conn.set_nonblocking(true)?;
    //! let mut conn = TcpStream::from_std(conn);
    //!
    //! let mut poll = Poll::new()?;
    //! let mut events = Events::with_capacity(8);
    //! poll.registry().register(&mut conn, Token(1), Interest::READABLE)?;
    //! let wait = Duration::from_millis(200);
    //!
    //! peer.write_all(&[7; 100])?; // t0
    //! poll.poll(&mut events, Some(wait))?;
    //! assert!(events.iter().any(|e| e.token() == Token(1) && e.is_readable()));
    //!
    //! let mut buf = [0u8; 40];
    //! assert_eq!(conn.read(&mut buf)?, 40); // t1: 60 bytes stay queued
    //! poll.poll(&mut events, Some(wait))?; // t2: no new edge, so no event
    //! assert!(events.is_empty(), "edge-triggered: queued bytes are not announced twice");
    //!
    //! peer.write_all(&[8; 10])?; // t3: a new edge
    //! poll.poll(&mut events, Some(wait))?;
    //! assert!(!events.is_empty());
    //! let mut rest = [0u8; 1024];
    //! assert_eq!(conn.read(&mut rest)?, 70); // the 60 forgotten bytes and the 10 new ones
    //! # Ok::<(), std::io::Error>(())
    //! ```
    //!
    //! # What READABLE means
    //!
    //! - **For a listener**: a connection whose three-way handshake the kernel has
    //!   completed is waiting in the backlog. Accept until `WouldBlock` (trace: `listener
    //!   127.0.0.1:7400: accept would block: backlog empty`).
    //! - **For a connection**: bytes are in the receive queue, or the peer's FIN arrived,
    //!   or an error is pending. A read tells which: `n > 0` bytes, `0` end of stream,
    //!   `Err` the error.
    //! - **For a FIN**: READABLE with `read_closed` (`EPOLLRDHUP`); the read returns 0.
    //!
    //! All three in the trace of `RUST_LOG=sockloop=trace cargo run --release -- serve
    //! echo --addr 127.0.0.1:7400` (chapters 5 and 7 give the clients):
    //!
    //! ```text
    //! TRACE event: slot 0 gen 0: readable=true writable=false read_closed=false error=false    <- the listener: accept
    //! TRACE event: slot 1 gen 1: readable=true writable=false read_closed=false error=false    <- bytes
    //! TRACE event: slot 1 gen 1: readable=true writable=false read_closed=true error=false     <- the peer's FIN
    //! TRACE conn 1: read 0 bytes: end of stream
    //! TRACE event: slot 1 gen 1: readable=true writable=true read_closed=true error=true       <- a reset (RST)
    //! TRACE conn 1: write failed: Connection reset by peer (os error 104)
    //! ```
    //!
    //! WRITABLE means there is room in the send buffer. A socket with nothing to send is
    //! almost always writable, so being told so is noise: the reactor writes first and
    //! registers WRITABLE only while output the socket refused is waiting
    //! ([chapter 7](super::ch07_partial_writes)).
}

pub mod ch05_one_turn {
    //! 5. One turn of the reactor, step by step, in the trace.
    //!
    //! The [`reactor`](crate::reactor) module docs number the steps of one turn
    //! ([`Reactor::run_once`](crate::reactor::Reactor::run_once)); in short:
    //!
    //! ```text
    //! 1. timeout: 0 if work is waiting, else the time to the nearest timer, else none
    //! 2. poll(events, timeout)          <- the only place the thread sleeps
    //! 3. for each event, decode the token: waker, listener (accept until WouldBlock),
    //!    connection (flush if writable; read until WouldBlock or the budget), datagram
    //! 4. revisit sources whose read budget ran out last turn
    //! 5. fire expired timers
    //! 6. run work queued during the turn; reap connections that reached Closed
    //! ```
    //!
    //! # Run it
    //!
    //! ```text
    //! RUST_LOG=sockloop=trace cargo run --release -- serve echo --addr 127.0.0.1:7400
    //! python3 -c 'import socket; s = socket.create_connection(("127.0.0.1", 7400)); s.sendall(b"hello\n"); print(s.recv(1024)); s.close()'
    //! ```
    //!
    //! The client prints `b'hello\n'`. The server's trace, step numbers added on the
    //! left:
    //!
    //! ```text
    //!     TRACE listener 127.0.0.1:7400: slot 0 gen 0 (mio token 0 = gen << 32 | slot)
    //! 1,2 TRACE poll: sleeping until an event (no timer armed)
    //!   3 TRACE event: slot 0 gen 0: readable=true writable=false read_closed=false error=false
    //!   3 DEBUG accept 127.0.0.1:46084 as conn 1 (gen 1): the kernel completed its three-way handshake
    //!   3 TRACE conn 1: slot 1 gen 1 in the slab; mio token 4294967297 = gen << 32 | slot
    //!   3 TRACE listener 127.0.0.1:7400: accept would block: backlog empty
    //! 1,2 TRACE poll: sleeping until an event (no timer armed)
    //!   3 TRACE event: slot 1 gen 1: readable=true writable=false read_closed=false error=false
    //!   3 TRACE conn 1: read 6 bytes (short read: receive queue drained; skipping the read that would say WouldBlock)
    //!   3 TRACE conn 1: wrote 6 bytes
    //! 1,2 TRACE poll: sleeping until an event (no timer armed)
    //!   3 TRACE event: slot 1 gen 1: readable=true writable=false read_closed=true error=false
    //!   3 TRACE conn 1: read 0 bytes: end of stream
    //!   3 TRACE conn 1: state Open (ESTABLISHED) => PeerClosed (CLOSE_WAIT)
    //!   3 TRACE conn 1: closing: peer closed, all output sent
    //!   3 TRACE conn 1: state PeerClosed (CLOSE_WAIT) => Closed
    //!   3 DEBUG close 127.0.0.1:46084 (conn 1): peer closed, all output sent
    //!   6 TRACE conn 1: reaped, fd closed
    //! 1,2 TRACE poll: sleeping until an event (no timer armed)
    //! ```
    //!
    //! # What to look for
    //!
    //! - **Three wake-ups, each back to sleep.** Between `poll: sleeping` lines the thread
    //!   is in `epoll_wait` and costs nothing. Each wake-up does all the work there is,
    //!   then sleeps again. No timer is armed (echo has no timeouts by default), so the sleep
    //!   has no limit; chapter 10 shows a bounded one.
    //! - **One read, one write per message.** The read was short (6 bytes into a 64 KiB
    //!   buffer), so the read that would only say `WouldBlock` is skipped
    //!   ([chapter 4](super::ch04_readiness)). The reply is written at once, before any
    //!   WRITABLE interest: a socket with room takes it, and WRITABLE is registered only if
    //!   it does not ([chapter 7](super::ch07_partial_writes)).
    //! - **Closing waits for step 6.** The connection reached `Closed` in step 3, but its
    //!   fd is closed (`reaped`) only at the end of the turn, so that no event still
    //!   queued in this turn's batch can land on a reused slot.
    //!
    //! # Slot, generation, token
    //!
    //! Every registered source lives in one slab: its **slot** is its index (the listener
    //! here is slot 0, the first connection slot 1). Slab slots are reused as soon as
    //! they are freed, so each fill also gets the next value of a **generation** counter:
    //! the listener got 0, the first connection 1. mio returns with each event the
    //! 64-bit **token** given at registration; the reactor packs both into it, `gen << 32
    //! | slot`: `1 << 32 | 1` = 4294967297. A second client, after the first has gone, reuses
    //! the slot with a new generation:
    //!
    //! ```text
    //! TRACE conn 1: slot 1 gen 1 in the slab; mio token 4294967297 = gen << 32 | slot
    //! TRACE conn 1: slot 1 gen 2 in the slab; mio token 8589934593 = gen << 32 | slot
    //! ```
    //!
    //! An event for the old connection that is still in flight carries generation 1, no
    //! longer matches slot 1, and is dropped as stale instead of reaching the new
    //! connection. The protocol sees the same pair as its [`Token`](crate::proto::Token)
    //! (printed `1#2`: slot, then generation).
    //!
    //! # Turn it yourself
    //!
    //! [`Reactor::run`](crate::reactor::Reactor::run) is a loop around `run_once`; call it
    //! yourself and each call is one turn:
    //!
    //! ```
    //! use sockloop::proto::{Out, PeerError, Protocol};
    //! use sockloop::reactor::Reactor;
    //! use std::io::{ErrorKind, Read, Write};
    //! use std::time::Duration;
    //!
    //! struct Echo;
    //! impl Protocol for Echo {
    //!     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
    //!         out.push(input);
    //!         Ok(input.len())
    //!     }
    //! }
    //!
    //! let mut reactor = Reactor::new()?;
    //! let addr = reactor.listen("127.0.0.1:0".parse().unwrap(), || Echo)?;
    //! let mut client = std::net::TcpStream::connect(addr)?;
    //! client.write_all(b"hello\n")?;
    //! client.set_nonblocking(true)?;
    //!
    //! let mut buf = [0u8; 64];
    //! let mut turns = 0;
    //! let n = loop {
    //!     turns += 1;
    //!     assert!(turns <= 100, "no answer after 100 turns");
    //!     let events = reactor.run_once(Some(Duration::from_millis(10)))?;
    //!     println!("turn {turns}: {events} events");
    //!     match client.read(&mut buf) {
    //!         Ok(n) => break n,
    //!         Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
    //!         Err(e) => return Err(e),
    //!     }
    //! };
    //! assert_eq!(&buf[..n], b"hello\n");
    //! # Ok::<(), std::io::Error>(())
    //! ```
}

pub mod ch06_sans_io {
    //! 6. Sans-I/O machines, and why one machine runs under every driver.
    //!
    //! The tutorials' servers mix three things in one loop: waiting (`accept`, `recv`),
    //! the connection's rules (what EOF means, when to close), and the protocol (what to
    //! answer). Here they are three layers:
    //!
    //! - a [`Protocol`](crate::proto::Protocol) is the protocol alone: bytes in, bytes out
    //!   into an [`Out`](crate::proto::Out) sink, no socket, no clock, no thread;
    //! - a [`Session`](crate::session::Session) is the connection's rules: unconsumed
    //!   input, unsent output and their limits, the [`Phase`](crate::session::Phase),
    //!   half-close, deadlines, the close reason. Also no socket and no clock;
    //! - a driver owns the sockets and the waiting: the [`reactor`](crate::reactor), or
    //!   the blocking drivers in [`blocking`](crate::blocking).
    //!
    //! Because the machine never touches a socket, nothing in it knows how the waiting is
    //! done, so the same value runs under every driver. That is what makes chapter 2's
    //! table a fair comparison: only the waiting differs.
    //!
    //! # Drive a machine by hand
    //!
    //! A protocol returns how many bytes it consumed; the driver keeps the rest and
    //! presents them again with the next bytes. A line protocol can therefore consume
    //! nothing until a line is complete. With [`Out::new`](crate::proto::Out::new) you are
    //! the driver:
    //!
    //! ```
    //! use sockloop::proto::{Action, Out, PeerError, Protocol};
    //! use std::time::Instant;
    //!
    //! /// Answers each line in capitals; consumes only complete lines.
    //! struct Upper;
    //!
    //! impl Protocol for Upper {
    //!     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
    //!         let Some(last_nl) = input.iter().rposition(|&b| b == b'\n') else {
    //!             return Ok(0); // no complete line yet: keep it all for next time
    //!         };
    //!         out.push(&input[..=last_nl].to_ascii_uppercase());
    //!         Ok(last_nl + 1)
    //!     }
    //! }
    //!
    //! let mut machine = Upper;
    //! let mut sent = Vec::new();
    //! let mut out = Out::new(&mut sent, Instant::now());
    //! assert_eq!(machine.handle_input(b"hel", &mut out).unwrap(), 0); // half a line
    //! // The driver presents the kept "hel" again, followed by what arrived next:
    //! assert_eq!(machine.handle_input(b"hello\nwor", &mut out).unwrap(), 6);
    //! assert_eq!(out.action(), Action::Continue);
    //! assert_eq!(sent, b"HELLO\n");
    //! ```
    //!
    //! # The same machine under three drivers (the fourth, io_uring, in chapter 11)
    //!
    //! ```
    //! use sockloop::blocking::{BlockingListener, BlockingServer, Mode};
    //! use sockloop::net::Endpoint;
    //! use sockloop::proto::{Out, PeerError, Protocol};
    //! use sockloop::reactor::{Config, Reactor};
    //! use std::io::{BufRead, BufReader, Write};
    //! use std::net::{SocketAddr, TcpStream};
    //! use std::sync::Arc;
    //! use std::time::Duration;
    //!
    //! struct Upper;
    //! impl Protocol for Upper {
    //!     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
    //!         let Some(last_nl) = input.iter().rposition(|&b| b == b'\n') else { return Ok(0) };
    //!         out.push(&input[..=last_nl].to_ascii_uppercase());
    //!         Ok(last_nl + 1)
    //!     }
    //! }
    //!
    //! fn talk(addr: SocketAddr) -> std::io::Result<String> {
    //!     let stream = TcpStream::connect(addr)?;
    //!     stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    //!     (&stream).write_all(b"hel")?;
    //!     std::thread::sleep(Duration::from_millis(20)); // two sends, one line
    //!     (&stream).write_all(b"lo\n")?;
    //!     let mut line = String::new();
    //!     BufReader::new(&stream).read_line(&mut line)?;
    //!     Ok(line)
    //! }
    //!
    //! // The reactor, on a thread of its own.
    //! let (tx, rx) = std::sync::mpsc::channel();
    //! let (handle, thread) = Reactor::spawn(Config::default(), move |reactor| {
    //!     let _ = tx.send(reactor.listen("127.0.0.1:0".parse().unwrap(), || Upper)?);
    //!     Ok(())
    //! })?;
    //! assert_eq!(talk(rx.recv().unwrap())?, "HELLO\n");
    //! handle.stop_now().unwrap();
    //! thread.join().unwrap()?;
    //!
    //! // A thread per connection, and one connection at a time.
    //! for mode in [Mode::Threaded, Mode::Iterative] {
    //!     let listener = BlockingListener::bind(&Endpoint::Inet("127.0.0.1:0".parse().unwrap()))?;
    //!     let server = BlockingServer::spawn(listener, mode, Arc::new(|| Box::new(Upper)))?;
    //!     assert_eq!(talk(server.local_addr().inet().unwrap())?, "HELLO\n");
    //!     server.stop();
    //!     server.join();
    //! }
    //! # Ok::<(), std::io::Error>(())
    //! ```
    //!
    //! The demos' machines (`demos/src/proto/`: echo, ack, stamp, greet, http, chat, file)
    //! are written this way, and `sockloop serve DEMO --driver reactor|threaded|iterative`
    //! serves any of them under any driver. Their unit tests, and the fuzz targets in
    //! `demos/fuzz/`, drive them by hand as above. The session can be driven by hand
    //! too: chapters 7, 9 and 10 do.
}

pub mod ch07_partial_writes {
    //! 7. Partial writes, output queues and backpressure.
    //!
    //! A non-blocking `write` takes what fits in the socket's send buffer: all, some (a
    //! *partial write*) or nothing (`WouldBlock`). The rest must wait somewhere, in
    //! order, until the poller says WRITABLE: in the session's output queue. A peer that
    //! sends but never reads would make that queue grow without bound, so the session
    //! stops reading from a connection whose unsent output reaches
    //! [`Config::high_water`](crate::reactor::Config::high_water) (512 KiB by default),
    //! resumes at [`Config::low_water`](crate::reactor::Config::low_water) (128 KiB), and
    //! closes it above [`Config::output_limit`](crate::reactor::Config::output_limit)
    //! (1 MiB), after [`Config::backlog_timeout`](crate::reactor::Config::backlog_timeout)
    //! at the high-water mark (60 s), or when the peer takes nothing for the write-stall
    //! timeout ([chapter 10](super::ch10_timers)). Not reading is the backpressure: the
    //! kernel's receive buffer fills, TCP's window closes, and the peer's `send()` blocks.
    //!
    //! # Provoke a partial write
    //!
    //! A client with a small receive buffer that floods the echo server without ever
    //! reading: the echoes pile up at the server.
    //!
    //! ```text
    //! RUST_LOG=sockloop=trace cargo run --release -- serve echo --addr 127.0.0.1:7400
    //! ```
    //!
    //! ```text
    //! import socket
    //! s = socket.socket()
    //! s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # before connect: a small window
    //! s.connect(("127.0.0.1", 7400))
    //! s.settimeout(1.0)                      # send() blocks once the server stops reading
    //! sent, chunk = 0, b"x" * 65536
    //! try:
    //!     while sent < 64 * 1024 * 1024:     # bounded: at most 64 MiB
    //!         sent += s.send(chunk)          # never recv(): the echo piles up at the server
    //! except socket.timeout:
    //!     pass
    //! print("sent", sent, "bytes before send() blocked for 1 s")
    //! s.close()
    //! ```
    //!
    //! The client prints `sent 6422528 bytes before send() blocked for 1 s`; the trace
    //! says what happened to them:
    //!
    //! ```text
    //! TRACE conn 1: read 65536 bytes (the buffer is full: more may wait)
    //! ...
    //! TRACE conn 1: wrote 33280 of 65536 bytes, then write would block (partial write): 32256 bytes wait for WRITABLE
    //! TRACE conn 1: interest READABLE | PRIORITY -> READABLE | WRITABLE | PRIORITY
    //! TRACE conn 1: deadline armed: 60000.1 ms from now
    //! ...
    //! TRACE conn 1: read 65536 bytes (the buffer is full: more may wait)
    //! TRACE conn 1: 61952 bytes wait: the send buffer is full until WRITABLE
    //! TRACE poll: not sleeping: work is waiting (a revisit or a local task)
    //! ...
    //! TRACE conn 1: backpressure: 538112 bytes unsent (high water 524288), stop reading
    //! TRACE poll: sleeping at most 59998.8 ms (then: conn 1's deadline), or until an event
    //! TRACE conn 1: backpressure: 538112 bytes unsent, not reading
    //! TRACE event: slot 1 gen 1: readable=true writable=true read_closed=true error=true
    //! TRACE conn 1: write failed: Connection reset by peer (os error 104)
    //! TRACE conn 1: closing: I/O error: connection reset
    //! ```
    //!
    //! # What to look for
    //!
    //! - **The partial write**: `wrote 33280 of 65536`. The client's 4 KiB window and the
    //!   kernel's buffers between the two ends are full; the other 32256 bytes go into the
    //!   session's queue.
    //! - **WRITABLE only now**: the interest changes to include WRITABLE the moment output
    //!   waits, and the write-stall deadline is armed (60 s by default).
    //! - **No write until WRITABLE**: the reads go on, their echoes join the queue (`61952
    //!   bytes wait`), and no `write()` is tried until the poller says WRITABLE: a socket
    //!   whose last write hit `WouldBlock` would only say `EAGAIN` again.
    //! - **Backpressure**: at 538112 bytes queued (over the 512 KiB high-water mark) the
    //!   connection stops reading, and the loop goes to sleep with the client's bytes left
    //!   in the kernel. The client's `send()` then blocks. Of the 6.1 MiB it managed to
    //!   send, the server's process holds 526 KiB; the rest sits in kernel buffers (the
    //!   client's send buffer, the server's receive and send buffers), memory that no
    //!   user-space count shows ([chapter 12](super::ch12_costs)).
    //! - **The reset**: the client closed with unread data in its receive queue, so its
    //!   kernel answered with RST instead of FIN, and the server's next write failed with
    //!   `ECONNRESET`. Output still queued is dropped.
    //!
    //! # The same by hand
    //!
    //! The session decides this without a socket; a "socket" that takes 2 bytes shows it:
    //!
    //! ```
    //! use sockloop::proto::{Out, PeerError, Protocol};
    //! use sockloop::session::{Context, Session, SessionConfig};
    //! use std::sync::Arc;
    //! use std::time::Instant;
    //!
    //! struct Echo;
    //! impl Protocol for Echo {
    //!     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
    //!         out.push(input);
    //!         Ok(input.len())
    //!     }
    //! }
    //!
    //! let cfg = SessionConfig { low_water: 4, high_water: 8, output_limit: 64, ..SessionConfig::default() };
    //! let now = Instant::now();
    //! let mut cx = Context::new(now);
    //! let mut s = Session::accepted(Echo, Arc::new(cfg), now);
    //! s.open(&mut cx, None, None);
    //!
    //! s.feed(&mut cx, b"0123456789ab"); // 12 bytes in: 12 bytes of echo to send
    //! assert_eq!(s.poll_transmit(&cx), b"0123456789ab");
    //! s.sent(&mut cx, 2); // a partial write: the socket took 2
    //! assert_eq!(s.buffered_output(), 10);
    //! assert!(s.wants_write()); // a driver now registers WRITABLE
    //! assert!(s.is_paused() && !s.wants_read()); // 10 >= high water 8: stop reading
    //!
    //! // WRITABLE: the socket takes 7 more; 3 left is under low water 4: read again.
    //! assert_eq!(s.poll_transmit(&cx), b"23456789ab");
    //! s.sent(&mut cx, 7);
    //! assert!(!s.is_paused() && s.wants_read());
    //! assert_eq!(s.poll_transmit(&cx), b"9ab");
    //! ```
}

pub mod ch08_message_boundaries {
    //! 8. TCP has no message boundaries.
    //!
    //! TCP delivers a stream of bytes, in order. How they were cut into `send()` calls is
    //! not part of what arrives: two sends can arrive as one read, and one send as two.
    //! The tutorials' servers take each `recv(1024)` to be one message, and they work only
    //! because a person typing is slow and loopback is fast.
    //!
    //! # Run it
    //!
    //! ```text
    //! RUST_LOG=sockloop=trace cargo run --release -- serve echo --addr 127.0.0.1:7400
    //! ```
    //!
    //! ```text
    //! import socket, time
    //! s = socket.create_connection(("127.0.0.1", 7400))
    //! s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    //! s.sendall(b"one\n"); s.sendall(b"two\n")                   # two sends...
    //! time.sleep(0.2); print("recv:", s.recv(1024))
    //! s.sendall(b"thr"); time.sleep(0.2); s.sendall(b"ee\n")      # one line, two sends
    //! time.sleep(0.2); print("recv:", s.recv(1024))
    //! s.close()
    //! ```
    //!
    //! ```text
    //! recv: b'one\ntwo\n'
    //! recv: b'three\n'
    //! ```
    //!
    //! and the server's trace:
    //!
    //! ```text
    //! TRACE conn 1: read 4 bytes (short read: ...)
    //! TRACE conn 1: wrote 4 bytes
    //! TRACE conn 1: read 4 bytes (short read: ...)
    //! TRACE conn 1: wrote 4 bytes
    //! TRACE conn 1: read 3 bytes (short read: ...)
    //! TRACE conn 1: wrote 3 bytes
    //! TRACE conn 1: read 3 bytes (short read: ...)
    //! TRACE conn 1: wrote 3 bytes
    //! ```
    //!
    //! # What to look for
    //!
    //! The server wrote `one\n` and `two\n` in two writes; the client's one `recv(1024)`
    //! got both. The client sent `three\n` as `thr` + `ee\n`; the server read it in two
    //! reads and echoed it in two writes, and the client, reading later, got one
    //! `b'three\n'`. Neither end sees the other's send boundaries. Had the server taken
    //! each read for a message, it would have answered `thr` and `ee` separately. Large
    //! sends split too: chapter 7's 64 KiB sends arrived as reads of 64000 and 29696 bytes.
    //!
    //! The same with std sockets, where the reader's buffer is smaller than what waits:
    //!
    //! ```
    //! use std::io::{Read, Write};
    //! use std::net::{TcpListener, TcpStream};
    //! use std::time::Duration;
    //!
    //! let listener = TcpListener::bind("127.0.0.1:0")?;
    //! let mut client = TcpStream::connect(listener.local_addr()?)?;
    //! client.set_nodelay(true)?; // no Nagle: each write leaves at once
    //! let (mut server, _) = listener.accept()?;
    //!
    //! client.write_all(b"one\n")?;
    //! client.write_all(b"two\n")?;
    //! std::thread::sleep(Duration::from_millis(100)); // both have arrived by now
    //! let mut buf = [0u8; 1024];
    //! let n = server.read(&mut buf)?; // the tutorials' recv(1024)
    //! assert_eq!(&buf[..n], b"one\ntwo\n", "two sends, one read");
    //!
    //! client.write_all(b"three\n")?;
    //! std::thread::sleep(Duration::from_millis(100)); // all 6 bytes have arrived
    //! let mut small = [0u8; 4];
    //! let a = server.read(&mut small)?; // a reader with a smaller buffer than what waits
    //! assert_eq!(&small[..a], b"thre");
    //! let b = server.read(&mut small)?;
    //! assert_eq!(&small[..b], b"e\n", "one send, two reads");
    //! # Ok::<(), std::io::Error>(())
    //! ```
    //!
    //! # Framing, and its trade-off
    //!
    //! A protocol must say where a message ends: a delimiter (a newline, HTTP's blank
    //! line), a length prefix (HTTP's `Content-Length`, the file demo's `FILE <name>
    //! <size>`), or the end of the stream. The contract lets a machine consume nothing
    //! until its message is complete ([chapter 6](super::ch06_sans_io)'s `Upper`). The
    //! line demos use `demos/src/proto/line.rs`, which ends a message at `\n`, and also
    //! after 100 ms of quiet (`QUIET`), because the tutorials' own clients send `Michael`
    //! with no newline and wait for the answer. With
    //! `RUST_LOG=sockloop=trace cargo run --release -- serve ack --addr 127.0.0.1:7401`:
    //!
    //! ```text
    //! import socket, time
    //! s = socket.create_connection(("127.0.0.1", 7401))
    //! s.sendall(b"one\ntwo\n"); time.sleep(0.2); print("recv:", s.recv(1024))
    //! t = time.time(); s.sendall(b"Michael")
    //! print("recv:", s.recv(1024), "after %.0f ms" % ((time.time() - t) * 1000))
    //! ```
    //!
    //! ```text
    //! recv: b'server received you message.\nserver received you message.\n'
    //! recv: b'server received you message.\n' after 101 ms
    //! ```
    //!
    //! ```text
    //! TRACE conn 1: read 8 bytes (short read: ...)          <- two lines in one read: two messages
    //! TRACE conn 1: wrote 58 bytes                          <- two answers in one write
    //! TRACE conn 1: read 7 bytes (short read: ...)          <- "Michael", no newline
    //! TRACE conn 1: deadline armed: 100.8 ms from now
    //! TRACE poll: sleeping at most 100.7 ms (then: conn 1's deadline), or until an event
    //! TRACE timer: conn 1's deadline fired: checking its timeouts
    //! TRACE conn 1: wrote 29 bytes
    //! ```
    //!
    //! The trade-off, as line.rs states it: a client with no newline waits 100 ms for
    //! every answer, and a newline-terminated line whose two halves arrive more than
    //! 100 ms apart is taken as two messages. A line over 8 KiB (`MAX_LINE`) closes the
    //! connection, so the framer never buffers without bound.
}

pub mod ch09_handshakes {
    //! 9. The three- and four-way handshakes as the connection's states, and half-close.
    //!
    //! The kernel does the three-way handshake (SYN, SYN-ACK, ACK) by itself; `accept()`
    //! only collects a connection that is already ESTABLISHED (chapter 1's second client
    //! connected while nobody was calling `accept`). The trace says so: `accept
    //! 127.0.0.1:46084 as conn 1 (gen 1): the kernel completed its three-way handshake`.
    //!
    //! Closing is a four-way handshake, one FIN and one ACK per direction, and each
    //! direction closes on its own. The session's [`Phase`](crate::session::Phase) names
    //! where a connection is, and its `Display` names the TCP state:
    //!
    //! ```text
    //! Phase        TCP state               what it means here
    //! Connecting   SYN_SENT                our connect() is in progress
    //! Open         ESTABLISHED             both directions open
    //! PeerClosed   CLOSE_WAIT              the peer's FIN came (read returned 0); we still send what we owe
    //! Closing      ESTABLISHED             we decided to close; flushing before our FIN
    //! Draining     FIN_WAIT_1/2            our FIN is sent; unread input is discarded until the peer's FIN
    //! HalfClosed   FIN_WAIT_2              we sent FIN (nothing more to say) and keep reading replies
    //! Closed       (LAST_ACK / TIME_WAIT)  the protocol has been told why; the fd is closed
    //! ```
    //!
    //! # The peer closes first (passive close)
    //!
    //! Chapter 5's echo client: its FIN makes the connection `PeerClosed`; with nothing
    //! owed, our `close()` sends our FIN at once.
    //!
    //! ```text
    //! TRACE conn 1: state Open (ESTABLISHED) => PeerClosed (CLOSE_WAIT)
    //! TRACE conn 1: closing: peer closed, all output sent
    //! TRACE conn 1: state PeerClosed (CLOSE_WAIT) => Closed
    //! ```
    //!
    //! # We close first (active close)
    //!
    //! The greeter closes when told `exit`. With
    //! `RUST_LOG=sockloop=trace cargo run --release -- serve greet --addr 127.0.0.1:7403`:
    //!
    //! ```text
    //! import socket, time, subprocess
    //! s = socket.create_connection(("127.0.0.1", 7403)); print("recv:", s.recv(1024))
    //! s.sendall(b"exit\n"); time.sleep(0.2); print("recv:", s.recv(1024))   # b'': the server's FIN
    //! ss = lambda: print(subprocess.run(["ss", "-tan", "sport = :7403 or dport = :7403"], capture_output=True, text=True).stdout)
    //! ss(); s.close(); time.sleep(0.1); ss()
    //! ```
    //!
    //! ```text
    //! recv: b'Welcome!\n'
    //! recv: b''
    //! State      Recv-Q Send-Q Local Address:Port  Peer Address:Port
    //! LISTEN     0      1024       127.0.0.1:7403       0.0.0.0:*
    //! CLOSE-WAIT 0      0          127.0.0.1:35936    127.0.0.1:7403
    //! FIN-WAIT-2 0      0          127.0.0.1:7403     127.0.0.1:35936
    //!
    //! State     Recv-Q Send-Q Local Address:Port Peer Address:Port
    //! LISTEN    0      1024       127.0.0.1:7403      0.0.0.0:*
    //! TIME-WAIT 0      0          127.0.0.1:7403    127.0.0.1:35936
    //! ```
    //!
    //! ```text
    //! TRACE greet state=Greeting=>Closing
    //! TRACE conn 1: state Open (ESTABLISHED) => Closing (flushing before FIN)
    //! TRACE conn 1: shutdown(Write): FIN sent
    //! TRACE conn 1: state Closing (flushing before FIN) => Draining (FIN_WAIT)
    //! TRACE conn 1: deadline armed: 2000.9 ms from now
    //! TRACE event: slot 1 gen 1: readable=true writable=false read_closed=true error=false
    //! TRACE conn 1: read 0 bytes: end of stream
    //! TRACE conn 1: closing: closed by us, peer acknowledged with FIN
    //! TRACE conn 1: state Draining (FIN_WAIT) => Closed
    //! ```
    //!
    //! What to look for: `ss` shows both ends of the one connection, the client in
    //! CLOSE-WAIT (it has our FIN, has not sent its own), the server in FIN-WAIT-2. Once
    //! the client closes, the server, as the active closer, holds TIME-WAIT. `Draining`
    //! waits up to the linger time (2 s, the `deadline armed` line) for the peer's FIN
    //! rather than closing at once, because closing a socket with unread input makes the
    //! kernel send RST, which can destroy a reply the peer has not read yet (chapter 7's
    //! client caused exactly such a reset).
    //!
    //! # Half-close
    //!
    //! A FIN closes one direction only. A client can say "I am done sending" with
    //! `shutdown(SHUT_WR)` and still read the answer:
    //!
    //! ```text
    //! import socket
    //! s = socket.create_connection(("127.0.0.1", 7400))
    //! s.sendall(b"last words\n"); s.shutdown(socket.SHUT_WR)    # our FIN
    //! data = b""
    //! while True:
    //!     b = s.recv(1024)
    //!     if not b: break
    //!     data += b
    //! print("after our FIN we still got:", data)
    //! ```
    //!
    //! ```text
    //! after our FIN we still got: b'last words\n'
    //! ```
    //!
    //! ```text
    //! TRACE conn 1: read 11 bytes (short, but the peer's FIN is pending: reading on to WouldBlock)
    //! TRACE conn 1: wrote 11 bytes
    //! TRACE conn 1: read 0 bytes: end of stream
    //! TRACE conn 1: state Open (ESTABLISHED) => PeerClosed (CLOSE_WAIT)
    //! ```
    //!
    //! The bytes and the FIN arrived together (one event with `read_closed`), so the
    //! reactor reads on past the short read: no new edge would announce the FIN.
    //!
    //! # The same by hand
    //!
    //! ```
    //! use sockloop::proto::{CloseReason, Out, PeerError, Protocol};
    //! use sockloop::session::{Context, Phase, Session, SessionConfig};
    //! use std::sync::Arc;
    //! use std::time::Instant;
    //!
    //! /// Closes on "exit\n"; ignores everything else.
    //! struct Exit;
    //! impl Protocol for Exit {
    //!     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
    //!         if input.starts_with(b"exit\n") {
    //!             out.close();
    //!         }
    //!         Ok(input.len())
    //!     }
    //! }
    //!
    //! let now = Instant::now();
    //! let cfg = Arc::new(SessionConfig::default());
    //! let mut cx = Context::new(now);
    //!
    //! // Passive close: the peer's FIN.
    //! let mut s = Session::accepted(Exit, Arc::clone(&cfg), now);
    //! s.open(&mut cx, None, None);
    //! assert_eq!(s.phase(), Phase::Open);
    //! s.eof(&mut cx); // a read returned 0
    //! assert_eq!(s.phase(), Phase::Closed); // via PeerClosed: nothing was owed
    //! assert_eq!(s.poll_close(), Some(CloseReason::PeerClosed));
    //!
    //! // Active close: the protocol closes, we send FIN, then wait for the peer's.
    //! let mut s = Session::accepted(Exit, cfg, now);
    //! s.open(&mut cx, None, None);
    //! s.feed(&mut cx, b"exit\n");
    //! assert!(s.poll_fin(&cx)); // nothing owed: the driver may send FIN now
    //! s.fin_sent(&mut cx); // shutdown(Write) done
    //! assert_eq!(s.phase(), Phase::Draining);
    //! s.feed(&mut cx, b"late bytes"); // discarded while Draining
    //! s.eof(&mut cx); // the peer's FIN
    //! assert_eq!(s.phase(), Phase::Closed);
    //! assert_eq!(s.poll_close(), Some(CloseReason::Closed));
    //! ```
}

pub mod ch10_timers {
    //! 10. Timers and deadlines, and the slowloris attack.
    //!
    //! A silent peer costs a blocking server a thread and the reactor a slot, forever,
    //! unless something ends the wait. An attacker opens many connections and sends a
    //! byte now and then (slowloris). Each connection therefore has one deadline
    //! ([`Session::poll_timeout`](crate::session::Session::poll_timeout)): the earliest of
    //! the idle timeout (no byte either way), the write-stall timeout (output pending, none
    //! taken), the backlog timeout, the linger after our FIN, and the protocol's own timer
    //! (HTTP's header timeout, the line framer's 100 ms). The reactor keeps all deadlines
    //! in one timer structure and sleeps in `poll` at most until the nearest: step 1 of
    //! [chapter 5](super::ch05_one_turn). Timers fire late, never early.
    //!
    //! # Idle
    //!
    //! ```text
    //! RUST_LOG=sockloop=trace cargo run --release -- serve echo --addr 127.0.0.1:7400 --idle-timeout 2
    //! python3 -c 'import socket, time; s = socket.create_connection(("127.0.0.1", 7400)); t = time.time(); print(s.recv(1024), "after %.2f s" % (time.time() - t))'
    //! ```
    //!
    //! prints `b'' after 2.00 s`: the server's FIN. The trace:
    //!
    //! ```text
    //! TRACE conn 1: deadline armed: 2000.1 ms from now
    //! TRACE poll: sleeping at most 1999.9 ms (then: conn 1's deadline), or until an event
    //! TRACE timer: conn 1's deadline fired: checking its timeouts
    //! TRACE conn 1: closing: idle timeout
    //! TRACE conn 1: state Open (ESTABLISHED) => Closed
    //! ```
    //!
    //! An idle timeout does not stop slowloris: one byte per interval resets it.
    //!
    //! # A header timeout
    //!
    //! The HTTP demo gives a request head `--header-timeout` seconds from its first byte,
    //! and trickling bytes does not extend it:
    //!
    //! ```text
    //! RUST_LOG=sockloop=trace cargo run --release -- serve http --addr 127.0.0.1:7405 --header-timeout 2
    //! ```
    //!
    //! ```text
    //! import socket, time
    //! s = socket.create_connection(("127.0.0.1", 7405)); t = time.time()
    //! s.sendall(b"GET / HTTP/1.1\r\n")               # a head that never ends...
    //! for i in range(5):
    //!     time.sleep(0.5); s.sendall(b"X-a: b\r\n")   # ...one header line every 0.5 s
    //! print("after %.2f s: %r" % (time.time() - t, s.recv(1024).split(b"\r\n")[0]))
    //! ```
    //!
    //! prints `after 2.51 s: b'HTTP/1.1 408 Request Timeout'` (the client reads only after
    //! its last line; the 408 went out at 2.0 s). The sleeps shrink as the deadline nears,
    //! whatever arrives:
    //!
    //! ```text
    //! TRACE conn 1: deadline armed: 2000.1 ms from now
    //! TRACE poll: sleeping at most 2000.0 ms (then: conn 1's deadline), or until an event
    //! TRACE conn 1: read 16 bytes (short read: ...)
    //! TRACE poll: sleeping at most 1999.8 ms (then: conn 1's deadline), or until an event
    //! TRACE conn 1: read 8 bytes (short read: ...)
    //! TRACE poll: sleeping at most 1499.5 ms (then: conn 1's deadline), or until an event
    //! ...
    //! TRACE poll: sleeping at most 493.5 ms (then: conn 1's deadline), or until an event
    //! TRACE timer: conn 1's deadline fired: checking its timeouts
    //! DEBUG http: request head timed out: 408 and close
    //! TRACE conn 1: state Open (ESTABLISHED) => Closing (flushing before FIN)
    //! TRACE conn 1: wrote 150 bytes
    //! TRACE conn 1: shutdown(Write): FIN sent
    //! TRACE conn 1: state Closing (flushing before FIN) => Draining (FIN_WAIT)
    //! TRACE conn 1: discarding 8 bytes while Draining (FIN_WAIT)
    //! ```
    //!
    //! (`RUST_LOG=sockloop=trace,sockloop_demos=trace` adds the demo's own lines, like
    //! the `http:` one.)
    //!
    //! # Write stall
    //!
    //! Chapter 7's flooding client, with `time.sleep(2.5)` before its `s.close()`,
    //! against `serve echo --addr 127.0.0.1:7400 --write-stall-timeout 2`, is dropped for
    //! not reading:
    //!
    //! ```text
    //! 18:50:01.763399 TRACE poll: sleeping at most 1999.2 ms (then: conn 1's deadline), or until an event
    //! 18:50:03.825867 TRACE timer: conn 1's deadline fired: checking its timeouts
    //! 18:50:03.825906 TRACE conn 1: closing: write stalled: the peer is not reading
    //! ```
    //!
    //! # The same by hand
    //!
    //! The session reads no clock: the driver passes the time in, so a test can jump it.
    //!
    //! ```
    //! use sockloop::proto::{CloseReason, Out, PeerError, Protocol};
    //! use sockloop::session::{Context, Session, SessionConfig};
    //! use std::sync::Arc;
    //! use std::time::{Duration, Instant};
    //!
    //! struct Silent;
    //! impl Protocol for Silent {
    //!     fn handle_input(&mut self, input: &[u8], _: &mut Out<'_>) -> Result<usize, PeerError> {
    //!         Ok(input.len())
    //!     }
    //! }
    //!
    //! let t0 = Instant::now();
    //! let cfg = SessionConfig { idle: Some(Duration::from_secs(2)), ..SessionConfig::default() };
    //! let mut cx = Context::new(t0);
    //! let mut s = Session::accepted(Silent, Arc::new(cfg), t0);
    //! s.open(&mut cx, None, None);
    //! let deadline = s.poll_timeout().expect("the idle deadline");
    //! assert!(deadline >= t0 + Duration::from_secs(2));
    //!
    //! cx.now = deadline; // the driver's timer fired
    //! s.timeout(&mut cx);
    //! assert_eq!(s.poll_close(), Some(CloseReason::IdleTimeout));
    //! ```
}

pub mod ch11_completion_io {
    //! 11. Completion I/O: the uring driver.
    //!
    //! Readiness says "this socket can be read now; call `read` yourself". Completion
    //! says "the read you asked for earlier is done; the bytes are in the buffer". The
    //! fourth driver, `sockloop::uring` (cargo feature `uring`, on in the demos), drives
    //! the same [`Session`](crate::session::Session) from io_uring completions on one
    //! thread:
    //!
    //! ```text
    //! $ RUST_LOG=trace sockloop serve echo --driver uring --addr 127.0.0.1:0
    //! ```
    //!
    //! The server's trace (timestamps and module names cut) for one client that sends
    //! `hello\n`, reads the echo and closes:
    //!
    //! ```text
    //! uring: a provided-buffer ring of 256 × 16384 bytes
    //! uring: submit multishot accept on the listener (fd 7)
    //! uring: io_uring_enter: submitting 2 ops, waiting for a completion
    //! listening on 127.0.0.1:42289 (uring driver)
    //! uring: 1 completions
    //! accept 127.0.0.1:43886 as conn 0 (fd 8)
    //! conn 0: submit recv (the kernel picks a buffer from the ring)
    //! uring: io_uring_enter: submitting 1 ops, waiting for a completion
    //! uring: 1 completions
    //! conn 0: recv completed: 6 bytes in buffer 0
    //! conn 0: submit send of 6 bytes (the buffer is the kernel's until it completes)
    //! conn 0: submit recv (the kernel picks a buffer from the ring)
    //! uring: io_uring_enter: submitting 2 ops, waiting for a completion or 60.000312614s
    //! uring: 1 completions
    //! conn 0: send completed: the socket took 6 of 6 bytes
    //! uring: io_uring_enter: submitting 0 ops, waiting for a completion or 60.00023598s
    //! uring: 1 completions
    //! conn 0: recv completed: 0 bytes: end of stream
    //! conn 0: state Open (ESTABLISHED) => PeerClosed (CLOSE_WAIT)
    //! conn 0: closing: peer closed, all output sent
    //! conn 0: state PeerClosed (CLOSE_WAIT) => Closed
    //! close conn 0: peer closed, all output sent
    //! ```
    //!
    //! Set it beside chapter 5's reactor turn. There is no `epoll_wait` and no
    //! `WouldBlock`: the receive is submitted before any byte has arrived and completes
    //! when one does; the accept was submitted once (multishot) and keeps completing; one
    //! `io_uring_enter` carries the echo's send and the next receive together, and waits
    //! (60 s is the idle timeout, the session's one deadline, as the wait's own timeout).
    //!
    //! - **Buffer ownership.** With readiness the program lends a buffer for the length of
    //!   one `read` call, so the reactor lends one 64 KiB buffer to every connection in
    //!   turn. With io_uring the kernel holds the buffer from submission until the
    //!   completion, which may be never for a silent peer. The driver therefore gives the
    //!   kernel a *pool* (a provided-buffer ring: "buffer 0" above): the kernel picks a
    //!   buffer only when data arrives, and the driver hands it back as soon as the
    //!   session has been fed. A send's bytes are copied into the connection's own buffer,
    //!   which is the kernel's until the send completes; the session keeps its copy,
    //!   counted unsent, so its limits see exactly what the reactor's would. In Rust the
    //!   buffer cannot be a borrowed `&mut [u8]` (monoio's "rent" API makes it owned, given
    //!   back with the result), and cancelling means asking the kernel and waiting for its
    //!   answer: a connection's slot is freed only after its operations have completed.
    //! - **Fewer system calls, not less work.** At 64 busy connections one
    //!   `io_uring_enter` submits and reaps about a hundred socket operations, where the
    //!   reactor makes a `recvfrom` and a `sendto` per message. But on this VM the kernel's
    //!   TCP work is 96% of either server's CPU (perf): the per-operation cost of io_uring
    //!   (arming a poll for a receive that must wait, running its completion) is about
    //!   what the system call it saves cost, so the two cost the same per message within
    //!   this VM's noise (BENCHMARKING.md has the table). Axboe's "Efficient IO with
    //!   io_uring" and liburing#189 (epoll ahead on small-message echo) say the same.
    //! - **Backpressure is not asking.** One receive per connection is in flight, and a
    //!   new one is submitted only while the session wants input; a multishot receive
    //!   would have to be cancelled to pause.
    //!
    //! Under the three other drivers the same program serves the same bytes; chapter 6's
    //! machine runs here too:
    //!
    //! ```
    //! # #[cfg(feature = "uring")] {
    //! use sockloop::net::Endpoint;
    //! use sockloop::proto::{Out, PeerError, Protocol};
    //! use sockloop::uring::UringServer;
    //! use std::io::{Read, Write};
    //! use std::sync::Arc;
    //!
    //! struct Echo;
    //! impl Protocol for Echo {
    //!     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
    //!         out.push(input);
    //!         Ok(input.len())
    //!     }
    //! }
    //!
    //! let at = Endpoint::Inet("127.0.0.1:0".parse().unwrap());
    //! let server = UringServer::spawn(&at, Arc::new(|| Box::new(Echo) as Box<dyn Protocol + Send>))
    //!     .expect("io_uring works here");
    //! let addr = server.local_addr().inet().unwrap();
    //! let mut c = std::net::TcpStream::connect(addr).unwrap();
    //! c.write_all(b"hello").unwrap();
    //! let mut got = [0u8; 5];
    //! c.read_exact(&mut got).unwrap();
    //! assert_eq!(&got, b"hello");
    //! drop(c);
    //! server.shutdown(std::time::Duration::from_secs(1));
    //! server.join();
    //! # }
    //! ```
}

pub mod ch12_costs {
    //! 12. What the reactor costs you.
    //!
    //! # One core
    //!
    //! The reactor is one thread. It never waits for I/O, but it does wait for your
    //! code: while one protocol call runs, no other connection is read, written or timed.
    //! A protocol that spends 50 ms of CPU per message, measured with the program below
    //! (client A sends 10 messages at once; 10 ms later client B sends one and times its
    //! answer):
    //!
    //! ```text
    //! reactor:  ping answered after 557.744906ms
    //! reactor:  ping answered after 550.483628ms
    //! reactor:  ping answered after 541.213331ms
    //! threaded: ping answered after 51.916753ms
    //! threaded: ping answered after 50.105347ms
    //! threaded: ping answered after 50.105708ms
    //! ```
    //!
    //! Under the reactor B waits for all of A's work (10 x 50 ms) and then its own; under
    //! the threaded driver B's thread runs beside A's (this VM has 2 cores) and B waits
    //! only for its own 50 ms. CPU-heavy work belongs on another thread, with the result
    //! posted back through a [`Handle`](crate::reactor::Handle) or a
    //! [`Mailbox`](crate::proto::Mailbox). A blocking call (a file read, a DNS lookup, a
    //! `sleep`) inside a protocol stalls every connection the same way.
    //!
    //! ```no_run
    //! use sockloop::blocking::{BlockingListener, BlockingServer, Mode};
    //! use sockloop::net::Endpoint;
    //! use sockloop::proto::{Out, PeerError, Protocol};
    //! use sockloop::reactor::{Config, Reactor};
    //! use std::io::{BufRead, BufReader, Read, Write};
    //! use std::net::{SocketAddr, TcpStream};
    //! use std::sync::Arc;
    //! use std::time::{Duration, Instant};
    //!
    //! /// Echoes each line after 50 ms of CPU work.
    //! struct Slow;
    //! impl Protocol for Slow {
    //!     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
    //!         let mut used = 0;
    //!         while let Some(nl) = input[used..].iter().position(|&b| b == b'\n') {
    //!             let t = Instant::now();
    //!             while t.elapsed() < Duration::from_millis(50) {
    //!                 std::hint::spin_loop();
    //!             }
    //!             out.push(&input[used..used + nl + 1]);
    //!             used += nl + 1;
    //!         }
    //!         Ok(used)
    //!     }
    //! }
    //!
    //! fn measure(addr: SocketAddr) -> Duration {
    //!     let mut a = TcpStream::connect(addr).unwrap();
    //!     a.write_all(&b"work\n".repeat(10)).unwrap(); // 500 ms of work for the server
    //!     std::thread::sleep(Duration::from_millis(10));
    //!     let b = TcpStream::connect(addr).unwrap();
    //!     let t = Instant::now();
    //!     (&b).write_all(b"ping\n").unwrap();
    //!     BufReader::new(&b).read_line(&mut String::new()).unwrap();
    //!     let took = t.elapsed();
    //!     a.read_exact(&mut [0u8; 50]).unwrap(); // A's ten answers
    //!     took
    //! }
    //!
    //! let (handle, thread) = Reactor::spawn(Config::default(), |r| {
    //!     r.listen("127.0.0.1:7410".parse().unwrap(), || Slow)?;
    //!     Ok(())
    //! })?;
    //! for _ in 0..3 {
    //!     println!("reactor:  ping answered after {:?}", measure("127.0.0.1:7410".parse().unwrap()));
    //! }
    //! handle.stop_now().unwrap();
    //! thread.join().unwrap()?;
    //!
    //! let listener = BlockingListener::bind(&Endpoint::Inet("127.0.0.1:7411".parse().unwrap()))?;
    //! let server = BlockingServer::spawn(listener, Mode::Threaded, Arc::new(|| Box::new(Slow)))?;
    //! for _ in 0..3 {
    //!     println!("threaded: ping answered after {:?}", measure("127.0.0.1:7411".parse().unwrap()));
    //! }
    //! server.stop();
    //! server.join();
    //! # Ok::<(), std::io::Error>(())
    //! ```
    //!
    //! One reactor uses one core. `sockloop bench` (BENCHMARKING.md) pins each server to
    //! one core for that reason; using more cores means more reactors (sockloop has no
    //! multi-threaded reactor).
    //!
    //! # 88 bytes is user-space memory only
    //!
    //! An idle connection costs the reactor its 88-byte slab slot (release builds; a unit
    //! test in the reactor holds it there): no buffer, no thread, because the read buffer
    //! and the output sink are lent by the loop and unsent output lives behind one
    //! pointer, null while there is none. The kernel's side is extra and larger: a socket
    //! structure per connection, and receive and send buffers that fill as data waits
    //! (chapter 7's client pushed about 7 MiB into kernel buffers while the server held
    //! 577 KiB). Free-memory numbers from a many-connection test include those; the
    //! 88 B does not.
    //!
    //! # 10,000 connections need a higher `ulimit -n`
    //!
    //! Every connection is a file descriptor, and the default soft limit is often 1024.
    //! The reactor's default [`Config::max_connections`](crate::reactor::Config::max_connections)
    //! is that limit minus 32; at the limit it stops accepting and new connections wait in
    //! the listen backlog. With a limit of 64:
    //!
    //! ```text
    //! (ulimit -n 64; RUST_LOG=sockloop=debug cargo run --release -- serve echo --addr 127.0.0.1:7400)
    //! ```
    //!
    //! ```text
    //! import socket
    //! conns = [socket.create_connection(("127.0.0.1", 7400)) for _ in range(100)]  # the backlog takes them all
    //! answered = 0
    //! for c in conns:
    //!     c.settimeout(0.05); c.sendall(b"hi\n")
    //!     try:
    //!         if c.recv(16): answered += 1
    //!     except socket.timeout: pass
    //! print(f"100 connected, {answered} answered")
    //! ```
    //!
    //! ```text
    //! 100 connected, 32 answered
    //! DEBUG listener 127.0.0.1:7400: 32 connections open, the limit: new ones wait in the backlog
    //! ```
    //!
    //! To try 10,000, raise the limit in the shell that starts the server and in the one
    //! that starts the clients (`ulimit -n 65536`, up to the hard limit `ulimit -Hn`); a
    //! client and server on one machine need a descriptor for each end.
}
