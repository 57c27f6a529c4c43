//! The `http` demo: a minimal HTTP/1.1 origin server, as a sans-I/O machine.
//!
//! It serves one resource. `GET /` and `HEAD /` answer `200 OK` with
//! `Content-Type: text/plain`, `Content-Length`, `Date` and the body `Hello, World` (HEAD:
//! the same head, no body). Any other target is `404`, any other method on `/` is `405`
//! with `Allow: GET, HEAD`. A query (`/?q=1`) and the absolute form
//! (`http://host/`) name the same resource.
//!
//! # Connections
//!
//! - **Persistence** (RFC 9112 §9.3): HTTP/1.1 keeps the connection open unless the request
//!   says `Connection: close`; HTTP/1.0 closes it unless the request says
//!   `Connection: keep-alive` (and the reply says so too). A reply that ends the connection
//!   carries `Connection: close`, and the machine asks its driver to close after the reply
//!   has been sent.
//! - **Pipelining**: every complete request already in the input is answered in one call,
//!   in order, all replies written into the one [`Out`], so the driver sends a batch with
//!   one write. Requests after one that closes are ignored (RFC 9112 §9.6).
//! - **Bodies** framed by `Content-Length` are read and dropped as they arrive (nothing is
//!   buffered); the reply goes out once the last byte is in. `Expect: 100-continue` gets an
//!   interim `100 Continue` first. Bodies larger than [`HttpConfig::max_body`] are refused
//!   with `413` without being read.
//! - **Chunked bodies are not supported**: any `Transfer-Encoding` is answered with `501`
//!   (RFC 9112 §6.1: a server that does not understand a transfer coding SHOULD answer
//!   `501`) and the connection is closed, since the body's end can then not be found. The
//!   one resource takes no body, so decoding chunks only to drop them would add a state
//!   machine for no observable benefit.
//!
//! # States
//!
//! ```text
//!   state            event                              next              sends
//!   ───────────────  ─────────────────────────────────  ────────────────  ──────────────
//!   (new)            handle_open                        Idle              -
//!   Idle             part of a head                     ReadingHead       -
//!   Idle/ReadingHead whole head, no body                Idle or Closing   the reply
//!   Idle/ReadingHead whole head, Content-Length > 0     DiscardingBody    (100 Continue)
//!   Idle/ReadingHead bad head, or over a limit          Closing           400/413/414/
//!                                                                         431/501/505
//!   DiscardingBody   body bytes, not the last           DiscardingBody    -
//!   DiscardingBody   the last body byte                 Idle or Closing   the reply
//!   Idle             deadline (header or keep-alive)    Closing           - (silent)
//!   ReadingHead      deadline (from its first byte)     Closing           408
//!   DiscardingBody   body timeout (no byte for a while) Closing           408
//!   ReadingHead/     end of stream                      Closing           400
//!    DiscardingBody
//!   Idle             handle_shutdown                    Closing           -
//!   ReadingHead/     handle_shutdown                    (same; its reply  -
//!    DiscardingBody                                      says close)
//!   Closing          anything                           Closing           -
//! ```
//!
//! - [`State::Idle`]: no byte of the next request yet. A fresh connection waits at most
//!   the header timeout for its first request; between requests, the keep-alive timeout.
//!   Either way the connection then closes silently (nothing was asked, so nothing is
//!   owed; browsers treat an unannounced close of an idle connection as normal).
//! - [`State::ReadingHead`]: part of a head has arrived. It must be complete within
//!   [`HttpConfig::header_timeout`] of its *first* byte: a **deadline**, never re-armed by
//!   later bytes (nginx's `client_header_timeout`, HAProxy's `timeout http-request`), so a
//!   slowloris client sending a byte a second is closed on time, with `408`.
//! - [`State::DiscardingBody`]: the head was complete and announced a body. Each arrival
//!   re-arms [`HttpConfig::body_timeout`] (an *inactivity* timeout, like nginx's
//!   `client_body_timeout`); silence past it is `408` and close.
//! - [`State::Closing`]: a reply ended the connection. Input is ignored until the driver
//!   closes.
//!
//! Every change of state is logged at trace level as `http state=<old>=><new>`.
//!
//! # Limits
//!
//! | limit | default | answer | precedent |
//! |---|---|---|---|
//! | request line | 8 KiB | 414, close | nginx `large_client_header_buffers 4 8k` |
//! | whole head | 8 KiB | 431, close | nginx header buffer 8 KiB; RFC 6585 §5 |
//! | header lines | 100 | 431, close | hyper 100, HAProxy `tune.http.maxhdr` 101 |
//! | body | 1 MiB | 413, close | nginx `client_max_body_size 1m` |
//! | head deadline | 10 s | 408, close | HAProxy `timeout http-request 10s` (nginx 60 s) |
//! | body inactivity | 60 s | 408, close | nginx `client_body_timeout 60s` |
//! | keep-alive idle | 75 s | silent close | nginx `keepalive_timeout 75s` |
//!
//! The three head limits are checked by [`parse::parse`], the head parser this server
//! shares with the `get` client; this module only maps its [`HeadError`]s to statuses.
//!
//! Malformed heads are `400` and close (a version that is not `HTTP/<digit>.<digit>` is
//! malformed), a well-formed HTTP version other than 1.0 or 1.1 is `505`;
//! HTTP/1.1 requests without exactly one `Host` header are `400` (RFC 9112 §3.2), as are
//! requests with an invalid or self-contradicting `Content-Length` (RFC 9112 §6.3).
//! All refusals caused by the peer return a [`PeerError`] after the reply is written, so
//! the driver closes once the reply is sent.
//!
//! # Memory and time
//!
//! The machine owns no buffer: a partial head stays in the driver's input (unconsumed, at
//! most the head limit plus one byte before it is refused) and is parsed again when more
//! arrives; a body is dropped as it arrives. What a connection costs here is an `Arc` of
//! the shared [`HttpConfig`], a state of a few integers and a flag. Replies are built
//! from precomputed static heads plus the `Date` value.
//!
//! The machine reads no clock: the monotonic time of each call comes in [`Out::now`], and
//! the wall time for `Date` from [`HttpConfig::clock`], a plain `fn() -> SystemTime`
//! (the wiring passes the system's, tests a fixed one), asked at most once per call.
//!
//! ```
//! use sockloop_demos::proto::http::server::{HttpConfig, HttpServer};
//! use sockloop::proto::{Action, Out, Protocol};
//! use std::sync::Arc;
//! use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
//!
//! fn fixed() -> SystemTime {
//!     UNIX_EPOCH + Duration::from_secs(784_111_777)
//! }
//! let cfg = Arc::new(HttpConfig { clock: fixed, ..HttpConfig::default() });
//! let mut server = HttpServer::new(cfg);
//! let mut sent = Vec::new();
//! let mut out = Out::new(&mut sent, Instant::now());
//! server.handle_open(&mut out);
//! let request = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n";
//! assert_eq!(server.handle_input(request, &mut out), Ok(request.len()));
//! assert_eq!(out.action(), Action::Continue); // kept alive
//! assert_eq!(
//!     sent,
//!     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\
//!       Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\nHello, World"
//! );
//! ```

