//! Shared per-unit rollups: one pass over the events for every experiment
//! of a run.
//!
//! Analysed one by one, N experiments cost N passes over the events: each
//! joins every event to its units, deduplicates by `event_id` and reduces
//! to per-unit values. A [`Rollup`] does that work once for all of them. It
//! reduces the events to one row per unit and *segment* — the stretch of a
//! unit's time between two consecutive cut points — with one column per
//! distinct part of any experiment's metrics (a count, a sum or a
//! quantile metric's list of values of matching events). Each experiment's
//! stage 2 then sums, per unit, the rows of the segments inside each of its
//! windows ([`read`]): a read of the rollup,
//! a fraction of the events' size, instead of the events.
//!
//! # Exactness at the exposure boundary
//! A segment is never split by a window, because every bound of every
//! window of every experiment is a cut point (and so is every UTC
//! midnight, so that a segment lies within one day): per unit, the start of its
//! event window (first exposure less the clock skew, not before the start)
//! and the end of its novelty early window; for all units, each
//! experiment's start, end (or look) and CUPED pre-period start. An event
//! belongs to the segment starting at the largest cut point at or before
//! its time ([`CUT_FLOOR`]), so "the segment starts inside the window" is
//! "every event of the segment is inside it", and the sums are those of the
//! events themselves — the same counts, and the same sums up to the order
//! of floating-point additions (about 1e-15 relative, as between two runs
//! of the engine).
//!
//! Deduplication by `event_id` happens in the shared pass, per unit as in
//! the engine, keeping the copy's earliest time; so copies of an event that
//! differ in their time may fall in another segment than the engine would
//! put them in when one copy lies outside an experiment's time range (the
//! pipeline's copies are identical). Bots flagged on exposures or events are
//! left out as in the engine; the heuristic bot detection runs once over
//! the union of the experiments' periods to find candidate units (a
//! superset of every experiment's, since counts over a longer period are
//! never lower) and keeps their events, and each experiment runs its own
//! exact detection over those alone.
//!
//! Stage 1 is shared too: one scan of the exposures gives every look its
//! units and every unit its first exposure in each look, of which its cut
//! points are made ([`units`]).
//!
//! What still reads events per experiment: the per-protocol analysis'
//! opt-outs by events. A rollup runs in this process only: its cut function is
//! not one a Ballista executor knows, so [`analyze_shared`] analyses each
//! experiment on its own on a cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, Int64Array, ListArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

pub(crate) mod read;
pub mod store;
mod units;

pub(crate) use read::{stage2, VariantValues};
pub use store::{Refreshed, RollupStore};

use crate::engine::{self, Analyzer, DataSource, EngineOptions};
use crate::error::{Error, Result};
use crate::metrics::{Filter, Metric, MetricRegistry, MetricType};
use crate::plan::{self, Agg, Bounds, Part, Window};
use crate::results::Results;
use crate::spec::ValidSpec;

/// The SQL name of the cut function: `strata_cut_floor(cuts, ts)`.
pub(crate) const CUT_FLOOR: &str = "strata_cut_floor";

/// Nanoseconds per day.
const DAY_NS: i64 = 86_400 * plan::NS;

/// The table holding the rollup in a session.
pub(crate) const TABLE: &str = "rollup";

/// The table of candidate bot units (`unit_id`) while a rollup is built.
pub(crate) const BOT_CANDIDATES: &str = "bot_candidates";

/// The table of the candidate bot units' events (`event_id`, `unit_id`,
/// `type`, `ts`, `is_bot`) in a session.
pub(crate) const BOT_EVENTS: &str = "bot_events";

/// One column of the rollup: an aggregate of matching events, whatever the
/// window (windows are applied when the rollup is read).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub agg: Agg,
    pub filter: Filter,
    pub needs_value: bool,
}

impl Key {
    /// The key as stored in a [`store::RollupStore`]'s manifest.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let agg = match self.agg {
            Agg::Count => "count",
            Agg::Sum => "sum",
            Agg::Values => "values",
        };
        serde_json::json!({"agg": agg, "filter": self.filter, "needs_value": self.needs_value})
    }

    /// A key read back from a manifest; `None` if it is not one.
    pub(crate) fn from_json(v: &serde_json::Value) -> Option<Self> {
        let agg = match v.get("agg")?.as_str()? {
            "count" => Agg::Count,
            "sum" => Agg::Sum,
            "values" => Agg::Values,
            _ => return None,
        };
        Some(Self {
            agg,
            filter: serde_json::from_value(v.get("filter")?.clone()).ok()?,
            needs_value: v.get("needs_value")?.as_bool()?,
        })
    }

    fn of(p: &Part) -> Self {
        Self {
            agg: p.agg,
            filter: p.filter.clone(),
            needs_value: p.needs_value,
        }
    }
}

