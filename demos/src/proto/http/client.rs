//! The `get` client's HTTP/1.1 exchange, as a sans-I/O machine: one request out, one
//! response in, streamed to a sink.
//!
//! [`HttpClient`] sends its [`Request`] when the connection opens, then reads the response:
//! the status line and header fields (parsed by [`parse::parse`], the head parser it
//! shares with the server, within [`HeadLimits::RESPONSE`]), then the body, framed the way
//! RFC 9112 §6.3 says, and for a chunked body the trailer section (the same parser, within
//! [`HeadLimits::TRAILERS`]). Everything
//! it learns goes to a [`ResponseSink`] the caller supplies: the head once, the body as it
//! arrives, piece by piece, any trailer fields, and finally the outcome, exactly once,
//! whatever happens (a refused connect included). The machine keeps no body bytes, so a
//! download of any size costs the same memory: the driver's read buffer plus whatever the
//! sink keeps.
//!
//! # States
//!
//! ```text
//!   open: request queued
//!   ──────────────────▶ Head ── 1xx (not 101): skipped, stay ─┐
//!                        │ ◀─────────────────────────────────┘
//!                        │ final head: sink.head(), then the framing decides:
//!      ┌─────────────────┼───────────────────┬────────────────────┐
//!      │ HEAD, 204, 304, │ Content-Length: n │ chunked            │ neither
//!      │ 1xx, length 0   ▼                   ▼                    ▼
//!      │              Length ─ n bytes ─┐  ChunkSize ◀─────┐    UntilClose ── EOF ─┐
//!      │                                │    │ size > 0    │                       │
//!      │                                │    ▼             │ CRLF                  │
//!      │                                │  ChunkData ─▶ ChunkDataEnd               │
//!      │                                │    │ size 0                              │
//!      │                                │    ▼                                     │
//!      │                                │  Trailers ─ blank line ─┐                │
//!      ▼                                ▼                         ▼                ▼
//!    Done ◀─────────────────────────────┴─────────────────────────┴────────────────┘
//!   (sink.done(Ok), close)      any error: Failed (sink.done(Err), abort)
//! ```
//!
//! Every change of state is logged at trace level as `http-client state=<old>=><new>`.
//!
//! # Framing (RFC 9112 §6.3)
//!
//! 1. A response to `HEAD`, and any `1xx`, `204` or `304`, has no body, whatever its
//!    headers say.
//! 2. `Transfer-Encoding` ending in `chunked`: the chunked coding is decoded (sizes are
//!    strict hexadecimal; extensions are checked and ignored; trailer fields go to the
//!    sink). Ending in anything else: the body runs until the server closes. With a
//!    `Content-Length` as well, or in an HTTP/1.0 response, the framing is ambiguous
//!    (the classic request-smuggling shape) and the response is refused as malformed.
//! 3. `Content-Length`: exactly that many bytes. Several fields (or a list) must agree.
//! 4. Neither: the body runs until the server closes the connection.
//!
//! A body that ends early (the connection closes before the `Content-Length` is reached,
//! or before the last chunk and the trailer section) is a [`ResponseError::Truncated`],
//! never a short success; that is the whole point of framing. Bytes after the end of the
//! response are left unconsumed (the request asked for `Connection: close`, so there
//! should be none).
//!
//! # Limits
//!
//! | limit | value | precedent |
//! |---|---|---|
//! | response head | 64 KiB ([`MAX_RESPONSE_HEAD`](parse::MAX_RESPONSE_HEAD)) | Squid's `reply_header_max_size 64 KB` |
//! | header fields | 100 ([`MAX_HEADERS`]) | hyper's default, HAProxy's `tune.http.maxhdr` (101) |
//! | chunk-size line (with extensions) | 4 KiB ([`MAX_CHUNK_LINE`]) | Go's `net/http` chunked reader (`maxLineLength = 4096`) |
//! | trailer section | 64 KiB, 100 fields | the same as a head: it is one |
//!
//! The head and trailer limits are [`parse`]'s (see its module docs); the chunk-size line
//! is framing, so it is checked here. Each limit bounds how much unconsumed input the
//! machine may ask its driver to keep, so "need more bytes" can never grow without end.
//!
//! # Timeouts
//!
//! The machine reads no clock; it compares [`Out::now`] with two optional deadlines:
//! the whole head must arrive within [`HttpClient::with_head_timeout`] of the connection
//! opening (a deadline, not re-armed by each byte, so a server trickling a byte a second
//! cannot hold the client forever), and no gap between received bytes may exceed
//! [`HttpClient::with_idle_timeout`].
//!
//! ```
//! use sockloop_demos::proto::http::client::{Collect, HttpClient, Request};
//! use sockloop::proto::{Out, Protocol};
//! use std::time::Instant;
//!
//! let collect = Collect::new();
//! let mut client = HttpClient::new(Request::get("example.org", "/").unwrap(), collect.clone());
//! let mut sent = Vec::new();
//! client.handle_open(&mut Out::new(&mut sent, Instant::now()));
//! assert!(sent.starts_with(b"GET / HTTP/1.1\r\nHost: example.org\r\n"));
//!
//! let response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
//! let mut out = Out::new(&mut sent, Instant::now());
//! assert_eq!(client.handle_input(response, &mut out), Ok(response.len()));
//! let got = collect.take();
//! assert_eq!(got.head.unwrap().status, 200);
//! assert_eq!(got.body, b"hello");
//! assert_eq!(got.result.unwrap().unwrap().body_bytes, 5);
//! ```

use super::parse::{self, HeadError, HeadLimits, MAX_HEADERS};
use crate::proto::{CloseReason, Out, PeerError, Protocol};
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The longest chunk-size line accepted, extensions and line ending included: 4 KiB, the
/// limit of Go's `net/http` chunked reader. A size needs at most 16 hex digits; the rest
/// is room for extensions, which nobody uses.
pub const MAX_CHUNK_LINE: usize = 4096;

// ---------------------------------------------------------------------------------------
// The request.

/// The methods the client sends. Both are safe and carry no body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`: the head and the body.
    Get,
    /// `HEAD`: the head only; the response has no body whatever its headers say.
    Head,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
        })
    }
}

/// The one request an [`HttpClient`] sends: a method, a `Host` and a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    method: Method,
    host: String,
    target: String,
}

