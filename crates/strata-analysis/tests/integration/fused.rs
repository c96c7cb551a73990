//! The fused `strata_parts` aggregate and the portable SQL form of stage 2a
//! (one `FILTER` aggregate per part) give the same results; with the fused
//! aggregate a quantile metric's values come from the same pass, otherwise
//! from a scan of their own.

use strata_analysis::EngineOptions;
use strata_sim::dataset::{write_parquet, DatasetConfig};

use super::common::*;

fn options(unique: bool, unfused: bool) -> EngineOptions {
    EngineOptions {
        assume_unique_event_ids: unique,
        unfused_parts: unfused,
        ..EngineOptions::default()
    }
}

/// Every part of these metrics filters on the event type alone.
const TYPE_ONLY: &str = r#"{"key": "exp", "control": "control",
    "variants": [{"key": "control", "weight": 50}, {"key": "treatment", "weight": 50}],
    "start": "2026-01-10T00:00:00Z", "end": "2026-01-20T00:00:00Z",
    "primary": "conversion", "secondary": ["purchases", "revenue", "order_value", "aov", "revenue_w"],
    "guardrails": ["load_p50"], "cuped": {"pre_period_days": 7}, "novelty_days": 1, "segments": ["country"]}"#;

#[test]
fn fused_and_sql_parts_agree_on_the_hand_computed_data() {
    let f = Fixture::new();
    let (exposures, events) = (
        f.path("exposures.ndjson").display().to_string(),
        f.path("events.ndjson").display().to_string(),
    );
    for unique in [false, true] {
        let (fused, used) = run_options(
            METRICS,
            TYPE_ONLY,
            &exposures,
            &events,
            options(unique, false),
        );
        assert!(used, "the fused aggregate applies to type-only filters");
        let (sql, used) = run_options(
            METRICS,
            TYPE_ONLY,
            &exposures,
            &events,
            options(unique, true),
        );
        assert!(!used);
        let json = |r| serde_json::to_value(r).unwrap();
        assert_same(&json(&fused), &json(&sql), &format!("unique={unique}"));
        if !unique {
            // The hand-computed purchases of `exact.rs`: u1 has e1 (twice)
            // and e2, u2 has e5 only, within the 5 s skew.
            let purchases = metric(&fused, "purchases");
            assert!(close(purchases.variants["control"].mean.unwrap(), 1.5));
        }
    }
    // A value or property predicate keeps the SQL form.
    let spec = spec_json("");
    let (_, used) = run_options(METRICS, &spec, &exposures, &events, options(false, false));
    assert!(!used);
}

#[test]
fn fused_and_sql_parts_agree_on_generated_slices() {
    let cfg = DatasetConfig {
        duplicate_rate: 0.1,
        ..dataset(3_000, 2.0, 0.2, 23)
    };
    let f = Fixture::new();
    write_parquet(&cfg, &f.path("gen"), 4).unwrap();
    let spec = r#"{"key": "exp", "control": "control",
        "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}],
        "start": "2026-01-01T00:00:00Z", "end": "2026-01-15T00:00:00Z",
        "primary": "revenue", "secondary": ["purchases", "conversion", "aov", "order_value"],
        "guardrails": ["load_p50"], "cuped": {"pre_period_days": 7}}"#;
    let exposures = f.path("gen/exposures").display().to_string();
    let events = f.path("gen/events").display().to_string();
    for unique in [false, true] {
        let (fused, used) = run_options(METRICS, spec, &exposures, &events, options(unique, false));
        assert!(used);
        let (sql, _) = run_options(METRICS, spec, &exposures, &events, options(unique, true));
        let json = |r| serde_json::to_value(r).unwrap();
        assert_same(&json(&fused), &json(&sql), &format!("unique={unique}"));
        assert_eq!(fused.units.values().sum::<u64>(), 3_000);
        // The quantile's values, gathered per unit by the fused aggregate
        // and by a scan of the events in the SQL form, are thousands.
        let load = metric(&fused, "load_p50");
        assert!(load.variants["control"].n > 1_000, "{load:?}");
    }
}
