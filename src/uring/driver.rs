//! The loop of the completion driver: submit, wait, complete, and drive each connection's
//! session between completions.
//!
//! Every operation in flight carries a `user_data` naming what it is for: the kind of
//! operation (top byte), the connection's generation (24 bits) and its slab key (low 32
//! bits). A connection's slot (and the send buffer in it) is freed only after every one of
//! its operations has completed, so a completion always finds the connection it was for.

use super::buffers::{BufRing, GROUP};
use super::{Inbox, UringOptions, UringStats, DRAINING, RUNNING, STOPPED};
use crate::blocking::{BlockingListener, Factory};
use crate::net::Endpoint;
use crate::proto::{CloseReason, Mailbox, Protocol, Token};
use crate::session::{Context, Deliver, Opening, Session, SessionConfig};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use std::cell::OnceCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_WAKE: u64 = 4;
const OP_CANCEL: u64 = 5;

const GEN_MASK: u32 = 0xFF_FFFF;

/// Points the context (and the inbox's idea of whose protocol runs) at connection `key`,
/// before a call into its session.
fn focus(cx: &mut Context, inbox: &Inbox, key: usize, gen: u32) {
    cx.id = key as u64;
    cx.token = Token(u64::from(gen) << 32 | key as u64);
    inbox
        .current
        .store(((key as u64) << 24 | u64::from(gen)) + 1, Ordering::Relaxed);
}

fn user_data(op: u64, key: usize, gen: u32) -> u64 {
    (op << 56) | (u64::from(gen & GEN_MASK) << 32) | (key as u64 & 0xFFFF_FFFF)
}

/// What a mailbox hands the loop.
pub(super) enum Delivery {
    /// Bytes for the connection at (slot, generation), and the connection whose protocol
    /// delivered them, if one of this loop's did (it is held if the recipient is over its
    /// high-water mark).
    Bytes(usize, u32, Vec<u8>, Option<(usize, u32)>),
    /// Close the connection at (slot, generation) once its output is sent.
    Close(usize, u32),
}

/// A mailbox of a connection served by this driver: deliveries are queued for the loop,
/// which wakes through its eventfd and hands them to the session.
struct UringMailbox {
    inbox: Arc<Inbox>,
    key: usize,
    gen: u32,
    gone: Arc<AtomicBool>,
}

impl UringMailbox {
    fn post(&self, d: Delivery) -> bool {
        if self.gone.load(Ordering::Acquire) || self.inbox.state.load(Ordering::SeqCst) == STOPPED {
            return false;
        }
        let mut q = self.inbox.queue.lock().unwrap_or_else(|p| p.into_inner());
        let first = q.is_empty();
        q.push(d);
        drop(q);
        if first {
            self.inbox.wake();
        }
        true
    }
}

impl Deliver for UringMailbox {
    fn deliver(&self, bytes: &[u8]) -> bool {
        let from = if self.inbox.on_loop_thread() {
            self.inbox.current()
        } else {
            None
        };
        self.post(Delivery::Bytes(self.key, self.gen, bytes.to_vec(), from))
    }

    fn close(&self) {
        self.post(Delivery::Close(self.key, self.gen));
    }
}

/// The listener's fd, for the accepts submitted on it.
fn listener_fd(l: &BlockingListener) -> RawFd {
    match l {
        BlockingListener::Tcp(l) => l.as_raw_fd(),
        BlockingListener::Unix(l, _) => l.as_raw_fd(),
    }
}

enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn fd(&self) -> RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
        }
    }
}

struct Conn {
    session: Session<Box<dyn Protocol + Send>>,
    sock: Sock,
    gen: u32,
    /// A receive is in flight.
    recv: bool,
    /// A send is in flight, from `out`.
    send: bool,
    /// The bytes of the send in flight: the kernel's until it completes.
    out: Vec<u8>,
    /// The connection's own receive buffer, where there is no buffer ring.
    own: Option<Box<[u8]>>,
    /// The deadline a timer entry is queued for, if any.
    armed: Option<Instant>,
    /// The session has ended: the slot goes once the operations in flight have completed.
    closing: bool,
    /// Set when the connection ends: its mailboxes stop taking deliveries.
    gone: Option<Arc<AtomicBool>>,
    /// Connections it delivered to that are over their high-water marks: while any, it
    /// does not read.
    held: u32,
    /// The turn in which its last hold was released. Its protocol's timers wait one turn
    /// more: input that arrived while it was held is received first (the kernel runs a
    /// receive with data waiting as it is submitted), so a timer cannot take the hold for
    /// the peer's silence. The reactor reads at once on a release, to the same end.
    released_in: u64,
}

