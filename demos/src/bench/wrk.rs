//! The HTTP scenarios' load generator: `wrk`, run as a child process, its report parsed.

use std::time::Duration;

/// What `wrk --latency` reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WrkResult {
    /// Requests completed.
    pub requests: u64,
    /// The run's length as wrk measured it.
    pub secs: f64,
    /// `Requests/sec`.
    pub requests_per_sec: f64,
    /// `Transfer/sec` in bytes.
    pub bytes_per_sec: f64,
    /// The latency distribution's 50 % and 99 % lines, in microseconds.
    pub p50_us: Option<f64>,
    /// See `p50_us`.
    pub p99_us: Option<f64>,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
    pub errors: u64,
    /// wrk's own lines about those errors, for the report (empty when there were none).
    pub error_detail: String,
}

/// How to get wrk where it is missing.
pub const INSTALL_HINT: &str =
    "wrk is not installed: `apt-get install wrk` (Debian/Ubuntu), `brew install wrk` (macOS), \
     or build it from https://github.com/wg/wrk";

/// Returns true if and only if `wrk` can be started.
pub fn installed() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// wrk's arguments for `conns` connections over `secs` (whole seconds, at least 1).
pub fn args(url: &str, conns: usize, secs: Duration) -> Vec<String> {
    let secs = secs.as_secs_f64().round().max(1.0) as u64;
    vec![
        "-t1".into(),
        format!("-c{}", conns.max(1)),
        format!("-d{secs}s"),
        "--latency".into(),
        "--timeout".into(),
        "5s".into(),
        url.into(),
    ]
}

/// A value with a unit suffix: `12.5us`, `1.2ms`, `3.40MB`, `29.63k`.
fn number_with_unit(s: &str) -> Option<(f64, &str)> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(s.len());
    Some((s[..split].parse().ok()?, &s[split..]))
}

fn micros(s: &str) -> Option<f64> {
    let (v, unit) = number_with_unit(s)?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(v * scale)
}

fn bytes(s: &str) -> Option<f64> {
    let (v, unit) = number_with_unit(s)?;
    let scale = match unit {
        "B" | "" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(v * scale)
}

/// Parses wrk's report (its stdout).
pub fn parse(text: &str) -> Result<WrkResult, String> {
    let mut r = WrkResult::default();
    let mut got_rate = false;
    let mut got_count = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_us = micros(v),
            ["99%", v] => r.p99_us = micros(v),
            ["Requests/sec:", v] => {
                r.requests_per_sec = v.parse().map_err(|_| format!("bad rate {v:?}"))?;
                got_rate = true;
            }
            ["Transfer/sec:", v] => r.bytes_per_sec = bytes(v).unwrap_or(0.0),
            [n, "requests", "in", t, ..] => {
                r.requests = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                r.secs = micros(t.trim_end_matches(',')).map_or(0.0, |us| us / 1e6);
                got_count = true;
            }
            ["Socket", "errors:", rest @ ..] => {
                r.error_detail.push_str(line.trim());
                r.error_detail.push_str("; ");
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                r.error_detail.push_str(line.trim());
                r.error_detail.push_str("; ");
                r.errors += n.parse::<u64>().unwrap_or(1);
            }
            _ => {}
        }
    }
    if !(got_rate && got_count) {
        return Err(format!(
            "wrk's output has no `requests in` and `Requests/sec:` lines: {:?}",
            text.trim()
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 1s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.46ms  213.13us   6.51ms   97.66%
    Req/Sec    29.63k     1.40k   31.01k    81.82%
  Latency Distribution
     50%   29.00us
     75%   31.00us
     90%   35.00us
     99%    1.62ms
  32424 requests in 1.10s, 3.74MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  29476.52
Transfer/sec:      3.40MB
";

    #[test]
    fn parses_a_report() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.requests, 32424);
        assert!((r.secs - 1.1).abs() < 1e-9);
        assert!((r.requests_per_sec - 29476.52).abs() < 1e-9);
        assert!((r.bytes_per_sec - 3.4 * 1024.0 * 1024.0).abs() < 1.0);
        assert_eq!(r.p50_us, Some(29.0));
        assert_eq!(r.p99_us, Some(1620.0));
        assert_eq!(r.errors, 7);
    }

    #[test]
    fn refuses_what_is_not_a_report() {
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }
}
