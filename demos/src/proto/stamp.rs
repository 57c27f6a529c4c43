//! Stamp: every message comes back prefixed with the time it was received.
//!
//! From tutorial 002 (a Python server that starts one thread per connection and answers
//! each `recv` with `"[%s] %s" % (ctime(), data)`). Which driver serves it is the
//! driver's business: the same machine runs threaded, iterative or on the reactor.
//!
//! # Wire format
//!
//! ```text
//! client -> server   Michael\n           (or Michael with no newline; see below)
//! server -> client   [Sun Nov 22 12:00:00 2026] Michael\n
//! ```
//!
//! The time is in C's `ctime` layout (`Www Mmm dd hh:mm:ss yyyy`, the day of the month
//! padded with a space to width 2: `Mon Nov  2 ...`), **always in UTC**, where the tutorial's
//! `ctime()` uses the server's local time zone: a server's reply should not depend on
//! the `TZ` of the process that happens to run it. The message is sent back byte for
//! byte (any bytes, UTF-8 or not), without its line ending, followed by `\n`.
//!
//! Messages are lines, framed by [`Lines`] (see [`line`](super::line)): the tutorial's
//! client, which sends `Michael` with no newline and waits, gets its reply after the quiet
//! period (100 ms). An empty line is a message too (`[...] ` comes back).
//!
//! # Where the time comes from
//!
//! The machine never reads a clock. Drivers pass the time of every call as a monotonic
//! [`Instant`] ([`Out::now`]); a [`WallClock`], given to [`Stamp::new`], turns that into
//! calendar time: it is one reading of both clocks taken together, and the wall time at
//! `now` is that reading plus the monotonic time elapsed since. The reading is taken by
//! the wiring when the machine is made (by the driver's factory, as the connection is
//! accepted: [`crate::clock::wall_clock`], which [`Stamp::default`] uses); tests pass a
//! fixed one. A wall-clock step (NTP, an administrator) during a connection is therefore
//! seen by the next connection, not by this one.
//!
//! The machine has a single state (serving), so it has no state enum.

use super::calendar;
use super::line::{Flow, Lines, OnLine};
use super::Out;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Calendar time for a driver's monotonic time: the wall-clock time `wall` read at the
/// monotonic time `instant`, extended by the monotonic time elapsed since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    instant: Instant,
    wall: SystemTime,
}

impl WallClock {
    /// A clock that shows `wall` at the monotonic time `instant`: the wiring passes the
    /// two clocks read together ([`crate::clock::wall_clock`]), tests a fixed time.
    pub fn anchored(instant: Instant, wall: SystemTime) -> WallClock {
        WallClock { instant, wall }
    }

    /// The wall-clock time at the monotonic time `now` (which may be before the reading).
    /// Saturates to the reading itself if the result would not fit in a [`SystemTime`].
    pub fn at(&self, now: Instant) -> SystemTime {
        let shifted = if now >= self.instant {
            self.wall
                .checked_add(now.saturating_duration_since(self.instant))
        } else {
            self.wall
                .checked_sub(self.instant.saturating_duration_since(now))
        };
        shifted.unwrap_or(self.wall)
    }
}

/// The stamp machine: the line adapter around [`StampLines`]; see the
/// [module docs](self). [`Stamp::default`] reads the system's clocks (in the wiring's
/// [`crate::clock`]).
pub type Stamp = Lines<StampLines>;

/// What the stamp demo does with each message: stamps it with the time by `clock`.
#[derive(Debug, Clone)]
pub struct StampLines {
    clock: WallClock,
}

impl StampLines {
    /// Stamps with the time told by `clock`.
    pub fn new(clock: WallClock) -> StampLines {
        StampLines { clock }
    }
}

impl Stamp {
    /// A fresh machine for one connection, telling the time with `clock`.
    pub fn new(clock: WallClock) -> Stamp {
        Lines::with_handler(StampLines::new(clock))
    }
}

