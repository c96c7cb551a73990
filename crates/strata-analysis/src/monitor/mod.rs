//! The data half of the guardrail monitor: per-variant sufficient statistics
//! of guardrail metrics over each unit's measurement window, and facts about
//! how complete the data is.
//!
//! A guardrail monitor checks a running experiment every few minutes with an
//! always-valid sequential test (`strata_stats::guardrail`). [`monitor`]
//! computes what that test reads, per variant: the units, their events, and
//! for each guardrail metric `n`, the mean and the variance of the per-unit
//! value. [`partition_freshness`] tells, per user partition of the events,
//! how many recent events there are and when the last one happened, so the
//! caller can tell a partition whose data is late from a real change (the
//! *partition-7 incident* of `docs/data-model.md`). The inputs are read
//! through the crate's canonical views and every event filter is the
//! analysis's SQL, run by DataFusion; the per-unit values are folded in
//! this process as the rows stream ([`fold`], for speed: a check must keep
//! up with the ingestion), and all inference is `strata-stats`'.
//!
//! # Semantics, and why
//! * **Units.** A unit belongs to the variant of its *first* exposure to the
//!   experiment with `start ≤ ts < cutoff`, read from `assigned_variant`
//!   (intent-to-treat, the analysis's default; ties on `ts` go to the
//!   smallest variant key, as in the analysis). Exposures before `start`
//!   (before activation) and exposures to a variant the spec does not name
//!   are ignored, so such an exposure neither makes a unit nor moves its
//!   first exposure. Bots' exposures and events are left out by the crate's
//!   canonical views ([`crate::source`]), as for every stage of the analysis.
//!   A unit's first exposure cannot change once seen, since later data only
//!   adds later exposures. Identities are resolved through the aliases as
//!   the analysis resolves them (an anonymous id that signed in counts as
//!   the user id of its earliest alias), with the aliases read at each
//!   check: an alias that arrives after a check counted its anonymous id
//!   as a unit of its own changes that unit, and a [`MonitorState`] keeps
//!   what it folded until it is dropped, as for a late event.
//! * **Maturity.** For a metric with a window of `w` minutes, a unit is
//!   *mature* when `first_exposure + w ≤ cutoff`, and only mature units
//!   count in that metric's statistics. Its value is computed from its
//!   matching events with `first_exposure − clock_skew ≤ ts <
//!   first_exposure + w` (events up to the clock skew before the first
//!   exposure count, as in the analysis: client clocks run behind). So a
//!   unit's value is final the moment it enters the sample, and the sample
//!   only grows from check to check: that is what the always-valid test
//!   assumes (its statistic is a running sum over units). A sliding window
//!   of recent data would instead restart the test at every check and void
//!   its guarantee, and a unit whose window has not elapsed, whose events
//!   may still be in flight, would enter with a value that is too small.
//!   Unlike the analysis, the window is not clamped at `start`: there is no
//!   pre-period to keep apart.
//! * **Per-unit values**, as the analysis computes them from the registry's
//!   definition (the same filters, compiled by [`crate::plan`]): `binomial`
//!   1 with at least one matching event, else 0; `count` the number of
//!   matching events; `sum` the sum of their `value` (null values count 0);
//!   both zero-filled for units without a matching event; `mean` the mean
//!   `value` of matching events with a value, units without one excluded;
//!   `ratio` the per-unit numerator and denominator, the variant's mean
//!   being `Σnum / Σden` and its variance the delta method's per-unit
//!   variance. The statistics are those of [`Sample::from_mean`] and
//!   [`Sample::from_ratio`], built from SQL's centred moments (`COUNT`,
//!   `AVG`, `VAR_POP`, `COVAR_POP`) as the analysis builds them.
//! * **Quantile metrics are refused**: the always-valid test compares means
//!   of independent per-unit values, and a quantile over events is not one.
//! * **Winsorizing** is applied as the analysis applies it: per-unit values
//!   (a ratio's numerator and denominator separately) are capped at the
//!   metric's pooled percentile, here over the units mature for it. The cap
//!   is recomputed at each check, so a unit's capped value can move until
//!   the cap settles (a fixed cap would need a history the monitor does not
//!   keep); both variants share the cap, so its movement cancels out of
//!   their difference to first order.
//! * **Deduplication** is the analysis's: events are reduced to one per
//!   unit and `event_id` (the earliest `ts`, the largest `value`, `type` and
//!   filtered properties), so the monitor and the analysis count the same
//!   events.
//! * **Volume**: per variant, the units first exposed in `[start, cutoff)`
//!   and their events of any type (deduplicated, bots left out) with
//!   `first_exposure − clock_skew ≤ ts < cutoff`, mature or not: how much
//!   data the check saw, to compare between variants and between checks.
//! * `cutoff` should trail the wall clock by the pipeline's delivery delay:
//!   an event with `ts < cutoff` that has not arrived yet is missing from a
//!   unit already counted as mature. [`partition_freshness`] shows whether
//!   a partition lags.
//!
//! # Cost
//! [`monitor_many`] answers every running experiment of a check at once,
//! so that the cost grows with the data, not with the data times the
//! experiments ([`monitor`] is the case of one). One DataFusion session
//! per call, each input registered once. A call scans the exposures since
//! the last check once, for every experiment, and the events in
//! `[earliest unfolded first exposure − clock_skew, latest cutoff)` once,
//! for every metric and the volume together; both scans only project and
//! filter, and their rows are folded per (experiment, unit) in this
//! process ([`fold`]): no join and no aggregate over the units, and one
//! small query more when some events have copies. Memory is per unit held
//! and per event of a held unit in the scanned range ([`fold`] gives the
//! bytes), counted against the call's memory limit. The time range prunes
//! row groups and pages by the Parquet statistics, as in the analysis;
//! like the analysis, the monitor does not filter on the `date=`
//! directories (the plan does not depend on the layout).

