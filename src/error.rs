//! Errors sorted by who is to blame.
//!
//! - [`PeerError`]: the peer broke the protocol (a malformed message, input over a limit).
//!   The driver logs it and closes that one connection; nothing else is affected.
//! - [`std::io::Error`]: the operating system said no (a reset, a full fd table). Also
//!   confined to one connection, except for errors of the poller itself.
//! - Usage errors (a bad address on the command line) are reported by the CLI before any
//!   socket exists, and never reach the drivers.
//! - Panics, the protocol's own bugs: caught where the driver calls into code it does
//!   not own, and confined to what panicked (see [`CloseReason::Panicked`]).
//!
//! [`CloseReason::Panicked`]: crate::proto::CloseReason::Panicked

use std::any::Any;
use std::borrow::Cow;
use std::fmt;

/// A caught panic's message: its payload if that is a string (as `panic!` makes it).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|m| m.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_string())
}

/// The peer sent something the protocol cannot accept. The connection that sent it is
/// closed, after any output already produced (an error reply, say) has been flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerError {
    reason: Cow<'static, str>,
}

impl PeerError {
    /// A peer error with a short human-readable reason, logged when the connection closes.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> PeerError {
        PeerError {
            reason: reason.into(),
        }
    }

    /// The reason given when the error was made.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer error: {}", self.reason)
    }
}

impl std::error::Error for PeerError {}
