//! Delivery from other threads: a [`Mailbox`] under the blocking drivers writes straight
//! to the connection's socket, under one lock with the connection's own writes.

use super::socket::BlockingStream;
use crate::proto::Deliver;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a [`Mailbox`](crate::proto::Mailbox) delivery may block on a peer that does not read before that
/// peer is dropped: a slow reader must not hold up the connection delivering to it.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The blocking side of a [`Mailbox`]: another thread writes straight to the socket,
/// under the same lock as the connection's own writes so messages never interleave.
pub(super) struct StreamMailbox {
    pub(super) writer: Arc<Mutex<Box<dyn BlockingStream>>>,
}

impl Deliver for StreamMailbox {
    fn deliver(&self, bytes: &[u8]) -> bool {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        match w.write_all(bytes) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("delivery failed ({e}): dropping the connection");
                let _ = w.shutdown(Shutdown::Both);
                false
            }
        }
    }

    fn close(&self) {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        // Our blocking read then returns 0 and the connection ends.
        let _ = w.shutdown(Shutdown::Both);
    }
}

/// Where a connection's own output goes: straight to the socket, or, once a mailbox
/// exists, through the lock it shares with deliveries from other threads.
pub(super) struct Writer {
    pub(super) shared: std::cell::OnceCell<Arc<Mutex<Box<dyn BlockingStream>>>>,
}

impl Writer {
    pub(super) fn write<S: BlockingStream + ?Sized>(
        &self,
        stream: &mut S,
        bytes: &[u8],
    ) -> io::Result<usize> {
        match self.shared.get() {
            Some(w) => w.lock().unwrap_or_else(|p| p.into_inner()).write(bytes),
            None => stream.write(bytes),
        }
    }
}