mod fold;

use std::collections::{BTreeMap, HashMap};

use datafusion::common::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::{SessionConfig, SessionContext};
use strata_stats::moments::{MeanStats, RatioStats};
use strata_stats::Sample;

use crate::engine::DataSource;
use crate::error::{Error, Result};
use crate::metrics::{Metric, MetricRegistry, MetricType};
use crate::plan::{self, Part, Window, NS};
use crate::source::{self, literal_list, Source};

/// The document name in the errors of a [`MonitorSpec`].
const DOC: &str = "monitor";

/// One guardrail metric and its per-unit measurement window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowedMetric {
    /// The metric's key in the registry.
    pub metric: String,
    /// The length of each unit's window from its first exposure, in minutes
    /// (at least 1).
    pub window_minutes: u32,
}

/// What one check of the monitor reads: an experiment, its variants, the
/// time range and the guardrail metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSpec {
    /// The experiment key in the exposures.
    pub experiment: String,
    /// Every variant key, control included; the output follows this order.
    pub variants: Vec<String>,
    /// Activation: exposures before it are ignored.
    pub start: DateTime<Utc>,
    /// The data considered: timestamps before it.
    pub cutoff: DateTime<Utc>,
    /// The guardrail metrics with their windows.
    pub metrics: Vec<WindowedMetric>,
    /// Events up to this many seconds before a unit's first exposure count
    /// (client clocks run behind), as `clock_skew_seconds` of an analysis
    /// spec; non-negative.
    pub clock_skew_seconds: f64,
}

/// How much data a variant has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantVolume {
    /// The variant key.
    pub variant: String,
    /// Units first exposed in `[start, cutoff)`.
    pub exposed: u64,
    /// Events of any type of those units (deduplicated, bots left out) with
    /// `first_exposure − clock_skew ≤ ts < cutoff`.
    pub events: u64,
}

/// One metric's statistics in one variant: what [`Sample`] holds.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantStats {
    /// The variant key.
    pub variant: String,
    /// Units mature for the metric (for a mean metric: those with a
    /// matching event with a value).
    pub n: u64,
    /// Mean of the per-unit values, or `Σnum / Σden` for a ratio; 0 with no
    /// units; NaN for a ratio whose denominators sum to 0 (undefined).
    pub mean: f64,
    /// Sample variance (denominator `n − 1`) of the per-unit values, or the
    /// delta method's per-unit variance for a ratio: [`Sample::from_mean`]'s
    /// and [`Sample::from_ratio`]'s. 0 with fewer than two units; NaN for a
    /// ratio whose denominators sum to 0.
    pub variance: f64,
}

impl VariantStats {
    /// The statistics as `strata-stats` takes them; `None` with fewer than
    /// two units or when they are undefined (a ratio whose denominators sum
    /// to 0).
    pub fn sample(&self) -> Option<Sample> {
        if self.n < 2 {
            return None;
        }
        Sample::new(self.n, self.mean, self.variance).ok()
    }
}

/// One guardrail metric's statistics in every variant.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricStats {
    /// The metric's key.
    pub metric: String,
    /// Its window, in minutes.
    pub window_minutes: u32,
    /// One per variant of the spec, in its order (`n = 0` for a variant
    /// without mature units).
    pub variants: Vec<VariantStats>,
}