/// One experiment's look to analyse with a shared rollup.
#[derive(Debug, Clone)]
pub struct SharedLook {
    /// The experiment.
    pub spec: ValidSpec,
    /// The look's time (default: the experiment's end).
    pub as_of: Option<DateTime<Utc>>,
    /// Information fractions of the earlier looks
    /// ([`Analyzer::run_after`]).
    pub previous: Vec<f64>,
}

impl SharedLook {
    /// Analyses this look with a pass of its own over the events (no
    /// rollup): how a look is taken on a cluster, or when no shared pass
    /// can be made.
    pub async fn analyze_alone(
        &self,
        registry: &MetricRegistry,
        data: &DataSource,
        options: EngineOptions,
    ) -> Result<Results> {
        Analyzer::new(self.spec.clone(), registry, data, options)
            .await?
            .run_after(self.as_of, &self.previous)
            .await
    }
}

/// Per-unit, per-segment sums of the parts of several experiments' metrics,
/// computed in one pass over the events (the module's documentation says
/// how and why it is exact).
#[derive(Debug)]
pub struct Rollup {
    keys: Vec<Key>,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// The experiments (key and bounds of each look) it was built for.
    covered: Vec<(String, Bounds)>,
    /// The events of the units the bot detection may find, when it is on.
    bot_events: Option<(SchemaRef, Vec<RecordBatch>)>,
    /// The rows' units numbered, made by the first look that reads them.
    index: std::sync::OnceLock<Arc<read::Index>>,
    /// Every look's units (stage 1), from the scan made for the cut points.
    units: Option<Arc<units::SharedUnits>>,
}

/// What one experiment reads of a rollup: the rollup column of each of its
/// parts, and of each quantile metric's values.
#[derive(Clone)]
pub(crate) struct View {
    /// The rollup's rows.
    pub rows: Vec<RecordBatch>,
    /// Their units numbered.
    pub index: Arc<read::Index>,
    /// Per part of the experiment, the rollup's column.
    pub parts: Vec<String>,
    /// Per quantile metric (by key), the rollup's column of its values.
    pub values: BTreeMap<String, String>,
    /// The bounds of the looks the rollup was built for.
    pub bounds: Vec<Bounds>,
    /// Whether the bot detection's candidates' events are registered.
    pub bot_events: bool,
    /// Every look's units (stage 1), when the rollup holds them.
    units: Option<Arc<units::SharedUnits>>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("parts", &self.parts)
            .field("values", &self.values)
            .field("bounds", &self.bounds)
            .field("bot_events", &self.bot_events)
            .finish_non_exhaustive()
    }
}

impl View {
    /// Stage 1's `units_all` of the look of experiment `key` with bounds
    /// `b` under `mode`, from the shared scan of the exposures ([`units`]);
    /// `None` when the rollup holds no such look (then stage 1 is the
    /// look's own query).
    pub(crate) fn units_all(
        &self,
        key: &str,
        b: &Bounds,
        mode: crate::spec::AnalysisMode,
    ) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
        match &self.units {
            Some(u) => u.look(key, b, mode).map(|l| u.units_all(l)).transpose(),
            None => Ok(None),
        }
    }

    /// Fails unless the rollup was built for a look with bounds `b`.
    pub(crate) fn check(&self, b: &Bounds) -> Result<()> {
        if self.bounds.contains(b) {
            Ok(())
        } else {
            Err(Error::invalid(
                "rollup",
                "as_of",
                "the shared rollup was not built for this look",
            ))
        }
    }
}

