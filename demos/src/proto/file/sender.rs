//! The sending side: one file per outgoing connection, and the [`Outcome`] it reports.

use super::wire::{check_name, hex, NameError};
use super::{CHUNK, MAX_REPLY};
use crate::proto::{CloseReason, Out, PeerError, Protocol};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

/// A file the receiver confirmed: same size, same digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The name it was sent under.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, in lowercase hex.
    pub sha256: String,
}

/// Why a file was not sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The receiver answered `ERR <reason>`.
    Refused(String),
    /// The receiver stored something other than what was sent.
    Mismatch {
        /// Bytes sent.
        sent_size: u64,
        /// SHA-256 of the bytes sent.
        sent_sha256: String,
        /// Bytes the receiver says it stored.
        stored_size: u64,
        /// SHA-256 the receiver computed.
        stored_sha256: String,
    },
    /// The reply was neither `OK <size> <sha256>` nor `ERR <reason>`, or came too early.
    BadReply(String),
    /// Reading the file failed, or it ended before its announced size.
    Read(String),
    /// The connection ended before a reply arrived.
    Disconnected(CloseReason),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Refused(why) => write!(f, "the receiver refused the file: {why}"),
            SendError::Mismatch {
                sent_size,
                sent_sha256,
                stored_size,
                stored_sha256,
            } => write!(
                f,
                "the receiver stored {stored_size} bytes with sha256 {stored_sha256}, \
                 but {sent_size} bytes with sha256 {sent_sha256} were sent"
            ),
            SendError::BadReply(what) => write!(f, "unexpected reply: {what}"),
            SendError::Read(what) => write!(f, "reading the file failed: {what}"),
            SendError::Disconnected(reason) => {
                write!(f, "the connection ended before a reply ({reason})")
            }
        }
    }
}

impl std::error::Error for SendError {}

/// Where a [`FileSender`] records how its transfer ended, for the caller to read after
/// the driver is done with the machine. Clones share the record.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    inner: Arc<Mutex<Option<Result<Sent, SendError>>>>,
}

impl Outcome {
    /// How the transfer ended, or `None` while it is still under way.
    pub fn get(&self) -> Option<Result<Sent, SendError>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records `result` unless an earlier one was recorded (the first cause wins).
    fn set(&self, result: Result<Sent, SendError>) {
        let mut slot = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            match &result {
                Ok(s) => log::debug!(
                    "file: sent {}: {} bytes, sha256 {}",
                    s.name,
                    s.size,
                    s.sha256
                ),
                Err(e) => log::debug!("file: not sent: {e}"),
            }
            *slot = Some(result);
        }
    }
}

/// Where a sender is in its one transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sending {
    /// Not connected yet.
    Connecting,
    /// The header is out; the body goes out a chunk per `handle_writable`.
    Streaming,
    /// Every byte is out; waiting for `OK` or `ERR`.
    AwaitingReply,
    /// The outcome is recorded; nothing more is sent.
    Done,
}

impl fmt::Display for Sending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The sending side: streams one file from an injected reader and checks the reply.
///
/// ```text
///   Connecting ── open: header ──▶ Streaming ── last chunk ──▶ AwaitingReply ── OK/ERR ──▶ Done
///                 (empty file: straight to AwaitingReply)  │                 │
///                       ERR early, read error, close ──────┴─────────────────┴──▶ Done
/// ```
///
/// How it ended is recorded in its [`Outcome`] (take one with [`FileSender::outcome`]
/// before handing the machine to a driver).
///
/// The reactor reads while it streams, so a receiver that refuses early (`ERR exists`)
/// stops the stream at once. The blocking driver reads only once it has written the
/// whole file: there an early refusal is seen after that, or, if the receiver has closed
/// meanwhile, as a failed write ([`SendError::Disconnected`]).
pub struct FileSender<R> {
    name: String,
    size: u64,
    reader: R,
    state: Sending,
    /// Bytes handed to the driver so far.
    sent: u64,
    hasher: Sha256,
    /// One chunk, allocated when the first is read.
    buf: Vec<u8>,
    outcome: Outcome,
}

impl<R: Read> FileSender<R> {
    /// A sender of `size` bytes read from `reader`, named `name` at the receiver.
    /// Errors if the receiver would refuse the name.
    pub fn new(name: &str, size: u64, reader: R) -> Result<FileSender<R>, NameError> {
        check_name(name.as_bytes())?;
        Ok(FileSender {
            name: name.to_owned(),
            size,
            reader,
            state: Sending::Connecting,
            sent: 0,
            hasher: Sha256::new(),
            buf: Vec::new(),
            outcome: Outcome::default(),
        })
    }

