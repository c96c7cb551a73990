//! Identities: an anonymous id that signed in (an alias) and the user id it
//! signed in as count for one unit (`docs/data-model.md`, "Aliases" and
//! Semantics item 1). The engine is held to a reference computed here from
//! the raw rows with the documented rules.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_analysis::monitor::{monitor, MonitorSpec, WindowedMetric};
use strata_analysis::{
    AnalysisSpec, Analyzer, DataSource, EngineOptions, MetricRegistry, Results, ValidSpec,
};

use super::common::*;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// The spec's start and end, in µs.
const START: &str = "2026-01-10T00:00:00Z";
const END: &str = "2026-01-20T00:00:00Z";
/// The default clock skew, in µs.
const SKEW: i64 = 5_000_000;

const ALIAS_METRICS: &str = r#"{"metrics": [
  {"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}},
  {"key": "revenue", "type": "sum", "filter": {"type": "purchase"}},
  {"key": "purchases", "type": "count", "filter": {"type": "purchase"}}
]}"#;

/// The alias tests' registry and validated spec.
fn alias_inputs() -> (MetricRegistry, ValidSpec) {
    let registry =
        MetricRegistry::from_str_named(ALIAS_METRICS, Path::new("metrics.json")).unwrap();
    let spec = AnalysisSpec::from_str_named(&alias_spec(), Path::new("spec.json"))
        .unwrap()
        .validate("spec.json", &registry)
        .unwrap();
    (registry, spec)
}

fn alias_spec() -> String {
    format!(
        r#"{{"key": "exp", "control": "control",
 "variants": [{{"key": "control", "weight": 50}}, {{"key": "treatment", "weight": 50}}],
 "start": "{START}", "end": "{END}",
 "primary": "conversion", "secondary": ["revenue", "purchases"]}}"#
    )
}

fn us(t: &str) -> i64 {
    strata_analysis::spec::parse_time(t)
        .unwrap()
        .timestamp_micros()
}

