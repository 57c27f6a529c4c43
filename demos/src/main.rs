//! The `sockloop` command: serve a demo, or talk to one.

use clap::{CommandFactory, Parser, Subcommand};
use sockloop::net::Endpoint;
use sockloop::reactor::{Config, Timeouts};
use sockloop_demos::proto::chat::ChatConfig;
use sockloop_demos::serve::{self, Demo, DemoOptions, Driver, Transport};
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

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
    /// Serve a demo, or all of them (the default) on one reactor thread. Prints
    /// `listening <demo> <transport> <address>` for each bound socket.
    /// Try `RUST_LOG=trace` to watch every readiness event, read and write.
    ///
    /// Ctrl-C (or SIGTERM) stops the server gracefully; a second one exits at once. The
    /// reactor (and the uring driver) closes its listeners (new connects are refused),
    /// asks each open connection's protocol to finish (by default it closes once its
    /// output is sent, so an idle connection gets our FIN at once), waits up to
    /// --shutdown-grace for the rest, then closes them. The threaded and iterative drivers stop accepting, wake
    /// each connection's blocked read with shutdown(Read) (so what the peer sends after
    /// that is not read) and ask its protocol to finish the same way; after
    /// --shutdown-grace they shut down both directions of every connection still open.
    /// The iterative driver's clients still waiting in the listen backlog are closed
    /// unserved. Datagram sockets close at once.
    Serve {
        /// The demo to serve, or `all`: every demo on consecutive ports from --base-port.
        #[arg(default_value = "all", value_parser = serve_target())]
        demo: ServeTarget,
        /// How the server waits for I/O (`all` always uses the reactor).
        #[arg(long, value_enum, default_value_t = Driver::Reactor)]
        driver: Driver,
        /// The kind of socket to serve on (default: the demo's own, udp for hello).
        #[arg(long, value_enum)]
        transport: Option<Transport>,
        /// Where to listen: HOST:PORT (a name such as localhost is resolved and its first
        /// address used; port 0 picks a free one), or a path for the Unix transports.
        /// Default: 127.0.0.1 on the demo's own port from the `serve all` table (see
        /// --base-port), or /tmp/sockloop.sock. With `all`: the host (its port is
        /// ignored; see --base-port).
        #[arg(long, value_parser = parse_endpoint)]
        addr: Option<Endpoint>,
        /// The first demo's port: `all` serves echo, ack, stamp, greet, hello, http,
        /// chat, file on consecutive ports from it (7000-7007), and a demo served alone
        /// without --addr takes its own port from the same table (`serve file`: 7007).
        /// 0: free ports.
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
        /// File: the directory received files go into, relative to the current directory
        /// unless absolute (created when missing).
        #[arg(long, default_value = "inbox")]
        dir: std::path::PathBuf,
        /// Chat: seconds of silence before a client gets PING.
        #[arg(long, value_name = "SECS", default_value_t = 15.0)]
        ping_after: f64,
        /// Chat: seconds of silence before a client is dropped.
        #[arg(long, value_name = "SECS", default_value_t = 60.0)]
        drop_after: f64,
        /// Most connections open at once (reactor and uring drivers); more wait in the backlog.
        #[arg(long)]
        max_connections: Option<usize>,
        /// Close a connection after this many seconds without a byte either way.
        #[arg(long, value_name = "SECS")]
        idle_timeout: Option<f64>,
        /// Close a connection whose pending output the peer has not read for this many
        /// seconds (nginx's send_timeout); 0: never.
        #[arg(long, value_name = "SECS", default_value_t = 60.0)]
        write_stall_timeout: f64,
        /// On Ctrl-C, how many seconds open connections get to finish before the rest
        /// are closed (see above).
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        shutdown_grace: f64,
        /// HTTP: seconds a request head may take from its first byte (then 408).
        #[arg(long, value_name = "SECS", default_value_t = 60.0)]
        header_timeout: f64,
        /// HTTP: seconds a request body may pause (then 408).
        #[arg(long, value_name = "SECS", default_value_t = 60.0)]
        body_timeout: f64,
        /// HTTP: seconds an idle keep-alive connection is kept.
        #[arg(long, value_name = "SECS", default_value_t = 75.0)]
        keepalive_timeout: f64,
        /// Echo over tcp: also serve it over UDP on the same address and port, in the same
        /// server (what `sockloop bench`'s UDP flood aims at).
        #[arg(long)]
        also_udp: bool,
        /// Reactor driver over tcp: run N reactors, one per thread, each with its own
        /// SO_REUSEPORT listener on the address (the kernel spreads new connections).
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u16).range(1..=1024))]
        reactors: u16,
    },
    /// Fetch a URL like the tutorials' `GET /` client: prints the status line and headers,
    /// then the body (or writes it to FILE). Redirects are printed, not followed.
    Get {
        /// `http://HOST[:PORT]/PATH` (no https).
        url: String,
        /// Write the body to this file instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        /// Seconds allowed for each wait: resolving, connecting, the head, body silences.
        #[arg(long, value_name = "SECS", default_value_t = 10.0)]
        timeout: f64,
    },
    /// Send a file to a `serve file` server; succeeds only if the digest it reports
    /// matches.
    Send {
        /// The file to send.
        file: std::path::PathBuf,
        /// The receiver's address: HOST:PORT (a name is resolved and its first address
        /// used), such as 127.0.0.1:7007, the file demo's port in `serve all`.
        #[arg(long, value_parser = parse_endpoint)]
        addr: Endpoint,
    },
    /// Benchmark the drivers side by side: child-process servers pinned to one core, a
    /// load generator on sockloop's own reactor pinned to the other. See BENCHMARKING.md.
    Bench {
        /// Scenarios or families (echo, pipelined, large, idle, http, attack), comma-separated.
        #[arg(long, value_delimiter = ',')]
        scenario: Vec<String>,
        /// Drivers to compare: reactor, uring, threaded, iterative, tokio, mio (comma-separated).
        #[arg(long, value_delimiter = ',')]
        drivers: Vec<String>,
        /// Measured seconds per scenario [default: 5, or 1 with --quick].
        #[arg(long, value_name = "SECS", value_parser = positive_secs)]
        secs: Option<f64>,
        /// One second per scenario (unless --secs says otherwise), a shorter warm-up and
        /// small counts (what CI runs).
        #[arg(long)]
        quick: bool,
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "FILE")]
        json: Option<std::path::PathBuf>,
        /// Also write SVG charts into this directory.
        #[arg(long, value_name = "DIR")]
        svg: Option<std::path::PathBuf>,
    },
    /// The blocking vs non-blocking lesson: each driver with silent clients and one that
    /// talks, as a table of answer times, threads and memory.
    Demo {
        /// How many silent clients, per round (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,100")]
        silent: Vec<usize>,
        /// How long the talking client waits before it counts as blocked, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 2.0)]
        timeout: f64,
        /// Then also draw who waits where (each driver's threads over time under four
        /// clients, from the servers' trace) into this SVG file.
        #[arg(long, value_name = "FILE")]
        svg: Option<std::path::PathBuf>,
    },
    /// The interactive client: sends each line of stdin, prints what comes back, exits at
    /// end of input once the server has sent everything.
    Client {
        /// The demo to talk to.
        #[arg(value_enum)]
        demo: Demo,
        /// The server's address: HOST:PORT (a name is resolved and its first address
        /// used), or a path for the Unix transports.
        #[arg(long, value_parser = parse_endpoint)]
        addr: Endpoint,
        /// The kind of socket (default: the demo's own, udp for hello).
        #[arg(long, value_enum)]
        transport: Option<Transport>,
    },
}

