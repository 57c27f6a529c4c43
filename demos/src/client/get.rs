//! `sockloop get`: one HTTP/1.1 `GET` over the reactor, the body streamed to a file or
//! stdout in constant memory.
//!
//! # What happens, in order
//!
//! 1. **Parse** `http://HOST[:PORT][/PATH][?QUERY]` ([`Url::parse`]): `http` only (there
//!    is no TLS: `https://` is a clear [`GetError::UnsupportedScheme`]), port 80 by
//!    default, IPv6 literals in brackets (`http://[::1]:8080/`), the fragment dropped.
//! 2. **Resolve** the host, unless it is an IP literal, on a helper thread (below).
//! 3. **Connect** with [`Reactor::connect`] to each resolved address in turn until one
//!    accepts: `localhost` often resolves to `::1` first while a server listens on
//!    `127.0.0.1` only, and a refused `::1` must not end the download.
//! 4. **Exchange**: an [`HttpClient`] sends the request when the connection opens and
//!    hands the response to a sink that writes the head to `head_out` and the body to
//!    its [`BodyTarget`] as it arrives. Nothing holds more than one read buffer (64 KiB)
//!    of the body, so memory stays flat whatever the size.
//! 5. **Run** the loop until the sink has the outcome, then stop it and return.
//!
//! # Resolving without blocking the loop
//!
//! `std`'s resolver ([`ToSocketAddrs`], `getaddrinfo` underneath) blocks, and a slow DNS
//! server can hold it for many seconds. So the lookup runs on a helper thread, and its
//! answer comes back through the reactor's [`Handle`](sockloop::reactor::Handle): the thread
//! posts a task that stores the answer, which wakes the loop; the loop, meanwhile, waits
//! in `run_once` with the timeout as its limit. A lookup still stuck at the timeout is a
//! [`GetError::Timeout`] while resolving; the thread cannot be cancelled (`getaddrinfo`
//! has no cancel), so it is left to finish on its own, and its post then fails quietly
//! because the reactor is gone.
//!
//! Resolving before starting the loop would be as fast for a single download, but it
//! would leave the lookup unbounded by the timeout, and it is the wrong habit for a loop:
//! on a reactor serving other connections at the same time, one slow lookup would freeze
//! every one of them.
//!
//! # Timeouts
//!
//! One `timeout` bounds every wait, each on its own: the lookup, each connect attempt,
//! the response head (from the moment the connection opens to its last byte: a
//! deadline, so a server trickling bytes cannot stretch it), and every silence while the
//! body arrives (an idle timeout, re-armed by each byte). There is deliberately no limit
//! on the whole body: a large download on a slow link is not an error.
//!
//! # Output
//!
//! The status line and header fields go to `head_out` as text lines (as `curl -i`
//! shows them), then a blank line; [`get`] uses stdout. The body goes to the
//! [`BodyTarget`]: a file, created only once the response head has arrived (a refused
//! connection leaves no empty file behind), or stdout, after the head's blank line.
//! Trailer fields of a chunked body go to `head_out` after the body. Redirects are not
//! followed: their `Location` is in the head, and [`GetOutcome::redirect`] reports it.
//! Any status is a successful exchange (as with `curl` without `--fail`): a 404 page is
//! still a complete response.
//!
//! # Exit codes
//!
//! [`GetError::exit_code`] follows `curl`'s numbering, so scripts written for `curl`
//! read `sockloop get` the same way: 1 unsupported scheme, 3 bad URL, 6 cannot resolve,
//! 7 cannot connect (refused, unreachable), 28 timeout, 8 malformed response, 18 body cut
//! short, 23 cannot write the output, 56 connection failed while receiving, 2 the loop
//! could not start.

use crate::proto::http::client::{
    Field, Head, HttpClient, Method, Request, ResponseError, ResponseSink, Stage, Summary,
};
use crate::proto::CloseReason;
use sockloop::net::Endpoint;
use sockloop::reactor::Reactor;
use std::cell::RefCell;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The default [`GetOptions::timeout`]: 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How much body the output buffers before writing: one reactor read buffer.
const OUTPUT_BUFFER: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------
// URLs.