impl Rollup {
    /// Builds the rollup of the looks `looks` (a spec and its look time)
    /// from `data`: one pass over the events.
    pub async fn build(
        looks: &[(ValidSpec, Option<DateTime<Utc>>)],
        registry: &MetricRegistry,
        data: &DataSource,
        options: &EngineOptions,
    ) -> Result<Self> {
        let options = shared_options(options);
        let needs = Needs::of(looks, registry, &options)?;
        let (inputs, units) = cut_inputs(&needs, &needs.keys, data, &options).await?;
        let ctx = &inputs.ctx;
        let (schema, batches, bot_events) = if needs.cut_looks.is_empty() {
            let empty = Arc::new(datafusion::arrow::datatypes::Schema::empty());
            (empty, Vec::new(), None)
        } else {
            let (lo, hi) = (needs.lo(), needs.hi());
            let range = format!("ts >= {lo} AND ts < {hi}");
            pass(&inputs, &needs.keys, &range, &options, false).await?;
            let (schema, batches) =
                materialize(ctx, TABLE, &[plan::rollup_units_sql(needs.keys.len())]).await?;
            let det = registry.bot_detection();
            let bots = if det.is_active() {
                let start = needs.start();
                let union = Bounds {
                    start,
                    end: hi,
                    pre_start: None,
                    skew: 0,
                    novelty: 0,
                    exposures_from: None,
                };
                materialize(
                    ctx,
                    "bot_units",
                    &[plan::bot_units_sql(det, &union, "unit_cuts", false)],
                )
                .await?;
                materialize(ctx, BOT_CANDIDATES, &[plan::BOT_CANDIDATES_SQL.into()]).await?;
                Some(
                    materialize(
                        ctx,
                        BOT_EVENTS,
                        &[plan::bot_candidate_events_sql(start, hi)],
                    )
                    .await?,
                )
            } else {
                None
            };
            (schema, batches, bots)
        };
        inputs.check_unchanged()?;
        Ok(Self {
            keys: needs.keys,
            schema,
            batches,
            covered: needs.covered,
            bot_events,
            index: Default::default(),
            units,
        })
    }

    /// Rows of the rollup: one per unit and segment with matching events.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Whether `other` holds the same rows in the same order — counts
    /// exactly, sums to 1e-12 relative, value lists as multisets — and
    /// the same bot candidates' events: how a kept rollup is checked
    /// against one recomputed in full (both hold their days in order,
    /// each sorted by unit and segment).
    pub fn same_rows_as(&self, other: &Rollup) -> Result<bool> {
        let same = |a: &(SchemaRef, Vec<RecordBatch>), b: &(SchemaRef, Vec<RecordBatch>)| {
            if a.0.fields() != b.0.fields() {
                return Ok(false);
            }
            store::same_rows(&a.1, b)
        };
        let bots = match (&self.bot_events, &other.bot_events) {
            (Some(a), Some(b)) => same(a, b)?,
            (a, b) => a.is_none() && b.is_none(),
        };
        Ok(bots
            && same(
                &(self.schema.clone(), self.batches.clone()),
                &(other.schema.clone(), other.batches.clone()),
            )?)
    }

    /// Whether the rollup was built for experiment `key` (at some look).
    pub fn covers(&self, key: &str) -> bool {
        self.covered.iter().any(|(k, _)| k == key)
    }

    /// Registers the bot candidates' events in `ctx`, when there are any
    /// (the rollup's rows are read in this process: [`read`]).
    pub(crate) async fn register(&self, ctx: &SessionContext) -> Result<()> {
        if let Some((schema, batches)) = &self.bot_events {
            ctx.deregister_table(BOT_EVENTS)?;
            let table = MemTable::try_new(schema.clone(), vec![batches.clone()])?;
            ctx.register_table(BOT_EVENTS, Arc::new(table))?;
        }
        Ok(())
    }

    /// What the experiment `spec`, with parts `parts` and quantile metrics
    /// `quantiles`, reads of the rollup; an error if the rollup was not
    /// built for it.
    pub(crate) fn view<'a>(
        &self,
        spec: &ValidSpec,
        parts: &[Part],
        quantiles: impl IntoIterator<Item = &'a Metric>,
    ) -> Result<View> {
        let key = &spec.spec.key;
        let missing = || {
            Error::invalid(
                "rollup",
                "experiments",
                format!("the shared rollup was not built for experiment `{key}`"),
            )
        };
        let column = |k: &Key| {
            self.keys
                .iter()
                .position(|x| x == k)
                .map(|i| format!("r{i}"))
                .ok_or_else(missing)
        };
        let parts = parts
            .iter()
            .map(|p| column(&Key::of(p)))
            .collect::<Result<Vec<_>>>()?;
        let mut values = BTreeMap::new();
        for m in quantiles {
            values.insert(m.key.clone(), column(&Key::of(&plan::values_part(m)))?);
        }
        let bounds: Vec<Bounds> = self
            .covered
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, b)| *b)
            .collect();
        if bounds.is_empty() {
            return Err(missing());
        }
        let index = match self.index.get() {
            Some(i) => i.clone(),
            None => {
                let i = Arc::new(read::Index::new(&self.batches)?);
                self.index.get_or_init(|| i).clone()
            }
        };
        Ok(View {
            rows: self.batches.clone(),
            index,
            parts,
            values,
            bounds,
            bot_events: self.bot_events.is_some(),
            units: self.units.clone(),
        })
    }
}

/// The engine options of a shared pass: SQL parts (the rollup's columns
/// are plain aggregates), no progress reports.
fn shared_options(options: &EngineOptions) -> EngineOptions {
    EngineOptions {
        unfused_parts: true,
        on_progress: None,
        ..options.clone()
    }
}

