//! HTTP/1 head parsing for both ends of the HTTP demos: the one [`parse`] function, under
//! one set of size limits ([`HeadLimits`]), for request heads (the `http` server), response
//! heads and chunked trailer sections (the `get` client); plus header-value helpers and the
//! `Date` format.
//!
//! The two machines keep what is theirs: [`server`](super::server) decides what a request
//! gets and [`client`](super::client) how a body is framed; neither touches head bytes
//! itself. What a head is, where it ends and how large it may grow is the same question on
//! both sides, so it is answered once, here.
//!
//! [`httparse`] does the byte-level work and never allocates; this module adds the policy
//! around it:
//!
//! - **What is parsed** is a [`Section`]: an [`httparse::Request`], an
//!   [`httparse::Response`] or a [`Trailers`] block. Its [`Kind`] decides the rest: a
//!   request or status line may follow empty lines (RFC 9112 §2.2) and has a length limit;
//!   a trailer section has no start line, so an empty first line ends it.
//! - **Limits.** [`parse`] looks at no more than [`HeadLimits::max_head`] bytes (plus one)
//!   of its input and tells an over-long start line ([`HeadError::LineTooLong`], a 414 for
//!   a request) from an over-large section ([`HeadError::TooLarge`], 431) and too many
//!   field lines ([`HeadError::TooManyFields`], 431), so a peer that never ends its head
//!   is refused after a bounded number of bytes instead of buffered without end.
//! - **The same answer however the bytes arrive.** A section fed whole, byte by byte or
//!   split anywhere gets the same verdict: the verdict is the one the *shortest* prefix
//!   that decides anything would give, as a driver presenting growing input would see it
//!   (see [`parse`]).
//! - **Header values** ([`tokens`], [`has_token`], [`content_length`]) follow RFC 9110:
//!   comma-separated lists, case-insensitive tokens, a `Content-Length` of digits only.
//! - **Dates** ([`imf_fixdate`]) in the one format HTTP senders must use, computed from a
//!   `SystemTime` the caller passes in: nothing here reads a clock.
//!
//! # Limits
//!
//! | section | start line | whole section | fields | precedent |
//! |---|---|---|---|---|
//! | request head ([`HeadLimits::REQUEST`]) | 8 KiB | 8 KiB | 100 | nginx `large_client_header_buffers 4 8k`; hyper 100 fields |
//! | response head ([`HeadLimits::RESPONSE`]) | 64 KiB | 64 KiB | 100 | Squid `reply_header_max_size 64 KB` |
//! | trailer section ([`HeadLimits::TRAILERS`]) | none | 64 KiB | 100 | the same as a head: it is one |
//!
//! ```
//! use sockloop_demos::proto::http::parse::{self, HeadError, HeadLimits, Kind, Trailers};
//!
//! let mut fields = [httparse::EMPTY_HEADER; parse::MAX_HEADERS];
//! let mut response = httparse::Response::new(&mut fields);
//! let input = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
//! assert_eq!(parse::parse(input, &mut response, HeadLimits::RESPONSE), Ok(Some(38)));
//! assert_eq!(response.code, Some(200));
//!
//! let mut fields = [httparse::EMPTY_HEADER; parse::MAX_HEADERS];
//! let mut trailers = Trailers::new(&mut fields);
//! assert_eq!(parse::parse(b"X-Sum: 42\r\n", &mut trailers, HeadLimits::TRAILERS), Ok(None));
//! let small = HeadLimits { max_head: 8, ..HeadLimits::TRAILERS };
//! assert_eq!(
//!     parse::parse(b"X-Sum: 42\r\n\r\n", &mut trailers, small),
//!     Err(HeadError::TooLarge(Kind::Trailers, 8))
//! );
//! ```

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest request line accepted, in bytes before its line feed. nginx's
/// `large_client_header_buffers` are 8 KiB each, and a request line must fit in one
/// (nginx answers 414 beyond it; so do we).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// The largest request head accepted (request line, header lines, the blank line), in
/// bytes. nginx's default header buffer is 8 KiB (`client_header_buffer_size 1k`, then
/// `large_client_header_buffers 4 8k`); RFC 6585 gives 431 for heads over the limit.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// The largest response head accepted, status line and fields included: 64 KiB, Squid's
/// `reply_header_max_size`. Real heads are well under 8 KiB; cookie-heavy ones reach tens.
/// A trailer section gets the same: it is a head at the other end of the body.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The most field lines accepted in one section (head or trailers): the size of the array
/// httparse fills. hyper's default is 100, HAProxy's `tune.http.maxhdr` 101.
pub const MAX_HEADERS: usize = 100;

