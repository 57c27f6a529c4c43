//! Wiring: a demo × a driver × a transport → a running server. Shared by the CLI, the
//! tests and the benchmarks, so all three start servers the same way.

use crate::proto::chat::{Chat, ChatConfig, Room};
use crate::proto::echo::{DatagramEcho, Echo};
use crate::proto::file::FileReceiver;
use crate::proto::http::server::{HttpConfig, HttpServer};
use crate::proto::{ack::Ack, greet::Greeter, hello::Hello, stamp::Stamp};
use crate::proto::{DatagramProtocol, Protocol};
use crate::store::DirStore;
use sockloop::blocking::{self, BlockingDatagram, BlockingListener, BlockingServer, Factory, Mode};
use sockloop::net::Endpoint;
use sockloop::reactor::{Config, Reactor};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// The demos sockloop can serve, one per program of the tutorials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Demo {
    /// Sends every byte (or datagram) back.
    Echo,
    /// Answers every message with `server received you message.` (tutorial 000).
    Ack,
    /// Answers `[<ctime>] <message>` (tutorial 002's threaded timestamp server).
    Stamp,
    /// `Welcome!`, then `Hello, <message>!`; `exit` closes (tutorial 003).
    Greet,
    /// UDP: datagram `Michael` gets `Hello, Michael!` (tutorial 003).
    Hello,
    /// HTTP/1.1 `Hello, World` on `GET /` (tutorial 003's web server).
    Http,
    /// Every line goes to every other client; PING when idle (tutorial 000's server push).
    Chat,
    /// Receives `FILE <name> <size>` + bytes, answers `OK <size> <sha256>` (tutorial 001).
    File,
}

/// Settings of the demos that have any, shared by every server started with them.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where the file demo stores what it receives. Default `inbox`, relative to the
    /// current directory (created when the first file arrives).
    pub file_dir: std::path::PathBuf,
    /// Keep-alive of the chat demo.
    pub chat: ChatConfig,
    /// Limits and timeouts of the http demo.
    pub http: HttpConfig,
    /// Also serve the demo's datagram form over UDP on the TCP listener's own address
    /// and port, in the same server (for a benchmark's UDP flood against it). Only for
    /// demos with both forms (echo) served over TCP.
    pub also_udp: bool,
    /// Reactors to run (reactor driver, over tcp): each on a thread of its own with its
    /// own `SO_REUSEPORT` listener on the same address ([`sockloop::reactor::Group`]).
    /// Default 1.
    pub reactors: usize,
}

impl Default for DemoOptions {
    fn default() -> DemoOptions {
        DemoOptions {
            file_dir: "inbox".into(),
            chat: ChatConfig::default(),
            http: HttpConfig::default(),
            also_udp: false,
            reactors: 1,
        }
    }
}

impl Demo {
    /// Every demo, in the order `serve all` assigns ports.
    pub const ALL: [Demo; 8] = [
        Demo::Echo,
        Demo::Ack,
        Demo::Stamp,
        Demo::Greet,
        Demo::Hello,
        Demo::Http,
        Demo::Chat,
        Demo::File,
    ];

    /// The port `serve all` gives this demo when its first demo is on `base_port`
    /// (echo on `base_port`, ack on the next, ... file on `base_port + 7`); a demo served
    /// alone defaults to the same port, so the table's commands work either way. Port 0
    /// stays 0 (a free port). `None` if the port would be above 65535.
    pub fn table_port(self, base_port: u16) -> Option<u16> {
        if base_port == 0 {
            return Some(0);
        }
        let i = Demo::ALL.iter().position(|&d| d == self).unwrap_or(0);
        u16::try_from(usize::from(base_port) + i).ok()
    }

    /// The highest `--base-port` for which every demo of `serve all` gets a port.
    pub const MAX_BASE_PORT: u16 = u16::MAX - (Demo::ALL.len() as u16 - 1);

