//! The global holdout's look: the holdout against everyone else over one
//! period, and the check that no held-out unit saw a treatment. Expected
//! values are counted here from the rows as they are written.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_analysis::holdout::{look, HoldoutLookInput};
use strata_analysis::results::HealthStatus;
use strata_analysis::{DataSource, EngineOptions, MetricRegistry};

use super::common::*;

const METRICS: &str = r#"{"metrics": [
  {"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}},
  {"key": "revenue", "type": "sum", "filter": {"type": "purchase"}}
]}"#;

fn at(t: &str) -> DateTime<Utc> {
    strata_analysis::spec::parse_time(t).unwrap()
}

fn input(percent: f64) -> HoldoutLookInput {
    HoldoutLookInput {
        experiment: "$holdout".into(),
        holdout: "holdout".into(),
        rest: "rest".into(),
        percent,
        key_metrics: vec!["conversion".into(), "revenue".into()],
        start: at("2026-03-01T00:00:00Z"),
        end: at("2026-03-15T00:00:00Z"),
        treatments: vec![
            ("exp_a".into(), "treatment".into()),
            ("exp_b".into(), "big".into()),
            ("exp_b".into(), "small".into()),
        ],
    }
}

/// What the rows were planted with, counted as they are written.
#[derive(Debug, Default)]
struct Planted {
    /// Per variant: units, converted units.
    units: BTreeMap<&'static str, (u64, u64)>,
    /// Held-out units exposed in the period to each treatment.
    contaminated: BTreeMap<(&'static str, &'static str), u64>,
    contaminated_units: u64,
}

/// 3,000 units exposed during the period, 10 % held out (every tenth);
/// the rest convert at 30 %, the holdout at 24 %. Exposures of the period
/// before (another salt: some units in the other variant, others never
/// seen since) must not count, nor must treatments a held-out unit saw
/// before the period, a held-out unit's control exposure, or the rest's
/// treatments. Six held-out units saw a treatment in the period, one of
/// them two.
fn write(dir: &Path) -> (DataSource, Planted) {
    let mut rng = StdRng::seed_from_u64(27);
    let start = at("2026-03-01T00:00:00Z");
    let ts = |d: Duration| (start + d).to_rfc3339();
    let (mut xs, mut es) = (String::new(), String::new());
    let mut p = Planted::default();
    let x = |xs: &mut String, unit: &str, exp: &str, variant: &str, t: String| {
        writeln!(
            xs,
            r#"{{"unit_id":"{unit}","experiment":"{exp}","variant":"{variant}","ts":"{t}"}}"#
        )
        .unwrap();
    };
    let mut held = Vec::new();
    for i in 0..3000u32 {
        let unit = format!("u{i}");
        let variant = if i % 10 == 0 { "holdout" } else { "rest" };
        if variant == "holdout" {
            held.push(unit.clone());
        }
        let exposed = Duration::minutes(rng.random_range(0..10 * 24 * 60));
        x(&mut xs, &unit, "$holdout", variant, ts(exposed));
        // Exposed again the next day, as SDKs log once per day.
        x(
            &mut xs,
            &unit,
            "$holdout",
            variant,
            ts(exposed + Duration::days(1)),
        );
        if i % 7 == 0 {
            // The period before, under another salt.
            let other = if variant == "holdout" {
                "rest"
            } else {
                "holdout"
            };
            x(&mut xs, &unit, "$holdout", other, ts(-Duration::days(3)));
        }
        let e = p.units.entry(variant).or_default();
        e.0 += 1;
        let rate = if variant == "holdout" { 0.24 } else { 0.30 };
        if rng.random_bool(rate) {
            e.1 += 1;
            let t = ts(exposed + Duration::hours(rng.random_range(1..72)));
            let value = rng.random_range(5..50u32);
            writeln!(
                es,
                r#"{{"event_id":"e{i}","unit_id":"{unit}","type":"purchase","ts":"{t}","value":{value}}}"#
            )
            .unwrap();
        }
        if variant == "rest" && i % 5 == 1 {
            x(&mut xs, &unit, "exp_a", "treatment", ts(exposed));
        }
    }
    for i in 0..200 {
        // Seen only in the period before.
        x(
            &mut xs,
            &format!("old{i}"),
            "$holdout",
            "rest",
            ts(-Duration::days(2)),
        );
    }
    // Contamination in the period.
    for (k, (exp, variant)) in [
        ("exp_a", "treatment"),
        ("exp_a", "treatment"),
        ("exp_a", "treatment"),
        ("exp_b", "big"),
        ("exp_b", "small"),
    ]
    .into_iter()
    .enumerate()
    {
        x(&mut xs, &held[k], exp, variant, ts(Duration::days(5)));
        *p.contaminated.entry((exp, variant)).or_default() += 1;
    }
    // The same unit in two treatments: one contaminated unit.
    x(&mut xs, &held[0], "exp_b", "big", ts(Duration::days(6)));
    *p.contaminated.entry(("exp_b", "big")).or_default() += 1;
    x(
        &mut xs,
        &held[5],
        "exp_a",
        "treatment",
        ts(Duration::days(2)),
    );
    *p.contaminated.entry(("exp_a", "treatment")).or_default() += 1;
    p.contaminated_units = 6;
    // Not contamination: a control, a treatment before the period, one
    // after the look's end.
    x(
        &mut xs,
        &held[10],
        "exp_a",
        "control",
        ts(Duration::days(2)),
    );
    x(
        &mut xs,
        &held[11],
        "exp_a",
        "treatment",
        ts(-Duration::days(1)),
    );
    x(
        &mut xs,
        &held[12],
        "exp_a",
        "treatment",
        ts(Duration::days(20)),
    );
    let (xp, ep) = (dir.join("exposures.ndjson"), dir.join("events.ndjson"));
    std::fs::write(&xp, xs).unwrap();
    std::fs::write(&ep, es).unwrap();
    let data = DataSource {
        exposures: xp.display().to_string(),
        events: ep.display().to_string(),
        aliases: None,
    };
    (data, p)
}