/// Where the host of a [`Url`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A name to resolve (lower-cased).
    Name(String),
    /// An IP literal: no lookup.
    Ip(IpAddr),
}

/// An `http://` URL, as much of it as a `GET` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    host: Host,
    port: u16,
    target: String,
}

impl Url {
    /// Parses `http://HOST[:PORT][/PATH][?QUERY][#FRAGMENT]`.
    ///
    /// `HOST` is a name, an IPv4 address or an IPv6 address in brackets; `PORT` defaults
    /// to 80; the target (`/PATH?QUERY`) defaults to `/`; the fragment is never sent.
    /// Refused: other schemes (`https` among them: no TLS here), user names and passwords,
    /// IPv6 zone ids, port 0, and spaces, control bytes or non-ASCII anywhere (percent-
    /// encode them).
    pub fn parse(text: &str) -> Result<Url, GetError> {
        let bad = |why: String| GetError::BadUrl(format!("{text:?}: {why}"));
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(bad("expected a URL such as http://HOST:PORT/PATH".into()));
        };
        if scheme.eq_ignore_ascii_case("https") {
            return Err(GetError::UnsupportedScheme(
                "https is not supported (sockloop has no TLS); use an http:// URL".into(),
            ));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(GetError::UnsupportedScheme(format!(
                "unsupported scheme {scheme:?}: only http:// URLs are supported"
            )));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let tail = tail.split_once('#').map_or(tail, |(before, _)| before);
        let target = match tail {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        if !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "the path contains a space, a control byte or non-ASCII: percent-encode it \
                 (a space is %20)"
                    .into(),
            ));
        }
        if authority.contains('@') {
            return Err(bad(
                "user names and passwords in URLs are not supported".into()
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((addr, after)) = v6.split_once(']') else {
                return Err(bad("'[' without ']' around an IPv6 address".into()));
            };
            let ip: Ipv6Addr = addr
                .parse()
                .map_err(|_| bad(format!("{addr:?} is not an IPv6 address")))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad(format!("unexpected {p:?} after ']'")))?,
                ),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (name, port) = match authority.rsplit_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (authority, None),
            };
            if name.is_empty() {
                return Err(bad("no host".into()));
            }
            let host = match name.parse::<Ipv4Addr>() {
                Ok(ip) => Host::Ip(IpAddr::V4(ip)),
                Err(_) if name.contains(':') => {
                    return Err(bad(
                        "an IPv6 address needs brackets: http://[::1]:8080/".into()
                    ))
                }
                Err(_) => {
                    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
                    if !name.bytes().all(ok) {
                        return Err(bad(format!("{name:?} is not a host name")));
                    }
                    Host::Name(name.to_ascii_lowercase())
                }
            };
            (host, port)
        };
        let port = match port {
            None | Some("") => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(format!("{p:?} is not a port (1 to 65535)")))?,
        };
        Ok(Url { host, port, target })
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port (80 unless the URL says otherwise).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request target: `/PATH?QUERY`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The `Host` field's value: the host, bracketed if IPv6, with `:PORT` unless 80.
    pub fn host_header(&self) -> String {
        let host = match &self.host {
            Host::Name(n) => n.clone(),
            Host::Ip(IpAddr::V4(a)) => a.to_string(),
            Host::Ip(IpAddr::V6(a)) => format!("[{a}]"),
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host_header(), self.target)
    }
}

// ---------------------------------------------------------------------------------------
// Results.

/// What was being waited for when a [`GetError::Timeout`] struck.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The name lookup of this host.
    Resolve(String),
    /// The connect to this address.
    Connect(SocketAddr),
    /// The response head from this address.
    Head(SocketAddr),
    /// The next body bytes, after this many had arrived.
    Body {
        /// Body bytes received before the silence.
        received: u64,
    },
}

