//! Output buffering for non-blocking writes.
//!
//! A non-blocking `write` may take fewer bytes than it was offered (a *partial write*)
//! or none at all (`WouldBlock`): the kernel's send buffer for that socket is full because
//! the peer reads slower than we write. That is normal, not an error. What the socket
//! refused stays here, in [`OutBuf`], until the poller says the socket is writable again.
//!
//! [`write_nb`] is the one loop in the crate that writes until `WouldBlock`, and
//! [`OutBuf`] the one place unsent bytes live. The read side needs no buffer type: a driver
//! reads into one buffer of its own and the connection core ([`crate::session`]) keeps only
//! the bytes its protocol has not consumed yet.

use std::io::{self, Write};

/// Writes as much of `bytes` as the socket takes without blocking.
///
/// Returns how many bytes were written: all of them, or fewer when the socket reported
/// `WouldBlock` (then the caller keeps the rest and waits for WRITABLE). `Interrupted` is
/// retried; any other error is returned (a reset peer gives `ConnectionReset` or
/// `BrokenPipe`; std sends with `MSG_NOSIGNAL`, so no SIGPIPE is raised).
///
/// # Errors
///
/// The sink's error, other than `WouldBlock` (which ends the loop) and `Interrupted`
/// (which retries).
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
/// every partial write; the memory is released entirely once it drains: most
/// connections, most of the time, have nothing waiting, and the common case is a burst of
/// output and then a long idle period. (The connection core keeps its `OutBuf` behind one
/// pointer with its other rarely-used state, so an idle connection pays nothing for it.)
#[derive(Debug, Default)]
pub struct OutBuf {
    bytes: Vec<u8>,
    start: usize,
}

impl OutBuf {
    /// An empty buffer; allocates nothing until bytes are queued.
    pub const fn new() -> OutBuf {
        OutBuf {
            bytes: Vec::new(),
            start: 0,
        }
    }

    /// Bytes waiting to be sent.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Returns true if and only if nothing is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The unsent bytes, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Queues `more` behind what is already waiting.
    pub fn extend(&mut self, more: &[u8]) {
        if more.is_empty() {
            return;
        }
        // Compact before growing when most of the buffer is already sent, so a slow
        // reader's buffer does not creep upward by its sent prefix.
        if self.start > 0 && self.start >= self.bytes.len() / 2 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.extend_from_slice(more);
    }

    /// Forgets the first `n` bytes (the socket took them); frees the memory once nothing
    /// is left.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.bytes.len());
        if self.start == self.bytes.len() {
            *self = OutBuf::new();
        }
    }

    /// Sends what the socket will take now. Returns the number of bytes written; afterwards
    /// the buffer holds exactly what the socket refused.
    ///
    /// # Errors
    ///
    /// As [`write_nb`]: the sink's error other than `WouldBlock`.
    pub fn flush_to<W: Write>(&mut self, sink: &mut W) -> io::Result<usize> {
        if self.is_empty() {
            return Ok(0);
        }
        let n = write_nb(sink, self.as_slice())?;
        self.consume(n);
        Ok(n)
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
        assert_eq!(buf.bytes.capacity(), 0, "a drained buffer frees its memory");
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
