//! `sockloop bench`: every server driver under the same load, measured from outside.
//!
//! For every scenario × driver the bench
//!
//! 1. starts the server as a child process (`sockloop serve echo|http --driver D`, or for
//!    `tokio` the tokio_echo / hyper_hello example, for `mio` the mio_echo example) and
//!    pins all its threads to one CPU;
//! 2. drives it from a thread pinned to another CPU: echo scenarios with the
//!    [`loadgen`] (sockloop's own reactor, every byte checked, every round trip in an
//!    HdrHistogram, warm-up excluded), HTTP scenarios with `wrk`;
//! 3. reads the server's CPU time over the measured window, its RSS and its threads from
//!    `/proc/<pid>`;
//! 4. kills the server (a guard kills it on every path out).
//!
//! Then it prints the table and the reactor/threaded ratios, and writes JSON and SVG
//! charts when asked. The iterative driver serves one connection at a time, so
//! scenarios with more than one connection are skipped for it. Every wait is bounded: a
//! scenario that makes no progress for 5 s ends with an error.

pub mod attack;
pub mod loadgen;
pub mod report;
pub mod svg;
pub mod wrk;

use crate::procfs::{self, ChildGuard, ServerGuard};
use crate::serve::Driver;
use std::fmt;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A server the bench can measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BenchDriver {
    /// `sockloop serve --driver reactor`.
    Reactor,
    /// `sockloop serve --driver threaded`.
    Threaded,
    /// `sockloop serve --driver iterative`.
    Iterative,
    /// `sockloop serve --driver uring`: io_uring completions.
    Uring,
    /// The `tokio_echo` example (a tokio current_thread echo server) for echo scenarios,
    /// the `hyper_hello` example (hyper on tokio current_thread) for HTTP ones.
    Tokio,
    /// The `mio_echo` example (an echo server written directly on mio: the floor the
    /// reactor is compared against), for echo scenarios only.
    Mio,
}

impl BenchDriver {
    /// Every driver, in table order.
    pub const ALL: [BenchDriver; 6] = [
        BenchDriver::Reactor,
        BenchDriver::Uring,
        BenchDriver::Threaded,
        BenchDriver::Iterative,
        BenchDriver::Tokio,
        BenchDriver::Mio,
    ];

    /// The name the CLI, the table and the JSON use.
    pub fn name(self) -> &'static str {
        match self {
            BenchDriver::Reactor => "reactor",
            BenchDriver::Threaded => "threaded",
            BenchDriver::Iterative => "iterative",
            BenchDriver::Uring => "uring",
            BenchDriver::Tokio => "tokio",
            BenchDriver::Mio => "mio",
        }
    }

    fn serve_driver(self) -> Option<Driver> {
        match self {
            BenchDriver::Reactor => Some(Driver::Reactor),
            BenchDriver::Threaded => Some(Driver::Threaded),
            BenchDriver::Iterative => Some(Driver::Iterative),
            BenchDriver::Uring => Some(Driver::Uring),
            BenchDriver::Tokio | BenchDriver::Mio => None,
        }
    }
}

impl fmt::Display for BenchDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BenchDriver {
    type Err = String;
    fn from_str(s: &str) -> Result<BenchDriver, String> {
        BenchDriver::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown driver {s:?} (choose from reactor, uring, threaded, iterative, tokio, mio)"
                )
            })
    }
}

/// The command that builds the tokio driver's two examples (release, beside
/// `target/release/sockloop`).
pub const TOKIO_BUILD: &str = "cargo build --release --example tokio_echo --example hyper_hello";

/// The path of the tokio echo example next to the `sockloop` binary `exe`
/// (`<dir of exe>/examples/tokio_echo`).
pub fn tokio_echo_path(exe: &Path) -> PathBuf {
    exe.parent()
        .unwrap_or(Path::new("."))
        .join("examples")
        .join("tokio_echo")
}

/// The path of the hyper HTTP example, beside the tokio echo one
/// (`<dir of exe>/examples/hyper_hello`).
pub fn hyper_hello_path(exe: &Path) -> PathBuf {
    tokio_echo_path(exe).with_file_name("hyper_hello")
}

/// The command that builds the mio driver's example (release, beside
/// `target/release/sockloop`).
pub const MIO_BUILD: &str = "cargo build --release --example mio_echo";

/// The path of the mio echo example next to the `sockloop` binary `exe`
/// (`<dir of exe>/examples/mio_echo`).
pub fn mio_echo_path(exe: &Path) -> PathBuf {
    tokio_echo_path(exe).with_file_name("mio_echo")
}