/// Why a `get` failed. [`GetError::exit_code`] gives each kind its own exit status.
#[derive(Debug)]
pub enum GetError {
    /// Not an `http://` URL (`https`, `ftp`, ...).
    UnsupportedScheme(String),
    /// The URL could not be parsed.
    BadUrl(String),
    /// The host name could not be resolved.
    Resolve {
        /// The name.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
    /// The connection was refused: nothing listens on that port.
    Refused {
        /// The address that refused (the last one tried).
        addr: SocketAddr,
    },
    /// The connect failed otherwise (network unreachable, say).
    Connect {
        /// The address (the last one tried).
        addr: SocketAddr,
        /// The error.
        kind: io::ErrorKind,
    },
    /// A wait took longer than the timeout.
    Timeout {
        /// What was being waited for.
        during: Waiting,
        /// The timeout.
        limit: Duration,
    },
    /// The server's response broke HTTP/1.1.
    Malformed(String),
    /// The connection closed before the response was complete: the body (or head) is cut
    /// short. What was received has been written.
    Truncated(String),
    /// The connection failed while the response was arriving (reset, say).
    Connection(String),
    /// Writing the head or body failed (a full disk, a closed stdout, a bad path).
    Output(io::Error),
    /// The event loop (or the resolver thread) could not be set up.
    Setup(io::Error),
}

impl GetError {
    /// The process exit status for this error, following `curl`'s numbering (see the
    /// [module docs](self#exit-codes)).
    pub fn exit_code(&self) -> u8 {
        match self {
            GetError::UnsupportedScheme(_) => 1,
            GetError::Setup(_) => 2,
            GetError::BadUrl(_) => 3,
            GetError::Resolve { .. } => 6,
            GetError::Refused { .. } | GetError::Connect { .. } => 7,
            GetError::Malformed(_) => 8,
            GetError::Truncated(_) => 18,
            GetError::Output(_) => 23,
            GetError::Timeout { .. } => 28,
            GetError::Connection(_) => 56,
        }
    }
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::UnsupportedScheme(why) => f.write_str(why),
            GetError::BadUrl(why) => write!(f, "bad URL {why}"),
            GetError::Resolve { host, reason } => write!(f, "cannot resolve {host}: {reason}"),
            GetError::Refused { addr } => {
                write!(
                    f,
                    "connection refused by {addr}: nothing is listening there"
                )
            }
            GetError::Connect { addr, kind } => {
                write!(f, "cannot connect to {addr}: {}", io::Error::from(*kind))
            }
            GetError::Timeout { during, limit } => match during {
                Waiting::Resolve(host) => write!(f, "timed out after {limit:?} resolving {host}"),
                Waiting::Connect(addr) => {
                    write!(f, "timed out after {limit:?} connecting to {addr}")
                }
                Waiting::Head(addr) => write!(
                    f,
                    "timed out after {limit:?} waiting for the response head from {addr}"
                ),
                Waiting::Body { received } => write!(
                    f,
                    "timed out: no data for {limit:?} in the body ({received} bytes received)"
                ),
            },
            GetError::Malformed(why) => write!(f, "malformed response: {why}"),
            GetError::Truncated(why) => write!(f, "truncated response: {why}"),
            GetError::Connection(why) => write!(f, "connection failed: {why}"),
            GetError::Output(e) => write!(f, "cannot write the output: {e}"),
            GetError::Setup(e) => write!(f, "cannot start: {e}"),
        }
    }
}

impl std::error::Error for GetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GetError::Output(e) | GetError::Setup(e) => Some(e),
            _ => None,
        }
    }
}

/// A complete response (any status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetOutcome {
    /// The URL fetched.
    pub url: Url,
    /// The address that answered.
    pub peer: SocketAddr,
    /// The status line and header fields.
    pub head: Head,
    /// Body bytes written (decoded from chunks where chunked).
    pub body_bytes: u64,
    /// The trailer fields of a chunked body.
    pub trailers: Vec<Field>,
}

