//! The guardrail monitor's data (`strata_analysis::monitor`) on hand-made
//! Parquet in the pipeline's layout (`date=…/part=…` directories, the
//! pipeline's records and schema), against values computed by hand from the
//! rows.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use strata_analysis::monitor::{
    monitor, monitor_incremental, monitor_many, partition_freshness, MonitorData, MonitorSpec,
    MonitorState, PartitionFreshness, VariantStats, WindowedMetric,
};
use strata_analysis::{DataSource, MetricRegistry};
use strata_pipeline::parquet::{FileWriter, DEFAULT_ROW_GROUP_ROWS};
use strata_pipeline::record::{Event, Exposure, Kind, Record};

use super::common::*;

/// 2026-01-10T00:00:00Z, the experiment's start, in µs.
const T0_US: i64 = 1_768_003_200_000_000;

/// `T0 + minutes + seconds`, in µs.
fn at(minutes: i64, seconds: i64) -> i64 {
    T0_US + minutes * 60_000_000 + seconds * 1_000_000
}

fn time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap()
}

struct X {
    unit: &'static str,
    experiment: &'static str,
    variant: &'static str,
    ts: i64,
    bot: bool,
    part: &'static str,
}

fn x(unit: &'static str, variant: &'static str, minutes: i64, part: &'static str) -> X {
    X {
        unit,
        experiment: "exp",
        variant,
        ts: at(minutes, 0),
        bot: false,
        part,
    }
}

struct E {
    id: &'static str,
    unit: &'static str,
    kind: &'static str,
    ts: i64,
    value: Option<f64>,
    bot: bool,
    part: &'static str,
    file: &'static str,
}

fn e(
    id: &'static str,
    unit: &'static str,
    kind: &'static str,
    ts: i64,
    value: Option<f64>,
    part: &'static str,
) -> E {
    E {
        id,
        unit,
        kind,
        ts,
        value,
        bot: false,
        part,
        file: "a",
    }
}

/// `received_at − ts` of every hand-made record.
const RECEIVED_AFTER_US: i64 = 250_000;

/// Writes `records` (all of one kind) as one Parquet file with the
/// pipeline's writer.
fn write(path: &Path, kind: Kind, records: &[Record]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let views: Vec<_> = records.iter().map(Record::view).collect();
    let refs: Vec<_> = views.iter().collect();
    let mut w = FileWriter::create(path, kind, DEFAULT_ROW_GROUP_ROWS).unwrap();
    w.write_records(&refs).unwrap();
    w.finish().unwrap();
}

fn event(id: &str, unit: &str, kind: &str, ts: i64, value: Option<f64>, bot: bool) -> Record {
    Record::Event(Event {
        event_id: id.into(),
        unit_id: unit.into(),
        event_type: kind.into(),
        ts,
        received_at: ts + RECEIVED_AFTER_US,
        value,
        properties: BTreeMap::new(),
        is_bot: bot,
        opted_out: false,
    })
}

fn date_of(us: i64) -> String {
    time(us).format("%Y-%m-%d").to_string()
}

/// Writes exposures as the pipeline lays them out:
/// `dir/date=YYYY-MM-DD/part=NN/data.parquet`, the date of each row's `ts`.
fn write_exposures(dir: &Path, rows: &[X]) {
    let mut files: BTreeMap<(String, &str), Vec<&X>> = BTreeMap::new();
    for r in rows {
        files.entry((date_of(r.ts), r.part)).or_default().push(r);
    }
    for ((date, part), rows) in files {
        let exposures: Vec<Record> = rows
            .iter()
            .map(|r| {
                Record::Exposure(Exposure {
                    unit_id: r.unit.into(),
                    experiment: r.experiment.into(),
                    variant: r.variant.into(),
                    assigned_variant: r.variant.into(),
                    opted_out: false,
                    ts: r.ts,
                    received_at: r.ts + RECEIVED_AFTER_US,
                    attributes: BTreeMap::from([("country".into(), "US".into())]),
                    is_bot: r.bot,
                })
            })
            .collect();
        write(
            &dir.join(format!("date={date}/part={part}/data.parquet")),
            Kind::Exposure,
            &exposures,
        );
    }
}

