//! The cross-thread handle: how other threads hand work to the loop.
//!
//! A [`Handle`] holds a queue and the reactor's [`mio::Waker`]. Posting pushes onto the
//! queue and wakes the poller, but only if no wake-up is already outstanding, so a burst
//! of posts between two turns of the loop costs a single wake-up. The loop takes the whole
//! queue at once under the lock and runs it with the lock released: it never blocks on the
//! queue for longer than a `Vec` swap.

use super::Reactor;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Work posted to the loop: a closure run on the loop's thread with the reactor in hand.
pub type Task = Box<dyn FnOnce(&mut Reactor) + Send>;

pub(crate) enum Command {
    Run(Task),
    Shutdown,
    StopNow,
    /// Bytes for a connection, from its [`crate::proto::Mailbox`], and the connection
    /// whose protocol delivered them, if it was one (a chat member's line to the others).
    Deliver(super::token::Tag, Vec<u8>, Option<super::token::Tag>),
    /// Close a connection after its output, from its mailbox.
    CloseConn(super::token::Tag),
}

pub(crate) struct Shared {
    queue: Mutex<Vec<Command>>,
    waker: mio::Waker,
    /// A wake-up is outstanding: the loop has not yet taken the queue since it was set.
    pending: AtomicBool,
    /// The reactor is gone; posts fail instead of queueing forever.
    closed: AtomicBool,
    /// The thread that last ran the loop, so `Handle::call` can refuse to deadlock on it.
    loop_thread: Mutex<Option<std::thread::ThreadId>>,
    /// Commands were queued from the loop's own thread: no wake-up was sent (the loop is
    /// awake), and the loop takes them at the end of the turn.
    local: AtomicBool,
    /// A turn is running (between `run_once`'s start and end): only then is a command from
    /// the loop's thread sure to be seen without a wake-up.
    in_turn: AtomicBool,
    /// The connection whose protocol the loop is calling now (a token's value), or
    /// `NONE`: deliveries made from the loop's thread are that connection's.
    current: AtomicUsize,
}

/// No connection is being called.
const NONE: usize = usize::MAX;

impl Shared {
    pub fn new(waker: mio::Waker) -> Shared {
        Shared {
            queue: Mutex::new(Vec::new()),
            waker,
            pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            loop_thread: Mutex::new(None),
            local: AtomicBool::new(false),
            in_turn: AtomicBool::new(false),
            current: AtomicUsize::new(NONE),
        }
    }

    /// The loop is about to call (`Some`), or has finished calling (`None`), the protocol
    /// of the connection `tag` names.
    pub fn set_current(&self, tag: Option<super::token::Tag>) {
        let v = tag.map_or(NONE, |t| t.token().0);
        self.current.store(v, Ordering::Relaxed);
    }

    pub fn set_in_turn(&self, on: bool) {
        self.in_turn.store(on, Ordering::SeqCst);
    }

    fn on_loop_thread(&self) -> bool {
        *self.loop_thread.lock().unwrap_or_else(|p| p.into_inner())
            == Some(std::thread::current().id())
    }

    /// Queues a command, waking the loop only if it might be asleep: from the loop's own
    /// thread the command is taken at the end of the current turn, no syscall needed.
    pub fn push(&self, cmd: Command) -> Result<(), Closed> {
        self.push_from(|_| cmd)
    }

    /// [`Shared::push`] for a command that says who queued it: `make` is given the
    /// connection the loop is calling, if the caller is the loop's own thread in a turn
    /// (a delivery made by that connection's protocol), else `None`.
    pub fn push_from(
        &self,
        make: impl FnOnce(Option<super::token::Tag>) -> Command,
    ) -> Result<(), Closed> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Closed);
        }
        // Asked once: it takes a lock.
        let local = self.in_turn.load(Ordering::SeqCst) && self.on_loop_thread();
        let current = self.current.load(Ordering::Relaxed);
        let from =
            (local && current != NONE).then(|| super::token::Tag::from_token(mio::Token(current)));
        {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            // Checked again under the lock that `close` drains under: a command is either
            // refused here or queued before the drain, which drops it (and with it a
            // `call`'s reply sender, so the caller is told instead of waiting forever).
            if self.closed.load(Ordering::SeqCst) {
                return Err(Closed);
            }
            queue.push(make(from));
        }
        if local {
            self.local.store(true, Ordering::SeqCst);
        } else if !self.pending.swap(true, Ordering::SeqCst) {
            // A failed wake-up means the poller itself is gone: the reactor is being
            // dropped, and `closed` will say so to the next caller.
            if let Err(e) = self.waker.wake() {
                log::warn!("waking the reactor failed: {e}");
                return Err(Closed);
            }
        }
        Ok(())
    }

    /// Returns true (and clears the mark) if commands were queued from the loop's thread.
    pub fn take_local_mark(&self) -> bool {
        self.local.swap(false, Ordering::SeqCst)
    }

    /// Returns true if and only if commands queued from the loop's thread wait for a turn
    /// (no wake-up was sent for them, so the loop must not sleep).
    pub fn has_local_work(&self) -> bool {
        self.local.load(Ordering::SeqCst)
    }

    pub fn set_loop_thread(&self) {
        let me = std::thread::current().id();
        let mut t = self.loop_thread.lock().unwrap_or_else(|p| p.into_inner());
        if *t != Some(me) {
            *t = Some(me);
        }
    }

    /// Takes everything queued. Clears `pending` first: a post racing with us either lands
    /// in this batch or sees `pending == false` and wakes the loop again.
    pub fn take(&self, into: &mut Vec<Command>) {
        self.pending.store(false, Ordering::SeqCst);
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *queue, into);
    }

    /// The reactor has stopped for good: refuse commands from now on, and drop those
    /// queued (unrun), so no task runs and no `call` waits after the stop.
    pub fn close(&self) {
        let unrun = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            self.closed.store(true, Ordering::SeqCst);
            std::mem::take(&mut *queue)
        };
        if !unrun.is_empty() {
            log::debug!(
                "reactor stopped: {} queued commands dropped unrun",
                unrun.len()
            );
        }
        // Dropped here, outside the lock: a task's captures may post (and be refused).
        drop(unrun);
    }
}

