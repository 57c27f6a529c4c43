//! HTTP/1 head parsing shared by the server and client machines: request heads under
//! size limits, header-value helpers, and the `Date` format.
//!
//! [`httparse`] does the byte-level work and never allocates; this module adds the policy
//! around it:
//!
//! - **Limits.** [`parse_request`] looks at no more than the head limit of its input and
//!   tells an over-long request line (414) from an over-large head (431) and too many
//!   header lines (431), so a peer that never ends its head is refused after a bounded
//!   number of bytes instead of buffered without end.
//! - **The same answer however the bytes arrive.** A request fed whole, byte by byte or
//!   split anywhere gets the same verdict: the verdict is the one the *shortest* prefix
//!   that decides anything would give, as a driver presenting growing input would see it
//!   (see [`parse_request`]).
//! - **Header values** ([`tokens`], [`has_token`], [`content_length`]) follow RFC 9110:
//!   comma-separated lists, case-insensitive tokens, a `Content-Length` of digits only.
//! - **Dates** ([`imf_fixdate`]) in the one format HTTP senders must use, computed from a
//!   `SystemTime` the caller passes in: nothing here reads a clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// The longest request line accepted, in bytes before its line feed. nginx's
/// `large_client_header_buffers` are 8 KiB each, and a request line must fit in one
/// (nginx answers 414 beyond it; so do we).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// The largest request head accepted (request line, header lines, the blank line), in
/// bytes. nginx's default header buffer is 8 KiB (`client_header_buffer_size 1k`, then
/// `large_client_header_buffers 4 8k`); RFC 6585 gives 431 for heads over the limit.
pub const MAX_HEAD: usize = 8 * 1024;

/// The most header lines accepted in one request: the size of the array httparse fills.
/// hyper's default is 100, HAProxy's `tune.http.maxhdr` 101. More is a 431.
pub const MAX_HEADERS: usize = 100;

/// Size limits for [`parse_request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// The longest request line, in bytes before its `\n` (a `\r` counts). Default
    /// [`MAX_REQUEST_LINE`].
    pub max_request_line: usize,
    /// The largest head, leading empty lines included. Default [`MAX_HEAD`].
    pub max_head: usize,
}

impl Default for HeadLimits {
    fn default() -> HeadLimits {
        HeadLimits {
            max_request_line: MAX_REQUEST_LINE,
            max_head: MAX_HEAD,
        }
    }
}

/// Why a request head was refused, each with the status an HTTP server answers it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1 syntax (httparse's reason): 400.
    Malformed(httparse::Error),
    /// An HTTP version other than 1.0 or 1.1: 505.
    Version,
    /// The request line is longer than the limit: 414.
    LineTooLong,
    /// The head is larger than the limit: 431.
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines: 431.
    TooManyHeaders,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Malformed(e) => write!(f, "malformed request head: {e}"),
            HeadError::Version => f.write_str("unsupported HTTP version"),
            HeadError::LineTooLong => f.write_str("request line over the limit"),
            HeadError::HeadTooLarge => f.write_str("request head over the limit"),
            HeadError::TooManyHeaders => {
                write!(f, "more than {MAX_HEADERS} header lines")
            }
        }
    }
}

/// Parses the request head at the start of `input` into `req` (whose header array should
/// have [`MAX_HEADERS`] slots), within `limits`.
///
/// Returns `Ok(Some(n))` when the head is complete and `n` bytes long (the body, if any,
/// starts at `input[n]`), `Ok(None)` when more bytes are needed, or the reason to refuse
/// it.
///
/// The verdict does not depend on how the bytes were split: it is the verdict of the
/// shortest prefix of `input` that decides, where a prefix decides when httparse finds
/// the head complete or malformed, when its request line (after any leading empty lines)
/// has grown past `max_request_line` without a line feed (414, checked first), or when it
/// has grown past `max_head` (431). So the parse covers at most
/// `min(max_head, leading empty lines + max_request_line) + 1` bytes of `input`, and a
/// driver presenting the input again as it grows meets the same answer at the same byte.
pub fn parse_request<'h, 'b>(
    input: &'b [u8],
    req: &mut httparse::Request<'h, 'b>,
    limits: HeadLimits,
) -> Result<Option<usize>, HeadError> {
    // The prefix that decides: one byte past whichever limit comes first.
    let head_cap = limits.max_head.saturating_add(1);
    let skip = leading_empty_lines(&input[..input.len().min(head_cap)]);
    let line_cap = skip
        .saturating_add(limits.max_request_line)
        .saturating_add(1);
    let line_too_long = match input.get(skip..input.len().min(line_cap)) {
        // The line so far has more bytes than allowed and no line feed among them.
        Some(line) => line.len() > limits.max_request_line && !line.contains(&b'\n'),
        None => false,
    };
    let cap = if line_too_long {
        line_cap.min(head_cap)
    } else {
        head_cap
    };
    let window = &input[..input.len().min(cap)];
    match req.parse(window) {
        Ok(httparse::Status::Complete(n)) if n <= limits.max_head => Ok(Some(n)),
        Ok(httparse::Status::Complete(_)) => Err(HeadError::HeadTooLarge),
        Ok(httparse::Status::Partial) if line_too_long && window.len() == line_cap => {
            Err(HeadError::LineTooLong)
        }
        Ok(httparse::Status::Partial) if window.len() == head_cap => Err(HeadError::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        // httparse says "version" for any third token but HTTP/1.x. Only a well-formed
        // version (HTTP/<digit>.<digit>) is one we do not support (505); anything else is
        // not an HTTP request line at all (400). RFC 9112 §2.3, RFC 9110 §15.6.6.
        // Which one it is shows only once the line is complete, so a split never matters.
        Err(httparse::Error::Version) => match version_verdict(window) {
            Some(true) => Err(HeadError::Version),
            Some(false) => Err(HeadError::Malformed(httparse::Error::Version)),
            None if line_too_long && window.len() == line_cap => Err(HeadError::LineTooLong),
            None if window.len() == head_cap => Err(HeadError::HeadTooLarge),
            None => Ok(None),
        },
        Err(e) => Err(HeadError::Malformed(e)),
    }
}

/// Whether the request line in `input` (after any leading empty lines) ends in a version
/// of the form `HTTP/<digit>.<digit>`; `None` while the line is not complete.
fn version_verdict(input: &[u8]) -> Option<bool> {
    let input = &input[leading_empty_lines(input)..];
    let end = input.iter().position(|&b| b == b'\n')?;
    let line = &input[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some(match line.rsplit(|&b| b == b' ').next() {
        Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor]) => {
            major.is_ascii_digit() && minor.is_ascii_digit()
        }
        _ => false,
    })
}