/// Writes events as the pipeline lays them out:
/// `dir/date=YYYY-MM-DD/part=NN/{file}.parquet`.
fn write_events(dir: &Path, rows: &[E]) {
    let mut files: BTreeMap<(String, &str, &str), Vec<&E>> = BTreeMap::new();
    for r in rows {
        files
            .entry((date_of(r.ts), r.part, r.file))
            .or_default()
            .push(r);
    }
    for ((date, part, file), rows) in files {
        let events: Vec<Record> = rows
            .iter()
            .map(|r| event(r.id, r.unit, r.kind, r.ts, r.value, r.bot))
            .collect();
        write(
            &dir.join(format!("date={date}/part={part}/{file}.parquet")),
            Kind::Event,
            &events,
        );
    }
}

/// Units and first exposures (minutes after the start; the cutoff is at 600):
///
/// | unit | variant | first | notes |
/// | --- | --- | --- | --- |
/// | c1 | control | 60 | a later exposure to treatment |
/// | c2 | control | 120 | |
/// | c3 | control | 180 | |
/// | c4 | control | 570 | 30 minutes before the cutoff: immature for 60 |
/// | y1 | control | 120 | exposed to both at once: the smaller key |
/// | t1 | treatment | 60 | |
/// | t2 | treatment | 240 | an exposure to control before the start |
/// | t3 | treatment | 300 | no events |
/// | x1 | treatment | 360 | an earlier exposure to a variant not in the spec |
/// | t6 | treatment | 510 | mature for 60, not for 120 |
///
/// Not units: t4 (first exposed at the cutoff), b1 (a bot's exposure),
/// o1 (another experiment).
fn exposures() -> Vec<X> {
    vec![
        x("c1", "control", 60, "00"),
        x("c1", "treatment", 120, "00"),
        x("c2", "control", 120, "00"),
        // Exposed again, checks later: still one unit, first exposed at 120.
        x("c2", "control", 300, "00"),
        x("t1", "treatment", 400, "00"),
        x("c3", "control", 180, "01"),
        x("c4", "control", 570, "01"),
        x("y1", "treatment", 120, "00"),
        x("y1", "control", 120, "00"),
        x("t1", "treatment", 60, "00"),
        x("t2", "control", -60, "01"),
        x("t2", "treatment", 240, "01"),
        x("t3", "treatment", 300, "01"),
        x("x1", "ghost", 60, "01"),
        x("x1", "treatment", 360, "01"),
        x("t6", "treatment", 510, "01"),
        x("t4", "treatment", 600, "01"),
        x("t4", "treatment", 610, "01"),
        X {
            bot: true,
            ..x("b1", "control", 60, "00")
        },
        X {
            experiment: "other",
            ..x("o1", "control", 60, "01")
        },
    ]
}

fn events() -> Vec<E> {
    let p = |v: f64| Some(v);
    vec![
        // c1, first exposed at 60.
        e("c1-1", "c1", "purchase", at(70, 0), p(10.0), "00"),
        // The same event again, in another file (a recovery's copy).
        E {
            file: "b",
            ..e("c1-1", "c1", "purchase", at(70, 0), p(10.0), "00")
        },
        e("c1-2", "c1", "purchase", at(90, 0), p(5.0), "00"),
        // 70 minutes after exposure: outside a 60-minute window.
        e("c1-3", "c1", "purchase", at(130, 0), p(100.0), "00"),
        // 3 s before exposure (within the 5 s skew), and 10 s before (not).
        e("c1-4", "c1", "page_view", at(59, 57), None, "00"),
        e("c1-5", "c1", "page_view", at(59, 50), None, "00"),
        e("c1-6", "c1", "page_view", at(80, 0), None, "00"),
        // After the cutoff.
        e("c1-7", "c1", "page_view", at(605, 0), None, "00"),
        // c2, at 120.
        e("c2-1", "c2", "page_view", at(125, 0), None, "00"),
        e("c2-2", "c2", "error", at(121, 0), None, "00"),
        // c3, at 180: a purchase without a value, one a second before its
        // window ends.
        e("c3-1", "c3", "purchase", at(185, 0), None, "01"),
        e("c3-2", "c3", "purchase", at(239, 59), p(7.0), "01"),
        // c4, at 570 (immature).
        e("c4-1", "c4", "purchase", at(580, 0), p(3.0), "01"),
        // y1, at 120.
        e("y1-1", "y1", "purchase", at(150, 0), p(2.0), "00"),
        // t1, at 60: a bot's purchase.
        e("t1-1", "t1", "purchase", at(75, 0), p(20.0), "00"),
        E {
            bot: true,
            ..e("t1-2", "t1", "purchase", at(76, 0), p(1000.0), "00")
        },
        e("t1-3", "t1", "page_view", at(61, 0), None, "00"),
        e("t1-4", "t1", "page_view", at(62, 0), None, "00"),
        // t2, at 240: a page view long before its exposure.
        e("t2-1", "t2", "purchase", at(241, 0), p(4.0), "01"),
        e("t2-2", "t2", "purchase", at(242, 0), p(6.0), "01"),
        e("t2-3", "t2", "page_view", at(-30, 0), None, "01"),
        // x1, at 360: a purchase 61 minutes after exposure.
        e("x1-1", "x1", "purchase", at(421, 0), p(8.0), "01"),
        e("x1-2", "x1", "page_view", at(370, 0), None, "01"),
        // t6, at 510.
        e("t6-1", "t6", "purchase", at(530, 0), p(9.0), "01"),
        e("t6-2", "t6", "page_view", at(515, 0), None, "01"),
        // Not units.
        e("b1-1", "b1", "purchase", at(70, 0), p(50.0), "00"),
        e("t4-1", "t4", "purchase", at(601, 0), p(1.0), "01"),
        e("o1-1", "o1", "purchase", at(65, 0), p(30.0), "01"),
    ]
}