pub(super) struct Driver {
    // Declared first, so dropped first: the ring goes before the memory it wrote to.
    ring: IoUring,
    bufs: Option<BufRing>,
    buffer_size: u32,
    multishot_accept: bool,
    /// The listening socket (bound as the blocking drivers bind theirs; a Unix one's
    /// file is removed when it is dropped).
    listener: Option<BlockingListener>,
    accept_armed: bool,
    /// At `max_connections`: no accept is submitted until a slot frees.
    accept_full: bool,
    max_connections: usize,
    /// Accepted over the limit (by a multishot accept's last batch): served in order as
    /// slots free, closed unserved if the server stops first.
    waiting: std::collections::VecDeque<Sock>,
    /// After an accept failed for want of fds: when to try again.
    accept_retry: Option<Instant>,
    warned: crate::net::Throttle,
    conns: Slab<Conn>,
    next_gen: u32,
    cx: Context,
    cfg: Arc<SessionConfig>,
    factory: Factory,
    inbox: Arc<Inbox>,
    stats: Arc<UringStats>,
    /// Who holds whom: a recipient over its high-water mark, and the connections that
    /// delivered to it meanwhile (not reading until it drains).
    holds: std::collections::HashMap<(usize, u32), Vec<(usize, u32)>>,
    /// Timer entries: (deadline, slot, generation); stale ones are skipped when popped.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Connections whose receive found the buffer ring empty: submitted again after this
    /// turn's completions have given their buffers back.
    starved: Vec<usize>,
    /// The eventfd's counter, read into by the wake operation in flight.
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// The loop has ended: nothing is submitted again.
    finishing: bool,
    /// Operations in flight that reference memory of ours (receives, sends, the wake read,
    /// the accept): the buffers may be freed only once this is 0.
    in_flight: usize,
    state: u8,
    /// Turns of the loop so far.
    turns: u64,
    grace_until: Option<Instant>,
    /// Completions of one turn, copied out of the queue before they are handled (handling
    /// them submits more).
    cqes: Vec<(u64, i32, u32)>,
}

/// The error for a ring the kernel refused, saying why it may have.
fn unavailable(e: io::Error) -> io::Error {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| s != "0");
    let why = match (e.raw_os_error(), disabled) {
        (_, Some(v)) => format!("kernel.io_uring_disabled is {v}"),
        (Some(libc::ENOSYS), _) => "the kernel has no io_uring (Linux 5.1+)".into(),
        (Some(libc::EPERM), _) => "a seccomp filter or a container's policy forbids it".into(),
        _ => "the kernel refused io_uring_setup".into(),
    };
    io::Error::new(
        match e.kind() {
            io::ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Unsupported,
        },
        format!("io_uring is unavailable here ({why}: {e}); use --driver reactor"),
    )
}

