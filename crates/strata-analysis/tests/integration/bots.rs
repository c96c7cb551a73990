//! Heuristic bot detection: units planted with bot-like activity in a
//! simulated data set are left out of every metric, counted per variant,
//! and the health check sees that one variant lost more of them; the means
//! equal a plain-Rust computation over the same rows without those units,
//! in every form of the plan (SQL and fused parts, sliced and whole inputs).

use std::collections::BTreeMap;
use std::path::Path;

use strata_analysis::{DataSource, EngineOptions, Results};
use strata_pipeline::parquet::{FileWriter, DEFAULT_ROW_GROUP_ROWS};
use strata_pipeline::record::{Event, Kind, Record};
use strata_pipeline::user_partition;
use strata_sim::dataset::{unit_records, write_parquet, DatasetConfig};

use super::common::*;

const DAY_US: i64 = 86_400_000_000;
const MINUTE_US: i64 = 60_000_000;
const SECOND_US: i64 = 1_000_000;

/// The registry of the tests: low limits, so that planted bots need few
/// rows; purchases have a per-minute limit of their own.
fn metrics(bot_detection: &str) -> String {
    format!(
        r#"{{"metrics": [
  {{"key": "conversion", "type": "binomial", "filter": {{"type": "purchase"}}}},
  {{"key": "purchases", "type": "count", "filter": {{"type": "purchase"}}}},
  {{"key": "revenue", "type": "sum", "filter": {{"type": "purchase"}}}},
  {{"key": "aov", "type": "ratio", "numerator": {{"type": "sum", "filter": {{"type": "purchase"}}}},
                                  "denominator": {{"type": "count", "filter": {{"type": "purchase"}}}}}},
  {{"key": "load_p50", "type": "quantile", "quantile": 0.5, "filter": {{"type": "page_load"}}, "direction": "increase_is_bad"}}
 ],
 "bot_detection": {bot_detection}}}"#
    )
}

const LIMITS: &str =
    r#"{"per_minute": 30, "per_day": 500, "event_types": {"purchase": {"per_minute": 5}}}"#;

const SPEC: &str = r#"{"key": "exp", "control": "control",
    "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}],
    "start": "2026-01-01T00:00:00Z", "end": "2026-01-15T00:00:00Z",
    "primary": "conversion", "secondary": ["purchases", "revenue", "aov"],
    "guardrails": ["load_p50"], "cuped": {"pre_period_days": 7}}"#;

const PARTITIONS: u32 = 4;

fn event(unit: &str, id: String, kind: &str, ts: i64, value: Option<f64>) -> Record {
    Record::Event(Event {
        event_id: id,
        unit_id: unit.into(),
        event_type: kind.into(),
        ts,
        received_at: ts + SECOND_US,
        value,
        properties: BTreeMap::new(),
        is_bot: false,
        opted_out: false,
    })
}

/// What a planted unit does on top of its simulated activity.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plant {
    /// 31 page views in one minute: over the default per-minute limit.
    MinuteBurst,
    /// 501 page views in a day, 2 a minute: over the per-day limit only.
    DayFlood,
    /// 6 purchases of 100 in one minute: over the purchases' own limit.
    PurchaseBurst,
    /// Not a bot: 30 page views in one minute (the limit is "more than"),
    /// and 40 in a minute's span straddling two minute buckets (20 + 20).
    NearMiss,
    /// Not a bot once deduplicated: 25 page views in one minute, each
    /// sent twice (50 rows).
    Duplicated,
}

impl Plant {
    fn is_bot(self) -> bool {
        matches!(
            self,
            Plant::MinuteBurst | Plant::DayFlood | Plant::PurchaseBurst
        )
    }