/// One measurement to take, under every driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// `conns` connections, each with `depth` messages of `size` bytes in flight.
    Echo {
        /// Message size in bytes.
        size: usize,
        /// Connections.
        conns: usize,
        /// Messages in flight per connection.
        depth: usize,
    },
    /// `conns` connections that each echo once, then stay silent: the server's RSS per
    /// connection.
    Idle {
        /// Connections.
        conns: usize,
    },
    /// `GET /` of the http demo's `Hello, World` with `wrk`, `conns` connections.
    Http {
        /// Connections.
        conns: usize,
    },
    /// One healthy echo connection (64 B ping-pong, as `echo-64-c1`, its baseline) while
    /// an [`attack::Attack`] runs beside it: what a hostile peer costs the others.
    Attack(attack::Attack),
}

impl Scenario {
    /// The default scenarios: the full set, or the small `--quick` one (at most 100
    /// connections, 200 idle).
    pub fn defaults(quick: bool) -> Vec<Scenario> {
        let (most, idle): (&[usize], &[usize]) = if quick {
            (&[1, 64, 100], &[200])
        } else {
            (&[1, 64, 1000, 10_000], &[1000, 10_000])
        };
        let http: &[usize] = if quick { &[1, 64, 100] } else { &[1, 64, 1000] };
        let mut v: Vec<Scenario> = most
            .iter()
            .map(|&conns| Scenario::Echo {
                size: 64,
                conns,
                depth: 1,
            })
            .collect();
        v.push(Scenario::Echo {
            size: 64,
            conns: 64,
            depth: 16,
        });
        v.push(Scenario::Echo {
            size: 16 * 1024,
            conns: 64,
            depth: 1,
        });
        v.extend(idle.iter().map(|&conns| Scenario::Idle { conns }));
        v.extend(http.iter().map(|&conns| Scenario::Http { conns }));
        let (loris, storm, blast, flood) = if quick {
            (200, 1000, 64, 20_000)
        } else {
            (1000, 5000, 1024, 100_000)
        };
        v.extend([
            Scenario::Attack(attack::Attack::Slowloris { conns: loris }),
            Scenario::Attack(attack::Attack::ConnectStorm { total: storm }),
            Scenario::Attack(attack::Attack::Blast { mib: blast }),
            Scenario::Attack(attack::Attack::UdpFlood { rate: flood }),
        ]);
        v
    }