/// What one check of the monitor computed.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorData {
    /// The volume of every variant of the spec, in its order.
    pub variants: Vec<VariantVolume>,
    /// The statistics of every metric of the spec, in its order.
    pub metrics: Vec<MetricStats>,
    /// The earliest event time the check read: the start less the clock
    /// skew, or later when earlier checks' folds ([`MonitorState`]) made
    /// older events unnecessary.
    pub events_since: DateTime<Utc>,
}

/// What earlier checks established, so that a check reads only recent
/// events: per experiment and guardrail metric, the statistics of the
/// units already mature at the last check ("folded"), and the bound on
/// first exposure below which units are folded.
///
/// A unit's value is final once it is mature (module documentation), so
/// the units mature at one check keep their values at the next: a check
/// with a state computes only the units that matured since (their first
/// exposure in `(settled, cutoff − window]`), from the events since
/// `settled − clock_skew`, and merges their moments into the fold. The
/// cost of a check is then bounded by the window and the interval between
/// checks, not by the experiment's age. What the fold leaves out is an
/// event that arrives after its unit was folded — later than the caller's
/// cutoff allowed for; dropping the state ([`MonitorState::default`])
/// recomputes everything from the start, which the monitor does
/// periodically. A fold restarts by itself when its experiment's start,
/// variants or clock skew, or its metric's definition change; winsorized
/// metrics are never folded (their cap pools every mature unit at every
/// check), and a spec with one reads all its events at every check.
///
/// The units are folded too: per experiment, a 64-bit hash of every unit
/// counted and the count per variant, and in full only the units first
/// exposed after the earliest metric's bound (those that can still enter a
/// sample). A check then reads the exposures since the last one, and a
/// unit exposed there that an earlier check counted keeps its first
/// exposure. An exposure that arrives after the check that should have
/// read it is not counted until the state is dropped, as for events.
#[derive(Debug, Default)]
pub struct MonitorState {
    folds: HashMap<FoldKey, Fold>,
    units: HashMap<String, UnitFold>,
}

impl MonitorState {
    /// The number of folds held (per experiment and metric).
    pub fn len(&self) -> usize {
        self.folds.len()
    }

    /// Whether no fold is held.
    pub fn is_empty(&self) -> bool {
        self.folds.is_empty()
    }

    /// The units held in full (those that can still enter a sample), over
    /// every experiment; the others are held as a hash each.
    pub fn units_held(&self) -> usize {
        self.units.values().map(|u| u.recent.len()).sum()
    }
}

/// One experiment's units as earlier checks found them: the exposures
/// before `read_until` have been read, every unit first exposed then is
/// counted, and only the units that can still enter a metric's sample are
/// kept in full. Valid only while every metric of the experiment has a
/// valid fold (otherwise a metric needs units the fold no longer holds).
#[derive(Debug, Clone)]
struct UnitFold {
    start: i64,
    skew: i64,
    variants: Vec<String>,
    read_until: i64,
    /// 64 bits of the key ([`fold::unit_key`]) of every unit counted (a
    /// collision among 10⁸ units has a probability below 10⁻³, and would
    /// drop one unit).
    seen: HashSet<u64, fold::Keyed>,
    /// Units counted per variant, in `variants`' order.
    exposed: Vec<u64>,
    /// Units first exposed after the earliest metric's `settled`.
    recent: Vec<fold::Held>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FoldKey {
    experiment: String,
    metric: String,
    window_minutes: u32,
}

/// The folded units of one experiment and metric.
#[derive(Debug, Clone)]
struct Fold {
    /// What it is valid for: a change of any of these restarts it.
    start: i64,
    skew: i64,
    variants: Vec<String>,
    metric: Metric,
    /// Units first exposed at or before it are in `accs`.
    settled: i64,
    /// One per variant, in `variants`' order.
    accs: Vec<Acc>,
}

/// One variant's statistics of one metric, mergeable.
#[derive(Debug, Clone)]
enum Acc {
    Mean(MeanStats),
    Ratio(RatioStats),
}

impl Acc {
    /// No units yet, for a metric of `kind`.
    fn new(kind: MetricType) -> Self {
        if kind == MetricType::Ratio {
            Acc::Ratio(RatioStats::new())
        } else {
            Acc::Mean(MeanStats::new())
        }
    }

    /// Adds one unit's value `y` (for a ratio, its numerator, and `x` its
    /// denominator).
    fn push(&mut self, y: f64, x: f64) -> Result<()> {
        match self {
            Acc::Mean(m) => m.push(y)?,
            Acc::Ratio(r) => r.push(y, x)?,
        }
        Ok(())
    }

    fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Mean(a), Acc::Mean(b)) => a.merge(b),
            (Acc::Ratio(a), Acc::Ratio(b)) => a.merge(b),
            // A fold of another kind is never kept (its metric changed).
            _ => {}
        }
    }

    /// [`VariantStats`] through `strata-stats`' types.
    fn stats(&self, variant: &str) -> VariantStats {
        let (n, mean, variance) = match self {
            Acc::Ratio(r) => {
                let (mean, variance) = match Sample::from_ratio(r) {
                    Some(s) => (s.mean, s.variance),
                    None if r.n() == 0 => (0.0, 0.0),
                    None if r.mean_den() == 0.0 => (f64::NAN, f64::NAN),
                    None => (r.mean_num() / r.mean_den(), 0.0),
                };
                (r.n(), mean, variance)
            }
            Acc::Mean(m) => {
                let (mean, variance) = match Sample::from_mean(m) {
                    Some(s) => (s.mean, s.variance),
                    None => (m.mean(), 0.0),
                };
                (m.n(), mean, variance)
            }
        };
        VariantStats {
            variant: variant.to_string(),
            n,
            mean,
            variance,
        }
    }
}

/// How recent the events of one user partition are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFreshness {
    /// The value of the partition's `part=` directories.
    pub part: String,
    /// Events (bots left out, not deduplicated) with `since ≤ ts < cutoff`.
    pub events: u64,
    /// The latest `ts` of its events before `cutoff` (bots left out), at
    /// any time; `None` when it has none.
    pub last_event_at: Option<DateTime<Utc>>,
}

/// One metric of the spec, compiled: the columns of its parts among the
/// per-unit values.
struct Planned {
    metric: Metric,
    window_minutes: u32,
    /// The window in ns.
    window: i64,
    cols: Vec<usize>,
}

/// A per-unit column: a part of a metric within a window from first
/// exposure (ns).
#[derive(Debug, Clone, PartialEq)]
struct WindowPart {
    part: Part,
    window: i64,
}

fn ts_ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

fn session() -> SessionContext {
    session_within(None)
}

/// A session whose operators may hold at most `memory_limit` bytes (a
/// fair share each; aggregates spill to disk, a join over the limit fails
/// the query with an error rather than exhausting the process).
fn session_within(memory_limit: Option<usize>) -> SessionContext {
    let mut config = SessionConfig::new();
    // As in the analysis: every join has the per-unit table on its build
    // side, so no join is repartitioned.
    config.options_mut().optimizer.repartition_joins = false;
    let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
    if let Some(limit) = memory_limit {
        runtime = runtime.with_memory_pool(Arc::new(
            datafusion::execution::memory_pool::FairSpillPool::new(limit),
        ));
    }
    match runtime.build_arc() {
        Ok(rt) => SessionContext::new_with_config_rt(config, rt),
        Err(_) => SessionContext::new_with_config(config),
    }
}

/// Checks one spec's names and values and compiles its metrics into the
/// shared list of metrics and of per-unit parts: the indexes of its
/// metrics in `planned`.
fn compile(
    registry: &MetricRegistry,
    spec: &MonitorSpec,
    planned: &mut Vec<Planned>,
    parts: &mut Vec<WindowPart>,
) -> Result<Vec<usize>> {
    if spec.variants.is_empty() {
        return Err(Error::invalid(
            DOC,
            "variants",
            "at least one variant is required",
        ));
    }
    for (i, v) in spec.variants.iter().enumerate() {
        if spec.variants[..i].contains(v) {
            return Err(Error::invalid(
                DOC,
                format!("variants[{i}]"),
                format!("variant `{v}` is listed twice"),
            ));
        }
    }
    if !(spec.clock_skew_seconds >= 0.0 && spec.clock_skew_seconds.is_finite()) {
        return Err(Error::invalid(
            DOC,
            "clock_skew_seconds",
            "must be non-negative",
        ));
    }
    let mut found = Vec::with_capacity(spec.metrics.len());
    for (i, w) in spec.metrics.iter().enumerate() {
        let field = format!("metrics[{i}]");
        let metric = registry.get(&w.metric).ok_or_else(|| {
            Error::invalid(
                DOC,
                format!("{field}.metric"),
                format!("unknown metric `{}`", w.metric),
            )
        })?;
        if metric.kind == MetricType::Quantile {
            return Err(Error::invalid(
                DOC,
                format!("{field}.metric"),
                format!(
                    "quantile metric `{}` cannot be a guardrail of the monitor: its sequential test compares means of per-unit values",
                    w.metric
                ),
            ));
        }
        if w.window_minutes == 0 {
            return Err(Error::invalid(
                DOC,
                format!("{field}.window_minutes"),
                "must be at least 1",
            ));
        }
        found.push((metric, w.window_minutes));
    }
    // Only a valid spec adds to the shared lists.
    Ok(found
        .into_iter()
        .map(|(metric, window_minutes)| {
            if let Some(j) = planned
                .iter()
                .position(|p| p.metric.key == metric.key && p.window_minutes == window_minutes)
            {
                return j;
            }
            let window = i64::from(window_minutes).saturating_mul(60 * NS);
            let cols = plan::parts_of(metric, Window::Analysis)
                .into_iter()
                .map(|part| {
                    let wp = WindowPart { part, window };
                    match parts.iter().position(|x| *x == wp) {
                        Some(c) => c,
                        None => {
                            parts.push(wp);
                            parts.len() - 1
                        }
                    }
                })
                .collect();
            planned.push(Planned {
                metric: metric.clone(),
                window_minutes,
                window,
                cols,
            });
            planned.len() - 1
        })
        .collect())
}

