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
    RollupStore, SharedLook,
};
use strata_pipeline::parquet::{write_records, WriteOptions};
use strata_pipeline::record::Record;
use strata_sim::dataset::{unit_records, write_parquet, DatasetConfig};

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

/// The records of a simulated data set, in the pipeline's layout, in two
/// batches: what arrived before a first refresh, and what arrived after —
/// later events, events of one old day sent late, copies of events of the
/// first batch, exposures of units whose earlier events are in the first
/// batch, flagged bots' events, opt-outs, and bursts the bot detection
/// finds.
fn batches(cfg: &DatasetConfig, first_until: i64) -> (Vec<Record>, Vec<Record>) {
    let late_day = cfg.start_us + 2 * DAY_US;
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for i in 0..cfg.units {
        let mut records = unit_records(cfg, i);
        if i % 40 == 0 {
            // A burst of 40 page views in one minute: over the limit.
            let unit = records[0].unit_id().to_owned();
            let t = cfg.start_us + 3 * DAY_US + i64::from(i) * 1_000;
            records.extend((0..40).map(|k| {
                event(
                    &unit,
                    format!("{unit}-burst-{k}"),
                    "page_view",
                    t + k * 1_000_000,
                )
            }));
        }
        for (k, mut r) in records.into_iter().enumerate() {
            if let Record::Event(e) = &mut r {
                e.is_bot = k % 97 == 5;
                e.opted_out = i % 29 == 3 && k == 4;
            }
            let ts = r.ts();
            let late = i % 7 == 0 && ts >= late_day && ts < late_day + DAY_US;
            let exposed_late = i % 11 == 0 && matches!(r, Record::Exposure(_));
            if ts >= first_until || late || exposed_late {
                second.push(r);
            } else {
                if i % 13 == 0 && matches!(r, Record::Event(_)) && ts / DAY_US % 3 == 0 {
                    // A copy, sent again after the first refresh (on
                    // some days only, so that others are kept).
                    second.push(r.clone());
                }
                first.push(r);
            }
        }
    }
    (first, second)
}

const DAY_US: i64 = 86_400_000_000;

fn event(unit: &str, id: String, kind: &str, ts: i64) -> Record {
    Record::Event(strata_pipeline::record::Event {
        event_id: id,
        unit_id: unit.into(),
        event_type: kind.into(),
        ts,
        received_at: ts + 1_000_000,
        value: None,
        properties: std::collections::BTreeMap::new(),
        is_bot: false,
        opted_out: false,
    })
}