    /// The scenarios `names` select, in the order given: exact names (`echo-64-c1`,
    /// `echo-64-c64-d16`, `idle-c1000`, `http-c64`, as [`Scenario::name`] spells them) or
    /// a family of the defaults: `echo` (64 B ping-pong), `pipelined`, `large`, `idle`,
    /// `http`. Empty `names`: all the defaults.
    pub fn select(names: &[String], quick: bool) -> Result<Vec<Scenario>, String> {
        let defaults = Scenario::defaults(quick);
        if names.is_empty() {
            return Ok(defaults);
        }
        let mut out = Vec::new();
        for name in names.iter().flat_map(|n| n.split(',')) {
            let name = name.trim();
            let family: Vec<Scenario> = defaults
                .iter()
                .copied()
                .filter(|s| s.family() == name)
                .collect();
            let picked = if family.is_empty() {
                vec![name.parse::<Scenario>()?]
            } else {
                family
            };
            for s in picked {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// The family in [`Scenario::select`]: `echo`, `pipelined`, `large`, `idle`, `http`,
    /// `attack`.
    pub fn family(&self) -> &'static str {
        match *self {
            Scenario::Echo { depth, .. } if depth > 1 => "pipelined",
            Scenario::Echo { size, .. } if size > 64 => "large",
            Scenario::Echo { .. } => "echo",
            Scenario::Idle { .. } => "idle",
            Scenario::Http { .. } => "http",
            Scenario::Attack(_) => "attack",
        }
    }

    /// The scenario's name: `echo-<size>-c<conns>[-d<depth>]`, `idle-c<conns>`,
    /// `http-c<conns>`.
    pub fn name(&self) -> String {
        match *self {
            Scenario::Echo { size, conns, depth } if depth > 1 => {
                format!("echo-{size}-c{conns}-d{depth}")
            }
            Scenario::Echo { size, conns, .. } => format!("echo-{size}-c{conns}"),
            Scenario::Idle { conns } => format!("idle-c{conns}"),
            Scenario::Http { conns } => format!("http-c{conns}"),
            Scenario::Attack(a) => format!("attack-{}", a.name()),
        }
    }

    /// Connections the scenario opens.
    pub fn conns(&self) -> usize {
        match *self {
            Scenario::Echo { conns, .. } | Scenario::Idle { conns } | Scenario::Http { conns } => {
                conns
            }
            Scenario::Attack(a) => 1 + a.conns(),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Scenario, String> {
        let bad = || {
            format!(
                "unknown scenario {s:?}: use echo-<size>-c<conns>[-d<depth>], idle-c<conns>, \
                 http-c<conns>, attack-slowloris-c<conns>, attack-storm-<connects>, \
                 attack-blast-<MiB>, attack-udpflood-<per second>, or a family: echo, pipelined, large, idle, http, attack"
            )
        };
        let num = |p: Option<&str>, prefix: &str| -> Result<usize, String> {
            p.and_then(|p| p.strip_prefix(prefix))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(bad)
        };
        let mut parts = s.split('-');
        let scenario = match parts.next() {
            Some("echo") => {
                let size = num(parts.next(), "")?;
                let conns = num(parts.next(), "c")?;
                let depth = match parts.next() {
                    None => 1,
                    p => num(p, "d")?,
                };
                if size > loadgen::MAX_SIZE {
                    return Err(format!(
                        "{s}: messages of at most {} bytes",
                        loadgen::MAX_SIZE
                    ));
                }
                Scenario::Echo { size, conns, depth }
            }
            Some("idle") => Scenario::Idle {
                conns: num(parts.next(), "c")?,
            },
            Some("http") => Scenario::Http {
                conns: num(parts.next(), "c")?,
            },
            Some("attack") => Scenario::Attack(match parts.next() {
                Some("slowloris") => attack::Attack::Slowloris {
                    conns: num(parts.next(), "c")?,
                },
                Some("storm") => attack::Attack::ConnectStorm {
                    total: num(parts.next(), "")?,
                },
                Some("blast") => attack::Attack::Blast {
                    mib: num(parts.next(), "")?,
                },
                Some("udpflood") => attack::Attack::UdpFlood {
                    rate: num(parts.next(), "")?,
                },
                _ => return Err(bad()),
            }),
            _ => return Err(bad()),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(scenario)
    }
}

/// What the bench runs.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The scenarios, in order (empty: [`Scenario::defaults`]).
    pub scenarios: Vec<Scenario>,
    /// The drivers, in table order (empty: reactor, uring, threaded, iterative, and tokio when
    /// its example is built; mio only when named).
    pub drivers: Vec<BenchDriver>,
    /// Measured seconds per scenario. `None`: 5, or 1 with `quick`; a value set here
    /// wins over `quick`'s.
    pub secs: Option<f64>,
    /// The CI run: 1 s per scenario, small counts (unless `scenarios` says otherwise).
    pub quick: bool,
    /// Write the results as JSON here.
    pub json: Option<PathBuf>,
    /// Write SVG charts into this directory (created when missing).
    pub svg: Option<PathBuf>,
    /// The `sockloop` binary to start servers with (the CLI passes
    /// `std::env::current_exe()`).
    pub exe: PathBuf,
}

impl BenchOptions {
    /// The defaults, with servers started from the binary at `exe`.
    pub fn new(exe: impl Into<PathBuf>) -> BenchOptions {
        BenchOptions {
            scenarios: Vec::new(),
            drivers: Vec::new(),
            secs: None,
            quick: false,
            json: None,
            svg: None,
            exe: exe.into(),
        }
    }

    /// The measured window of each scenario.
    pub fn window(&self) -> Duration {
        match self.secs {
            Some(secs) => Duration::from_secs_f64(secs.clamp(0.1, 3600.0)),
            None if self.quick => Duration::from_secs(1),
            None => Duration::from_secs(5),
        }
    }

    /// The warm-up before each window.
    pub fn warmup(&self) -> Duration {
        if self.quick {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        }
    }
}

/// The numbers of one driver under one scenario.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measurement {
    /// Round trips (echo) or requests (http) in the measured window.
    pub msgs: u64,
    /// The window's length in seconds.
    pub secs: f64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Payload MiB per second (echo: bytes echoed; http: wrk's transfer rate).
    pub mib_per_sec: f64,
    /// Round-trip latency percentiles in microseconds (wrk gives no p99.9).
    pub p50_us: Option<f64>,
    /// See `p50_us`.
    pub p99_us: Option<f64>,
    /// See `p50_us`.
    pub p999_us: Option<f64>,
    /// The longest round trip, in microseconds (none for wrk).
    pub max_us: Option<f64>,
    /// Server CPU time (all threads, user + system) over the window per message.
    pub cpu_us_per_msg: Option<f64>,
    /// Server resident memory at the end of the window (http: the most seen while wrk
    /// ran), bytes.
    pub rss_bytes: Option<u64>,
    /// Idle scenarios: (RSS with the connections − RSS before them) / connections.
    pub rss_per_conn: Option<f64>,
    /// Server threads at the end of the window (http: the most seen while wrk ran).
    pub threads: Option<usize>,
    /// Failed connections, echo mismatches, stalls, wrk's socket errors and non-2xx.
    pub errors: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
}

/// How one driver fared under one scenario.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Measured (possibly with errors counted in it).
    Measured(Measurement),
    /// Not run, for this reason.
    Skipped(String),
    /// Could not be measured at all (the server did not start, ...): one error.
    Failed(String),
}

/// One row: a driver under a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchRow {
    /// The scenario.
    pub scenario: Scenario,
    /// The driver.
    pub driver: BenchDriver,
    /// What happened.
    pub outcome: Outcome,
}

impl BenchRow {
    /// The measurement, if there is one.
    pub fn measured(&self) -> Option<&Measurement> {
        match &self.outcome {
            Outcome::Measured(m) => Some(m),
            _ => None,
        }
    }
}

/// Everything the bench measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BenchReport {
    /// The rows, scenario by scenario, drivers in order.
    pub rows: Vec<BenchRow>,
    /// Notes printed above the table: pinning, wrk, tokio.
    pub notes: Vec<String>,
    /// The measured window per scenario, seconds.
    pub secs: f64,
    /// Whether this was a `--quick` run.
    pub quick: bool,
    /// How long the whole run took, seconds.
    pub elapsed_secs: f64,
}

impl BenchReport {
    /// The row of `driver` under `scenario`.
    pub fn row(&self, driver: BenchDriver, scenario: Scenario) -> Option<&BenchRow> {
        self.rows
            .iter()
            .find(|r| r.driver == driver && r.scenario == scenario)
    }

