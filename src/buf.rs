//! Output buffering for non-blocking writes.
//!
//! A non-blocking `write` may take fewer bytes than it was offered (a *partial write*)
//! or none at all (`WouldBlock`): the kernel's send buffer for that socket is full because
//! the peer reads slower than we write. That is normal, not an error. What the socket
//! refused stays here, in [`OutBuf`], until the poller says the socket is writable again.
//!
//! [`write_nb`] is the one loop in the crate that writes until `WouldBlock`, and
//! [`OutBuf`] the one place unsent bytes live. The read side needs no buffer type: the
//! reactor reads into one buffer owned by the loop and keeps per connection only the bytes
//! its protocol has not consumed yet.

use std::io::{self, Write};

/// Writes as much of `bytes` as the socket takes without blocking.
///
/// Returns how many bytes were written: all of them, or fewer when the socket reported
/// `WouldBlock` (then the caller keeps the rest and waits for WRITABLE). `Interrupted` is
/// retried; any other error is returned (a reset peer gives `ConnectionReset` or
/// `BrokenPipe`; std sends with `MSG_NOSIGNAL`, so no SIGPIPE is raised).
pub fn write_nb<W: Write>(sink: &mut W, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match sink.write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Bytes accepted from a protocol but not yet taken by the socket.
///
/// Sent bytes are skipped by moving a start offset rather than shifting the buffer on
/// every partial write; the buffer is released entirely once it drains. An empty
/// `OutBuf` is one null pointer (8 bytes) and owns no memory: most connections, most of
/// the time, have nothing waiting, and every byte of per-connection state counts when
/// there are ten thousand of them.
#[derive(Debug, Default)]
pub struct OutBuf {
    pending: Option<Box<Pending>>,
}

#[derive(Debug)]
struct Pending {
    bytes: Vec<u8>,
    start: usize,
    /// The owner's time stamp for this backlog (the reactor's write-stall clock): kept
    /// here because it means something only while output waits.
    stamp: u64,
}

impl OutBuf {
    /// An empty buffer; allocates nothing until bytes are queued.
    pub const fn new() -> OutBuf {
        OutBuf { pending: None }
    }

    /// Bytes waiting to be sent.
    pub fn len(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.bytes.len() - p.start)
    }

    /// Returns true if and only if nothing is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.pending.is_none()
    }

    /// The unsent bytes, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        self.pending.as_ref().map_or(&[], |p| &p.bytes[p.start..])
    }

    /// Queues `more` behind what is already waiting.
    pub fn extend(&mut self, more: &[u8]) {
        if more.is_empty() {
            return;
        }
        let p = self.pending.get_or_insert_with(|| {
            Box::new(Pending {
                bytes: Vec::new(),
                start: 0,
                stamp: 0,
            })
        });
        // Compact before growing when most of the buffer is already sent, so a slow
        // reader's buffer does not creep upward by its sent prefix.
        if p.start > 0 && p.start >= p.bytes.len() / 2 {
            p.bytes.drain(..p.start);
            p.start = 0;
        }
        p.bytes.extend_from_slice(more);
    }

    /// Sends what the socket will take now. Returns the number of bytes written; afterwards
    /// the buffer holds exactly what the socket refused.
    pub fn flush_to<W: Write>(&mut self, sink: &mut W) -> io::Result<usize> {
        let Some(p) = self.pending.as_mut() else {
            return Ok(0);
        };
        let n = write_nb(sink, &p.bytes[p.start..])?;
        p.start += n;
        if p.start == p.bytes.len() {
            // Free the memory, not just the contents: the common case is a burst of output
            // and then a long idle period.
            self.pending = None;
        }
        Ok(n)
    }

    /// Forgets everything queued (a connection being aborted).
    pub fn clear(&mut self) {
        self.pending = None;
    }

    /// The stamp set with [`OutBuf::set_stamp`] since bytes started waiting; 0 if none
    /// was set, and meaningless (0) while empty.
    pub fn stamp(&self) -> u64 {
        self.pending.as_ref().map_or(0, |p| p.stamp)
    }

    /// Records a time stamp of the owner's for the bytes waiting (ignored while empty).
    pub fn set_stamp(&mut self, stamp: u64) {
        if let Some(p) = self.pending.as_mut() {
            p.stamp = stamp;
        }
    }
}

/// Bytes read but not yet consumed by a protocol (an unfinished message). Like
/// [`OutBuf`], a null pointer when empty, which is nearly always.
#[derive(Debug, Default)]
pub struct InBuf {
    // Boxed on purpose: `None` is 8 bytes where an empty `Vec` is 24, and this sits in
    // every connection; the extra allocation happens only for a partial message.
    #[allow(clippy::box_collection)]
    bytes: Option<Box<Vec<u8>>>,
}

impl InBuf {
    /// An empty buffer; allocates nothing until bytes are kept.
    pub const fn new() -> InBuf {
        InBuf { bytes: None }
    }

    /// The kept bytes, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes.as_deref().map_or(&[], |v| v.as_slice())
    }

    /// How many bytes are kept.
    pub fn len(&self) -> usize {
        self.bytes.as_ref().map_or(0, |v| v.len())
    }

    /// Returns true if and only if no bytes are kept.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_none()
    }

    /// Keeps `more` after what is kept already.
    pub fn extend(&mut self, more: &[u8]) {
        if !more.is_empty() {
            self.bytes
                .get_or_insert_with(Default::default)
                .extend_from_slice(more);
        }
    }

    /// Drops the first `n` bytes (those the protocol consumed); frees the memory when
    /// nothing is left.
    pub fn consume(&mut self, n: usize) {
        if let Some(v) = self.bytes.as_mut() {
            v.drain(..n.min(v.len()));
            if v.is_empty() {
                self.bytes = None;
            }
        }
    }

    /// Forgets everything kept.
    pub fn clear(&mut self) {
        self.bytes = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most `room` bytes, then reports WouldBlock.
    struct Tight {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Tight {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room).min(3);
            self.room -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_the_rest_in_order() {
        let mut buf = OutBuf::new();
        buf.extend(b"0123456789");
        let mut sink = Tight {
            room: 4,
            got: Vec::new(),
        };
        assert_eq!(buf.flush_to(&mut sink).unwrap(), 4);
        assert_eq!(buf.as_slice(), b"456789");
        buf.extend(b"ab");
        sink.room = 100;
        assert_eq!(buf.flush_to(&mut sink).unwrap(), 8);
        assert_eq!(sink.got, b"0123456789ab");
        assert!(buf.is_empty());
        assert!(buf.pending.is_none(), "a drained buffer frees its memory");
        assert_eq!(
            std::mem::size_of::<OutBuf>(),
            8,
            "an empty buffer is one pointer"
        );

        let mut input = InBuf::new();
        input.extend(b"partial");
        input.consume(3);
        assert_eq!(input.as_slice(), b"tial");
        input.consume(4);
        assert!(input.is_empty() && input.bytes.is_none());
    }

    #[test]
    fn errors_other_than_would_block_surface() {
        struct Reset;
        impl Write for Reset {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::ConnectionReset.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = write_nb(&mut Reset, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }
}