    /// The demo's name as the CLI and the `listening` line spell it.
    pub fn name(self) -> &'static str {
        match self {
            Demo::Echo => "echo",
            Demo::Ack => "ack",
            Demo::Stamp => "stamp",
            Demo::Greet => "greet",
            Demo::Hello => "hello",
            Demo::Http => "http",
            Demo::Chat => "chat",
            Demo::File => "file",
        }
    }

    /// The transport the demo is served on unless another is asked for.
    pub fn default_transport(self) -> Transport {
        match self {
            Demo::Hello => Transport::Udp,
            _ => Transport::Tcp,
        }
    }

    /// Returns true if and only if the demo can be served over `t`.
    pub fn supports(self, t: Transport) -> bool {
        match self {
            Demo::Echo => true,
            Demo::Hello => t.is_datagram(),
            _ => !t.is_datagram(),
        }
    }

    /// The transports the demo can be served over, for error messages.
    fn transports(self) -> String {
        [
            Transport::Tcp,
            Transport::Udp,
            Transport::Unix,
            Transport::Unixgram,
        ]
        .into_iter()
        .filter(|t| self.supports(*t))
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
    }

    /// Makes one stream machine per connection; state shared by the connections of one
    /// server (the chat room) lives in the closure.
    fn stream_factory(self, opts: &DemoOptions) -> Factory {
        match self {
            Demo::Echo => Arc::new(|| Box::new(Echo)),
            Demo::Ack => Arc::new(|| Box::new(Ack::new())),
            // The wall clock is read here, once per connection, and handed to the machine.
            Demo::Stamp => Arc::new(|| Box::new(Stamp::new(crate::clock::wall_clock()))),
            Demo::Greet => Arc::new(|| Box::new(Greeter::new())),
            Demo::Http => {
                let cfg = Arc::new(opts.http.clone());
                Arc::new(move || Box::new(HttpServer::new(Arc::clone(&cfg))))
            }
            Demo::File => {
                let store = DirStore::new(opts.file_dir.clone());
                Arc::new(move || Box::new(FileReceiver::new(store.clone())))
            }
            Demo::Chat => {
                let room = Room::shared();
                let cfg = opts.chat;
                Arc::new(move || Box::new(Chat::new(Arc::clone(&room), cfg)))
            }
            // Datagram-only demos are refused before a factory is asked for.
            Demo::Hello => Arc::new(|| Box::new(Echo)),
        }
    }

    fn datagram(self) -> Box<dyn DatagramProtocol + Send> {
        match self {
            Demo::Hello => Box::new(Hello::new()),
            _ => Box::new(DatagramEcho),
        }
    }
}

/// How a server waits for I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Driver {
    /// Non-blocking sockets on one thread, multiplexed by the poller.
    Reactor,
    /// Blocking sockets, one OS thread per connection.
    Threaded,
    /// Blocking sockets, one connection at a time.
    Iterative,
    /// io_uring completions on one thread: the kernel is handed each receive, send and
    /// accept and says when it is done (streams only; datagrams are served by a reactor).
    Uring,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Reactor => "reactor",
            Driver::Threaded => "threaded",
            Driver::Iterative => "iterative",
            Driver::Uring => "uring",
        })
    }
}

/// Which kind of socket a demo is served on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// TCP streams (AF_INET/AF_INET6, SOCK_STREAM).
    Tcp,
    /// UDP datagrams (AF_INET/AF_INET6, SOCK_DGRAM).
    Udp,
    /// Unix domain streams at a path (AF_UNIX, SOCK_STREAM).
    Unix,
    /// Unix domain datagrams at a path (AF_UNIX, SOCK_DGRAM).
    Unixgram,
}