const REGISTRY: &str = r#"{"metrics": [
  {"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}},
  {"key": "purchases", "type": "count", "filter": {"type": "purchase"}},
  {"key": "revenue", "type": "sum", "filter": {"type": "purchase"}},
  {"key": "order_value", "type": "mean", "filter": {"type": "purchase"}},
  {"key": "errors", "type": "count", "filter": {"type": "error"}},
  {"key": "big_purchases", "type": "count", "filter": {"type": "purchase", "value": {"gt": 6}}},
  {"key": "revenue_w", "type": "sum", "filter": {"type": "purchase"}, "winsorize": 0.75},
  {"key": "revenue_per_view", "type": "ratio",
   "numerator": {"type": "sum", "filter": {"type": "purchase"}},
   "denominator": {"type": "count", "filter": {"type": "page_view"}}},
  {"key": "load_p50", "type": "quantile", "quantile": 0.5, "filter": {"type": "page_load"}}
]}"#;

fn registry() -> MetricRegistry {
    MetricRegistry::from_str_named(REGISTRY, Path::new("metrics.json")).unwrap()
}

struct Data {
    _dir: tempfile::TempDir,
    source: DataSource,
}

fn data() -> Data {
    let dir = tempfile::tempdir().unwrap();
    write_exposures(&dir.path().join("exposures"), &exposures());
    write_events(&dir.path().join("events"), &events());
    let source = DataSource {
        exposures: dir.path().join("exposures").display().to_string(),
        events: dir.path().join("events").display().to_string(),
        aliases: None,
    };
    Data { _dir: dir, source }
}

fn spec(cutoff_minutes: i64, metrics: &[(&str, u32)]) -> MonitorSpec {
    MonitorSpec {
        experiment: "exp".into(),
        variants: vec!["control".into(), "treatment".into(), "treatment_b".into()],
        start: time(T0_US),
        cutoff: time(at(cutoff_minutes, 0)),
        metrics: metrics
            .iter()
            .map(|&(metric, window_minutes)| WindowedMetric {
                metric: metric.into(),
                window_minutes,
            })
            .collect(),
        clock_skew_seconds: 5.0,
    }
}

fn run(data: &Data, spec: &MonitorSpec) -> strata_analysis::Result<MonitorData> {
    rt().block_on(monitor(&data.source, &registry(), spec))
}

/// One check continuing from `state`, within `limit` bytes.
fn incremental(
    data: &Data,
    specs: &[MonitorSpec],
    state: &mut MonitorState,
    limit: Option<usize>,
) -> strata_analysis::Result<Vec<strata_analysis::Result<MonitorData>>> {
    rt().block_on(monitor_incremental(
        &data.source,
        &registry(),
        specs,
        state,
        limit,
    ))
}

/// Equal within a relative 1e-9 (exactly, for 0).
fn rel_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs()
}

/// Mean and sample variance (n − 1), by the textbook formulas.
fn mean_var(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, v)
}

