//! The receiving side: one file per connection, stored through a [`Store`].

use super::wire::{hex, parse_header, Parsed, Refusal};
use super::{Store, TempFile, DEFAULT_MAX_SIZE};
use crate::proto::{CloseReason, Out, PeerError, Protocol};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io;

/// The receiving side: stores one file per connection through a [`Store`].
///
/// ```text
///   Header ── FILE <name> <size>\n, name free ──▶ Body ── <size> bytes ──▶ Done (OK sent)
///     │                                            │
///     └── refused ──▶ Done (ERR sent)             └── EOF / close / write error ──▶ Done
///                                                     (ERR sent if possible; temp removed)
/// ```
pub struct FileReceiver<S: Store> {
    store: S,
    max_size: u64,
    state: Recv<S::Temp>,
}

/// Where a receiver is in its one transfer.
enum Recv<T> {
    /// Waiting for the header line; its bytes stay unconsumed until the newline.
    Header,
    /// Writing the body into a temporary file.
    Body(Body<T>),
    /// The reply (`OK` or `ERR`) is written; later input is discarded until the close.
    Done,
}

struct Body<T> {
    name: String,
    size: u64,
    /// Bytes still to come.
    left: u64,
    temp: T,
    hasher: Sha256,
}

impl<T> fmt::Display for Recv<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recv::Header => f.write_str("Header"),
            Recv::Body(b) => write!(f, "Body({} of {} bytes)", b.size - b.left, b.size),
            Recv::Done => f.write_str("Done"),
        }
    }
}

impl<S: Store> FileReceiver<S> {
    /// A receiver for one connection, storing into `store`, with the default size limit.
    pub fn new(store: S) -> FileReceiver<S> {
        FileReceiver {
            store,
            max_size: DEFAULT_MAX_SIZE,
            state: Recv::Header,
        }
    }

    /// The same receiver, refusing files larger than `max_size` bytes.
    pub fn with_max_size(mut self, max_size: u64) -> FileReceiver<S> {
        self.max_size = max_size;
        self
    }

    fn set_state(&mut self, next: Recv<S::Temp>) -> Recv<S::Temp> {
        log::trace!("file recv state={}=>{}", self.state, next);
        std::mem::replace(&mut self.state, next)
    }

    /// A header arrived: start the file, or refuse it.
    fn start(&mut self, name: &str, size: u64, out: &mut Out<'_>) {
        match self.store.create_temp(name) {
            Ok(temp) => {
                log::debug!("file: receiving {name} ({size} bytes)");
                self.set_state(Recv::Body(Body {
                    name: name.to_owned(),
                    size,
                    left: size,
                    temp,
                    hasher: Sha256::new(),
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.refuse(Refusal::Exists, out),
            Err(e) => {
                log::warn!("file: cannot start {name}: {e}");
                self.refuse(Refusal::CannotStore, out);
            }
        }
    }

    /// Writes body bytes; finishes once the last one is in. Consumes all of `bytes`
    /// (those past the announced size are discarded).
    fn body(&mut self, bytes: &[u8], out: &mut Out<'_>) -> usize {
        let Recv::Body(b) = &mut self.state else {
            return bytes.len();
        };
        let take = bytes
            .len()
            .min(usize::try_from(b.left).unwrap_or(usize::MAX));
        if take > 0 {
            if let Err(e) = b.temp.write_all(&bytes[..take]) {
                log::warn!("file: writing {} failed: {e}", b.name);
                self.refuse(Refusal::CannotStore, out);
                return bytes.len();
            }
            b.hasher.update(&bytes[..take]);
            b.left -= take as u64;
        }
        if b.left == 0 {
            self.finish(out);
        }
        bytes.len()
    }

    /// Every byte is in: commit, then say `OK` (or why not).
    fn finish(&mut self, out: &mut Out<'_>) {
        let Recv::Body(b) = self.set_state(Recv::Done) else {
            return;
        };
        let digest = hex(&b.hasher.finalize());
        match b.temp.commit() {
            Ok(()) => {
                log::info!(
                    "file: received {}: {} bytes, sha256 {digest}",
                    b.name,
                    b.size
                );
                out.push(format!("OK {} {digest}\n", b.size).as_bytes());
                out.close();
            }
            Err(e) => {
                let refusal = if e.kind() == io::ErrorKind::AlreadyExists {
                    Refusal::Exists
                } else {
                    log::warn!("file: storing {} failed: {e}", b.name);
                    Refusal::CannotStore
                };
                self.refuse(refusal, out);
            }
        }
    }

    /// Answers `ERR`, discards any file begun, and closes.
    fn refuse(&mut self, refusal: Refusal, out: &mut Out<'_>) {
        if let Recv::Body(b) = self.set_state(Recv::Done) {
            b.temp.abort();
        }
        log::debug!("file: refused: {refusal}");
        out.push(format!("ERR {refusal}\n").as_bytes());
        out.close();
    }
}

impl<S: Store> Protocol for FileReceiver<S> {
    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        match self.state {
            // The header: nothing is consumed until its newline.
            Recv::Header => match parse_header(input, self.max_size) {
                Ok(Parsed::Partial) => Ok(0),
                Ok(Parsed::Complete(h, used)) => {
                    self.start(h.name, h.size, out);
                    // The body may have arrived with the header (and an empty file is
                    // complete at once).
                    let rest = &input[used..];
                    Ok(used + self.body(rest, out))
                }
                Err(refusal) => {
                    self.refuse(refusal, out);
                    Ok(input.len())
                }
            },
            // The body: every byte is written and consumed at once.
            Recv::Body(_) => Ok(self.body(input, out)),
            // Replied: what follows is not ours to store.
            Recv::Done => Ok(input.len()),
        }
    }

    fn handle_eof(&mut self, rest: &[u8], out: &mut Out<'_>) -> Result<(), PeerError> {
        match &self.state {
            // Connected and left without a word: nothing to answer.
            Recv::Header if rest.is_empty() => Ok(()),
            Recv::Header => {
                self.refuse(Refusal::Malformed, out);
                Err(PeerError::new("stream ended inside the file header"))
            }
            Recv::Body(b) => {
                let (got, size) = (b.size - b.left, b.size);
                self.refuse(Refusal::Truncated { got, size }, out);
                Err(PeerError::new(format!(
                    "stream ended after {got} of {size} file bytes"
                )))
            }
            Recv::Done => Ok(()),
        }
    }

    fn handle_shutdown(&mut self, out: &mut Out<'_>) {
        // A transfer under way may finish within the driver's grace period; if it does
        // not, `handle_close` discards it.
        if !matches!(self.state, Recv::Body(_)) {
            out.close();
        }
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        if let Recv::Body(b) = self.set_state(Recv::Done) {
            log::debug!(
                "file: {} interrupted after {} of {} bytes ({reason}): discarded",
                b.name,
                b.size - b.left,
                b.size
            );
            b.temp.abort();
        }
    }
}