/// Size limits for [`parse`]; one type for every [`Kind`] of section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// The longest start line (request line, status line), in bytes before its `\n` (a
    /// `\r` counts). A trailer section has no start line, so it ignores this.
    pub max_line: usize,
    /// The largest section, leading empty lines and the final blank line included.
    pub max_head: usize,
    /// The most field lines. The field array handed to [`parse`] needs at least this many
    /// slots (with fewer, its length is the limit).
    pub max_headers: usize,
}

impl HeadLimits {
    /// A server's limits on a request head: [`MAX_REQUEST_LINE`], [`MAX_REQUEST_HEAD`],
    /// [`MAX_HEADERS`].
    pub const REQUEST: HeadLimits = HeadLimits {
        max_line: MAX_REQUEST_LINE,
        max_head: MAX_REQUEST_HEAD,
        max_headers: MAX_HEADERS,
    };

    /// A client's limits on a response head: [`MAX_RESPONSE_HEAD`] for the status line and
    /// the whole head (no tighter line limit: none was ever needed), [`MAX_HEADERS`].
    pub const RESPONSE: HeadLimits = HeadLimits {
        max_line: MAX_RESPONSE_HEAD,
        max_head: MAX_RESPONSE_HEAD,
        max_headers: MAX_HEADERS,
    };

    /// A client's limits on a chunked body's trailer section: the same as a response head.
    pub const TRAILERS: HeadLimits = HeadLimits::RESPONSE;
}

impl Default for HeadLimits {
    /// [`HeadLimits::REQUEST`].
    fn default() -> HeadLimits {
        HeadLimits::REQUEST
    }
}

/// Which section of a message is parsed: it decides the start line and the wording of
/// errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request line and header fields.
    Request,
    /// A status line and header fields.
    Response,
    /// The trailer fields after a chunked body's last chunk: no start line.
    Trailers,
}

impl Kind {
    /// The name of the start line, if the section has one.
    fn start_line(self) -> Option<&'static str> {
        match self {
            Kind::Request => Some("request line"),
            Kind::Response => Some("status line"),
            Kind::Trailers => None,
        }
    }

    /// What its field lines are called.
    fn fields(self) -> &'static str {
        match self {
            Kind::Request | Kind::Response => "header fields",
            Kind::Trailers => "trailer fields",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Request => "request head",
            Kind::Response => "response head",
            Kind::Trailers => "trailer section",
        })
    }
}

/// Something [`parse`] can fill: an [`httparse::Request`], an [`httparse::Response`] or a
/// [`Trailers`] block.
pub trait Section<'b> {
    /// What this section is.
    const KIND: Kind;

    /// Keeps at most `max` of the field slots and returns how many remain, so httparse
    /// itself refuses one field more.
    fn limit_fields(&mut self, max: usize) -> usize;

    /// httparse's parse of `buf` into `self`.
    fn parse_bytes(&mut self, buf: &'b [u8]) -> httparse::Result<usize>;
}

/// Keeps the first `max` slots of `slots`.
fn keep_first<'h, 'b>(slots: &mut &'h mut [httparse::Header<'b>], max: usize) -> usize {
    let all = std::mem::take(slots);
    let n = all.len().min(max);
    *slots = &mut all[..n];
    n
}

impl<'h, 'b> Section<'b> for httparse::Request<'h, 'b> {
    const KIND: Kind = Kind::Request;

    fn limit_fields(&mut self, max: usize) -> usize {
        keep_first(&mut self.headers, max)
    }

    fn parse_bytes(&mut self, buf: &'b [u8]) -> httparse::Result<usize> {
        self.parse(buf)
    }
}

impl<'h, 'b> Section<'b> for httparse::Response<'h, 'b> {
    const KIND: Kind = Kind::Response;

    fn limit_fields(&mut self, max: usize) -> usize {
        keep_first(&mut self.headers, max)
    }

    fn parse_bytes(&mut self, buf: &'b [u8]) -> httparse::Result<usize> {
        self.parse(buf)
    }
}

