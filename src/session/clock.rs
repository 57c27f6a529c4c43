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
///
/// In `u64` and `u32` arithmetic: `Duration::as_nanos` is a `u128`, whose division
/// (`__udivti3`) showed in the profile of every read and write.
pub(crate) fn ceil(t: Instant) -> u64 {
    let d = t.saturating_duration_since(epoch());
    let sub = d.subsec_nanos().div_ceil(1_000_000);
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(sub))
        .min(NEVER - 1)
}

/// `t` in whole milliseconds since the epoch, rounded down.
pub(crate) fn floor(t: Instant) -> u64 {
    let d = t.saturating_duration_since(epoch());
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
        .min(NEVER - 1)
}

/// The instant `ms` milliseconds after the epoch.
pub(crate) fn instant(ms: u64) -> Instant {
    epoch() + Duration::from_millis(ms)
}

/// A duration in whole milliseconds, rounded up.
pub(crate) fn ms_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(NEVER)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The integer arithmetic agrees with the exact `u128` formula, across second
    /// boundaries and on exact milliseconds.
    #[test]
    fn ceil_and_floor_agree_with_nanoseconds() {
        let e = epoch();
        for nanos in [
            0u64,
            1,
            999_999,
            1_000_000,
            1_000_001,
            999_999_999,
            1_000_000_000,
            1_234_567_891,
        ] {
            let t = e + Duration::from_nanos(nanos);
            let exact = u128::from(nanos);
            assert_eq!(
                u128::from(ceil(t)),
                exact.div_ceil(1_000_000),
                "ceil at {nanos} ns"
            );
            assert_eq!(
                u128::from(floor(t)),
                exact / 1_000_000,
                "floor at {nanos} ns"
            );
        }
        assert_eq!(ceil(e), 0);
        assert_eq!(
            instant(ceil(e + Duration::from_micros(1500))),
            e + Duration::from_millis(2)
        );
    }
}