/// What a set of looks needs of a rollup.
pub(crate) struct Needs {
    /// The columns: every part of every look, each once.
    pub keys: Vec<Key>,
    /// Each look's experiment and bounds.
    pub covered: Vec<(String, Bounds)>,
    /// The looks whose units' cut points are computed.
    pub cut_looks: Vec<plan::CutLook>,
    /// The cut points common to every unit, sorted and distinct.
    pub globals: Vec<i64>,
}

impl Needs {
    pub(crate) fn of(
        looks: &[(ValidSpec, Option<DateTime<Utc>>)],
        registry: &MetricRegistry,
        options: &EngineOptions,
    ) -> Result<Self> {
        let mut keys: Vec<Key> = Vec::new();
        let mut covered = Vec::new();
        let mut cut_looks = Vec::new();
        let mut globals = Vec::new();
        for (spec, as_of) in looks {
            let compiled = engine::compile(spec, registry, options)?;
            let b = engine::bounds_of(spec, *as_of);
            let quantiles = quantile_metrics(spec, registry);
            for k in compiled
                .parts
                .iter()
                .map(Key::of)
                .chain(quantiles.iter().map(|m| Key::of(&plan::values_part(m))))
            {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            let novelty = compiled
                .parts
                .iter()
                .any(|p| matches!(p.window, Window::Early | Window::Late));
            globals.extend([b.start, b.end]);
            if compiled.parts.iter().any(|p| p.window == Window::Pre) {
                globals.push(pre_lo(&b));
            }
            cut_looks.push(plan::CutLook {
                key: spec.spec.key.clone(),
                bounds: b,
                novelty,
                mode: spec.spec.analysis,
            });
            covered.push((spec.spec.key.clone(), b));
        }
        globals.sort_unstable();
        globals.dedup();
        Ok(Self {
            keys,
            covered,
            cut_looks,
            globals,
        })
    }

    /// The earliest event any look reads.
    pub(crate) fn lo(&self) -> i64 {
        self.cut_looks
            .iter()
            .map(|l| pre_lo(&l.bounds))
            .min()
            .unwrap_or(0)
    }

    /// The end of the latest look.
    pub(crate) fn hi(&self) -> i64 {
        self.cut_looks
            .iter()
            .map(|l| l.bounds.end)
            .max()
            .unwrap_or(0)
    }

    /// The earliest start.
    pub(crate) fn start(&self) -> i64 {
        self.cut_looks
            .iter()
            .map(|l| l.bounds.start)
            .min()
            .unwrap_or(0)
    }
}

/// The first instant a look's events are read from: the CUPED pre-period's
/// start, or the start.
fn pre_lo(b: &Bounds) -> i64 {
    b.pre_start.unwrap_or(b.start).min(b.start)
}

/// Opens `data` for a rollup with columns `keys`, with the cut points of
/// `needs` registered (the cut function and `unit_cuts`), and scans the
/// exposures once for every look's units ([`units`]).
pub(crate) async fn cut_inputs(
    needs: &Needs,
    keys: &[Key],
    data: &DataSource,
    options: &EngineOptions,
) -> Result<(engine::Inputs, Option<Arc<units::SharedUnits>>)> {
    let properties = plan::properties_of(keys.iter().map(|k| &k.filter));
    let inputs = engine::open(data, &properties, &[], options, None).await?;
    let ctx = &inputs.ctx;
    ctx.register_udf(ScalarUDF::from(CutFloor::new(needs.globals.clone())));
    if needs.cut_looks.is_empty() {
        return Ok((inputs, None));
    }
    let shared = units::scan(ctx, &needs.cut_looks).await?;
    let (schema, batches) = unit_cuts(&shared)?;
    ctx.deregister_table("unit_cuts")?;
    ctx.register_table(
        "unit_cuts",
        Arc::new(MemTable::try_new(schema, vec![batches])?),
    )?;
    Ok((inputs, Some(Arc::new(shared))))
}

/// Shared rollup, step 2 (`unit_cuts`), from every look's first exposure
/// per unit (`shared`): per unit exposed in some look, a dense key `uidx`
/// (from 1) and its own cut points `cuts`, sorted (the cut floor bisects
/// them) and distinct. In each look where it has a first exposure `f`:
/// the start of its event window (as `lo` of
/// [`plan::analysed_units_sql`]) and, with novelty windows, the end of its
/// early window (as in [`plan::unit_parts_sql`]).
///
/// In this process rather than as SQL: a union of every look's cut points
/// gathered per unit took 23 s for 1 M units in 50 experiments, a pass
/// over the rows a fraction of a second.
fn unit_cuts(shared: &units::SharedUnits) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let looks = shared.looks();
    let item = Arc::new(Field::new("item", DataType::Int64, true));
    let mut out = Vec::new();
    let mut next = 1i64;
    let mut cuts = Vec::new();
    let (mut kept, mut offsets, mut values, mut uidx) =
        (Vec::new(), vec![0i32], Vec::new(), Vec::new());
    let schema = Arc::new(Schema::new(vec![
        Field::new("unit_id", shared.id_type().clone(), true),
        Field::new("uidx", DataType::Int64, false),
        Field::new("cuts", DataType::List(item.clone()), true),
    ]));
    let mut flush = |kept: &mut Vec<u32>,
                     offsets: &mut Vec<i32>,
                     values: &mut Vec<i64>,
                     uidx: &mut Vec<i64>|
     -> Result<()> {
        let lists = ListArray::new(
            item.clone(),
            datafusion::arrow::buffer::OffsetBuffer::new(std::mem::take(offsets).into()),
            Arc::new(Int64Array::from(std::mem::take(values))),
            None,
        );
        out.push(
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    shared.ids(kept)?,
                    Arc::new(Int64Array::from(std::mem::take(uidx))),
                    Arc::new(lists),
                ],
            )
            .map_err(datafusion::error::DataFusionError::from)?,
        );
        kept.clear();
        offsets.push(0);
        Ok(())
    };
    for u in 0..shared.n_units() {
        cuts.clear();
        for (i, l) in looks.iter().enumerate() {
            let Some(f) = shared.first(u, i) else {
                continue;
            };
            let b = &l.bounds;
            cuts.push(if f - b.skew > b.start {
                f - b.skew
            } else {
                b.start
            });
            if l.novelty {
                cuts.push(f + b.novelty);
            }
        }
        if cuts.is_empty() {
            continue;
        }
        cuts.sort_unstable();
        cuts.dedup();
        values.extend_from_slice(&cuts);
        offsets.push(
            i32::try_from(values.len())
                .map_err(|_| Error::invalid("plan", "unit_cuts", "too many cut points"))?,
        );
        kept.push(u as u32);
        uidx.push(next);
        next += 1;
        if kept.len() == COMPACT_ROWS {
            flush(&mut kept, &mut offsets, &mut values, &mut uidx)?;
        }
    }
    if !kept.is_empty() {
        flush(&mut kept, &mut offsets, &mut values, &mut uidx)?;
    }
    Ok((schema, out))
}