    /// The planted events of `unit`, from minute-aligned `t`.
    fn events(self, unit: &str, t: i64) -> Vec<Record> {
        let id = |k: usize| format!("{unit}-bot-{k}");
        match self {
            Plant::MinuteBurst => (0..31)
                .map(|k| event(unit, id(k), "page_view", t + k as i64 * SECOND_US, None))
                .collect(),
            Plant::DayFlood => (0..501)
                .map(|k| {
                    event(
                        unit,
                        id(k),
                        "page_view",
                        t + k as i64 * 30 * SECOND_US,
                        None,
                    )
                })
                .collect(),
            Plant::PurchaseBurst => (0..6)
                .map(|k| {
                    let ts = t + k as i64 * 5 * SECOND_US;
                    event(unit, id(k), "purchase", ts, Some(100.0))
                })
                .collect(),
            Plant::NearMiss => (0..30)
                .map(|k| t + k as i64 * SECOND_US)
                .chain((0..40).map(|k| t + 10 * MINUTE_US - 20 * SECOND_US + k as i64 * SECOND_US))
                .enumerate()
                .map(|(k, ts)| event(unit, id(k), "page_view", ts, None))
                .collect(),
            Plant::Duplicated => (0..50)
                .map(|k| event(unit, id(k / 2), "page_view", t + k as i64 * SECOND_US, None))
                .collect(),
        }
    }
}

/// The simulated data set with planted units, and what was planted on
/// which unit index.
struct Planted {
    fixture: Fixture,
    cfg: DatasetConfig,
    plants: BTreeMap<u32, Plant>,
}

/// `control_bots` and `treatment_bots` units of each variant turned into
/// bots (cycling through the three kinds), and one near miss and one
/// duplicated unit per variant.
fn planted(control_bots: usize, treatment_bots: usize) -> Planted {
    let cfg = DatasetConfig {
        duplicate_rate: 0.05,
        ..dataset(2_000, 3.0, 0.3, 23)
    };
    let fixture = Fixture::new();
    write_parquet(&cfg, &fixture.path("gen"), PARTITIONS).unwrap();
    let bots = [Plant::MinuteBurst, Plant::DayFlood, Plant::PurchaseBurst];
    let mut wanted: BTreeMap<&str, Vec<Plant>> = BTreeMap::new();
    for (variant, n) in [("control", control_bots), ("treatment", treatment_bots)] {
        let mut list: Vec<Plant> = (0..n).map(|i| bots[i % 3]).collect();
        list.extend([Plant::NearMiss, Plant::Duplicated]);
        wanted.insert(variant, list);
    }
    let mut plants = BTreeMap::new();
    let mut files: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    for index in 0..cfg.units {
        let records = unit_records(&cfg, index);
        let Some(Record::Exposure(x)) = records.first() else {
            panic!("a unit's records start with its exposure")
        };
        let Some(plant) = wanted.get_mut(x.variant.as_str()).and_then(Vec::pop) else {
            continue;
        };
        // On day 3, minute-aligned, a different minute per unit; a day
        // flood (250 minutes) ends the same day.
        let t = cfg.start_us + 2 * DAY_US + i64::from(index % 40) * 17 * MINUTE_US;
        files
            .entry(user_partition(&x.unit_id, PARTITIONS))
            .or_default()
            .extend(plant.events(&x.unit_id, t));
        plants.insert(index, plant);
    }
    assert!(wanted.values().all(Vec::is_empty), "not enough units");
    for (part, records) in files {
        let path = fixture.path(&format!("gen/events/part={part:02}/planted.parquet"));
        let views: Vec<_> = records.iter().map(Record::view).collect();
        let refs: Vec<_> = views.iter().collect();
        let mut w = FileWriter::create(&path, Kind::Event, DEFAULT_ROW_GROUP_ROWS).unwrap();
        w.write_records(&refs).unwrap();
        w.finish().unwrap();
    }
    Planted {
        fixture,
        cfg,
        plants,
    }
}

impl Planted {
    fn run(&self, bot_detection: &str, events: Events, options: EngineOptions) -> Results {
        let exposures = self.fixture.path("gen/exposures").display().to_string();
        let events = match events {
            Events::Directory => self.fixture.path("gen/events"),
            Events::Glob => self.fixture.path("gen/events/**/*.parquet"),
        };
        let metrics = metrics(bot_detection);
        run_options(
            &metrics,
            SPEC,
            &exposures,
            &events.display().to_string(),
            options,
        )
        .0
    }

