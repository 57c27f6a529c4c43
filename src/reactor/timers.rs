//! Deadlines the loop must wake up for.
//!
//! A binary min-heap of `(deadline, sequence, what)`. Cancellation is lazy: a timer whose
//! owner has gone (its slot freed or reused, or its state moved on) is recognised when it
//! fires and ignored, so cancelling costs nothing and arming is O(log n). The sequence
//! number keeps timers with equal deadlines in the order they were armed.
//!
//! Why a heap and not a timing wheel: the reactor's timers are few per connection and most
//! are never cancelled early (a connection re-arms only when its deadline moves *earlier*,
//! see `conn.rs`), deadlines span milliseconds to minutes, and exact ordering matters for
//! tests and for user timers. A heap gives exact order with O(log n) arm and expire and no
//! tick to tune; a hashed wheel would win only with very many arm/cancel pairs per second.
//! Dead entries (cancelled user timers) are purged when they outnumber live ones, so the
//! heap stays within a constant factor of the live timers.
//!
//! The poll timeout of each turn is the time until [`Timers::next_deadline`]; with no timer
//! armed the loop sleeps in the poller until an event arrives.

use super::token::Tag;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a timer is for. Checked against its owner's current state when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// A connection's deadline (connect timeout, linger, idle, write stall, protocol).
    Conn(Tag),
    /// A listener stopped accepting after a resource error; try again.
    AcceptResume(Tag),
    /// A timer set by the embedder (`Reactor::set_timer`), named by its slot.
    User(Tag),
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKind)>>,
    seq: u64,
}

impl Timers {
    pub fn arm(&mut self, at: Instant, kind: TimerKind) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, kind)));
    }

    /// Drops every entry for which `live` says no. O(n); called rarely (see module docs).
    pub fn purge(&mut self, mut live: impl FnMut(&TimerKind) -> bool) {
        let entries = std::mem::take(&mut self.heap).into_vec();
        self.heap = entries
            .into_iter()
            .filter(|Reverse((_, _, kind))| live(kind))
            .collect();
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pops entries at the top that `live` rejects (cancelled timers), so the poll timeout
    /// is not cut short for a timer that will never fire.
    pub fn prune_top(&mut self, mut live: impl FnMut(&TimerKind) -> bool) {
        while let Some(Reverse((_, _, kind))) = self.heap.peek() {
            if live(kind) {
                return;
            }
            self.heap.pop();
        }
    }

    /// Removes and returns the earliest timer due at `now`, if any.
    pub fn pop_expired(&mut self, now: Instant) -> Option<TimerKind> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(t)| t.2),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fire_in_deadline_then_arming_order() {
        let t0 = Instant::now();
        let tag = |key| Tag { key, gen: 0 };
        let mut timers = Timers::default();
        timers.arm(t0 + Duration::from_millis(20), TimerKind::Conn(tag(2)));
        timers.arm(t0 + Duration::from_millis(10), TimerKind::Conn(tag(1)));
        timers.arm(t0 + Duration::from_millis(20), TimerKind::Conn(tag(0)));
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(timers.pop_expired(t0), None);
        let later = t0 + Duration::from_millis(30);
        let fired: Vec<_> = std::iter::from_fn(|| timers.pop_expired(later)).collect();
        assert_eq!(
            fired,
            [1, 2, 0].map(|k| TimerKind::Conn(tag(k))),
            "deadline order, ties in arming order"
        );
        assert_eq!(timers.len(), 0);
    }
}