/// The shared pass over the events with `range` (a condition on `ts`) into
/// `rollup_by_uidx`: slice by slice when deduplicating events partitioned
/// by unit, redone whole if a unit straddles slices (as the engine's
/// stage 2a). With `all_units`, every unit with events (see
/// [`plan::rollup_sql`]).
pub(crate) async fn pass(
    inputs: &engine::Inputs,
    keys: &[Key],
    range: &str,
    options: &EngineOptions,
    all_units: bool,
) -> Result<()> {
    let ctx = &inputs.ctx;
    let properties = plan::properties_of(keys.iter().map(|k| &k.filter));
    let dedup = !options.assume_unique_event_ids;
    let sql = |slice: Option<(usize, &str)>| {
        plan::rollup_sql(keys, &properties, range, dedup, slice, all_units)
    };
    let whole = sql(None);
    if dedup && inputs.slices.len() >= 2 {
        let per_group = inputs.slices.len().div_ceil(engine::SLICE_GROUPS);
        let groups: Vec<&[String]> = inputs.slices.chunks(per_group).collect();
        let per_slice: Vec<String> = plan::slice_conditions(&groups)
            .iter()
            .enumerate()
            .map(|(n, c)| sql(Some((n, c.as_str()))))
            .collect();
        materialize(ctx, "rollup_by_uidx", &per_slice).await?;
        // A unit whose events straddle slices could keep a copy of an
        // event per slice: then the pass is redone whole.
        if count(ctx, plan::STRADDLING_SEGMENTS_SQL).await? > 0 {
            materialize(ctx, "rollup_by_uidx", &[whole]).await?;
        }
    } else {
        materialize(ctx, "rollup_by_uidx", &[whole]).await?;
    }
    Ok(())
}

/// The quantile metrics of `spec`.
pub(crate) fn quantile_metrics(spec: &ValidSpec, registry: &MetricRegistry) -> Vec<Metric> {
    spec.metric_roles()
        .into_iter()
        .filter_map(|(key, _)| registry.get(key))
        .filter(|m| m.kind == MetricType::Quantile)
        .cloned()
        .collect()
}