fn rfc3339(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[derive(Debug, Clone)]
struct X {
    unit: String,
    variant: &'static str,
    ts: i64,
}

/// A purchase.
#[derive(Debug, Clone)]
struct E {
    id: String,
    unit: String,
    ts: i64,
    value: f64,
}

#[derive(Debug, Clone)]
struct A {
    anonymous: Option<String>,
    user: Option<String>,
    ts: i64,
}

#[derive(Debug, Clone, Default)]
struct Data {
    exposures: Vec<X>,
    events: Vec<E>,
    aliases: Vec<A>,
}

/// People who are exposed under an anonymous id (`a{i}`), some of whom sign
/// in as `u{i}` (before or after the exposure) and buy under either id,
/// some exposed again as `u{i}` in the other variant (after the anonymous
/// exposure, or before it), copies of a purchase sent under both ids,
/// purchases before the window; shared devices (`d{k}`) signed in as two
/// users (one pair at the same time); an alias chain (`u{i}` → `w{i}`);
/// aliases stored twice; rows to ignore (a null or empty id, an alias of an
/// id to itself) planted earliest, where they would change the answer if
/// they counted.
fn planted(seed: u64) -> Data {
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = us(START);
    let mut d = Data::default();
    let other = |v: &str| {
        if v == "control" {
            "treatment"
        } else {
            "control"
        }
    };
    let purchase = |d: &mut Data, rng: &mut StdRng, unit: &str, ts: i64| {
        let id = format!("p{}", d.events.len());
        let value = f64::from(rng.random_range(5..100u32));
        d.events.push(E {
            id,
            unit: unit.into(),
            ts,
            value,
        });
    };
    for i in 0..300 {
        let (anon, user) = (format!("a{i}"), format!("u{i}"));
        let v = if rng.random_bool(0.5) {
            "control"
        } else {
            "treatment"
        };
        let tx = t0 + DAY + rng.random_range(0..4 * DAY);
        d.exposures.push(X {
            unit: anon.clone(),
            variant: v,
            ts: tx,
        });
        let p_buy = if v == "control" { 0.3 } else { 0.5 };
        if !rng.random_bool(0.6) {
            if rng.random_bool(p_buy) {
                let ts = tx + rng.random_range(0..3 * DAY);
                purchase(&mut d, &mut rng, &anon, ts);
            }
            continue;
        }
        // Signed in, sometimes before the anonymous exposure.
        let ta = tx + rng.random_range(-2 * HOUR..6 * HOUR);
        d.aliases.push(A {
            anonymous: Some(anon.clone()),
            user: Some(user.clone()),
            ts: ta,
        });
        if rng.random_bool(0.2) {
            // Stored again in a later deduplication window.
            d.aliases.push(A {
                anonymous: Some(anon.clone()),
                user: Some(user.clone()),
                ts: ta + 8 * DAY,
            });
        }
        match rng.random_range(0..10) {
            // Exposed again as the user in the other variant (assignment
            // not sticky across the sign-in).
            0..=2 => d.exposures.push(X {
                unit: user.clone(),
                variant: other(v),
                ts: tx + rng.random_range(HOUR..2 * DAY),
            }),
            // Exposed as the user first, in the other variant.
            3 => d.exposures.push(X {
                unit: user.clone(),
                variant: other(v),
                ts: tx - rng.random_range(HOUR..20 * HOUR),
            }),
            _ => {}
        }
        if rng.random_bool(0.2) {
            // A purchase before the sign-in, under the anonymous id.
            let ts = tx + rng.random_range(0..HOUR);
            purchase(&mut d, &mut rng, &anon, ts);
        }
        if rng.random_bool(p_buy) {
            let ts = ta.max(tx) + rng.random_range(0..3 * DAY);
            purchase(&mut d, &mut rng, &user, ts);
            if rng.random_bool(0.3) {
                // The same purchase sent again under the anonymous id.
                let copy = E {
                    unit: anon.clone(),
                    ..d.events[d.events.len() - 1].clone()
                };
                d.events.push(copy);
            }
        }
        if rng.random_bool(0.1) {
            // Before the (resolved) unit's first exposure: out of its window.
            let ts = tx - DAY;
            purchase(&mut d, &mut rng, &user, ts);
        }
        if i % 25 == 0 {
            // Rows that are ignored, each earlier than the real alias.
            let early = ta - DAY;
            d.aliases.push(A {
                anonymous: Some(anon.clone()),
                user: None,
                ts: early,
            });
            d.aliases.push(A {
                anonymous: Some(anon.clone()),
                user: Some(anon.clone()),
                ts: early,
            });
            d.aliases.push(A {
                anonymous: Some(anon.clone()),
                user: Some(String::new()),
                ts: early,
            });
            d.aliases.push(A {
                anonymous: Some(String::new()),
                user: Some(user.clone()),
                ts: early,
            });
        }
        if i % 40 == 1 {
            // One level only: the user id is itself an anonymous id of an
            // alias; its own records follow it, the anonymous id's do not.
            let w = format!("w{i}");
            d.aliases.push(A {
                anonymous: Some(user.clone()),
                user: Some(w.clone()),
                ts: ta + HOUR,
            });
            d.exposures.push(X {
                unit: w.clone(),
                variant: v,
                ts: tx + HOUR,
            });
            let ts = tx + 2 * HOUR;
            purchase(&mut d, &mut rng, &w, ts);
        }
    }
    // Shared devices: signed in as two users; the first counts. The last
    // two sign in as both at the same time: the smaller user id counts.
    for k in 0..12 {
        let device = format!("d{k}");
        let v = if k % 2 == 0 { "control" } else { "treatment" };
        let tx = t0 + DAY + rng.random_range(0..4 * DAY);
        d.exposures.push(X {
            unit: device.clone(),
            variant: v,
            ts: tx,
        });
        let first = format!("u{}", rng.random_range(0..300));
        let second = format!("u{}", rng.random_range(0..300));
        let t1 = tx + rng.random_range(0..HOUR);
        let t2 = if k >= 10 {
            t1
        } else {
            t1 + rng.random_range(HOUR..3 * DAY)
        };
        for (user, ts) in [(second, t2), (first, t1)] {
            d.aliases.push(A {
                anonymous: Some(device.clone()),
                user: Some(user),
                ts,
            });
        }
        for _ in 0..2 {
            let ts = tx + rng.random_range(0..4 * DAY);
            purchase(&mut d, &mut rng, &device, ts);
        }
    }
    // Retries: a few purchases stored twice under the same id.
    for j in (0..d.events.len()).step_by(17) {
        let copy = d.events[j].clone();
        d.events.push(copy);
    }
    d
}

/// Per variant: units, and the means of conversion, revenue and purchases.
type Figures = BTreeMap<String, (u64, f64, f64, f64)>;

/// The documented rules, by hand: each anonymous id resolves to the user id
/// of its earliest alias (by `ts`, then the smaller user id; rows with a
/// null or empty id or an id aliased to itself ignored), one level; a unit
/// is in the variant of its first exposure (ties by variant); its purchases
/// count once per `event_id` in `[max(first − skew, start), end)`. Also the
/// number of units seen in more than one variant.
fn reference(d: &Data, aliases: bool) -> (Figures, u64) {
    let (start, end) = (us(START), us(END));
    let mut map: HashMap<&str, (i64, &str)> = HashMap::new();
    if aliases {
        for a in &d.aliases {
            let (Some(anon), Some(user)) = (a.anonymous.as_deref(), a.user.as_deref()) else {
                continue;
            };
            if anon.is_empty() || user.is_empty() || anon == user {
                continue;
            }
            let e = map.entry(anon).or_insert((a.ts, user));
            if (a.ts, user) < *e {
                *e = (a.ts, user);
            }
        }
    }
    let resolve = |id: &str| map.get(id).map_or(id.to_string(), |(_, u)| u.to_string());
    let mut units: HashMap<String, ((i64, &str), HashSet<&str>)> = HashMap::new();
    for x in d.exposures.iter().filter(|x| x.ts < end) {
        let u = units
            .entry(resolve(&x.unit))
            .or_insert(((x.ts, x.variant), HashSet::new()));
        u.0 = u.0.min((x.ts, x.variant));
        u.1.insert(x.variant);
    }
    let mut seen: HashSet<(String, &str)> = HashSet::new();
    let mut per_unit: HashMap<String, (f64, f64)> = HashMap::new();
    for e in &d.events {
        let unit = resolve(&e.unit);
        let Some(((first, _), _)) = units.get(&unit) else {
            continue;
        };
        let lo = (first - SKEW).max(start);
        if e.ts < lo || e.ts >= end || !seen.insert((unit.clone(), e.id.as_str())) {
            continue;
        }
        let p = per_unit.entry(unit).or_default();
        p.0 += 1.0;
        p.1 += e.value;
    }
    let mut sums: BTreeMap<String, (u64, f64, f64, f64)> = BTreeMap::new();
    for (unit, ((_, v), _)) in &units {
        let (count, revenue) = per_unit.get(unit).copied().unwrap_or_default();
        let s = sums.entry(v.to_string()).or_default();
        s.0 += 1;
        s.1 += if count > 0.0 { 1.0 } else { 0.0 };
        s.2 += revenue;
        s.3 += count;
    }
    let multi = units.values().filter(|(_, vs)| vs.len() > 1).count() as u64;
    let figures = sums
        .into_iter()
        .map(|(v, (n, c, r, p))| {
            let n_f = n as f64;
            (v, (n, c / n_f, r / n_f, p / n_f))
        })
        .collect();
    (figures, multi)
}

fn engine_figures(r: &Results) -> Figures {
    r.units
        .iter()
        .map(|(v, &n)| {
            let mean = |key: &str| {
                let m = &metric(r, key).variants[v];
                assert_eq!(m.n, n, "{key} {v}");
                m.mean.unwrap()
            };
            (
                v.clone(),
                (n, mean("conversion"), mean("revenue"), mean("purchases")),
            )
        })
        .collect()
}

fn assert_figures(got: &Figures, want: &Figures, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (v, g) in got {
        let w = &want[v];
        assert_eq!(g.0, w.0, "{what}: units of {v}");
        for (name, a, b) in [
            ("conversion", g.1, w.1),
            ("revenue", g.2, w.2),
            ("purchases", g.3, w.3),
        ] {
            assert!(close(a, b), "{what}: {name} of {v}: {a} != {b}");
        }
    }
}

fn multi_exposure_units(r: &Results) -> u64 {
    r.warnings
        .iter()
        .find(|w| w.code == "multiple_exposure_units")
        .and_then(|w| w.count)
        .unwrap_or(0)
}

/// `d` written as NDJSON in a new directory, and the paths of its
/// exposures, events and aliases.
fn ndjson_inputs(d: &Data) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_ndjson(dir.path(), d);
    let path = |name: &str| dir.path().join(name);
    let (x, e, a) = (
        path("exposures.ndjson"),
        path("events.ndjson"),
        path("aliases.ndjson"),
    );
    (dir, x, e, a)
}