    /// Per variant: units, and the per-unit conversion and revenue of the
    /// units that are not planted bots, from the rows by hand
    /// (deduplicated purchases in `[exposure − 5 s, end)`).
    fn reference(&self) -> BTreeMap<String, (Vec<f64>, Vec<f64>)> {
        let cfg = &self.cfg;
        let (start, end) = (cfg.start_us, cfg.start_us + 14 * DAY_US);
        let mut out: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for index in 0..cfg.units {
            let plant = self.plants.get(&index).copied();
            if plant.is_some_and(Plant::is_bot) {
                continue;
            }
            // The planted events of non-bots are page views: no purchase.
            let (variant, conv, rev) = purchases_by_hand(&unit_records(cfg, index), start, end);
            let v = out.entry(variant).or_default();
            v.0.push(conv);
            v.1.push(rev);
        }
        out
    }

    fn bots_in(&self, variant: &str) -> u64 {
        self.plants
            .iter()
            .filter(|(&i, p)| {
                p.is_bot()
                    && matches!(unit_records(&self.cfg, i).first(),
                        Some(Record::Exposure(x)) if x.variant == variant)
            })
            .count() as u64
    }
}

#[derive(Clone, Copy)]
enum Events {
    /// The events' directory: read slice by slice when deduplicating.
    Directory,
    /// A glob of the same files: one input.
    Glob,
}

fn health<'a>(r: &'a Results, check: &str) -> &'a strata_analysis::results::HealthCheck {
    r.health.iter().find(|c| c.check == check).unwrap()
}

#[test]
fn planted_bots_are_left_out_of_every_metric_and_counted_per_variant() {
    let p = planted(5, 35);
    let (control_bots, treatment_bots) = (p.bots_in("control"), p.bots_in("treatment"));
    assert_eq!((control_bots, treatment_bots), (5, 35));
    let r = p.run(LIMITS, Events::Directory, EngineOptions::default());

    let bots = r.bot_exclusion.as_ref().unwrap();
    assert!(bots.enabled);
    assert_eq!(
        bots.excluded,
        BTreeMap::from([("control".into(), 5), ("treatment".into(), 35)])
    );
    let reference = p.reference();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    for (variant, (conv, rev)) in &reference {
        // The units left out are in no count of units, and in no metric.
        assert_eq!(r.units[variant], conv.len() as u64, "{variant}");
        let exposed = (conv.len() as u64 + bots.excluded[variant]) as f64;
        assert!((bots.share[variant] - bots.excluded[variant] as f64 / exposed).abs() < 1e-12);
        for (key, values) in [("conversion", conv), ("revenue", rev)] {
            let got = &metric(&r, key).variants[variant];
            assert_eq!(got.n, values.len() as u64, "{key} {variant}");
            assert!(
                close(got.mean.unwrap(), mean(values)),
                "{key} {variant}: {:?} against {}",
                got.mean,
                mean(values)
            );
        }
        assert_eq!(metric(&r, "aov").variants[variant].n, conv.len() as u64);
    }
    assert_eq!(r.srm.observed, r.units);
    assert_eq!(r.units.values().sum::<u64>() + 40, 2_000);

    // 35 of ~1000 against 5 of ~1000 (χ² ≈ 22): the health check warns.
    let c = health(&r, "bot_exclusion");
    assert_eq!(c.status.as_str(), "warn", "{c:?}");
    assert!(c.figures["p_value"] < 0.001, "{c:?}");
    assert_eq!(c.figures["excluded_units"], 40.0);
    assert!(
        c.message.starts_with("Variant treatment had 3.")
            && c.message
                .contains(" % of its units left out as bots against 0.5 % in control"),
        "{}",
        c.message
    );
    // A warning holds a ship back.
    assert_ne!(r.decision.as_ref().unwrap().verdict.as_str(), "ship");
}

