//! The experiment-level checks on purpose-built data sets, each with a case
//! that triggers the check and one that does not: Simpson's paradox over a
//! segment, the novelty report, SRM, the multiple-testing family, the
//! rule that events before `start` never count, the health checks and
//! decision of a look, and the opt-in Bayesian summary.
//!
//! Expected values are worked out from how the data sets are built.

use std::fmt::Write;

use super::common::*;

const CONVERSION: &str = r#"{"metrics": [
  {"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}},
  {"key": "purchases", "type": "count", "filter": {"type": "purchase"}}]}"#;

/// A cell of units: `n` units of `variant` in `platform`, the first
/// `converters` of which purchase once at each of the `days` (days after
/// their exposure at `exposed`).
struct Cell {
    variant: &'static str,
    platform: &'static str,
    n: usize,
    converters: usize,
    days: &'static [i64],
}

/// Writes the cells as NDJSON exposures and events under `dir`.
fn write_cells(dir: &std::path::Path, exposed: &str, cells: &[Cell]) -> (String, String) {
    let base = strata_analysis::spec::parse_time(exposed).unwrap();
    let (mut xs, mut es) = (String::new(), String::new());
    let mut unit = 0;
    for c in cells {
        for i in 0..c.n {
            unit += 1;
            writeln!(
                xs,
                r#"{{"unit_id":"u{unit}","experiment":"exp","variant":"{}","ts":"{exposed}","platform":"{}"}}"#,
                c.variant, c.platform
            )
            .unwrap();
            if i < c.converters {
                for d in c.days {
                    let ts = (base + chrono::Duration::hours(24 * d + 1)).to_rfc3339();
                    writeln!(
                        es,
                        r#"{{"event_id":"e{unit}-{d}","unit_id":"u{unit}","type":"purchase","ts":"{ts}","value":1.0}}"#
                    )
                    .unwrap();
                }
            }
        }
    }
    let (x, e) = (dir.join("exposures.ndjson"), dir.join("events.ndjson"));
    std::fs::write(&x, xs).unwrap();
    std::fs::write(&e, es).unwrap();
    (x.display().to_string(), e.display().to_string())
}

fn spec(extra: &str) -> String {
    format!(
        r#"{{"key": "exp", "control": "control",
 "variants": [{{"key": "control", "weight": 50}}, {{"key": "treatment", "weight": 50}}],
 "start": "2026-01-01T00:00:00Z", "end": "2026-01-21T00:00:00Z",
 "primary": "conversion", "secondary": ["purchases"]{extra}}}"#
    )
}

fn run(spec: &str, cells: &[Cell]) -> strata_analysis::Results {
    run_until(spec, cells, None)
}

/// `run` with the data analysed as of `as_of` (default: the spec's end).
fn run_until(spec: &str, cells: &[Cell], as_of: Option<&str>) -> strata_analysis::Results {
    let dir = tempfile::tempdir().unwrap();
    let (x, e) = write_cells(dir.path(), "2026-01-01T00:00:00Z", cells);
    analyze_with(
        CONVERSION,
        spec,
        std::path::Path::new(&x),
        std::path::Path::new(&e),
        as_of,
    )
    .unwrap()
}

fn has_warning(r: &strata_analysis::Results, code: &str) -> bool {
    r.warnings.iter().any(|w| w.code == code)
}

/// Treatment converts 5 points better on each platform; `skewed` puts most
/// treatment units on the low-converting platform, so the pooled effect
/// turns negative.
fn simpson_cells(skewed: bool) -> Vec<Cell> {
    let (small, large) = if skewed { (200, 1800) } else { (1000, 1000) };
    let cell = |variant, platform, n: usize, rate: f64| Cell {
        variant,
        platform,
        n,
        converters: (n as f64 * rate).round() as usize,
        days: &[1],
    };
    vec![
        cell("control", "mobile", small, 0.10),
        cell("treatment", "mobile", large, 0.15),
        cell("control", "desktop", large, 0.50),
        cell("treatment", "desktop", small, 0.55),
    ]
}

