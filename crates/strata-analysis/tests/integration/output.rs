//! The library's entry points on the committed example: YAML and JSON
//! documents agree, and `analyze_looks` gives one document per look.
//! (Rendering is `strata analyze`'s, tested in strata-cli.)

use std::path::Path;

use strata_analysis::{analyze, analyze_looks, spec, AnalysisSpec, DataSource, MetricRegistry};

use super::common::rt;

const EX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/analysis");

fn documents(spec: &str, metrics: &str) -> (AnalysisSpec, MetricRegistry) {
    (
        AnalysisSpec::from_path(&Path::new(EX).join(spec)).unwrap(),
        MetricRegistry::from_path(&Path::new(EX).join(metrics)).unwrap(),
    )
}

fn data() -> DataSource {
    DataSource {
        exposures: format!("{EX}/data/exposures"),
        events: format!("{EX}/data/events"),
        aliases: None,
    }
}

#[test]
fn example_runs_from_json_and_yaml_and_by_looks() {
    let run = |spec: &str, metrics: &str| {
        let (spec, registry) = documents(spec, metrics);
        let r = rt()
            .block_on(analyze(&spec, &registry, &data(), None, Default::default()))
            .unwrap();
        serde_json::to_value(r).unwrap()
    };
    let v = run("experiment.json", "metrics.json");
    // Parallel aggregation merges partial sums in varying order: equal to rounding.
    super::common::assert_same(&v, &run("experiment.yaml", "metrics.yaml"), "yaml");
    let units = &v["units"];
    assert_eq!(
        units["control"].as_u64().unwrap() + units["treatment"].as_u64().unwrap(),
        2000
    );
    assert_eq!(v["metrics"].as_array().unwrap().len(), 5);
    assert!(v["metrics"][0]["effects"][0]["cuped"]["theta"].is_number());

    let (spec, registry) = documents("experiment.json", "metrics.json");
    let looks: Vec<_> = ["2026-01-05T00:00:00Z", "2026-01-10T00:00:00Z"]
        .iter()
        .map(|t| spec::parse_time(t).unwrap())
        .collect();
    let r = rt()
        .block_on(analyze_looks(
            &spec,
            &registry,
            &data(),
            &looks,
            Default::default(),
        ))
        .unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].as_of, "2026-01-10T00:00:00Z");
    let reversed: Vec<_> = looks.iter().rev().copied().collect();
    let e = rt()
        .block_on(analyze_looks(
            &spec,
            &registry,
            &data(),
            &reversed,
            Default::default(),
        ))
        .unwrap_err();
    assert!(e.to_string().contains("increasing time order"), "{e}");
}

/// The engine reports each stage of each look, in order, then `done`.
#[test]
fn progress_is_reported_by_stage() {
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let options = strata_analysis::EngineOptions {
        on_progress: Some(Arc::new(move |p: strata_analysis::Progress| {
            sink.lock().unwrap().push((p.stage, p.fraction));
        })),
        ..Default::default()
    };
    let (spec, registry) = documents("experiment.json", "metrics.json");
    rt().block_on(analyze(&spec, &registry, &data(), None, options))
        .unwrap();
    let seen = seen.lock().unwrap();
    let stages: Vec<&str> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        stages,
        [
            "exposures → units",
            "events → per-unit values",
            "per-unit values → statistics",
            "done"
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].1 < w[1].1) && seen[3].1 == 1.0);
}
