//! Shared fixtures: a hand-computed data set of a handful of units.

use std::path::{Path, PathBuf};

use strata_analysis::{AnalysisSpec, Analyzer, DataSource, EngineOptions, MetricRegistry, Results};
use strata_sim::dataset::{DatasetConfig, Variant};

/// A simulated data set of experiment `exp` (salt `exp`): `units` units
/// split evenly between `control` and `treatment`, whose purchase rate is
/// `1 + lift` times the control's.
pub fn dataset(units: u32, visits_per_unit: f64, lift: f64, seed: u64) -> DatasetConfig {
    DatasetConfig {
        experiment: "exp".into(),
        salt: "exp".into(),
        variants: Variant::control_and_treatment(lift),
        units,
        visits_per_unit,
        seed,
        ..DatasetConfig::default()
    }
}

pub const EXPOSURES: &str = r#"{"unit_id":"u1","experiment":"exp","variant":"control","ts":"2026-01-10T00:00:00Z","country":"US"}
{"unit_id":"u1","experiment":"exp","variant":"control","ts":"2026-01-11T00:00:00Z","country":"US"}
{"unit_id":"u2","experiment":"exp","variant":"control","ts":"2026-01-10T12:00:00Z","country":"DE"}
{"unit_id":"u3","experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z","country":"US"}
{"unit_id":"u4","experiment":"exp","variant":"treatment","ts":"2026-01-11T00:00:00Z","country":"DE"}
{"unit_id":"u4","experiment":"exp","variant":"control","ts":"2026-01-12T00:00:00Z","country":"DE"}
{"unit_id":"u5","experiment":"exp","variant":"control","assigned_variant":"treatment","opted_out":true,"ts":"2026-01-12T00:00:00Z","country":"US"}
{"unit_id":"u6","experiment":"exp","variant":"control","ts":"2026-01-21T00:00:00Z","country":"US"}
{"unit_id":"u7","experiment":"other","variant":"control","ts":"2026-01-10T00:00:00Z","country":"US"}
"#;

pub const EVENTS: &str = r#"{"event_id":"e1","unit_id":"u1","type":"purchase","ts":"2026-01-10T01:00:00Z","value":10.0,"properties":{"country":"US"}}
{"event_id":"e1","unit_id":"u1","type":"purchase","ts":"2026-01-10T01:00:00Z","value":10.0,"properties":{"country":"US"}}
{"event_id":"e2","unit_id":"u1","type":"purchase","ts":"2026-01-12T00:00:00Z","value":5.0}
{"event_id":"e3","unit_id":"u1","type":"page_load","ts":"2026-01-10T02:00:00Z","value":100.0}
{"event_id":"e4","unit_id":"u1","type":"purchase","ts":"2026-01-05T00:00:00Z","value":7.0}
{"event_id":"e5","unit_id":"u2","type":"purchase","ts":"2026-01-10T11:59:57Z","value":20.0,"properties":{"country":"DE"}}
{"event_id":"e6","unit_id":"u2","type":"purchase","ts":"2026-01-10T11:59:50Z","value":30.0}
{"event_id":"e7","unit_id":"u2","type":"page_load","ts":"2026-01-11T00:00:00Z","value":300.0}
{"event_id":"e8","unit_id":"u3","type":"purchase","ts":"2026-01-20T00:00:00Z","value":8.0}
{"event_id":"e9","unit_id":"u3","type":"purchase","ts":"2026-01-12T00:00:00Z","value":50.0,"is_bot":true}
{"event_id":"e10","unit_id":"u3","type":"page_load","ts":"2026-01-12T00:00:00Z","value":200.0}
{"event_id":"e11","unit_id":"u3","type":"purchase","ts":"2026-01-08T00:00:00Z","value":3.0}
{"event_id":"e12","unit_id":"u4","type":"purchase","ts":"2026-01-13T00:00:00Z","value":12.0,"properties":{"country":"US"}}
{"event_id":"e13","unit_id":"u4","type":"purchase","ts":"2026-01-14T00:00:00Z","value":4.0}
{"event_id":"e14","unit_id":"u5","type":"purchase","ts":"2026-01-13T00:00:00Z","value":6.0}
{"event_id":"e15","unit_id":"u6","type":"purchase","ts":"2026-01-21T00:00:00Z","value":100.0}
"#;

