//! Test support, not part of the API: a deterministic generator of realistic
//! exposures and events for this crate's tests, examples and benchmarks
//! (feature `testkit`).
//!
//! Units are exposed uniformly over the first half of the experiment; each
//! unit's activity is heavy-tailed (Pareto, α = 1.2, so a few units produce
//! most events, as with zipfian traffic); event types follow a zipfian
//! distribution over ten types; a `purchase` is more likely by a planted
//! relative `effect` in every treatment. A share of each unit's activity
//! falls in the week before the start, so CUPED has a covariate.
//!
//! The files have exactly the Arrow schema strata-pipeline writes
//! (`strata_pipeline::parquet::{exposure_schema, event_schema}`, checked by
//! the `testkit` integration test), so what is measured on them is what
//! runs on the pipeline's output: the segment attribute `country` is a key
//! of the `attributes` map, `received_at` is set, and `properties` is an
//! empty map.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::builder::{MapBuilder, StringBuilder};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// The event types, most frequent first.
pub const EVENT_TYPES: [&str; 10] = [
    "page_view",
    "click",
    "page_load",
    "search",
    "add_to_cart",
    "purchase",
    "share",
    "signup",
    "error",
    "logout",
];

/// Generator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Exposed units.
    pub units: u64,
    /// Mean events per unit (including the pre-period).
    pub events_per_unit: f64,
    /// Variant keys and weights; the first is the control.
    pub variants: Vec<(String, f64)>,
    /// Relative lift of the purchase rate in every treatment.
    pub effect: f64,
    /// Experiment start, µs since the epoch.
    pub start_us: i64,
    /// Experiment length in days.
    pub days: i64,
    /// Random seed.
    pub seed: u64,
    /// Share of duplicated events (same `event_id` twice).
    pub duplicate_rate: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            units: 1_000,
            events_per_unit: 20.0,
            variants: vec![("control".into(), 1.0), ("treatment".into(), 1.0)],
            effect: 0.0,
            start_us: 1_767_225_600_000_000, // 2026-01-01T00:00:00Z
            days: 14,
            seed: 1,
            duplicate_rate: 0.0,
        }
    }
}

/// One exposure row.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    /// Unit.
    pub unit_id: String,
    /// Variant.
    pub variant: String,
    /// µs since the epoch.
    pub ts_us: i64,
    /// Segment attribute `country`, written as a key of `attributes`.
    pub country: String,
}

/// One event row.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event id.
    pub event_id: String,
    /// Unit.
    pub unit_id: String,
    /// Type.
    pub kind: &'static str,
    /// µs since the epoch.
    pub ts_us: i64,
    /// Value (purchase amount, page load ms).
    pub value: Option<f64>,
}

const DAY_US: i64 = 86_400_000_000;
/// `received_at − ts`: a fixed delivery delay (drawing one would change the
/// random stream, and with it every data set generated so far).
const RECEIVED_AFTER_US: i64 = 250_000;
const COUNTRIES: [&str; 4] = ["US", "DE", "BR", "JP"];

