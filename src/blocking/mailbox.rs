//! Delivery from other threads: a [`Mailbox`](crate::proto::Mailbox) under the blocking
//! drivers writes straight to the connection's socket, under one lock with the
//! connection's own writes, so a delivery never lands inside a message.
//!
//! A blocking connection's thread sits in `read`, so nothing can hand it bytes to send;
//! the delivering thread writes them itself (with a bounded timeout, so a peer that does
//! not read cannot hold it up). What a delivery means for the connection (a close once
//! what is queued is sent, a drop when the peer does not read) is told to its thread
//! through flags it reads when its `read` returns.

use super::socket::BlockingStream;
use crate::session::Deliver;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a [`Mailbox`](crate::proto::Mailbox) delivery may block on a peer that does
/// not read before that peer is dropped, when the session has no
/// [`backlog_timeout`](crate::session::SessionConfig::backlog_timeout) (which is used
/// instead: the blocking twin of the reactor's rule that a recipient stuck over its
/// high-water mark that long is dropped). Meanwhile the delivering thread waits: the
/// sender is paced by its slowest live recipient, under every driver.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection's socket as its mailboxes share it (a second handle, made with `dup`
/// when the protocol first asks for a mailbox), and what they have asked of it.
pub(super) struct Shared {
    pub(super) stream: Box<dyn BlockingStream>,
    /// The write timeout the socket has now. `SO_SNDTIMEO` belongs to the socket, not to
    /// the fd, so each writer sets its own before it writes (only when it differs).
    timeout: Option<Duration>,
    /// `Mailbox::close` was called: close once what is queued has been sent.
    pub(super) close_requested: bool,
    /// A delivery failed (the peer stopped reading), or the connection has ended:
    /// deliveries fail from now on.
    pub(super) gone: bool,
    /// How long one delivery may block.
    delivery_timeout: Duration,
}

impl Shared {
    pub(super) fn new(stream: Box<dyn BlockingStream>, delivery_timeout: Duration) -> Shared {
        Shared {
            stream,
            timeout: None,
            close_requested: false,
            gone: false,
            delivery_timeout,
        }
    }

    /// Sets the socket's write timeout to `t`, unless it is `t` already.
    pub(super) fn set_write_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        if self.timeout != t {
            self.stream.set_write_timeout(t)?;
            self.timeout = t;
        }
        Ok(())
    }
}

/// Locks `shared`, whatever a panicking holder left behind (the socket is still usable).
pub(super) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The blocking side of a [`Mailbox`](crate::proto::Mailbox): another thread writes
/// straight to the socket, under the lock the connection's own writes take.
pub(super) struct StreamMailbox {
    pub(super) shared: Arc<Mutex<Shared>>,
}

impl Deliver for StreamMailbox {
    fn deliver(&self, bytes: &[u8]) -> bool {
        let mut s = lock(&self.shared);
        if s.gone || s.close_requested {
            return false;
        }
        let bound = s.delivery_timeout;
        let written = s
            .set_write_timeout(Some(bound))
            .and_then(|()| s.stream.write_all(bytes));
        match written {
            Ok(()) => true,
            Err(e) => {
                log::debug!("delivery failed ({e}): dropping the connection");
                s.gone = true;
                // Its thread's read (or write) returns and finds `gone`.
                let _ = s.stream.shutdown(Shutdown::Both);
                false
            }
        }
    }

    fn close(&self) {
        let mut s = lock(&self.shared);
        s.close_requested = true;
        // Wakes the connection's blocked read (it returns 0); its writes still work.
        let _ = s.stream.shutdown(Shutdown::Read);
    }
}