impl GetOutcome {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// The status and `Location` of a redirect (3xx with a `Location`), which `get` does
    /// not follow.
    pub fn redirect(&self) -> Option<(u16, String)> {
        self.head
            .redirect()
            .map(|location| (self.head.status, location))
    }
}

/// Where the body goes.
pub enum BodyTarget {
    /// Standard output, after the head's blank line.
    Stdout,
    /// A file, created (or truncated) when the response head arrives.
    File(PathBuf),
    /// Any writer (tests collect into memory).
    Writer(Box<dyn Write>),
}

impl fmt::Debug for BodyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyTarget::Stdout => f.write_str("Stdout"),
            BodyTarget::File(p) => f.debug_tuple("File").field(p).finish(),
            BodyTarget::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

/// Settings of a [`fetch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetOptions {
    /// The limit of each wait (see the [module docs](self#timeouts)). Default
    /// [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// `GET`, or `HEAD` for the head alone. Default `GET`.
    pub method: Method,
}

impl Default for GetOptions {
    fn default() -> GetOptions {
        GetOptions {
            timeout: DEFAULT_TIMEOUT,
            method: Method::Get,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry points.

/// Fetches `url` for the `sockloop get` command: prints the status line and header fields
/// to stdout, then a blank line, and writes the body to `out` (created when the head
/// arrives) or, without `out`, to stdout after the blank line. `timeout` bounds each wait
/// (lookup, connect, head, every silence in the body).
///
/// Returns the outcome for any complete response, whatever its status. A redirect is not
/// followed: its `Location` is among the printed headers, and a note goes to stderr. On
/// failure nothing more is printed; the caller prints the error (its `Display` is a
/// complete sentence) and exits with [`GetError::exit_code`].
pub fn get(url: &str, out: Option<&Path>, timeout: Duration) -> Result<GetOutcome, GetError> {
    let body = out.map_or(BodyTarget::Stdout, |p| BodyTarget::File(p.to_path_buf()));
    let opts = GetOptions {
        timeout,
        ..GetOptions::default()
    };
    let outcome = fetch(url, &opts, Box::new(io::stdout()), body)?;
    if let Some((status, location)) = outcome.redirect() {
        eprintln!("sockloop: redirect ({status}) not followed: Location: {location}");
    }
    Ok(outcome)
}

/// Fetches `url`: the head (as text, then a blank line) to `head_out`, the body to
/// `body`. See the [module docs](self) for the steps, and [`get`] for the command's use.
pub fn fetch(
    url: &str,
    opts: &GetOptions,
    head_out: Box<dyn Write>,
    body: BodyTarget,
) -> Result<GetOutcome, GetError> {
    let url = Url::parse(url)?;
    let request =
        Request::new(opts.method, &url.host_header(), url.target()).map_err(GetError::BadUrl)?;
    let mut reactor = Reactor::new().map_err(GetError::Setup)?;
    let result = match url.host() {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, url.port())]),
        Host::Name(name) => resolve(&mut reactor, name, url.port(), opts.timeout),
    }
    .and_then(|addrs| exchange(&mut reactor, &url, &addrs, &request, opts, head_out, body));
    // A finished exchange may still be closing politely (our FIN sent, the server's
    // awaited): nothing more is owed, so close at once.
    reactor.stop_now();
    result
}