    /// Errors over every row (a failed row counts one).
    pub fn errors(&self) -> u64 {
        self.rows
            .iter()
            .map(|r| match &r.outcome {
                Outcome::Measured(m) => m.errors,
                Outcome::Skipped(_) => 0,
                Outcome::Failed(_) => 1,
            })
            .sum()
    }
}

/// Where the server and the load generator run.
#[derive(Clone, Copy, Debug)]
struct Pinning {
    server: Option<usize>,
    load: Option<usize>,
}

/// Runs the bench: prints the table (and a progress line on a terminal), returns the
/// report, writes JSON and SVG when asked. Errors only for bad options or when an output
/// file cannot be written; a server that fails is a row that says so.
pub fn run(opts: &BenchOptions, out: &mut dyn Write) -> io::Result<BenchReport> {
    let started = Instant::now();
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if let Some(secs) = opts.secs.filter(|s| !(*s > 0.0 && s.is_finite())) {
        return Err(invalid(format!(
            "--secs must be more than zero, not {secs}"
        )));
    }
    let scenarios = if opts.scenarios.is_empty() {
        Scenario::defaults(opts.quick)
    } else {
        opts.scenarios.clone()
    };
    if let Some(s) = scenarios.iter().find(|s| s.conns() > 10_000) {
        return Err(invalid(format!(
            "{s}: at most 10000 connections (the fd limit is shared with the server's)"
        )));
    }
    let tokio = tokio_echo_path(&opts.exe);
    let tokio_built = tokio.is_file();
    let hyper = hyper_hello_path(&opts.exe);
    let hyper_built = hyper.is_file();
    let mio = mio_echo_path(&opts.exe);
    let mio_built = mio.is_file();
    let has_http = scenarios.iter().any(|s| matches!(s, Scenario::Http { .. }));
    let mut notes = Vec::new();
    let drivers = if opts.drivers.is_empty() {
        let mut d = vec![
            BenchDriver::Reactor,
            BenchDriver::Uring,
            BenchDriver::Threaded,
            BenchDriver::Iterative,
        ];
        if tokio_built || hyper_built {
            d.push(BenchDriver::Tokio);
        }
        d
    } else {
        opts.drivers.clone()
    };
    // The tokio peer was asked for, or left out by default because it is not built: say
    // which binary is missing and how to build it, rather than drop its rows silently.
    if opts.drivers.is_empty() || drivers.contains(&BenchDriver::Tokio) {
        let has_stream = scenarios
            .iter()
            .any(|s| !matches!(s, Scenario::Http { .. }));
        let missing: Vec<String> = [
            (has_stream && !tokio_built, &tokio, "echo"),
            (has_http && !hyper_built, &hyper, "http"),
        ]
        .into_iter()
        .filter(|(missing, _, _)| *missing)
        .map(|(_, path, rows)| format!("{} (for the {rows} rows)", path.display()))
        .collect();
        if !missing.is_empty() {
            let effect = if drivers.contains(&BenchDriver::Tokio) {
                "skipped"
            } else {
                "left out"
            };
            notes.push(format!(
                "warning: tokio: not built: {}; those tokio rows are {effect}. Build them \
                 with `{TOKIO_BUILD}`",
                missing.join(" and "),
            ));
        }
    }
    // The mio peer is never in the default list (it would lengthen `bench --quick`), so
    // it is only ever missing when asked for.
    if drivers.contains(&BenchDriver::Mio)
        && !mio_built
        && scenarios
            .iter()
            .any(|s| !matches!(s, Scenario::Http { .. }))
    {
        notes.push(format!(
            "warning: mio: not built: {} (for the echo rows); those mio rows are skipped. \
             Build it with `{MIO_BUILD}`",
            mio.display(),
        ));
    }

    let cpus = procfs::allowed_cpus();
    let pinning = if cpus.len() >= 2 {
        notes.push(format!(
            "pinning: server on CPU {}, load generator on CPU {}",
            cpus[0], cpus[1]
        ));
        Pinning {
            server: Some(cpus[0]),
            load: Some(cpus[1]),
        }
    } else {
        notes.push(format!(
            "pinning: impossible with {} CPU(s) available; server and load generator share \
             them, so the numbers understate both",
            cpus.len()
        ));
        Pinning {
            server: None,
            load: None,
        }
    };
    let wrk_ok = has_http && wrk::installed();
    if has_http && !wrk_ok {
        notes.push(format!("http scenarios skipped: {}", wrk::INSTALL_HINT));
    }

    let mut report = BenchReport {
        rows: Vec::new(),
        notes,
        secs: opts.window().as_secs_f64(),
        quick: opts.quick,
        elapsed_secs: 0.0,
    };
    writeln!(
        out,
        "sockloop bench: {} scenarios x {} drivers, {} s measured after {} s warm-up each",
        scenarios.len(),
        drivers.len(),
        report.secs,
        opts.warmup().as_secs_f64()
    )?;
    for n in &report.notes {
        writeln!(out, "  {n}")?;
    }
    writeln!(out)?;
    writeln!(out, "{}", report::header())?;
    out.flush()?;

    let show_progress = io::stdout().is_terminal() && io::stderr().is_terminal();
    let total = scenarios.len() * drivers.len();
    let mut done = 0;
    for &scenario in &scenarios {
        for &driver in &drivers {
            done += 1;
            let label = format!("[{done}/{total}] {scenario} {driver}");
            let mut progress = |what: String| {
                if show_progress {
                    let mut e = io::stderr().lock();
                    let _ = write!(e, "\r\x1b[K{label}: {what}");
                    let _ = e.flush();
                }
            };
            progress("starting".into());
            // The peer's binary: mio_echo for mio; for tokio, hyper for HTTP and the echo
            // example otherwise.
            let http = matches!(scenario, Scenario::Http { .. });
            let peer = if driver == BenchDriver::Mio {
                &mio
            } else if http {
                &hyper
            } else {
                &tokio
            };
            let outcome = if driver == BenchDriver::Iterative && scenario.conns() > 1 {
                Outcome::Skipped("serves one client at a time".into())
            } else if driver == BenchDriver::Tokio && http && !hyper_built {
                Outcome::Skipped(format!("hyper_hello example not built ({TOKIO_BUILD})"))
            } else if driver == BenchDriver::Tokio && !http && !tokio_built {
                Outcome::Skipped(format!("tokio_echo example not built ({TOKIO_BUILD})"))
            } else if driver == BenchDriver::Tokio
                && matches!(scenario, Scenario::Attack(a) if a.needs_udp())
            {
                Outcome::Skipped("tokio_echo serves no UDP".into())
            } else if driver == BenchDriver::Mio && http {
                Outcome::Skipped("mio_echo serves echo only".into())
            } else if driver == BenchDriver::Mio && !mio_built {
                Outcome::Skipped(format!("mio_echo example not built ({MIO_BUILD})"))
            } else if driver == BenchDriver::Mio
                && matches!(scenario, Scenario::Attack(a) if a.needs_udp())
            {
                Outcome::Skipped("mio_echo serves no UDP".into())
            } else if http && !wrk_ok {
                Outcome::Skipped("wrk not installed".into())
            } else {
                match measure(opts, peer, pinning, driver, scenario, &mut progress) {
                    Ok(m) => Outcome::Measured(m),
                    Err(e) => Outcome::Failed(e.to_string()),
                }
            };
            if show_progress {
                let mut e = io::stderr().lock();
                let _ = write!(e, "\r\x1b[K");
                let _ = e.flush();
            }
            let row = BenchRow {
                scenario,
                driver,
                outcome,
            };
            writeln!(out, "{}", report::table_line(&row))?;
            out.flush()?;
            report.rows.push(row);
        }
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    writeln!(out)?;
    report::write_ratios(&report, out)?;
    writeln!(
        out,
        "{} errors; took {:.1} s",
        report.errors(),
        report.elapsed_secs
    )?;
    if let Some(path) = &opts.json {
        std::fs::write(path, report::json(&report)).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
        })?;
        writeln!(out, "JSON: {}", path.display())?;
    }
    if let Some(dir) = &opts.svg {
        let files = svg::write_charts(&report, dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write charts to {}: {e}", dir.display()),
            )
        })?;
        for f in files {
            writeln!(out, "SVG: {}", f.display())?;
        }
    }
    out.flush()?;
    Ok(report)
}