/// `Σnum / Σden` and the delta method's per-unit variance
/// `(s²_num − 2r·s_num,den + r²·s²_den) / mean_den²`.
fn ratio_mean_var(num: &[f64], den: &[f64]) -> (f64, f64) {
    let n = num.len() as f64;
    let (mn, md) = (num.iter().sum::<f64>() / n, den.iter().sum::<f64>() / n);
    let r = num.iter().sum::<f64>() / den.iter().sum::<f64>();
    let vn = num.iter().map(|a| (a - mn) * (a - mn)).sum::<f64>() / (n - 1.0);
    let vd = den.iter().map(|b| (b - md) * (b - md)).sum::<f64>() / (n - 1.0);
    let c = num
        .iter()
        .zip(den)
        .map(|(a, b)| (a - mn) * (b - md))
        .sum::<f64>()
        / (n - 1.0);
    (r, (vn - 2.0 * r * c + r * r * vd) / (md * md))
}

fn assert_stats(got: &VariantStats, variant: &str, n: u64, (mean, variance): (f64, f64)) {
    assert_eq!(got.variant, variant);
    assert_eq!(got.n, n, "{got:?}");
    assert!(rel_close(got.mean, mean), "{got:?}: mean, expected {mean}");
    assert!(
        rel_close(got.variance, variance),
        "{got:?}: variance, expected {variance}"
    );
}

const ALL: [(&str, u32); 8] = [
    ("conversion", 60),
    ("purchases", 60),
    ("revenue", 60),
    ("order_value", 60),
    ("errors", 60),
    ("big_purchases", 60),
    ("revenue_w", 60),
    ("revenue_per_view", 120),
];

#[test]
fn statistics_of_mature_units_in_their_windows() {
    let d = data();
    let r = run(&d, &spec(600, &ALL)).unwrap();

    // Volume: c1, c2, c3, c4 and y1 in control, t1, t2, t3, x1 and t6 in
    // treatment (not b1, a bot, t4, exposed at the cutoff, o1, another
    // experiment). Events within [first exposure − 5 s, cutoff),
    // deduplicated, bots left out: c1 5 (c1-1 once, c1-2, c1-3, c1-4, c1-6),
    // c2 2, c3 2, c4 1, y1 1; t1 3, t2 2, t3 0, x1 2, t6 2.
    let volume: Vec<(&str, u64, u64)> = r
        .variants
        .iter()
        .map(|v| (v.variant.as_str(), v.exposed, v.events))
        .collect();
    assert_eq!(
        volume,
        [
            ("control", 5, 11),
            ("treatment", 5, 9),
            ("treatment_b", 0, 0)
        ]
    );

    // Per-unit values over the units mature for 60 minutes (first exposure
    // at 540 or before: all but c4), control c1, c2, c3, y1 and treatment
    // t1, t2, t3, x1, t6; c1-3 and x1-1 are past their window.
    let expected: [(&str, &[f64], &[f64]); 7] = [
        (
            "conversion",
            &[1.0, 0.0, 1.0, 1.0],
            &[1.0, 1.0, 0.0, 0.0, 1.0],
        ),
        (
            "purchases",
            &[2.0, 0.0, 2.0, 1.0],
            &[1.0, 2.0, 0.0, 0.0, 1.0],
        ),
        // Zero-filled; c3's purchase without a value adds 0; t1's bot
        // purchase of 1000 does not count.
        (
            "revenue",
            &[15.0, 0.0, 7.0, 2.0],
            &[20.0, 10.0, 0.0, 0.0, 9.0],
        ),
        // Units with a valued purchase only: c1 (10 + 5) / 2, c3 7, y1 2;
        // t1 20, t2 (4 + 6) / 2, t6 9.
        ("order_value", &[7.5, 7.0, 2.0], &[20.0, 5.0, 9.0]),
        ("errors", &[0.0, 1.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0, 0.0]),
        // Value > 6: c1-1, c3-2; t1-1, t6-1.
        (
            "big_purchases",
            &[1.0, 0.0, 1.0, 0.0],
            &[1.0, 0.0, 0.0, 0.0, 1.0],
        ),
        // Revenue capped at its pooled 75th percentile: sorted
        // 0 0 0 2 7 9 10 15 20, position 8 × 0.75 = 6: 10.
        (
            "revenue_w",
            &[10.0, 0.0, 7.0, 2.0],
            &[10.0, 10.0, 0.0, 0.0, 9.0],
        ),
    ];
    assert_eq!(r.metrics.len(), ALL.len());
    for (m, (key, control, treatment)) in r.metrics.iter().zip(expected) {
        assert_eq!(m.metric, key);
        assert_eq!(m.window_minutes, 60);
        assert_eq!(m.variants.len(), 3, "{key}");
        assert_stats(
            &m.variants[0],
            "control",
            control.len() as u64,
            mean_var(control),
        );
        assert_stats(
            &m.variants[1],
            "treatment",
            treatment.len() as u64,
            mean_var(treatment),
        );
        assert_stats(&m.variants[2], "treatment_b", 0, (0.0, 0.0));
        assert!(m.variants[2].sample().is_none());
    }

    // The ratio over 120 minutes: units first exposed at 480 or before (not
    // c4 or t6). Numerator: purchases' values, c1 10 + 5 + 100 (c1-3 is in
    // this window); denominator: page views, c1 2 (c1-4 within the skew,
    // c1-6), t2 0 (its page view is long before its exposure).
    let ratio = &r.metrics[7];
    assert_eq!(
        (ratio.metric.as_str(), ratio.window_minutes),
        ("revenue_per_view", 120)
    );
    assert_stats(
        &ratio.variants[0],
        "control",
        4,
        ratio_mean_var(&[115.0, 0.0, 7.0, 2.0], &[2.0, 1.0, 0.0, 0.0]),
    );
    assert_stats(
        &ratio.variants[1],
        "treatment",
        4,
        ratio_mean_var(&[20.0, 10.0, 0.0, 8.0], &[2.0, 0.0, 0.0, 1.0]),
    );
    let s = ratio.variants[0].sample().unwrap();
    assert_eq!(s.n, 4);
    assert!(rel_close(s.mean, 124.0 / 3.0));
}