/// Steps 3 to 5 of the module docs: the first of `addrs` (non-empty) that accepts the
/// connection gets the request.
fn exchange(
    reactor: &mut Reactor,
    url: &Url,
    addrs: &[SocketAddr],
    request: &Request,
    opts: &GetOptions,
    head_out: Box<dyn Write>,
    body: BodyTarget,
) -> Result<GetOutcome, GetError> {
    let shared = Rc::new(RefCell::new(Shared::new(head_out, body)));
    for (i, &addr) in addrs.iter().enumerate() {
        let machine = HttpClient::new(request.clone(), WriteSink(Rc::clone(&shared)))
            .with_head_timeout(opts.timeout)
            .with_idle_timeout(opts.timeout);
        log::debug!("get {url}: connecting to {addr}");
        match reactor.connect(&Endpoint::Inet(addr), Some(opts.timeout), machine) {
            Ok(token) => {
                // Until the sink has the outcome: the machine always reports one, from
                // its last call (handle_close) at the latest.
                while shared.borrow().result.is_none() && reactor.phase(token).is_some() {
                    reactor.run_once(None).map_err(GetError::Setup)?;
                }
            }
            // Refused straight away (no route for IPv6, say): the machine never ran.
            Err(e) => {
                shared.borrow_mut().result = Some(Err(ResponseError::ConnectFailed(e.kind())))
            }
        }
        let result = shared
            .borrow_mut()
            .result
            .take()
            .unwrap_or(Err(ResponseError::Closed(CloseReason::Aborted)));
        match result {
            Ok(summary) => {
                let mut s = shared.borrow_mut();
                return Ok(GetOutcome {
                    url: url.clone(),
                    peer: addr,
                    head: s.head.take().expect("a complete response has a head"),
                    body_bytes: summary.body_bytes,
                    trailers: std::mem::take(&mut s.trailers),
                });
            }
            Err(e @ (ResponseError::ConnectFailed(_) | ResponseError::ConnectTimeout))
                if i + 1 < addrs.len() =>
            {
                log::info!("get {url}: {addr}: {e}; trying the next address");
            }
            Err(e) => return Err(blame(e, addr, opts.timeout, &mut shared.borrow_mut())),
        }
    }
    unreachable!("there is at least one address")
}

/// Resolves `host` on a helper thread, waiting in the loop (see the module docs).
fn resolve(
    reactor: &mut Reactor,
    host: &str,
    port: u16,
    limit: Duration,
) -> Result<Vec<SocketAddr>, GetError> {
    type Answer = io::Result<Vec<SocketAddr>>;
    let slot: Arc<Mutex<Option<Answer>>> = Arc::default();
    let handle = reactor.handle();
    let (name, to_loop) = (host.to_owned(), Arc::clone(&slot));
    std::thread::Builder::new()
        .name("sockloop-resolve".into())
        .spawn(move || {
            let answer: Answer = (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect);
            // Runs on the loop's thread, and wakes it. Fails only if the loop has given up
            // and gone; then the answer is simply dropped.
            let _ = handle.post(move |_| {
                *to_loop.lock().unwrap_or_else(PoisonError::into_inner) = Some(answer);
            });
        })
        .map_err(GetError::Setup)?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(answer) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let failed = |reason: String| GetError::Resolve {
                host: host.to_owned(),
                reason,
            };
            return match answer {
                Ok(addrs) if addrs.is_empty() => Err(failed("no addresses".into())),
                Ok(addrs) => {
                    log::debug!("resolved {host} to {addrs:?}");
                    Ok(addrs)
                }
                Err(e) => Err(failed(e.to_string())),
            };
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(GetError::Timeout {
                during: Waiting::Resolve(host.to_owned()),
                limit,
            });
        }
        reactor
            .run_once(Some(deadline - now))
            .map_err(GetError::Setup)?;
    }
}