/// Analyses every look of `looks` with one shared rollup: one pass over
/// the events for all of them, then each experiment's statistics from the
/// rollup. Each experiment's outcome is its own: one failing does not stop
/// the others. The outer error is a rollup that could not be built (the
/// caller may analyse the experiments one by one instead).
///
/// On a cluster each experiment is analysed on its own (see the module's
/// documentation).
pub async fn analyze_shared(
    looks: &[SharedLook],
    registry: &MetricRegistry,
    data: &DataSource,
    options: EngineOptions,
) -> Result<Vec<Result<Results>>> {
    let mut out = Vec::with_capacity(looks.len());
    if options.cluster.is_some() {
        for l in looks {
            out.push(l.analyze_alone(registry, data, options.clone()).await);
        }
        return Ok(out);
    }
    let specs: Vec<(ValidSpec, Option<DateTime<Utc>>)> =
        looks.iter().map(|l| (l.spec.clone(), l.as_of)).collect();
    let rollup = Rollup::build(&specs, registry, data, &options).await?;
    Ok(analyze_with_rollup(looks, registry, data, options, &rollup).await)
}

/// How many looks [`analyze_with_rollup`] analyses at a time. A look
/// alternates between queries, which use every core, and its read of the
/// rollup, which uses one ([`read`]); a second look at the same time keeps
/// the other cores busy through that read.
const LOOKS_AT_ONCE: usize = 2;

/// Analyses every look of `looks` from `rollup` (built or refreshed for
/// them), [`LOOKS_AT_ONCE`] at a time, within one memory limit
/// ([`EngineOptions::memory_limit`]) for all of them; each experiment's
/// outcome is its own, in the order of `looks`.
pub async fn analyze_with_rollup(
    looks: &[SharedLook],
    registry: &MetricRegistry,
    data: &DataSource,
    options: EngineOptions,
    rollup: &Rollup,
) -> Vec<Result<Results>> {
    use futures_util::StreamExt;
    let pool = options.memory_limit.map(|limit| {
        Arc::new(datafusion::execution::memory_pool::FairSpillPool::new(
            limit,
        )) as Arc<dyn datafusion::execution::memory_pool::MemoryPool>
    });
    // The futures made first, by a function rather than a closure of the
    // stream: a stream mapping through a closure that borrows makes a
    // future the compiler cannot show to be `Send` for every lifetime,
    // and a server spawns this one.
    let each: Vec<_> = looks
        .iter()
        .map(|l| analyze_look(l, registry, data, options.clone(), rollup, pool.clone()))
        .collect();
    futures_util::stream::iter(each)
        .buffered(LOOKS_AT_ONCE)
        .collect()
        .await
}

/// One look of [`analyze_with_rollup`], its session drawing on `pool`.
async fn analyze_look(
    look: &SharedLook,
    registry: &MetricRegistry,
    data: &DataSource,
    options: EngineOptions,
    rollup: &Rollup,
    pool: Option<Arc<dyn datafusion::execution::memory_pool::MemoryPool>>,
) -> Result<Results> {
    Analyzer::with_rollup_in(look.spec.clone(), registry, data, options, rollup, pool)
        .await?
        .run_after(look.as_of, &look.previous)
        .await
}

/// Runs each query and registers the union of their rows as `name`.
async fn materialize(
    ctx: &SessionContext,
    name: &str,
    sqls: &[String],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut schema = None;
    let mut batches = Vec::new();
    for sql in sqls {
        let df = ctx.sql(sql).await?;
        schema.get_or_insert_with(|| Arc::new(df.schema().as_arrow().clone()));
        batches.extend(df.collect().await?);
    }
    let schema = schema.ok_or_else(|| Error::invalid("plan", name, "no query"))?;
    let batches = compact(&schema, &batches)?;
    ctx.deregister_table(name)?;
    let table = MemTable::try_new(schema.clone(), vec![batches.clone()])?;
    ctx.register_table(name, Arc::new(table))?;
    Ok((schema, batches))
}

/// Rows per batch of a materialized table.
const COMPACT_ROWS: usize = 1 << 16;