#[test]
fn an_earlier_check_sees_fewer_units_with_the_same_values() {
    let d = data();
    let r = run(&d, &spec(180, &[("purchases", 60), ("revenue", 60)])).unwrap();
    // At 180: control c1, c2, y1 (c3's exposure at 180 is not before the
    // cutoff) and treatment t1 (t2's exposure to control came before the
    // start and is ignored; its exposure to treatment comes later).
    // Events before 180: c1 5, c2 2, y1 1; t1 3.
    let volume: Vec<(u64, u64)> = r.variants.iter().map(|v| (v.exposed, v.events)).collect();
    assert_eq!(volume, [(3, 8), (1, 3), (0, 0)]);
    // Mature for 60 minutes (first exposure at 120 or before): all of
    // them, with the values they have at the later check.
    let purchases = &r.metrics[0];
    assert_stats(
        &purchases.variants[0],
        "control",
        3,
        mean_var(&[2.0, 0.0, 1.0]),
    );
    // One unit: its value, no variance, and no sample for strata-stats.
    assert_stats(&purchases.variants[1], "treatment", 1, (1.0, 0.0));
    assert!(purchases.variants[1].sample().is_none());
    assert_stats(
        &r.metrics[1].variants[0],
        "control",
        3,
        mean_var(&[15.0, 0.0, 2.0]),
    );

    // A unit exposed less than a window before the cutoff is left out: at
    // 130 with a 60-minute window, only units exposed by 70 (c1, t1).
    let r = run(&d, &spec(130, &[("purchases", 60)])).unwrap();
    assert_eq!(r.variants[0].exposed, 3);
    let p = &r.metrics[0].variants;
    assert_stats(&p[0], "control", 1, (2.0, 0.0));
    assert_stats(&p[1], "treatment", 1, (1.0, 0.0));
}