/// Starts the server for `driver` (`peer`: the example the tokio or mio driver runs), pinned, and
/// waits for its `listening` line.
fn start_server(
    opts: &BenchOptions,
    peer: &Path,
    pinning: Pinning,
    driver: BenchDriver,
    scenario: Scenario,
) -> io::Result<ServerGuard> {
    let mut cmd;
    match driver.serve_driver() {
        Some(d) => {
            let demo = if matches!(scenario, Scenario::Http { .. }) {
                "http"
            } else {
                "echo"
            };
            cmd = Command::new(&opts.exe);
            cmd.args(["serve", demo, "--driver", &d.to_string()]).args([
                "--addr",
                "127.0.0.1:0",
                "--shutdown-grace",
                "0.5",
            ]);
            if matches!(scenario, Scenario::Attack(a) if a.needs_udp()) {
                cmd.arg("--also-udp");
            }
        }
        None => {
            cmd = Command::new(peer);
            cmd.args(["--addr", "127.0.0.1:0"]);
        }
    }
    let server = ServerGuard::start(cmd, &format!("the {driver} server"))?;
    if let Some(cpu) = pinning.server {
        procfs::pin_process(server.pid(), cpu).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot pin the server to CPU {cpu}: {e}"))
        })?;
    }
    Ok(server)
}

