//! Events partitioned by unit (`part=` directories, the pipeline's layout)
//! are deduplicated and aggregated one slice at a time; the results must
//! equal those of the same rows read as one input.

use std::path::Path;

use strata_analysis::{EngineOptions, Results};
use strata_sim::dataset::write_parquet;

use strata_sim::dataset::DatasetConfig;

use super::common::*;

fn run(spec: &str, exposures: &Path, events: &str, unique: bool) -> Results {
    let options = EngineOptions {
        assume_unique_event_ids: unique,
        ..EngineOptions::default()
    };
    let exposures = exposures.display().to_string();
    run_options(METRICS, spec, &exposures, events, options).0
}

fn json(r: &Results) -> serde_json::Value {
    serde_json::to_value(r).unwrap()
}

#[test]
fn sliced_and_whole_inputs_agree() {
    let cfg = DatasetConfig {
        duplicate_rate: 0.1,
        ..dataset(2_000, 2.0, 0.3, 11)
    };
    let f = Fixture::new();
    write_parquet(&cfg, &f.path("gen"), 4).unwrap();
    assert!(f.path("gen/events/part=03/data.parquet").is_file());
    let spec = r#"{"key": "exp", "control": "control",
        "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}],
        "start": "2026-01-01T00:00:00Z", "end": "2026-01-15T00:00:00Z",
        "primary": "conversion", "secondary": ["purchases", "revenue", "aov"],
        "guardrails": ["load_p50"], "cuped": {"pre_period_days": 7}}"#;
    let exposures = f.path("gen/exposures");
    // A directory is read slice by slice; a glob of the same files is one input.
    let dir = f.path("gen/events").display().to_string();
    let glob = f.path("gen/events/**/*.parquet").display().to_string();
    for unique in [false, true] {
        let sliced = run(spec, &exposures, &dir, unique);
        let whole = run(spec, &exposures, &glob, unique);
        assert_same(&json(&sliced), &json(&whole), &format!("unique={unique}"));
        assert_eq!(sliced.units.values().sum::<u64>(), 2_000);
    }
    // Duplicates are in the data: counting them (unique ids assumed) differs.
    let dedup = run(spec, &exposures, &dir, false);
    let dup = run(spec, &exposures, &dir, true);
    let purchases = |r: &Results| {
        let m = metric(r, "purchases");
        m.variants["control"].mean.unwrap()
    };
    assert!(purchases(&dup) > purchases(&dedup));
}

/// A unit whose events straddle slices, with a copy of one event in each:
/// the per-slice deduplication would count it twice, so the analysis falls
/// back to one query and counts it once.
#[test]
fn a_duplicate_across_slices_counts_once() {
    let f = Fixture::new();
    let lines: Vec<&str> = EVENTS.lines().collect();
    // The first line is `e1` of u1; its copy stays in the other slice.
    assert!(lines[0].contains(r#""event_id":"e1""#) && lines[1].contains(r#""event_id":"e1""#));
    for (part, rows) in [("a", &lines[..1]), ("b", &lines[1..])] {
        let d = f.path(&format!("sliced/part={part}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("events.ndjson"), rows.join("\n") + "\n").unwrap();
    }
    let spec = spec_json(r#", "cuped": {"pre_period_days": 7}, "segments": ["country"]"#);
    let exposures = f.path("exposures.ndjson");
    let flat = f.path("events.ndjson").display().to_string();
    let sliced = f.path("sliced").display().to_string();
    assert_same(
        &json(&run(&spec, &exposures, &sliced, false)),
        &json(&run(&spec, &exposures, &flat, false)),
        "dedup",
    );
    // With unique ids assumed the input is read in one query; it agrees too.
    assert_same(
        &json(&run(&spec, &exposures, &sliced, true)),
        &json(&run(&spec, &exposures, &flat, true)),
        "unique",
    );
    // Control is u1 (e1 once and e2 in the window) and u2 (e5): 1.5
    // purchases per unit; counting e1 twice would make it 2.
    let r = run(&spec, &exposures, &sliced, false);
    let control = &metric(&r, "purchases").variants["control"];
    assert_eq!(control.n, 2);
    assert!(close(control.mean.unwrap(), 1.5), "{control:?}");
}