#[test]
fn simpsons_paradox_is_flagged_when_segments_disagree_with_the_pooled_effect() {
    let r = run(&spec(r#", "segments": ["platform"]"#), &simpson_cells(true));
    // Pooled: control (20 + 900) / 2000, treatment (270 + 110) / 2000.
    let e = &metric(&r, "conversion").effects[0];
    assert!(close(e.delta.unwrap(), 380.0 / 2000.0 - 920.0 / 2000.0));
    let seg = &r.segments["platform"];
    for (platform, c, t) in [("mobile", 0.10, 0.15), ("desktop", 0.50, 0.55)] {
        let cells = &seg.values[platform]["conversion"];
        assert!(close(cells["control"].mean.unwrap(), c), "{platform}");
        assert!(close(cells["treatment"].mean.unwrap(), t), "{platform}");
        assert_eq!(cells["control"].n + cells["treatment"].n, 2000);
    }
    let s = &seg.simpson["conversion"]["treatment"];
    assert_eq!((s.eligible_segments, s.opposite_segments), (2, 2));
    assert!(s.flagged);
    assert!(has_warning(&r, "simpsons_paradox"));
}

#[test]
fn simpsons_paradox_is_not_flagged_when_segments_agree() {
    let r = run(
        &spec(r#", "segments": ["platform"]"#),
        &simpson_cells(false),
    );
    let e = &metric(&r, "conversion").effects[0];
    assert!(close(e.delta.unwrap(), 0.05));
    let s = &r.segments["platform"].simpson["conversion"]["treatment"];
    assert_eq!((s.eligible_segments, s.opposite_segments), (2, 0));
    assert!(!s.flagged);
    assert!(!has_warning(&r, "simpsons_paradox"));
}

/// 500 units per variant exposed at the start; control converts 10% in the
/// first week (day 2) and 10% later (day 10); treatment converts 40% in the
/// first week and `late` later.
fn novelty_cells(late_treatment: usize) -> Vec<Cell> {
    vec![
        Cell {
            variant: "control",
            platform: "web",
            n: 500,
            converters: 50,
            days: &[2, 10],
        },
        Cell {
            variant: "treatment",
            platform: "web",
            n: 500 - 200,
            converters: 0,
            days: &[],
        },
        Cell {
            variant: "treatment",
            platform: "web",
            n: 200 - late_treatment,
            converters: 200 - late_treatment,
            days: &[2],
        },
        Cell {
            variant: "treatment",
            platform: "web",
            n: late_treatment,
            converters: late_treatment,
            days: &[2, 10],
        },
    ]
}

#[test]
fn novelty_is_flagged_when_the_effect_decays() {
    let r = run(&spec(""), &novelty_cells(50));
    let n = r.novelty.as_ref().unwrap();
    assert_eq!((n.metric.as_str(), n.window_days), ("conversion", 7));
    let e = &n.effects[0];
    assert_eq!(e.early.n, [500, 500]);
    assert_eq!(e.late.n, [500, 500]);
    assert!(close(e.early.delta.unwrap(), 0.4 - 0.1));
    assert!(close(e.late.delta.unwrap(), 0.0));
    assert!(e.early.p_value.unwrap() < 1e-6);
    assert!(e.decay_p_value.unwrap() < 1e-6);
    assert!(e.flagged);
    assert!(has_warning(&r, "novelty_effect"));
}

#[test]
fn novelty_is_not_flagged_when_the_effect_persists() {
    // Treatment converts 40% in both windows.
    let r = run(&spec(""), &novelty_cells(200));
    let e = &r.novelty.as_ref().unwrap().effects[0];
    assert!(close(e.early.delta.unwrap(), 0.3));
    assert!(close(e.late.delta.unwrap(), 0.3));
    assert!(!e.flagged);
    assert!(!has_warning(&r, "novelty_effect"));
}

#[test]
fn srm_is_flagged_against_the_configured_weights() {
    let cells = novelty_cells(50);
    let balanced = run(&spec(""), &cells);
    assert!(!balanced.srm.flagged && !has_warning(&balanced, "srm"));
    let skewed_spec = spec("").replace(
        r#"{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}"#,
        r#"{"key": "control", "weight": 90}, {"key": "treatment", "weight": 10}"#,
    );
    let r = run(&skewed_spec, &cells);
    // χ² = (500 − 900)²/900 + (500 − 100)²/100.
    assert!(close(
        r.srm.chi2,
        400.0 * 400.0 / 900.0 + 400.0 * 400.0 / 100.0
    ));
    assert!(r.srm.flagged && has_warning(&r, "srm"));
}

/// Benjamini–Hochberg adjusted p-values, computed here independently.
fn bh(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![0.0; m];
    let mut running = 1.0_f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        out[i] = running;
    }
    out
}

#[test]
fn only_secondary_metrics_are_adjusted_for_multiplicity() {
    // The fixture's spec with `big_purchases` moved from the secondary
    // metrics to the guardrails.
    let f = Fixture::new();
    let run = |guardrails: &str| {
        let spec = spec_json("").replace(r#""big_purchases", "#, "").replace(
            r#""guardrails": ["load_p50"]"#,
            &format!(r#""guardrails": [{guardrails}]"#),
        );
        analyze_with(
            METRICS,
            &spec,
            &f.path("exposures.ndjson"),
            &f.path("events.ndjson"),
            None,
        )
        .unwrap()
    };
    let r = run(r#""load_p50", "big_purchases""#);
    let secondary: Vec<_> = r
        .metrics
        .iter()
        .filter(|m| m.role == "secondary")
        .flat_map(|m| &m.effects)
        .filter(|e| e.p_value.is_some())
        .collect();
    assert!(secondary.len() >= 4);
    let p: Vec<f64> = secondary.iter().map(|e| e.p_value.unwrap()).collect();
    for (e, adj) in secondary.iter().zip(bh(&p)) {
        assert!(close(e.adjusted_p_value.unwrap(), adj));
        assert_eq!(e.significant, adj < 0.05);
    }
    // The primary and the guardrails are unadjusted; a guardrail's
    // significance is its own p-value against α.
    for m in r.metrics.iter().filter(|m| m.role != "secondary") {
        for e in &m.effects {
            assert!(e.adjusted_p_value.is_none(), "{}", m.metric);
            if m.role == "guardrail" {
                assert_eq!(e.significant, e.p_value.is_some_and(|p| p < 0.05));
            }
        }
    }
    assert!(r
        .metrics
        .iter()
        .any(|m| m.role == "guardrail" && m.effects[0].p_value.is_some()));
    // Guardrails do not join the family: without them the secondaries'
    // adjusted p-values are the same.
    let without = run("");
    for m in r.metrics.iter().filter(|m| m.role == "secondary") {
        let other = metric(&without, &m.metric);
        for (a, b) in m.effects.iter().zip(&other.effects) {
            match (a.adjusted_p_value, b.adjusted_p_value) {
                (Some(x), Some(y)) => assert!(close(x, y), "{}: {x} != {y}", m.metric),
                (x, y) => assert_eq!(x, y, "{}", m.metric),
            }
        }
    }
}

#[test]
fn events_before_start_never_count_even_within_the_clock_skew() {
    let dir = tempfile::tempdir().unwrap();
    let (x, e) = (dir.path().join("x.ndjson"), dir.path().join("e.ndjson"));
    // All units are exposed exactly at the start; u1's purchase is 2 s
    // before it (within the 5 s skew, but before start), u2's 2 s after and
    // u4's an hour after; u3 does nothing.
    let mut xs = String::new();
    for (u, v) in [
        ("u1", "control"),
        ("u2", "treatment"),
        ("u3", "control"),
        ("u4", "treatment"),
    ] {
        writeln!(
            xs,
            r#"{{"unit_id":"{u}","experiment":"exp","variant":"{v}","ts":"2026-01-01T00:00:00Z"}}"#
        )
        .unwrap();
    }
    std::fs::write(&x, xs).unwrap();
    std::fs::write(
        &e,
        r#"{"event_id":"a","unit_id":"u1","type":"purchase","ts":"2025-12-31T23:59:58Z","value":1}
{"event_id":"b","unit_id":"u2","type":"purchase","ts":"2026-01-01T00:00:02Z","value":1}
{"event_id":"c","unit_id":"u4","type":"purchase","ts":"2026-01-01T01:00:00Z","value":1}
"#,
    )
    .unwrap();
    let r = analyze_with(CONVERSION, &spec(""), &x, &e, None).unwrap();
    let m = metric(&r, "purchases");
    assert_eq!(m.variants["control"].mean, Some(0.0));
    assert_eq!(m.variants["treatment"].mean, Some(1.0));
}

fn run_as_of(spec: &str, cells: &[Cell], as_of: &str) -> strata_analysis::Results {
    run_until(spec, cells, Some(as_of))
}

fn health(r: &strata_analysis::Results, check: &str) -> strata_analysis::results::HealthStatus {
    r.health
        .iter()
        .find(|c| c.check == check)
        .unwrap_or_else(|| panic!("no {check} check in {:#?}", r.health))
        .status
}

/// `n` units a variant, converting at the `control` and `treatment` rates
/// on days 1 and 8 after exposure (the same effect early and late: no
/// novelty).
fn planted(control: f64, treatment: f64, n: [usize; 2]) -> Vec<Cell> {
    let cell = |variant, n: usize, rate: f64| Cell {
        variant,
        platform: "web",
        n,
        converters: (n as f64 * rate).round() as usize,
        days: &[1, 8],
    };
    vec![
        cell("control", n[0], control),
        cell("treatment", n[1], treatment),
    ]
}

#[test]
fn a_planted_effect_ships_only_after_the_minimum_duration() {
    use strata_analysis::results::{HealthStatus, Verdict};
    let cells = planted(0.10, 0.20, [2000, 2000]);
    // Day 3 of 20: the effect is there, the week is not.
    let early = run_as_of(&spec(""), &cells, "2026-01-04T00:00:00Z");
    assert!(metric(&early, "conversion").effects[0].significant);
    assert_eq!(health(&early, "minimum_duration"), HealthStatus::Warn);
    let d = early.decision.as_ref().unwrap();
    assert_eq!(d.verdict, Verdict::KeepRunning, "{d:#?}");
    assert_eq!(d.days_left, Some(4.0));
    assert!(d.reasons[0].contains("improved significantly in treatment"));
    // Day 10: every check ok, ship the treatment.
    let later = run_as_of(&spec(""), &cells, "2026-01-11T00:00:00Z");
    assert!(
        later.health.iter().all(|c| c.status == HealthStatus::Ok),
        "{:#?}",
        later.health
    );
    let d = later.decision.as_ref().unwrap();
    assert_eq!(
        (d.verdict, d.variant.as_deref()),
        (Verdict::Ship, Some("treatment"))
    );
    // A longer pre-registered minimum holds it back again.
    let r = run_as_of(
        &spec(r#", "min_duration_days": 14"#),
        &cells,
        "2026-01-11T00:00:00Z",
    );
    assert_eq!(r.decision.unwrap().verdict, Verdict::KeepRunning);
    // The opposite effect rolls back, whatever the duration.
    let r = run_as_of(
        &spec(""),
        &planted(0.20, 0.10, [2000, 2000]),
        "2026-01-04T00:00:00Z",
    );
    let d = r.decision.unwrap();
    assert_eq!(
        (d.verdict, d.variant.as_deref()),
        (Verdict::RollBack, Some("treatment"))
    );
}

#[test]
fn a_planted_srm_or_a_silent_variant_makes_the_look_unhealthy() {
    use strata_analysis::results::{HealthStatus, Verdict};
    // 2,300 against 1,700 units for a 50/50 split: χ² = 90.
    let r = run(&spec(""), &planted(0.10, 0.20, [2300, 1700]));
    assert_eq!(health(&r, "srm"), HealthStatus::Fail);
    let d = r.decision.as_ref().unwrap();
    assert_eq!(d.verdict, Verdict::Unhealthy);
    assert!(d.reasons[0].contains("Sample ratio mismatch"), "{d:#?}");
    // Treatment logs no purchases at all.
    let r = run(&spec(""), &planted(0.10, 0.0, [2000, 2000]));
    assert_eq!(health(&r, "missing_data"), HealthStatus::Fail);
    assert_eq!(r.decision.unwrap().verdict, Verdict::Unhealthy);
}

#[test]
fn the_bayesian_summary_is_opt_in() {
    let cells = planted(0.10, 0.12, [2000, 2000]);
    let off = run(&spec(""), &cells);
    assert!(off
        .metrics
        .iter()
        .all(|m| m.effects.iter().all(|e| e.bayesian.is_none())));
    let on = run(&spec(r#", "bayesian": true"#), &cells);
    let e = &metric(&on, "conversion").effects[0];
    let b = e.bayesian.as_ref().expect("bayesian summary");
    // Flat prior: the posterior is N(Δ̂, se²), so P(δ > 0) = Φ(Δ̂/se) with
    // se read off the Welch interval (normal-approximation width).
    let delta = e.delta.unwrap();
    assert!(close(b.posterior_mean, delta));
    assert!(
        b.prob_treatment_better > 0.95 && b.prob_treatment_better < 1.0,
        "{b:?}"
    );
    assert!(b.expected_loss_treatment < b.expected_loss_control);
}