#[test]
fn quantile_and_unknown_metrics_are_refused() {
    let d = data();
    let err = run(&d, &spec(600, &[("purchases", 60), ("load_p50", 60)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("quantile metric `load_p50` cannot be a guardrail of the monitor"),
        "{err}"
    );
    assert!(err.contains("metrics[1]"), "{err}");
    let err = run(&d, &spec(600, &[("nope", 60)]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown metric `nope`"), "{err}");
    let err = run(&d, &spec(600, &[("purchases", 0)]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("window_minutes"), "{err}");
}

#[test]
fn an_experiment_without_exposures_has_empty_variants() {
    let d = data();
    let mut s = spec(600, &[("conversion", 60), ("revenue_per_view", 60)]);
    s.experiment = "not_started".into();
    let r = run(&d, &s).unwrap();
    assert!(r.variants.iter().all(|v| v.exposed == 0 && v.events == 0));
    for m in &r.metrics {
        assert_eq!(m.variants.len(), 3);
        assert!(m.variants.iter().all(|v| v.n == 0 && v.sample().is_none()));
    }
}

/// Two answers that are the same up to the order of floating-point sums.
fn assert_same(a: &MonitorData, b: &MonitorData) {
    assert_eq!(a.variants, b.variants);
    assert_eq!(a.metrics.len(), b.metrics.len());
    for (x, y) in a.metrics.iter().zip(&b.metrics) {
        assert_eq!((&x.metric, x.window_minutes), (&y.metric, y.window_minutes));
        for (u, v) in x.variants.iter().zip(&y.variants) {
            assert_eq!((&u.variant, u.n), (&v.variant, v.n), "{}", x.metric);
            let close = |p: f64, q: f64| {
                (p.is_nan() && q.is_nan()) || (p - q).abs() <= 1e-9 * q.abs().max(1.0)
            };
            assert!(
                close(u.mean, v.mean) && close(u.variance, v.variance),
                "{}: {u:?} {v:?}",
                x.metric
            );
        }
    }
}

/// Copies of one event (a recovery's, in other files) count once, merged
/// as the analysis merges them: the earliest time, the largest value and
/// type, even when the copies differ; and whether an event matches a
/// metric's filter is decided on the merged event.
#[test]
fn copies_of_an_event_count_once_as_merged() {
    let dir = tempfile::tempdir().unwrap();
    let exposures = vec![
        x("u1", "control", 60, "00"),
        x("u2", "control", 60, "00"),
        x("u3", "treatment", 60, "01"),
    ];
    let copy = |file: &'static str, e: E| E { file, ..e };
    let events = vec![
        // u1: a purchase of 4 whose copy says it was a refund: merged, a
        // refund (the larger type) of 4, which no metric counts.
        e("a", "u1", "purchase", at(61, 0), Some(4.0), "00"),
        copy("b", e("a", "u1", "refund", at(61, 30), None, "00")),
        // u2: a purchase a second before its window ends, with a copy
        // after it: inside the window, once, of the larger value.
        e("b", "u2", "purchase", at(119, 59), Some(2.0), "00"),
        copy("b", e("b", "u2", "purchase", at(120, 1), Some(3.0), "00")),
        // u2: an error in three files.
        e("c", "u2", "error", at(70, 0), None, "00"),
        copy("b", e("c", "u2", "error", at(70, 0), None, "00")),
        copy("c", e("c", "u2", "error", at(70, 0), None, "00")),
        // u3: the same event id as u1's first event: another unit's.
        e("a", "u3", "purchase", at(65, 0), Some(5.0), "01"),
    ];
    write_exposures(&dir.path().join("exposures"), &exposures);
    write_events(&dir.path().join("events"), &events);
    let d = Data {
        source: DataSource {
            exposures: dir.path().join("exposures").display().to_string(),
            events: dir.path().join("events").display().to_string(),
            aliases: None,
        },
        _dir: dir,
    };
    let got = run(
        &d,
        &spec(
            600,
            &[
                ("purchases", 60),
                ("revenue", 60),
                ("errors", 60),
                ("conversion", 60),
            ],
        ),
    )
    .unwrap();
    let volume: Vec<(u64, u64)> = got.variants.iter().map(|v| (v.exposed, v.events)).collect();
    assert_eq!(volume, [(2, 3), (1, 1), (0, 0)]);
    let m = &got.metrics;
    assert_stats(&m[0].variants[0], "control", 2, mean_var(&[0.0, 1.0]));
    assert_stats(&m[0].variants[1], "treatment", 1, (1.0, 0.0));
    assert_stats(&m[1].variants[0], "control", 2, mean_var(&[0.0, 3.0]));
    assert_stats(&m[1].variants[1], "treatment", 1, (5.0, 0.0));
    assert_stats(&m[2].variants[0], "control", 2, mean_var(&[0.0, 1.0]));
    assert_stats(&m[3].variants[0], "control", 2, mean_var(&[0.0, 1.0]));
}

#[test]
fn many_specs_at_once_answer_as_each_alone() {
    let d = data();
    let mut later = spec(
        600,
        &[("revenue_w", 60), ("revenue_per_view", 30), ("errors", 60)],
    );
    later.start = time(at(100, 0));
    later.clock_skew_seconds = 0.0;
    let mut other = spec(600, &[("revenue", 60), ("conversion", 60)]);
    other.experiment = "other".into();
    other.variants = vec!["control".into()];
    let mut two = spec(600, &[("conversion", 60)]);
    two.variants = vec!["treatment".into(), "control".into()];
    let specs = vec![
        spec(600, &ALL),
        // An earlier cutoff: fewer mature units, its own winsorizing cap.
        spec(400, &[("revenue_w", 60), ("conversion", 60)]),
        spec(600, &[("load_p50", 60)]),
        later,
        other,
        two,
        spec(600, &ALL),
    ];
    let all = rt()
        .block_on(monitor_many(&d.source, &registry(), &specs))
        .unwrap();
    assert_eq!(all.len(), specs.len());
    for (s, got) in specs.iter().zip(&all) {
        match (got, run(&d, s)) {
            (Ok(got), Ok(alone)) => assert_same(got, &alone),
            (Err(got), Err(alone)) => assert_eq!(got.to_string(), alone.to_string()),
            (got, alone) => panic!("{got:?} against {alone:?}"),
        }
    }
    assert!(all[2].is_err());
    // The experiments really differ: another experiment's units are not
    // this one's, and an earlier cutoff sees fewer units.
    let (full, early) = (all[0].as_ref().unwrap(), all[1].as_ref().unwrap());
    assert!(early.variants[0].exposed < full.variants[0].exposed);
    assert_eq!(all[4].as_ref().unwrap().variants[0].exposed, 1);
    // With no spec, nothing is read.
    assert!(rt()
        .block_on(monitor_many(&d.source, &registry(), &[]))
        .unwrap()
        .is_empty());
}

/// The same metrics, the same units and the same statistics up to the
/// order of floating-point sums.
fn assert_metrics_close(got: &MonitorData, want: &MonitorData, at: &str) {
    assert_eq!(got.metrics.len(), want.metrics.len());
    for (g, w) in got.metrics.iter().zip(&want.metrics) {
        assert_eq!((&g.metric, g.window_minutes), (&w.metric, w.window_minutes));
        for (u, v) in g.variants.iter().zip(&w.variants) {
            let close = |p: f64, q: f64| {
                (p.is_nan() && q.is_nan()) || (p - q).abs() <= 1e-9 * q.abs().max(1.0)
            };
            assert!(
                u.n == v.n && close(u.mean, v.mean) && close(u.variance, v.variance),
                "{at}, {}: {u:?} against {v:?}",
                g.metric
            );
        }
    }
}

/// Checks every few minutes, each continuing from the last one's folds,
/// give what one check from the start gives, while reading only recent
/// events; a change of the experiment's start restarts its folds.
#[test]
fn checks_continuing_from_their_folds_equal_one_from_the_start() {
    let d = data();
    let metrics = [
        ("conversion", 60),
        ("revenue", 60),
        ("order_value", 60),
        ("errors", 60),
        ("revenue_per_view", 120),
        ("big_purchases", 30),
    ];
    let mut other = spec(600, &[("revenue", 60)]);
    other.experiment = "other".into();
    other.variants = vec!["control".into()];
    let mut state = MonitorState::default();
    for cutoff in [50, 130, 185, 241, 300, 420, 480, 531, 600] {
        let specs = [spec(cutoff, &metrics), {
            let mut o = other.clone();
            o.cutoff = time(at(cutoff, 0));
            o
        }];
        let got = incremental(&d, &specs, &mut state, None).unwrap();
        for (s, got) in specs.iter().zip(got) {
            let got = got.unwrap();
            let full = run(&d, s).unwrap();
            assert_metrics_close(&got, &full, &format!("cutoff {cutoff}"));
            // Every unit is counted; events only from the recent range.
            let exposed =
                |m: &MonitorData| m.variants.iter().map(|v| v.exposed).collect::<Vec<_>>();
            assert_eq!(exposed(&got), exposed(&full));
            assert!(got.events_since >= full.events_since);
        }
        assert_eq!(state.len(), metrics.len() + 1);
    }
    // At another check, only events since the earliest unfolded first
    // exposure (the 120-minute window's bound at the previous check,
    // 600 − 120 minutes, less the 5 s skew) are read.
    let last = incremental(&d, &[spec(600, &metrics)], &mut state, None)
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(last.events_since, time(at(600 - 120, 0) - 5_000_000));
    // Only the units first exposed after the earliest bound (480) are held
    // in full: t6 (510), c4 (570); the others are counted by hash.
    assert_eq!(state.units_held(), 2);
    let exposed: u64 = last.variants.iter().map(|v| v.exposed).sum();
    assert_eq!(exposed, 10);
    assert_eq!(
        state.len(),
        metrics.len(),
        "the other experiment's folds are dropped"
    );
    // Another start restarts the folds: all events since it are read.
    let mut moved = spec(600, &metrics);
    moved.start = time(at(100, 0));
    let again = incremental(&d, &[moved.clone()], &mut state, None)
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(again.events_since, time(at(100, 0) - 5_000_000));
    assert_metrics_close(&again, &run(&d, &moved).unwrap(), "moved start");
}

/// A read over its memory limit is an error, not an exhausted process, and
/// leaves the metrics' folds as they were; within the limit it answers.
#[test]
fn a_read_over_its_memory_limit_fails_and_keeps_the_folds() {
    let d = data();
    let specs = [spec(600, &ALL)];
    let mut state = MonitorState::default();
    incremental(&d, &specs, &mut state, None).unwrap();
    let folds = state.len();
    let err = incremental(&d, &specs, &mut state, Some(1024))
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("resources exhausted"), "{err}");
    assert_eq!(state.len(), folds);
    let again = incremental(&d, &specs, &mut state, Some(256 << 20))
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert_metrics_close(&again, &run(&d, &specs[0]).unwrap(), "after a failed read");
}

fn fresh(part: &str, events: u64, last: Option<i64>) -> PartitionFreshness {
    PartitionFreshness {
        part: part.into(),
        events,
        last_event_at: last.map(time),
    }
}

#[test]
fn partition_freshness_counts_recent_events_and_finds_the_latest() {
    let dir = tempfile::tempdir().unwrap();
    let ev = |id, part, minutes| e(id, "u", "page_view", at(minutes, 0), None, part);
    let rows = vec![
        // Part 00 stops 30 minutes before the cutoff (600); a bot's later
        // event does not count.
        ev("a0", "00", 520),
        ev("a1", "00", 550),
        ev("a2", "00", 560),
        ev("a3", "00", 570),
        E {
            bot: true,
            ..ev("a4", "00", 590)
        },
        // Part 01 is on time; events at and after the cutoff do not count.
        ev("b0", "01", 545),
        ev("b1", "01", 580),
        ev("b2", "01", 599),
        ev("b3", "01", 600),
        ev("b4", "01", 610),
        // Part 02 has nothing since 540: its latest event is older.
        ev("c0", "02", -100),
        ev("c1", "02", 100),
        ev("c2", "02", 300),
    ];
    write_events(&dir.path().join("events"), &rows);
    let source = DataSource {
        exposures: dir.path().join("no-exposures-needed").display().to_string(),
        events: dir.path().join("events").display().to_string(),
        aliases: None,
    };
    let got = rt()
        .block_on(partition_freshness(
            &source,
            time(at(540, 0)),
            time(at(600, 0)),
        ))
        .unwrap();
    assert_eq!(
        got,
        [
            fresh("00", 3, Some(at(570, 0))),
            fresh("01", 3, Some(at(599, 0))),
            fresh("02", 0, Some(at(300, 0))),
        ]
    );

    // Without `part=` directories there are no partitions.
    let flat = dir.path().join("flat.parquet");
    let events: Vec<Record> = ["x", "y"]
        .iter()
        .map(|id| event(id, "u", "page_view", at(570, 0), None, false))
        .collect();
    write(&flat, Kind::Event, &events);
    let source = DataSource {
        events: flat.display().to_string(),
        ..source
    };
    let got = rt()
        .block_on(partition_freshness(
            &source,
            time(at(540, 0)),
            time(at(600, 0)),
        ))
        .unwrap();
    assert!(got.is_empty(), "{got:?}");
}