/// The same events as CSV (properties as a `properties.country` column).
pub const EVENTS_CSV: &str = "event_id,unit_id,type,ts,value,is_bot,properties.country
e1,u1,purchase,2026-01-10T01:00:00Z,10.0,false,US
e1,u1,purchase,2026-01-10T01:00:00Z,10.0,false,US
e2,u1,purchase,2026-01-12T00:00:00Z,5.0,false,
e3,u1,page_load,2026-01-10T02:00:00Z,100.0,false,
e4,u1,purchase,2026-01-05T00:00:00Z,7.0,false,
e5,u2,purchase,2026-01-10T11:59:57Z,20.0,false,DE
e6,u2,purchase,2026-01-10T11:59:50Z,30.0,false,
e7,u2,page_load,2026-01-11T00:00:00Z,300.0,false,
e8,u3,purchase,2026-01-20T00:00:00Z,8.0,false,
e9,u3,purchase,2026-01-12T00:00:00Z,50.0,true,
e10,u3,page_load,2026-01-12T00:00:00Z,200.0,false,
e11,u3,purchase,2026-01-08T00:00:00Z,3.0,false,
e12,u4,purchase,2026-01-13T00:00:00Z,12.0,false,US
e13,u4,purchase,2026-01-14T00:00:00Z,4.0,false,
e14,u5,purchase,2026-01-13T00:00:00Z,6.0,false,
e15,u6,purchase,2026-01-21T00:00:00Z,100.0,false,
";

pub const EXPOSURES_CSV: &str = "unit_id,experiment,variant,assigned_variant,opted_out,ts,country
u1,exp,control,,false,2026-01-10T00:00:00Z,US
u1,exp,control,,false,2026-01-11T00:00:00Z,US
u2,exp,control,,false,2026-01-10T12:00:00Z,DE
u3,exp,treatment,,false,2026-01-11T00:00:00Z,US
u4,exp,treatment,,false,2026-01-11T00:00:00Z,DE
u4,exp,control,,false,2026-01-12T00:00:00Z,DE
u5,exp,control,treatment,true,2026-01-12T00:00:00Z,US
u6,exp,control,,false,2026-01-21T00:00:00Z,US
u7,other,control,,false,2026-01-10T00:00:00Z,US
";

pub const METRICS: &str = r#"{"metrics": [
  {"key": "conversion", "type": "binomial", "filter": {"type": "purchase"}},
  {"key": "purchases", "type": "count", "filter": {"type": "purchase"}},
  {"key": "revenue", "type": "sum", "filter": {"type": "purchase"}},
  {"key": "order_value", "type": "mean", "filter": {"type": "purchase"}},
  {"key": "aov", "type": "ratio", "numerator": {"type": "sum", "filter": {"type": "purchase"}},
                                  "denominator": {"type": "count", "filter": {"type": "purchase"}}},
  {"key": "load_p50", "type": "quantile", "quantile": 0.5, "filter": {"type": "page_load"}, "direction": "increase_is_bad"},
  {"key": "big_purchases", "type": "count", "filter": {"type": "purchase", "value": {"gt": 10}}},
  {"key": "us_purchases", "type": "count", "filter": {"type": "purchase", "properties": {"country": {"in": ["US"]}}}},
  {"key": "revenue_w", "type": "sum", "filter": {"type": "purchase"}, "winsorize": 0.75}
]}"#;