/// `batches` copied into batches of about [`COMPACT_ROWS`] rows that own
/// their buffers (strings included). An aggregate emits its output as
/// slices of one large array, and the memory pool counts each slice as the
/// whole array: a
/// join collecting 1 M units' cut points counted 3.9 GB for a few hundred
/// MB, and a sort of them would count alike.
fn compact(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let mut group: Vec<RecordBatch> = Vec::new();
    let mut rows = 0;
    let mut flush = |group: &mut Vec<RecordBatch>| -> Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        // Two arrays at least: one alone would be returned as it is.
        if group.len() == 1 {
            group.push(group[0].slice(0, 0));
        }
        let batch = concat_batches(schema, group.iter())
            .map_err(datafusion::error::DataFusionError::from)?;
        // A string view column is concatenated as views into the same
        // data buffers: copied here, so the batch holds its own strings.
        let columns = batch
            .columns()
            .iter()
            .map(|c| match c.as_string_view_opt() {
                Some(v) => Arc::new(v.gc()) as datafusion::arrow::array::ArrayRef,
                None => c.clone(),
            })
            .collect();
        out.push(
            RecordBatch::try_new(batch.schema(), columns)
                .map_err(datafusion::error::DataFusionError::from)?,
        );
        group.clear();
        Ok(())
    };
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        if rows + b.num_rows() > COMPACT_ROWS && !group.is_empty() {
            flush(&mut group)?;
            rows = 0;
        }
        rows += b.num_rows();
        group.push(b.clone());
    }
    flush(&mut group)?;
    Ok(out)
}

/// The `n` of a one-row count query.
async fn count(ctx: &SessionContext, sql: &str) -> Result<i64> {
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(batches
        .first()
        .and_then(|b| b.column_by_name("n"))
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .and_then(|a| (!a.is_empty()).then(|| a.value(0)))
        .unwrap_or(0))
}

/// `strata_cut_floor(cuts, ts)`: the largest cut point at or before `ts`
/// among the unit's own, `cuts` (a sorted list), the ones common to every
/// unit (held by the function) and the UTC midnights.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CutFloor {
    /// Sorted, distinct.
    global: Vec<i64>,
    signature: Signature,
}

