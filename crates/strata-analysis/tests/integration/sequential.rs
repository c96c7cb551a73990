//! `--looks`: group-sequential boundaries use every previous information fraction.

use strata_analysis::{AnalysisSpec, Analyzer, DataSource, EngineOptions, MetricRegistry};

use super::common::*;

#[test]
fn looks_accumulate_information_fractions() {
    let f = Fixture::new();
    let registry = MetricRegistry::from_str_named(METRICS, std::path::Path::new("m.json")).unwrap();
    let spec = AnalysisSpec::from_str_named(
        &spec_json(r#", "sequential": "group_sequential", "planned_units": 10"#)
            .replace("\"primary\": \"conversion\"", "\"primary\": \"revenue\"")
            .replace(
                "\"revenue\", \"order_value\"",
                "\"conversion\", \"order_value\"",
            ),
        std::path::Path::new("s.json"),
    )
    .unwrap()
    .validate("s.json", &registry)
    .unwrap();
    let inputs = DataSource {
        exposures: f.path("exposures.ndjson").display().to_string(),
        events: f.path("events.ndjson").display().to_string(),
    };
    let looks: Vec<_> = ["2026-01-11T06:00:00Z", "2026-01-13T00:00:00Z"]
        .iter()
        .map(|t| strata_analysis::spec::parse_time(t).unwrap())
        .collect();
    let results = rt().block_on(async {
        let a = Analyzer::new(spec, &registry, &inputs, EngineOptions::default())
            .await
            .unwrap();
        a.run_looks(&looks).await.unwrap()
    });
    assert_eq!(results.len(), 2);
    // Look 1: u1, u2, u3, u4 exposed → (2 + 2) / (2·5); look 2: + u5 → 5/10.
    let fr = |i: usize| {
        let e = &metric(&results[i], "revenue").effects[0];
        e.sequential.as_ref().unwrap().information_fraction
    };
    assert_eq!(fr(0), Some(0.4));
    assert_eq!(fr(1), Some(0.5));
    assert_eq!(results[1].as_of, "2026-01-13T00:00:00Z");
}
