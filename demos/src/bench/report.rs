//! The bench's outputs in text: the table, the reactor/threaded ratios, the JSON.

use super::{BenchDriver, BenchReport, BenchRow, Measurement, Outcome, Scenario};
use std::fmt::Write as _;
use std::io::{self, Write};

/// The table's columns: header and width (the last is not padded).
const COLUMNS: [(&str, usize); 12] = [
    ("scenario", 18),
    ("driver", 10),
    ("msgs/s", 11),
    ("MiB/s", 9),
    ("p50 us", 9),
    ("p99 us", 9),
    ("p99.9 us", 10),
    ("CPU us/msg", 11),
    ("RSS", 10),
    ("RSS/conn", 10),
    ("threads", 8),
    ("errors", 0),
];

fn line(cells: &[String]) -> String {
    let mut s = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let width = COLUMNS[i].1;
        if i + 1 == cells.len() {
            s.push_str(cell);
        } else {
            // Right-align numbers, left-align the two names; always one space between.
            if i < 2 {
                let _ = write!(s, "{cell:<w$} ", w = width - 1);
            } else {
                let _ = write!(s, "{cell:>w$} ", w = width - 1);
            }
        }
    }
    s.trim_end().to_string()
}

/// The table's header line.
pub fn header() -> String {
    let cells: Vec<String> = COLUMNS.iter().map(|(h, _)| h.to_string()).collect();
    line(&cells)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// Bytes as a person reads them: `912 KiB`, `3.4 MiB`.
pub fn size(bytes: f64) -> String {
    let kib = bytes / 1024.0;
    if kib.abs() < 1.0 {
        format!("{bytes:.0} B")
    } else if kib.abs() < 1024.0 {
        format!("{kib:.1} KiB")
    } else {
        format!("{:.1} MiB", kib / 1024.0)
    }
}

/// One row of the table.
pub fn table_line(row: &BenchRow) -> String {
    let mut cells = vec![row.scenario.name(), row.driver.to_string()];
    match &row.outcome {
        Outcome::Measured(m) => {
            let idle = matches!(row.scenario, Scenario::Idle { .. });
            let rate = |v: f64| {
                if idle {
                    "-".to_string()
                } else {
                    format!("{v:.0}")
                }
            };
            cells.push(rate(m.msgs_per_sec));
            cells.push(if idle {
                "-".into()
            } else {
                format!("{:.1}", m.mib_per_sec)
            });
            cells.push(opt(m.p50_us, 1));
            cells.push(opt(m.p99_us, 1));
            cells.push(opt(m.p999_us, 1));
            cells.push(opt(m.cpu_us_per_msg, 2));
            cells.push(m.rss_bytes.map_or_else(|| "-".into(), |b| size(b as f64)));
            cells.push(m.rss_per_conn.map_or_else(|| "-".into(), size));
            cells.push(m.threads.map_or_else(|| "-".into(), |t| t.to_string()));
            let mut errors = m.errors.to_string();
            if let Some(e) = &m.first_error {
                let _ = write!(errors, " ({e})");
            }
            cells.push(errors);
            line(&cells)
        }
        Outcome::Skipped(why) => format!("{:<17} {:<9} skipped: {why}", cells[0], cells[1]),
        Outcome::Failed(why) => format!("{:<17} {:<9} FAILED: {why}", cells[0], cells[1]),
    }
}

/// reactor / threaded for one scenario: throughput, p99, CPU per message, RSS (or RSS per
/// connection for idle scenarios). `None` where either side was not measured.
pub fn ratios(report: &BenchReport, scenario: Scenario) -> Option<Vec<(&'static str, f64)>> {
    let r = report.row(BenchDriver::Reactor, scenario)?.measured()?;
    let t = report.row(BenchDriver::Threaded, scenario)?.measured()?;
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => Some(a / b),
        _ => None,
    };
    let pairs: Vec<(&'static str, Option<f64>)> = if matches!(scenario, Scenario::Idle { .. }) {
        vec![
            ("RSS/conn", div(r.rss_per_conn, t.rss_per_conn)),
            (
                "threads",
                div(r.threads.map(|x| x as f64), t.threads.map(|x| x as f64)),
            ),
        ]
    } else {
        let rss = |m: &Measurement| m.rss_bytes.map(|b| b as f64);
        vec![
            ("msgs/s", div(Some(r.msgs_per_sec), Some(t.msgs_per_sec))),
            ("p99", div(r.p99_us, t.p99_us)),
            ("CPU/msg", div(r.cpu_us_per_msg, t.cpu_us_per_msg)),
            ("RSS", div(rss(r), rss(t))),
        ]
    };
    Some(
        pairs
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect(),
    )
}