fn write_ndjson(dir: &Path, d: &Data) {
    let x: String = d
        .exposures
        .iter()
        .map(|x| {
            serde_json::json!({"unit_id": x.unit, "experiment": "exp", "variant": x.variant,
                               "ts": rfc3339(x.ts)})
            .to_string()
                + "\n"
        })
        .collect();
    let e: String = d
        .events
        .iter()
        .map(|e| {
            serde_json::json!({"event_id": e.id, "unit_id": e.unit, "type": "purchase",
                               "ts": rfc3339(e.ts), "value": e.value})
            .to_string()
                + "\n"
        })
        .collect();
    let a: String = d
        .aliases
        .iter()
        .map(|a| {
            serde_json::json!({"anonymous_id": a.anonymous, "user_id": a.user,
                               "ts": rfc3339(a.ts), "received_at": rfc3339(a.ts + 1_000)})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(dir.join("exposures.ndjson"), x).unwrap();
    std::fs::write(dir.join("events.ndjson"), e).unwrap();
    std::fs::write(dir.join("aliases.ndjson"), a).unwrap();
}

/// Runs the alias spec over `data`; also the events' slices the engine read.
fn run_data(data: &DataSource) -> strata_analysis::Result<(Results, Vec<String>)> {
    let (registry, spec) = alias_inputs();
    rt().block_on(async {
        let a = Analyzer::new(spec, &registry, data, EngineOptions::default()).await?;
        let slices = a.slices().to_vec();
        Ok((a.run(None).await?, slices))
    })
}

fn source(exposures: &Path, events: &Path, aliases: Option<&Path>) -> DataSource {
    DataSource {
        exposures: exposures.display().to_string(),
        events: events.display().to_string(),
        aliases: aliases.map(|p| p.display().to_string()),
    }
}

fn json(r: &Results) -> serde_json::Value {
    serde_json::to_value(r).unwrap()
}

#[test]
fn sign_ins_merge_the_anonymous_and_the_user_id_into_one_unit() {
    let d = planted(7);
    let (_dir, x, e, a) = ndjson_inputs(&d);
    let (with, _) = run_data(&source(&x, &e, Some(&a))).unwrap();
    let (without, _) = run_data(&source(&x, &e, None)).unwrap();
    let (want_with, multi_with) = reference(&d, true);
    let (want_without, multi_without) = reference(&d, false);
    assert_figures(&engine_figures(&with), &want_with, "with aliases");
    assert_figures(&engine_figures(&without), &want_without, "without aliases");
    assert_eq!(multi_exposure_units(&with), multi_with);
    assert_eq!(multi_exposure_units(&without), multi_without);
    // The planted sign-ins change every figure: fewer units, more of them
    // converted, flicker between variants under the two ids.
    let total = |f: &Figures| f.values().map(|v| v.0).sum::<u64>();
    assert!(
        total(&want_with) + 40 < total(&want_without),
        "{want_with:?} {want_without:?}"
    );
    for v in ["control", "treatment"] {
        let (w, o) = (want_with[v], want_without[v]);
        assert!(w.1 > o.1, "conversion of {v}: {} vs {}", w.1, o.1);
        assert!((w.2 - o.2).abs() > 1e-6 * o.2, "revenue of {v}: {}", w.2);
    }
    assert!(multi_with > 0 && multi_without == 0);
    // A rollup shared with another look resolves the ids alike.
    let data = source(&x, &e, Some(&a));
    let spec = alias_spec();
    let shared = run_shared(
        ALIAS_METRICS,
        &[(&spec, None), (&spec, Some("2026-01-15T00:00:00Z"))],
        &data,
        EngineOptions::default(),
    );
    assert_same(&json(&shared[0]), &json(&with), "shared rollup");
}

/// The first alias counts; a tie goes to the smaller user id; an alias of
/// an id to itself, or with a null or empty id, is ignored (even earliest);
/// a chain resolves one level.
#[test]
fn earliest_alias_decides_and_ignored_rows_do_not_count() {
    let x = r#"{"unit_id":"dev","experiment":"exp","variant":"control","ts":"2026-01-11T00:00:00Z"}
{"unit_id":"bob","experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z"}
{"unit_id":"ann","experiment":"exp","variant":"control","ts":"2026-01-11T00:00:00Z"}
{"unit_id":"tie","experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z"}
{"unit_id":"zed","experiment":"exp","variant":"control","ts":"2026-01-11T00:00:00Z"}
{"unit_id":"self","experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z"}
{"unit_id":"sam","experiment":"exp","variant":"control","ts":"2026-01-11T00:00:00Z"}
{"unit_id":"x1","experiment":"exp","variant":"control","ts":"2026-01-11T00:00:00Z"}
{"unit_id":"y1","experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z"}
"#;
    let e = r#"{"event_id":"1","unit_id":"dev","type":"purchase","ts":"2026-01-12T00:00:00Z","value":1}
"#;
    // dev → ann (earlier than bob, listed later); tie → zed and yan at the
    // same time: yan, the smaller; self → self, → null, → "" (and "" →
    // self) earliest, all ignored, then self → sam; x1 → y1 → z1.
    let a = r#"{"anonymous_id":"dev","user_id":"bob","ts":"2026-01-11T02:00:00Z"}
{"anonymous_id":"dev","user_id":"ann","ts":"2026-01-11T01:00:00Z"}
{"anonymous_id":"tie","user_id":"zed","ts":"2026-01-11T01:00:00Z"}
{"anonymous_id":"tie","user_id":"yan","ts":"2026-01-11T01:00:00Z"}
{"anonymous_id":"self","user_id":"self","ts":"2026-01-01T00:00:00Z"}
{"anonymous_id":"self","user_id":null,"ts":"2026-01-01T00:00:00Z"}
{"anonymous_id":"self","user_id":"","ts":"2026-01-01T00:00:00Z"}
{"anonymous_id":"","user_id":"self","ts":"2026-01-01T00:00:00Z"}
{"anonymous_id":"self","user_id":"sam","ts":"2026-01-30T00:00:00Z"}
{"anonymous_id":"x1","user_id":"y1","ts":"2026-01-11T00:00:00Z"}
{"anonymous_id":"y1","user_id":"z1","ts":"2026-01-11T00:00:00Z"}
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("x.ndjson"), x).unwrap();
    std::fs::write(p("e.ndjson"), e).unwrap();
    std::fs::write(p("a.ndjson"), a).unwrap();
    let (r, _) = run_data(&source(
        &p("x.ndjson"),
        &p("e.ndjson"),
        Some(&p("a.ndjson")),
    ))
    .unwrap();
    // Units: ann (dev's and ann's exposures, both control), bob, yan
    // (tie's), zed, sam (self's treatment and sam's control, same time:
    // control by key, seen in two variants), y1 (x1's; y1's own exposure
    // resolves to z1, a unit of its own). Control: ann, zed, sam, y1;
    // treatment: bob, yan, z1. (Were dev bob's, bob would be a control
    // unit seen in two variants, and ann one more control unit.)
    assert_eq!(r.units["control"], 4, "{:?}", r.units);
    assert_eq!(r.units["treatment"], 3, "{:?}", r.units);
    // dev's purchase is ann's, who is in control: 1 of 4.
    let conv = &metric(&r, "conversion").variants;
    assert!(close(conv["control"].mean.unwrap(), 0.25), "{conv:?}");
    assert!(close(conv["treatment"].mean.unwrap(), 0.0), "{conv:?}");
    // sam/self was seen in two variants.
    assert_eq!(multi_exposure_units(&r), 1);
}

/// Integer ids are read as strings, in every input.
#[test]
fn integer_ids_resolve_as_strings() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let x = r#"{"unit_id":1,"experiment":"exp","variant":"control","ts":"2026-01-11T00:00:00Z"}
{"unit_id":2,"experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z"}
{"unit_id":3,"experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z"}
"#;
    let e = r#"{"event_id":"1","unit_id":2,"type":"purchase","ts":"2026-01-12T00:00:00Z","value":1}
"#;
    std::fs::write(p("x.ndjson"), x).unwrap();
    std::fs::write(p("e.ndjson"), e).unwrap();
    std::fs::write(
        p("a.csv"),
        "anonymous_id,user_id,ts\n2,1,2026-01-11T00:00:00Z\n",
    )
    .unwrap();
    let (r, _) = run_data(&source(&p("x.ndjson"), &p("e.ndjson"), Some(&p("a.csv")))).unwrap();
    assert_eq!(r.units["control"], 1, "{:?}", r.units);
    assert_eq!(r.units["treatment"], 1, "{:?}", r.units);
    let conv = &metric(&r, "conversion").variants;
    assert!(close(conv["control"].mean.unwrap(), 1.0), "{conv:?}");
}