/// One driver under one scenario: a fresh server, the load, the readings.
fn measure(
    opts: &BenchOptions,
    peer: &Path,
    pinning: Pinning,
    driver: BenchDriver,
    scenario: Scenario,
    progress: &mut (dyn FnMut(String) + Send),
) -> io::Result<Measurement> {
    let server = start_server(opts, peer, pinning, driver, scenario)?;
    let pid = server.pid();
    let addr = server.addr;
    let window = opts.window();
    let warmup = opts.warmup();
    // The load runs on a thread of its own, pinned to the load CPU; wrk, started from
    // it, inherits the pin.
    let result = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("bench-load".into())
            .spawn_scoped(s, move || -> io::Result<Measurement> {
                if let Some(cpu) = pinning.load {
                    procfs::pin(0, cpu)?;
                }
                match scenario {
                    Scenario::Http { conns } => {
                        let url = format!("http://{addr}/");
                        if !opts.quick {
                            progress("warming up".into());
                            run_wrk(&url, conns, warmup, pid)?;
                        }
                        progress(format!("wrk, {conns} connections"));
                        let cpu0 = procfs::cpu_time(pid);
                        let (r, peak) = run_wrk(&url, conns, window, pid)?;
                        let cpu1 = procfs::cpu_time(pid);
                        let cpu = match (cpu0, cpu1) {
                            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                            _ => None,
                        };
                        Ok(Measurement {
                            msgs: r.requests,
                            secs: r.secs,
                            msgs_per_sec: r.requests_per_sec,
                            mib_per_sec: r.bytes_per_sec / (1024.0 * 1024.0),
                            p50_us: r.p50_us,
                            p99_us: r.p99_us,
                            p999_us: None,
                            max_us: None,
                            cpu_us_per_msg: cpu
                                .filter(|_| r.requests > 0)
                                .map(|c| c.as_secs_f64() * 1e6 / r.requests as f64),
                            rss_bytes: peak.rss,
                            rss_per_conn: None,
                            threads: peak.threads,
                            errors: r.errors,
                            first_error: (r.errors > 0)
                                .then(|| format!("wrk: {}", r.error_detail.trim_end_matches("; "))),
                        })
                    }
                    Scenario::Echo { size, conns, depth } => run_load(
                        addr,
                        pid,
                        (conns, size, depth, false),
                        (warmup, window),
                        progress,
                    ),
                    Scenario::Idle { conns } => {
                        run_load(addr, pid, (conns, 64, 1, true), (warmup, window), progress)
                    }
                    Scenario::Attack(attack) => {
                        // The attack starts first and runs until the healthy client's
                        // measurement is over.
                        let stop = std::sync::atomic::AtomicBool::new(false);
                        std::thread::scope(|s| {
                            let attacker = std::thread::Builder::new()
                                .name("bench-attack".into())
                                .spawn_scoped(s, || attack::run(addr, attack, &stop))?;
                            progress(format!("1 healthy connection under {}", attack.name()));
                            let m =
                                run_load(addr, pid, (1, 64, 1, false), (warmup, window), progress);
                            stop.store(true, std::sync::atomic::Ordering::SeqCst);
                            let done = attacker.join().unwrap_or_default();
                            log::info!(
                                "{}: {} connects, {} failures, {} bytes sent",
                                attack.name(),
                                done.connects,
                                done.failures,
                                done.bytes
                            );
                            m
                        })
                    }
                }
            })
            .map(|h| h.join())
    });
    drop(server);
    match result {
        Ok(Ok(m)) => m,
        Ok(Err(_)) => Err(io::Error::other("the load generator panicked")),
        Err(e) => Err(e),
    }
}