/// What `serve` serves: one demo, or all of them (`None`).
type ServeTarget = Option<Demo>;

/// Accepts `all` or any demo's name, and lists them all in `--help` and in errors.
fn serve_target() -> impl clap::builder::TypedValueParser<Value = ServeTarget> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    use clap::ValueEnum;
    // Each demo's name and help come from `Demo` itself, so the list cannot drift.
    let values = std::iter::once(
        PossibleValue::new("all").help("Every demo on one reactor thread, on consecutive ports"),
    )
    .chain(
        Demo::value_variants()
            .iter()
            .filter_map(|d| d.to_possible_value()),
    );
    PossibleValuesParser::new(values).map(|name| Demo::ALL.into_iter().find(|d| d.name() == name))
}

/// Parses the command line; on a mistake prints what was wrong and the usage, exit 2.
fn parse_args() -> Cli {
    use clap::error::{ContextKind, ContextValue};
    Cli::try_parse().unwrap_or_else(|mut e| {
        // clap shows the usage for some mistakes (a missing subcommand) but not for a bad
        // value (`--addr nope`); add it there too, as clap's own context, so that clap
        // prints it in its place and its "For more information" line once.
        if e.use_stderr() && !e.to_string().contains("Usage:") {
            let sub = std::env::args().nth(1).unwrap_or_default();
            let mut cmd = Cli::command();
            cmd.build();
            let usage = match cmd.find_subcommand_mut(&sub) {
                Some(s) => s.render_usage(),
                None => cmd.render_usage(),
            };
            e.insert(ContextKind::Usage, ContextValue::StyledStr(usage));
        }
        e.exit()
    })
}

