//! Wiring: a demo × a driver → a running server. Shared by the CLI, the tests and the
//! benchmarks, so all three start servers the same way.

use crate::blocking::{BlockingServer, Factory, Mode};
use crate::proto::{echo::Echo, Protocol};
use crate::reactor::{Config, Reactor};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// The demos sockloop can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Demo {
    /// Sends every byte back.
    Echo,
}

impl Demo {
    /// The demo's name as the CLI and the `listening` line spell it.
    pub fn name(self) -> &'static str {
        match self {
            Demo::Echo => "echo",
        }
    }

    fn make(self) -> Box<dyn Protocol + Send> {
        match self {
            Demo::Echo => Box::new(Echo),
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

/// One bound socket of a running server, printed as `listening <demo> <transport> <addr>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listening {
    /// The demo served there.
    pub demo: &'static str,
    /// `tcp`, `udp` or `unix`.
    pub transport: &'static str,
    /// The bound address (with the real port when port 0 was asked for).
    pub addr: SocketAddr,
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

    /// A `Send` closure that asks the server to stop (for a signal-handling thread).
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
            let _ = t.join();
        }
    }
}

/// Starts `demo` on `addr` with `driver`. Bind errors are returned here, before any
/// thread is left running.
pub fn spawn(demo: Demo, driver: Driver, addr: SocketAddr, cfg: Config) -> io::Result<Server> {
    match driver {
        Driver::Reactor => {
            let (tx, rx) = mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("reactor".into())
                .spawn(move || {
                    // Built on its own thread: protocols need not be Send to live in it.
                    let mut reactor = match Reactor::with_config(cfg) {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    match reactor.listen(addr, move || demo.make()) {
                        Ok(bound) => {
                            let _ = tx.send(Ok((bound, reactor.handle())));
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return Ok(());
                        }
                    }
                    reactor.run()
                })?;
            let (bound, handle) = rx
                .recv()
                .map_err(|_| io::Error::other("reactor thread died while starting"))??;
            Ok(Server {
                listening: vec![Listening {
                    demo: demo.name(),
                    transport: "tcp",
                    addr: bound,
                }],
                stop: Arc::new(move || {
                    let _ = handle.shutdown();
                }),
                thread: Some(thread),
            })
        }
        Driver::Threaded | Driver::Iterative => {
            let mode = if driver == Driver::Threaded {
                Mode::Threaded
            } else {
                Mode::Iterative
            };
            let factory: Factory = Arc::new(move || demo.make());
            let server = BlockingServer::spawn(crate::net::bind_tcp(addr)?, mode, factory)?;
            let listening = vec![Listening {
                demo: demo.name(),
                transport: "tcp",
                addr: server.local_addr(),
            }];
            let stop = server.stopper();
            let thread = std::thread::Builder::new()
                .name("blocking-server".into())
                .spawn(move || {
                    server.join();
                    Ok(())
                })?;
            Ok(Server {
                listening,
                stop: Arc::new(stop),
                thread: Some(thread),
            })
        }
    }
}
