//! Support for the unit tests of the I/O-free machines in [`proto`](crate::proto): what
//! they need from the outside world (a starting time, test vectors on disk) is fetched
//! here, so `proto/` itself never reads a clock or a file.

use std::sync::OnceLock;
use std::time::Instant;

/// One fixed instant, the same for every test in the process: the time tests start their
/// machines at (later times are this plus a duration).
pub(crate) fn test_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Feeds `chunks` to `m`, one call each at time `now`; returns everything sent and
/// checks that every byte was consumed and the connection stays open.
pub(crate) fn feed<P: sockloop::proto::Protocol>(
    m: &mut P,
    chunks: &[&[u8]],
    now: Instant,
) -> Vec<u8> {
    let mut sent = Vec::new();
    for c in chunks {
        let mut out = sockloop::proto::Out::new(&mut sent, now);
        assert_eq!(m.handle_input(c, &mut out).unwrap(), c.len());
        assert_eq!(out.action(), sockloop::proto::Action::Continue);
    }
    sent
}

/// The cases of `testdata/http/cases.txt`: file name, bytes, status, kept alive.
pub(crate) fn http_cases() -> Vec<(String, Vec<u8>, u16, bool)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/http");
    let list = std::fs::read_to_string(dir.join("cases.txt")).expect("cases.txt");
    list.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let bytes = std::fs::read(dir.join(f[0])).expect("a case file");
            (
                f[0].to_string(),
                bytes,
                f[1].parse().unwrap(),
                f[2] == "keep",
            )
        })
        .collect()
}