use super::parse::{self, HeadError, HeadLimits, IMF_FIXDATE_LEN, MAX_HEADERS};
use crate::proto::{CloseReason, Out, PeerError, Protocol};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Default [`HttpConfig::header_timeout`]: 10 s from a request's first byte to its last
/// head byte (HAProxy's suggested `timeout http-request`; nginx allows 60 s).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`HttpConfig::keepalive_timeout`]: 75 s, nginx's `keepalive_timeout`. An idle
/// connection costs this machine a few integers, so the generous default is cheap.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);

/// Default [`HttpConfig::body_timeout`]: 60 s without a body byte, nginx's
/// `client_body_timeout`.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Default [`HttpConfig::max_body`]: 1 MiB, nginx's `client_max_body_size`.
pub const MAX_BODY: u64 = 1024 * 1024;

/// The server's settings, shared by all its connections through an `Arc`.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// How long a request head may take from its first byte (and a fresh connection from
    /// its opening) before `408` and close. Default [`HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// How long a connection may sit idle between requests before it is closed silently.
    /// Default [`KEEPALIVE_TIMEOUT`].
    pub keepalive_timeout: Duration,
    /// How long a request body may pause before `408` and close. Default
    /// [`BODY_TIMEOUT`].
    pub body_timeout: Duration,
    /// The longest request line, in bytes. Default [`parse::MAX_REQUEST_LINE`] (8 KiB).
    pub max_request_line: usize,
    /// The largest request head, in bytes. Default [`parse::MAX_REQUEST_HEAD`] (8 KiB).
    pub max_head: usize,
    /// The largest request body, in bytes. Default [`MAX_BODY`] (1 MiB).
    pub max_body: u64,
    /// Where the wall time for the `Date` header comes from; tests pass a fixed time.
    /// [`HttpConfig::default`] passes [`SystemTime::now`]: that choice of the real clock
    /// is the wiring's, so it is made in [`crate::clock`], not here.
    pub clock: fn() -> SystemTime,
}

impl HttpConfig {
    /// The default settings, with the wall time for `Date` from `clock`.
    pub fn with_clock(clock: fn() -> SystemTime) -> HttpConfig {
        HttpConfig {
            header_timeout: HEADER_TIMEOUT,
            keepalive_timeout: KEEPALIVE_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            max_request_line: HeadLimits::REQUEST.max_line,
            max_head: HeadLimits::REQUEST.max_head,
            max_body: MAX_BODY,
            clock,
        }
    }

    /// The head limits [`parse::parse`] applies to each request.
    fn limits(&self) -> HeadLimits {
        HeadLimits {
            max_line: self.max_request_line,
            max_head: self.max_head,
            ..HeadLimits::REQUEST
        }
    }
}

/// The statuses this server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 200: `GET /` or `HEAD /`.
    Ok,
    /// 400: a malformed head, a missing or doubled `Host`, a bad `Content-Length`, or a
    /// request cut short by the end of the stream.
    BadRequest,
    /// 404: any target but `/`.
    NotFound,
    /// 405: a method other than GET or HEAD on `/`.
    MethodNotAllowed,
    /// 408: the head deadline or the body inactivity timeout passed.
    RequestTimeout,
    /// 413: a `Content-Length` over [`HttpConfig::max_body`].
    ContentTooLarge,
    /// 414: a request line over [`HttpConfig::max_request_line`].
    UriTooLong,
    /// 431: a head over [`HttpConfig::max_head`] or with more than
    /// [`MAX_HEADERS`] header lines.
    HeaderFieldsTooLarge,
    /// 501: a `Transfer-Encoding` (chunked bodies are not supported).
    NotImplemented,
    /// 505: an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

/// A reply head up to the `Date` value: status line, the fixed headers and `Date: `.
macro_rules! reply_head {
    ($status:literal, $length:literal $(, $extra:literal)?) => {
        concat!(
            "HTTP/1.1 ",
            $status,
            "\r\nContent-Type: text/plain\r\nContent-Length: ",
            $length,
            "\r\n",
            $($extra,)?
            "Date: "
        )
        .as_bytes()
    };
}

impl Status {
    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::RequestTimeout => 408,
            Status::ContentTooLarge => 413,
            Status::UriTooLong => 414,
            Status::HeaderFieldsTooLarge => 431,
            Status::NotImplemented => 501,
            Status::VersionNotSupported => 505,
        }
    }

    /// The precomputed head of this status's reply, up to the `Date` value, and its body.
    /// (A unit test checks each `Content-Length` against its body.)
    fn reply(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Status::Ok => (reply_head!("200 OK", "12"), b"Hello, World"),
            Status::BadRequest => (reply_head!("400 Bad Request", "12"), b"Bad Request\n"),
            Status::NotFound => (reply_head!("404 Not Found", "10"), b"Not Found\n"),
            Status::MethodNotAllowed => (
                reply_head!("405 Method Not Allowed", "19", "Allow: GET, HEAD\r\n"),
                b"Method Not Allowed\n",
            ),
            Status::RequestTimeout => (
                reply_head!("408 Request Timeout", "16"),
                b"Request Timeout\n",
            ),
            Status::ContentTooLarge => (
                reply_head!("413 Content Too Large", "18"),
                b"Content Too Large\n",
            ),
            Status::UriTooLong => (reply_head!("414 URI Too Long", "13"), b"URI Too Long\n"),
            Status::HeaderFieldsTooLarge => (
                reply_head!("431 Request Header Fields Too Large", "32"),
                b"Request Header Fields Too Large\n",
            ),
            Status::NotImplemented => (
                reply_head!("501 Not Implemented", "16"),
                b"Not Implemented\n",
            ),
            Status::VersionNotSupported => (
                reply_head!("505 HTTP Version Not Supported", "27"),
                b"HTTP Version Not Supported\n",
            ),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, _) = self.reply();
        // "HTTP/1.1 " then the code and reason up to the first CRLF.
        let line = head.get(9..).unwrap_or_default();
        let end = line.iter().position(|&b| b == b'\r').unwrap_or(line.len());
        f.write_str(std::str::from_utf8(&line[..end]).unwrap_or("?"))
    }
}

/// What happens to the connection after a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1's default: stay open; the reply says nothing.
    KeepAlive,
    /// HTTP/1.0 that asked to stay open: stay open, and the reply says
    /// `Connection: keep-alive`.
    KeepAliveHttp10,
    /// Close after the reply, which says `Connection: close`.
    Close,
}

impl Persist {
    /// The end of the reply head: the connection header if any, then the blank line.
    fn head_end(self) -> &'static [u8] {
        match self {
            Persist::KeepAlive => b"\r\n\r\n",
            Persist::KeepAliveHttp10 => b"\r\nConnection: keep-alive\r\n\r\n",
            Persist::Close => b"\r\nConnection: close\r\n\r\n",
        }
    }
}

/// A reply decided but maybe not yet sent (it waits for the request body to be read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status.
    pub status: Status,
    /// True for HEAD: the head only, with the `Content-Length` a GET would have.
    pub head_only: bool,
    /// Whether the connection stays open after it.
    pub persist: Persist,
}

