//! The cross-thread handle: how other threads hand work to the loop.
//!
//! A [`Handle`] holds a queue and the reactor's [`mio::Waker`]. Posting pushes onto the
//! queue and wakes the poller, but only if no wake-up is already outstanding, so a burst
//! of posts between two turns of the loop costs a single wake-up. The loop takes the whole
//! queue at once under the lock and runs it with the lock released: it never blocks on the
//! queue for longer than a `Vec` swap.

use super::Reactor;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Work posted to the loop: a closure run on the loop's thread with the reactor in hand.
pub type Task = Box<dyn FnOnce(&mut Reactor) + Send>;

pub(crate) enum Command {
    Run(Task),
    Shutdown,
    StopNow,
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
}

impl Shared {
    pub fn new(waker: mio::Waker) -> Shared {
        Shared {
            queue: Mutex::new(Vec::new()),
            waker,
            pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            loop_thread: Mutex::new(None),
        }
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

    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// The reactor is no longer running, so the command was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

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
    pub fn post<F>(&self, task: F) -> Result<(), Closed>
    where
        F: FnOnce(&mut Reactor) + Send + 'static,
    {
        self.send(Command::Run(Box::new(task)))
    }

    /// Runs `f` on the loop's thread and waits for its result.
    ///
    /// Returns [`Closed`] if the reactor stops before running it, or if called from the
    /// loop's own thread (where waiting would deadlock: use [`Handle::post`] there).
    pub fn call<R, F>(&self, f: F) -> Result<R, Closed>
    where
        R: Send + 'static,
        F: FnOnce(&mut Reactor) -> R + Send + 'static,
    {
        let on_loop = *self
            .shared
            .loop_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            == Some(std::thread::current().id());
        if on_loop {
            return Err(Closed);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.post(move |r| {
            let _ = tx.send(f(r));
        })?;
        // If the reactor is dropped with the task unrun, the sender is dropped too.
        rx.recv().map_err(|_| Closed)
    }

    /// Asks for a graceful shutdown ([`Reactor::shutdown`]): listeners close, connections
    /// finish within the grace period, then [`Reactor::run`] returns. Asking again while
    /// the loop is draining stops it at once.
    pub fn shutdown(&self) -> Result<(), Closed> {
        self.send(Command::Shutdown)
    }

    /// Asks the loop to close everything now and return ([`Reactor::stop_now`]).
    pub fn stop_now(&self) -> Result<(), Closed> {
        self.send(Command::StopNow)
    }

    fn send(&self, cmd: Command) -> Result<(), Closed> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Closed);
        }
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cmd);
        if !self.shared.pending.swap(true, Ordering::SeqCst) {
            // A failed wake-up means the poller itself is gone: the reactor is being
            // dropped, and `closed` will say so to the next caller.
            if let Err(e) = self.shared.waker.wake() {
                log::warn!("waking the reactor failed: {e}");
                return Err(Closed);
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}