/// One spec of a call, compiled.
struct Compiled<'a> {
    spec: &'a MonitorSpec,
    /// Its index among the call's valid specs: `eidx` in SQL.
    eidx: usize,
    /// Its metrics, as indexes of the call's shared list.
    metrics: Vec<usize>,
    start: i64,
    cutoff: i64,
    skew: i64,
    /// Per metric of the call: the bound of its valid fold, if any.
    settled: HashMap<usize, i64>,
    /// The earliest event time read.
    lo: i64,
    /// The earliest exposure time read: after the valid unit fold's
    /// `read_until`, else the start.
    read_from: i64,
}

/// The variants' codes in SQL: their rank in key order, so that the
/// smallest code of a tie is the smallest key, as in the analysis.
fn variant_codes(variants: &[String]) -> Vec<(usize, &str)> {
    let mut sorted: Vec<&str> = variants.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.into_iter().enumerate().collect()
}

/// Runs a query; a failure on a timestamp that does not parse names its
/// file and line.
async fn collect(ctx: &SessionContext, sources: &[&Source], sql: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql(sql).await?;
    run(ctx, sources, df).await
}

async fn run(
    ctx: &SessionContext,
    sources: &[&Source],
    df: datafusion::dataframe::DataFrame,
) -> Result<Vec<RecordBatch>> {
    match df.collect().await {
        Ok(b) => Ok(b),
        Err(e) => Err(diagnosed(ctx, sources, e).await),
    }
}

/// A failed read's error, naming the file and line of a timestamp that
/// does not parse when that is the cause.
async fn diagnosed(
    ctx: &SessionContext,
    sources: &[&Source],
    e: datafusion::error::DataFusionError,
) -> Error {
    for src in sources {
        if let Some(diag) = source::diagnose_timestamps(ctx, src).await {
            return diag;
        }
    }
    e.into()
}

/// Runs a query as a stream of batches.
async fn stream(
    ctx: &SessionContext,
    sources: &[&Source],
    sql: &str,
) -> Result<datafusion::physical_plan::SendableRecordBatchStream> {
    match ctx.sql(sql).await?.execute_stream().await {
        Ok(s) => Ok(s),
        Err(e) => Err(diagnosed(ctx, sources, e).await),
    }
}

/// A streamed batch, or its error as [`run`] reports it.
async fn read_error(
    ctx: &SessionContext,
    sources: &[&Source],
    batch: datafusion::error::Result<RecordBatch>,
) -> Result<RecordBatch> {
    match batch {
        Ok(b) => Ok(b),
        Err(e) => Err(diagnosed(ctx, sources, e).await),
    }
}

fn internal(what: String) -> Error {
    Error::Engine(datafusion::error::DataFusionError::Internal(what))
}

fn column_i64(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| internal(format!("missing column {name}")))?;
    let c = cast(col, &DataType::Int64).map_err(datafusion::error::DataFusionError::from)?;
    let a = c.as_primitive::<Int64Type>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect())
}

fn column_str(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| internal(format!("missing column {name}")))?;
    let c = cast(col, &DataType::Utf8).map_err(datafusion::error::DataFusionError::from)?;
    let a = c.as_string::<i32>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect())
}

/// Computes the data of one check of the guardrail monitor: per variant of
/// `spec`, its volume and each metric's statistics over the units mature
/// for it (module documentation).
///
/// Errors on an unknown or quantile metric, a window of 0 minutes, no or
/// repeated variants, a negative clock skew, and on unreadable inputs.
/// An experiment without exposures yet is no error: every `n` is 0.
pub async fn monitor(
    data: &DataSource,
    registry: &MetricRegistry,
    spec: &MonitorSpec,
) -> Result<MonitorData> {
    monitor_many(data, registry, std::slice::from_ref(spec))
        .await?
        .pop()
        .unwrap_or_else(|| Err(internal("no answer for the spec".to_string())))
}