/// Where a connection is in its request/reply cycle; see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No byte of the next request has arrived. At `deadline` the connection closes
    /// silently: the header timeout after opening, the keep-alive timeout after a reply.
    /// `None` only before [`Protocol::handle_open`].
    Idle {
        /// When to give up waiting.
        deadline: Option<Instant>,
    },
    /// Part of a request head has arrived (it stays in the driver's input until whole).
    ReadingHead {
        /// The header timeout after the head's first byte; not moved by later bytes.
        deadline: Instant,
    },
    /// The head announced a body; it is read and dropped, then `reply` is sent.
    DiscardingBody {
        /// Body bytes still to come.
        remaining: u64,
        /// The body timeout after the last body byte.
        deadline: Instant,
        /// The reply, sent once the body is in.
        reply: Reply,
    },
    /// A reply ended the connection; input is ignored until the driver closes.
    Closing,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Idle { .. } => f.write_str("idle"),
            State::ReadingHead { .. } => f.write_str("reading-head"),
            State::DiscardingBody { remaining, .. } => {
                write!(f, "discarding-body({remaining} left)")
            }
            State::Closing => f.write_str("closing"),
        }
    }
}

/// The interim reply to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A request refused, with the status to answer and whose fault it is.
struct Refusal {
    status: Status,
    reason: Cow<'static, str>,
    /// True if the peer broke the protocol or a limit (a [`PeerError`]); false for what
    /// this server does not implement (chunked bodies).
    peer_fault: bool,
    head_only: bool,
}

impl Refusal {
    fn peer(status: Status, reason: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
            peer_fault: true,
            head_only: false,
        }
    }
}

impl From<HeadError> for Refusal {
    fn from(e: HeadError) -> Refusal {
        let status = match e {
            HeadError::Malformed(..) => Status::BadRequest,
            HeadError::Version => Status::VersionNotSupported,
            HeadError::LineTooLong(..) => Status::UriTooLong,
            HeadError::TooLarge(..) | HeadError::TooManyFields(..) => Status::HeaderFieldsTooLarge,
        };
        Refusal::peer(status, e.to_string())
    }
}

/// An accepted request head: the reply it will get and the body to drop first.
struct Accepted {
    reply: Reply,
    body: u64,
    expect_continue: bool,
}

/// The `Date` value for the replies of one call, formatted on first use.
struct DateCache {
    clock: fn() -> SystemTime,
    value: Option<[u8; IMF_FIXDATE_LEN]>,
}

impl DateCache {
    fn new(clock: fn() -> SystemTime) -> DateCache {
        DateCache { clock, value: None }
    }

    fn get(&mut self) -> &[u8; IMF_FIXDATE_LEN] {
        let clock = self.clock;
        self.value
            .get_or_insert_with(|| parse::imf_fixdate(clock()))
    }
}

/// The HTTP/1.1 server machine; one per connection. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct HttpServer {
    cfg: Arc<HttpConfig>,
    state: State,
    /// The server is shutting down: the reply in progress closes the connection.
    draining: bool,
}

impl Default for HttpServer {
    /// A machine with the default [`HttpConfig`] (its own copy of it).
    fn default() -> HttpServer {
        HttpServer::new(Arc::new(HttpConfig::default()))
    }
}