impl Transport {
    /// The name used in `listening` lines and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Unix => "unix",
            Transport::Unixgram => "unixgram",
        }
    }

    /// Returns true if and only if this transport carries datagrams.
    pub fn is_datagram(self) -> bool {
        matches!(self, Transport::Udp | Transport::Unixgram)
    }

    /// Checks that `at` is the kind of address this transport binds.
    pub fn check(self, at: &Endpoint) -> io::Result<()> {
        let unix = matches!(self, Transport::Unix | Transport::Unixgram);
        match (unix, at) {
            (false, Endpoint::Inet(_)) | (true, Endpoint::Unix(_)) => Ok(()),
            (false, Endpoint::Unix(p)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--transport {} needs an IP address and port, not the path {}",
                    self.name(),
                    p.display()
                ),
            )),
            (true, Endpoint::Inet(a)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--transport {} needs a socket path (such as /tmp/sockloop.sock), not {a}",
                    self.name()
                ),
            )),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One bound socket of a running server, printed as `listening <demo> <transport> <addr>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listening {
    /// The demo served there.
    pub demo: &'static str,
    /// The kind of socket.
    pub transport: Transport,
    /// The bound address (with the real port when port 0 was asked for).
    pub addr: Endpoint,
}

impl fmt::Display for Listening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "listening {} {} {}",
            self.demo, self.transport, self.addr
        )
    }
}

/// A server running on threads of its own.
pub struct Server {
    listening: Vec<Listening>,
    stop: Arc<dyn Fn() + Send + Sync>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    /// The sockets it listens on.
    pub fn listening(&self) -> &[Listening] {
        &self.listening
    }

    /// A `Send` closure that asks the server to stop (for a signal-handling thread). With
    /// the reactor driver the first call starts a graceful shutdown and a second one
    /// closes everything at once.
    pub fn stopper(&self) -> Arc<dyn Fn() + Send + Sync> {
        Arc::clone(&self.stop)
    }

    /// Asks the server to stop; [`Server::join`] then returns.
    pub fn stop(&self) {
        (self.stop)()
    }

    /// Waits until the server has stopped.
    pub fn join(mut self) -> io::Result<()> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("server thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            (self.stop)();
            (self.stop)();
            let _ = t.join();
        }
    }
}

/// Starts `demo` on `at` over `transport` with `driver`. Bind errors are returned here,
/// before any thread is left running.
pub fn spawn(
    demo: Demo,
    driver: Driver,
    transport: Transport,
    at: Endpoint,
    cfg: Config,
) -> io::Result<Server> {
    spawn_with(demo, driver, transport, at, cfg, &DemoOptions::default())
}

/// `n` reactors serving `demo` on `at`, one `SO_REUSEPORT` listener each.
fn spawn_group(
    n: usize,
    cfg: Config,
    demo: Demo,
    at: std::net::SocketAddr,
    factory: Factory,
) -> io::Result<Server> {
    let (group, bound) = sockloop::reactor::Group::listen(n, cfg, at, move || factory())?;
    let handles = group.handles().to_vec();
    let thread = std::thread::Builder::new()
        .name("reactor-group".into())
        .spawn(move || group.join())?;
    Ok(Server {
        listening: vec![Listening {
            demo: demo.name(),
            transport: Transport::Tcp,
            addr: Endpoint::Inet(bound),
        }],
        // A second stop while draining closes everything at once, as with one reactor.
        stop: Arc::new(move || {
            for h in &handles {
                let _ = h.shutdown();
            }
        }),
        thread: Some(thread),
    })
}

/// [`spawn`], with the demos' own settings.
pub fn spawn_with(
    demo: Demo,
    driver: Driver,
    transport: Transport,
    at: Endpoint,
    cfg: Config,
    opts: &DemoOptions,
) -> io::Result<Server> {
    transport.check(&at)?;
    if !demo.supports(transport) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the {} demo is served over {}, not {transport}",
                demo.name(),
                demo.transports()
            ),
        ));
    }
    let also_udp = opts.also_udp;
    if also_udp && (transport != Transport::Tcp || !demo.supports(Transport::Udp)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--also-udp serves a demo's datagram form beside it over tcp; the {} demo \
                 over {transport} has none",
                demo.name()
            ),
        ));
    }
    let factory = demo.stream_factory(opts);
    let listening = move |addr| {
        vec![Listening {
            demo: demo.name(),
            transport,
            addr,
        }]
    };
    // With `also_udp`: the UDP address beside a bound TCP one (same IP and port).
    let udp_beside = |addr: &Endpoint| -> io::Result<Endpoint> {
        match addr {
            Endpoint::Inet(a) => Ok(Endpoint::Inet(*a)),
            Endpoint::Unix(_) => Err(io::Error::other("--also-udp needs a TCP address")),
        }
    };
    if opts.reactors != 1 {
        let at = match (&at, driver, transport, also_udp) {
            (Endpoint::Inet(a), Driver::Reactor, Transport::Tcp, false) => *a,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "--reactors runs several reactors over tcp (the reactor driver, without \
                     --also-udp)",
                ))
            }
        };
        return spawn_group(opts.reactors, cfg, demo, at, factory);
    }
    match driver {
        #[cfg(not(feature = "uring"))]
        Driver::Uring if !transport.is_datagram() && !also_udp => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this build has no uring driver (build sockloop-demos with --features uring)",
        )),
        #[cfg(feature = "uring")]
        Driver::Uring if !transport.is_datagram() && !also_udp => {
            let session = cfg.session_config(&cfg.timeouts);
            let server = sockloop::uring::UringServer::spawn_with(
                &at,
                factory,
                session,
                sockloop::uring::UringOptions {
                    max_connections: cfg.max_connections,
                    ..sockloop::uring::UringOptions::default()
                },
            )?;
            let bound = server.local_addr().clone();
            let stop = server.stopper(cfg.shutdown_grace);
            let thread = std::thread::Builder::new()
                .name("uring-server".into())
                .spawn(move || {
                    server.join();
                    Ok(())
                })?;
            Ok(Server {
                listening: listening(bound),
                stop: Arc::new(stop),
                thread: Some(thread),
            })
        }
        // Datagrams have no connection to complete operations for: under `--driver
        // uring` a reactor serves them (and the UDP socket beside a TCP one, with the
        // TCP listener, so that both are one server).
        Driver::Reactor | Driver::Uring => spawn_reactor(cfg, move |reactor| {
            let addr = serve_on(reactor, demo, transport, &at, Arc::clone(&factory))?;
            let mut l = listening(addr.clone());
            if also_udp {
                let udp = serve_on(reactor, demo, Transport::Udp, &udp_beside(&addr)?, factory)?;
                l.push(Listening {
                    demo: demo.name(),
                    transport: Transport::Udp,
                    addr: udp,
                });
            }
            Ok(l)
        }),
        Driver::Threaded | Driver::Iterative if transport.is_datagram() => {
            // Datagrams need no per-peer thread: both blocking modes run one recv loop.
            let sock = BlockingDatagram::bind(&at, Duration::from_millis(100))?;
            let bound = sock.local_addr()?;
            log::info!("bound datagram socket {bound} ({driver} driver)");
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name("datagram".into())
                .spawn(move || blocking::serve_datagrams(&sock, &mut *demo.datagram(), &flag))?;
            Ok(Server {
                listening: listening(bound),
                stop: Arc::new(move || stop.store(true, Ordering::SeqCst)),
                thread: Some(thread),
            })
        }
        Driver::Threaded | Driver::Iterative => {
            let mode = if driver == Driver::Threaded {
                Mode::Threaded
            } else {
                Mode::Iterative
            };
            let session = cfg.session_config(&cfg.timeouts);
            let listener = BlockingListener::bind(&at)?;
            let bound = listener.local_addr()?;
            let mut l = listening(bound.clone());
            // The datagram form beside it, if asked: one recv loop on a thread of its own.
            let udp_stop = Arc::new(AtomicBool::new(false));
            let udp = if also_udp {
                let sock =
                    BlockingDatagram::bind(&udp_beside(&bound)?, Duration::from_millis(100))?;
                l.push(Listening {
                    demo: demo.name(),
                    transport: Transport::Udp,
                    addr: sock.local_addr()?,
                });
                let flag = Arc::clone(&udp_stop);
                Some(
                    std::thread::Builder::new()
                        .name("datagram".into())
                        .spawn(move || {
                            blocking::serve_datagrams(&sock, &mut *demo.datagram(), &flag)
                        })?,
                )
            } else {
                None
            };
            let server = match BlockingServer::spawn_with(listener, mode, factory, session) {
                Ok(server) => server,
                Err(e) => {
                    udp_stop.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            };
            let stop_tcp = server.stopper(cfg.shutdown_grace);
            let thread = std::thread::Builder::new()
                .name("blocking-server".into())
                .spawn(move || {
                    server.join();
                    if let Some(t) = udp {
                        let _ = t.join();
                    }
                    Ok(())
                })?;
            let stop = move || {
                udp_stop.store(true, Ordering::SeqCst);
                stop_tcp();
            };
            Ok(Server {
                listening: l,
                stop: Arc::new(stop),
                thread: Some(thread),
            })
        }
    }
}

