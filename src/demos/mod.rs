//! Wiring: a demo × a driver × a transport → a running server. Shared by the CLI, the
//! tests and the benchmarks, so all three start servers the same way.

use crate::blocking::{self, BlockingDatagram, BlockingListener, BlockingServer, Factory, Mode};
use crate::net::Endpoint;
use crate::proto::echo::{DatagramEcho, Echo};
use crate::proto::{DatagramProtocol, Protocol};
use crate::reactor::{Config, Reactor};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// The demos sockloop can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Demo {
    /// Sends every byte (or datagram) back.
    Echo,
}

impl Demo {
    /// The demo's name as the CLI and the `listening` line spell it.
    pub fn name(self) -> &'static str {
        match self {
            Demo::Echo => "echo",
        }
    }

    fn stream(self) -> Box<dyn Protocol + Send> {
        match self {
            Demo::Echo => Box::new(Echo),
        }
    }

    fn datagram(self) -> Box<dyn DatagramProtocol + Send> {
        match self {
            Demo::Echo => Box::new(DatagramEcho),
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
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Reactor => "reactor",
            Driver::Threaded => "threaded",
            Driver::Iterative => "iterative",
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
    transport.check(&at)?;
    let listening = |addr| {
        vec![Listening {
            demo: demo.name(),
            transport,
            addr,
        }]
    };
    match driver {
        Driver::Reactor => {
            let (tx, rx) = mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("reactor".into())
                .spawn(move || {
                    // Built on its own thread: protocols need not be Send to live in it.
                    let bound = Reactor::with_config(cfg).and_then(|mut reactor| {
                        let bound = if transport.is_datagram() {
                            reactor.bind_datagram(&at, demo.datagram())?.1
                        } else {
                            let timeouts = reactor.config().timeouts.clone();
                            reactor.listen_with(&at, timeouts, move || demo.stream())?
                        };
                        Ok((reactor, bound))
                    });
                    match bound {
                        Ok((mut reactor, bound)) => {
                            let _ = tx.send(Ok((bound, reactor.handle())));
                            reactor.run()
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            Ok(())
                        }
                    }
                })?;
            let (bound, handle) = rx
                .recv()
                .map_err(|_| io::Error::other("reactor thread died while starting"))??;
            Ok(Server {
                listening: listening(bound),
                stop: Arc::new(move || {
                    let _ = handle.shutdown();
                }),
                thread: Some(thread),
            })
        }
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
            let factory: Factory = Arc::new(move || demo.stream());
            let server = BlockingServer::spawn(BlockingListener::bind(&at)?, mode, factory)?;
            let bound = server.local_addr().clone();
            let stop = server.stopper();
            let thread = std::thread::Builder::new()
                .name("blocking-server".into())
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
    }
}
