//! The millisecond grid a session keeps its times on.
//!
//! A session stores times as whole milliseconds since one process-wide epoch (`u64`, 8
//! bytes) rather than as `Instant`s (16 bytes each): with ten thousand connections every
//! byte of per-connection state counts. Deadlines are rounded *up* onto the grid, so a
//! deadline kept this way is never early; "now" is rounded *down* when checking whether a
//! deadline is due, so a timer that fires at the deadline's instant finds it due.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// No deadline.
pub(crate) const NEVER: u64 = u64::MAX;

/// The origin of the grid: a second before the first time anything asked for it, so an
/// `Instant` taken just before that (by another thread, say) still lies after it.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    })
}

/// `t` in milliseconds since the epoch, rounded up.
pub(crate) fn ceil(t: Instant) -> u64 {
    let nanos = t.saturating_duration_since(epoch()).as_nanos();
    u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(NEVER - 1)
}

/// `t` in whole milliseconds since the epoch, rounded down.
pub(crate) fn floor(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_millis()).unwrap_or(NEVER - 1)
}

/// The instant `ms` milliseconds after the epoch.
pub(crate) fn instant(ms: u64) -> Instant {
    epoch() + Duration::from_millis(ms)
}

/// A duration in whole milliseconds, rounded up.
pub(crate) fn ms_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(NEVER)
}