/// A mistake found after parsing (a flag's value that only makes sense with another):
/// printed like clap's own, with the subcommand's usage, and exit code 2, before any
/// socket exists.
fn usage_error(subcommand: &str, message: impl std::fmt::Display) -> ! {
    let mut cmd = Cli::command();
    cmd.build();
    let kind = clap::error::ErrorKind::ValueValidation;
    let err = match cmd.find_subcommand_mut(subcommand) {
        Some(sub) => sub.error(kind, message),
        None => cmd.error(kind, message),
    };
    err.exit()
}

/// Parses `--addr`: `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT` (the name is resolved now, and
/// the first address the resolver returns is used), or a path containing `/` (the Unix
/// transports).
fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    use std::net::ToSocketAddrs;
    if text.contains('/') {
        return Endpoint::parse(text);
    }
    if let Ok(a) = text.parse::<std::net::SocketAddr>() {
        return Ok(Endpoint::Inet(a));
    }
    let examples = "127.0.0.1:7000, [::1]:7000, localhost:7000";
    match text.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => {
            return Err(format!("no port: give [{ip}]:PORT, such as [{ip}]:7000"))
        }
        Ok(ip) => return Err(format!("no port: give {ip}:PORT, such as {ip}:7000")),
        Err(_) => {}
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "no port: give HOST:PORT ({examples}) or a path containing '/'"
        ));
    };
    let port = match port.parse::<u64>() {
        Ok(p) => u16::try_from(p)
            .map_err(|_| format!("port {p} is out of range: a port is 0 to 65535"))?,
        Err(_) => {
            return Err(format!(
                "{port:?} is not a port number (0 to 65535): give HOST:PORT ({examples})"
            ))
        }
    };
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inside) => inside,
        None if host.contains(':') => {
            return Err(
                "an IPv6 address with a port is written in brackets, such as [::1]:7000".into(),
            )
        }
        None => host,
    };
    if host.is_empty() {
        return Err(format!("no host: give HOST:PORT, such as 127.0.0.1:{port}"));
    }
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .map(Endpoint::Inet)
            .ok_or_else(|| format!("the host {host} has no address")),
        Err(e) => Err(format!("cannot resolve the host {host}: {e}")),
    }
}

/// A number of seconds more than zero (`bench --secs`).
fn positive_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Ok(s),
        _ => Err("takes a number of seconds more than zero".into()),
    }
}

