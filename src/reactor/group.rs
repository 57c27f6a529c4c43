//! N reactors, one per core: nginx's worker model.
//!
//! A [`Group`] runs N independent [`Reactor`]s on N threads. Each binds its own listener
//! on the same address with `SO_REUSEPORT`, so the kernel spreads new connections across
//! them (by a hash of the connection's addresses); nothing is shared between the loops,
//! so there is no lock on any connection's path. A connection stays on the loop that
//! accepted it. Shutdown asks every loop, stats are summed.

use super::{Config, Handle, Reactor, Stats};
use crate::proto::Protocol;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// N reactors on N threads, each with its own `SO_REUSEPORT` listener on one address.
///
/// ```
/// use sockloop::proto::{Out, PeerError, Protocol};
/// use sockloop::reactor::{Config, Group};
/// use std::io::{Read, Write};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn handle_input(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<usize, PeerError> {
///         out.push(input);
///         Ok(input.len())
///     }
/// }
///
/// let (group, addr) = Group::listen(2, Config::default(), "127.0.0.1:0".parse().unwrap(), || Echo)?;
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"hi")?;
/// let mut echo = [0u8; 2];
/// client.read_exact(&mut echo)?;
/// assert_eq!(&echo, b"hi");
/// assert_eq!(group.stats().accepted, 1);
/// group.shutdown();
/// group.join()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Group {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Group {
    /// Starts `n` reactors with `cfg` (its socket options with `reuse_port` on), each
    /// listening on `addr` with protocols from `factory`, and returns once every one is
    /// listening, with the address they share (the port the first was given, for port 0).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for `n == 0`; otherwise the first error building a reactor, binding
    /// its listener or spawning its thread (the reactors already started are stopped).
    pub fn listen<P, F>(
        n: usize,
        cfg: Config,
        addr: SocketAddr,
        factory: F,
    ) -> io::Result<(Group, SocketAddr)>
    where
        P: Protocol + 'static,
        F: Fn() -> P + Send + Sync + 'static,
    {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a group needs at least one reactor",
            ));
        }
        let mut cfg = cfg;
        cfg.socket.reuse_port = true;
        let factory = Arc::new(factory);
        let mut group = Group {
            handles: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        let mut at = addr;
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let factory = Arc::clone(&factory);
            let spawned = Reactor::spawn(cfg.clone(), move |reactor| {
                let bound = reactor.listen(at, move || factory())?;
                let _ = tx.send(bound);
                Ok(())
            });
            match spawned {
                Ok((handle, thread)) => {
                    group.handles.push(handle);
                    group.threads.push(thread);
                }
                Err(e) => {
                    group.shutdown();
                    let _ = group.join();
                    return Err(e);
                }
            }
            if i == 0 {
                at = rx
                    .recv()
                    .map_err(|_| io::Error::other("the first reactor ended"))?;
            }
        }
        log::info!("{n} reactors listening on {at} (SO_REUSEPORT)");
        Ok((group, at))
    }

    /// The reactors' handles, one per loop, in the order they were started.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Every loop's stats, summed (each asked on its own thread; a loop that has
    /// stopped counts as nothing).
    pub fn stats(&self) -> Stats {
        let mut sum = Stats::default();
        for h in &self.handles {
            if let Ok(s) = h.call(|r| r.stats().clone()) {
                sum += &s;
            }
        }
        sum
    }

    /// Asks every loop for a graceful shutdown ([`Reactor::shutdown`]); a loop that has
    /// stopped already is skipped.
    pub fn shutdown(&self) {
        for h in &self.handles {
            let _ = h.shutdown();
        }
    }

    /// Waits for every loop's thread to end.
    ///
    /// # Errors
    ///
    /// The first error a loop's `run` returned.
    ///
    /// # Panics
    ///
    /// If a loop's thread panicked (the reactor catches panics in protocols, tasks and
    /// callbacks, so this is a bug of the loop's own), with its panic.
    pub fn join(self) -> io::Result<()> {
        let mut first = Ok(());
        for t in self.threads {
            match t.join() {
                Ok(r) => {
                    if first.is_ok() {
                        first = r;
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        first
    }
}