/// The reactor has stopped (or been dropped), so the command was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Why [`Handle::call`] returned without a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// The reactor stopped (or was dropped) before it ran the function; it never will.
    Stopped,
    /// Called from the loop's own thread, where waiting for the loop would deadlock: use
    /// [`Handle::post`] there, or act on the `&mut Reactor` you were given.
    OnLoopThread,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CallError::Stopped => "the reactor has stopped",
            CallError::OnLoopThread => {
                "Handle::call from the loop's own thread would deadlock (use post)"
            }
        })
    }
}

impl std::error::Error for CallError {}

impl From<Closed> for CallError {
    fn from(_: Closed) -> CallError {
        CallError::Stopped
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the reactor has stopped")
    }
}

impl std::error::Error for Closed {}

/// A `Clone + Send` handle to a [`Reactor`], usable from any thread.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    /// Runs `task` on the loop's thread, during its next turn.
    ///
    /// Tasks from one thread run in the order they were posted. Returns [`Closed`] if the
    /// reactor has been dropped.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the reactor has stopped or been dropped: the task is dropped unrun.
    pub fn post<F>(&self, task: F) -> Result<(), Closed>
    where
        F: FnOnce(&mut Reactor) + Send + 'static,
    {
        self.send(Command::Run(Box::new(task)))
    }

    /// Runs `f` on the loop's thread and waits for its result.
    ///
    /// # Errors
    ///
    /// [`CallError::Stopped`] if the reactor has stopped, or stops before running `f`
    /// (it never waits on a loop that will not run again: the queue is dropped at the
    /// stop); [`CallError::OnLoopThread`] if called from the loop's own thread, where
    /// waiting would deadlock. If `f` panics, the loop catches the panic (see the panic
    /// policy on [`Reactor`]) and this returns `Stopped` as well: no result will come.
    ///
    /// ```
    /// use sockloop::reactor::Reactor;
    ///
    /// let mut reactor = Reactor::new()?;
    /// let handle = reactor.handle();
    /// let asker = std::thread::spawn(move || handle.call(|r| r.stats().accepted));
    /// // Serve turns until the other thread has its answer.
    /// while !asker.is_finished() {
    ///     reactor.run_once(Some(std::time::Duration::from_millis(10)))?;
    /// }
    /// assert_eq!(asker.join().unwrap(), Ok(0));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn call<R, F>(&self, f: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Reactor) -> R + Send + 'static,
    {
        if self.shared.on_loop_thread() {
            return Err(CallError::OnLoopThread);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.post(move |r| {
            let _ = tx.send(f(r));
        })?;
        // If the task is dropped unrun (the reactor stopped) or panics, the sender goes
        // with it and this wakes.
        rx.recv().map_err(|_| CallError::Stopped)
    }

    /// Asks for a graceful shutdown ([`Reactor::shutdown`]): listeners close, connections
    /// finish within the grace period, then [`Reactor::run`] returns. Asking again while
    /// the loop is draining stops it at once.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the reactor has stopped or been dropped.
    pub fn shutdown(&self) -> Result<(), Closed> {
        self.send(Command::Shutdown)
    }

    /// Asks the loop to close everything now and return ([`Reactor::stop_now`]).
    ///
    /// # Errors
    ///
    /// [`Closed`] if the reactor has stopped or been dropped.
    pub fn stop_now(&self) -> Result<(), Closed> {
        self.send(Command::StopNow)
    }

    fn send(&self, cmd: Command) -> Result<(), Closed> {
        self.shared.push(cmd)
    }
}

/// The reactor's side of a [`crate::proto::Mailbox`]: deliveries become commands on the
/// handle's queue, applied on the loop's thread.
pub(crate) struct ConnMailbox {
    pub shared: Arc<Shared>,
    pub tag: super::token::Tag,
    /// Set by the loop when the connection closes.
    pub gone: Arc<AtomicBool>,
}

impl crate::session::Deliver for ConnMailbox {
    fn deliver(&self, bytes: &[u8]) -> bool {
        // A delivery racing with the close may still say true; the loop then drops it
        // (the token's generation no longer matches), as it would any late command.
        if self.gone.load(Ordering::Acquire) {
            return false;
        }
        let tag = self.tag;
        self.shared
            .push_from(|from| Command::Deliver(tag, bytes.to_vec(), from))
            .is_ok()
    }

    fn close(&self) {
        let _ = self.shared.push(Command::CloseConn(self.tag));
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}
