//! The `sockloop` command: serve a demo, or talk to one.

use clap::{Parser, Subcommand};
use sockloop::demos::{self, Demo, Driver};
use sockloop::reactor::Config;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::ExitCode;

/// A single-threaded event-loop reactor on mio, and the classic socket demos served
/// blocking and non-blocking.
#[derive(Parser, Debug)]
#[command(name = "sockloop", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a demo. Prints `listening <demo> <transport> <address>` once bound.
    /// Try `RUST_LOG=trace` to watch every readiness event, read and write.
    Serve {
        /// The demo to serve.
        #[arg(value_enum, default_value_t = Demo::Echo)]
        demo: Demo,
        /// How the server waits for I/O.
        #[arg(long, value_enum, default_value_t = Driver::Reactor)]
        driver: Driver,
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:7000")]
        addr: SocketAddr,
        /// Most connections open at once (reactor driver); more wait in the backlog.
        #[arg(long)]
        max_connections: Option<usize>,
    },
    /// The interactive client: sends each line of stdin, prints what comes back, exits at
    /// end of input once the server has sent everything.
    Client {
        /// The demo to talk to.
        #[arg(value_enum)]
        demo: Demo,
        /// The server's address.
        #[arg(long)]
        addr: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_micros()
        .init();
    let result = match cli.command {
        Command::Serve {
            demo,
            driver,
            addr,
            max_connections,
        } => serve(demo, driver, addr, max_connections),
        Command::Client { demo, addr } => client(demo, addr),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockloop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    demo: Demo,
    driver: Driver,
    addr: SocketAddr,
    max_connections: Option<usize>,
) -> io::Result<()> {
    let mut cfg = Config::default();
    if let Some(n) = max_connections {
        cfg.max_connections = n.max(1);
    }
    let server = demos::spawn(demo, driver, addr, cfg).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot serve {} on {addr}: {e}", demo.name()),
        )
    })?;
    {
        let mut stdout = io::stdout().lock();
        for l in server.listening() {
            writeln!(stdout, "{l}")?;
        }
        stdout.flush()?;
    }
    log::info!(
        "serving {} with the {driver} driver; Ctrl-C stops",
        demo.name()
    );

    // The first SIGINT/SIGTERM asks the server to stop; a second one exits at once.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let sig_handle = signals.handle();
    let stop = server.stopper();
    std::thread::spawn(move || {
        let mut seen = 0;
        for sig in signals.forever() {
            seen += 1;
            if seen == 1 {
                log::info!("signal {sig}: shutting down (again to exit at once)");
                stop();
            } else {
                log::warn!("signal {sig} again: exiting now");
                std::process::exit(130);
            }
        }
    });
    let result = server.join();
    sig_handle.close();
    result
}

fn client(demo: Demo, addr: SocketAddr) -> io::Result<()> {
    let Demo::Echo = demo;
    let stream = TcpStream::connect(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
    let mut from_server = stream.try_clone()?;
    // Printing what arrives on its own thread keeps the blocking read out of the way of
    // the blocking read of stdin.
    let printer = std::thread::spawn(move || -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        let mut stdout = io::stdout();
        loop {
            let n = from_server.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stdout.write_all(&buf[..n])?;
            stdout.flush()?;
        }
    });
    let mut to_server = &stream;
    for line in io::stdin().lock().lines() {
        let mut line = line?;
        line.push('\n');
        to_server.write_all(line.as_bytes())?;
    }
    // End of input: half-close, then wait for the server to send the rest and close.
    stream.shutdown(Shutdown::Write)?;
    printer
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("printer thread panicked")))
}