impl OnLine for StampLines {
    /// Queues `[<time>] <line>\n`, with the time the message was taken as whole.
    fn on_line(&mut self, line: &[u8], out: &mut Out<'_>) -> Flow {
        let time = ctime(self.clock.at(out.now()));
        out.push(b"[");
        out.push(time.as_bytes());
        out.push(b"] ");
        out.push(line);
        out.push(b"\n");
        Flow::Continue
    }
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Formats `t` like C's `ctime`, in UTC and without the trailing newline:
/// `Sun Nov 22 12:00:00 2026`, `Mon Nov  2 09:05:07 2026`. Fractions of a second are
/// dropped (times before 1970 round down too, as `gmtime` does).
///
/// ```
/// use sockloop_demos::proto::stamp::ctime;
/// use std::time::{Duration, UNIX_EPOCH};
///
/// assert_eq!(ctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
/// let t = UNIX_EPOCH + Duration::from_secs(1_795_348_800);
/// assert_eq!(ctime(t), "Sun Nov 22 12:00:00 2026");
/// ```
pub fn ctime(t: SystemTime) -> String {
    let secs = seconds_since_epoch(t);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = calendar::civil_from_days(days);
    // 1970-01-01, day 0, was a Thursday.
    let weekday = calendar::weekday(days);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        WEEKDAYS[weekday],
        MONTHS[month as usize - 1],
        day,
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        year
    )
}