impl HttpServer {
    /// A machine for one connection, sharing `cfg` with its siblings.
    pub fn new(cfg: Arc<HttpConfig>) -> HttpServer {
        HttpServer {
            cfg,
            state: State::Idle { deadline: None },
            draining: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    fn set_state(&mut self, next: State) {
        if std::mem::discriminant(&self.state) != std::mem::discriminant(&next) {
            log::trace!("http state={}=>{}", self.state, next);
        }
        self.state = next;
    }

    /// Decides the reply to a complete head, or refuses it (a refusal of a HEAD request
    /// gets no body either).
    fn accept(&self, req: &httparse::Request<'_, '_>) -> Result<Accepted, Refusal> {
        let head_only = req.method == Some("HEAD");
        self.judge(req).map_err(|r| Refusal { head_only, ..r })
    }

    fn judge(&self, req: &httparse::Request<'_, '_>) -> Result<Accepted, Refusal> {
        let http11 = req.version != Some(0);
        let mut hosts = 0usize;
        let mut close = false;
        let mut keep_alive = false;
        let mut length: Option<u64> = None;
        let mut transfer_encoding = false;
        let mut expect_continue = false;
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"connection") {
                close |= parse::has_token(h.value, "close");
                keep_alive |= parse::has_token(h.value, "keep-alive");
            } else if name.eq_ignore_ascii_case(b"content-length") {
                match (parse::content_length(h.value), length) {
                    (None, _) => {
                        return Err(Refusal::peer(Status::BadRequest, "invalid Content-Length"))
                    }
                    (Some(n), Some(prev)) if n != prev => {
                        return Err(Refusal::peer(
                            Status::BadRequest,
                            "conflicting Content-Length values",
                        ))
                    }
                    (Some(n), _) => length = Some(n),
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                transfer_encoding = true;
            } else if name.eq_ignore_ascii_case(b"host") {
                hosts += 1;
            } else if name.eq_ignore_ascii_case(b"expect") {
                expect_continue = parse::has_token(h.value, "100-continue");
            }
        }
        let method = req.method.unwrap_or_default();
        let head_only = method == "HEAD";
        if transfer_encoding {
            if !http11 {
                // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
                return Err(Refusal::peer(
                    Status::BadRequest,
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            return Err(Refusal {
                status: Status::NotImplemented,
                reason: "Transfer-Encoding is not supported".into(),
                peer_fault: false,
                head_only: false,
            });
        }
        if hosts > 1 || (http11 && hosts == 0) {
            return Err(Refusal::peer(
                Status::BadRequest,
                "an HTTP/1.1 request needs exactly one Host header",
            ));
        }
        let body = length.unwrap_or(0);
        if body > self.cfg.max_body {
            return Err(Refusal::peer(
                Status::ContentTooLarge,
                format!(
                    "body of {body} bytes over the limit of {}",
                    self.cfg.max_body
                ),
            ));
        }
        let status = if !is_root(req.path.unwrap_or_default()) {
            Status::NotFound
        } else if method == "GET" || head_only {
            Status::Ok
        } else {
            Status::MethodNotAllowed
        };
        let persist = if self.draining || close {
            Persist::Close
        } else if http11 {
            Persist::KeepAlive
        } else if keep_alive {
            Persist::KeepAliveHttp10
        } else {
            Persist::Close
        };
        Ok(Accepted {
            reply: Reply {
                status,
                head_only,
                persist,
            },
            body,
            // RFC 9110 §10.1.1: an HTTP/1.0 client's 100-continue is ignored.
            expect_continue: expect_continue && http11,
        })
    }

    /// Writes `reply` and moves to the state after it. Returns false if the connection is
    /// now closing.
    fn send(&mut self, reply: Reply, out: &mut Out<'_>, date: &mut DateCache) -> bool {
        log::trace!("http reply: {} ({:?})", reply.status, reply.persist);
        write_reply(out, reply, date);
        if reply.persist == Persist::Close {
            out.close();
            self.set_state(State::Closing);
            false
        } else {
            let deadline = after(out.now(), self.cfg.keepalive_timeout);
            self.set_state(State::Idle {
                deadline: Some(deadline),
            });
            true
        }
    }

    /// Answers a refused request and closes. Returns what `handle_input` returns.
    fn refuse(
        &mut self,
        refusal: Refusal,
        input_len: usize,
        out: &mut Out<'_>,
        date: &mut DateCache,
    ) -> Result<usize, PeerError> {
        let reply = Reply {
            status: refusal.status,
            head_only: refusal.head_only,
            persist: Persist::Close,
        };
        self.send(reply, out, date);
        let reason = format!("{}: {}", refusal.status, refusal.reason);
        if refusal.peer_fault {
            Err(PeerError::new(reason))
        } else {
            log::debug!("http: closing after {reason}");
            Ok(input_len)
        }
    }

    /// Answers `408` and closes (a deadline passed mid-request).
    fn time_out(&mut self, what: &str, out: &mut Out<'_>) {
        log::debug!("http: {what} timed out: 408 and close");
        let reply = Reply {
            status: Status::RequestTimeout,
            head_only: false,
            persist: Persist::Close,
        };
        self.send(reply, out, &mut DateCache::new(self.cfg.clock));
    }
}

/// Writes a whole reply: the static head, the date, the connection header and blank
/// line, and the body unless `head_only`.
fn write_reply(out: &mut Out<'_>, reply: Reply, date: &mut DateCache) {
    let (head, body) = reply.status.reply();
    out.push(head);
    out.push(date.get());
    out.push(reply.persist.head_end());
    if !reply.head_only {
        out.push(body);
    }
}

/// `now + timeout`, with absurd timeouts (`Duration::MAX` for "never") capped at a
/// century instead of overflowing `Instant`.
fn after(now: Instant, timeout: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(timeout.min(CENTURY)).unwrap_or(now)
}

/// Returns true if and only if the request target names `/`: origin form (`/`,
/// `/?query`) or absolute form (`http://host/`, `http://host`).
fn is_root(target: &str) -> bool {
    let target = target.split(['?', '#']).next().unwrap_or(target);
    if target.starts_with('/') {
        return target == "/";
    }
    for scheme in ["http://", "https://"] {
        let matches = target
            .as_bytes()
            .get(..scheme.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(scheme.as_bytes()));
        if matches {
            let after = target.get(scheme.len()..).unwrap_or_default();
            return match after.find('/') {
                Some(at) => after.get(at..) == Some("/"),
                None => true,
            };
        }
    }
    false
}

impl Protocol for HttpServer {
    fn handle_open(&mut self, out: &mut Out<'_>) {
        // nginx starts client_header_timeout at accept: a connection that never speaks is
        // the cheapest slowloris.
        let deadline = after(out.now(), self.cfg.header_timeout);
        self.set_state(State::Idle {
            deadline: Some(deadline),
        });
    }

    fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
        let now = out.now();
        let mut date = DateCache::new(self.cfg.clock);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut used = 0;
        // One request per turn of the loop, until the input runs out or the connection
        // closes: every pipelined request already here is answered in this call.
        loop {
            let rest = input.get(used..).unwrap_or_default();
            match self.state {
                // A reply closed the connection: whatever follows is ignored.
                State::Closing => return Ok(input.len()),
                // Part of a body: drop what arrived; the reply goes once it is all in.
                State::DiscardingBody {
                    remaining, reply, ..
                } => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let take = remaining.min(rest.len() as u64);
                    used += take as usize;
                    let remaining = remaining - take;
                    if remaining > 0 {
                        self.set_state(State::DiscardingBody {
                            remaining,
                            deadline: after(now, self.cfg.body_timeout),
                            reply,
                        });
                        return Ok(used);
                    }
                    if !self.send(reply, out, &mut date) {
                        return Ok(input.len());
                    }
                }
                // A head, whole or in part.
                State::Idle { .. } | State::ReadingHead { .. } => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let mut req = httparse::Request::new(&mut headers);
                    let head_len = match parse::parse(rest, &mut req, self.cfg.limits()) {
                        Ok(Some(n)) => n,
                        Ok(None) => {
                            // The deadline starts with the head's first byte and stays.
                            if let State::Idle { .. } = self.state {
                                self.set_state(State::ReadingHead {
                                    deadline: after(now, self.cfg.header_timeout),
                                });
                            }
                            return Ok(used);
                        }
                        Err(e) => return self.refuse(e.into(), input.len(), out, &mut date),
                    };
                    used += head_len;
                    let accepted = match self.accept(&req) {
                        Ok(a) => a,
                        Err(refusal) => return self.refuse(refusal, input.len(), out, &mut date),
                    };
                    if accepted.body == 0 {
                        if !self.send(accepted.reply, out, &mut date) {
                            return Ok(input.len());
                        }
                    } else {
                        if accepted.expect_continue && used == input.len() {
                            out.push(CONTINUE);
                        }
                        self.set_state(State::DiscardingBody {
                            remaining: accepted.body,
                            deadline: after(now, self.cfg.body_timeout),
                            reply: accepted.reply,
                        });
                    }
                }
            }
        }
    }

    fn handle_eof(&mut self, rest: &[u8], out: &mut Out<'_>) -> Result<(), PeerError> {
        // Answer whatever complete requests the rest holds (a driver may present input
        // and the end of the stream together), then judge what is left.
        let used = self.handle_input(rest, out)?;
        let left = rest.get(used..).unwrap_or_default();
        match self.state {
            State::Closing | State::Idle { .. } => Ok(()),
            // Stray line endings after the last request are not a request.
            State::ReadingHead { .. } if parse::only_line_endings(left) => Ok(()),
            State::ReadingHead { .. } | State::DiscardingBody { .. } => {
                let refusal = Refusal::peer(
                    Status::BadRequest,
                    "the stream ended in the middle of a request",
                );
                let mut date = DateCache::new(self.cfg.clock);
                self.refuse(refusal, rest.len(), out, &mut date).map(|_| ())
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Idle { deadline } => deadline,
            State::ReadingHead { deadline } | State::DiscardingBody { deadline, .. } => {
                Some(deadline)
            }
            State::Closing => None,
        }
    }

    fn handle_timeout(&mut self, out: &mut Out<'_>) {
        let now = out.now();
        match self.state {
            // Nothing was asked: close without a word.
            State::Idle {
                deadline: Some(deadline),
            } if deadline <= now => {
                log::debug!("http: idle timeout: closing");
                out.close();
                self.set_state(State::Closing);
            }
            State::ReadingHead { deadline } if deadline <= now => {
                self.time_out("request head", out)
            }
            State::DiscardingBody { deadline, .. } if deadline <= now => {
                self.time_out("request body", out)
            }
            // Early or stale: timers may fire late, never early, but a machine checks.
            _ => {}
        }
    }

    fn handle_shutdown(&mut self, out: &mut Out<'_>) {
        match self.state {
            State::Idle { .. } | State::Closing => {
                out.close();
                self.set_state(State::Closing);
            }
            // Mid-request: finish it, and let its reply say `Connection: close`.
            State::ReadingHead { .. } | State::DiscardingBody { .. } => {
                self.draining = true;
                if let State::DiscardingBody {
                    remaining,
                    deadline,
                    mut reply,
                } = self.state
                {
                    reply.persist = Persist::Close;
                    self.state = State::DiscardingBody {
                        remaining,
                        deadline,
                        reply,
                    };
                }
            }
        }
    }

    fn handle_close(&mut self, reason: &CloseReason) {
        log::trace!("http: connection closed in state {}: {reason}", self.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Action;
    use crate::testing::test_epoch;
    use std::time::UNIX_EPOCH;

    /// RFC 9110's example date, the wall time every test server sees.
    fn fixed_clock() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const HEADER: Duration = Duration::from_millis(200);
    const KEEPALIVE: Duration = Duration::from_millis(300);
    const BODY: Duration = Duration::from_millis(250);

    fn config() -> HttpConfig {
        HttpConfig {
            header_timeout: HEADER,
            keepalive_timeout: KEEPALIVE,
            body_timeout: BODY,
            clock: fixed_clock,
            ..HttpConfig::default()
        }
    }

    fn server() -> HttpServer {
        HttpServer::new(Arc::new(config()))
    }

    /// The expected bytes of a reply.
    fn reply(status: &str, extra: &str, body: &str, head_only: bool, conn: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}\
             Date: {DATE}\r\n{conn}\r\n{}",
            body.len(),
            if head_only { "" } else { body }
        )
    }

    fn hello(conn: &str) -> String {
        reply("200 OK", "", "Hello, World", false, conn)
    }

    const CLOSE: &str = "Connection: close\r\n";

    /// What a driver saw: everything sent, how the connection ended, what is left.
    #[derive(Debug, PartialEq, Eq)]
    struct Transcript {
        sent: String,
        action: Action,
        error: Option<String>,
        unconsumed: usize,
        state: String,
    }

    /// Drives a machine the way a driver does: `chunks` arrive one after the other at
    /// `now`, unconsumed bytes are presented again with the next chunk, and driving stops
    /// when the machine closes or errs.
    fn drive<'a>(
        m: &mut HttpServer,
        chunks: impl IntoIterator<Item = &'a [u8]>,
        now: Instant,
    ) -> Transcript {
        let mut pending = Vec::new();
        let mut sent = Vec::new();
        let mut action = Action::Continue;
        let mut error = None;
        for chunk in chunks {
            pending.extend_from_slice(chunk);
            let mut out = Out::new(&mut sent, now);
            let result = m.handle_input(&pending, &mut out);
            action = out.action();
            match result {
                Ok(used) => {
                    assert!(used <= pending.len(), "consumed more than given");
                    pending.drain(..used);
                }
                Err(e) => {
                    // The driver closes; what was left unconsumed no longer matters.
                    error = Some(e.reason().to_string());
                    pending.clear();
                    break;
                }
            }
            if action != Action::Continue {
                break;
            }
        }
        Transcript {
            sent: String::from_utf8_lossy(&sent).into_owned(),
            action,
            error,
            unconsumed: pending.len(),
            state: m.state().to_string(),
        }
    }

    fn opened(now: Instant) -> HttpServer {
        let mut m = server();
        let mut sink = Vec::new();
        m.handle_open(&mut Out::new(&mut sink, now));
        assert!(sink.is_empty(), "no banner");
        m
    }

    fn whole(input: &[u8]) -> Transcript {
        let now = test_epoch();
        drive(&mut opened(now), [input], now)
    }

    fn bytewise(input: &[u8]) -> Transcript {
        let now = test_epoch();
        drive(&mut opened(now), input.chunks(1), now)
    }

    /// Asserts that `input` gives the same transcript whole, byte by byte and split in
    /// two anywhere (every cut for short inputs, a spread of them for long ones).
    fn same_any_split(input: &[u8]) -> Transcript {
        let want = whole(input);
        let what = String::from_utf8_lossy(&input[..input.len().min(60)]).into_owned();
        assert_eq!(bytewise(input), want, "byte by byte: {what:?}");
        let step = (input.len() / 64).max(1);
        for cut in (0..input.len()).step_by(step) {
            let now = test_epoch();
            let (a, b) = input.split_at(cut);
            assert_eq!(
                drive(&mut opened(now), [a, b], now),
                want,
                "cut at {cut}: {what:?}"
            );
        }
        want
    }

    // -----------------------------------------------------------------------------------
    // Replies

    #[test]
    fn get_and_head_of_root() {
        let t = same_any_split(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(t.sent, hello(""));
        assert_eq!(
            (t.action, t.unconsumed, &t.state[..]),
            (Action::Continue, 0, "idle")
        );

        let t = same_any_split(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(t.sent, reply("200 OK", "", "Hello, World", true, ""));
        assert!(t.sent.contains("Content-Length: 12\r\n") && !t.sent.contains("Hello"));
        assert_eq!(t.action, Action::Continue);
    }

    #[test]
    fn other_targets_and_methods() {
        let t = same_any_split(b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(t.sent, reply("404 Not Found", "", "Not Found\n", false, ""));
        assert_eq!(t.action, Action::Continue, "404 keeps the connection");

        let t = same_any_split(b"HEAD /missing HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(t.sent, reply("404 Not Found", "", "Not Found\n", true, ""));

        let allow = "Allow: GET, HEAD\r\n";
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "get"] {
            let req = format!("{method} / HTTP/1.1\r\nHost: a\r\n\r\n");
            let t = same_any_split(req.as_bytes());
            assert_eq!(
                t.sent,
                reply(
                    "405 Method Not Allowed",
                    allow,
                    "Method Not Allowed\n",
                    false,
                    ""
                ),
                "{method}"
            );
            assert_eq!(t.action, Action::Continue, "405 keeps the connection");
        }

        for target in ["/?q=1", "http://a/", "HTTP://a", "https://a:8080/?x"] {
            let req = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(whole(req.as_bytes()).sent, hello(""), "{target}");
        }
        for target in ["/index.html", "//", "http://a/b", "*", "a:80"] {
            let req = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert!(
                whole(req.as_bytes()).sent.starts_with("HTTP/1.1 404"),
                "{target}"
            );
        }
    }

    #[test]
    fn every_status_head_has_the_right_content_length() {
        for status in [
            Status::Ok,
            Status::BadRequest,
            Status::NotFound,
            Status::MethodNotAllowed,
            Status::RequestTimeout,
            Status::ContentTooLarge,
            Status::UriTooLong,
            Status::HeaderFieldsTooLarge,
            Status::NotImplemented,
            Status::VersionNotSupported,
        ] {
            let (head, body) = status.reply();
            let head = std::str::from_utf8(head).unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {} ", status.code())),
                "{head}"
            );
            assert!(
                head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
                "{status}: {head:?} vs a body of {}",
                body.len()
            );
            assert!(head.ends_with("\r\nDate: "));
            assert_eq!(
                status.to_string().split(' ').next(),
                Some(&*status.code().to_string())
            );
        }
    }

    #[test]
    fn date_comes_from_the_injected_clock() {
        fn y2k() -> SystemTime {
            UNIX_EPOCH + Duration::from_secs(946_684_800)
        }
        let mut m = HttpServer::new(Arc::new(HttpConfig {
            clock: y2k,
            ..config()
        }));
        let t = drive(
            &mut m,
            [&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..]],
            test_epoch(),
        );
        assert!(
            t.sent
                .contains("\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n"),
            "{}",
            t.sent
        );
    }

    // -----------------------------------------------------------------------------------
    // Refusals: each status, then close

    fn assert_refused(input: &[u8], status: &str) {
        let t = same_any_split(input);
        assert!(
            t.sent.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "expected {status}, sent {:?}",
            t.sent
        );
        assert!(
            t.sent.contains("\r\nConnection: close\r\n\r\n"),
            "{}",
            t.sent
        );
        assert_eq!(t.action, Action::CloseAfterFlush, "{status} closes");
        assert_eq!(t.state, "closing");
    }

    #[test]
    fn malformed_heads_are_400() {
        for input in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
            b"\rGET / HTTP/1.1\r\n\r\n",
        ] {
            assert_refused(input, "400 Bad Request");
            assert!(whole(input).error.is_some(), "a peer error");
        }
    }

    #[test]
    fn host_rules() {
        assert_refused(b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request");
        assert_refused(
            b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
            "400 Bad Request",
        );
        assert_refused(
            b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
            "400 Bad Request",
        );
        // HTTP/1.0 predates Host.
        assert_eq!(whole(b"GET / HTTP/1.0\r\n\r\n").sent, hello(CLOSE));
    }

    #[test]
    fn content_length_rules() {
        assert_refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\n",
            "400 Bad Request",
        );
        assert_refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "400 Bad Request",
        );
        assert_refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "400 Bad Request",
        );
        // Repeated identical values are one value.
        let t = whole(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok",
        );
        assert!(t.sent.starts_with("HTTP/1.1 405"), "{}", t.sent);
        assert_eq!(t.action, Action::Continue);
    }

    #[test]
    fn size_limits() {
        let line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_refused(line.as_bytes(), "414 URI Too Long");
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(9000)
        );
        assert_refused(big.as_bytes(), "431 Request Header Fields Too Large");
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_refused(many.as_bytes(), "431 Request Header Fields Too Large");
        // Exactly 100 header lines is fine.
        let hundred: String = (1..MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let hundred = format!("GET / HTTP/1.1\r\nHost: a\r\n{hundred}\r\n");
        assert_eq!(whole(hundred.as_bytes()).sent, hello(""));
        // A head that never ends is refused after the limit, not buffered.
        let endless = format!("GET / HTTP/1.1\r\nHost: a\r\n{}", "X: y\r\n".repeat(2000));
        let t = whole(endless.as_bytes());
        assert!(t.sent.starts_with("HTTP/1.1 431"), "{}", t.sent);

        let body = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n";
        assert_refused(body, "413 Content Too Large");
        let huge = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_refused(huge, "413 Content Too Large");
        // 1 MiB exactly is accepted, read and dropped.
        let mut at_limit =
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n".to_vec();
        at_limit.resize(at_limit.len() + 1024 * 1024, b'x');
        let t = whole(&at_limit);
        assert!(t.sent.starts_with("HTTP/1.1 405"), "{}", &t.sent[..40]);
        assert_eq!(t.unconsumed, 0);
    }

    #[test]
    fn transfer_encoding_and_versions() {
        assert_refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "501 Not Implemented",
        );
        let t = whole(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(t.error, None, "501 is our limit, not the peer's fault");
        assert_refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
            "501 Not Implemented",
        );
        assert_refused(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "400 Bad Request",
        );
        assert_refused(
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            "505 HTTP Version Not Supported",
        );
        assert_refused(
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            "505 HTTP Version Not Supported",
        );
        assert_refused(b"GET / HTTP/0.9\r\n\r\n", "505 HTTP Version Not Supported");
        // Not a version at all is not an HTTP request line: 400, not 505.
        assert_refused(b"THIS IS NOT HTTP\r\n\r\n", "400 Bad Request");
        assert_refused(b"GET / HTTP/1.1.1\r\n\r\n", "400 Bad Request");
    }

    #[test]
    fn timeouts_of_never_do_not_overflow() {
        let mut m = HttpServer::new(Arc::new(HttpConfig {
            header_timeout: Duration::MAX,
            keepalive_timeout: Duration::MAX,
            body_timeout: Duration::MAX,
            ..config()
        }));
        let now = test_epoch();
        m.handle_open(&mut Out::new(&mut Vec::new(), now));
        assert!(m.poll_timeout().is_some_and(|t| t > now));
        let t = drive(&mut m, [&b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET"[..]], now);
        assert_eq!(t.state, "reading-head");
    }

    #[test]
    fn a_head_request_refused_gets_no_body() {
        let t = whole(b"HEAD / HTTP/1.1\r\n\r\n");
        assert_eq!(
            t.sent,
            reply("400 Bad Request", "", "Bad Request\n", true, CLOSE)
        );
        let t = whole(b"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n");
        assert_eq!(
            t.sent,
            reply(
                "413 Content Too Large",
                "",
                "Content Too Large\n",
                true,
                CLOSE
            )
        );
    }

    // -----------------------------------------------------------------------------------
    // Test vectors shared with the integration tests and benchmarks

    /// The cases of `testdata/http/cases.txt` (read by the tests' own support, outside
    /// this I/O-free module): file name, bytes, status, kept alive.
    fn testdata() -> Vec<(String, Vec<u8>, u16, bool)> {
        crate::testing::http_cases()
    }

    #[test]
    fn testdata_cases_whole_bytewise_split_and_with_trailing_bytes() {
        let cases = testdata();
        assert!(cases.len() >= 20);
        for (name, bytes, status, keep) in cases {
            let t = same_any_split(&bytes);
            assert!(
                t.sent.starts_with(&format!("HTTP/1.1 {status} ")),
                "{name}: expected {status}, sent {:?}",
                t.sent
            );
            assert_eq!(t.action == Action::Continue, keep, "{name}: kept alive?");
            assert_eq!(t.sent.contains("Connection: close\r\n"), !keep, "{name}");
            // With the start of another request behind it: the case is answered the same,
            // and (if kept alive) exactly its bytes are consumed.
            let mut trailing = bytes.clone();
            trailing.extend_from_slice(b"GET / HT");
            let tt = whole(&trailing);
            assert_eq!(tt.sent, t.sent, "{name} with trailing bytes");
            if keep {
                assert_eq!(tt.unconsumed, 8, "{name}: the next request's bytes stay");
                assert_eq!(tt.state, "reading-head", "{name}");
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Pipelining and persistence

    #[test]
    fn sixteen_pipelined_requests_get_sixteen_replies_in_order_in_one_call() {
        let mut input = Vec::new();
        let mut want = String::new();
        for i in 0..16 {
            match i % 4 {
                0 => {
                    input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
                    want += &hello("");
                }
                1 => {
                    input.extend_from_slice(
                        format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
                    );
                    want += &reply("404 Not Found", "", "Not Found\n", false, "");
                }
                2 => {
                    input.extend_from_slice(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
                    want += &reply("200 OK", "", "Hello, World", true, "");
                }
                _ => {
                    input.extend_from_slice(
                        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
                    );
                    want += &reply(
                        "405 Method Not Allowed",
                        "Allow: GET, HEAD\r\n",
                        "Method Not Allowed\n",
                        false,
                        "",
                    );
                }
            }
        }
        let now = test_epoch();
        let mut m = opened(now);
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, now);
        assert_eq!(m.handle_input(&input, &mut out), Ok(input.len()));
        assert_eq!(out.action(), Action::Continue);
        assert_eq!(String::from_utf8(sent).unwrap(), want);
        // And however the batch is split.
        assert_eq!(same_any_split(&input).sent, want);
    }

    #[test]
    fn requests_after_one_that_closes_are_ignored() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let t = same_any_split(input);
        assert_eq!(t.sent, hello(CLOSE));
        assert_eq!(t.action, Action::CloseAfterFlush);
        let mut m = server();
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, test_epoch());
        assert_eq!(
            m.handle_input(input, &mut out),
            Ok(input.len()),
            "all consumed"
        );
        // Once closing, more input is consumed and ignored.
        assert_eq!(m.handle_input(b"GET / HTTP/1.1\r\n\r\n", &mut out), Ok(18));
        assert_eq!(String::from_utf8(sent).unwrap(), hello(CLOSE));
    }

    #[test]
    fn keep_alive_rules_for_10_and_11() {
        let cases: [(&str, &str, Action); 8] = [
            ("HTTP/1.1", "", Action::Continue),
            ("HTTP/1.1", "Connection: close\r\n", Action::CloseAfterFlush),
            ("HTTP/1.1", "Connection: Close\r\n", Action::CloseAfterFlush),
            (
                "HTTP/1.1",
                "Connection: keep-alive, close\r\n",
                Action::CloseAfterFlush,
            ),
            ("HTTP/1.1", "Connection: keep-alive\r\n", Action::Continue),
            ("HTTP/1.0", "", Action::CloseAfterFlush),
            ("HTTP/1.0", "Connection: keep-alive\r\n", Action::Continue),
            (
                "HTTP/1.0",
                "Connection: Keep-Alive, close\r\n",
                Action::CloseAfterFlush,
            ),
        ];
        for (version, conn, action) in cases {
            let req = format!("GET / {version}\r\nHost: a\r\n{conn}\r\n");
            let t = same_any_split(req.as_bytes());
            assert_eq!(t.action, action, "{version} {conn:?}");
            let want = match (version, action) {
                (_, Action::CloseAfterFlush) => hello(CLOSE),
                ("HTTP/1.0", _) => hello("Connection: keep-alive\r\n"),
                _ => hello(""),
            };
            assert_eq!(t.sent, want, "{version} {conn:?}");
        }
        // A kept-alive HTTP/1.0 connection serves the next request too.
        let two = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n";
        let t = whole(two);
        assert_eq!(t.sent, hello("Connection: keep-alive\r\n") + &hello(CLOSE));
    }

    #[test]
    fn bodies_are_read_and_dropped_across_calls() {
        let t0 = test_epoch();
        let mut m = opened(t0);
        let mut sent = Vec::new();
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n";
        let mut input = head.to_vec();
        input.extend_from_slice(b"0123");
        let mut out = Out::new(&mut sent, t0);
        assert_eq!(
            m.handle_input(&input, &mut out),
            Ok(input.len()),
            "the body is consumed as it comes"
        );
        assert!(sent.is_empty(), "no reply before the body is in");
        assert_eq!(m.state().to_string(), "discarding-body(6 left)");
        assert_eq!(m.poll_timeout(), Some(t0 + BODY));
        // Each arrival re-arms the body timeout (inactivity, not a deadline).
        let t1 = t0 + Duration::from_millis(100);
        let mut out = Out::new(&mut sent, t1);
        assert_eq!(m.handle_input(b"456", &mut out), Ok(3));
        assert_eq!(m.poll_timeout(), Some(t1 + BODY));
        let mut out = Out::new(&mut sent, t1);
        assert_eq!(
            m.handle_input(b"789GET / HTTP/1.1\r\nHost: a\r\n\r\n", &mut out),
            Ok(30)
        );
        assert_eq!(
            String::from_utf8(sent).unwrap(),
            reply(
                "405 Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                "Method Not Allowed\n",
                false,
                ""
            ) + &hello("")
        );
    }

    #[test]
    fn expect_100_continue() {
        let head =
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let mut m = opened(test_epoch());
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, test_epoch());
        assert_eq!(m.handle_input(head, &mut out), Ok(head.len()));
        assert_eq!(sent, CONTINUE);
        let mut out = Out::new(&mut sent, test_epoch());
        assert_eq!(m.handle_input(b"hi", &mut out), Ok(2));
        assert!(String::from_utf8_lossy(&sent[CONTINUE.len()..]).starts_with("HTTP/1.1 405"));
        // Not when the body is already here, nor for HTTP/1.0, nor when refused.
        let mut with_body = head.to_vec();
        with_body.extend_from_slice(b"hi");
        assert!(!whole(&with_body).sent.contains("100 Continue"));
        assert!(
            !whole(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
                .sent
                .contains("100 Continue")
        );
        let t = whole(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 9999999\r\n\r\n");
        assert!(t.sent.starts_with("HTTP/1.1 413"));
    }

    // -----------------------------------------------------------------------------------
    // Timeouts, with injected instants

    fn timeout_at(m: &mut HttpServer, now: Instant) -> Transcript {
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, now);
        m.handle_timeout(&mut out);
        Transcript {
            action: out.action(),
            sent: String::from_utf8(sent).unwrap(),
            error: None,
            unconsumed: 0,
            state: m.state().to_string(),
        }
    }

    #[test]
    fn header_deadline_runs_from_the_first_byte_and_is_not_rearmed() {
        let t0 = test_epoch();
        let mut m = opened(t0);
        assert_eq!(
            m.poll_timeout(),
            Some(t0 + HEADER),
            "a fresh connection must speak"
        );
        let t1 = t0 + Duration::from_millis(50);
        let t = drive(&mut m, [&b"GET / HTTP/1.1\r\n"[..]], t1);
        assert_eq!((t.unconsumed, &t.state[..]), (16, "reading-head"));
        assert_eq!(m.poll_timeout(), Some(t1 + HEADER));
        // More of the head, later: the deadline stays where it was.
        let t2 = t1 + Duration::from_millis(150);
        let mut sink = Vec::new();
        let mut out = Out::new(&mut sink, t2);
        assert_eq!(
            m.handle_input(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut out),
            Ok(0)
        );
        assert_eq!(
            m.poll_timeout(),
            Some(t1 + HEADER),
            "not re-armed by partial reads"
        );
        // Early: nothing happens.
        let early = timeout_at(&mut m, t1 + HEADER - Duration::from_millis(1));
        assert_eq!((early.sent.as_str(), early.action), ("", Action::Continue));
        // At the deadline: 408 and close.
        let t = timeout_at(&mut m, t1 + HEADER);
        assert_eq!(
            t.sent,
            reply("408 Request Timeout", "", "Request Timeout\n", false, CLOSE)
        );
        assert_eq!(
            (t.action, &t.state[..]),
            (Action::CloseAfterFlush, "closing")
        );
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn a_fresh_connection_that_never_speaks_is_closed_silently() {
        let t0 = test_epoch();
        let mut m = opened(t0);
        let t = timeout_at(&mut m, t0 + HEADER + Duration::from_millis(3));
        assert_eq!((t.sent.as_str(), t.action), ("", Action::CloseAfterFlush));
    }

    #[test]
    fn keepalive_idle_timeout_is_silent_and_reset_by_a_request() {
        let t0 = test_epoch();
        let mut m = opened(t0);
        let req = &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..];
        let t1 = t0 + Duration::from_millis(10);
        drive(&mut m, [req], t1);
        assert_eq!(m.poll_timeout(), Some(t1 + KEEPALIVE));
        // A request before the timeout: answered, and the idle clock restarts.
        let t2 = t1 + Duration::from_millis(200);
        assert_eq!(drive(&mut m, [req], t2).sent, hello(""));
        assert_eq!(m.poll_timeout(), Some(t2 + KEEPALIVE));
        let early = timeout_at(&mut m, t1 + KEEPALIVE);
        assert_eq!((early.sent.as_str(), early.action), ("", Action::Continue));
        let t = timeout_at(&mut m, t2 + KEEPALIVE);
        assert_eq!(
            (t.sent.as_str(), t.action),
            ("", Action::CloseAfterFlush),
            "silent close"
        );
        assert_eq!(t.state, "closing");
    }

    #[test]
    fn the_next_pipelined_head_gets_its_own_deadline() {
        let t0 = test_epoch();
        let mut m = opened(t0);
        let t1 = t0 + Duration::from_millis(150);
        let t = drive(&mut m, [&b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /"[..]], t1);
        assert_eq!(t.state, "reading-head");
        assert_eq!(m.poll_timeout(), Some(t1 + HEADER));
    }

    #[test]
    fn body_inactivity_timeout_is_408() {
        let t0 = test_epoch();
        let mut m = opened(t0);
        drive(
            &mut m,
            [&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nab"[..]],
            t0,
        );
        let t = timeout_at(&mut m, t0 + BODY);
        assert!(t.sent.starts_with("HTTP/1.1 408"), "{}", t.sent);
        assert_eq!(t.action, Action::CloseAfterFlush);
    }

    // -----------------------------------------------------------------------------------
    // End of stream and shutdown

    fn eof(m: &mut HttpServer, rest: &[u8]) -> (Result<(), PeerError>, String) {
        let mut sent = Vec::new();
        let r = m.handle_eof(rest, &mut Out::new(&mut sent, test_epoch()));
        (r, String::from_utf8(sent).unwrap())
    }

    #[test]
    fn end_of_stream() {
        // Clean: between requests, or after stray line endings.
        let mut m = opened(test_epoch());
        assert_eq!(eof(&mut m, b""), (Ok(()), String::new()));
        let mut m = opened(test_epoch());
        drive(
            &mut m,
            [&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\n"[..]],
            test_epoch(),
        );
        assert_eq!(eof(&mut m, b"\r\n"), (Ok(()), String::new()));
        // Half-close after a whole request: it was answered, the end is clean.
        let mut m = opened(test_epoch());
        let t = drive(&mut m, [&b"GET / HTTP/1.0\r\n\r\n"[..]], test_epoch());
        assert_eq!(t.sent, hello(CLOSE));
        assert_eq!(eof(&mut m, b""), (Ok(()), String::new()));
        // A driver that hands over the request with the end: answered all the same.
        let mut m = opened(test_epoch());
        assert_eq!(
            eof(&mut m, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            (Ok(()), hello(""))
        );
        // Truncated head or body: 400, a peer error.
        let mut m = opened(test_epoch());
        let (r, sent) = eof(&mut m, b"GET / HTTP/1.1\r\nHo");
        assert!(r.is_err() && sent.starts_with("HTTP/1.1 400"), "{sent}");
        let mut m = opened(test_epoch());
        drive(
            &mut m,
            [&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nab"[..]],
            test_epoch(),
        );
        let (r, sent) = eof(&mut m, b"");
        assert!(r.is_err() && sent.starts_with("HTTP/1.1 400"), "{sent}");
    }

    #[test]
    fn shutdown_closes_idle_connections_and_finishes_requests_in_progress() {
        let now = test_epoch();
        let mut m = opened(now);
        let mut sent = Vec::new();
        let mut out = Out::new(&mut sent, now);
        m.handle_shutdown(&mut out);
        assert_eq!(out.action(), Action::CloseAfterFlush);
        assert!(sent.is_empty());

        let mut m = opened(now);
        drive(&mut m, [&b"GET / HTTP/1.1\r\n"[..]], now);
        let mut out = Out::new(&mut sent, now);
        m.handle_shutdown(&mut out);
        assert_eq!(
            out.action(),
            Action::Continue,
            "the request in progress finishes"
        );
        let t = drive(&mut m, [&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..]], now);
        assert_eq!((t.sent, t.action), (hello(CLOSE), Action::CloseAfterFlush));

        let mut m = opened(now);
        drive(
            &mut m,
            [&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n"[..]],
            now,
        );
        m.handle_shutdown(&mut Out::new(&mut sent, now));
        let t = drive(&mut m, [&b"ok"[..]], now);
        assert!(
            t.sent
                .ends_with("Connection: close\r\n\r\nMethod Not Allowed\n"),
            "{}",
            t.sent
        );
        assert_eq!(t.action, Action::CloseAfterFlush);
    }

    // -----------------------------------------------------------------------------------
    // Robustness: no input panics, and no split changes the answer

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn mutated_requests_never_panic_and_split_never_matters() {
        let seeds: Vec<Vec<u8>> = testdata()
            .into_iter()
            .map(|(_, b, _, _)| b)
            .filter(|b| b.len() < 2048)
            .collect();
        let alphabet = b"GETHPOS /:\r\n\t 0123456789,-chunkedclose\x00\x7f\xff";
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        for _ in 0..3000 {
            let mut input = seeds[rng.below(seeds.len())].clone();
            // Glue a second request on, sometimes.
            if rng.below(3) == 0 {
                input.extend_from_slice(&seeds[rng.below(seeds.len())]);
            }
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(input.len() + 1);
                match rng.below(4) {
                    0 if !input.is_empty() => {
                        input.remove(at.min(input.len() - 1));
                    }
                    1 => input.insert(at, alphabet[rng.below(alphabet.len())]),
                    2 if at < input.len() => input[at] = rng.next() as u8,
                    _ => input.truncate(at),
                }
            }
            let want = whole(&input);
            // Random splits into up to 6 pieces.
            let mut cuts: Vec<usize> = (0..rng.below(6))
                .map(|_| rng.below(input.len() + 1))
                .collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for c in cuts {
                pieces.push(&input[from..c]);
                from = c;
            }
            pieces.push(&input[from..]);
            let now = test_epoch();
            let got = drive(&mut opened(now), pieces.iter().copied(), now);
            assert_eq!(got, want, "input {:?}", String::from_utf8_lossy(&input));
            // And the end of the stream after it is handled, whatever the state.
            let mut m = opened(now);
            let _ = drive(&mut m, [&input[..]], now);
            let _ = eof(&mut m, b"");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(42);
        for _ in 0..2000 {
            let len = rng.below(300);
            let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let t = whole(&input);
            if !input.is_empty() && t.action == Action::CloseAfterFlush {
                assert!(t.sent.starts_with("HTTP/1.1 4") || t.sent.starts_with("HTTP/1.1 5"));
            }
        }
    }

    #[test]
    fn a_connection_costs_a_few_words() {
        // An Arc, a state of a few integers and an Instant, a flag.
        assert!(
            std::mem::size_of::<HttpServer>() <= 64,
            "{}",
            std::mem::size_of::<HttpServer>()
        );
    }
}
