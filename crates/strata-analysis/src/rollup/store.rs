//! The shared rollup kept between runs: one file per UTC day of events,
//! recomputed only for the days whose inputs or cut points changed, and a
//! full recomputation on demand that checks the kept days against it.
//!
//! Why a day is the unit: every UTC midnight is a cut point, so a segment
//! lies within one day, and a day's rows depend only on (a) the event files
//! holding that day (the pipeline's `date=` directories), (b) the cut points
//! falling in that day (per unit: window starts and novelty boundaries; for
//! all units: starts, ends, look times, pre-period starts), and (c) what
//! every day depends on: the rollup's columns, deduplication, the bot
//! detection's limits, the aliases, and any event file outside a `date=`
//! directory (a glob, whose files are not listed, makes every day new). A
//! day is recomputed when its fingerprint of (a)–(c) changed: late events
//! land in their day's directory and change its files, a unit's first
//! exposure puts a cut point in its day, a look's time one in today.
//!
//! Every unit with events is rolled up, exposed or not: a unit exposed
//! later needs its earlier days (a CUPED pre-period), and those days'
//! fingerprints do not change when it is exposed. So the pass joins the
//! events to `unit_cuts` with a LEFT join and keys rows by `unit_id`.
//!
//! Per day, the bot detection's candidate units of that day (over a limit
//! within the day) and their events are kept too: every bucket of the
//! detection lies within a day, so the union of the days' candidates over
//! an experiment's period holds its bots, and their events are all its
//! exact detection reads.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use super::{cut_inputs, materialize, pass, shared_options, Key, Needs, Rollup, DAY_NS};
use crate::engine::{DataSource, EngineOptions};
use crate::error::{Error, Result};
use crate::metrics::MetricRegistry;
use crate::plan::{self, Bounds};
use crate::spec::ValidSpec;

/// The manifest's format; another one is read as no manifest (every day
/// recomputed).
const VERSION: u32 = 1;

/// What is kept of one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Day {
    /// Fingerprint of the day's inputs and cut points.
    fingerprint: u64,
    /// The rollup rows' file, relative to the store.
    rows: String,
    /// The bot candidates' events' file, when the detection is on.
    bots: Option<String>,
}

/// The store's manifest: which columns, and which days with what inputs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    /// The rollup's columns (keys as JSON), in column order.
    keys: Vec<serde_json::Value>,
    /// Fingerprint of what every day depends on.
    common: u64,
    /// Days since the epoch → what is kept.
    days: BTreeMap<i64, Day>,
    /// The latest look time of the last full recomputation (RFC 3339).
    full_at: Option<String>,
}

/// A rollup kept under a directory between runs.
#[derive(Debug, Clone)]
pub struct RollupStore {
    dir: PathBuf,
}

/// What a refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Refreshed {
    /// Days the looks need.
    pub days: usize,
    /// Days recomputed from the events.
    pub recomputed: usize,
    /// Whether every day was recomputed.
    pub full: bool,
    /// On a full recomputation, the kept days whose rows differed from the
    /// recomputed ones (`YYYY-MM-DD`): a kept day that should have been
    /// recomputed, never expected.
    pub mismatched: Vec<String>,
}

impl RollupStore {
    /// A store in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }

    /// The manifest, or an empty one when there is none or it cannot be
    /// read (every day is then recomputed: never an error, never stale).
    fn manifest(&self) -> Manifest {
        std::fs::read(self.manifest_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
            .filter(|m| m.version == VERSION)
            .unwrap_or_default()
    }

    /// Writes `m` atomically (a temporary file renamed over the old one).
    fn write_manifest(&self, m: &Manifest) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(".manifest.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(m).unwrap_or_default())?;
        std::fs::rename(tmp, self.manifest_path())
    }
}

impl RollupStore {
    /// Brings the kept rollup up to date for `looks` and returns it: the
    /// days the looks need whose fingerprint changed (all of them with
    /// `full`) are recomputed from `data` in one pass, the others read
    /// from their files. With `full`, each kept day whose fingerprint had
    /// not changed is compared with its recomputed rows
    /// ([`Refreshed::mismatched`]).
    pub async fn refresh(
        &self,
        looks: &[(ValidSpec, Option<DateTime<Utc>>)],
        registry: &MetricRegistry,
        data: &DataSource,
        options: &EngineOptions,
        full: bool,
    ) -> Result<(Rollup, Refreshed)> {
        let options = shared_options(options);
        let needs = Needs::of(looks, registry, &options)?;
        let mut manifest = self.manifest();
        // The kept columns when they hold every needed one (a look that
        // ended leaves its columns, harmlessly); else the needed ones, and
        // every day anew.
        let kept: Option<Vec<Key>> = manifest.keys.iter().map(Key::from_json).collect();
        let (keys, reset) = match kept {
            Some(k) if !k.is_empty() && needs.keys.iter().all(|x| k.contains(x)) => (k, false),
            _ => (needs.keys.clone(), true),
        };
        let (inputs, units) = cut_inputs(&needs, &keys, data, &options).await?;
        let ctx = &inputs.ctx;
        let det = registry.bot_detection();

        let mut common = DefaultHasher::new();
        VERSION.hash(&mut common);
        serde_json::to_string(&keys.iter().map(Key::to_json).collect::<Vec<_>>())
            .unwrap_or_default()
            .hash(&mut common);
        options.assume_unique_event_ids.hash(&mut common);
        serde_json::to_string(det)
            .unwrap_or_default()
            .hash(&mut common);
        let (file_days, undated) = file_fingerprints(&inputs.events.files);
        undated.hash(&mut common);
        if inputs.events.files.is_empty() {
            // A glob: its files are not listed, so no day can be kept.
            rand::random::<u64>().hash(&mut common);
        }
        if let Some(a) = &inputs.aliases {
            file_fingerprints(&a.source.files).hash(&mut common);
            a.source.path.hash(&mut common);
        }
        let common = common.finish();
        let cut_days = cut_fingerprints(ctx, &needs).await?;
        let fingerprint = |day: i64| {
            let mut h = DefaultHasher::new();
            (common, day, file_days.get(&day), cut_days.get(&day)).hash(&mut h);
            h.finish()
        };

        let days: Vec<i64> = if needs.cut_looks.is_empty() {
            Vec::new()
        } else {
            (needs.lo().div_euclid(DAY_NS)..=(needs.hi() - 1).div_euclid(DAY_NS)).collect()
        };
        let full = full || reset || manifest.common != common;
        let todo: Vec<i64> = days
            .iter()
            .copied()
            .filter(|&d| {
                full || manifest.days.get(&d).map(|x| x.fingerprint) != Some(fingerprint(d))
            })
            .collect();
        let mut refreshed = Refreshed {
            days: days.len(),
            recomputed: todo.len(),
            full,
            mismatched: Vec::new(),
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io(&self.dir, e))?;
        // One pass per day, each written before the next: memory holds
        // one day's aggregate and rows, not the whole period's (a pass over
        // 21 days of 100 M events at once grew past 10 GiB).
        for &d in &todo {
            let fp = fingerprint(d);
            let range = format!("(ts >= {} AND ts < {})", d * DAY_NS, (d + 1) * DAY_NS);
            pass(&inputs, &keys, &range, &options, true).await?;
            materialize(
                ctx,
                "rollup_new",
                &[plan::rollup_units_by_id_sql(keys.len())],
            )
            .await?;
            let rows = collect(ctx, &plan::rollup_day_sql(d * DAY_NS, (d + 1) * DAY_NS)).await?;
            let kept = manifest.days.get(&d).filter(|x| x.fingerprint == fp);
            if let Some(k) = kept {
                let before = self.read(&k.rows)?;
                if !same_rows(&before, &rows)? {
                    refreshed.mismatched.push(date_of(d));
                }
            }
            let name = format!("day-{d}-{fp:016x}.parquet");
            self.write(&name, &rows)?;
            let bots = if det.is_active() {
                let day = Bounds {
                    start: d * DAY_NS,
                    end: (d + 1) * DAY_NS,
                    pre_start: None,
                    skew: 0,
                    novelty: 0,
                    exposures_from: None,
                };
                let found = plan::bot_units_in_sql(det, &day, "", false, "events");
                materialize(
                    ctx,
                    super::BOT_CANDIDATES,
                    &[format!("SELECT uidx AS unit_id FROM ({found})")],
                )
                .await?;
                let rows =
                    collect(ctx, &plan::bot_candidate_events_sql(day.start, day.end)).await?;
                let name = format!("bots-{d}-{fp:016x}.parquet");
                self.write(&name, &rows)?;
                Some(name)
            } else {
                None
            };
            manifest.days.insert(
                d,
                Day {
                    fingerprint: fp,
                    rows: name,
                    bots,
                },
            );
        }
        // The last day's tables: written, no longer needed in memory.
        for t in ["rollup_by_uidx", "rollup_new"] {
            ctx.deregister_table(t)?;
        }
        inputs.check_unchanged()?;
        manifest.version = VERSION;
        manifest.keys = keys.iter().map(Key::to_json).collect();
        manifest.common = common;
        if full {
            // As of the latest look: the time the caller's schedule runs on.
            manifest.full_at = Some(
                DateTime::from_timestamp_nanos(needs.hi())
                    .to_rfc3339_opts(SecondsFormat::Secs, true),
            );
        }
        self.write_manifest(&manifest)
            .map_err(|e| self.io(&self.manifest_path(), e))?;
        self.remove_unlisted(&manifest);

        // The rollup of the needed days, and the bot candidates' events of
        // the days of the looks' periods.
        let mut batches = Vec::new();
        let mut bot_batches = Vec::new();
        let first_bot_day = needs.start().div_euclid(DAY_NS);
        for d in &days {
            let Some(day) = manifest.days.get(d) else {
                continue;
            };
            batches.extend(self.read(&day.rows)?);
            if let Some(b) = day.bots.as_ref().filter(|_| *d >= first_bot_day) {
                bot_batches.extend(self.read(b)?);
            }
        }
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => Arc::new(datafusion::arrow::datatypes::Schema::empty()),
        };
        let bot_events = if det.is_active() {
            let schema = match bot_batches.first() {
                Some(b) => b.schema(),
                None => collect(ctx, plan::BOT_EVENTS_SCHEMA_SQL).await?.0,
            };
            Some((schema, bot_batches))
        } else {
            None
        };
        Ok((
            Rollup {
                keys,
                schema,
                batches,
                covered: needs.covered,
                bot_events,
                index: Default::default(),
                units,
            },
            refreshed,
        ))
    }