/// The scenarios of the report, in order, each once.
pub fn scenarios(report: &BenchReport) -> Vec<Scenario> {
    let mut v: Vec<Scenario> = Vec::new();
    for r in &report.rows {
        if !v.contains(&r.scenario) {
            v.push(r.scenario);
        }
    }
    v
}

/// A ratio with two significant digits, so a tiny one does not print as `0.00`.
fn ratio(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || v >= 0.1 {
        format!("{v:.2}")
    } else {
        let digits = (-v.log10().floor()) as usize + 1;
        format!("{v:.digits$}")
    }
}

/// The reactor/threaded ratios, one line per scenario where both were measured.
pub fn write_ratios(report: &BenchReport, out: &mut dyn Write) -> io::Result<()> {
    let mut lines = Vec::new();
    for s in scenarios(report) {
        if let Some(rs) = ratios(report, s).filter(|rs| !rs.is_empty()) {
            let cells: Vec<String> = rs
                .iter()
                .map(|(k, v)| format!("{k} x{}", ratio(*v)))
                .collect();
            lines.push(format!("  {:<18} {}", s.name(), cells.join(", ")));
        }
    }
    if !lines.is_empty() {
        writeln!(
            out,
            "reactor / threaded (msgs/s above 1 and the rest below 1 favour the reactor):"
        )?;
        for l in lines {
            writeln!(out, "{l}")?;
        }
        writeln!(out)?;
    }
    write_attack_costs(report, out)
}