    /// A handle to this transfer's outcome.
    pub fn outcome(&self) -> Outcome {
        self.outcome.clone()
    }

    fn set_state(&mut self, next: Sending) {
        log::trace!("file send state={}=>{}", self.state, next);
        self.state = next;
    }

    fn finish(&mut self, result: Result<Sent, SendError>) {
        self.set_state(Sending::Done);
        self.outcome.set(result);
    }

    /// What a complete reply line means.
    fn judge(&self, line: &[u8]) -> Result<Sent, SendError> {
        let text = String::from_utf8_lossy(line);
        if text == "ERR" {
            return Err(SendError::Refused(String::new()));
        }
        if let Some(why) = text.strip_prefix("ERR ") {
            return Err(SendError::Refused(why.to_owned()));
        }
        let bad = || SendError::BadReply(text.chars().take(100).collect());
        let fields = text.strip_prefix("OK ").ok_or_else(bad)?;
        let (size, sha256) = fields.split_once(' ').ok_or_else(bad)?;
        let stored_size: u64 = size.parse().map_err(|_| bad())?;
        if self.state != Sending::AwaitingReply {
            return Err(SendError::BadReply(format!(
                "OK after {} of {} bytes were sent",
                self.sent, self.size
            )));
        }
        let sent_sha256 = hex(&self.hasher.clone().finalize());
        if stored_size != self.size || !sha256.eq_ignore_ascii_case(&sent_sha256) {
            return Err(SendError::Mismatch {
                sent_size: self.size,
                sent_sha256,
                stored_size,
                stored_sha256: sha256.to_owned(),
            });
        }
        Ok(Sent {
            name: self.name.clone(),
            size: self.size,
            sha256: sent_sha256,
        })
    }
}

impl<R: Read> Protocol for FileSender<R> {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        out.push(format!("FILE {} {}\n", self.name, self.size).as_bytes());
        if self.size == 0 {
            self.set_state(Sending::AwaitingReply);
        } else {
            self.set_state(Sending::Streaming);
            out.want_writable();
        }
    }

    fn handle_writable(&mut self, out: &mut Out<'_>) {
        if self.state != Sending::Streaming {
            return;
        }
        let want = usize::try_from(self.size - self.sent)
            .unwrap_or(usize::MAX)
            .min(CHUNK);
        if self.buf.len() < CHUNK {
            self.buf = vec![0; CHUNK];
        }
        let n = loop {
            match self.reader.read(&mut self.buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.finish(Err(SendError::Read(e.to_string())));
                    // The receiver sees the stream end early and discards what it has.
                    out.abort();
                    return;
                }
            }
        };
        if n == 0 {
            self.finish(Err(SendError::Read(format!(
                "the file ended after {} of {} bytes",
                self.sent, self.size
            ))));
            out.abort();
            return;
        }
        self.hasher.update(&self.buf[..n]);
        out.push(&self.buf[..n]);
        self.sent += n as u64;
        if self.sent == self.size {
            // The chunk buffer is not needed any more.
            self.buf = Vec::new();
            self.set_state(Sending::AwaitingReply);
        } else {
            out.want_writable();
        }
    }

    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        if self.state == Sending::Done {
            return Ok(input.len());
        }
        let Some(nl) = input.iter().position(|&b| b == b'\n') else {
            if input.len() >= MAX_REPLY {
                self.finish(Err(SendError::BadReply(format!(
                    "no newline within {MAX_REPLY} bytes"
                ))));
                return Err(PeerError::new("reply line too long"));
            }
            return Ok(0);
        };
        let line = &input[..nl];
        let result = self.judge(line.strip_suffix(b"\r").unwrap_or(line));
        // A reply, even an early ERR, ends the transfer: no more chunks.
        self.finish(result);
        out.close();
        Ok(input.len())
    }

    fn handle_eof(&mut self, rest: &[u8], _out: &mut Out<'_>) -> Result<(), PeerError> {
        if self.state == Sending::Done {
            return Ok(());
        }
        if rest.is_empty() {
            self.finish(Err(SendError::Disconnected(CloseReason::PeerClosed)));
            Ok(())
        } else {
            let partial = String::from_utf8_lossy(rest).chars().take(100).collect();
            self.finish(Err(SendError::BadReply(partial)));
            Err(PeerError::new("stream ended inside the reply"))
        }
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        if self.state != Sending::Done {
            self.finish(Err(SendError::Disconnected(reason.clone())));
        }
    }
}