/// Whole seconds from the Unix epoch to `t`, rounded down (towards the past).
fn seconds_since_epoch(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let d = before.duration();
            let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            // -1.5 s is in the second that starts at -2 s.
            -whole - i64::from(d.subsec_nanos() > 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::line::{MAX_LINE, QUIET};
    use crate::proto::{Action, Protocol};
    use crate::testing::{feed, test_epoch};
    use std::time::Duration;

    /// Sunday 22 November 2026, 12:00:00 UTC.
    const SUNDAY_NOON: u64 = 1_795_348_800;

    fn fixed(t0: Instant) -> Stamp {
        Stamp::new(WallClock::anchored(
            t0,
            UNIX_EPOCH + Duration::from_secs(SUNDAY_NOON),
        ))
    }

    #[test]
    fn ctime_layout_matches_c() {
        let at = |secs: i64| {
            if secs >= 0 {
                ctime(UNIX_EPOCH + Duration::from_secs(secs as u64))
            } else {
                ctime(UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()))
            }
        };
        // Reference values from Python's time.asctime(time.gmtime(secs)).
        for (secs, want) in [
            (0, "Thu Jan  1 00:00:00 1970"),
            (SUNDAY_NOON as i64, "Sun Nov 22 12:00:00 2026"),
            (1_793_610_307, "Mon Nov  2 09:05:07 2026"),
            (951_782_400, "Tue Feb 29 00:00:00 2000"),
            (1_709_251_199, "Thu Feb 29 23:59:59 2024"),
            (4_107_542_400, "Mon Mar  1 00:00:00 2100"),
            (-1, "Wed Dec 31 23:59:59 1969"),
            (-2_203_891_200, "Thu Mar  1 00:00:00 1900"),
            (253_402_300_799, "Fri Dec 31 23:59:59 9999"),
        ] {
            assert_eq!(at(secs), want, "at {secs} s");
        }
        // Fractions round towards the past on both sides of the epoch.
        assert_eq!(
            ctime(UNIX_EPOCH - Duration::from_millis(1)),
            "Wed Dec 31 23:59:59 1969"
        );
        assert_eq!(
            ctime(UNIX_EPOCH + Duration::from_millis(999)),
            "Thu Jan  1 00:00:00 1970"
        );
    }

    #[test]
    fn ctime_never_panics_at_the_extremes() {
        let far = Duration::from_secs(i64::MAX as u64);
        for t in [UNIX_EPOCH.checked_add(far), UNIX_EPOCH.checked_sub(far)]
            .into_iter()
            .flatten()
        {
            assert!(ctime(t).len() >= 24);
        }
        // A wall time that cannot move further saturates instead of overflowing.
        if let Some(last) = UNIX_EPOCH.checked_add(far) {
            let t0 = test_epoch();
            let clock = WallClock::anchored(t0, last);
            assert_eq!(clock.at(t0 + Duration::from_secs(1)), last);
        }
    }

    #[test]
    fn the_clock_follows_the_drivers_time() {
        let t0 = test_epoch() + Duration::from_secs(10);
        let clock = WallClock::anchored(t0, UNIX_EPOCH + Duration::from_secs(SUNDAY_NOON));
        let noon = UNIX_EPOCH + Duration::from_secs(SUNDAY_NOON);
        assert_eq!(clock.at(t0), noon);
        assert_eq!(
            clock.at(t0 + Duration::from_millis(1_500)),
            noon + Duration::from_millis(1_500)
        );
        assert_eq!(
            clock.at(t0 - Duration::from_secs(3)),
            noon - Duration::from_secs(3)
        );
    }

    #[test]
    fn one_stamped_reply_per_line_whole_and_byte_by_byte() {
        let t0 = test_epoch();
        let stream = b"Michael\nTracy\r\n\n\xffSarah\n";
        let want: &[u8] = b"[Sun Nov 22 12:00:00 2026] Michael\n\
                            [Sun Nov 22 12:00:00 2026] Tracy\n\
                            [Sun Nov 22 12:00:00 2026] \n\
                            [Sun Nov 22 12:00:00 2026] \xffSarah\n";
        assert_eq!(feed(&mut fixed(t0), &[stream], t0), want);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let mut m = fixed(t0);
        assert_eq!(feed(&mut m, &bytes, t0), want);
        assert_eq!(m.poll_timeout(), None, "no partial line is left");
    }

    #[test]
    fn each_message_gets_the_time_it_arrived() {
        let t0 = test_epoch();
        let mut m = fixed(t0);
        assert_eq!(
            feed(&mut m, &[b"a\n"], t0 + Duration::from_millis(1_999)),
            b"[Sun Nov 22 12:00:01 2026] a\n"
        );
        // Ten days and an hour later: a day of the month below 10 is padded with a space.
        let later = t0 + Duration::from_secs(10 * 86_400 + 3_600);
        assert_eq!(
            feed(&mut m, &[b"b\n"], later),
            b"[Wed Dec  2 13:00:00 2026] b\n"
        );
    }

    #[test]
    fn trailing_bytes_are_stamped_when_the_peer_goes_quiet() {
        let t0 = test_epoch();
        let mut m = fixed(t0);
        assert_eq!(
            feed(&mut m, &[b"Michael\nTra"], t0),
            b"[Sun Nov 22 12:00:00 2026] Michael\n"
        );
        let mut sent = Vec::new();
        m.handle_timeout(&mut Out::new(&mut sent, t0 + QUIET / 2));
        assert!(sent.is_empty(), "a timer that fires early answers nothing");
        feed(&mut m, &[b"cy"], t0 + Duration::from_millis(950));
        assert_eq!(
            m.poll_timeout(),
            Some(t0 + Duration::from_millis(950) + QUIET)
        );
        // Stamped with the time the message was taken as whole: 12:00:01.05.
        m.handle_timeout(&mut Out::new(&mut sent, t0 + Duration::from_millis(1_050)));
        assert_eq!(sent, b"[Sun Nov 22 12:00:01 2026] Tracy\n");
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn eof_and_shutdown_answer_a_partial_line() {
        let t0 = test_epoch();
        let mut m = fixed(t0);
        feed(&mut m, &[b"bye"], t0);
        let mut sent = Vec::new();
        m.handle_eof(b"", &mut Out::new(&mut sent, t0)).unwrap();
        assert_eq!(sent, b"[Sun Nov 22 12:00:00 2026] bye\n");

        let mut m = fixed(t0);
        feed(&mut m, &[b"bye"], t0);
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, t0);
        m.handle_shutdown(&mut out);
        assert_eq!(out.action(), Action::CloseAfterFlush);
        assert_eq!(sent, b"[Sun Nov 22 12:00:00 2026] bye\n");
    }

    #[test]
    fn an_over_long_line_is_a_peer_error() {
        let t0 = test_epoch();
        let mut sent = Vec::new();
        let long = vec![b'a'; MAX_LINE + 1];
        assert!(fixed(t0)
            .handle_input(&long, &mut Out::new(&mut sent, t0))
            .is_err());
    }
}