/// The length of the empty lines (`\r\n` or `\n`) at the start of `input`, which
/// RFC 9112 §2.2 asks a server to skip before a request line (httparse does).
fn leading_empty_lines(input: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match input.get(at..) {
            Some([b'\r', b'\n', ..]) => at += 2,
            Some([b'\n', ..]) => at += 1,
            _ => return at,
        }
    }
}

/// Returns true if and only if `input` is made of CR and LF bytes only (so it holds no
/// part of a request, just line endings a client sent after its last one).
pub fn only_line_endings(input: &[u8]) -> bool {
    input.iter().all(|&b| b == b'\r' || b == b'\n')
}

/// The members of a comma-separated header value (RFC 9110 §5.6.1), with optional
/// whitespace trimmed and empty members skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// Returns true if and only if the comma-separated `value` has `token` as a member,
/// compared without regard to ASCII case (as `Connection` options are).
pub fn has_token(value: &[u8], token: &str) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// A `Content-Length` value (RFC 9110 §8.6): one or more digits, or a comma-separated
/// list of identical such values (which a recipient may accept as one). `None` if the
/// value is anything else. A number too large for `u64` is `u64::MAX`: over any limit,
/// but not malformed.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for member in value.split(|&b| b == b',').map(trim_ows) {
        if member.is_empty() || !member.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = member.iter().fold(0u64, |n, &d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        match found {
            Some(prev) if prev != n => return None,
            _ => found = Some(n),
        }
    }
    found
}

/// The value without optional whitespace (SP, HTAB) at either end.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const IMF_FIXDATE_LEN: usize = 29;

/// The last second an IMF-fixdate can show (its year has four digits):
/// 9999-12-31T23:59:59Z.
const MAX_FIXDATE_SECS: u64 = 253_402_300_799;

/// `t` as an IMF-fixdate (RFC 9110 §5.6.7), the format of the `Date` header:
/// `Sun, 06 Nov 1994 08:49:37 GMT`. Times before 1970 show as 1970-01-01T00:00:00Z and
/// times after 9999 as its last second: the format has no room for others.
pub fn imf_fixdate(t: SystemTime) -> [u8; IMF_FIXDATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(MAX_FIXDATE_SECS);
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    // At most year 9999 (MAX_FIXDATE_SECS), so these conversions are lossless.
    let (year, month, day) = crate::proto::calendar::civil_from_days(days as i64);
    let (year, month, day) = (year as u64, u64::from(month), u64::from(day));
    let weekday = DAYS[crate::proto::calendar::weekday(days as i64)];
    let month = MONTHS[(month - 1) as usize % 12];

    let mut s = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    s[..3].copy_from_slice(weekday);
    two_digits(&mut s[5..7], day);
    s[8..11].copy_from_slice(month);
    two_digits(&mut s[12..14], year / 100);
    two_digits(&mut s[14..16], year % 100);
    two_digits(&mut s[17..19], of_day / 3600);
    two_digits(&mut s[20..22], of_day / 60 % 60);
    two_digits(&mut s[23..25], of_day % 60);
    s
}

