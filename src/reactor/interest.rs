//! What a watched fd is watched for ([`Reactor::watch_fd`](super::Reactor::watch_fd)):
//! sockloop's own type, so mio stays an implementation detail of the core.

use std::ops::BitOr;

/// Readiness to watch an fd for: [`Interest::READABLE`], [`Interest::WRITABLE`], or both
/// (`Interest::READABLE | Interest::WRITABLE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interest {
    readable: bool,
    writable: bool,
}

impl Interest {
    /// Readable (or closed by the peer, or in error).
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
    };
    /// Writable.
    pub const WRITABLE: Interest = Interest {
        readable: false,
        writable: true,
    };

    /// Returns true if and only if this includes readability.
    pub fn is_readable(self) -> bool {
        self.readable
    }

    /// Returns true if and only if this includes writability.
    pub fn is_writable(self) -> bool {
        self.writable
    }
}

impl BitOr for Interest {
    type Output = Interest;

    fn bitor(self, other: Interest) -> Interest {
        Interest {
            readable: self.readable || other.readable,
            writable: self.writable || other.writable,
        }
    }
}

impl From<Interest> for mio::Interest {
    fn from(i: Interest) -> mio::Interest {
        match (i.readable, i.writable) {
            (true, true) => mio::Interest::READABLE | mio::Interest::WRITABLE,
            (false, true) => mio::Interest::WRITABLE,
            // The constructors always set one of the two.
            _ => mio::Interest::READABLE,
        }
    }
}