/// Starts every demo ([`Demo::ALL`]) on one reactor thread, on consecutive ports from
/// `base_port` (port 0 for all: each gets a free port), each over its default transport.
pub fn spawn_all(
    host: std::net::IpAddr,
    base_port: u16,
    cfg: Config,
    opts: &DemoOptions,
) -> io::Result<Server> {
    let factories: Vec<(Demo, Factory)> = Demo::ALL
        .iter()
        .map(|&d| (d, d.stream_factory(opts)))
        .collect();
    // The whole range is checked before the first socket is bound.
    if base_port > Demo::MAX_BASE_PORT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--base-port {base_port} is too high: the {} demos need ports {base_port}-{}, \
                 above 65535 (at most {})",
                Demo::ALL.len(),
                usize::from(base_port) + Demo::ALL.len() - 1,
                Demo::MAX_BASE_PORT
            ),
        ));
    }
    spawn_reactor(cfg, move |reactor| {
        let mut listening = Vec::new();
        for (demo, factory) in factories {
            let port = demo.table_port(base_port).unwrap_or_default();
            let at = Endpoint::Inet(std::net::SocketAddr::new(host, port));
            let transport = demo.default_transport();
            // A failed bind names the socket that failed (the ones before it are closed).
            let addr = serve_on(reactor, demo, transport, &at, factory).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{} over {transport} on {at}: {e}", demo.name()),
                )
            })?;
            listening.push(Listening {
                demo: demo.name(),
                transport,
                addr,
            });
        }
        Ok(listening)
    })
}