/// The exposures, events and valid aliases of `d` in the pipeline's layout
/// under `root`; the aliases only when `with_aliases`, as the pipeline's
/// writer would lay them out: by the UTC day of `ts` and the user partition
/// of `anonymous_id`.
fn write_pipeline_root(root: &Path, d: &Data, with_aliases: bool) {
    use strata_pipeline::parquet::{write_records, WriteOptions};
    use strata_pipeline::record::{Event, Exposure, Record};
    let mut records = Vec::new();
    for x in &d.exposures {
        records.push(Record::Exposure(Exposure {
            unit_id: x.unit.clone(),
            experiment: "exp".into(),
            variant: x.variant.into(),
            assigned_variant: x.variant.into(),
            opted_out: false,
            ts: x.ts,
            received_at: x.ts,
            attributes: Default::default(),
            is_bot: false,
        }));
    }
    for e in &d.events {
        records.push(Record::Event(Event {
            event_id: e.id.clone(),
            unit_id: e.unit.clone(),
            event_type: "purchase".into(),
            ts: e.ts,
            received_at: e.ts,
            value: Some(e.value),
            properties: Default::default(),
            is_bot: false,
            opted_out: false,
        }));
    }
    let opts = WriteOptions::new("seg-1-2");
    write_records(root, &records, &opts).unwrap();
    if !with_aliases {
        return;
    }
    let mut files: BTreeMap<(String, u32), Vec<&A>> = BTreeMap::new();
    for a in valid(&d.aliases) {
        let anon = a.anonymous.as_deref().unwrap();
        let date = rfc3339(a.ts)[..10].to_string();
        let part = strata_pipeline::partition::user_partition(anon, opts.partitions);
        files.entry((date, part)).or_default().push(a);
    }
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("anonymous_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("ts", ts(), false),
        Field::new("received_at", ts(), false),
    ]));
    for ((date, part), rows) in files {
        let dir = root.join(format!("kind=aliases/date={date}/part={part:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        let strings = |f: fn(&A) -> &str| StringArray::from_iter_values(rows.iter().map(|a| f(a)));
        let times = |lag: i64| {
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|a| a.ts + lag))
                .with_timezone("UTC")
        };
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(strings(|a| a.anonymous.as_deref().unwrap())),
                Arc::new(strings(|a| a.user.as_deref().unwrap())),
                Arc::new(times(0)),
                Arc::new(times(1_000)),
            ],
        )
        .unwrap();
        let file = std::fs::File::create(dir.join("seg-1-2.parquet")).unwrap();
        let mut w =
            datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
}

