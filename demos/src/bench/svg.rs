//! The bench's charts as hand-written SVG: one line per driver against the connection
//! count (logarithmic), readable in any browser.

use super::{BenchDriver, BenchReport, Measurement, Scenario};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 130.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

fn color(d: BenchDriver) -> &'static str {
    match d {
        BenchDriver::Reactor => "#1f77b4",
        BenchDriver::Uring => "#ff7f0e",
        BenchDriver::Threaded => "#d62728",
        BenchDriver::Iterative => "#7f7f7f",
        BenchDriver::Tokio => "#2ca02c",
        BenchDriver::Mio => "#9467bd",
    }
}

/// One chart's data: per driver, (connections, value) points.
type Series = Vec<(BenchDriver, Vec<(f64, f64)>)>;

/// The points of every driver for the scenarios `pick` keeps, valued by `value`.
fn series(
    report: &BenchReport,
    pick: impl Fn(&Scenario) -> bool,
    value: impl Fn(&Measurement) -> Option<f64>,
) -> Series {
    let mut out: Series = Vec::new();
    for row in &report.rows {
        if !pick(&row.scenario) {
            continue;
        }
        let Some(v) = row.measured().and_then(&value).filter(|v| v.is_finite()) else {
            continue;
        };
        let point = (row.scenario.conns() as f64, v);
        match out.iter_mut().find(|(d, _)| *d == row.driver) {
            Some((_, pts)) => pts.push(point),
            None => out.push((row.driver, vec![point])),
        }
    }
    for (_, pts) in &mut out {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// `s` as SVG text or an attribute value.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A compact number for an axis label: `950`, `12k`, `1.5M`, `0.25`.
fn label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.3}M", v / 1e6)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .replace(".M", "M")
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3).replace(".0k", "k")
    } else if a >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `raw`: a step for
/// axis ticks that reads as a round number.
pub(crate) fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * pow)
}

/// A line chart of `data` against connections (log scale).
pub fn chart(title: &str, y_label: &str, data: &Series) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        WIDTH / 2.0,
        escape(title)
    );
    let pts: Vec<(f64, f64)> = data.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    if pts.is_empty() {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no data</text>\n</svg>",
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return s;
    }
    let lx = |x: f64| x.max(1.0).log10();
    let (mut x0, mut x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(lx(p.0)), b.max(lx(p.0)))
    });
    if x1 - x0 < 1e-9 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    let ymax = pts.iter().fold(0.0f64, |m, p| m.max(p.1));
    let ymin = pts.iter().fold(0.0f64, |m, p| m.min(p.1));
    // Round the top up to a whole number of round steps, so every tick is round.
    let step = nice_step(if ymax > 0.0 { ymax * 1.05 / 5.0 } else { 0.2 });
    let ytop = (ymax * 1.05 / step).ceil().max(1.0) * step;
    let ybot = if ymin < 0.0 { ymin * 1.1 } else { 0.0 };
    let px = |x: f64| LEFT + (lx(x) - x0) / (x1 - x0) * pw;
    let py = |y: f64| TOP + ph - (y - ybot) / (ytop - ybot) * ph;

    // Axes, grid and ticks.
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" \
         stroke=\"#333\"/>"
    );
    let ticks = ((ytop - ybot) / step).round() as usize;
    for i in 0..=ticks {
        let y = ybot + step * i as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + pw,
            LEFT - 6.0,
            py(y) + 4.0,
            label(y),
            py = py(y)
        );
    }
    let mut xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    for x in xs {
        let _ = writeln!(
            s,
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"#eee\"/>\
             <text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            TOP + ph,
            TOP + ph + 16.0,
            label(x),
            px = px(x)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">connections (log scale)</text>\n\
         <text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        LEFT + pw / 2.0,
        HEIGHT - 10.0,
        TOP + ph / 2.0,
        escape(y_label)
    );

    // One line per driver, with a legend entry.
    for (i, (driver, points)) in data.iter().enumerate() {
        let c = color(*driver);
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for &(x, y) in points {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{c}\"><title>{driver}, {} \
                 connections: {}</title></circle>",
                px(x),
                py(y),
                x,
                label(y)
            );
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx0 = LEFT + pw + 12.0;
        let _ = writeln!(
            s,
            "<line x1=\"{lx0}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{c}\" \
             stroke-width=\"3\"/><text x=\"{}\" y=\"{}\">{driver}</text>",
            lx0 + 20.0,
            lx0 + 26.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Writes the charts into `dir` (created when missing); returns the files written.
pub fn write_charts(report: &BenchReport, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let echo = |s: &Scenario| {
        matches!(
            s,
            Scenario::Echo {
                size: 64,
                depth: 1,
                ..
            }
        )
    };
    let idle = |s: &Scenario| matches!(s, Scenario::Idle { .. });
    let http = |s: &Scenario| matches!(s, Scenario::Http { .. });
    let mut charts = vec![
        (
            "throughput.svg",
            chart(
                "Echo 64 B ping-pong: throughput",
                "messages per second",
                &series(report, echo, |m| Some(m.msgs_per_sec)),
            ),
        ),
        (
            "p99.svg",
            chart(
                "Echo 64 B ping-pong: p99 round trip",
                "p99 latency (microseconds)",
                &series(report, echo, |m| m.p99_us),
            ),
        ),
        (
            "rss_per_conn.svg",
            chart(
                "Idle connections: server RSS per connection",
                "bytes per connection",
                &series(report, idle, |m| m.rss_per_conn),
            ),
        ),
    ];
    if report
        .rows
        .iter()
        .any(|r| http(&r.scenario) && r.measured().is_some())
    {
        charts.push((
            "http_throughput.svg",
            chart(
                "HTTP Hello, World (wrk): throughput",
                "requests per second",
                &series(report, http, |m| Some(m.msgs_per_sec)),
            ),
        ));
    }
    let mut written = Vec::new();
    for (name, svg) in charts {
        let path = dir.join(name);
        std::fs::write(&path, svg)?;
        written.push(path);
    }
    Ok(written)
}