/// [`monitor`] for many specs at once — every running experiment of a
/// monitor's cycle — from one scan of the exposures and one of the events:
/// the cost grows with the data, not with the data times the experiments.
/// Each spec's answer is what [`monitor`] gives for it alone.
///
/// The outer error is about the inputs (unreadable, changed while read);
/// a spec that is wrong in itself has its own error in its place of the
/// answer, and the others are computed.
pub async fn monitor_many(
    data: &DataSource,
    registry: &MetricRegistry,
    specs: &[MonitorSpec],
) -> Result<Vec<Result<MonitorData>>> {
    monitor_incremental(data, registry, specs, &mut MonitorState::default(), None).await
}

/// [`monitor_many`] continuing from what earlier checks folded into
/// `state`, and updating it (see [`MonitorState`]): the same statistics
/// for units mature at an earlier check as long as none of their events
/// arrived after it, from only the events since the earliest unfolded
/// first exposure and the exposures since the last check. `state` keeps
/// the folds of this call's specs only; when the call fails, it keeps the
/// metrics' folds but not the units' (the next call reads the exposures
/// from the start). With a `memory_limit`, the read holds at most that
/// many bytes (aggregates spill to disk) and fails with an error where it
/// would need more: a monitor inside a server must not exhaust it.
pub async fn monitor_incremental(
    data: &DataSource,
    registry: &MetricRegistry,
    specs: &[MonitorSpec],
    state: &mut MonitorState,
    memory_limit: Option<usize>,
) -> Result<Vec<Result<MonitorData>>> {
    let mut planned = Vec::new();
    let mut parts = Vec::new();
    let mut compiled: Vec<Compiled> = Vec::new();
    let mut answers: Vec<Option<Result<MonitorData>>> = Vec::with_capacity(specs.len());
    // One unit fold per experiment: an experiment named by two specs has
    // none (both read from its start).
    let named_twice = |key: &str| specs.iter().filter(|o| o.experiment == key).count() > 1;
    for spec in specs {
        match compile(registry, spec, &mut planned, &mut parts) {
            Ok(metrics) => {
                let mut c = Compiled {
                    spec,
                    eidx: compiled.len(),
                    metrics,
                    start: ts_ns(spec.start),
                    cutoff: ts_ns(spec.cutoff),
                    skew: (spec.clock_skew_seconds * NS as f64) as i64,
                    settled: HashMap::new(),
                    lo: 0,
                    read_from: 0,
                };
                for &j in &c.metrics {
                    if let Some(f) = state.folds.get(&fold_key(spec, &planned[j])) {
                        let valid = f.start == c.start
                            && f.skew == c.skew
                            && f.variants == spec.variants
                            && f.metric == planned[j].metric
                            && planned[j].metric.winsorize.is_none();
                        if valid {
                            c.settled.insert(j, f.settled);
                        }
                    }
                }
                let first = c.start.saturating_sub(c.skew);
                let folded =
                    !c.metrics.is_empty() && c.metrics.iter().all(|j| c.settled.contains_key(j));
                c.lo = if folded {
                    let settled = c.settled.values().copied().min().unwrap_or(c.start);
                    settled.saturating_sub(c.skew).max(first)
                } else {
                    first
                };
                // A unit fold of another start, variants or skew, or of an
                // experiment with a metric to recompute, starts over.
                if !folded
                    || named_twice(&spec.experiment)
                    || !state.units.get(&spec.experiment).is_some_and(|u| {
                        u.start == c.start && u.skew == c.skew && u.variants == spec.variants
                    })
                {
                    state.units.remove(&spec.experiment);
                }
                c.read_from = state
                    .units
                    .get(&spec.experiment)
                    .map_or(c.start, |u| u.read_until.max(c.start));
                compiled.push(c);
                answers.push(None);
            }
            Err(e) => answers.push(Some(Err(e))),
        }
    }
    if !compiled.is_empty() {
        // Taken out: a failed call leaves no unit fold (the next one starts
        // over), and a successful one puts back those of its specs.
        let units = std::mem::take(&mut state.units);
        let (computed, folds, units) = compute(
            data,
            &compiled,
            &planned,
            &parts,
            state,
            units,
            memory_limit,
        )
        .await?;
        state.folds = folds;
        state.units = units;
        let mut computed = computed.into_iter();
        for a in answers.iter_mut().filter(|a| a.is_none()) {
            *a = computed.next().map(Ok);
        }
    } else {
        state.folds.clear();
        state.units.clear();
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(internal("no answer for a spec".to_string()))))
        .collect())
}

fn fold_key(spec: &MonitorSpec, p: &Planned) -> FoldKey {
    FoldKey {
        experiment: spec.experiment.clone(),
        metric: p.metric.key.clone(),
        window_minutes: p.window_minutes,
    }
}

