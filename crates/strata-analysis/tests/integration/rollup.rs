//! Shared rollups (`strata_analysis::rollup`): the looks of several
//! experiments analysed from one pass over the events give the same results
//! documents as each analysed on its own — windows that start at each
//! unit's exposure, CUPED pre-periods, novelty windows, looks before the
//! end, per-protocol opt-outs, duplicates, quantiles, value and property
//! filters, sliced and whole inputs.

use std::path::Path;

use strata_analysis::spec::parse_time;
use strata_analysis::{
    analyze_shared, AnalysisSpec, Analyzer, DataSource, EngineOptions, MetricRegistry, Rollup,
    SharedLook,
};
use strata_sim::dataset::{write_parquet, DatasetConfig};

use super::common::*;

/// Analyses each `(spec, as_of)` on its own and all of them with one
/// shared rollup, and checks that the outcomes agree, failures included.
/// Returns the rollup's rows and the events' rows for the caller's checks.
fn compare(
    metrics: &str,
    specs: &[(String, Option<&str>)],
    data: &DataSource,
    options: EngineOptions,
) -> usize {
    let registry = MetricRegistry::from_str_named(metrics, Path::new("metrics.json")).unwrap();
    let looks: Vec<SharedLook> = specs
        .iter()
        .map(|(spec, as_of)| SharedLook {
            spec: AnalysisSpec::from_str_named(spec, Path::new("spec.json"))
                .unwrap()
                .validate("spec.json", &registry)
                .unwrap(),
            as_of: as_of.map(|t| parse_time(t).unwrap()),
            previous: Vec::new(),
        })
        .collect();
    rt().block_on(async {
        let shared = analyze_shared(&looks, &registry, data, options.clone())
            .await
            .unwrap();
        assert_eq!(shared.len(), looks.len());
        for (i, (look, shared)) in looks.iter().zip(shared).enumerate() {
            let alone =
                match Analyzer::new(look.spec.clone(), &registry, data, options.clone()).await {
                    Ok(a) => a.run(look.as_of).await,
                    Err(e) => Err(e),
                };
            match (alone, shared) {
                (Ok(a), Ok(s)) => assert_same(
                    &serde_json::to_value(&a).unwrap(),
                    &serde_json::to_value(&s).unwrap(),
                    &format!("look {i} ({})", look.spec.spec.key),
                ),
                (Err(a), Err(s)) => assert_eq!(a.to_string(), s.to_string(), "look {i}"),
                (a, s) => panic!("look {i}: alone {a:?}, shared {s:?}"),
            }
        }
        let specs: Vec<_> = looks.iter().map(|l| (l.spec.clone(), l.as_of)).collect();
        Rollup::build(&specs, &registry, data, &options)
            .await
            .unwrap()
            .rows()
    })
}

fn source(exposures: &Path, events: &Path) -> DataSource {
    DataSource {
        exposures: exposures.display().to_string(),
        events: events.display().to_string(),
        aliases: None,
    }
}

