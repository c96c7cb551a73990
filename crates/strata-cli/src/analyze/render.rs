//! `strata analyze --format table`: the results document laid out for a
//! terminal.

use std::fmt::Write;

use strata_analysis::Results;

fn num(x: Option<f64>) -> String {
    match x {
        None => "—".into(),
        Some(0.0) => "0".into(),
        Some(v) if v.abs() >= 1e6 || v.abs() < 1e-3 => format!("{v:.3e}"),
        Some(v) => format!("{v:.4}"),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("—".into(), |v| format!("{:+.2}%", v * 100.0))
}

fn interval(x: Option<[f64; 2]>) -> String {
    x.map_or("—".into(), |[a, b]| {
        format!("[{}, {}]", num(Some(a)), num(Some(b)))
    })
}

fn p(x: Option<f64>) -> String {
    match x {
        None => "—".into(),
        Some(v) if v < 1e-4 => "<0.0001".into(),
        Some(v) => format!("{v:.4}"),
    }
}

/// Lays out rows as a table with `|` separators and a rule under the header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
            .chain(std::iter::once(header[i].chars().count()))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: Vec<&str>| {
        let mut s = String::from("|");
        for (c, w) in cells.iter().zip(&widths) {
            let pad = w - c.chars().count();
            let _ = write!(s, " {c}{} |", " ".repeat(pad));
        }
        s.push('\n');
        s
    };
    let mut out = String::new();
    let rule: String = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    out.push_str(&rule);
    out.push_str(&line(header.to_vec()));
    out.push_str(&rule);
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out.push_str(&rule);
    out
}

/// Renders results for a terminal. Variant columns show the quantile, else
/// the CUPED-adjusted mean when CUPED applies (matching `delta`), else the mean.
pub fn render_table(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "experiment {} ({}), data from {} to {}",
        r.experiment, r.analysis, r.start, r.as_of
    );
    let units: Vec<String> = r.units.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        out,
        "units: {}   SRM: chi2={:.3} p={}{}",
        units.join(" "),
        r.srm.chi2,
        p(Some(r.srm.p_value)),
        if r.srm.flagged {
            "  ⚠ SAMPLE RATIO MISMATCH"
        } else {
            ""
        }
    );
    out.push('\n');
    let mut rows = Vec::new();
    for m in &r.metrics {
        let ctrl = m
            .effects
            .first()
            .map(|e| e.control.clone())
            .unwrap_or_default();
        let value = |v: &str| {
            m.variants
                .get(v)
                .map_or("—".into(), |x| num(x.value.or(x.cuped_mean).or(x.mean)))
        };
        for e in &m.effects {
            rows.push(vec![
                m.metric.clone(),
                m.role.clone(),
                e.variant.clone(),
                value(&ctrl),
                value(&e.variant),
                num(e.delta),
                interval(e.ci),
                pct(e.relative),
                p(e.p_value),
                p(e.adjusted_p_value),
                format!(
                    "{}{}{}",
                    e.tier,
                    if e.cuped.is_some() { " cuped" } else { "" },
                    e.sequential
                        .as_ref()
                        .map(|s| format!(" seq:{}", s.decision))
                        .unwrap_or_default()
                ),
            ]);
        }
    }
    out.push_str(&table(
        &[
            "metric",
            "role",
            "variant",
            "control",
            "treatment",
            "delta",
            "ci",
            "relative",
            "p",
            "adj. p",
            "result",
        ],
        &rows,
    ));
    if let Some(n) = &r.novelty {
        let _ = writeln!(
            out,
            "\nnovelty ({}; first {} days vs later):",
            n.metric, n.window_days
        );
        for e in &n.effects {
            let _ = writeln!(
                out,
                "  {}: early delta {} (p {}), late delta {} (p {}), decay p {}{}",
                e.variant,
                num(e.early.delta),
                p(e.early.p_value),
                num(e.late.delta),
                p(e.late.p_value),
                p(e.decay_p_value),
                if e.flagged {
                    "  ⚠ novelty effect"
                } else {
                    ""
                }
            );
        }
    }
    for (seg, s) in &r.segments {
        let flagged: Vec<String> = s
            .simpson
            .iter()
            .flat_map(|(m, by)| {
                by.iter()
                    .filter(|(_, c)| c.flagged)
                    .map(move |(v, _)| format!("{m}/{v}"))
            })
            .collect();
        let _ = writeln!(
            out,
            "\nsegments by {seg}: {} values; Simpson's paradox: {}",
            s.values.len(),
            if flagged.is_empty() {
                "none".into()
            } else {
                flagged.join(", ")
            }
        );
    }
    if !r.warnings.is_empty() {
        out.push_str("\nwarnings:\n");
        for w in &r.warnings {
            let _ = writeln!(
                out,
                "  - {}{}: {}",
                w.code,
                w.count.map(|c| format!(" ({c})")).unwrap_or_default(),
                w.message
            );
        }
    }
    if !r.health.is_empty() {
        out.push_str(
            "
health:
",
        );
        for c in &r.health {
            let _ = writeln!(out, "  {:<4} {}: {}", c.status.as_str(), c.check, c.message);
        }
    }
    if let Some(d) = &r.decision {
        let _ = write!(
            out,
            "
decision: {}",
            d.verdict.as_str()
        );
        if let Some(v) = &d.variant {
            let _ = write!(out, " ({v})");
        }
        if let Some(days) = d.days_left {
            let _ = write!(out, ", about {days:.1} days left");
        }
        out.push('\n');
        for reason in &d.reasons {
            let _ = writeln!(out, "  - {reason}");
        }
    }
    out
}
