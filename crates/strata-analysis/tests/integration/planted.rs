//! A generated data set with a planted effect, checked against an
//! independent plain-Rust computation over the same rows.

use std::collections::BTreeMap;

use strata_sim::dataset::{unit_records, write_parquet, DatasetConfig};

use super::common::*;

const DAY_US: i64 = 86_400_000_000;

#[test]
fn planted_effect_matches_independent_computation() {
    let cfg = DatasetConfig {
        duplicate_rate: 0.05,
        ..dataset(3_000, 6.0, 0.5, 7)
    };
    let f = Fixture::new();
    let written = write_parquet(&cfg, &f.path("gen"), 3).unwrap();
    assert_eq!(written.exposures, 3_000);
    assert!(written.events > 30_000, "{written:?}");

    // Independent computation: per unit, deduplicated events in [exposure − 5 s, end).
    let (start, end) = (cfg.start_us, cfg.start_us + 14 * DAY_US);
    let mut per_variant: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for index in 0..cfg.units {
        let (variant, conv, rev) = purchases_by_hand(&unit_records(&cfg, index), start, end);
        let v = per_variant.entry(variant).or_default();
        v.0.push(conv);
        v.1.push(rev);
    }
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