/// The row's numbers from a load generator run.
fn from_load(r: &loadgen::LoadResult, idle: bool) -> Measurement {
    let secs = r.window.as_secs_f64();
    let q = |p: f64| (!r.hist.is_empty()).then(|| r.hist.value_at_quantile(p) as f64 / 1000.0);
    let conns = r.connected.max(1) as f64;
    Measurement {
        msgs: r.msgs,
        secs: if idle { 0.0 } else { secs },
        msgs_per_sec: if idle { 0.0 } else { r.msgs as f64 / secs },
        mib_per_sec: if idle {
            0.0
        } else {
            r.bytes as f64 / secs / (1024.0 * 1024.0)
        },
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: (!r.hist.is_empty()).then(|| r.hist.max() as f64 / 1000.0),
        cpu_us_per_msg: r
            .server_cpu
            .filter(|_| r.msgs > 0)
            .map(|c| c.as_secs_f64() * 1e6 / r.msgs as f64),
        rss_bytes: r.rss,
        rss_per_conn: match (idle, r.rss, r.rss_base) {
            (true, Some(now), Some(base)) => Some((now as f64 - base as f64) / conns),
            _ => None,
        },
        threads: r.threads,
        errors: r.errors,
        first_error: r.first_error.clone(),
    }
}

/// An echo or idle scenario: `(conns, size, depth, idle)` over `(warmup, window)`.
fn run_load(
    addr: std::net::SocketAddr,
    server_pid: u32,
    (conns, size, depth, idle): (usize, usize, usize, bool),
    (warmup, secs): (Duration, Duration),
    progress: &mut dyn FnMut(String),
) -> io::Result<Measurement> {
    let spec = loadgen::LoadSpec {
        addr,
        conns,
        size,
        depth,
        warmup,
        secs,
        idle,
        server_pid,
    };
    let r = loadgen::run(&spec, progress)?;
    Ok(from_load(&r, idle))
}

/// The most threads and the most RSS of a process seen while sampling it.
#[derive(Clone, Copy, Debug, Default)]
struct Peak {
    threads: Option<usize>,
    rss: Option<u64>,
}

impl Peak {
    fn sample(&mut self, pid: u32) {
        let (threads, rss) = procfs::threads_and_rss(pid);
        self.threads = self.threads.max(threads);
        self.rss = self.rss.max(rss);
    }
}