    /// The latest look time of the last refresh that recomputed every day.
    pub fn full_at(&self) -> Option<DateTime<Utc>> {
        self.manifest()
            .full_at
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
    }

    fn io(&self, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Writes `rows` as the file `name` of the store, atomically.
    fn write(&self, name: &str, rows: &(SchemaRef, Vec<RecordBatch>)) -> Result<()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let file = std::fs::File::create(&tmp).map_err(|e| self.io(&tmp, e))?;
        let mut w = ArrowWriter::try_new(file, rows.0.clone(), None)
            .map_err(datafusion::error::DataFusionError::from)?;
        for b in &rows.1 {
            w.write(b)
                .map_err(datafusion::error::DataFusionError::from)?;
        }
        w.close()
            .map_err(datafusion::error::DataFusionError::from)?;
        std::fs::rename(&tmp, &path).map_err(|e| self.io(&path, e))
    }

    /// The rows of the store's file `name`.
    fn read(&self, name: &str) -> Result<Vec<RecordBatch>> {
        let path = self.dir.join(name);
        let file = std::fs::File::open(&path).map_err(|e| self.io(&path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(datafusion::error::DataFusionError::from)?;
        reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| datafusion::error::DataFusionError::from(e).into())
    }

    /// Removes the files no day of `m` names (left by earlier runs).
    fn remove_unlisted(&self, m: &Manifest) {
        let listed: std::collections::BTreeSet<&str> = m
            .days
            .values()
            .flat_map(|d| std::iter::once(d.rows.as_str()).chain(d.bots.as_deref()))
            .collect();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".parquet") && !listed.contains(name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Runs `sql` and collects its rows with their schema.
async fn collect(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let df = ctx.sql(sql).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    Ok((schema, df.collect().await?))
}

/// Per day, the fingerprint of the cut points falling in it: each unit's
/// own (`unit_cuts`) and the common ones.
async fn cut_fingerprints(
    ctx: &datafusion::prelude::SessionContext,
    needs: &Needs,
) -> Result<BTreeMap<i64, u64>> {
    let mut days: BTreeMap<i64, u64> = BTreeMap::new();
    let mut add = |unit: &str, c: i64| {
        let mut h = DefaultHasher::new();
        (unit, c).hash(&mut h);
        // XOR: the order of the units does not matter, and the pairs are
        // distinct.
        *days.entry(c.div_euclid(DAY_NS)).or_default() ^= h.finish();
    };
    for &c in &needs.globals {
        add("", c);
    }
    if needs.cut_looks.is_empty() {
        return Ok(days);
    }
    for batch in ctx
        .sql("SELECT unit_id, cuts FROM unit_cuts")
        .await?
        .collect()
        .await?
    {
        let units = cast(batch.column(0), &DataType::Utf8)
            .map_err(datafusion::error::DataFusionError::from)?;
        let units = units.as_string::<i32>();
        let cuts = batch.column(1).as_list::<i32>();
        let values = cuts.values().as_primitive::<Int64Type>();
        let offsets = cuts.value_offsets();
        for i in 0..batch.num_rows() {
            if units.is_null(i) {
                continue;
            }
            for j in offsets[i] as usize..offsets[i + 1] as usize {
                add(units.value(i), values.value(j));
            }
        }
    }
    Ok(days)
}

/// Whether two days' rows (each sorted by unit and segment) are the same:
/// counts exactly, sums to 1e-12 relative (the order of additions may
/// differ), value lists as multisets.
pub(crate) fn same_rows(a: &[RecordBatch], b: &(SchemaRef, Vec<RecordBatch>)) -> Result<bool> {
    let (schema, b) = b;
    let concat = |batches: &[RecordBatch]| {
        concat_batches(schema, batches).map_err(datafusion::error::DataFusionError::from)
    };
    let (a, b) = (concat(a)?, concat(b)?);
    if a.num_rows() != b.num_rows() || a.num_columns() != b.num_columns() {
        return Ok(false);
    }
    for (x, y) in a.columns().iter().zip(b.columns()) {
        let same = match x.data_type() {
            DataType::Float64 => {
                let (x, y) = (
                    x.as_primitive::<Float64Type>(),
                    y.as_primitive::<Float64Type>(),
                );
                (0..x.len()).all(|i| match (x.is_valid(i), y.is_valid(i)) {
                    (true, true) => close(x.value(i), y.value(i)),
                    (a, b) => a == b,
                })
            }
            DataType::List(_) => {
                let (x, y) = (x.as_list::<i32>(), y.as_list::<i32>());
                (0..x.len()).all(|i| {
                    if x.is_valid(i) != y.is_valid(i) {
                        return false;
                    }
                    let sorted = |l: Arc<dyn Array>| {
                        let mut v: Vec<f64> =
                            l.as_primitive::<Float64Type>().iter().flatten().collect();
                        v.sort_by(f64::total_cmp);
                        v
                    };
                    !x.is_valid(i) || {
                        let (p, q) = (sorted(x.value(i)), sorted(y.value(i)));
                        p.len() == q.len() && p.iter().zip(&q).all(|(a, b)| close(*a, *b))
                    }
                })
            }
            _ => x.to_data() == y.to_data(),
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// `YYYY-MM-DD` of a day number.
fn date_of(day: i64) -> String {
    (chrono::NaiveDate::default() + chrono::Days::new(day.max(0) as u64))
        .format("%Y-%m-%d")
        .to_string()
}

/// The UTC day (days since the epoch) of a `date=YYYY-MM-DD` component of
/// `path`, if it has one.
fn dated(path: &Path) -> Option<i64> {
    path.components().find_map(|c| {
        let s = c.as_os_str().to_str()?;
        let d = chrono::NaiveDate::parse_from_str(s.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
        Some(
            d.signed_duration_since(chrono::NaiveDate::default())
                .num_days(),
        )
    })
}

/// A file's part of a fingerprint: its path, size and modification time.
fn file_hash(path: &Path, h: &mut DefaultHasher) {
    path.hash(h);
    if let Ok(m) = std::fs::metadata(path) {
        m.len().hash(h);
        m.modified().ok().hash(h);
    }
}

/// Per day, the fingerprint of its event files; and of the files outside
/// any `date=` directory.
fn file_fingerprints(files: &[PathBuf]) -> (BTreeMap<i64, u64>, u64) {
    let mut days: BTreeMap<i64, DefaultHasher> = BTreeMap::new();
    let mut undated = DefaultHasher::new();
    let mut sorted: Vec<&PathBuf> = files.iter().collect();
    sorted.sort();
    for f in sorted {
        match dated(f) {
            Some(d) => file_hash(f, days.entry(d).or_default()),
            None => file_hash(f, &mut undated),
        }
    }
    (
        days.into_iter().map(|(d, h)| (d, h.finish())).collect(),
        undated.finish(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_come_from_the_date_directory() {
        assert_eq!(
            dated(Path::new(
                "/d/kind=events/date=1970-01-02/part=03/seg-1-2.parquet"
            )),
            Some(1)
        );
        assert_eq!(dated(Path::new("/d/events/part=03/data.parquet")), None);
        assert_eq!(dated(Path::new("/d/date=garbage/x.parquet")), None);
    }
}