/// Binds `demo` on `at` over `transport` in `reactor`; returns the bound address.
fn serve_on(
    reactor: &mut Reactor,
    demo: Demo,
    transport: Transport,
    at: &Endpoint,
    factory: Factory,
) -> io::Result<Endpoint> {
    if transport.is_datagram() {
        Ok(reactor.bind_datagram(at, demo.datagram())?.1)
    } else {
        let timeouts = reactor.config().timeouts.clone();
        reactor.listen_boxed(at, timeouts, move || factory() as Box<dyn Protocol>)
    }
}

/// Runs a reactor on a thread of its own, set up there by `setup` (so protocols need not
/// be `Send`), and returns once it is listening, or with the set-up error.
fn spawn_reactor<F>(cfg: Config, setup: F) -> io::Result<Server>
where
    F: FnOnce(&mut Reactor) -> io::Result<Vec<Listening>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("reactor".into())
        .spawn(move || {
            let started = Reactor::with_config(cfg).and_then(|mut reactor| {
                let listening = setup(&mut reactor)?;
                Ok((reactor, listening))
            });
            match started {
                Ok((mut reactor, listening)) => {
                    let _ = tx.send(Ok((listening, reactor.handle())));
                    reactor.run()
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    Ok(())
                }
            }
        })?;
    let (listening, handle) = rx
        .recv()
        .map_err(|_| io::Error::other("reactor thread died while starting"))??;
    Ok(Server {
        listening,
        stop: Arc::new(move || {
            let _ = handle.shutdown();
        }),
        thread: Some(thread),
    })
}

/// A command a person can paste to try the demo at `l`, with the `sockloop` binary
/// spelled `sockloop` (see [`try_it_with`]).
pub fn try_it(l: &Listening) -> String {
    try_it_with(l, "sockloop")
}

/// [`try_it`], with the `sockloop` binary spelled `program` (its path, where it is not
/// on `PATH`), so the command runs as printed.
pub fn try_it_with(l: &Listening, program: &str) -> String {
    let addr = &l.addr;
    let (host, port) = match addr {
        Endpoint::Inet(a) => (a.ip().to_string(), a.port().to_string()),
        Endpoint::Unix(p) => (p.display().to_string(), String::new()),
    };
    match (l.transport, l.demo) {
        (Transport::Tcp, "http") => match addr {
            Endpoint::Inet(a) if a.is_ipv6() => format!("curl http://[{host}]:{port}/"),
            _ => format!("curl http://{host}:{port}/"),
        },
        (Transport::Unix, "http") => format!("curl --unix-socket {host} http://x/"),
        (Transport::Tcp, "file") => format!("{program} send FILE --addr {addr}"),
        (Transport::Tcp, _) => format!("nc {host} {port}"),
        (Transport::Udp, _) => format!("nc -u {host} {port}"),
        (Transport::Unix, _) => format!("nc -U {host}"),
        (Transport::Unixgram, _) => format!(
            "{program} client {} --transport unixgram --addr {addr}",
            l.demo
        ),
    }
}