/// Runs wrk (a child killed on every path out) for `secs` and parses its report; the
/// server `pid`'s threads and RSS are sampled while it runs.
fn run_wrk(
    url: &str,
    conns: usize,
    secs: Duration,
    pid: u32,
) -> io::Result<(wrk::WrkResult, Peak)> {
    let mut child = Command::new("wrk")
        .args(wrk::args(url, conns, secs))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start wrk: {e}")))?;
    let stdout = child.stdout.take();
    let mut guard = ChildGuard::new(child);
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut stdout) = stdout {
        std::thread::Builder::new()
            .name("wrk-stdout".into())
            .spawn(move || {
                let mut text = String::new();
                let _ = stdout.read_to_string(&mut text);
                let _ = tx.send(text);
            })?;
    }
    let deadline = secs.max(Duration::from_secs(1)) + Duration::from_secs(10);
    let start = Instant::now();
    let mut peak = Peak::default();
    let status = loop {
        if let Some(status) = guard.wait_exit(Duration::from_millis(100)) {
            break status;
        }
        peak.sample(pid);
        if start.elapsed() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("wrk did not finish within {} s", deadline.as_secs()),
            ));
        }
    };
    let text = rx
        .recv_timeout(Duration::from_secs(2))
        .map_err(|_| io::Error::other("wrk's output could not be read"))?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "wrk failed ({status}): {}",
            text.trim()
        )));
    }
    Ok((wrk::parse(&text).map_err(io::Error::other)?, peak))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the tokio examples beside the binary, the bench says which binary is
    /// missing and how to build both, and skips those rows (starting nothing).
    #[test]
    fn a_missing_tokio_example_is_named_with_its_build_command() {
        let dir = std::env::temp_dir().join(format!("sockloop-no-tokio-{}", std::process::id()));
        let opts = BenchOptions {
            scenarios: vec![Scenario::Echo {
                size: 64,
                conns: 1,
                depth: 1,
            }],
            drivers: vec![BenchDriver::Tokio],
            quick: true,
            ..BenchOptions::new(dir.join("sockloop"))
        };
        let mut out = Vec::new();
        let report = run(&opts, &mut out).expect("the bench runs");
        let out = String::from_utf8(out).unwrap();
        let warning = out
            .lines()
            .find(|l| l.contains("warning: tokio: not built"))
            .unwrap_or_else(|| panic!("no warning line:\n{out}"));
        assert!(warning.contains("tokio_echo"), "{warning}");
        assert!(warning.contains(TOKIO_BUILD), "{warning}");
        assert!(
            matches!(&report.rows[0].outcome, Outcome::Skipped(why) if why.contains(TOKIO_BUILD)),
            "{:?}",
            report.rows[0].outcome
        );
    }

    /// Asked for without its example, the mio peer is named with its build command and
    /// its echo rows are skipped; it never serves HTTP.
    #[test]
    fn a_missing_mio_example_is_named_with_its_build_command() {
        let dir = std::env::temp_dir().join(format!("sockloop-no-mio-{}", std::process::id()));
        let opts = BenchOptions {
            scenarios: vec![
                Scenario::Echo {
                    size: 64,
                    conns: 1,
                    depth: 1,
                },
                Scenario::Http { conns: 1 },
            ],
            drivers: vec![BenchDriver::Mio],
            quick: true,
            ..BenchOptions::new(dir.join("sockloop"))
        };
        let mut out = Vec::new();
        let report = run(&opts, &mut out).expect("the bench runs");
        let out = String::from_utf8(out).unwrap();
        let warning = out
            .lines()
            .find(|l| l.contains("warning: mio: not built"))
            .unwrap_or_else(|| panic!("no warning line:\n{out}"));
        assert!(warning.contains("mio_echo"), "{warning}");
        assert!(warning.contains(MIO_BUILD), "{warning}");
        assert!(
            matches!(&report.rows[0].outcome, Outcome::Skipped(why) if why.contains(MIO_BUILD)),
            "{:?}",
            report.rows[0].outcome
        );
        assert!(
            matches!(&report.rows[1].outcome, Outcome::Skipped(why) if why.contains("echo only")),
            "{:?}",
            report.rows[1].outcome
        );
        assert_eq!("mio".parse::<BenchDriver>(), Ok(BenchDriver::Mio));
    }

    #[test]
    fn secs_wins_over_quick() {
        let mut opts = BenchOptions::new("sockloop");
        assert_eq!(opts.window(), Duration::from_secs(5));
        opts.quick = true;
        assert_eq!(opts.window(), Duration::from_secs(1));
        opts.secs = Some(0.5);
        assert_eq!(opts.window(), Duration::from_millis(500));
    }
}
