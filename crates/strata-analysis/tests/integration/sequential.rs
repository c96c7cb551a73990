//! `--looks`, and looks taken one at a time (`run_after`, as the scheduled
//! analysis does): group-sequential boundaries use every previous
//! information fraction.

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
        aliases: None,
    };
    let looks: Vec<_> = ["2026-01-11T06:00:00Z", "2026-01-13T00:00:00Z"]
        .iter()
        .map(|t| strata_analysis::spec::parse_time(t).unwrap())
        .collect();
    let (results, one_at_a_time) = rt().block_on(async {
        let a = Analyzer::new(spec, &registry, &inputs, EngineOptions::default())
            .await
            .unwrap();
        let together = a.run_looks(&looks).await.unwrap();
        // The second look taken on its own, told the fractions the first
        // one stored: the same document.
        let first = a.run(Some(looks[0])).await.unwrap();
        let s = metric(&first, "revenue").effects[0]
            .sequential
            .clone()
            .unwrap();
        let mut previous = s.previous_fractions.clone();
        previous.extend(s.information_fraction);
        let second = a.run_after(Some(looks[1]), &previous).await.unwrap();
        // Fractions not below the look's own are left out, not an error.
        let repeated = a
            .run_after(Some(looks[1]), &[0.4, 0.4, 0.5, 0.9])
            .await
            .unwrap();
        assert_eq!(repeated, second);
        (together, [first, second])
    });
    assert_eq!(one_at_a_time[0], results[0]);
    assert_eq!(one_at_a_time[1], results[1]);
    assert_eq!(results.len(), 2);
    // Look 1: u1, u2, u3, u4 exposed → (2 + 2) / (2·5); look 2: + u5 → 5/10.
    let fr = |i: usize| {
        let e = &metric(&results[i], "revenue").effects[0];
        e.sequential.as_ref().unwrap().information_fraction
    };
    assert_eq!(fr(0), Some(0.4));
    assert_eq!(fr(1), Some(0.5));
    let s = metric(&results[1], "revenue").effects[0]
        .sequential
        .clone()
        .unwrap();
    assert_eq!(s.previous_fractions, [0.4]);
    let s = metric(&results[0], "revenue").effects[0]
        .sequential
        .clone()
        .unwrap();
    assert!(s.previous_fractions.is_empty());
    assert_eq!(results[1].as_of, "2026-01-13T00:00:00Z");
}