impl Request {
    /// A request for `target` (origin form: `/path?query`) on `host` (the `Host` field's
    /// value: `name`, `name:port`, `[v6]:port`).
    ///
    /// Errors if either would break the request line or the header: `target` must start
    /// with `/`, and neither may contain spaces, control bytes or non-ASCII bytes
    /// (percent-encode them).
    pub fn new(method: Method, host: &str, target: &str) -> Result<Request, String> {
        let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if host.is_empty() || !visible(host) {
            return Err(format!(
                "host {host:?} must be non-empty visible ASCII (no spaces or control bytes)"
            ));
        }
        if !target.starts_with('/') {
            return Err(format!("request target {target:?} must start with '/'"));
        }
        if !visible(target) {
            return Err(format!(
                "request target {target:?} contains a space, a control byte or non-ASCII: \
                 percent-encode it (a space is %20)"
            ));
        }
        Ok(Request {
            method,
            host: host.to_owned(),
            target: target.to_owned(),
        })
    }

    /// A `GET` request; see [`Request::new`].
    pub fn get(host: &str, target: &str) -> Result<Request, String> {
        Request::new(Method::Get, host, target)
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The bytes on the wire. `Connection: close` tells the server this is the only
    /// request, so a body without framing can end with the connection; no
    /// `Accept-Encoding`, so the body arrives as stored (identity).
    pub fn to_bytes(&self) -> Vec<u8> {
        format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sockloop/{}\r\nAccept: */*\r\n\
             Connection: close\r\n\r\n",
            self.method,
            self.target,
            self.host,
            env!("CARGO_PKG_VERSION")
        )
        .into_bytes()
    }
}

// ---------------------------------------------------------------------------------------
// What the machine reports.

/// One header or trailer field, as received (the name's case is kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field name (a token: ASCII by construction).
    pub name: String,
    /// The field value, without surrounding whitespace. Usually ASCII, but any bytes but
    /// CR, LF and NUL are allowed on the wire, so it is kept as bytes.
    pub value: Vec<u8>,
}

impl Field {
    fn from_httparse(h: &httparse::Header<'_>) -> Field {
        Field {
            name: h.name.to_owned(),
            value: h.value.to_vec(),
        }
    }
}

impl fmt::Display for Field {
    /// `Name: value`, the value decoded lossily as UTF-8.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, String::from_utf8_lossy(&self.value))
    }
}

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, a 1xx, 204 or 304.
    None,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// The chunked transfer coding, decoded by the machine.
    Chunked,
    /// Whatever arrives until the server closes the connection.
    UntilClose,
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Framing::None => f.write_str("no body"),
            Framing::Length(n) => write!(f, "Content-Length: {n}"),
            Framing::Chunked => f.write_str("chunked"),
            Framing::UntilClose => f.write_str("until the connection closes"),
        }
    }
}

/// The status line and header fields of the final response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The minor version: 1 for `HTTP/1.1`, 0 for `HTTP/1.0`.
    pub version: u8,
    /// The status code, 200 to 599 (1xx interim responses are skipped).
    pub status: u16,
    /// The reason phrase, empty if the server sent none (or one that is not text).
    pub reason: String,
    /// The header fields in the order received.
    pub fields: Vec<Field>,
    /// How the body is delimited.
    pub framing: Framing,
}

impl Head {
    /// `HTTP/1.1 200 OK`.
    pub fn status_line(&self) -> String {
        let mut line = format!("HTTP/1.{} {}", self.version, self.status);
        if !self.reason.is_empty() {
            line.push(' ');
            line.push_str(&self.reason);
        }
        line
    }

    /// The value of the first field named `name` (compared ignoring ASCII case).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value.as_slice())
    }

    /// The `Location` of a redirect (a 3xx status), decoded lossily as UTF-8.
    pub fn redirect(&self) -> Option<String> {
        if (300..400).contains(&self.status) {
            self.field("location")
                .map(|v| String::from_utf8_lossy(v).into_owned())
        } else {
            None
        }
    }
}

impl fmt::Display for Head {
    /// The status line and one line per field, each ending in `\n`, as `curl -i` shows
    /// them (values decoded lossily as UTF-8).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.status_line())?;
        for field in &self.fields {
            writeln!(f, "{field}")?;
        }
        Ok(())
    }
}

/// A response received in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The final status code.
    pub status: u16,
    /// Body bytes handed to the sink (decoded: chunk framing not counted).
    pub body_bytes: u64,
    /// How the body was delimited.
    pub framing: Framing,
}

/// Which part of the response the machine was waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The status line and header fields.
    Head,
    /// The body (or the chunked coding's trailer section).
    Body,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Head => "waiting for the response head",
            Stage::Body => "reading the body",
        })
    }
}

/// Why an exchange did not produce a whole response, sorted by blame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// The connect failed (`ConnectionRefused`: nothing listens on that port).
    ConnectFailed(io::ErrorKind),
    /// The connect did not complete within the driver's connect timeout.
    ConnectTimeout,
    /// The response head was not complete this long after the connection opened.
    HeadTimeout(Duration),
    /// No byte arrived for this long.
    IdleTimeout {
        /// The idle timeout.
        after: Duration,
        /// What the machine was waiting for.
        stage: Stage,
        /// Body bytes received before the silence.
        body_bytes: u64,
    },
    /// The server broke HTTP: an unparsable head, bad framing, a bad chunk, a limit
    /// exceeded.
    Malformed(String),
    /// The connection closed before the response was complete.
    Truncated(String),
    /// A read or write on the connection failed (reset by the server, say).
    Io {
        /// The error.
        kind: io::ErrorKind,
        /// What the machine was waiting for.
        stage: Stage,
    },
    /// The sink could not take what it was given (a full disk, a closed stdout). The sink
    /// knows the details: it returned the error.
    Sink(String),
    /// The connection ended some other way (the driver shut down, say).
    Closed(CloseReason),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::ConnectFailed(kind) => {
                write!(f, "connect failed: {}", io::Error::from(*kind))
            }
            ResponseError::ConnectTimeout => f.write_str("connect timed out"),
            ResponseError::HeadTimeout(d) => {
                write!(f, "no complete response head within {d:?} of connecting")
            }
            ResponseError::IdleTimeout {
                after,
                stage,
                body_bytes,
            } => write!(
                f,
                "no data for {after:?} while {stage} ({body_bytes} body bytes received)"
            ),
            ResponseError::Malformed(why) => write!(f, "malformed response: {why}"),
            ResponseError::Truncated(why) => write!(f, "truncated response: {why}"),
            ResponseError::Io { kind, stage } => {
                write!(
                    f,
                    "connection failed while {stage}: {}",
                    io::Error::from(*kind)
                )
            }
            ResponseError::Sink(why) => write!(f, "writing the response failed: {why}"),
            ResponseError::Closed(reason) => write!(f, "connection closed early: {reason}"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// Where an [`HttpClient`] puts what it receives.
///
/// Calls come in this order: [`head`](ResponseSink::head) once (if a final head
/// arrives), [`body`](ResponseSink::body) any number of times, each slice a consecutive
/// piece of the decoded body, [`trailers`](ResponseSink::trailers) at most once (chunked
/// bodies only), and [`done`](ResponseSink::done) exactly once, last, with the outcome.
/// An error returned from `head`, `body` or `trailers` ends the exchange: the connection
/// is aborted and `done` is called with [`ResponseError::Sink`].
pub trait ResponseSink {
    /// The final response head arrived.
    fn head(&mut self, head: &Head) -> io::Result<()>;

    /// The next piece of the body.
    fn body(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// The trailer fields of a chunked body (called even when there are none).
    fn trailers(&mut self, _fields: &[Field]) -> io::Result<()> {
        Ok(())
    }

    /// The exchange is over: the whole response was received, or why not.
    fn done(&mut self, result: Result<Summary, ResponseError>);
}

/// What a [`Collect`] sink has gathered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// The final head, if one arrived.
    pub head: Option<Head>,
    /// The whole body, in memory.
    pub body: Vec<u8>,
    /// The trailer fields.
    pub trailers: Vec<Field>,
    /// The outcome, once the exchange is over.
    pub result: Option<Result<Summary, ResponseError>>,
    /// How many times [`ResponseSink::body`] was called.
    pub body_calls: usize,
}

/// A sink that keeps everything in memory, shared with whoever holds a clone: for tests
/// and for small responses (the body is not bounded).
#[derive(Clone, Debug, Default)]
pub struct Collect(Rc<RefCell<Collected>>);

impl Collect {
    /// An empty collector.
    pub fn new() -> Collect {
        Collect::default()
    }

    /// Takes what has been gathered so far, leaving the collector empty.
    pub fn take(&self) -> Collected {
        std::mem::take(&mut *self.0.borrow_mut())
    }

    /// Returns true if and only if the exchange is over.
    pub fn is_done(&self) -> bool {
        self.0.borrow().result.is_some()
    }
}

impl ResponseSink for Collect {
    fn head(&mut self, head: &Head) -> io::Result<()> {
        self.0.borrow_mut().head = Some(head.clone());
        Ok(())
    }

    fn body(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut c = self.0.borrow_mut();
        c.body.extend_from_slice(bytes);
        c.body_calls += 1;
        Ok(())
    }

    fn trailers(&mut self, fields: &[Field]) -> io::Result<()> {
        self.0.borrow_mut().trailers = fields.to_vec();
        Ok(())
    }

    fn done(&mut self, result: Result<Summary, ResponseError>) {
        let mut c = self.0.borrow_mut();
        assert!(c.result.is_none(), "done called twice");
        c.result = Some(result);
    }
}

// ---------------------------------------------------------------------------------------
// The machine.

/// Where an [`HttpClient`] is in the response. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for (the rest of) the status line and header fields.
    Head,
    /// In a `Content-Length` body with `remaining` bytes to go.
    Length {
        /// Body bytes still to come.
        remaining: u64,
    },
    /// Waiting for a chunk-size line.
    ChunkSize,
    /// In a chunk's data, `remaining` bytes to go.
    ChunkData {
        /// Bytes of this chunk still to come.
        remaining: u64,
    },
    /// A chunk's data is complete; its CRLF must follow.
    ChunkDataEnd,
    /// The last chunk arrived; the trailer section (possibly empty) must follow.
    Trailers,
    /// The body runs until the server closes.
    UntilClose,
    /// The whole response was received.
    Done,
    /// The exchange failed; the sink has been told why.
    Failed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Head => f.write_str("Head"),
            State::Length { remaining } => write!(f, "Length({remaining} to go)"),
            State::ChunkSize => f.write_str("ChunkSize"),
            State::ChunkData { remaining } => write!(f, "ChunkData({remaining} to go)"),
            State::ChunkDataEnd => f.write_str("ChunkDataEnd"),
            State::Trailers => f.write_str("Trailers"),
            State::UntilClose => f.write_str("UntilClose"),
            State::Done => f.write_str("Done"),
            State::Failed => f.write_str("Failed"),
        }
    }
}

/// Why a step could not go on.
enum Fail {
    /// The server broke the protocol.
    Peer(String),
    /// The sink refused.
    Sink(io::Error),
}

impl From<HeadError> for Fail {
    fn from(e: HeadError) -> Fail {
        Fail::Peer(e.to_string())
    }
}

/// The client side of one HTTP/1.1 exchange on one connection. See the
/// [module docs](self).
pub struct HttpClient {
    request: Request,
    sink: Box<dyn ResponseSink>,
    state: State,
    head_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    /// When the head must be complete (set on open).
    head_deadline: Option<Instant>,
    /// When the last byte arrived (or the connection opened).
    last_input: Option<Instant>,
    /// Bytes consumed so far (interim responses, head, body, framing).
    consumed: u64,
    /// Decoded body bytes handed to the sink.
    body_bytes: u64,
    status: u16,
    framing: Framing,
    /// How much of the unconsumed input has been searched for the blank line that ends a
    /// head or trailer section, without finding it (see `section_may_end`).
    scanned: usize,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("request", &self.request)
            .field("state", &self.state)
            .field("body_bytes", &self.body_bytes)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A machine that sends `request` when the connection opens and reports the response
    /// to `sink`. No timeouts unless set.
    pub fn new(request: Request, sink: impl ResponseSink + 'static) -> HttpClient {
        HttpClient {
            request,
            sink: Box::new(sink),
            state: State::Head,
            head_timeout: None,
            idle_timeout: None,
            head_deadline: None,
            last_input: None,
            consumed: 0,
            body_bytes: 0,
            status: 0,
            framing: Framing::None,
            scanned: 0,
        }
    }

    /// The whole response head must arrive within `limit` of the connection opening.
    pub fn with_head_timeout(mut self, limit: Duration) -> HttpClient {
        self.head_timeout = Some(limit);
        self
    }

    /// At most `limit` may pass between received bytes (and from opening to the first).
    pub fn with_idle_timeout(mut self, limit: Duration) -> HttpClient {
        self.idle_timeout = Some(limit);
        self
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Returns true if and only if the sink has been given the outcome.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    fn set_state(&mut self, next: State) {
        if std::mem::discriminant(&self.state) != std::mem::discriminant(&next) {
            log::trace!("http-client state={}=>{}", self.state, next);
        }
        self.state = next;
    }

    fn stage(&self) -> Stage {
        if self.state == State::Head {
            Stage::Head
        } else {
            Stage::Body
        }
    }

    /// Ends the exchange: tells the sink, once.
    fn finish(&mut self, result: Result<Summary, ResponseError>) {
        if self.is_finished() {
            return;
        }
        match &result {
            Ok(s) => log::debug!(
                "http-client: response complete: status {}, {} body bytes ({})",
                s.status,
                s.body_bytes,
                s.framing
            ),
            Err(e) => log::debug!("http-client: failed: {e}"),
        }
        self.set_state(if result.is_ok() {
            State::Done
        } else {
            State::Failed
        });
        self.sink.done(result);
    }

    fn succeed(&mut self) {
        self.finish(Ok(Summary {
            status: self.status,
            body_bytes: self.body_bytes,
            framing: self.framing,
        }));
    }

    fn body(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.body_bytes += bytes.len() as u64;
        self.sink.body(bytes).map_err(Fail::Sink)
    }

    /// One step in the current state over the unconsumed `input`: `Some(n)` if it made
    /// progress (consumed `n` bytes, possibly none while changing state), `None` if it
    /// needs more input first.
    fn step(&mut self, input: &[u8]) -> Result<Option<usize>, Fail> {
        match self.state {
            State::Head => self.step_head(input),
            State::Length { remaining } => {
                if input.is_empty() {
                    return Ok(None);
                }
                let take = remaining.min(input.len() as u64) as usize;
                self.body(&input[..take])?;
                let remaining = remaining - take as u64;
                if remaining == 0 {
                    self.succeed();
                } else {
                    self.set_state(State::Length { remaining });
                }
                Ok(Some(take))
            }
            State::ChunkSize => self.step_chunk_size(input),
            State::ChunkData { remaining } => {
                if input.is_empty() {
                    return Ok(None);
                }
                let take = remaining.min(input.len() as u64) as usize;
                self.body(&input[..take])?;
                let remaining = remaining - take as u64;
                self.set_state(if remaining == 0 {
                    State::ChunkDataEnd
                } else {
                    State::ChunkData { remaining }
                });
                Ok(Some(take))
            }
            State::ChunkDataEnd => match input {
                [] | [b'\r'] => Ok(None),
                [b'\n', ..] => {
                    self.set_state(State::ChunkSize);
                    Ok(Some(1))
                }
                [b'\r', b'\n', ..] => {
                    self.set_state(State::ChunkSize);
                    Ok(Some(2))
                }
                _ => Err(Fail::Peer(
                    "chunk data longer than its declared size (no CRLF where the chunk ends)"
                        .into(),
                )),
            },
            State::Trailers => self.step_trailers(input),
            State::UntilClose => {
                self.body(input)?;
                Ok((!input.is_empty()).then_some(input.len()))
            }
            State::Done | State::Failed => Ok(None),
        }
    }

    /// Whether `input` may now hold a whole head or trailer section, or is over `limits`
    /// (for [`parse::parse`] to say so): a blank line arrived since the last look, or the
    /// input starts with a line end (an empty trailer section, or empty lines before a
    /// status line). Only the bytes not searched before are searched, so a section that
    /// trickles in a byte at a time is parsed once it can be complete, not once per byte.
    fn section_may_end(&mut self, input: &[u8], limits: HeadLimits) -> bool {
        let new = &input[self.scanned.saturating_sub(2).min(input.len())..];
        let blank = new.windows(2).any(|w| w == b"\n\n") || new.windows(3).any(|w| w == b"\n\r\n");
        self.scanned = input.len();
        blank
            || input.starts_with(b"\n")
            || input.starts_with(b"\r\n")
            || input.len() > limits.max_head
    }

    fn step_head(&mut self, input: &[u8]) -> Result<Option<usize>, Fail> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut fields);
        if !self.section_may_end(input, HeadLimits::RESPONSE) {
            return Ok(None);
        }
        // Empty lines before a status line are skipped (and count toward the limit).
        let Some(n) = parse::parse(input, &mut resp, HeadLimits::RESPONSE)? else {
            return Ok(None);
        };
        self.scanned = 0;
        let (version, status) = (resp.version.unwrap_or(1), resp.code.unwrap_or(0));
        if status == 101 {
            return Err(Fail::Peer(
                "101 Switching Protocols, but no upgrade was requested".into(),
            ));
        }
        if (100..200).contains(&status) {
            // RFC 9110 §15.2: a client must accept interim responses it did not ask
            // for (103 Early Hints, a stray 100 Continue) and wait for the final one.
            log::debug!("http-client: skipping interim response {status}");
            return Ok(Some(n));
        }
        if !(200..600).contains(&status) {
            return Err(Fail::Peer(format!("status code {status} out of range")));
        }
        let framing =
            framing(self.request.method, version, status, resp.headers).map_err(Fail::Peer)?;
        let head = Head {
            version,
            status,
            reason: resp.reason.unwrap_or("").to_owned(),
            fields: resp.headers.iter().map(Field::from_httparse).collect(),
            framing,
        };
        log::debug!("http-client: {} ({framing})", head.status_line());
        self.status = status;
        self.framing = framing;
        self.sink.head(&head).map_err(Fail::Sink)?;
        match framing {
            Framing::None | Framing::Length(0) => self.succeed(),
            Framing::Length(remaining) => self.set_state(State::Length { remaining }),
            Framing::Chunked => self.set_state(State::ChunkSize),
            Framing::UntilClose => self.set_state(State::UntilClose),
        }
        Ok(Some(n))
    }

    fn step_chunk_size(&mut self, input: &[u8]) -> Result<Option<usize>, Fail> {
        let window = &input[..input.len().min(MAX_CHUNK_LINE)];
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            if input.len() >= MAX_CHUNK_LINE {
                return Err(Fail::Peer(format!(
                    "chunk-size line longer than {MAX_CHUNK_LINE} bytes"
                )));
            }
            return Ok(None);
        };
        let line = &input[..nl];
        // CRLF, or a bare LF (RFC 9112 §2.2 lets a recipient accept one).
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let size = parse_chunk_size(line).map_err(Fail::Peer)?;
        if size == 0 {
            self.set_state(State::Trailers);
        } else {
            self.set_state(State::ChunkData { remaining: size });
        }
        Ok(Some(nl + 1))
    }

    fn step_trailers(&mut self, input: &[u8]) -> Result<Option<usize>, Fail> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut block = parse::Trailers::new(&mut fields);
        if !self.section_may_end(input, HeadLimits::TRAILERS) {
            return Ok(None);
        }
        let Some(n) = parse::parse(input, &mut block, HeadLimits::TRAILERS)? else {
            return Ok(None);
        };
        self.scanned = 0;
        let trailers: Vec<Field> = block.fields().iter().map(Field::from_httparse).collect();
        self.sink.trailers(&trailers).map_err(Fail::Sink)?;
        self.succeed();
        Ok(Some(n))
    }

    /// The earliest deadline that applies now, and which one it is.
    fn deadline(&self) -> Option<(Instant, Timeout)> {
        if self.is_finished() {
            return None;
        }
        let head = self
            .head_deadline
            .filter(|_| self.state == State::Head)
            .map(|at| (at, Timeout::Head));
        let idle = self
            .last_input
            .zip(self.idle_timeout)
            .map(|(last, d)| (last + d, Timeout::Idle));
        match (head, idle) {
            (Some(h), Some(i)) => Some(if i.0 < h.0 { i } else { h }),
            (h, i) => h.or(i),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timeout {
    Head,
    Idle,
}

impl Protocol for HttpClient {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        let now = out.now();
        self.head_deadline = self.head_timeout.map(|d| now + d);
        self.last_input = Some(now);
        out.push(&self.request.to_bytes());
        log::debug!(
            "http-client: sent {} {} to {}",
            self.request.method,
            self.request.target,
            self.request.host
        );
    }

    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        if !input.is_empty() {
            self.last_input = Some(out.now());
        }
        let mut used = 0;
        while !self.is_finished() {
            match self.step(&input[used..]) {
                Ok(Some(n)) => used += n,
                Ok(None) => break,
                Err(Fail::Peer(why)) => {
                    self.consumed += used as u64;
                    let error = PeerError::new(format!("malformed response: {why}"));
                    self.finish(Err(ResponseError::Malformed(why)));
                    out.abort();
                    return Err(error);
                }
                Err(Fail::Sink(e)) => {
                    self.finish(Err(ResponseError::Sink(e.to_string())));
                    out.abort();
                    break;
                }
            }
        }
        self.consumed += used as u64;
        if self.state == State::Done {
            // The one response is in; the server closes too (we asked `Connection: close`).
            out.close();
        }
        Ok(used)
    }

    fn handle_eof(&mut self, rest: &[u8], _out: &mut Out<'_>) -> Result<(), PeerError> {
        let why = match self.state {
            State::UntilClose => {
                self.succeed();
                return Ok(());
            }
            State::Done | State::Failed => return Ok(()),
            State::Head if self.consumed == 0 && rest.is_empty() => {
                "the server closed the connection without sending a response".to_owned()
            }
            State::Head if rest.is_empty() => {
                "the server closed the connection after an interim (1xx) response, \
                 without the final one"
                    .to_owned()
            }
            State::Head => format!(
                "the connection closed in the middle of the response head ({} bytes of it \
                 received)",
                rest.len()
            ),
            State::Length { remaining } => format!(
                "body cut short: the connection closed after {} of {} bytes (Content-Length)",
                self.body_bytes,
                self.body_bytes + remaining
            ),
            State::ChunkSize | State::ChunkData { .. } | State::ChunkDataEnd => format!(
                "chunked body cut short: the connection closed before the last chunk \
                 ({} bytes of data received)",
                self.body_bytes
            ),
            State::Trailers => format!(
                "chunked body cut short: the connection closed in the trailer section \
                 ({} bytes of data received)",
                self.body_bytes
            ),
        };
        let error = PeerError::new(format!("truncated response: {why}"));
        self.finish(Err(ResponseError::Truncated(why)));
        Err(error)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline().map(|(at, _)| at)
    }

    fn handle_timeout(&mut self, out: &mut Out<'_>) {
        let Some((at, which)) = self.deadline() else {
            return;
        };
        if out.now() < at {
            return;
        }
        let error = match which {
            Timeout::Head => ResponseError::HeadTimeout(self.head_timeout.unwrap_or_default()),
            Timeout::Idle => ResponseError::IdleTimeout {
                after: self.idle_timeout.unwrap_or_default(),
                stage: self.stage(),
                body_bytes: self.body_bytes,
            },
        };
        self.finish(Err(error));
        out.abort();
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        if self.is_finished() {
            return;
        }
        let error = match reason {
            CloseReason::ConnectFailed(kind) => ResponseError::ConnectFailed(*kind),
            CloseReason::ConnectTimeout => ResponseError::ConnectTimeout,
            CloseReason::Io(kind) => ResponseError::Io {
                kind: *kind,
                stage: self.stage(),
            },
            other => ResponseError::Closed(other.clone()),
        };
        self.finish(Err(error));
    }
}

// ---------------------------------------------------------------------------------------
// Parsing helpers: pure functions over bytes.

/// Parses a chunk-size line without its line ending: `1*HEXDIG [ BWS ";" chunk-ext ]`.
///
/// Strict where lenient parsers are exploitable: at least one hex digit, nothing else
/// before the extensions (no sign, no `0x`, no trailing garbage or bare whitespace), no
/// overflow, no control bytes in the extensions (which are otherwise ignored).
pub fn parse_chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(format!(
            "chunk size {:?} is not a hexadecimal number",
            String::from_utf8_lossy(line)
        ));
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).expect("checked hex digit") as u64;
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(d))
            .ok_or_else(|| {
                format!(
                    "chunk size {} does not fit in 64 bits",
                    String::from_utf8_lossy(&line[..digits])
                )
            })?;
    }
    let rest = &line[digits..];
    let ws = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    match rest.get(ws) {
        None if ws == 0 => Ok(size),
        Some(b';') => {
            let ext = &rest[ws..];
            if let Some(&bad) = ext.iter().find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(format!("control byte 0x{bad:02x} in a chunk extension"));
            }
            Ok(size)
        }
        _ => Err(format!(
            "unexpected {:?} after chunk size {}",
            String::from_utf8_lossy(rest),
            String::from_utf8_lossy(&line[..digits])
        )),
    }
}

/// Decides the framing of a final response (RFC 9112 §6.3), or says why it is ambiguous.
fn framing(
    method: Method,
    version: u8,
    status: u16,
    fields: &[httparse::Header<'_>],
) -> Result<Framing, String> {
    if method == Method::Head || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Framing::None);
    }
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut has_te = false;
    let mut length: Option<u64> = None;
    for f in fields {
        if f.name.eq_ignore_ascii_case("transfer-encoding") {
            has_te = true;
            codings.extend(super::parse::tokens(f.value));
        } else if f.name.eq_ignore_ascii_case("content-length") {
            // Stricter than the server's `parse::content_length`: an empty member or an
            // overflowing number is malformed here, not saturated.
            for item in f.value.split(|&b| b == b',').map(super::parse::trim_ows) {
                let n = parse_decimal(item).ok_or_else(|| {
                    format!(
                        "invalid Content-Length {:?}",
                        String::from_utf8_lossy(f.value)
                    )
                })?;
                match length {
                    Some(m) if m != n => {
                        return Err(format!("conflicting Content-Length values {m} and {n}"))
                    }
                    _ => length = Some(n),
                }
            }
        }
    }
    if !has_te {
        return Ok(length.map_or(Framing::UntilClose, Framing::Length));
    }
    if version == 0 {
        // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing.
        return Err("Transfer-Encoding in an HTTP/1.0 response".into());
    }
    if length.is_some() {
        // RFC 9112 §6.3 (3): "ought to be handled as an error": the shape of request
        // smuggling and response splitting.
        return Err("both Transfer-Encoding and Content-Length".into());
    }
    let chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
    match codings.split_last() {
        None => Err("empty Transfer-Encoding".into()),
        Some((last, before)) if chunked(last) => {
            if before.iter().any(chunked) {
                Err("chunked applied more than once".into())
            } else {
                Ok(Framing::Chunked)
            }
        }
        // RFC 9112 §6.3 (4): not chunked last, so only the close ends the body.
        Some(_) => Ok(Framing::UntilClose),
    }
}

/// `1*DIGIT` as a `u64`; `None` for anything else (signs, spaces, overflow, empty).
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse::MAX_RESPONSE_HEAD;
    use crate::proto::Action;
    use crate::testing::test_epoch;

    const T: Duration = Duration::from_millis(500);

    /// Runs a fresh GET machine over `chunks` (each call presents the unconsumed rest
    /// followed by the next chunk, as a driver does), then EOF if `eof`. Returns what the
    /// sink saw, the bytes left unconsumed, and the last action.
    fn run_method(method: Method, chunks: &[&[u8]], eof: bool) -> (Collected, Vec<u8>, Action) {
        let collect = Collect::new();
        let request = Request::new(method, "h", "/").unwrap();
        let mut m = HttpClient::new(request, collect.clone());
        let now = test_epoch();
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, now);
        m.handle_open(&mut out);
        let mut pending: Vec<u8> = Vec::new();
        let mut action = Action::Continue;
        for chunk in chunks {
            pending.extend_from_slice(chunk);
            if m.is_finished() {
                break;
            }
            let mut sent = Vec::new();
            let mut out = Out::new(&mut sent, now);
            match m.handle_input(&pending, &mut out) {
                Ok(n) => {
                    assert!(n <= pending.len());
                    pending.drain(..n);
                }
                Err(_) => assert_eq!(m.state(), State::Failed),
            }
            action = out.action();
        }
        if eof && !m.is_finished() {
            let mut sent = Vec::new();
            let mut out = Out::new(&mut sent, now);
            let _ = m.handle_eof(&pending, &mut out);
        }
        if !m.is_finished() {
            m.handle_close(&CloseReason::PeerClosed);
        }
        (collect.take(), pending, action)
    }

    fn run(chunks: &[&[u8]], eof: bool) -> (Collected, Vec<u8>, Action) {
        run_method(Method::Get, chunks, eof)
    }

    /// The response fed whole, byte by byte, and with trailing bytes: the sink must see
    /// the same thing every time, and the trailing bytes must stay unconsumed.
    fn check_all_ways(response: &[u8], eof: bool, check: impl Fn(&Collected)) {
        let (whole, rest, _) = run(&[response], eof);
        check(&whole);
        assert!(rest.is_empty() || whole.result.as_ref().unwrap().is_err());
        let bytes: Vec<&[u8]> = response.chunks(1).collect();
        let (bytewise, _, _) = run(&bytes, eof);
        check(&bytewise);
        assert_eq!(bytewise.body, whole.body);
        assert_eq!(bytewise.result, whole.result);
        if !eof {
            let mut more = response.to_vec();
            more.extend_from_slice(b"TRAILING");
            let (trailing, rest, _) = run(&[&more], false);
            check(&trailing);
            assert_eq!(rest, b"TRAILING");
        }
    }

    fn ok(c: &Collected) -> &Summary {
        match &c.result {
            Some(Ok(s)) => s,
            other => panic!("expected success, got {other:?}"),
        }
    }

    fn malformed(c: &Collected) -> &str {
        match &c.result {
            Some(Err(ResponseError::Malformed(why))) => why,
            other => panic!("expected a malformed response, got {other:?}"),
        }
    }

    fn truncated(c: &Collected) -> &str {
        match &c.result {
            Some(Err(ResponseError::Truncated(why))) => why,
            other => panic!("expected a truncated response, got {other:?}"),
        }
    }

    #[test]
    fn the_request_goes_out_on_open() {
        let mut m = HttpClient::new(
            Request::get("example.org:8080", "/a?b=c").unwrap(),
            Collect::new(),
        );
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, test_epoch());
        m.handle_open(&mut out);
        let text = String::from_utf8(sent).unwrap();
        assert!(text.starts_with("GET /a?b=c HTTP/1.1\r\nHost: example.org:8080\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn requests_refuse_bytes_that_would_break_the_request_line() {
        assert!(Request::get("h", "/a b").is_err());
        assert!(Request::get("h", "/a\r\nX: y").is_err());
        assert!(Request::get("h", "relative").is_err());
        assert!(Request::get("", "/").is_err());
        assert!(Request::get("h h", "/").is_err());
        assert!(Request::get("h", "/caf\u{e9}").is_err());
    }

    #[test]
    fn content_length_body() {
        let r =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world";
        check_all_ways(r, false, |c| {
            let head = c.head.as_ref().unwrap();
            assert_eq!(head.status, 200);
            assert_eq!(head.reason, "OK");
            assert_eq!(head.version, 1);
            assert_eq!(head.field("content-type"), Some(&b"text/plain"[..]));
            assert_eq!(head.framing, Framing::Length(11));
            assert_eq!(c.body, b"hello world");
            assert_eq!(
                ok(c),
                &Summary {
                    status: 200,
                    body_bytes: 11,
                    framing: Framing::Length(11)
                }
            );
        });
    }

    #[test]
    fn completion_asks_the_driver_to_close() {
        let (_, _, action) = run(&[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], false);
        assert_eq!(action, Action::CloseAfterFlush);
    }

    #[test]
    fn content_length_zero_and_agreeing_duplicates() {
        check_all_ways(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            false,
            |c| {
                assert_eq!(ok(c).body_bytes, 0);
                assert!(c.body.is_empty());
            },
        );
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc";
        check_all_ways(r, false, |c| assert_eq!(c.body, b"abc"));
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
                  5;name=value\r\nhello\r\n\
                  1 ; quoted=\"a;b\"\r\n \r\n\
                  A\r\n0123456789\r\n\
                  000\r\nX-Sum: 42\r\nX-Other: yes\r\n\r\n";
        check_all_ways(r, false, |c| {
            assert_eq!(c.head.as_ref().unwrap().framing, Framing::Chunked);
            assert_eq!(c.body, b"hello 0123456789");
            assert_eq!(c.trailers.len(), 2);
            assert_eq!(c.trailers[0].name, "X-Sum");
            assert_eq!(c.trailers[0].value, b"42");
            assert_eq!(ok(c).body_bytes, 16);
        });
    }

    #[test]
    fn chunked_without_trailers_and_with_bare_lf() {
        check_all_ways(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            false,
            |c| {
                assert_eq!(c.body, b"abc");
                assert!(c.trailers.is_empty());
                ok(c);
            },
        );
        check_all_ways(
            b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n",
            false,
            |c| assert_eq!(c.body, b"abc"),
        );
    }

    #[test]
    fn body_until_close() {
        check_all_ways(
            b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nall of this",
            true,
            |c| {
                assert_eq!(c.head.as_ref().unwrap().framing, Framing::UntilClose);
                assert_eq!(c.body, b"all of this");
                assert_eq!(ok(c).body_bytes, 11);
            },
        );
        // A transfer coding that is not chunked last: only the close ends it.
        check_all_ways(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",
            true,
            |c| {
                assert_eq!(c.head.as_ref().unwrap().framing, Framing::UntilClose);
                assert_eq!(c.body, b"zz");
            },
        );
    }

    #[test]
    fn until_close_without_eof_is_not_done() {
        let (c, _, _) = run(&[b"HTTP/1.1 200 OK\r\n\r\nabc"], false);
        assert_eq!(c.body, b"abc");
        // The test harness closes with PeerClosed (no EOF seen): not a success.
        assert!(matches!(c.result, Some(Err(ResponseError::Closed(_)))));
    }

    #[test]
    fn head_204_and_304_have_no_body() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
        let (c, rest, _) = run_method(Method::Head, &[r], false);
        assert_eq!(ok(&c).body_bytes, 0);
        assert_eq!(c.head.unwrap().framing, Framing::None);
        assert!(rest.is_empty());
        check_all_ways(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            false,
            |c| {
                assert_eq!(ok(c).status, 204);
                assert!(c.body.is_empty());
            },
        );
        check_all_ways(
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            |c| {
                assert_eq!(ok(c).framing, Framing::None);
            },
        );
    }

    #[test]
    fn interim_responses_are_skipped() {
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        check_all_ways(r, false, |c| {
            assert_eq!(c.head.as_ref().unwrap().status, 200);
            assert_eq!(c.body, b"ok");
        });
        let (c, _, _) = run(&[b"HTTP/1.1 101 Switching Protocols\r\n\r\n"], false);
        assert!(malformed(&c).contains("101"));
    }

    #[test]
    fn a_missing_reason_phrase_is_fine() {
        check_all_ways(b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", false, |c| {
            let head = c.head.as_ref().unwrap();
            assert_eq!(head.status_line(), "HTTP/1.1 404");
            assert_eq!(ok(c).status, 404);
        });
    }

    #[test]
    fn redirects_expose_their_location() {
        let (c, _, _) = run(
            &[b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://x/new\r\nContent-Length: 0\r\n\r\n"],
            false,
        );
        let head = c.head.unwrap();
        assert_eq!(head.redirect().as_deref(), Some("http://x/new"));
        assert_eq!(
            head.to_string(),
            "HTTP/1.1 301 Moved Permanently\nLocation: http://x/new\nContent-Length: 0\n"
        );
    }

    #[test]
    fn malformed_heads() {
        let cases: &[(&[u8], &str)] = &[
            (b"HTTP/2 200 OK\r\n\r\n", "bad response head"),
            (b"ICY 200 OK\r\n\r\n", "bad response head"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "bad response head"),
            (b"HTTP/1.1 099 Low\r\n\r\n", "out of range"),
            (
                b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
                "bad response head",
            ),
            (
                b"HTTP/1.1 200 OK\r\nX: a\r\n  folded\r\n\r\n",
                "bad response head",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "invalid",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "conflicting",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "both",
            ),
            (
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "HTTP/1.0",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                "more than once",
            ),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\n\r\n", "empty"),
        ];
        for (response, want) in cases {
            for chunks in [vec![*response], response.chunks(1).collect()] {
                let (c, _, action) = run(&chunks, false);
                let why = malformed(&c);
                assert!(
                    why.contains(want),
                    "{:?}: {why:?} lacks {want:?}",
                    String::from_utf8_lossy(response)
                );
                assert_eq!(action, Action::Abort);
                assert!(c.head.is_none());
            }
        }
    }

    #[test]
    fn head_limits() {
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.resize(MAX_RESPONSE_HEAD + 10, b'a');
        let (c, _, _) = run(&[&big], false);
        assert!(malformed(&c).contains("larger than"));
        // Complete but over the limit.
        big.extend_from_slice(b"\r\n\r\n");
        let (c, _, _) = run(&[&big], false);
        assert!(malformed(&c).contains("larger than"));
        // Exactly at the limit is fine.
        let mut exact = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: ".to_vec();
        exact.resize(MAX_RESPONSE_HEAD - 4, b'a');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exact.len(), MAX_RESPONSE_HEAD);
        let (c, _, _) = run(&[&exact], false);
        ok(&c);

        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let (c, _, _) = run(&[&many], false);
        assert!(malformed(&c).contains("more than 100"));
    }

    #[test]
    fn bad_chunk_sizes() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let cases: &[(&[u8], &str)] = &[
            (b"\r\n", "not a hexadecimal"),
            (b"x\r\n", "not a hexadecimal"),
            (b"-1\r\n", "not a hexadecimal"),
            (b"0x10\r\n", "unexpected"),
            (b"+5\r\n", "not a hexadecimal"),
            (b" 5\r\n", "not a hexadecimal"),
            (b"5 \r\n", "unexpected"),
            (b"5g\r\n", "unexpected"),
            (b"5\rx\n", "unexpected"),
            (b"5;a\x01b\r\n", "control byte"),
            (b"10000000000000000\r\n", "64 bits"),
            (b"3\r\nabcd\r\n", "longer than its declared size"),
            (b"3\r\nabc\rX", "longer than its declared size"),
        ];
        for (body, want) in cases {
            let mut r = head.clone();
            r.extend_from_slice(body);
            for chunks in [vec![&r[..]], r.chunks(1).collect()] {
                let (c, _, _) = run(&chunks, false);
                let why = malformed(&c);
                assert!(
                    why.contains(want),
                    "{:?}: {why:?} lacks {want:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        let mut long = head.clone();
        long.extend_from_slice(b"5;");
        long.resize(head.len() + MAX_CHUNK_LINE, b'x');
        let (c, _, _) = run(&[&long], false);
        assert!(malformed(&c).contains("longer than 4096"));
        // The biggest size that fits is accepted (then cut short, of course).
        let mut max = head.clone();
        max.extend_from_slice(b"ffffffffffffffff\r\nab");
        let (c, _, _) = run(&[&max], true);
        truncated(&c);
        assert_eq!(c.body, b"ab");
    }

    #[test]
    fn bad_trailers() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer\r\n\r\n";
        let (c, _, _) = run(&[r], false);
        assert!(malformed(&c).contains("trailer"));
    }

    #[test]
    fn truncated_bodies() {
        let (c, _, _) = run(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], true);
        let why = truncated(&c);
        assert!(why.contains("after 3 of 10 bytes"), "{why}");
        assert_eq!(c.body, b"abc");

        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for cut in [
            &b"5\r\nab"[..],
            b"5\r\nabcde",
            b"5\r\nabcde\r\n",
            b"5\r\nabcde\r\n0\r\n",
            b"5\r",
        ] {
            let mut r = chunked.to_vec();
            r.extend_from_slice(cut);
            let (c, _, _) = run(&[&r], true);
            let why = truncated(&c);
            assert!(why.contains("chunked body cut short"), "{why}");
        }
        let (c, _, _) = run(&[b"HTTP/1.1 200 OK\r\nContent-"], true);
        assert!(truncated(&c).contains("middle of the response head"));
        let (c, _, _) = run(&[], true);
        assert!(truncated(&c).contains("without sending a response"));
        let (c, _, _) = run(&[b"HTTP/1.1 100 Continue\r\n\r\n"], true);
        assert!(truncated(&c).contains("without the final one"));
    }

    /// A sink that fails its first body write.
    struct Refusing(Collect);

    impl ResponseSink for Refusing {
        fn head(&mut self, head: &Head) -> io::Result<()> {
            self.0.head(head)
        }
        fn body(&mut self, _: &[u8]) -> io::Result<()> {
            Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
        }
        fn done(&mut self, result: Result<Summary, ResponseError>) {
            self.0.done(result)
        }
    }

    #[test]
    fn a_sink_error_aborts_without_blaming_the_peer() {
        let collect = Collect::new();
        let mut m = HttpClient::new(Request::get("h", "/").unwrap(), Refusing(collect.clone()));
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, test_epoch());
        m.handle_open(&mut out);
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let mut out = Out::new(&mut sent, test_epoch());
        assert!(m.handle_input(r, &mut out).is_ok());
        assert_eq!(out.action(), Action::Abort);
        let c = collect.take();
        assert!(
            matches!(c.result, Some(Err(ResponseError::Sink(ref e))) if e.contains("disk full"))
        );
    }

    #[test]
    fn head_deadline_and_idle_timeout() {
        let start = test_epoch();
        let collect = Collect::new();
        let mut m = HttpClient::new(Request::get("h", "/").unwrap(), collect.clone())
            .with_head_timeout(T)
            .with_idle_timeout(T * 2);
        let mut sent = Vec::new();
        m.handle_open(&mut Out::new(&mut sent, start));
        assert_eq!(m.poll_timeout(), Some(start + T));
        // A byte keeps the idle timer fresh but does not move the head deadline.
        let later = start + T / 2;
        assert_eq!(m.handle_input(b"H", &mut Out::new(&mut sent, later)), Ok(0));
        assert_eq!(m.poll_timeout(), Some(start + T));
        // Early wake-ups are ignored.
        m.handle_timeout(&mut Out::new(&mut sent, start + T / 4));
        assert!(!m.is_finished());
        let mut out = Out::new(&mut sent, start + T);
        m.handle_timeout(&mut out);
        assert_eq!(out.action(), Action::Abort);
        assert_eq!(
            collect.take().result,
            Some(Err(ResponseError::HeadTimeout(T)))
        );
        assert_eq!(m.poll_timeout(), None);

        // In the body only the idle timeout applies.
        let collect = Collect::new();
        let mut m = HttpClient::new(Request::get("h", "/").unwrap(), collect.clone())
            .with_head_timeout(T)
            .with_idle_timeout(T * 2);
        m.handle_open(&mut Out::new(&mut sent, start));
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab";
        let at = start + T / 2;
        assert_eq!(m.handle_input(r, &mut Out::new(&mut sent, at)), Ok(r.len()));
        assert_eq!(m.poll_timeout(), Some(at + T * 2));
        m.handle_timeout(&mut Out::new(&mut sent, at + T * 2));
        assert_eq!(
            collect.take().result,
            Some(Err(ResponseError::IdleTimeout {
                after: T * 2,
                stage: Stage::Body,
                body_bytes: 2
            }))
        );
    }

    #[test]
    fn close_reasons_become_errors_once() {
        for (reason, want) in [
            (
                CloseReason::ConnectFailed(io::ErrorKind::ConnectionRefused),
                ResponseError::ConnectFailed(io::ErrorKind::ConnectionRefused),
            ),
            (CloseReason::ConnectTimeout, ResponseError::ConnectTimeout),
            (
                CloseReason::Io(io::ErrorKind::ConnectionReset),
                ResponseError::Io {
                    kind: io::ErrorKind::ConnectionReset,
                    stage: Stage::Head,
                },
            ),
            (
                CloseReason::Shutdown,
                ResponseError::Closed(CloseReason::Shutdown),
            ),
        ] {
            let collect = Collect::new();
            let mut m = HttpClient::new(Request::get("h", "/").unwrap(), collect.clone());
            m.handle_close(&reason);
            m.handle_close(&reason);
            assert_eq!(collect.take().result, Some(Err(want)));
        }
        // After success a close changes nothing (Collect asserts `done` runs once).
        let (c, _, _) = run(&[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], false);
        ok(&c);
    }

    #[test]
    fn parse_chunk_size_examples() {
        assert_eq!(parse_chunk_size(b"0"), Ok(0));
        assert_eq!(parse_chunk_size(b"fF"), Ok(255));
        assert_eq!(parse_chunk_size(b"00000000000000000001"), Ok(1));
        assert_eq!(parse_chunk_size(b"ffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(parse_chunk_size(b"1a;x=1;y"), Ok(26));
        assert_eq!(parse_chunk_size(b"1a \t;x"), Ok(26));
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b";x").is_err());
    }
}