/// Generates the rows of `units` units starting at unit index `first`,
/// calling `sink` with each unit's exposure and events.
pub fn generate_units(
    cfg: &GenConfig,
    first: u64,
    count: u64,
    mut sink: impl FnMut(Exposure, &mut Vec<Event>),
) {
    let total_w: f64 = cfg.variants.iter().map(|v| v.1).sum();
    let mut events = Vec::new();
    // Zipfian type weights 1/k.
    let type_w: Vec<f64> = (1..=EVENT_TYPES.len()).map(|k| 1.0 / k as f64).collect();
    let type_total: f64 = type_w.iter().sum();
    for u in first..first + count {
        let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u);
        let unit_id = format!("u{u:08}");
        let mut r = rng.random::<f64>() * total_w;
        let mut vi = 0;
        for (i, v) in cfg.variants.iter().enumerate() {
            if r < v.1 {
                vi = i;
                break;
            }
            r -= v.1;
            vi = i;
        }
        let exposed = cfg.start_us + (rng.random::<f64>() * (cfg.days * DAY_US / 2) as f64) as i64;
        let end = cfg.start_us + cfg.days * DAY_US;
        // Pareto activity with mean 1 (α = 1.2, capped).
        let alpha = 1.2;
        let xm = (alpha - 1.0) / alpha;
        let activity = (xm / (1.0 - rng.random::<f64>()).powf(1.0 / alpha)).min(200.0);
        let lambda = cfg.events_per_unit * activity;
        let n = poisson(&mut rng, lambda);
        let lift = if vi == 0 { 1.0 } else { 1.0 + cfg.effect };
        events.clear();
        for e in 0..n {
            // 20% of activity in the pre-period week.
            let pre = rng.random::<f64>() < 0.2;
            let ts = if pre {
                cfg.start_us - 7 * DAY_US + (rng.random::<f64>() * (7 * DAY_US) as f64) as i64
            } else {
                exposed + (rng.random::<f64>() * (end - exposed) as f64) as i64
            };
            let mut t = rng.random::<f64>() * type_total;
            let mut k = 0;
            while k + 1 < type_w.len() && t >= type_w[k] {
                t -= type_w[k];
                k += 1;
            }
            let mut kind = EVENT_TYPES[k];
            if kind == "purchase" && !pre && rng.random::<f64>() > lift.min(1.0) {
                kind = "add_to_cart";
            }
            if kind == "add_to_cart"
                && !pre
                && lift > 1.0
                && rng.random::<f64>() < (lift - 1.0) * type_w[5] / type_w[4]
            {
                kind = "purchase";
            }
            let value = match kind {
                "purchase" => {
                    Some(((rng.random::<f64>() * 2.0 + 2.0).exp() * 100.0).round() / 100.0)
                }
                "page_load" => Some((rng.random::<f64>() * 1.5 + 5.0).exp().round()),
                _ => None,
            };
            let ev = Event {
                event_id: format!("e{u:08}-{e}"),
                unit_id: unit_id.clone(),
                kind,
                ts_us: ts,
                value,
            };
            if cfg.duplicate_rate > 0.0 && rng.random::<f64>() < cfg.duplicate_rate {
                events.push(ev.clone());
            }
            events.push(ev);
        }
        let exposure = Exposure {
            unit_id,
            variant: cfg.variants[vi].0.clone(),
            ts_us: exposed,
            country: COUNTRIES[(u % 4) as usize].to_string(),
        };
        sink(exposure, &mut events);
    }
}

fn poisson(rng: &mut StdRng, lambda: f64) -> u64 {
    if lambda < 30.0 {
        let l = (-lambda).exp();
        let (mut k, mut p) = (0, 1.0);
        loop {
            p *= rng.random::<f64>();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
    // Normal approximation for large means.
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (lambda + z * lambda.sqrt()).round().max(0.0) as u64
}

/// The `map<string, string>` type of `attributes` and `properties`, built
/// as strata-pipeline builds it.
fn map_type() -> DataType {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
        .finish()
        .data_type()
        .clone()
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Schema of generated exposures: strata-pipeline's.
pub fn exposure_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("unit_id", DataType::Utf8, false),
        Field::new("experiment", DataType::Utf8, false),
        Field::new("variant", DataType::Utf8, false),
        Field::new("assigned_variant", DataType::Utf8, false),
        Field::new("opted_out", DataType::Boolean, false),
        Field::new("ts", ts_type(), false),
        Field::new("received_at", ts_type(), false),
        Field::new("attributes", map_type(), false),
        // Nullable, unlike the others: files written before it was added
        // lack it, and a reader merging both kinds of files fills it with
        // nulls there (read as false).
        Field::new("is_bot", DataType::Boolean, true),
    ]))
}

/// Schema of generated events: strata-pipeline's.
pub fn event_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("unit_id", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("ts", ts_type(), false),
        Field::new("received_at", ts_type(), false),
        Field::new("value", DataType::Float64, true),
        Field::new("properties", map_type(), false),
        Field::new("is_bot", DataType::Boolean, false),
        // Nullable for the reason `is_bot` of exposures is.
        Field::new("opted_out", DataType::Boolean, true),
    ]))
}

fn timestamps(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(values).with_timezone("UTC"))
}

/// A map column with the entries `entries(row)` for each row.
fn map_column<'a, I>(rows: usize, mut entries: impl FnMut(usize) -> I) -> Result<ArrayRef>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for row in 0..rows {
        for (k, v) in entries(row) {
            b.keys().append_value(k);
            b.values().append_value(v);
        }
        b.append(true).map_err(|e| Error::Engine(e.into()))?;
    }
    Ok(Arc::new(b.finish()))
}