pub fn spec_json(extra: &str) -> String {
    format!(
        r#"{{"key": "exp", "control": "control",
 "variants": [{{"key": "control", "weight": 50}}, {{"key": "treatment", "weight": 50}}],
 "start": "2026-01-10T00:00:00Z", "end": "2026-01-20T00:00:00Z",
 "primary": "conversion",
 "secondary": ["purchases", "revenue", "order_value", "aov", "big_purchases", "us_purchases", "revenue_w"],
 "guardrails": ["load_p50"]{extra}}}"#
    )
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("exposures.ndjson"), EXPOSURES).unwrap();
        std::fs::write(dir.path().join("events.ndjson"), EVENTS).unwrap();
        std::fs::write(dir.path().join("exposures.csv"), EXPOSURES_CSV).unwrap();
        std::fs::write(dir.path().join("events.csv"), EVENTS_CSV).unwrap();
        std::fs::write(dir.path().join("metrics.json"), METRICS).unwrap();
        Fixture { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn analyze_with(
    metrics: &str,
    spec: &str,
    exposures: &Path,
    events: &Path,
    as_of: Option<&str>,
) -> strata_analysis::Result<Results> {
    let registry = MetricRegistry::from_str_named(metrics, Path::new("metrics.json"))?;
    let spec = AnalysisSpec::from_str_named(spec, Path::new("spec.json"))?
        .validate("spec.json", &registry)?;
    let inputs = DataSource {
        exposures: exposures.display().to_string(),
        events: events.display().to_string(),
        aliases: None,
    };
    let as_of = as_of.map(|t| strata_analysis::spec::parse_time(t).unwrap());
    rt().block_on(async {
        let a = Analyzer::new(spec, &registry, &inputs, EngineOptions::default()).await?;
        a.run(as_of).await
    })
}

/// Runs `spec` with `options`; also says whether stage 2a used the fused
/// `strata_parts` aggregate (it is registered only when it applies).
pub fn run_options(
    metrics: &str,
    spec: &str,
    exposures: &str,
    events: &str,
    options: EngineOptions,
) -> (Results, bool) {
    use datafusion::execution::FunctionRegistry;
    let registry = MetricRegistry::from_str_named(metrics, Path::new("metrics.json")).unwrap();
    let spec = AnalysisSpec::from_str_named(spec, Path::new("spec.json"))
        .unwrap()
        .validate("spec.json", &registry)
        .unwrap();
    let inputs = DataSource {
        exposures: exposures.to_string(),
        events: events.to_string(),
        aliases: None,
    };
    rt().block_on(async {
        let a = Analyzer::new(spec, &registry, &inputs, options)
            .await
            .unwrap();
        let fused = a.context().udaf("strata_parts").is_ok();
        (a.run(None).await.unwrap(), fused)
    })
}

pub fn analyze(spec_extra: &str) -> Results {
    let f = Fixture::new();
    analyze_with(
        METRICS,
        &spec_json(spec_extra),
        &f.path("exposures.ndjson"),
        &f.path("events.ndjson"),
        None,
    )
    .unwrap()
}

pub fn metric<'a>(r: &'a Results, key: &str) -> &'a strata_analysis::results::MetricResult {
    r.metrics.iter().find(|m| m.metric == key).unwrap()
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + b.abs())
}

/// Equal up to floating-point rounding (aggregation order differs with the
/// number of files and partitions).
pub fn assert_same(a: &serde_json::Value, b: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-9 * (1.0 + x.abs()),
                "{path}: {x} != {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_same(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{path}"
            );
            for (k, v) in x {
                assert_same(v, &y[k], &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

/// One simulated unit's values by hand, the reference the engine is held
/// to: its variant, and its conversion (any purchase) and revenue (their
/// sum) over purchases deduplicated by `event_id` in `[exposure − 5 s, end)`,
/// not before `start`. `records` are the unit's, exposure first.
pub fn purchases_by_hand(
    records: &[strata_pipeline::record::Record],
    start: i64,
    end: i64,
) -> (String, f64, f64) {
    use strata_pipeline::record::Record;
    let Some(Record::Exposure(x)) = records.first() else {
        panic!("a unit's records start with its exposure")
    };
    let mut seen = std::collections::HashSet::new();
    let lo = (x.ts - 5_000_000).max(start);
    let (mut conv, mut rev) = (0.0, 0.0);
    for r in &records[1..] {
        let Record::Event(e) = r else { continue };
        if !seen.insert(e.event_id.clone())
            || e.event_type != "purchase"
            || e.ts < lo
            || e.ts >= end
        {
            continue;
        }
        conv = 1.0;
        rev += e.value.unwrap_or(0.0);
    }
    (x.variant.clone(), conv, rev)
}

/// Runs the looks `specs` (a spec and its look time) over `data` with one
/// shared rollup (`strata_analysis::analyze_shared`).
pub fn run_shared(
    metrics: &str,
    specs: &[(&str, Option<&str>)],
    data: &DataSource,
    options: EngineOptions,
) -> Vec<Results> {
    let registry = MetricRegistry::from_str_named(metrics, Path::new("metrics.json")).unwrap();
    let looks: Vec<strata_analysis::SharedLook> = specs
        .iter()
        .map(|(spec, as_of)| strata_analysis::SharedLook {
            spec: AnalysisSpec::from_str_named(spec, Path::new("spec.json"))
                .unwrap()
                .validate("spec.json", &registry)
                .unwrap(),
            as_of: as_of.map(|t| strata_analysis::spec::parse_time(t).unwrap()),
            previous: Vec::new(),
        })
        .collect();
    rt().block_on(strata_analysis::analyze_shared(
        &looks, &registry, data, options,
    ))
    .unwrap()
    .into_iter()
    .map(|r| r.unwrap())
    .collect()
}