/// Turns the machine's error into the command's, with the address and the real output
/// error where the machine only had their description.
fn blame(e: ResponseError, addr: SocketAddr, limit: Duration, shared: &mut Shared) -> GetError {
    match e {
        ResponseError::ConnectFailed(io::ErrorKind::ConnectionRefused) => {
            GetError::Refused { addr }
        }
        ResponseError::ConnectFailed(kind) => GetError::Connect { addr, kind },
        ResponseError::ConnectTimeout => GetError::Timeout {
            during: Waiting::Connect(addr),
            limit,
        },
        ResponseError::HeadTimeout(limit)
        | ResponseError::IdleTimeout {
            after: limit,
            stage: Stage::Head,
            ..
        } => GetError::Timeout {
            during: Waiting::Head(addr),
            limit,
        },
        ResponseError::IdleTimeout {
            after,
            stage: Stage::Body,
            body_bytes,
        } => GetError::Timeout {
            during: Waiting::Body {
                received: body_bytes,
            },
            limit: after,
        },
        ResponseError::Malformed(why) => GetError::Malformed(why),
        ResponseError::Truncated(why) => GetError::Truncated(why),
        ResponseError::Io { kind, stage } => {
            GetError::Connection(format!("{} while {stage}", io::Error::from(kind)))
        }
        ResponseError::Sink(why) => GetError::Output(
            shared
                .output_error
                .take()
                .unwrap_or_else(|| io::Error::other(why)),
        ),
        ResponseError::Closed(reason) => GetError::Connection(reason.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// The sink: head to a writer, body to a file or writer, shared with the driver.

enum BodyOut {
    /// A file to create when the head arrives.
    Later(PathBuf),
    /// Where body bytes go now.
    Open(Box<dyn Write>),
}

impl BodyOut {
    fn open(&mut self) -> io::Result<()> {
        if let BodyOut::Later(path) = self {
            let file = File::create(&*path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            *self = BodyOut::Open(Box::new(BufWriter::with_capacity(OUTPUT_BUFFER, file)));
        }
        Ok(())
    }

    fn writer(&mut self) -> io::Result<&mut dyn Write> {
        self.open()?;
        match self {
            BodyOut::Open(w) => Ok(&mut **w),
            BodyOut::Later(_) => unreachable!("opened above"),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            BodyOut::Open(w) => w.flush(),
            BodyOut::Later(_) => Ok(()),
        }
    }
}

/// What the sink and the driver share (single-threaded: the loop's thread only).
struct Shared {
    head_out: Box<dyn Write>,
    body: BodyOut,
    head: Option<Head>,
    trailers: Vec<Field>,
    result: Option<Result<Summary, ResponseError>>,
    /// The first output error, in full (the machine only passes on its text).
    output_error: Option<io::Error>,
}

impl Shared {
    fn new(head_out: Box<dyn Write>, body: BodyTarget) -> Shared {
        let body = match body {
            BodyTarget::Stdout => BodyOut::Open(Box::new(BufWriter::with_capacity(
                OUTPUT_BUFFER,
                io::stdout(),
            ))),
            BodyTarget::File(path) => BodyOut::Later(path),
            BodyTarget::Writer(w) => BodyOut::Open(w),
        };
        Shared {
            head_out,
            body,
            head: None,
            trailers: Vec::new(),
            result: None,
            output_error: None,
        }
    }

    /// Keeps `e` for the caller and hands the machine a description of it.
    fn keep(&mut self, e: io::Error) -> io::Error {
        let copy = io::Error::new(e.kind(), e.to_string());
        self.output_error.get_or_insert(e);
        copy
    }
}

struct WriteSink(Rc<RefCell<Shared>>);

impl ResponseSink for WriteSink {
    fn head(&mut self, head: &Head) -> io::Result<()> {
        let s = &mut *self.0.borrow_mut();
        s.head = Some(head.clone());
        // The file first: if it cannot be created, fail before printing anything.
        let written = s
            .body
            .open()
            .and_then(|()| writeln!(s.head_out, "{head}"))
            .and_then(|()| s.head_out.flush());
        written.map_err(|e| s.keep(e))
    }

    fn body(&mut self, bytes: &[u8]) -> io::Result<()> {
        let s = &mut *self.0.borrow_mut();
        let written = s.body.writer().and_then(|w| w.write_all(bytes));
        written.map_err(|e| s.keep(e))
    }

    fn trailers(&mut self, fields: &[Field]) -> io::Result<()> {
        let s = &mut *self.0.borrow_mut();
        s.trailers = fields.to_vec();
        if fields.is_empty() {
            return Ok(());
        }
        // After the body, in order: flush it first.
        let mut written = s.body.flush();
        for field in fields {
            written = written.and_then(|()| writeln!(s.head_out, "{field}"));
        }
        written
            .and_then(|()| s.head_out.flush())
            .map_err(|e| s.keep(e))
    }

    fn done(&mut self, mut result: Result<Summary, ResponseError>) {
        let s = &mut *self.0.borrow_mut();
        // Whatever arrived is written out, complete or not.
        if let Err(e) = s.body.flush() {
            let e = s.keep(e);
            if result.is_ok() {
                result = Err(ResponseError::Sink(e.to_string()));
            }
        }
        s.result = Some(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn urls() {
        let u = url("http://example.org");
        assert_eq!(u.host(), &Host::Name("example.org".into()));
        assert_eq!((u.port(), u.target()), (80, "/"));
        assert_eq!(u.host_header(), "example.org");
        assert_eq!(u.to_string(), "http://example.org/");

        let u = url("HTTP://Example.ORG:8080/a/b?c=d#frag");
        assert_eq!(u.host(), &Host::Name("example.org".into()));
        assert_eq!((u.port(), u.target()), (8080, "/a/b?c=d"));
        assert_eq!(u.host_header(), "example.org:8080");

        let u = url("http://127.0.0.1:9/x");
        assert_eq!(u.host(), &Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(u.host_header(), "127.0.0.1:9");

        let u = url("http://[::1]:8080/");
        assert_eq!(u.host(), &Host::Ip("::1".parse().unwrap()));
        assert_eq!(u.host_header(), "[::1]:8080");
        assert_eq!(url("http://[::1]").port(), 80);
        assert_eq!(url("http://h:/").port(), 80);
        assert_eq!(url("http://h?q").target(), "/?q");
        assert_eq!(url("http://h#f").target(), "/");
    }

    #[test]
    fn bad_urls() {
        for (text, code) in [
            ("https://example.org/", 1),
            ("ftp://example.org/", 1),
            ("example.org/", 3),
            ("http://", 3),
            ("http:///path", 3),
            ("http://:80/", 3),
            ("http://h:0/", 3),
            ("http://h:65536/", 3),
            ("http://h:x/", 3),
            ("http://user:pw@h/", 3),
            ("http://[::1/", 3),
            ("http://[::1]x/", 3),
            ("http://[fe80::1%25eth0]/", 3),
            ("http://::1/", 3),
            ("http://h/a b", 3),
            ("http://h/caf\u{e9}", 3),
            ("http://h\u{e9}/", 3),
        ] {
            let e = Url::parse(text).expect_err(text);
            assert_eq!(e.exit_code(), code, "{text}: {e}");
        }
        let e = Url::parse("https://x/").unwrap_err();
        assert!(e.to_string().contains("https is not supported"), "{e}");
    }

    #[test]
    fn each_address_is_tried_until_one_accepts() {
        use std::io::Read;
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        });
        let url = Url::parse(&format!("http://localhost:{}/", open.port())).unwrap();
        let request = Request::get(&url.host_header(), url.target()).unwrap();
        let opts = GetOptions {
            timeout: Duration::from_secs(10),
            ..GetOptions::default()
        };
        let body = Rc::new(RefCell::new(Vec::new()));
        struct Into(Rc<RefCell<Vec<u8>>>);
        impl Write for Into {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.borrow_mut().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut reactor = Reactor::new().unwrap();
        let outcome = exchange(
            &mut reactor,
            &url,
            &[closed, open],
            &request,
            &opts,
            Box::new(io::sink()),
            BodyTarget::Writer(Box::new(Into(Rc::clone(&body)))),
        )
        .unwrap();
        assert_eq!(outcome.peer, open);
        assert_eq!(*body.borrow(), b"ok");
        server.join().unwrap();

        // The last address's failure is the one reported.
        let e = exchange(
            &mut reactor,
            &url,
            &[closed],
            &request,
            &opts,
            Box::new(io::sink()),
            BodyTarget::Writer(Box::new(io::sink())),
        )
        .unwrap_err();
        assert!(
            matches!(e, GetError::Refused { addr } if addr == closed),
            "{e:?}"
        );
    }
}