#[test]
fn a_period_compares_the_holdout_with_everyone_else_and_finds_contamination() {
    let dir = tempfile::tempdir().unwrap();
    let (data, planted) = write(dir.path());
    let registry = MetricRegistry::from_str_named(METRICS, Path::new("metrics.json")).unwrap();
    let (r, c) = rt()
        .block_on(look(
            &input(10.0),
            &registry,
            &data,
            EngineOptions::default(),
        ))
        .unwrap();
    // Units of the period only, each in its variant of the period.
    let units: BTreeMap<String, u64> = planted
        .units
        .iter()
        .map(|(v, (n, _))| ((*v).to_owned(), *n))
        .collect();
    assert_eq!(r.units, units);
    assert_eq!(r.experiment, "$holdout");
    // SRM against the holdout's size: 10 % of 3,000 is exactly what was
    // planted.
    assert!(
        (r.srm.expected["holdout"] - 300.0).abs() < 1e-9,
        "{:?}",
        r.srm
    );
    assert!(!r.srm.flagged);
    let conv = metric(&r, "conversion");
    for (v, (n, converted)) in &planted.units {
        let mean = conv.variants[*v].mean.unwrap();
        assert!(close(mean, *converted as f64 / *n as f64), "{v}: {mean}");
    }
    let effect = &conv.effects[0];
    assert_eq!(
        (effect.variant.as_str(), effect.control.as_str()),
        ("rest", "holdout")
    );
    assert!(effect.cuped.is_some() || effect.insufficient_data.is_none());
    let [lo, hi] = effect.relative_ci.unwrap();
    assert!(
        lo < 0.25 && 0.25 < hi,
        "planted 0.30/0.24 − 1 outside {lo}..{hi}"
    );
    // Contamination, counted per treatment and per unit.
    assert_eq!(c.holdout_units, 300);
    assert_eq!(c.contaminated_units, planted.contaminated_units);
    let found: HashMap<(&str, &str), u64> = c
        .exposures
        .iter()
        .map(|x| ((x.experiment.as_str(), x.variant.as_str()), x.units))
        .collect();
    let want: HashMap<(&str, &str), u64> = planted.contaminated.into_iter().collect();
    assert_eq!(found, want);
    let check = r
        .health
        .iter()
        .find(|h| h.check == "holdout_contamination")
        .unwrap();
    assert_eq!(
        check.status,
        HealthStatus::Fail,
        "6 of 300: {}",
        check.message
    );
    assert!(
        r.decision.is_none(),
        "a holdout is neither shipped nor rolled back"
    );
    // The same look with no treatments to watch finds no contamination.
    let clean = HoldoutLookInput {
        treatments: Vec::new(),
        ..input(10.0)
    };
    let (r, c) = rt()
        .block_on(look(&clean, &registry, &data, EngineOptions::default()))
        .unwrap();
    assert_eq!((c.holdout_units, c.contaminated_units), (300, 0));
    let check = r.health.iter().find(|h| h.check == "holdout_contamination");
    assert_eq!(check.unwrap().status, HealthStatus::Ok);
}

#[test]
fn a_holdout_look_needs_a_size_and_key_metrics() {
    let registry = MetricRegistry::from_str_named(METRICS, Path::new("metrics.json")).unwrap();
    for percent in [0.0, 100.0] {
        let e = input(percent).spec(&registry).unwrap_err().to_string();
        assert!(
            e.contains("percent") && e.contains("nothing to compare"),
            "{e}"
        );
    }
    let none = HoldoutLookInput {
        key_metrics: Vec::new(),
        ..input(5.0)
    };
    let e = none.spec(&registry).unwrap_err().to_string();
    assert!(
        e.contains("key_metrics") && e.contains("no key metrics"),
        "{e}"
    );
    let unknown = HoldoutLookInput {
        key_metrics: vec!["clicks".into()],
        ..input(5.0)
    };
    let e = unknown.spec(&registry).unwrap_err().to_string();
    assert!(e.contains("unknown metric `clicks`"), "{e}");
    let spec = input(5.0).spec(&registry).unwrap();
    assert!(spec.spec.exposures_since_start);
    assert_eq!(spec.spec.variants[0].weight, 5.0);
}