/// The aliases the pipeline can store: both ids present (its columns are
/// non-null).
fn valid(aliases: &[A]) -> Vec<&A> {
    aliases
        .iter()
        .filter(|a| a.anonymous.is_some() && a.user.is_some())
        .collect()
}

/// The pipeline's `kind=aliases` is read with its root (or a `kind=`
/// directory of it) without being named, and turns the per-partition
/// slicing off: the results are those of the same rows read whole with the
/// aliases named. A root without aliases is read as before, sliced.
#[test]
fn the_pipeline_aliases_are_found_beside_its_events_and_turn_slicing_off() {
    let mut d = planted(11);
    d.aliases = valid(&d.aliases).into_iter().cloned().collect();
    let (dir, x, e, a) = ndjson_inputs(&d);
    let (whole_with, slices) = run_data(&source(&x, &e, Some(&a))).unwrap();
    assert!(slices.is_empty());
    let (whole_without, _) = run_data(&source(&x, &e, None)).unwrap();
    assert_figures(
        &engine_figures(&whole_with),
        &reference(&d, true).0,
        "ndjson",
    );

    let root = dir.path().join("with/parquet");
    write_pipeline_root(&root, &d, true);
    assert!(root.join("kind=aliases").is_dir());
    for (exposures, events) in [
        (root.clone(), root.clone()),
        (root.join("kind=exposures"), root.join("kind=events")),
        // Beside the exposures alone, too.
        (root.join("kind=exposures"), e.clone()),
    ] {
        let (r, slices) = run_data(&source(&exposures, &events, None)).unwrap();
        assert!(slices.is_empty(), "{events:?}: sliced {slices:?}");
        assert_same(&json(&r), &json(&whole_with), &format!("{events:?}"));
    }
    // Named, over a root written without them, they are read and slicing is
    // off as well.
    let bare = dir.path().join("bare/parquet");
    write_pipeline_root(&bare, &d, false);
    let (r, slices) = run_data(&source(&bare, &bare, Some(&a))).unwrap();
    assert!(slices.is_empty());
    assert_same(&json(&r), &json(&whole_with), "named");
    // A root without aliases: no error, no aliases, sliced by partition.
    let (r, slices) = run_data(&source(&bare, &bare, None)).unwrap();
    assert!(slices.len() > 1, "{slices:?}");
    assert_same(&json(&r), &json(&whole_without), "no aliases");
    // A directory above a root holding only aliases is refused, naming the root.
    let only = dir.path().join("only");
    std::fs::create_dir_all(only.join("parquet")).unwrap();
    std::fs::rename(root.join("kind=aliases"), only.join("parquet/kind=aliases")).unwrap();
    let err = run_data(&source(&x, &e, Some(&only)))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "aliases input {}: directory holds the pipeline's Parquet root {}; pass that root or its `kind=aliases` directory",
            only.display(),
            only.join("parquet").display()
        )
    );
}