#[test]
fn every_form_of_the_plan_leaves_out_the_same_units() {
    let p = planted(12, 12);
    let reference = p.run(
        LIMITS,
        Events::Glob,
        EngineOptions {
            unfused_parts: true,
            ..EngineOptions::default()
        },
    );
    let json = |r: &Results| serde_json::to_value(r).unwrap();
    let excluded = BTreeMap::from([("control".to_string(), 12), ("treatment".to_string(), 12)]);
    assert_eq!(reference.bot_exclusion.as_ref().unwrap().excluded, excluded);
    let c = health(&reference, "bot_exclusion");
    assert_eq!(c.status.as_str(), "ok", "{c:?}");
    assert!(
        c.message.starts_with(
            "24 units (1.2 %) left out for activity no person produces, alike in every variant"
        ),
        "{}",
        c.message
    );
    for (events, unfused, name) in [
        (Events::Glob, false, "fused"),
        (Events::Directory, false, "fused, sliced"),
        (Events::Directory, true, "sliced"),
    ] {
        let options = EngineOptions {
            unfused_parts: unfused,
            ..EngineOptions::default()
        };
        assert_same(
            &json(&p.run(LIMITS, events, options)),
            &json(&reference),
            name,
        );
    }
    // Assuming unique ids, the fused and the SQL forms agree with each
    // other; the duplicated unit's 50 rows now count as 50 events, over
    // the limit: one unit more per variant.
    let unique = |unfused| EngineOptions {
        assume_unique_event_ids: true,
        unfused_parts: unfused,
        ..EngineOptions::default()
    };
    let fused = p.run(LIMITS, Events::Directory, unique(false));
    let sql = p.run(LIMITS, Events::Directory, unique(true));
    assert_same(&json(&fused), &json(&sql), "unique ids");
    // From a rollup shared with an earlier look: the same units left out
    // (the shared detection's candidates are checked look by look), the
    // same figures.
    for (options, want, name) in [
        (EngineOptions::default(), &reference, "shared"),
        (unique(false), &fused, "shared, unique ids"),
    ] {
        let exposures = p.fixture.path("gen/exposures");
        let data = DataSource {
            exposures: exposures.display().to_string(),
            events: p.fixture.path("gen/events").display().to_string(),
            aliases: None,
        };
        let looks = [(SPEC, None), (SPEC, Some("2026-01-05T00:00:00Z"))];
        let shared = run_shared(&metrics(LIMITS), &looks, &data, options);
        assert_same(&json(&shared[0]), &json(want), name);
    }
    assert_eq!(
        fused.bot_exclusion.as_ref().unwrap().excluded,
        BTreeMap::from([("control".to_string(), 13), ("treatment".to_string(), 13)])
    );
}

#[test]
fn detection_can_be_turned_off_and_the_defaults_spare_simulated_users() {
    let p = planted(3, 3);
    let off = p.run(
        r#"{"enabled": false}"#,
        Events::Glob,
        EngineOptions::default(),
    );
    let bots = off.bot_exclusion.as_ref().unwrap();
    assert!(!bots.enabled);
    assert_eq!(bots.excluded.values().sum::<u64>(), 0);
    assert_eq!(off.units.values().sum::<u64>(), 2_000);
    assert!(health(&off, "bot_exclusion")
        .message
        .starts_with("Bot detection is off"));
    // The default limits (300 a minute, 20,000 a day) take none of these
    // units, bots of the low test limits included.
    let defaults = p.run("{}", Events::Glob, EngineOptions::default());
    let bots = defaults.bot_exclusion.as_ref().unwrap();
    assert!(bots.enabled);
    assert_eq!(bots.excluded.values().sum::<u64>(), 0);
    assert_eq!(defaults.units.values().sum::<u64>(), 2_000);
    let c = health(&defaults, "bot_exclusion");
    assert_eq!(
        c.message,
        "No unit showed activity beyond what a person produces."
    );
}

#[test]
fn bad_limits_are_refused_with_their_place() {
    let refuse = |bot_detection: &str| {
        strata_analysis::MetricRegistry::from_str_named(
            &metrics(bot_detection),
            Path::new("metrics.json"),
        )
        .unwrap_err()
        .to_string()
    };
    let e = refuse(r#"{"per_minute": 0}"#);
    assert!(
        e.starts_with("metrics.json: line ")
            && e.ends_with(
                "invalid value: integer `0`, expected a whole number of events, at least 1, or null for no limit"
            ),
        "{e}"
    );
    let e = refuse(r#"{"per_hour": 10}"#);
    assert!(
        e.contains("unknown field `per_hour`, expected one of"),
        "{e}"
    );
    let e = refuse(r#"{"event_types": {"": {"per_day": 10}}}"#);
    assert_eq!(
        e,
        "metrics.json: field `bot_detection.event_types`: must not have an empty event type"
    );
}