/// The answers of the valid specs, in their order, and the folds that
/// continue from them.
async fn compute(
    data: &DataSource,
    compiled: &[Compiled<'_>],
    planned: &[Planned],
    parts: &[WindowPart],
    state: &MonitorState,
    mut held: HashMap<String, UnitFold>,
    memory_limit: Option<usize>,
) -> Result<(
    Vec<MonitorData>,
    HashMap<FoldKey, Fold>,
    HashMap<String, UnitFold>,
)> {
    let ctx = session_within(memory_limit);
    let exposures = source::list("exposures", &data.exposures)?;
    let events = source::list("events", &data.events)?;
    let aliases = match data.aliases_path() {
        Some(path) => source::read_aliases(&path, memory_limit).await?,
        None => None,
    };
    let exposures = source::register(&ctx, exposures).await?;
    let events = source::register(&ctx, events).await?;
    if let Some(a) = &aliases {
        a.register(&ctx, &crate::cluster::Tables::default()).await?;
    }
    let properties =
        plan::properties_of(planned.iter().flat_map(|p| plan::metric_filters(&p.metric)));
    let aliased = aliases.is_some();
    let ex_sql = source::exposures_view(&exposures, &[], aliased)?;
    let ev_sql = source::events_view(&events, &properties, false, aliased)?;
    ctx.sql(&plan::create_view_sql("exposures", &ex_sql))
        .await?;
    ctx.sql(&plan::create_view_sql("events", &ev_sql)).await?;
    let sources = [&exposures, &events];

    // Each spec's unit fold (a fresh one unless a valid fold continues),
    // with the units first exposed since it was last read.
    let mut units: Vec<UnitFold> = compiled
        .iter()
        .map(|c| {
            held.remove(&c.spec.experiment).unwrap_or_else(|| UnitFold {
                start: c.start,
                skew: c.skew,
                variants: c.spec.variants.clone(),
                read_until: c.start,
                seen: HashSet::default(),
                exposed: vec![0; c.spec.variants.len()],
                recent: Vec::new(),
            })
        })
        .collect();
    // The fold's own tables are held against the call's memory limit.
    let mut reservation =
        datafusion::execution::memory_pool::MemoryConsumer::new("guardrail monitor fold")
            .register(&ctx.runtime_env().memory_pool);
    fold::read_new_units(&ctx, &sources, compiled, &mut units, &mut reservation).await?;
    let mut events_fold = fold::Events::new(compiled, planned, parts, &units, reservation)?;
    events_fold.read(&ctx, &sources, &properties).await?;
    let samples = events_fold.samples()?;
    let volume = events_fold.into_volume();

    let mut folds = HashMap::new();
    let mut answers = Vec::with_capacity(compiled.len());
    for ((c, u), (sampled, counted)) in compiled
        .iter()
        .zip(&units)
        .zip(samples.into_iter().zip(volume))
    {
        let codes = variant_codes(&c.spec.variants);
        let code_of = |v: &str| {
            codes
                .iter()
                .find(|(_, k)| *k == v)
                .map_or(0, |(code, _)| *code)
        };
        // Every unit counted so far; events of the units still held.
        let variants = c
            .spec
            .variants
            .iter()
            .zip(&u.exposed)
            .map(|(v, &exposed)| VariantVolume {
                variant: v.clone(),
                exposed,
                events: counted.get(code_of(v)).map_or(0, |&n| n.max(0) as u64),
            })
            .collect();
        let mut metrics = Vec::with_capacity(c.metrics.len());
        for (&j, mut by_code) in c.metrics.iter().zip(sampled) {
            let p = &planned[j];
            let key = fold_key(c.spec, p);
            let earlier = c.settled.get(&j).and_then(|_| state.folds.get(&key));
            let mut accs = Vec::with_capacity(c.spec.variants.len());
            for (i, v) in c.spec.variants.iter().enumerate() {
                let mut acc = std::mem::replace(&mut by_code[code_of(v)], Acc::new(p.metric.kind));
                if let Some(f) = earlier {
                    let mut merged = f.accs[i].clone();
                    merged.merge(&acc);
                    acc = merged;
                }
                accs.push(acc);
            }
            metrics.push(MetricStats {
                metric: p.metric.key.clone(),
                window_minutes: p.window_minutes,
                variants: c
                    .spec
                    .variants
                    .iter()
                    .zip(&accs)
                    .map(|(v, a)| a.stats(v))
                    .collect(),
            });
            if p.metric.winsorize.is_none() {
                folds.insert(
                    key,
                    Fold {
                        start: c.start,
                        skew: c.skew,
                        variants: c.spec.variants.clone(),
                        metric: p.metric.clone(),
                        settled: c.cutoff.saturating_sub(p.window),
                        accs,
                    },
                );
            }
        }
        answers.push(MonitorData {
            variants,
            metrics,
            events_since: DateTime::from_timestamp_nanos(c.lo),
        });
    }
    // Answer only from a read the pipeline's merges did not disturb.
    exposures.check_unchanged()?;
    events.check_unchanged()?;
    if let Some(a) = &aliases {
        a.source.check_unchanged()?;
    }
    // The unit folds that continue: those of experiments whose every
    // metric folds, holding only the units that can still mature.
    let mut kept = HashMap::new();
    for (c, mut u) in compiled.iter().zip(units) {
        let bounds: Option<Vec<i64>> = c
            .metrics
            .iter()
            .map(|&j| {
                let p = &planned[j];
                p.metric
                    .winsorize
                    .is_none()
                    .then(|| c.cutoff.saturating_sub(p.window))
            })
            .collect();
        let Some(settled) = bounds.and_then(|b| b.into_iter().min()) else {
            continue;
        };
        u.recent.retain(|r| r.first > settled);
        u.read_until = c.cutoff;
        kept.insert(c.spec.experiment.clone(), u);
    }
    Ok((answers, folds, kept))
}

/// Per user partition of the events (the value of their `part=`
/// directories): the events with `since ≤ ts < cutoff` and the latest event
/// before `cutoff`, bots left out.
///
/// A partition whose events stopped shows it twice: fewer recent events
/// than its peers, and an older `last_event_at`. Every partition of the
/// listed files is reported, in order of its value, those without a recent
/// event included (their latest event is looked for before `since`, in
/// their own directories only); a glob lists no files, so with one only
/// the partitions with recent events are reported. Events are counted as
/// stored, not deduplicated: a copy left by a recovery is rare, and does
/// not change whether a partition is on time. An empty list when the
/// events have no `part` column.
pub async fn partition_freshness(
    data: &DataSource,
    since: DateTime<Utc>,
    cutoff: DateTime<Utc>,
) -> Result<Vec<PartitionFreshness>> {
    let ctx = session();
    let events = source::register(&ctx, source::list("events", &data.events)?).await?;
    if events.column("part").is_none() {
        return Ok(Vec::new());
    }
    // Events as stored, per partition: aliases do not move an event.
    let ev_sql = source::events_view(&events, &[], true, false)?;
    ctx.sql(&plan::create_view_sql("events", &ev_sql)).await?;
    let sources = [&events];
    let hi = ts_ns(cutoff);
    let lo = ts_ns(since).min(hi);
    let mut out: BTreeMap<String, (u64, Option<i64>)> = events
        .slices()
        .into_iter()
        .map(|p| (p, (0, None)))
        .collect();
    let recent = format!(
        "SELECT part, COUNT(*) AS events, MAX(ts) AS last FROM events \
         WHERE NOT is_bot AND part IS NOT NULL AND ts >= {lo} AND ts < {hi} GROUP BY part"
    );
    for batch in collect(&ctx, &sources, &recent).await? {
        let (part, n, last) = (
            column_str(&batch, "part")?,
            column_i64(&batch, "events")?,
            column_i64(&batch, "last")?,
        );
        for ((part, n), last) in part.into_iter().zip(n).zip(last) {
            if let Some(part) = part {
                out.insert(part, (n.unwrap_or(0).max(0) as u64, last));
            }
        }
    }
    let idle: Vec<&str> = out
        .iter()
        .filter(|(_, (_, last))| last.is_none())
        .map(|(p, _)| p.as_str())
        .collect();
    if !idle.is_empty() {
        // Only the idle partitions' directories are read (a filter on the
        // partition column prunes the others).
        let older = format!(
            "SELECT part, MAX(ts) AS last FROM events \
             WHERE NOT is_bot AND ts < {lo} AND part IN ({}) GROUP BY part",
            literal_list(idle)
        );
        let mut found = Vec::new();
        for batch in collect(&ctx, &sources, &older).await? {
            let (part, last) = (column_str(&batch, "part")?, column_i64(&batch, "last")?);
            found.extend(part.into_iter().zip(last));
        }
        for (part, last) in found {
            if let (Some(part), Some(last)) = (part, last) {
                if let Some(e) = out.get_mut(&part) {
                    e.1 = Some(last);
                }
            }
        }
    }
    events.check_unchanged()?;
    Ok(out
        .into_iter()
        .map(|(part, (events, last))| PartitionFreshness {
            part,
            events,
            last_event_at: last.map(DateTime::from_timestamp_nanos),
        })
        .collect())
}
