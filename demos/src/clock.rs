//! The real clocks, read by the wiring and handed to the machines.
//!
//! The machines in [`proto`](crate::proto) read no clock: the monotonic time of every
//! call comes in [`Out::now`](sockloop::proto::Out::now), and the demos that show
//! calendar time are given a wall clock when they are made. This module is where the
//! system's clocks are read for them, and where the defaults that mean "the system's
//! clock" are defined, so that choice stays out of `proto/`.

use crate::proto::http::server::HttpConfig;
use crate::proto::stamp::{StampLines, WallClock};
use std::time::{Instant, SystemTime};

/// The system's monotonic and wall clocks read now, one right after the other: the
/// reading a [`Stamp`](crate::proto::stamp::Stamp) tells the time from.
pub fn wall_clock() -> WallClock {
    WallClock::anchored(Instant::now(), SystemTime::now())
}

impl Default for StampLines {
    /// Stamps with the system's clock, read now ([`wall_clock`]): what
    /// [`Stamp::default`](crate::proto::stamp::Stamp) makes for each connection.
    fn default() -> StampLines {
        StampLines::new(wall_clock())
    }
}

impl Default for HttpConfig {
    /// The default settings, with [`SystemTime::now`] for the `Date` header.
    fn default() -> HttpConfig {
        HttpConfig::with_clock(SystemTime::now)
    }
}
