//! Deadlines the loop must wake up for.
//!
//! How, and why a heap rather than a wheel, is described where `cargo doc` shows it: the
//! [reactor's module docs](super), *Timers*.

use super::token::Tag;
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

impl TimerKind {
    /// The slot that owns the timer.
    fn tag(&self) -> Tag {
        match *self {
            TimerKind::Conn(t) | TimerKind::AcceptResume(t) | TimerKind::User(t) => t,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    at: Instant,
    seq: u64,
    kind: TimerKind,
}

impl Entry {
    fn before(&self, other: &Entry) -> bool {
        (self.at, self.seq) < (other.at, other.seq)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: Vec<Entry>,
    /// For each slab key, 1 + the index of its entry in `heap`; 0 if it has none.
    index: Vec<u32>,
    seq: u64,
}

impl Timers {
    /// Arms `kind`'s timer for `at`, replacing the one its slot had (earlier or later).
    pub fn arm(&mut self, at: Instant, kind: TimerKind) {
        self.seq += 1;
        let entry = Entry {
            at,
            seq: self.seq,
            kind,
        };
        match self.find(kind.tag().key) {
            Some(i) => {
                let earlier = entry.before(&self.heap[i]);
                self.heap[i] = entry;
                if earlier {
                    self.sift_up(i);
                } else {
                    self.sift_down(i);
                }
            }
            None => {
                self.heap.push(entry);
                let i = self.heap.len() - 1;
                self.place(i);
                self.sift_up(i);
            }
        }
    }

    /// Removes the timer of the slot `tag` names, if it has one. Returns true if and only
    /// if there was one.
    pub fn cancel(&mut self, tag: Tag) -> bool {
        match self.find(tag.key) {
            Some(i) if self.heap[i].kind.tag() == tag => {
                self.remove(i);
                true
            }
            _ => false,
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.first().map(|e| e.at)
    }

    /// The earliest timer: when, and what for (for the trace's "sleep until" line).
    pub fn next(&self) -> Option<(Instant, TimerKind)> {
        self.heap.first().map(|e| (e.at, e.kind))
    }

    /// Removes and returns the earliest timer due at `now`, if any.
    pub fn pop_expired(&mut self, now: Instant) -> Option<TimerKind> {
        match self.heap.first() {
            Some(e) if e.at <= now => {
                let kind = e.kind;
                self.remove(0);
                Some(kind)
            }
            _ => None,
        }
    }

    /// How many timers are armed.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// The heap index of the entry of slab key `key`, if it has one.
    fn find(&self, key: usize) -> Option<usize> {
        match self.index.get(key) {
            Some(&p) if p > 0 => Some(p as usize - 1),
            _ => None,
        }
    }

    /// Records that the entry at heap index `i` is there.
    fn place(&mut self, i: usize) {
        let key = self.heap[i].kind.tag().key;
        if key >= self.index.len() {
            self.index.resize(key + 1, 0);
        }
        // Heap indices fit: the slab's keys do (token.rs caps them at 2^32).
        self.index[key] = u32::try_from(i + 1).unwrap_or(u32::MAX);
    }

    fn remove(&mut self, i: usize) {
        let key = self.heap[i].kind.tag().key;
        self.index[key] = 0;
        let last = self.heap.len() - 1;
        self.heap.swap(i, last);
        self.heap.pop();
        if i < self.heap.len() {
            self.place(i);
            // The entry moved here from the end may belong higher or lower.
            self.sift_up(i);
            self.sift_down(i);
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.heap[i].before(&self.heap[parent]) {
                break;
            }
            self.heap.swap(i, parent);
            self.place(i);
            self.place(parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut min = i;
            if l < self.heap.len() && self.heap[l].before(&self.heap[min]) {
                min = l;
            }
            if r < self.heap.len() && self.heap[r].before(&self.heap[min]) {
                min = r;
            }
            if min == i {
                break;
            }
            self.heap.swap(i, min);
            self.place(i);
            self.place(min);
            i = min;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tag(key: usize) -> Tag {
        Tag { key, gen: 0 }
    }

    #[test]
    fn fire_in_deadline_then_arming_order() {
        let t0 = Instant::now();
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

    #[test]
    fn one_entry_per_owner_however_often_it_is_armed() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for i in 0..1000u64 {
            // Alternately later and earlier, as a connection's deadline can move.
            let at = t0 + Duration::from_millis(if i % 2 == 0 { 500 + i } else { 100 });
            timers.arm(at, TimerKind::Conn(tag(7)));
        }
        timers.arm(t0 + Duration::from_millis(300), TimerKind::User(tag(3)));
        assert_eq!(timers.len(), 2);
        assert_eq!(
            timers.next_deadline(),
            Some(t0 + Duration::from_millis(100))
        );
        assert!(timers.cancel(tag(7)));
        assert!(!timers.cancel(tag(7)), "cancelled once");
        assert!(
            !timers.cancel(Tag { key: 3, gen: 1 }),
            "another generation's timer is not this one's to cancel"
        );
        assert_eq!(timers.len(), 1);
        assert_eq!(
            timers.next_deadline(),
            Some(t0 + Duration::from_millis(300))
        );
    }

    #[test]
    fn the_heap_order_survives_any_mix_of_arms_cancels_and_pops() {
        // A small deterministic pseudo-random mix, checked against a sorted model.
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut model: Vec<Option<(Instant, u64)>> = vec![None; 64];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut seq = 0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 64) as usize;
            match (x >> 8) % 4 {
                0 | 1 => {
                    seq += 1;
                    let at = t0 + Duration::from_millis((x >> 16) % 1000);
                    timers.arm(at, TimerKind::Conn(tag(key)));
                    model[key] = Some((at, seq));
                }
                2 => {
                    assert_eq!(timers.cancel(tag(key)), model[key].is_some());
                    model[key] = None;
                }
                _ => {
                    let now = t0 + Duration::from_millis((x >> 16) % 1000);
                    let want = model
                        .iter()
                        .enumerate()
                        .filter_map(|(k, m)| m.map(|(at, s)| (at, s, k)))
                        .filter(|(at, _, _)| *at <= now)
                        .min();
                    let got = timers.pop_expired(now);
                    assert_eq!(got, want.map(|(_, _, k)| TimerKind::Conn(tag(k))));
                    if let Some((_, _, k)) = want {
                        model[k] = None;
                    }
                }
            }
            assert_eq!(timers.len(), model.iter().flatten().count());
        }
    }
}