impl Driver {
    pub(super) fn new(
        opts: &UringOptions,
        cfg: Arc<SessionConfig>,
        factory: Factory,
        inbox: Arc<Inbox>,
        stats: Arc<UringStats>,
    ) -> io::Result<Driver> {
        // One thread submits and reaps (SINGLE_ISSUER), so completions can wait to be run
        // until it asks for them (DEFER_TASKRUN, 6.1+) instead of interrupting it as they
        // come (COOP_TASKRUN is the older, weaker form). A kernel without them gets the
        // plain ring.
        let ring = IoUring::builder()
            .setup_cqsize(opts.entries.saturating_mul(4))
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(opts.entries)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(opts.entries.saturating_mul(4))
                    .setup_coop_taskrun()
                    .build(opts.entries)
            })
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(opts.entries.saturating_mul(4))
                    .build(opts.entries)
            })
            .map_err(unavailable)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring here lacks IORING_FEAT_EXT_ARG (Linux 5.11+); use --driver reactor",
            ));
        }
        let bufs = if opts.buffer_ring {
            match BufRing::register(&ring, opts.buffers, opts.buffer_size) {
                Ok(b) => {
                    log::debug!(
                        "uring: a provided-buffer ring of {} × {} bytes",
                        b.entries(),
                        b.size()
                    );
                    Some(b)
                }
                Err(e) => {
                    log::info!(
                        "uring: no provided-buffer ring ({e}): each connection gets a receive \
                         buffer of its own"
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(Driver {
            ring,
            bufs,
            buffer_size: opts.buffer_size,
            multishot_accept: opts.multishot_accept,
            listener: None,
            accept_armed: false,
            accept_full: false,
            max_connections: opts.max_connections.max(1),
            waiting: std::collections::VecDeque::new(),
            accept_retry: None,
            warned: crate::net::Throttle::default(),
            conns: Slab::new(),
            next_gen: 0,
            cx: Context::new(Instant::now()),
            cfg,
            factory,
            inbox,
            stats,
            holds: std::collections::HashMap::new(),
            timers: BinaryHeap::new(),
            starved: Vec::new(),
            wake_buf: Box::new(0),
            wake_armed: false,
            finishing: false,
            in_flight: 0,
            state: RUNNING,
            turns: 0,
            grace_until: None,
            cqes: Vec::with_capacity(256),
        })
    }

    /// Binds the listener; returns its address.
    pub(super) fn listen(&mut self, at: &Endpoint) -> io::Result<Endpoint> {
        let listener = BlockingListener::bind(at)?;
        let addr = listener.local_addr()?;
        self.listener = Some(listener);
        Ok(addr)
    }

    /// Queues `entry`, submitting what is queued first if the queue is full.
    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry built here points at memory that stays valid until its
            // completion: a connection's send buffer and receive buffer live in its slot,
            // which is freed only after its operations completed; the buffer ring and the
            // wake counter live as long as the driver, which waits for every operation.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                log::warn!("uring: submitting a full queue failed: {e}");
            }
        }
    }

    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        let fd = self.inbox.wake.as_raw_fd();
        let buf = (&mut *self.wake_buf as *mut u64).cast::<u8>();
        let e = opcode::Read::new(types::Fd(fd), buf, 8)
            .build()
            .user_data(user_data(OP_WAKE, 0, 0));
        self.push(e);
        self.wake_armed = true;
        self.in_flight += 1;
    }

    fn arm_accept(&mut self) {
        if self.accept_armed || self.accept_full || self.state != RUNNING || self.finishing {
            return;
        }
        let Some(fd) = self.listener.as_ref().map(listener_fd) else {
            return;
        };
        let e = if self.multishot_accept {
            log::trace!("uring: submit multishot accept on the listener (fd {fd})");
            opcode::AcceptMulti::new(types::Fd(fd))
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build()
        } else {
            log::trace!("uring: submit accept on the listener (fd {fd})");
            opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build()
        };
        self.push(e.user_data(user_data(OP_ACCEPT, 0, 0)));
        self.accept_armed = true;
        self.in_flight += 1;
    }

    fn cancel(&mut self, target: u64) {
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data(OP_CANCEL, 0, 0));
        self.push(e);
    }

    /// Serves until stopped and every connection has ended; then waits for the ring's
    /// operations to end, so the buffers can go.
    pub(super) fn run(mut self) {
        let _ = self.inbox.loop_thread.set(std::thread::current().id());
        self.arm_wake();
        self.arm_accept();
        loop {
            if let Err(e) = self.enter() {
                log::error!("uring: io_uring_enter failed: {e}; stopping");
                self.state = STOPPED;
                self.inbox.state.store(STOPPED, Ordering::SeqCst);
                self.close_all(CloseReason::Shutdown);
                break;
            }
            self.cx.now = Instant::now();
            self.turn();
            if self.state != RUNNING && self.conns.is_empty() {
                break;
            }
        }
        self.finish();
    }

    /// Submits what this turn queued and waits for at least one completion, at most until
    /// the earliest deadline.
    fn enter(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let deadline = [
            self.timers.peek().map(|Reverse((t, _, _))| *t),
            self.grace_until,
            self.accept_retry,
        ]
        .into_iter()
        .flatten()
        .min();
        let wait = deadline.map(|t| t.saturating_duration_since(now));
        let queued = self.ring.submission().len();
        log::trace!(
            "uring: io_uring_enter: submitting {queued} ops, waiting for a completion{}",
            match wait {
                Some(w) => format!(" or {w:?}"),
                None => String::new(),
            }
        );
        self.stats.enters.fetch_add(1, Ordering::Relaxed);
        let result = match wait {
            Some(w) => {
                let ts = types::Timespec::from(w);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn turn(&mut self) {
        self.turns += 1;
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        if !cqes.is_empty() {
            log::trace!("uring: {} completions", cqes.len());
            self.stats
                .completions
                .fetch_add(cqes.len() as u64, Ordering::Relaxed);
        }
        for &(ud, res, flags) in &cqes {
            self.complete(ud, res, flags);
        }
        self.cqes = cqes;
        for key in std::mem::take(&mut self.starved) {
            self.step(key);
        }
        self.follow_state();
        self.fire_timers();
        if self.accept_retry.is_some_and(|t| t <= self.cx.now) {
            self.accept_retry = None;
            self.arm_accept();
        }
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        let op = ud >> 56;
        let key = (ud & 0xFFFF_FFFF) as usize;
        match op {
            OP_WAKE => {
                self.wake_armed = false;
                self.in_flight -= 1;
                self.take_deliveries();
                if !self.finishing {
                    self.arm_wake();
                }
            }
            OP_ACCEPT => self.accepted(res, flags),
            OP_RECV => self.received(key, res, flags),
            OP_SEND => self.sent(key, res),
            _ => {}
        }
    }

    fn accepted(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accept_armed = false;
            self.in_flight -= 1;
        }
        if res < 0 {
            let e = io::Error::from_raw_os_error(-res);
            match -res {
                libc::ECANCELED => {}
                libc::EINVAL if self.multishot_accept => {
                    log::info!("uring: no multishot accept here: accepting one at a time");
                    self.multishot_accept = false;
                }
                _ if crate::net::is_resource_exhaustion(&e) => {
                    if let Some(quiet) = self.warned.allow(self.cx.now) {
                        log::warn!(
                            "accept failed: {e}; pausing accepts for 100ms ({quiet} more since \
                             the last warning)"
                        );
                    }
                    self.accept_retry = Some(self.cx.now + Duration::from_millis(100));
                }
                _ => log::debug!("accept: {e}"),
            }
        } else {
            self.open(res);
        }
        if !self.accept_armed && self.accept_retry.is_none() {
            // (Not at the limit: `arm_accept` checks.)
            self.arm_accept();
        }
    }

    /// A connection accepted as `fd`: a session for it, opened.
    fn open(&mut self, fd: RawFd) {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let unix = matches!(self.listener, Some(BlockingListener::Unix(..)));
        // SAFETY: the accept's result is a fresh fd, owned by nothing else.
        let sock = unsafe {
            if unix {
                Sock::Unix(UnixStream::from_raw_fd(fd))
            } else {
                Sock::Tcp(TcpStream::from_raw_fd(fd))
            }
        };
        if self.state != RUNNING {
            // Accepted in the moment the stop began: closed unopened.
            self.stats.closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.conns.len() >= self.max_connections {
            // At the limit: accepts stop (a multishot one is cancelled), and what its last
            // batch accepted waits unserved, as it would in the backlog, for a free slot.
            self.stats.accept_limit_hits.fetch_add(1, Ordering::Relaxed);
            if !self.accept_full {
                log::debug!(
                    "uring: {} connections open, the limit: accepting paused",
                    self.conns.len()
                );
                self.accept_full = true;
                if self.accept_armed {
                    self.cancel(user_data(OP_ACCEPT, 0, 0));
                }
            }
            self.waiting.push_back(sock);
            return;
        }
        self.serve(sock);
    }

    /// Opens a session for an accepted socket.
    fn serve(&mut self, sock: Sock) {
        let fd = sock.fd();
        let (peer, local) = match &sock {
            Sock::Tcp(s) => {
                let _ = s.set_nodelay(true);
                (
                    s.peer_addr().ok().map(Endpoint::Inet),
                    s.local_addr().ok().map(Endpoint::Inet),
                )
            }
            Sock::Unix(s) => (s.peer_addr().ok().map(|a| Endpoint::from_unix(&a)), None),
        };
        let proto = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&*self.factory)) {
            Ok(p) => p,
            Err(payload) => {
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
                self.stats.closed.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "the protocol factory panicked: {}; closing the connection unopened",
                    crate::error::panic_message(&*payload)
                );
                return;
            }
        };
        let gen = self.next_gen & GEN_MASK;
        self.next_gen = self.next_gen.wrapping_add(1);
        let key = self.conns.insert(Conn {
            session: Session::accepted(proto, Arc::clone(&self.cfg), self.cx.now),
            sock,
            gen,
            recv: false,
            send: false,
            out: Vec::new(),
            own: None,
            armed: None,
            closing: false,
            gone: None,
            held: 0,
            released_in: u64::MAX,
        });
        if let Some(p) = &peer {
            log::debug!("accept {p} as conn {key} (fd {fd})");
        }
        let gone: OnceCell<Arc<AtomicBool>> = OnceCell::new();
        {
            let inbox = &self.inbox;
            let make = || {
                Mailbox::new(Arc::new(UringMailbox {
                    inbox: Arc::clone(inbox),
                    key,
                    gen,
                    gone: Arc::clone(gone.get_or_init(Default::default)),
                }))
            };
            let opening = Opening {
                peer: peer.as_ref(),
                local: local.as_ref(),
                listener: None,
                mailbox: Some(&make),
            };
            focus(&mut self.cx, &self.inbox, key, gen);
            self.conns[key].session.open_with(&mut self.cx, &opening);
        }
        self.conns[key].gone = gone.into_inner();
        self.step(key);
    }

    fn received(&mut self, key: usize, res: i32, flags: u32) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.recv = false;
        self.in_flight -= 1;
        let bid = cqueue::buffer_select(flags);
        if !c.closing {
            focus(&mut self.cx, &self.inbox, key, c.gen);
            let cx = &mut self.cx;
            if res > 0 {
                let n = res as usize;
                let bytes = match (bid, &self.bufs, &c.own) {
                    // SAFETY: the buffer came from this completion and is given back below.
                    (Some(b), Some(bufs), _) => unsafe { bufs.filled(b, n) },
                    (_, _, Some(own)) => &own[..n.min(own.len())],
                    _ => &[][..],
                };
                match bid {
                    Some(b) => log::trace!("conn {key}: recv completed: {n} bytes in buffer {b}"),
                    None => log::trace!("conn {key}: recv completed: {n} bytes"),
                }
                c.session.feed(cx, bytes);
            } else if res == 0 {
                log::trace!("conn {key}: recv completed: 0 bytes: end of stream");
                c.session.eof(cx);
            } else if -res == libc::ENOBUFS {
                log::trace!("conn {key}: recv found the buffer ring empty: submitted again");
                self.starved.push(key);
            } else if -res != libc::ECANCELED {
                let e = io::Error::from_raw_os_error(-res);
                log::trace!("conn {key}: recv failed: {e}");
                c.session.fail(cx, CloseReason::Io(e.kind()));
            }
        }
        if let (Some(b), Some(bufs)) = (bid, self.bufs.as_mut()) {
            bufs.give_back(b);
        }
        self.step(key);
    }

    fn sent(&mut self, key: usize, res: i32) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.send = false;
        self.in_flight -= 1;
        if !c.closing {
            focus(&mut self.cx, &self.inbox, key, c.gen);
            if res >= 0 {
                log::trace!(
                    "conn {key}: send completed: the socket took {res} of {} bytes",
                    c.out.len()
                );
                c.session.sent(&mut self.cx, res as usize);
                if !c.session.is_paused() && self.holds.contains_key(&(key, c.gen)) {
                    let gen = c.gen;
                    self.release((key, gen));
                }
            } else if -res != libc::ECANCELED {
                let e = io::Error::from_raw_os_error(-res);
                log::trace!("conn {key}: send failed: {e}");
                c.session.fail(&mut self.cx, CloseReason::Io(e.kind()));
            }
        }
        self.step(key);
    }

    /// After anything happened to connection `key`: carry out what its session asks
    /// (submit a send, send its FIN, ask a streaming protocol for more, submit a receive,
    /// arm its deadline), or, once it has ended, close it.
    fn step(&mut self, key: usize) {
        let use_ring = self.bufs.is_some();
        let size = self.buffer_size;
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if c.closing {
                if !c.recv && !c.send {
                    // Every operation has completed: the socket closes with the slot.
                    self.conns.remove(key);
                    self.slot_freed();
                }
                return;
            }
            let cx = &mut self.cx;
            focus(cx, &self.inbox, key, c.gen);
            if !c.send {
                let bytes = c.session.poll_transmit(cx);
                if !bytes.is_empty() {
                    c.out.clear();
                    c.out.extend_from_slice(bytes);
                    // The session keeps its own copy, counted unsent until the completion
                    // says what the socket took.
                    c.session.sent(cx, 0);
                    let (fd, ptr, len) = (c.sock.fd(), c.out.as_ptr(), c.out.len());
                    log::trace!(
                        "conn {key}: submit send of {len} bytes (the buffer is the kernel's \
                         until it completes)"
                    );
                    let e = opcode::Send::new(types::Fd(fd), ptr, len as u32)
                        .build()
                        .user_data(user_data(OP_SEND, key, c.gen));
                    c.send = true;
                    self.in_flight += 1;
                    self.push(e);
                    continue;
                }
            } else if cx.has_output() {
                // A send is in flight: the fresh output waits in the session behind it.
                c.session.sent(cx, 0);
                continue;
            }
            if let Some(reason) = c.session.poll_close() {
                self.close(key, reason);
                continue;
            }
            if c.session.poll_fin(cx) {
                // SAFETY: shutdown(2) on the connection's own open fd; no memory involved.
                let r = unsafe { libc::shutdown(c.sock.fd(), libc::SHUT_WR) };
                if r == 0 {
                    log::trace!("conn {key}: shutdown(Write): FIN sent");
                    c.session.fin_sent(cx);
                } else {
                    let e = io::Error::last_os_error();
                    c.session.fail(cx, CloseReason::Io(e.kind()));
                }
                continue;
            }
            if c.session.wants_writable(cx) {
                c.session.writable(cx);
                continue;
            }
            if c.session.wants_read() && !c.recv {
                let fd = c.sock.fd();
                let e = if use_ring {
                    log::trace!(
                        "conn {key}: submit recv (the kernel picks a buffer from the ring)"
                    );
                    opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), size)
                        .buf_group(GROUP)
                        .build()
                        .flags(squeue::Flags::BUFFER_SELECT)
                } else {
                    let own = c
                        .own
                        .get_or_insert_with(|| vec![0; size as usize].into_boxed_slice());
                    log::trace!("conn {key}: submit recv into its own buffer");
                    opcode::Recv::new(types::Fd(fd), own.as_mut_ptr(), own.len() as u32).build()
                };
                c.recv = true;
                let e = e.user_data(user_data(OP_RECV, key, c.gen));
                self.in_flight += 1;
                self.push(e);
                continue;
            }
            // Its deadline: a timer entry only if it moved earlier (a later one is found
            // when the earlier entry fires).
            if let Some(t) = c.session.poll_timeout() {
                if c.armed.map_or(true, |a| t < a) {
                    c.armed = Some(t);
                    self.timers.push(Reverse((t, key, c.gen)));
                }
            }
            return;
        }
    }

    /// A slot was freed: a connection that waited for one is served, or accepting
    /// resumes.
    fn slot_freed(&mut self) {
        if self.state != RUNNING {
            return;
        }
        if let Some(sock) = self.waiting.pop_front() {
            self.serve(sock);
        } else if self.accept_full && self.conns.len() < self.max_connections {
            log::debug!("uring: below the connection limit again: accepting");
            self.accept_full = false;
            self.arm_accept();
        }
    }

    /// The session of `key` ended with `reason`: its operations in flight are cancelled,
    /// and the slot goes once they have completed.
    fn close(&mut self, key: usize, reason: CloseReason) {
        let c = &mut self.conns[key];
        c.closing = true;
        if let Some(g) = &c.gone {
            g.store(true, Ordering::Release);
        }
        log::debug!("close conn {key}: {reason}");
        if matches!(reason, CloseReason::Panicked(_)) {
            self.stats.panics.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.closed.fetch_add(1, Ordering::Relaxed);
        let (recv, send, gen) = (c.recv, c.send, c.gen);
        if self.holds.contains_key(&(key, gen)) {
            self.release((key, gen));
        }
        if recv || send {
            log::trace!("conn {key}: cancelling its operations in flight before closing");
        }
        if recv {
            self.cancel(user_data(OP_RECV, key, gen));
        }
        if send {
            self.cancel(user_data(OP_SEND, key, gen));
        }
    }

    /// `from` delivered to `to`, which is over its high-water mark: `from` stops reading
    /// until `to` drains to its low-water mark or closes, so a publisher is paced by its
    /// slowest live subscriber (the reactor's rule, and what a blocking delivery does).
    fn hold(&mut self, from: (usize, u32), to: (usize, u32)) {
        if !self
            .conns
            .get(to.0)
            .is_some_and(|c| c.gen == to.1 && !c.closing)
        {
            return;
        }
        let Some(a) = self
            .conns
            .get_mut(from.0)
            .filter(|a| a.gen == from.1 && !a.closing)
        else {
            return;
        };
        let waiters = self.holds.entry(to).or_default();
        if waiters.contains(&from) {
            return;
        }
        waiters.push(from);
        a.held += 1;
        a.session.hold_input(true);
        log::trace!(
            "conn {}: reading held: conn {} it delivers to is over its high-water mark",
            from.0,
            to.0
        );
    }

    /// `to` drained below its low-water mark, or closed: whoever it held reads again.
    fn release(&mut self, to: (usize, u32)) {
        for from in self.holds.remove(&to).unwrap_or_default() {
            let Some(a) = self.conns.get_mut(from.0).filter(|a| a.gen == from.1) else {
                continue;
            };
            a.held = a.held.saturating_sub(1);
            if a.held == 0 {
                a.released_in = self.turns;
                log::trace!("conn {}: released: conn {} drained or closed", from.0, to.0);
                a.session.hold_input(false);
                self.step(from.0);
            }
        }
    }

    fn take_deliveries(&mut self) {
        let queued =
            std::mem::take(&mut *self.inbox.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for d in queued {
            let (key, gen) = match &d {
                Delivery::Bytes(k, g, ..) | Delivery::Close(k, g) => (*k, *g),
            };
            let Some(c) = self
                .conns
                .get_mut(key)
                .filter(|c| c.gen == gen && !c.closing)
            else {
                continue;
            };
            focus(&mut self.cx, &self.inbox, key, gen);
            let mut hold = None;
            match d {
                Delivery::Bytes(_, _, bytes, from) => {
                    if !c.session.send(&mut self.cx, &bytes) {
                        if let Some(g) = &c.gone {
                            g.store(true, Ordering::Release);
                        }
                    } else if c.session.is_paused() {
                        hold = from.filter(|&f| f != (key, gen));
                    }
                }
                Delivery::Close(..) => c.session.close(&mut self.cx),
            }
            self.step(key);
            if let Some(from) = hold {
                self.hold(from, (key, gen));
            }
        }
    }

    /// Acts on a stop asked for from another thread, and on the end of a grace period.
    fn follow_state(&mut self) {
        let asked = self.inbox.state.load(Ordering::SeqCst);
        if asked != self.state {
            if self.state == RUNNING {
                // No more accepts: the listener goes once its accept is cancelled.
                if self.accept_armed {
                    self.cancel(user_data(OP_ACCEPT, 0, 0));
                }
                self.listener = None;
                self.accept_retry = None;
                let unserved = self.waiting.len() as u64;
                self.waiting.clear();
                self.stats.closed.fetch_add(unserved, Ordering::Relaxed);
            }
            self.state = asked;
            if asked == DRAINING {
                let grace = self
                    .inbox
                    .grace
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or_default();
                self.grace_until = Some(self.cx.now + grace);
                log::info!(
                    "shutdown: stopped accepting; waiting up to {grace:?} for {} connections to \
                     finish",
                    self.conns.len()
                );
                let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                for key in keys {
                    let c = &mut self.conns[key];
                    if !c.closing {
                        focus(&mut self.cx, &self.inbox, key, c.gen);
                        c.session.shutdown(&mut self.cx);
                        self.step(key);
                    }
                }
            } else {
                self.close_all(CloseReason::Shutdown);
            }
        }
        if self.state == DRAINING && self.grace_until.is_some_and(|t| t <= self.cx.now) {
            log::info!(
                "shutdown: grace period over; closing {} connections still open",
                self.conns.len()
            );
            self.grace_until = None;
            self.state = STOPPED;
            self.close_all(CloseReason::Shutdown);
        }
    }

    fn close_all(&mut self, reason: CloseReason) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let c = &mut self.conns[key];
            if !c.closing {
                focus(&mut self.cx, &self.inbox, key, c.gen);
                c.session.fail(&mut self.cx, reason.clone());
                self.step(key);
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = self.cx.now;
        let mut later = Vec::new();
        while let Some(&Reverse((t, key, gen))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if c.gen != gen || c.armed != Some(t) || c.closing {
                continue;
            }
            if c.released_in == self.turns {
                later.push(Reverse((t, key, gen)));
                continue;
            }
            c.armed = None;
            if c.session.poll_timeout().is_some_and(|d| d <= now) {
                focus(&mut self.cx, &self.inbox, key, gen);
                log::trace!("conn {key}: deadline reached");
                c.session.timeout(&mut self.cx);
            }
            self.step(key);
        }
        self.timers.extend(later);
    }

    /// Waits (bounded) for the operations still in flight (the wake read, a cancelled
    /// accept) to end, so that their memory can be freed.
    fn finish(&mut self) {
        self.finishing = true;
        if self.wake_armed {
            self.cancel(user_data(OP_WAKE, 0, 0));
        }
        if self.accept_armed {
            self.cancel(user_data(OP_ACCEPT, 0, 0));
        }
        let until = Instant::now() + Duration::from_secs(2);
        while self.in_flight > 0 && Instant::now() < until {
            let ts = types::Timespec::from(Duration::from_millis(50));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let cqes: Vec<(u64, i32, u32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags()))
                .collect();
            for (ud, res, flags) in cqes {
                self.complete(ud, res, flags);
            }
        }
        log::info!("uring driver stopped");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // The kernel may still write into these: leak them rather than free memory
            // it could touch.
            log::warn!(
                "uring: {} operations did not end; leaking their buffers",
                self.in_flight
            );
            std::mem::forget(self.bufs.take());
            std::mem::forget(std::mem::take(&mut self.wake_buf));
            std::mem::forget(std::mem::take(&mut self.conns));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unavailable;
    use std::io;

    #[test]
    fn a_refused_ring_is_a_clear_error_that_names_the_way_out() {
        for (errno, kind) in [
            (libc::ENOSYS, io::ErrorKind::Unsupported),
            (libc::EPERM, io::ErrorKind::PermissionDenied),
        ] {
            let e = unavailable(io::Error::from_raw_os_error(errno));
            assert_eq!(e.kind(), kind, "{e}");
            let text = e.to_string();
            assert!(text.starts_with("io_uring is unavailable here ("), "{text}");
            assert!(text.ends_with("use --driver reactor"), "{text}");
        }
    }
}
