//! A generated data set with a planted effect, checked against an
//! independent plain-Rust computation over the same rows.

use std::collections::{BTreeMap, HashSet};

use strata_analysis::testkit::{generate_units, write_parquet, Event, Exposure, GenConfig};

use super::common::*;

const DAY_US: i64 = 86_400_000_000;

#[test]
fn planted_effect_matches_independent_computation() {
    let cfg = GenConfig {
        units: 3_000,
        events_per_unit: 15.0,
        effect: 0.5,
        seed: 7,
        duplicate_rate: 0.05,
        ..GenConfig::default()
    };
    let f = Fixture::new();
    let (n_exp, n_ev) = write_parquet(&cfg, "exp", &f.path("gen"), 3).unwrap();
    assert_eq!(n_exp, 3_000);
    assert!(n_ev > 30_000, "{n_ev}");

    // Independent computation: per unit, deduplicated events in [exposure − 5 s, end).
    let (start, end) = (cfg.start_us, cfg.start_us + 14 * DAY_US);
    let mut per_variant: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    generate_units(
        &cfg,
        0,
        cfg.units,
        |x: Exposure, events: &mut Vec<Event>| {
            let mut seen = HashSet::new();
            let lo = (x.ts_us - 5_000_000).max(start);
            let (mut conv, mut rev) = (0.0, 0.0);
            for e in events.iter() {
                if !seen.insert(e.event_id.clone())
                    || e.kind != "purchase"
                    || e.ts_us < lo
                    || e.ts_us >= end
                {
                    continue;
                }
                conv = 1.0;
                rev += e.value.unwrap_or(0.0);
            }
            let v = per_variant.entry(x.variant.clone()).or_default();
            v.0.push(conv);
            v.1.push(rev);
        },
    );
    let spec = r#"{"key": "exp", "control": "control",
        "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}],
        "start": "2026-01-01T00:00:00Z", "end": "2026-01-15T00:00:00Z",
        "primary": "conversion", "secondary": ["revenue"]}"#;
    let r = analyze_with(
        METRICS,
        spec,
        &f.path("gen/exposures"),
        &f.path("gen/events"),
        None,
    )
    .unwrap();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let var = |v: &[f64]| {
        let m = mean(v);
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64
    };
    for (key, pick) in [("conversion", 0usize), ("revenue", 1)] {
        let m = metric(&r, key);
        for (variant, (conv, rev)) in &per_variant {
            let v = if pick == 0 { conv } else { rev };
            let got = &m.variants[variant];
            assert_eq!(got.n, v.len() as u64);
            assert!(
                close(got.mean.unwrap(), mean(v)),
                "{key} {variant}: {:?} vs {}",
                got.mean,
                mean(v)
            );
            assert!(
                close(got.variance.unwrap(), var(v)),
                "{key} {variant} variance"
            );
        }
    }
    // The planted 50% lift in purchase rate is detected.
    let e = &metric(&r, "conversion").effects[0];
    assert!(e.delta.unwrap() > 0.0 && e.p_value.unwrap() < 1e-3, "{e:?}");
    assert!(e.significant);
}