/// The hand-made fixture: every metric type, filters on values and
/// properties, a quantile, winsorizing; looks that differ in period, CUPED,
/// clock skew, analysis mode and look time; and an experiment with no
/// exposures, which fails alone and shared alike without failing the others.
#[test]
fn shared_looks_equal_looks_alone_on_the_fixture() {
    let f = Fixture::new();
    let data = source(&f.path("exposures.ndjson"), &f.path("events.ndjson"));
    let specs = vec![
        (
            spec_json(r#", "cuped": {"pre_period_days": 7}, "segments": ["country"]"#),
            None,
        ),
        (
            spec_json(r#", "analysis": "per_protocol", "novelty_days": 2"#),
            Some("2026-01-13T12:00:00Z"),
        ),
        (
            spec_json(r#", "clock_skew_seconds": 60, "cuped": {"pre_period_days": 3}"#)
                .replace("2026-01-10T00:00:00Z", "2026-01-10T06:30:00Z"),
            None,
        ),
        (
            spec_json(r#", "exposures_since_start": true"#)
                .replace("2026-01-10T00:00:00Z", "2026-01-11T00:00:00Z"),
            Some("2026-01-30T00:00:00Z"),
        ),
        (
            spec_json("").replace(r#""key": "exp""#, r#""key": "missing""#),
            None,
        ),
    ];
    let rows = compare(METRICS, &specs, &data, EngineOptions::default());
    assert!(rows > 0);
    compare(
        METRICS,
        &specs,
        &data,
        EngineOptions {
            assume_unique_event_ids: true,
            ..EngineOptions::default()
        },
    );
}

/// A simulated data set with 5 % of events sent twice, read slice by slice
/// and whole, deduplicating and not: looks at three times and with three
/// periods share one rollup, a fraction of the events' size.
#[test]
fn shared_looks_equal_looks_alone_on_simulated_data() {
    let cfg = DatasetConfig {
        duplicate_rate: 0.05,
        ..dataset(3_000, 3.0, 0.2, 5)
    };
    let f = Fixture::new();
    let counts = write_parquet(&cfg, &f.path("gen"), 4).unwrap();
    let spec = |start: &str, end: &str, extra: &str| {
        format!(
            r#"{{"key": "exp", "control": "control",
            "variants": [{{"key": "control", "weight": 1}}, {{"key": "treatment", "weight": 1}}],
            "start": "{start}", "end": "{end}",
            "primary": "conversion", "secondary": ["purchases", "revenue", "aov", "order_value"],
            "guardrails": ["load_p50"]{extra}}}"#
        )
    };
    let specs = vec![
        (
            spec(
                "2026-01-01T00:00:00Z",
                "2026-01-15T00:00:00Z",
                r#", "cuped": {"pre_period_days": 7}"#,
            ),
            Some("2026-01-04T09:15:00Z"),
        ),
        (
            spec(
                "2026-01-01T00:00:00Z",
                "2026-01-15T00:00:00Z",
                r#", "cuped": {"pre_period_days": 7}"#,
            ),
            Some("2026-01-08T00:00:00Z"),
        ),
        (
            spec("2026-01-01T00:00:00Z", "2026-01-15T00:00:00Z", ""),
            None,
        ),
        (
            spec(
                "2026-01-03T12:00:00Z",
                "2026-01-12T00:00:00Z",
                r#", "clock_skew_seconds": 30, "novelty_days": 3"#,
            ),
            None,
        ),
    ];
    let exposures = f.path("gen/exposures");
    for (events, unique) in [
        (f.path("gen/events"), false),
        (f.path("gen/events"), true),
        (f.path("gen/events/**/*.parquet"), false),
    ] {
        let data = source(&exposures, &events);
        let options = EngineOptions {
            assume_unique_event_ids: unique,
            ..EngineOptions::default()
        };
        let rows = compare(METRICS, &specs, &data, options);
        assert!(
            rows > 0 && rows * 2 < counts.events as usize,
            "{rows} rollup rows for {} events",
            counts.events
        );
    }
}

/// A look the rollup was not built for is refused, not answered from the
/// wrong segments.
#[test]
fn a_look_the_rollup_was_not_built_for_is_refused() {
    let f = Fixture::new();
    let data = source(&f.path("exposures.ndjson"), &f.path("events.ndjson"));
    let registry = MetricRegistry::from_str_named(METRICS, Path::new("metrics.json")).unwrap();
    let spec = AnalysisSpec::from_str_named(&spec_json(""), Path::new("spec.json"))
        .unwrap()
        .validate("spec.json", &registry)
        .unwrap();
    let as_of = parse_time("2026-01-13T00:00:00Z").unwrap();
    rt().block_on(async {
        let options = EngineOptions::default();
        let rollup = Rollup::build(&[(spec.clone(), Some(as_of))], &registry, &data, &options)
            .await
            .unwrap();
        assert!(rollup.covers("exp") && !rollup.covers("other"));
        let a = Analyzer::with_rollup(spec.clone(), &registry, &data, options.clone(), &rollup)
            .await
            .unwrap();
        assert!(a.run(Some(as_of)).await.is_ok());
        let err = a.run(None).await.unwrap_err().to_string();
        assert!(err.contains("not built for this look"), "{err}");
        let other = AnalysisSpec::from_str_named(
            &spec_json("").replace(r#""key": "exp""#, r#""key": "other""#),
            Path::new("spec.json"),
        )
        .unwrap()
        .validate("spec.json", &registry)
        .unwrap();
        let err = Analyzer::with_rollup(other, &registry, &data, options, &rollup)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not built for experiment `other`"), "{err}");
    });
}