#[test]
fn bad_alias_input_names_the_input_and_column() {
    let f = Fixture::new();
    let run = |aliases: &str, name: &str| {
        let path = f.path(name);
        std::fs::write(&path, aliases).unwrap();
        let data = source(
            &f.path("exposures.ndjson"),
            &f.path("events.ndjson"),
            Some(&path),
        );
        let e = run_data(&data).unwrap_err().to_string();
        (e, path.display().to_string())
    };
    let (e, path) = run(
        "{\"anonymous_id\":\"u1\",\"user\":\"u2\",\"ts\":\"2026-01-10T00:00:00Z\"}\n",
        "a.ndjson",
    );
    assert_eq!(
        e,
        format!("aliases input {path}: missing required column `user_id`")
    );
    let (e, path) = run(
        "anonymous_id,user_id,ts\nu1,u2,2026-01-10T00:00:00Z\nu3,u4,yesterday\n",
        "a.csv",
    );
    assert_eq!(
        e,
        format!("aliases input {path}: {path} line 3: column `ts`: `yesterday` is not an RFC 3339 timestamp")
    );
    let (e, path) = run(
        "{\"anonymous_id\":true,\"user_id\":\"u2\",\"ts\":\"2026-01-10T00:00:00Z\"}\n",
        "b.ndjson",
    );
    assert_eq!(
        e,
        format!("aliases input {path}: column `anonymous_id` has type Boolean; expected a string")
    );
    // A pipeline root named as the aliases must have them.
    let root = f.path("parquet");
    std::fs::create_dir_all(root.join("kind=events")).unwrap();
    let data = source(
        &f.path("exposures.ndjson"),
        &f.path("events.ndjson"),
        Some(&root),
    );
    let e = run_data(&data).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "aliases input {}: a pipeline Parquet root without `kind=aliases`: the pipeline has written no aliases yet",
            root.display()
        )
    );
}