fn main() -> ExitCode {
    let cli = parse_args();
    // A server narrates its life at info; a client's output is what it prints.
    let level = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_micros()
        .init();
    let result = match cli.command {
        Command::Serve {
            demo,
            driver,
            transport,
            addr,
            base_port,
            dir,
            ping_after,
            drop_after,
            max_connections,
            idle_timeout,
            write_stall_timeout,
            shutdown_grace,
            header_timeout,
            body_timeout,
            keepalive_timeout,
            also_udp,
            reactors,
        } => {
            // Ports are checked before anything is bound: a range that does not fit is a
            // usage error.
            match demo {
                None if base_port > Demo::MAX_BASE_PORT => usage_error(
                    "serve",
                    format_args!(
                        "--base-port {base_port} is too high: `serve all` needs {} consecutive \
                         ports ({base_port}-{}), and the last port is 65535; the highest \
                         --base-port is {}",
                        Demo::ALL.len(),
                        usize::from(base_port) + Demo::ALL.len() - 1,
                        Demo::MAX_BASE_PORT
                    ),
                ),
                Some(d) if addr.is_none() && d.table_port(base_port).is_none() => {
                    let place = Demo::ALL.iter().position(|&x| x == d).unwrap_or(0);
                    usage_error(
                        "serve",
                        format_args!(
                            "--base-port {base_port} is too high: the {} demo's port would be \
                             {base_port} + {place} = {}, above 65535 (give --addr, or a \
                             --base-port of at most {})",
                            d.name(),
                            usize::from(base_port) + place,
                            usize::from(u16::MAX) - place
                        ),
                    )
                }
                _ => {}
            }
            seconds(idle_timeout, "--idle-timeout")
                .and_then(|idle| {
                    let stall = seconds(Some(write_stall_timeout), "--write-stall-timeout")?
                        .filter(|d| !d.is_zero());
                    let grace = seconds(Some(shutdown_grace), "--shutdown-grace")?;
                    let mut cfg = Config {
                        timeouts: Timeouts {
                            idle,
                            write_stall: stall,
                        },
                        shutdown_grace: grace.unwrap_or_default(),
                        ..Config::default()
                    };
                    if let Some(n) = max_connections {
                        cfg.max_connections = n.max(1);
                    }
                    Ok(cfg)
                })
                .and_then(|cfg| {
                    if demo == Some(Demo::File) {
                        // Serving only files: a bad directory should fail now, not later.
                        std::fs::create_dir_all(&dir).map_err(|e| {
                            io::Error::new(
                                e.kind(),
                                format!("cannot create {}: {e}", dir.display()),
                            )
                        })?;
                    }
                    let secs = |v, flag| -> io::Result<Duration> {
                        Ok(seconds(Some(v), flag)?.unwrap_or_default())
                    };
                    let opts = DemoOptions {
                        file_dir: dir,
                        http: sockloop_demos::proto::http::server::HttpConfig {
                            header_timeout: secs(header_timeout, "--header-timeout")?,
                            body_timeout: secs(body_timeout, "--body-timeout")?,
                            keepalive_timeout: secs(keepalive_timeout, "--keepalive-timeout")?,
                            ..Default::default()
                        },
                        also_udp,
                        reactors: usize::from(reactors),
                        chat: ChatConfig {
                            ping_after: seconds(Some(ping_after), "--ping-after")?
                                .unwrap_or_default(),
                            drop_after: seconds(Some(drop_after), "--drop-after")?
                                .unwrap_or_default(),
                        },
                    };
                    let what = match demo {
                        None => What::All {
                            host: addr,
                            base_port,
                        },
                        Some(d) => {
                            let t = transport.unwrap_or(d.default_transport());
                            let at = addr.unwrap_or_else(|| default_addr(d, t, base_port));
                            What::One(d, driver, t, at)
                        }
                    };
                    serve(what, cfg, &opts)
                })
        }
        Command::Get {
            url,
            output,
            timeout,
        } => {
            return match seconds(Some(timeout), "--timeout") {
                Ok(t) => {
                    match sockloop_demos::client::get(
                        &url,
                        output.as_deref(),
                        t.unwrap_or_default(),
                    ) {
                        Ok(_) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("sockloop: {e}");
                            // curl's numbering, so scripts can tell the failures apart.
                            ExitCode::from(e.exit_code())
                        }
                    }
                }
                Err(e) => {
                    eprintln!("sockloop: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Send { file, addr } => send(&file, &addr),
        Command::Bench {
            scenario,
            drivers,
            secs,
            quick,
            json,
            svg,
        } => bench(scenario, drivers, secs, quick, json, svg),
        Command::Demo {
            silent,
            timeout,
            svg,
        } => lesson(silent, timeout, svg),
        Command::Client {
            demo,
            addr,
            transport,
        } => client(demo, transport.unwrap_or(demo.default_transport()), &addr),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockloop: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where `serve <demo>` listens without --addr: 127.0.0.1 on the demo's own port of the
/// `serve all` table (so the table's commands work against it), or /tmp/sockloop.sock.
fn default_addr(demo: Demo, transport: Transport, base_port: u16) -> Endpoint {
    match transport {
        Transport::Tcp | Transport::Udp => {
            // (A port past 65535 was refused as a usage error before.)
            let port = demo.table_port(base_port).unwrap_or(base_port);
            Endpoint::Inet(([127, 0, 0, 1], port).into())
        }
        Transport::Unix | Transport::Unixgram => Endpoint::Unix("/tmp/sockloop.sock".into()),
    }
}

/// How to spell this binary in a command a person pastes: `sockloop` if that is what
/// `PATH` finds (after `cargo install --path demos`), else its path: relative to the
/// current directory when under it (`target/release/sockloop` after `cargo run
/// --release`), absolute otherwise.
fn program_name() -> String {
    let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "sockloop".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::canonicalize(dir.join("sockloop")).is_ok_and(|found| found == exe))
    });
    if on_path {
        return "sockloop".into();
    }
    let cwd = std::env::current_dir().and_then(std::fs::canonicalize);
    match cwd.as_ref().map(|cwd| exe.strip_prefix(cwd)) {
        Ok(Ok(rel)) => rel.display().to_string(),
        _ => exe.display().to_string(),
    }
}

fn seconds(value: Option<f64>, flag: &str) -> io::Result<Option<Duration>> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{flag} takes a non-negative number of seconds, not {s}"),
                )
            })
        })
        .transpose()
}

/// One demo with its driver, transport and address, or every demo on one reactor.
enum What {
    One(Demo, Driver, Transport, Endpoint),
    All {
        host: Option<Endpoint>,
        base_port: u16,
    },
}