/// A trailer section being parsed: field lines up to a blank line, no start line (what
/// [`httparse::parse_headers`] reads), kept in the caller's field array.
#[derive(Debug)]
pub struct Trailers<'h, 'b> {
    slots: &'h mut [httparse::Header<'b>],
    len: usize,
}

impl<'h, 'b> Trailers<'h, 'b> {
    /// An empty trailer block that will fill `slots`.
    pub fn new(slots: &'h mut [httparse::Header<'b>]) -> Trailers<'h, 'b> {
        Trailers { slots, len: 0 }
    }

    /// The fields, once [`parse`] has found the section complete (none before).
    pub fn fields(&self) -> &[httparse::Header<'b>] {
        &self.slots[..self.len]
    }
}

impl<'h, 'b> Section<'b> for Trailers<'h, 'b> {
    const KIND: Kind = Kind::Trailers;

    fn limit_fields(&mut self, max: usize) -> usize {
        keep_first(&mut self.slots, max)
    }

    fn parse_bytes(&mut self, buf: &'b [u8]) -> httparse::Result<usize> {
        self.len = 0;
        Ok(match httparse::parse_headers(buf, self.slots)? {
            httparse::Status::Complete((n, fields)) => {
                self.len = fields.len();
                httparse::Status::Complete(n)
            }
            httparse::Status::Partial => httparse::Status::Partial,
        })
    }
}

/// Why a section was refused. For a request head each has the status a server answers it
/// with; a client treats them all as a malformed response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1 syntax (httparse's reason): 400.
    Malformed(Kind, httparse::Error),
    /// A well-formed HTTP version other than 1.0 or 1.1 in a request line: 505.
    Version,
    /// The start line is longer than the limit (the second field): 414.
    LineTooLong(Kind, usize),
    /// The section is larger than the limit (the second field): 431.
    TooLarge(Kind, usize),
    /// More field lines than the limit (the second field): 431.
    TooManyFields(Kind, usize),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HeadError::Malformed(kind, e) => write!(f, "bad {kind}: {e}"),
            HeadError::Version => f.write_str("unsupported HTTP version"),
            HeadError::LineTooLong(kind, limit) => {
                let line = kind.start_line().unwrap_or("line");
                write!(f, "{line} longer than {limit} bytes")
            }
            HeadError::TooLarge(kind, limit) => write!(f, "{kind} larger than {limit} bytes"),
            HeadError::TooManyFields(kind, limit) => {
                write!(f, "more than {limit} {}", kind.fields())
            }
        }
    }
}

impl std::error::Error for HeadError {}