/// For each attack scenario and driver: the healthy client's p50 and p99 next to its
/// baseline (`echo-64-c1` under the same driver), as ratios and the p99's difference.
pub fn write_attack_costs(report: &BenchReport, out: &mut dyn Write) -> io::Result<()> {
    let baseline = Scenario::Echo {
        size: 64,
        conns: 1,
        depth: 1,
    };
    let mut lines = Vec::new();
    for s in scenarios(report) {
        if !matches!(s, Scenario::Attack(_)) {
            continue;
        }
        for d in BenchDriver::ALL {
            let (Some(a), Some(b)) = (
                report.row(d, s).and_then(|r| r.measured()),
                report.row(d, baseline).and_then(|r| r.measured()),
            ) else {
                continue;
            };
            let (Some(a50), Some(a99), Some(b50), Some(b99)) =
                (a.p50_us, a.p99_us, b.p50_us, b.p99_us)
            else {
                continue;
            };
            let max = a
                .max_us
                .map_or(String::new(), |m| format!(", max {m:.0} us"));
            lines.push(format!(
                "  {:<24} {:<9} p50 {:.0} us (x{}), p99 {:.0} us (x{}, {:+.0} us){max}",
                s.name(),
                d.name(),
                a50,
                ratio(a50 / b50),
                a99,
                ratio(a99 / b99),
                a99 - b99
            ));
        }
    }
    if !lines.is_empty() {
        writeln!(
            out,
            "a healthy client under attack, against its baseline (echo-64-c1, same driver):"
        )?;
        for l in lines {
            writeln!(out, "{l}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// A JSON string literal.
fn string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A JSON number, or `null` for none, NaN and infinities.
fn number(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => {
            if v == v.trunc() && v.abs() < 1e15 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            }
        }
        _ => "null".into(),
    }
}

/// The report as JSON.
pub fn json(report: &BenchReport) -> String {
    let mut o = String::new();
    o.push_str("{\n");
    let _ = writeln!(o, "  \"secs\": {},", number(Some(report.secs)));
    let _ = writeln!(o, "  \"quick\": {},", report.quick);
    let _ = writeln!(
        o,
        "  \"elapsed_secs\": {},",
        number(Some(report.elapsed_secs))
    );
    let _ = writeln!(o, "  \"errors\": {},", report.errors());
    let notes: Vec<String> = report.notes.iter().map(|n| string(n)).collect();
    let _ = writeln!(o, "  \"notes\": [{}],", notes.join(", "));
    o.push_str("  \"results\": [\n");
    for (i, r) in report.rows.iter().enumerate() {
        let (kind, size, depth) = match r.scenario {
            Scenario::Echo { size, depth, .. } => ("echo", Some(size), Some(depth)),
            Scenario::Idle { .. } => ("idle", None, None),
            Scenario::Http { .. } => ("http", None, None),
            Scenario::Attack(_) => ("attack", Some(64), Some(1)),
        };
        let mut f = vec![
            format!("\"scenario\": {}", string(&r.scenario.name())),
            format!("\"kind\": {}", string(kind)),
            format!("\"conns\": {}", r.scenario.conns()),
            format!("\"size\": {}", number(size.map(|v| v as f64))),
            format!("\"depth\": {}", number(depth.map(|v| v as f64))),
            format!("\"driver\": {}", string(r.driver.name())),
        ];
        match &r.outcome {
            Outcome::Measured(m) => {
                f.push("\"status\": \"measured\"".into());
                f.push(format!("\"msgs\": {}", m.msgs));
                f.push(format!("\"window_secs\": {}", number(Some(m.secs))));
                f.push(format!(
                    "\"msgs_per_sec\": {}",
                    number(Some(m.msgs_per_sec))
                ));
                f.push(format!("\"mib_per_sec\": {}", number(Some(m.mib_per_sec))));
                f.push(format!("\"p50_us\": {}", number(m.p50_us)));
                f.push(format!("\"p99_us\": {}", number(m.p99_us)));
                f.push(format!("\"p999_us\": {}", number(m.p999_us)));
                f.push(format!("\"max_us\": {}", number(m.max_us)));
                f.push(format!("\"cpu_us_per_msg\": {}", number(m.cpu_us_per_msg)));
                f.push(format!(
                    "\"rss_bytes\": {}",
                    number(m.rss_bytes.map(|v| v as f64))
                ));
                f.push(format!("\"rss_per_conn\": {}", number(m.rss_per_conn)));
                f.push(format!(
                    "\"threads\": {}",
                    number(m.threads.map(|v| v as f64))
                ));
                f.push(format!("\"errors\": {}", m.errors));
                f.push(format!(
                    "\"first_error\": {}",
                    m.first_error.as_deref().map_or("null".into(), string)
                ));
            }
            Outcome::Skipped(why) => {
                f.push("\"status\": \"skipped\"".into());
                f.push(format!("\"reason\": {}", string(why)));
            }
            Outcome::Failed(why) => {
                f.push("\"status\": \"failed\"".into());
                f.push(format!("\"reason\": {}", string(why)));
                f.push("\"errors\": 1".into());
            }
        }
        let comma = if i + 1 < report.rows.len() { "," } else { "" };
        let _ = writeln!(o, "    {{{}}}{comma}", f.join(", "));
    }
    o.push_str("  ],\n");
    o.push_str("  \"reactor_over_threaded\": {");
    let mut first = true;
    for s in scenarios(report) {
        if let Some(rs) = ratios(report, s).filter(|rs| !rs.is_empty()) {
            let cells: Vec<String> = rs
                .iter()
                .map(|(k, v)| format!("{}: {}", string(k), number(Some(*v))))
                .collect();
            let _ = write!(
                o,
                "{}\n    {}: {{{}}}",
                if first { "" } else { "," },
                string(&s.name()),
                cells.join(", ")
            );
            first = false;
        }
    }
    o.push_str(if first { "}\n" } else { "\n  }\n" });
    o.push_str("}\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_and_numbers() {
        assert_eq!(string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(number(Some(3.0)), "3");
        assert_eq!(number(Some(2.5)), "2.5");
        assert_eq!(number(Some(f64::NAN)), "null");
        assert_eq!(number(None), "null");
    }
}