/// The guardrail monitor counts resolved units too.
#[test]
fn the_monitor_counts_resolved_units() {
    let d = planted(5);
    let (_dir, x, e, a) = ndjson_inputs(&d);
    let registry =
        MetricRegistry::from_str_named(ALIAS_METRICS, Path::new("metrics.json")).unwrap();
    let spec = MonitorSpec {
        experiment: "exp".into(),
        variants: vec!["control".into(), "treatment".into()],
        start: DateTime::from_timestamp_micros(us(START)).unwrap(),
        cutoff: DateTime::from_timestamp_micros(us(END)).unwrap(),
        metrics: vec![WindowedMetric {
            metric: "conversion".into(),
            window_minutes: 60,
        }],
        clock_skew_seconds: 5.0,
    };
    for aliases in [true, false] {
        let data = source(&x, &e, aliases.then_some(a.as_path()));
        let got = rt().block_on(monitor(&data, &registry, &spec)).unwrap();
        let (want, _) = reference(&d, aliases);
        for v in &got.variants {
            assert_eq!(v.exposed, want[&v.variant].0, "aliases={aliases}: {v:?}");
        }
    }
}

/// Aliases that all are ignored are no aliases: the views are those of an
/// analysis without them (no join), and so are the results and slicing.
#[test]
fn only_ignored_aliases_are_no_aliases() {
    let mut d = planted(3);
    d.aliases = vec![
        A {
            anonymous: Some("a1".into()),
            user: Some("a1".into()),
            ts: us(START),
        },
        A {
            anonymous: Some("a2".into()),
            user: Some(String::new()),
            ts: us(START),
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    write_ndjson(dir.path(), &d);
    let root = dir.path().join("parquet");
    write_pipeline_root(&root, &d, true);
    let (registry, spec) = alias_inputs();
    let with = source(&root, &root, None);
    assert!(with.aliases_path().is_some());
    let (r, slices, joined) = rt().block_on(async {
        let a = Analyzer::new(spec, &registry, &with, EngineOptions::default())
            .await
            .unwrap();
        let joined = a.context().table_exist("alias_map").unwrap();
        (a.run(None).await.unwrap(), a.slices().to_vec(), joined)
    });
    assert!(!joined);
    assert!(slices.len() > 1, "{slices:?}");
    let (x, e) = (
        dir.path().join("exposures.ndjson"),
        dir.path().join("events.ndjson"),
    );
    let (without, _) = run_data(&source(&x, &e, None)).unwrap();
    assert_same(&json(&r), &json(&without), "");
    assert_figures(&engine_figures(&r), &reference(&d, true).0, "ignored");
}