/// A rollup kept between refreshes recomputes only the days whose files
/// or cut points changed, and equals one recomputed in full from the same
/// data — late events, duplicates across batches, bots and opt-outs
/// included; a full recomputation finds every kept day equal; and the
/// looks analysed from it equal the looks analysed alone.
#[test]
fn a_kept_rollup_equals_a_full_recomputation() {
    let cfg = DatasetConfig {
        duplicate_rate: 0.02,
        ..dataset(1_200, 3.0, 0.2, 21)
    };
    let f = Fixture::new();
    let root = f.path("pipeline");
    let first_until = cfg.start_us + 6 * DAY_US;
    let (first, second) = batches(&cfg, first_until);
    let write = |records: &[Record], stem: &str| {
        let opts = WriteOptions {
            partitions: 4,
            ..WriteOptions::new(stem)
        };
        write_records(&root, records, &opts).unwrap();
    };
    write(&first, "seg-1-1");
    let metrics = r#"{"metrics": [
      {"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}},
      {"key": "revenue", "type": "sum", "filter": {"type": "purchase"}},
      {"key": "aov", "type": "ratio", "numerator": {"type": "sum", "filter": {"type": "purchase"}},
                                      "denominator": {"type": "count", "filter": {"type": "purchase"}}},
      {"key": "load_p50", "type": "quantile", "quantile": 0.5, "filter": {"type": "page_load"}}
     ],
     "bot_detection": {"per_minute": 30, "per_day": 500}}"#;
    let registry = MetricRegistry::from_str_named(metrics, Path::new("metrics.json")).unwrap();
    let spec = |extra: &str| {
        let json = format!(
            r#"{{"key": "exp", "control": "control",
            "variants": [{{"key": "control", "weight": 1}}, {{"key": "treatment", "weight": 1}}],
            "start": "2026-01-01T00:00:00Z", "end": "2026-01-15T00:00:00Z",
            "primary": "conversion", "secondary": ["revenue", "aov"],
            "guardrails": ["load_p50"]{extra}}}"#
        );
        AnalysisSpec::from_str_named(&json, Path::new("spec.json"))
            .unwrap()
            .validate("spec.json", &registry)
            .unwrap()
    };
    let specs = [
        spec(r#", "cuped": {"pre_period_days": 7}"#),
        spec(r#", "analysis": "per_protocol", "clock_skew_seconds": 30"#),
    ];
    let at = |us: i64| chrono::DateTime::from_timestamp_micros(us).unwrap();
    let looks = |t: i64| -> Vec<_> { specs.iter().map(|s| (s.clone(), Some(at(t)))).collect() };
    let data = DataSource {
        exposures: root.display().to_string(),
        events: root.display().to_string(),
        aliases: None,
    };
    let options = EngineOptions::default();
    let kept = RollupStore::new(f.path("kept"));
    rt().block_on(async {
        let (_, r) = kept
            .refresh(&looks(first_until), &registry, &data, &options, false)
            .await
            .unwrap();
        assert!(r.full && r.recomputed == r.days, "{r:?}");
        // Nothing changed: nothing recomputed.
        let (_, r) = kept
            .refresh(&looks(first_until), &registry, &data, &options, false)
            .await
            .unwrap();
        assert_eq!((r.recomputed, r.full), (0, false), "{r:?}");

        write(&second, "seg-2-2");
        let now = cfg.start_us + 14 * DAY_US;
        let (incremental, r) = kept
            .refresh(&looks(now), &registry, &data, &options, false)
            .await
            .unwrap();
        assert!(
            !r.full && r.recomputed > 0 && r.recomputed < r.days,
            "{r:?}"
        );
        let (full, r) = RollupStore::new(f.path("full"))
            .refresh(&looks(now), &registry, &data, &options, true)
            .await
            .unwrap();
        assert!(r.full && r.mismatched.is_empty(), "{r:?}");
        assert!(incremental.rows() > 0);
        assert!(incremental.same_rows_as(&full).unwrap());
        // A full recomputation of the kept store finds every kept day equal.
        let (_, r) = kept
            .refresh(&looks(now), &registry, &data, &options, true)
            .await
            .unwrap();
        assert!(r.full && r.mismatched.is_empty(), "{r:?}");
        // The looks from the kept rollup are the looks alone.
        for (spec, as_of) in looks(now) {
            let alone = Analyzer::new(spec.clone(), &registry, &data, options.clone())
                .await
                .unwrap()
                .run(as_of)
                .await
                .unwrap();
            let shared =
                Analyzer::with_rollup(spec, &registry, &data, options.clone(), &incremental)
                    .await
                    .unwrap()
                    .run(as_of)
                    .await
                    .unwrap();
            let excluded = alone
                .bot_exclusion
                .as_ref()
                .unwrap()
                .excluded
                .values()
                .sum::<u64>();
            assert!(excluded > 0, "the bursts are found");
            assert_same(
                &serde_json::to_value(&alone).unwrap(),
                &serde_json::to_value(&shared).unwrap(),
                "kept rollup",
            );
        }
    });
}

/// A kept day whose rows no longer match its inputs (here: its file
/// replaced by another day's) is found by the full recomputation.
#[test]
fn a_full_recomputation_finds_a_kept_day_that_is_wrong() {
    let cfg = dataset(300, 2.0, 0.0, 4);
    let f = Fixture::new();
    let root = f.path("pipeline");
    let (first, second) = batches(&cfg, i64::MAX);
    assert!(!second.is_empty());
    let opts = WriteOptions {
        partitions: 2,
        ..WriteOptions::new("seg-1-1")
    };
    write_records(&root, &[first, second].concat(), &opts).unwrap();
    let registry = MetricRegistry::from_str_named(METRICS, Path::new("metrics.json")).unwrap();
    let spec = AnalysisSpec::from_str_named(
        &spec_json("").replace("2026-01-10", "2026-01-01"),
        Path::new("spec.json"),
    )
    .unwrap()
    .validate("spec.json", &registry)
    .unwrap();
    let data = DataSource {
        exposures: root.display().to_string(),
        events: root.display().to_string(),
        aliases: None,
    };
    let store = RollupStore::new(f.path("kept"));
    let options = EngineOptions::default();
    rt().block_on(async {
        let looks = [(spec, None)];
        store
            .refresh(&looks, &registry, &data, &options, false)
            .await
            .unwrap();
        // Swap two days' files.
        let mut days: Vec<_> = std::fs::read_dir(f.path("kept"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("day-"))
            .collect();
        days.sort();
        let (a, b) = (&days[2], &days[3]);
        let tmp = f.path("swap");
        std::fs::rename(a, &tmp).unwrap();
        std::fs::rename(b, a).unwrap();
        std::fs::rename(&tmp, b).unwrap();
        let (_, r) = store
            .refresh(&looks, &registry, &data, &options, true)
            .await
            .unwrap();
        assert_eq!(r.mismatched.len(), 2, "{r:?}");
    });
}