fn two_digits(into: &mut [u8], n: u64) {
    into[0] = b'0' + (n / 10 % 10) as u8;
    into[1] = b'0' + (n % 10) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(input: &[u8], limits: HeadLimits) -> Result<Option<usize>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        parse_request(input, &mut req, limits)
    }

    /// The verdict a driver would reach presenting `input` as it grows one byte at a time.
    fn parse_bytewise(input: &[u8], limits: HeadLimits) -> Result<Option<usize>, HeadError> {
        for end in 1..=input.len() {
            match parse(&input[..end], limits) {
                Ok(None) => {}
                decided => return decided,
            }
        }
        Ok(None)
    }

    fn small() -> HeadLimits {
        HeadLimits {
            max_request_line: 32,
            max_head: 64,
        }
    }

    #[test]
    fn complete_partial_and_trailing() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let limits = HeadLimits::default();
        assert_eq!(parse(head, limits), Ok(Some(head.len())));
        for cut in 0..head.len() {
            assert_eq!(parse(&head[..cut], limits), Ok(None), "prefix of {cut}");
        }
        let mut trailing = head.to_vec();
        trailing.extend_from_slice(b"GET /x HTTP/1.1\r\n");
        assert_eq!(parse(&trailing, limits), Ok(Some(head.len())));
        // Leading empty lines are skipped, and count toward the head.
        let mut leading = b"\r\n\n".to_vec();
        leading.extend_from_slice(head);
        assert_eq!(parse(&leading, limits), Ok(Some(leading.len())));
    }

    #[test]
    fn limits_give_their_statuses() {
        let l = small();
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(40));
        assert_eq!(parse(long_line.as_bytes(), l), Err(HeadError::LineTooLong));
        let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(60));
        assert_eq!(parse(big_head.as_bytes(), l), Err(HeadError::HeadTooLarge));
        // A request line of exactly the limit (counting its \r) is fine.
        let exact = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(32 - 15));
        assert_eq!(exact.find('\n'), Some(32));
        assert!(matches!(parse(exact.as_bytes(), l), Ok(Some(_))));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse(many.as_bytes(), HeadLimits::default()),
            Err(HeadError::TooManyHeaders)
        );
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n", l), Err(HeadError::Version));
        // Not a version at all: not a request line, so 400, not 505.
        for line in [
            &b"THIS IS NOT HTTP\r\n\r\n"[..],
            b"GET / HTTP/1\r\n\r\n",
            b"GET / HTTP/1.10\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"GET / HTTP/x.y\r\n\r\n",
        ] {
            assert!(
                matches!(parse(line, l), Err(HeadError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", l),
            Err(HeadError::Malformed(_))
        ));
        // Endless empty lines are a head over the limit, not an endless wait.
        assert_eq!(parse(&[b'\n'; 100], l), Err(HeadError::HeadTooLarge));
    }

    #[test]
    fn verdict_does_not_depend_on_the_split() {
        let l = small();
        let cases: Vec<Vec<u8>> = vec![
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest".to_vec(),
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(40)).into_bytes(),
            // Malformed late in an over-long line: 414 (the limit is met first).
            format!("GET /{}\x01 HTTP/1.1\r\n\r\n", "a".repeat(40)).into_bytes(),
            // Malformed early in an over-long line: 400.
            format!("G\x01T /{} HTTP/1.1\r\n\r\n", "a".repeat(40)).into_bytes(),
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(60)).into_bytes(),
            format!("GET / HTTP/1.1\r\nX: {}\x01\r\n\r\n", "b".repeat(60)).into_bytes(),
            format!("\r\n\r\nGET /{} HTTP/1.1\r\n\r\n", "a".repeat(40)).into_bytes(),
            b"\r\n".repeat(40),
            b"GET / HTTP/1.1\r\n\r".to_vec(),
        ];
        for input in &cases {
            assert_eq!(
                parse(input, l),
                parse_bytewise(input, l),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn header_values() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(has_token(b" Close ", "close"));
        assert!(!has_token(b"closed", "close"));
        assert_eq!(tokens(b" a,, b ,").collect::<Vec<_>>(), [&b"a"[..], b"b"]);
        assert_eq!(content_length(b"42"), Some(42));
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b"7, 7"), Some(7));
        assert_eq!(content_length(b"7, 8"), None);
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"+5"), None);
        assert_eq!(content_length(b"5 5"), None);
        assert_eq!(content_length(b"0x10"), None);
        assert_eq!(content_length(b"99999999999999999999999"), Some(u64::MAX));
    }

    fn date(secs: u64) -> String {
        String::from_utf8(imf_fixdate(UNIX_EPOCH + Duration::from_secs(secs)).to_vec()).unwrap()
    }

    #[test]
    fn imf_fixdate_known_values() {
        // RFC 9110 §5.6.7's example.
        assert_eq!(date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(date(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(date(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 GMT");
        assert_eq!(date(MAX_FIXDATE_SECS), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(date(u64::MAX / 2), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(
            imf_fixdate(UNIX_EPOCH - Duration::from_secs(1)),
            *b"Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }
}