impl CutFloor {
    fn new(global: Vec<i64>) -> Self {
        Self {
            global,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// The largest element of sorted `cuts` at or before `ts`.
fn floor(cuts: &[i64], ts: i64) -> Option<i64> {
    match cuts.partition_point(|&c| c <= ts) {
        0 => None,
        i => Some(cuts[i - 1]),
    }
}

impl ScalarUDFImpl for CutFloor {
    fn name(&self) -> &str {
        CUT_FLOOR
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::common::Result<DataType> {
        match args {
            [DataType::List(f), DataType::Int64] if f.data_type() == &DataType::Int64 => {
                Ok(DataType::Int64)
            }
            _ => datafusion::common::plan_err!(
                "{CUT_FLOOR} takes a list of BIGINT and a BIGINT, not {args:?}"
            ),
        }
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (Some(cuts), Some(ts)) = (
            arrays.first().and_then(|a| a.as_list_opt::<i32>()),
            arrays
                .get(1)
                .and_then(|a| a.as_primitive_opt::<Int64Type>()),
        ) else {
            return datafusion::common::exec_err!("{CUT_FLOOR}: unexpected argument types");
        };
        let offsets = cuts.value_offsets();
        let Some(values) = cuts.values().as_primitive_opt::<Int64Type>() else {
            return datafusion::common::exec_err!("{CUT_FLOOR}: cuts are not BIGINT");
        };
        // Cut lists are built without nulls; a null one has no cuts.
        let values = values.values();
        let out: Int64Array = (0..ts.len())
            .map(|i| {
                if ts.is_null(i) {
                    return None;
                }
                let t = ts.value(i);
                let own = if cuts.is_null(i) {
                    None
                } else {
                    floor(&values[offsets[i] as usize..offsets[i + 1] as usize], t)
                };
                // Every UTC midnight is a cut too: a segment never spans
                // two days, so each day's rows depend on that day's events
                // and cuts alone.
                let midnight = t.div_euclid(DAY_NS) * DAY_NS;
                Some(
                    own.max(floor(&self.global, t))
                        .map_or(midnight, |c| c.max(midnight)),
                )
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{StringArray, StringViewArray};

    /// A batch of `n` rows (`unit`, `cuts`), cuts in decreasing order.
    fn units(n: usize) -> RecordBatch {
        let cuts = ListArray::from_iter_primitive::<Int64Type, _, _>(
            (0..n).map(|i| Some((0..4).rev().map(move |k| Some((i * 10 + k) as i64)))),
        );
        let units = StringArray::from_iter_values((0..n).map(|i| format!("u{i}")));
        let schema = Arc::new(Schema::new(vec![
            Field::new("unit_id", DataType::Utf8, false),
            Field::new("cuts", cuts.data_type().clone(), true),
        ]));
        RecordBatch::try_new(schema, vec![Arc::new(units), Arc::new(cuts)]).unwrap()
    }

    #[test]
    fn compacted_batches_own_their_rows_only() {
        // An aggregate's output: slices of one large batch.
        let whole = units(200_000);
        let slices: Vec<RecordBatch> = (0..200_000)
            .step_by(8192)
            .map(|o| whole.slice(o, 8192.min(200_000 - o)))
            .collect();
        let counted =
            |bs: &[RecordBatch]| -> usize { bs.iter().map(|b| b.get_array_memory_size()).sum() };
        let compacted = compact(&whole.schema(), &slices).unwrap();
        // Every slice counts the whole arrays; the copies count their rows.
        assert!(counted(&slices) > 20 * whole.get_array_memory_size());
        assert!(counted(&compacted) < 2 * whole.get_array_memory_size());
        assert!(compacted
            .iter()
            .all(|b| b.num_rows() <= COMPACT_ROWS + 8192));
        assert_eq!(
            concat_batches(&whole.schema(), &compacted).unwrap(),
            whole,
            "the same rows in the same order"
        );
        // Strings held as views into shared buffers are copied too.
        let views =
            StringViewArray::from_iter_values((0..200_000).map(|i| format!("unit-{i:016}")));
        let schema = Arc::new(Schema::new(vec![Field::new(
            "u",
            DataType::Utf8View,
            false,
        )]));
        let whole_views = RecordBatch::try_new(schema.clone(), vec![Arc::new(views)]).unwrap();
        let view_slices: Vec<RecordBatch> = (0..200_000)
            .step_by(8192)
            .map(|o| whole_views.slice(o, 8192.min(200_000 - o)))
            .collect();
        let compacted_views = compact(&schema, &view_slices).unwrap();
        assert!(counted(&compacted_views) < 2 * whole_views.get_array_memory_size());
        assert_eq!(
            concat_batches(&schema, &compacted_views).unwrap(),
            whole_views
        );
        // A single slice is copied too; no batches give none.
        let one = compact(&whole.schema(), &slices[..1]).unwrap();
        assert!(counted(&one) < whole.get_array_memory_size() / 10);
        assert!(compact(&whole.schema(), &[]).unwrap().is_empty());
    }

    #[test]
    fn each_units_cut_points_are_its_window_starts_sorted_and_distinct() {
        let look = |key: &str, start: i64, novelty: bool| plan::CutLook {
            key: key.into(),
            bounds: Bounds {
                start,
                end: 1_000,
                pre_start: None,
                skew: 5,
                novelty: 100,
                exposures_from: None,
            },
            novelty,
            mode: crate::spec::AnalysisMode::Itt,
        };
        let looks = [look("a", 0, true), look("b", 50, false)];
        let schema = Arc::new(Schema::new(vec![
            Field::new("unit_id", DataType::Utf8, true),
            Field::new("experiment", DataType::Utf8, true),
            Field::new("assigned_variant", DataType::Utf8, true),
            Field::new("opted_out", DataType::Boolean, false),
            Field::new("ts", DataType::Int64, true),
        ]));
        // u1: in both; u2: in neither; u3: in b only, early; u4: both, same cut.
        let rows = [
            ("u1", "a", 300),
            ("u1", "b", 20),
            ("u2", "c", 10),
            ("u3", "b", 60),
            ("u4", "a", 55),
            ("u4", "b", 55),
        ];
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "x"))),
                Arc::new(datafusion::arrow::array::BooleanArray::from(vec![false; 6])),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        let mut fold = units::Fold::new(&looks, &schema).unwrap();
        fold.add(&batch.slice(0, 3)).unwrap();
        fold.add(&batch.slice(3, 3)).unwrap();
        let (_, out) = unit_cuts(&fold.finish().unwrap()).unwrap();
        let rows: Vec<(String, i64, Vec<i64>)> = out
            .iter()
            .flat_map(|b| {
                let (u, k, c) = (
                    b.column(0).as_string::<i32>().clone(),
                    b.column(1).as_primitive::<Int64Type>().clone(),
                    b.column(2).as_list::<i32>().clone(),
                );
                (0..b.num_rows())
                    .map(|i| {
                        let cuts = c.value(i);
                        (
                            u.value(i).to_string(),
                            k.value(i),
                            cuts.as_primitive::<Int64Type>().values().to_vec(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                // a: 300 - 5 and 300 + 100; b: 20 - 5 is before 50.
                ("u1".into(), 1, vec![50, 295, 400]),
                ("u3".into(), 2, vec![55]),
                // a: 50, 155; b: 50 again.
                ("u4".into(), 3, vec![50, 155]),
            ]
        );
    }

    #[test]
    fn floor_is_the_last_cut_at_or_before() {
        let cuts = [10, 20, 30];
        assert_eq!(floor(&cuts, 5), None);
        assert_eq!(floor(&cuts, 10), Some(10));
        assert_eq!(floor(&cuts, 29), Some(20));
        assert_eq!(floor(&cuts, 99), Some(30));
        assert_eq!(floor(&[], 99), None);
    }
}