fn serve(what: What, cfg: Config, opts: &DemoOptions) -> io::Result<()> {
    // Install the handlers before anything is announced: a Ctrl-C that arrives right after
    // the `listening` line must stop the server cleanly, not kill it.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let server = match &what {
        What::One(demo, driver, transport, at) => {
            serve::spawn_with(*demo, *driver, *transport, at.clone(), cfg, opts).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot serve {} over {transport} on {at}: {e}", demo.name()),
                )
            })?
        }
        What::All { host, base_port } => {
            let host = match host {
                None => std::net::IpAddr::from([127, 0, 0, 1]),
                Some(Endpoint::Inet(a)) => a.ip(),
                Some(Endpoint::Unix(p)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("serve all needs an IP host, not the path {}", p.display()),
                    ))
                }
            };
            serve::spawn_all(host, *base_port, cfg, opts).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot serve all demos on {host} from port {base_port}: {e}"),
                )
            })?
        }
    };
    {
        let mut stdout = io::stdout().lock();
        for l in server.listening() {
            writeln!(stdout, "{l}")?;
        }
        if let What::All { .. } = what {
            writeln!(stdout, "\ntry:")?;
            let program = program_name();
            for l in server.listening() {
                writeln!(
                    stdout,
                    "  {:<44} # {}",
                    serve::try_it_with(l, &program),
                    l.demo
                )?;
            }
        }
        stdout.flush()?;
    }
    match what {
        What::One(demo, driver, transport, _) => log::info!(
            "serving {} over {transport} with the {driver} driver; Ctrl-C stops",
            demo.name()
        ),
        What::All { .. } => log::info!("serving every demo on one reactor thread; Ctrl-C stops"),
    }

    // The first SIGINT/SIGTERM asks for a graceful stop; a second one exits at once.
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

fn client(demo: Demo, transport: Transport, addr: &Endpoint) -> io::Result<()> {
    transport.check(addr)?;
    if !demo.supports(transport) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the {} demo does not run over {transport}", demo.name()),
        ));
    }
    sockloop_demos::interactive::run_demo(demo, transport, addr)
}

fn send(file: &std::path::Path, addr: &Endpoint) -> io::Result<()> {
    use sockloop_demos::proto::file::FileSender;
    let sender = FileSender::from_path(file)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot send {}: {e}", file.display())))?;
    let outcome = sender.outcome();
    let mut reactor = sockloop::reactor::Reactor::new()?;
    let conn = reactor.connect(
        addr,
        Some(sockloop_demos::interactive::CONNECT_TIMEOUT),
        sender,
    )?;
    while reactor.phase(conn).is_some() {
        reactor.run_once(None)?;
    }
    match outcome.get() {
        Some(Ok(sent)) => {
            println!(
                "sent {} ({} bytes, sha256 {})",
                sent.name, sent.size, sent.sha256
            );
            Ok(())
        }
        Some(Err(e)) => Err(io::Error::other(format!(
            "sending {} failed: {e}",
            file.display()
        ))),
        None => Err(io::Error::other(format!(
            "sending {} failed: the connection ended without a reply",
            file.display()
        ))),
    }
}

fn lesson(silent: Vec<usize>, timeout: f64, svg: Option<std::path::PathBuf>) -> io::Result<()> {
    let mut opts = sockloop_demos::lesson::LessonOptions::new(std::env::current_exe()?);
    opts.silent_clients = silent;
    opts.timeout = seconds(Some(timeout), "--timeout")?.unwrap_or_default();
    opts.svg = svg;
    sockloop_demos::lesson::run(&opts, &mut io::stdout()).map(|_| ())
}

fn bench(
    scenarios: Vec<String>,
    drivers: Vec<String>,
    secs: Option<f64>,
    quick: bool,
    json: Option<std::path::PathBuf>,
    svg: Option<std::path::PathBuf>,
) -> io::Result<()> {
    use sockloop_demos::bench::{self, BenchOptions, Scenario};
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let mut opts = BenchOptions::new(std::env::current_exe()?);
    opts.scenarios = Scenario::select(&scenarios, quick).map_err(invalid)?;
    opts.drivers = drivers
        .iter()
        .map(|d| d.parse())
        .collect::<Result<_, String>>()
        .map_err(invalid)?;
    // An explicit --secs wins over --quick's one second (clap checked it is positive).
    opts.secs = secs;
    opts.quick = quick;
    opts.json = json;
    opts.svg = svg;
    let report = bench::run(&opts, &mut io::stdout())?;
    match report.errors() {
        0 => Ok(()),
        n => Err(io::Error::other(format!("{n} benchmark rows failed"))),
    }
}