/// Arrow batch of exposures.
pub fn exposure_batch(experiment: &str, rows: &[Exposure]) -> Result<RecordBatch> {
    let variants: ArrayRef = Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.variant.as_str()),
    ));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.unit_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|_| experiment),
        )),
        variants.clone(),
        // Every unit is served what it was assigned.
        variants,
        Arc::new(BooleanArray::from(vec![false; rows.len()])),
        timestamps(rows.iter().map(|r| r.ts_us)),
        timestamps(rows.iter().map(|r| r.ts_us + RECEIVED_AFTER_US)),
        map_column(rows.len(), |i| [("country", rows[i].country.as_str())])?,
        Arc::new(BooleanArray::from(vec![false; rows.len()])),
    ];
    RecordBatch::try_new(exposure_schema(), cols).map_err(|e| Error::Engine(e.into()))
}

/// Arrow batch of events.
pub fn event_batch(rows: &[Event]) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.event_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.unit_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.kind))),
        timestamps(rows.iter().map(|r| r.ts_us)),
        timestamps(rows.iter().map(|r| r.ts_us + RECEIVED_AFTER_US)),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.value).collect::<Vec<_>>(),
        )),
        map_column(rows.len(), |_| [])?,
        Arc::new(BooleanArray::from(vec![false; rows.len()])),
        Arc::new(BooleanArray::from(vec![false; rows.len()])),
    ];
    RecordBatch::try_new(event_schema(), cols).map_err(|e| Error::Engine(e.into()))
}

/// Writes a generated data set as Parquet in `files` user partitions:
/// `dir/exposures/part=NN/data.parquet` and `dir/events/part=NN/data.parquet`,
/// each partition a contiguous range of units (so a unit's exposures and
/// events share a partition, as in the pipeline's layout), streaming (memory
/// is bounded by one batch of units).
pub fn write_parquet(
    cfg: &GenConfig,
    experiment: &str,
    dir: &Path,
    files: u64,
) -> Result<(u64, u64)> {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::basic::Compression;
    use datafusion::parquet::file::properties::WriterProperties;
    let io = |path: &Path, e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let pq = |e: datafusion::parquet::errors::ParquetError| Error::Engine(e.into());
    let (exp_dir, ev_dir) = (dir.join("exposures"), dir.join("events"));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1 << 20))
        .build();
    let per_file = cfg.units.div_ceil(files.max(1));
    let (mut n_exp, mut n_ev) = (0, 0);
    for f in 0..files.max(1) {
        let first = f * per_file;
        if first >= cfg.units {
            break;
        }
        let count = per_file.min(cfg.units - first);
        let part = format!("part={f:02}");
        for d in [exp_dir.join(&part), ev_dir.join(&part)] {
            std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
        }
        let ep = exp_dir.join(&part).join("data.parquet");
        let vp = ev_dir.join(&part).join("data.parquet");
        let mut ew = ArrowWriter::try_new(
            std::fs::File::create(&ep).map_err(|e| io(&ep, e))?,
            exposure_schema(),
            Some(props.clone()),
        )
        .map_err(pq)?;
        let mut vw = ArrowWriter::try_new(
            std::fs::File::create(&vp).map_err(|e| io(&vp, e))?,
            event_schema(),
            Some(props.clone()),
        )
        .map_err(pq)?;
        let (mut exps, mut evs) = (Vec::new(), Vec::new());
        let mut err = None;
        generate_units(cfg, first, count, |x, e| {
            exps.push(x);
            evs.append(e);
            if evs.len() >= 1 << 16 && err.is_none() {
                n_ev += evs.len() as u64;
                if let Err(e) = event_batch(&evs).and_then(|b| vw.write(&b).map_err(pq)) {
                    err = Some(e);
                }
                evs.clear();
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        n_ev += evs.len() as u64;
        n_exp += exps.len() as u64;
        vw.write(&event_batch(&evs)?).map_err(pq)?;
        ew.write(&exposure_batch(experiment, &exps)?).map_err(pq)?;
        vw.close().map_err(pq)?;
        ew.close().map_err(pq)?;
    }
    Ok((n_exp, n_ev))
}