/// Parses the section at the start of `input` into `section`, within `limits`.
///
/// Returns `Ok(Some(n))` when the section is complete and `n` bytes long (what follows,
/// a body say, starts at `input[n]`), `Ok(None)` when more bytes are needed, or the
/// reason to refuse it.
///
/// The verdict does not depend on how the bytes were split: it is the verdict of the
/// shortest prefix of `input` that decides, where a prefix decides when httparse finds
/// the section complete or malformed, when its start line (after any leading empty lines)
/// has grown past `max_line` without a line feed ([`HeadError::LineTooLong`], checked
/// first), or when it has grown past `max_head` ([`HeadError::TooLarge`]). So the parse
/// covers at most `min(max_head, leading empty lines + max_line) + 1` bytes of `input`,
/// and a driver presenting the input again as it grows meets the same answer at the same
/// byte. (A driver fed one byte at a time parses its head once per byte: the cost of
/// deciding at the earliest byte, bounded by `max_head`.)
pub fn parse<'b, S: Section<'b>>(
    input: &'b [u8],
    section: &mut S,
    limits: HeadLimits,
) -> Result<Option<usize>, HeadError> {
    let kind = S::KIND;
    let max_fields = section.limit_fields(limits.max_headers);
    // The prefix that decides: one byte past whichever limit comes first.
    let head_cap = limits.max_head.saturating_add(1);
    let (line_cap, line_too_long) = match kind.start_line() {
        Some(_) => {
            let skip = leading_empty_lines(&input[..input.len().min(head_cap)]);
            let line_cap = skip.saturating_add(limits.max_line).saturating_add(1);
            let too_long = match input.get(skip..input.len().min(line_cap)) {
                // The line so far has more bytes than allowed and no line feed among them.
                Some(line) => line.len() > limits.max_line && !line.contains(&b'\n'),
                None => false,
            };
            (line_cap, too_long)
        }
        // No start line: only the section's size limits it.
        None => (usize::MAX, false),
    };
    let cap = if line_too_long {
        line_cap.min(head_cap)
    } else {
        head_cap
    };
    let window = &input[..input.len().min(cap)];
    let line_limit_met = line_too_long && window.len() == line_cap;
    let undecided = || {
        if line_limit_met {
            Err(HeadError::LineTooLong(kind, limits.max_line))
        } else if window.len() == head_cap {
            Err(HeadError::TooLarge(kind, limits.max_head))
        } else {
            Ok(None)
        }
    };
    match section.parse_bytes(window) {
        Ok(httparse::Status::Complete(n)) if n <= limits.max_head => Ok(Some(n)),
        Ok(httparse::Status::Complete(_)) => Err(HeadError::TooLarge(kind, limits.max_head)),
        Ok(httparse::Status::Partial) => undecided(),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyFields(kind, max_fields)),
        // httparse says "version" for any third token but HTTP/1.x. Only a well-formed
        // version (HTTP/<digit>.<digit>) is one a server does not support (505); anything
        // else is not an HTTP request line at all (400). RFC 9112 §2.3, RFC 9110 §15.6.6.
        // Which one it is shows only once the line is complete, so a split never matters.
        Err(httparse::Error::Version) if kind == Kind::Request => match version_verdict(window) {
            Some(true) => Err(HeadError::Version),
            Some(false) => Err(HeadError::Malformed(kind, httparse::Error::Version)),
            None => undecided(),
        },
        Err(e) => Err(HeadError::Malformed(kind, e)),
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
/// RFC 9112 §2.2 asks a recipient to skip before a request or status line (httparse does).
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

    /// [`parse`] of a section of `kind`, into a fresh field array.
    fn parse_as(kind: Kind, input: &[u8], limits: HeadLimits) -> Result<Option<usize>, HeadError> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match kind {
            Kind::Request => super::parse(input, &mut httparse::Request::new(&mut fields), limits),
            Kind::Response => {
                super::parse(input, &mut httparse::Response::new(&mut fields), limits)
            }
            Kind::Trailers => super::parse(input, &mut Trailers::new(&mut fields), limits),
        }
    }

    fn parse(input: &[u8], limits: HeadLimits) -> Result<Option<usize>, HeadError> {
        parse_as(Kind::Request, input, limits)
    }

    /// The verdict a driver would reach presenting `input` as it grows one byte at a time.
    fn parse_bytewise(
        kind: Kind,
        input: &[u8],
        limits: HeadLimits,
    ) -> Result<Option<usize>, HeadError> {
        for end in 1..=input.len() {
            match parse_as(kind, &input[..end], limits) {
                Ok(None) => {}
                decided => return decided,
            }
        }
        Ok(None)
    }

    fn small() -> HeadLimits {
        HeadLimits {
            max_line: 32,
            max_head: 64,
            max_headers: MAX_HEADERS,
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
        assert_eq!(
            parse(long_line.as_bytes(), l),
            Err(HeadError::LineTooLong(Kind::Request, 32))
        );
        let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(60));
        assert_eq!(
            parse(big_head.as_bytes(), l),
            Err(HeadError::TooLarge(Kind::Request, 64))
        );
        // A request line of exactly the limit (counting its \r) is fine.
        let exact = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(32 - 15));
        assert_eq!(exact.find('\n'), Some(32));
        assert!(matches!(parse(exact.as_bytes(), l), Ok(Some(_))));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse(many.as_bytes(), HeadLimits::default()),
            Err(HeadError::TooManyFields(Kind::Request, MAX_HEADERS))
        );
        // The limit, not the array, decides (and a smaller array is the limit).
        let few = HeadLimits {
            max_headers: 2,
            ..HeadLimits::default()
        };
        let three = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse(three, few),
            Err(HeadError::TooManyFields(Kind::Request, 2))
        );
        let mut fields = [httparse::EMPTY_HEADER; 1];
        let mut req = httparse::Request::new(&mut fields);
        assert_eq!(
            super::parse(three, &mut req, few),
            Err(HeadError::TooManyFields(Kind::Request, 1))
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
                matches!(parse(line, l), Err(HeadError::Malformed(Kind::Request, _))),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", l),
            Err(HeadError::Malformed(Kind::Request, _))
        ));
        // Endless empty lines are a head over the limit, not an endless wait.
        assert_eq!(
            parse(&[b'\n'; 100], l),
            Err(HeadError::TooLarge(Kind::Request, 64))
        );
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
            b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody".to_vec(),
            format!("HTTP/1.1 200 {}\r\n\r\n", "a".repeat(40)).into_bytes(),
            format!("\r\nHTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "b".repeat(60)).into_bytes(),
            b"HTTP/2 200 OK\r\n\r\n".to_vec(),
            b"X-Sum: 42\r\nBad Name: x\r\n\r\n".to_vec(),
            format!("X: {}\r\n\r\n", "b".repeat(70)).into_bytes(),
            b"\r\nX: 1\r\n".to_vec(),
        ];
        for input in &cases {
            for kind in [Kind::Request, Kind::Response, Kind::Trailers] {
                assert_eq!(
                    parse_as(kind, input, l),
                    parse_bytewise(kind, input, l),
                    "{kind}: {:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn responses_and_trailers() {
        let l = small();
        let response = |input: &[u8]| parse_as(Kind::Response, input, l);
        let trailers = |input: &[u8]| parse_as(Kind::Trailers, input, l);
        // A response head, after empty lines, with a body behind it.
        let head = b"\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(response(&[&head[..], b"x"].concat()), Ok(Some(head.len())));
        assert_eq!(response(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        // Any version httparse refuses is simply malformed: there is no 505 to answer.
        assert_eq!(
            response(b"HTTP/2.0 200 OK\r\n\r\n"),
            Err(HeadError::Malformed(
                Kind::Response,
                httparse::Error::Version
            ))
        );
        let long = format!("HTTP/1.1 200 {}", "a".repeat(40));
        assert_eq!(
            response(long.as_bytes()),
            Err(HeadError::LineTooLong(Kind::Response, 32))
        );
        // Trailers: an empty first line is an empty section, not a line to skip.
        assert_eq!(trailers(b"\r\nX: 1\r\n\r\n"), Ok(Some(2)));
        assert_eq!(trailers(b"X-Sum: 42\r\n\r\nrest"), Ok(Some(13)));
        assert_eq!(trailers(b"X-Sum: 42\r\n"), Ok(None));
        // No start line, so no line limit: only the section's size.
        let one_long = format!("X: {}", "b".repeat(40));
        assert_eq!(trailers(one_long.as_bytes()), Ok(None));
        let too_big = format!("X: {}", "b".repeat(70));
        assert_eq!(
            trailers(too_big.as_bytes()),
            Err(HeadError::TooLarge(Kind::Trailers, 64))
        );
        assert!(matches!(
            trailers(b"Bad Trailer\r\n\r\n"),
            Err(HeadError::Malformed(Kind::Trailers, _))
        ));
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut block = Trailers::new(&mut fields);
        assert_eq!(
            super::parse(b"A: 1\r\nB: 2\r\n\r\n", &mut block, HeadLimits::TRAILERS),
            Ok(Some(14))
        );
        let names: Vec<_> = block.fields().iter().map(|f| f.name).collect();
        assert_eq!(names, ["A", "B"]);
    }

    #[test]
    fn errors_say_what_and_how_much() {
        let cases = [
            (
                HeadError::Malformed(Kind::Response, httparse::Error::Token),
                "bad response head: invalid token",
            ),
            (HeadError::Version, "unsupported HTTP version"),
            (
                HeadError::LineTooLong(Kind::Request, 8192),
                "request line longer than 8192 bytes",
            ),
            (
                HeadError::TooLarge(Kind::Trailers, 65536),
                "trailer section larger than 65536 bytes",
            ),
            (
                HeadError::TooManyFields(Kind::Request, 100),
                "more than 100 header fields",
            ),
            (
                HeadError::TooManyFields(Kind::Trailers, 100),
                "more than 100 trailer fields",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
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
