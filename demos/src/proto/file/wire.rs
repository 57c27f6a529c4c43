//! The wire format: the header `FILE <name> <size>\n` (its names, its size) and the
//! digest text of the reply; see the [module docs](super).

use super::{MAX_HEADER, MAX_NAME};
use std::fmt;

const PREFIX: &[u8] = b"FILE ";

/// Why a name is refused; see the [module docs](super#names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME`] bytes.
    TooLong,
    /// The name is not UTF-8.
    NotUtf8,
    /// The name contains `/` or `\`.
    Separator,
    /// The name contains `..`.
    DotDot,
    /// The name starts with `.`.
    LeadingDot,
    /// The name contains a NUL byte.
    Nul,
    /// The name contains a space.
    Space,
    /// The name contains a control character other than NUL.
    Control,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "empty",
            NameError::TooLong => "longer than 255 bytes",
            NameError::NotUtf8 => "not UTF-8",
            NameError::Separator => "contains a path separator",
            NameError::DotDot => "contains ..",
            NameError::LeadingDot => "starts with .",
            NameError::Nul => "contains NUL",
            NameError::Space => "contains a space",
            NameError::Control => "contains a control character",
        })
    }
}

impl std::error::Error for NameError {}

/// Checks `name` against the rules in the [module docs](super#names); returns it as text.
pub fn check_name(name: &[u8]) -> Result<&str, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong);
    }
    // The byte checks come first so that a name with NUL or `/` is called that, even
    // when it is not UTF-8 as well.
    if name.contains(&0) {
        return Err(NameError::Nul);
    }
    if name.iter().any(|&b| b == b'/' || b == b'\\') {
        return Err(NameError::Separator);
    }
    if name.starts_with(b".") {
        return Err(NameError::LeadingDot);
    }
    if name.windows(2).any(|w| w == b"..") {
        return Err(NameError::DotDot);
    }
    let text = std::str::from_utf8(name).map_err(|_| NameError::NotUtf8)?;
    if text.contains(' ') {
        return Err(NameError::Space);
    }
    if text.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    Ok(text)
}

/// A parsed header: the file's name and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The name, already checked by [`check_name`].
    pub name: &'a str,
    /// The number of bytes that follow the header.
    pub size: u64,
}

/// The result of an incremental parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes are needed; none were consumed.
    Partial,
    /// A whole value, and how many bytes it took (its line ending included).
    Complete(T, usize),
}

/// Why a receiver refuses a transfer: the text after `ERR ` in its reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The first line is not `FILE <name> <size>`.
    Malformed,
    /// No newline within [`MAX_HEADER`] bytes.
    HeaderTooLong,
    /// The name breaks a rule.
    BadName(NameError),
    /// The size is not decimal digits.
    BadSize,
    /// The size is over the receiver's limit.
    TooLarge {
        /// The receiver's limit, in bytes.
        limit: u64,
    },
    /// A file of that name exists already.
    Exists,
    /// The store failed (the cause is logged by the receiver).
    CannotStore,
    /// The sender closed before the last byte.
    Truncated {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        size: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed => f.write_str("malformed header: expected FILE <name> <size>"),
            Refusal::HeaderTooLong => f.write_str("header too long"),
            Refusal::BadName(e) => write!(f, "bad name: {e}"),
            Refusal::BadSize => f.write_str("bad size"),
            Refusal::TooLarge { limit } => write!(f, "too large: the limit is {limit} bytes"),
            Refusal::Exists => f.write_str("exists"),
            Refusal::CannotStore => f.write_str("cannot store"),
            Refusal::Truncated { got, size } => write!(f, "truncated: got {got} of {size} bytes"),
        }
    }
}

/// Parses `FILE <name> <size>\n` from the start of `input`, refusing sizes over
/// `max_size`. Input that cannot become a header is refused as soon as that is clear
/// (`GET /` is refused at its first byte), not when its newline arrives.
pub fn parse_header(input: &[u8], max_size: u64) -> Result<Parsed<Header<'_>>, Refusal> {
    let n = input.len().min(PREFIX.len());
    if input[..n] != PREFIX[..n] {
        return Err(Refusal::Malformed);
    }
    let Some(nl) = input.iter().position(|&b| b == b'\n') else {
        return if input.len() >= MAX_HEADER {
            Err(Refusal::HeaderTooLong)
        } else {
            Ok(Parsed::Partial)
        };
    };
    if nl >= MAX_HEADER {
        return Err(Refusal::HeaderTooLong);
    }
    let line = &input[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // A newline inside "FILE " itself leaves no prefix to strip.
    let rest = line.strip_prefix(PREFIX).ok_or(Refusal::Malformed)?;
    // The size is the last field; everything before it is the name (so a name with a
    // space is refused for its space, not as a malformed line).
    let sp = rest
        .iter()
        .rposition(|&b| b == b' ')
        .ok_or(Refusal::Malformed)?;
    let name = check_name(&rest[..sp]).map_err(Refusal::BadName)?;
    let size = parse_size(&rest[sp + 1..], max_size)?;
    Ok(Parsed::Complete(Header { name, size }, nl + 1))
}

fn parse_size(digits: &[u8], max_size: u64) -> Result<u64, Refusal> {
    // `u64::from_str` would also take a leading `+`: check the digits ourselves.
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Refusal::BadSize);
    }
    let too_large = Refusal::TooLarge { limit: max_size };
    // All digits, so the only way to fail is overflow: more than any limit.
    let size: u64 = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(too_large.clone())?;
    if size > max_size {
        return Err(too_large);
    }
    Ok(size)
}

/// Lowercase hex of `bytes`, as `OK` carries a digest.
pub(super) fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
