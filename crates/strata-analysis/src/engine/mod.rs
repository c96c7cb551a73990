//! Runs an analysis: registers inputs, executes the compiled plan with
//! DataFusion, and hands the per-variant statistics to strata-stats.
//!
//! The SQL comes from [`crate::plan`]; this module runs it and turns its
//! output into the results document. [`Analyzer`] (here) sets the session
//! up and runs a look's three stages in order; its parts are in rooms of
//! their own: [`query`] runs and materializes queries, [`names`] checks the
//! spec's names against the data, [`metric`] computes one metric's
//! statistics, [`report`] renders a metric's results, [`segments`] the
//! breakdown by segment and [`novelty`] the novelty report.

mod holdout;
mod metric;
mod names;
mod novelty;
mod query;
mod report;
mod segments;

pub(crate) use query::SLICE_GROUPS;

use metric::Moments;
use query::{column_f64, column_i64, column_str};
use report::pair;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::prelude::{SessionConfig, SessionContext};
use strata_stats::analysis::{
    ComparisonReport, MetricReport, SegmentInput, SequentialConfig, SequentialOutcome,
};
use strata_stats::decision::{simpsons_paradox, SegmentEffect, DEFAULT_MIN_SEGMENT_N};
use strata_stats::effect::Comparison;
use strata_stats::moments::{CupedStats, MeanStats, RatioStats};
use strata_stats::novelty::novelty_decay;
use strata_stats::quantile::QuantileSample;
use strata_stats::sequential::{MixtureTuning, Spending};
use strata_stats::{AnalysisConfig, MetricData, MetricInput, MetricRole, Sample, VariantInput};

use crate::cluster::{Cluster, Tables};
use crate::error::{Error, Result};
use crate::metrics::{BotDetection, Metric, MetricRegistry, MetricType};
use crate::plan::{self, Bounds, Part, Window, NS};
use crate::results::{self, Results};
use crate::source::{self, Source};
use crate::spec::{SequentialMethod, ValidSpec};

/// Where an experiment's data is: paths of the inputs. A directory that is
/// the pipeline's Parquet root (`kind=exposures/…`, `kind=events/…`,
/// `kind=aliases/…`) may be given for each: each reads its own `kind=`
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSource {
    /// Exposures: a file, directory or glob.
    pub exposures: String,
    /// Events: a file, directory or glob.
    pub events: String,
    /// Aliases (an anonymous id signed in as a user id): a file, directory
    /// or glob. `None`: the pipeline's `kind=aliases` directory when the
    /// events or the exposures are the pipeline's Parquet root or one of its
    /// `kind=` directories and it has one, else no aliases
    /// (`docs/data-model.md`, "Aliases").
    pub aliases: Option<String>,
}

impl DataSource {
    /// The aliases these inputs are read with: [`DataSource::aliases`], or
    /// the pipeline's own found beside the events or exposures, or `None`.
    pub fn aliases_path(&self) -> Option<String> {
        source::aliases_path(self.aliases.as_deref(), [&self.events, &self.exposures])
    }
}

/// How far an analysis has got, reported through [`EngineOptions::on_progress`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// The stage starting (`exposures → units`, `events → per-unit values`,
    /// `per-unit values → statistics`), or `done`.
    pub stage: &'static str,
    /// Share of the stages of the current look done, in `[0, 1]`.
    pub fraction: f64,
}

/// A receiver of [`Progress`] reports; called from the engine's tasks.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Engine settings that are not part of the experiment spec.
#[derive(Clone, Default)]
pub struct EngineOptions {
    /// Query parallelism (0: one per core).
    pub target_partitions: usize,
    /// Skip deduplication by `event_id` when the pipeline guarantees unique ids.
    pub assume_unique_event_ids: bool,
    /// Called as each stage of each look starts and when the look is done.
    pub on_progress: Option<ProgressFn>,
    /// Memory limit of the query engine in bytes; aggregations beyond it
    /// spill to disk (`None`: no limit).
    pub memory_limit: Option<usize>,
    /// Compute the per-unit parts with one SQL `FILTER` aggregate each, the
    /// portable form, even where the fused `strata_parts` aggregate applies
    /// (the results are the same; the fused one is quicker).
    pub unfused_parts: bool,
    /// Run the plans on this Ballista cluster instead of in this process
    /// ([`crate::cluster`]); the parts are then computed in the portable
    /// form, as with [`EngineOptions::unfused_parts`].
    pub cluster: Option<Cluster>,
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("target_partitions", &self.target_partitions)
            .field("assume_unique_event_ids", &self.assume_unique_event_ids)
            .field(
                "on_progress",
                &self.on_progress.as_ref().map(|_| "Fn(Progress)"),
            )
            .field("memory_limit", &self.memory_limit)
            .field("unfused_parts", &self.unfused_parts)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// The stages of a look, in order, as [`Progress::stage`] names them.
const STAGES: [&str; 3] = [
    "exposures → units",
    "events → per-unit values",
    "per-unit values → statistics",
];

/// One metric of the analysis with its role and per-unit columns.
#[derive(Debug, Clone)]
struct Planned {
    metric: Metric,
    role: MetricRole,
    /// Part columns of the metric in the analysis window (a quantile
    /// metric's values part, when its values are gathered per unit).
    cols: Vec<usize>,
    /// Part column of the CUPED covariate.
    cuped_col: Option<usize>,
}

/// An experiment ready to analyse: inputs registered, metrics compiled.
pub struct Analyzer {
    ctx: SessionContext,
    spec: ValidSpec,
    planned: Vec<Planned>,
    parts: Vec<Part>,
    novelty_cols: Option<(Vec<usize>, Vec<usize>)>,
    properties: Vec<String>,
    exposures: Source,
    events: Source,
    /// The aliases, when there are any: the views then resolve `unit_id`.
    aliases: Option<source::Aliases>,
    /// Values of the events' `part=` directories, when every event file has
    /// one (see [`source::Source::slices`]) and there are no aliases.
    slices: Vec<String>,
    /// Whether stage 2a uses the fused `strata_parts` aggregate.
    fused: bool,
    /// Where stage 2 reads the parts from when a shared rollup holds them.
    rollup: Option<crate::rollup::View>,
    /// With a rollup, the quantile metrics' values stage 2 read of it, for
    /// stage 3 (by metric key).
    rollup_values: std::sync::Mutex<Vec<(String, crate::rollup::VariantValues)>>,
    /// The registry's bot detection limits.
    bot_detection: BotDetection,
    /// Where materialized stages are kept: in memory, or as files a
    /// cluster's executors read.
    tables: Tables,
    options: EngineOptions,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("experiment", &self.spec.spec.key)
            .finish_non_exhaustive()
    }
}

fn ts_ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// The novelty window's length in ns.
fn novelty_ns(spec: &ValidSpec) -> i64 {
    i64::from(spec.spec.novelty_days) * 86_400 * NS
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The p-value of Pearson's χ² test that the units left out as bots,
/// `excluded`, are spread over the variants in proportion to each variant's
/// exposed units (`units` kept plus `excluded`): strata-stats' goodness-of-fit
/// test of the SRM check, with the exposed units as weights. `None` with
/// nothing left out or fewer than two variants with units.
pub(crate) fn bot_share_p_value(
    units: &BTreeMap<String, u64>,
    excluded: &BTreeMap<String, u64>,
) -> Option<f64> {
    let (observed, weights): (Vec<u64>, Vec<f64>) = units
        .iter()
        .map(|(v, &n)| {
            let x = excluded.get(v).copied().unwrap_or(0);
            (x, (n + x) as f64)
        })
        .filter(|&(_, w)| w > 0.0)
        .unzip();
    if observed.iter().sum::<u64>() == 0 {
        return None;
    }
    strata_stats::srm::srm_check(&observed, &weights, strata_stats::srm::DEFAULT_SRM_ALPHA)
        .ok()
        .map(|r| r.p_value)
}

/// Per CUPED metric and treatment, the p-value of the difference between
/// treatment and control in the pre-period covariate (Welch): before the
/// experiment the groups should not differ.
fn covariate_p_values(
    inputs: &[MetricInput],
    order: &[String],
    alpha: f64,
) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for m in inputs {
        let MetricData::Cuped(v) = &m.data else {
            continue;
        };
        let Some(control) = v.first().map(|c| Sample::from_mean(&c.covariate())) else {
            continue;
        };
        for (t, name) in v.iter().zip(order).skip(1) {
            let treatment = Sample::from_mean(&t.covariate());
            let p = Comparison::new(control.as_ref(), treatment.as_ref(), alpha)
                .ok()
                .and_then(|c| c.p_value());
            if let Some(p) = p {
                out.push((m.name.clone(), name.clone(), p));
            }
        }
    }
    out
}

/// The time bounds of a look of `s` at `as_of` (default: its end).
pub(crate) fn bounds_of(s: &ValidSpec, as_of: Option<DateTime<Utc>>) -> Bounds {
    let end = as_of.map_or(s.end, |t| t.min(s.end));
    let start = ts_ns(s.start);
    Bounds {
        start,
        end: ts_ns(end),
        pre_start: s
            .spec
            .cuped
            .map(|c| start - i64::from(c.pre_period_days) * 86_400 * NS),
        skew: (s.spec.clock_skew_seconds * NS as f64) as i64,
        novelty: novelty_ns(s),
        exposures_from: s.spec.exposures_since_start.then_some(start),
    }
}

/// The metrics of a spec compiled to per-unit parts.
pub(crate) struct Compiled {
    planned: Vec<Planned>,
    /// The parts, each once.
    pub(crate) parts: Vec<Part>,
    novelty_cols: Option<(Vec<usize>, Vec<usize>)>,
    /// Property names the filters read, in column order (`prop_i`).
    pub(crate) properties: Vec<String>,
}

/// Compiles the metrics of `spec` to the per-unit parts stage 2 computes.
pub(crate) fn compile(
    spec: &ValidSpec,
    registry: &MetricRegistry,
    options: &EngineOptions,
) -> Result<Compiled> {
    let mut planned = Vec::new();
    let mut parts: Vec<Part> = Vec::new();
    let push = |p: Vec<Part>, parts: &mut Vec<Part>| -> Vec<usize> {
        p.into_iter()
            .map(|part| match parts.iter().position(|x| *x == part) {
                Some(i) => i,
                None => {
                    parts.push(part);
                    parts.len() - 1
                }
            })
            .collect()
    };
    for (key, role) in spec.metric_roles() {
        let metric = registry
            .get(key)
            .cloned()
            .ok_or_else(|| Error::invalid("spec", "metrics", format!("unknown metric `{key}`")))?;
        let cols = push(plan::parts_of(&metric, Window::Analysis), &mut parts);
        let cuped_col = match spec.spec.cuped {
            Some(_) if metric.kind.supports_cuped() => {
                push(plan::parts_of(&metric, Window::Pre), &mut parts)
                    .first()
                    .copied()
            }
            _ => None,
        };
        planned.push(Planned {
            metric,
            role,
            cols,
            cuped_col,
        });
    }
    let primary = &planned[0].metric;
    let novelty_cols = match primary.kind {
        MetricType::Binomial | MetricType::Count | MetricType::Sum | MetricType::Mean => {
            let e = push(plan::parts_of(primary, Window::Early), &mut parts);
            let l = push(plan::parts_of(primary, Window::Late), &mut parts);
            Some((e, l))
        }
        _ => None,
    };
    // Where the fused aggregate applies, a quantile metric's values are
    // gathered per unit in the same pass, not by a second scan of the
    // events (`Planned::cols` then names its values part).
    if !options.unfused_parts && crate::fused::applies(&parts) {
        for p in planned
            .iter_mut()
            .filter(|p| p.metric.kind == MetricType::Quantile)
        {
            let part = plan::values_part(&p.metric);
            if parts.len() < crate::fused::MAX_PARTS
                && crate::fused::applies(std::slice::from_ref(&part))
            {
                p.cols = push(vec![part], &mut parts);
            }
        }
    }
    let properties =
        plan::properties_of(planned.iter().flat_map(|p| plan::metric_filters(&p.metric)));
    Ok(Compiled {
        planned,
        parts,
        novelty_cols,
        properties,
    })
}

/// The inputs of an analysis registered in a new session as the canonical
/// `exposures` and `events` views.
pub(crate) struct Inputs {
    pub(crate) ctx: SessionContext,
    pub(crate) exposures: Source,
    pub(crate) events: Source,
    /// The aliases, when there are any: the views then resolve `unit_id`.
    pub(crate) aliases: Option<source::Aliases>,
    /// See [`Analyzer::slices`].
    pub(crate) slices: Vec<String>,
    pub(crate) tables: Tables,
}

impl Inputs {
    /// Fails if the pipeline's merges replaced a file read (see
    /// `Source::check_unchanged`).
    pub(crate) fn check_unchanged(&self) -> Result<()> {
        self.exposures.check_unchanged()?;
        self.events.check_unchanged()?;
        if let Some(a) = &self.aliases {
            a.source.check_unchanged()?;
        }
        Ok(())
    }
}

/// Opens `data` in a new session: the events view carries the columns of
/// `properties`, the exposures view those of `segments`.
pub(crate) async fn open(
    data: &DataSource,
    properties: &[String],
    segments: &[String],
    options: &EngineOptions,
    pool: Option<Arc<dyn MemoryPool>>,
) -> Result<Inputs> {
    let mut config = SessionConfig::new();
    if options.target_partitions > 0 {
        config = config.with_target_partitions(options.target_partitions);
    }
    // The units table (one row per exposed unit) is the build side of the
    // join with events: broadcasting it avoids repartitioning every event.
    // The in-memory tables report no size, so the planner's size
    // thresholds cannot pick the broadcast; every join of the plan has a
    // per-unit table on its build side, so joins are never repartitioned
    // (at 100 M events: 7.7 s -> 6.9 s with unique ids, 33.5 s -> 21.1 s
    // deduplicating).
    config.options_mut().optimizer.repartition_joins = false;
    let exposures = source::list("exposures", &data.exposures)?;
    let events = source::list("events", &data.events)?;
    let aliases = match data.aliases_path() {
        Some(path) => source::read_aliases(&path, options.memory_limit).await?,
        None => None,
    };
    // Slices are exact only when each unit's events lie in one
    // partition; an anonymous id and the user id it resolves to are in
    // two, so with aliases the events are read whole.
    let sliceable = aliases.is_none();
    let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
    if let Some(pool) = pool {
        runtime = runtime.with_memory_pool(pool);
    } else if let Some(limit) = options.memory_limit {
        use datafusion::execution::memory_pool::{FairSpillPool, GreedyMemoryPool};
        // Deduplicating slice by slice, one slice's aggregate is the only
        // large consumer at a time: a greedy pool lets it keep the slice
        // in memory, where a fair pool would split the limit among every
        // spillable operator and make it spill (48.8 s against 30.2 s
        // at 100 M events under 4 GiB). Otherwise a fair pool shares the
        // limit so the first aggregate does not starve the others
        // (greedy, peak RSS reached 5.4 GiB under a 4 GiB limit).
        let sliced =
            sliceable && !options.assume_unique_event_ids && events.part_values().len() > 1;
        let pool: Arc<dyn MemoryPool> = if sliced {
            Arc::new(GreedyMemoryPool::new(limit))
        } else {
            Arc::new(FairSpillPool::new(limit))
        };
        runtime = runtime.with_memory_pool(pool);
    }
    let ctx =
        crate::cluster::session(options.cluster.as_ref(), config, runtime.build_arc()?).await?;
    let tables = Tables::new(options.cluster.as_ref())?;
    let exposures = source::register(&ctx, exposures).await?;
    let events = source::register(&ctx, events).await?;
    let slices = if sliceable {
        events.slices()
    } else {
        Vec::new()
    };
    if let Some(a) = &aliases {
        a.register(&ctx, &tables).await?;
    }
    let aliased = aliases.is_some();
    let ev_sql = source::events_view(&events, properties, !slices.is_empty(), aliased)?;
    let ex_sql = source::exposures_view(&exposures, segments, aliased)?;
    ctx.sql(&plan::create_view_sql("exposures", &ex_sql))
        .await?;
    ctx.sql(&plan::create_view_sql("events", &ev_sql)).await?;
    Ok(Inputs {
        ctx,
        exposures,
        events,
        aliases,
        slices,
        tables,
    })
}

impl Analyzer {
    /// Registers the inputs and compiles the metrics of `spec`.
    pub async fn new(
        spec: ValidSpec,
        registry: &MetricRegistry,
        data: &DataSource,
        options: EngineOptions,
    ) -> Result<Self> {
        Self::build(spec, registry, data, options, None, None).await
    }

    /// Like [`Analyzer::new`], but the per-unit values of stage 2 come from
    /// `rollup`, the shared pass over the events of several experiments
    /// ([`crate::rollup`]), instead of a pass of this analysis' own. The
    /// rollup must have been built for this spec and look
    /// ([`crate::rollup::Rollup::covers`]).
    pub async fn with_rollup(
        spec: ValidSpec,
        registry: &MetricRegistry,
        data: &DataSource,
        options: EngineOptions,
        rollup: &crate::rollup::Rollup,
    ) -> Result<Self> {
        Self::build(spec, registry, data, options, Some(rollup), None).await
    }

    /// [`Analyzer::with_rollup`] in a session whose operators draw on
    /// `pool`, shared with the other looks analysed at the same time, so
    /// that together they stay within the one memory limit.
    pub(crate) async fn with_rollup_in(
        spec: ValidSpec,
        registry: &MetricRegistry,
        data: &DataSource,
        options: EngineOptions,
        rollup: &crate::rollup::Rollup,
        pool: Option<Arc<dyn MemoryPool>>,
    ) -> Result<Self> {
        Self::build(spec, registry, data, options, Some(rollup), pool).await
    }

    async fn build(
        spec: ValidSpec,
        registry: &MetricRegistry,
        data: &DataSource,
        mut options: EngineOptions,
        rollup: Option<&crate::rollup::Rollup>,
        pool: Option<Arc<dyn MemoryPool>>,
    ) -> Result<Self> {
        // A cluster's executors know DataFusion's functions only; a rollup
        // holds the parts' values already.
        if options.cluster.is_some() || rollup.is_some() {
            options.unfused_parts = true;
        }
        let Compiled {
            planned,
            parts,
            novelty_cols,
            properties,
        } = compile(&spec, registry, &options)?;
        let inputs = open(data, &properties, &spec.spec.segments, &options, pool).await?;
        let fused = match crate::fused::PartsUdaf::new(&parts, ts_ns(spec.start), novelty_ns(&spec))
        {
            Some(udaf) if !options.unfused_parts => {
                inputs
                    .ctx
                    .register_udaf(datafusion::logical_expr::AggregateUDF::from(udaf));
                true
            }
            _ => false,
        };
        let rollup = match rollup {
            Some(r) => {
                let quantiles = planned
                    .iter()
                    .map(|p| &p.metric)
                    .filter(|m| m.kind == MetricType::Quantile);
                let view = r.view(&spec, &parts, quantiles)?;
                r.register(&inputs.ctx).await?;
                Some(view)
            }
            None => None,
        };
        let Inputs {
            ctx,
            exposures,
            events,
            aliases,
            slices,
            tables,
        } = inputs;
        Ok(Self {
            ctx,
            spec,
            planned,
            parts,
            novelty_cols,
            properties,
            exposures,
            events,
            aliases,
            slices,
            fused,
            rollup,
            rollup_values: Default::default(),
            bot_detection: registry.bot_detection().clone(),
            tables,
            options,
        })
    }

    /// The heuristic bot detection, between stage 1 and stage 2: finds the
    /// units of `units` whose activity goes over a limit of the registry
    /// ([`plan::bot_units_sql`]), drops them from `units` so that no metric
    /// sees them, and returns how many per variant of `order`.
    ///
    /// Counting every event row finds every unit over a limit (and, with
    /// unique ids, only those); when deduplicating, the units it finds are
    /// counted again with copies of an event counted once, which only they
    /// need — so deduplication costs a second pass over few units, not a
    /// second per-event aggregate.
    async fn exclude_bots(&self, b: &Bounds, order: &[String]) -> Result<BTreeMap<String, u64>> {
        let mut excluded: BTreeMap<String, u64> = order.iter().map(|v| (v.clone(), 0)).collect();
        let d = &self.bot_detection;
        if !d.is_active() {
            return Ok(excluded);
        }
        self.materialize("unit_keys", plan::UNIT_KEYS_SQL).await?;
        // With a shared rollup, only the candidates its detection found
        // over all experiments' periods can be over a limit in this one's,
        // and the rollup holds their events.
        let events = match &self.rollup {
            Some(r) if r.bot_events => crate::rollup::BOT_EVENTS,
            _ => "events",
        };
        self.materialize(
            "bot_units",
            &plan::bot_units_in_sql(d, b, "unit_keys", false, events),
        )
        .await?;
        if !self.options.assume_unique_event_ids && self.table_rows("bot_units").await? > 0 {
            self.materialize("bot_keys", plan::BOT_KEYS_SQL).await?;
            self.materialize(
                "bot_units",
                &plan::bot_units_in_sql(d, b, "bot_keys", true, events),
            )
            .await?;
        }
        let mut total = 0;
        for batch in self.sql(plan::BOT_UNITS_PER_VARIANT_SQL).await? {
            let (v, n) = (column_str(&batch, "variant")?, column_i64(&batch, "n")?);
            for (v, n) in v.into_iter().zip(n) {
                if let Some(v) = v {
                    total += n.max(0) as u64;
                    excluded.insert(v, n.max(0) as u64);
                }
            }
        }
        if total > 0 {
            self.materialize("units", plan::UNITS_WITHOUT_BOTS_SQL)
                .await?;
        }
        Ok(excluded)
    }

    /// The number of rows of a registered table.
    async fn table_rows(&self, table: &str) -> Result<usize> {
        Ok(self
            .sql(&format!("SELECT * FROM {table}"))
            .await?
            .iter()
            .map(RecordBatch::num_rows)
            .sum())
    }

    /// Reports the start of stage `i` of [`STAGES`] (`STAGES.len()`: done).
    fn progress(&self, i: usize) {
        if let Some(report) = &self.options.on_progress {
            report(Progress {
                stage: STAGES.get(i).copied().unwrap_or("done"),
                fraction: i as f64 / STAGES.len() as f64,
            });
        }
    }

    /// The DataFusion session (for inspection and tests).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The values of the events' `part=` directories that the deduplicating
    /// stage 2 reads one at a time (for inspection and tests); empty when
    /// the events are read whole: a single file or glob, another layout,
    /// or aliases, which put one unit's events in two partitions.
    pub fn slices(&self) -> &[String] {
        &self.slices
    }

    fn bounds(&self, as_of: Option<DateTime<Utc>>) -> Bounds {
        bounds_of(&self.spec, as_of)
    }

    /// Analyses the experiment as of `as_of` (default: its end).
    pub async fn run(&self, as_of: Option<DateTime<Utc>>) -> Result<Results> {
        self.run_look(as_of, &[]).await.map(|(r, _)| r)
    }

    /// Analyses the experiment as of `as_of` as the look after looks at
    /// information fractions `previous` (in order, as the previous look's
    /// `sequential.previous_fractions` plus its `information_fraction`):
    /// the group-sequential boundary accounts for them. Fractions not below
    /// this look's are left out (a look with no new units is the same look).
    pub async fn run_after(
        &self,
        as_of: Option<DateTime<Utc>>,
        previous: &[f64],
    ) -> Result<Results> {
        self.run_look(as_of, previous).await.map(|(r, _)| r)
    }

    /// Analyses each look in turn; group-sequential boundaries at each look
    /// use the information fractions of the looks before it.
    pub async fn run_looks(&self, looks: &[DateTime<Utc>]) -> Result<Vec<Results>> {
        for w in looks.windows(2) {
            if w[1] <= w[0] {
                return Err(Error::Option {
                    option: "looks",
                    reason: "looks must be in increasing time order".into(),
                });
            }
        }
        let mut fractions = Vec::new();
        let mut out = Vec::new();
        for &t in looks {
            let (r, f) = self.run_look(Some(t), &fractions).await?;
            if let Some(f) = f {
                if fractions.last().is_none_or(|&l| f > l) && f < 1.0 {
                    fractions.push(f);
                }
            }
            out.push(r);
        }
        Ok(out)
    }

    async fn run_look(
        &self,
        as_of: Option<DateTime<Utc>>,
        previous_fractions: &[f64],
    ) -> Result<(Results, Option<f64>)> {
        let s = &self.spec.spec;
        let b = self.bounds(as_of);
        if let Some(r) = &self.rollup {
            r.check(&b)?;
        }
        let order: Vec<String> = self
            .spec
            .variant_order()
            .iter()
            .map(|v| v.key.clone())
            .collect();
        let known = source::literal_list(order.iter().map(String::as_str));
        let nseg = s.segments.len();

        // Stage 1: units.
        self.progress(0);
        // With a shared rollup, the look's units were found with every
        // other look's in one scan of the exposures (segments are read by
        // the look's own query).
        let shared = match &self.rollup {
            Some(r) if nseg == 0 => r.units_all(&s.key, &b, s.analysis)?,
            _ => None,
        };
        match shared {
            Some((schema, batches)) => {
                self.tables
                    .register(&self.ctx, "units_all", schema, batches)
                    .await?
            }
            None => {
                self.materialize("units_all", &plan::units_sql(&s.key, s.analysis, nseg, &b))
                    .await?
            }
        }
        // Only per-protocol analysis drops opted-out units, so only it reads
        // the events' flag (when the events have one at all).
        if s.analysis == crate::spec::AnalysisMode::PerProtocol
            && self.events.column("opted_out").is_some()
        {
            self.materialize("units_all", &plan::units_opted_out_by_events_sql(nseg, &b))
                .await?;
        }
        let diagnose = plan::units_diagnosis_sql(&known);
        let mut diag = self.sql(&diagnose).await?;
        let get = |diag: &[RecordBatch], name: &str| -> Result<u64> {
            Ok(diag
                .first()
                .map(|b| column_i64(b, name))
                .transpose()?
                .and_then(|v| v.first().copied())
                .unwrap_or(0)
                .max(0) as u64)
        };
        if get(&diag, "ambiguous")? > 0 {
            self.materialize(
                "units_all",
                &plan::units_first_sql(&s.key, s.analysis, nseg, &b),
            )
            .await?;
            diag = self.sql(&diagnose).await?;
        }
        let (multi, unknown, opted) = (
            get(&diag, "multi")?,
            get(&diag, "unknown")?,
            get(&diag, "opted")?,
        );
        self.check_names(&order).await?;
        self.materialize("units", &plan::analysed_units_sql(&known, s.analysis, &b))
            .await?;
        let bots = self.exclude_bots(&b, &order).await?;

        // Stage 2: per-unit values.
        self.progress(1);
        self.unit_parts(&b, !self.options.assume_unique_event_ids)
            .await?;
        self.materialize("unit_values", &plan::unit_values_sql(&self.parts, nseg))
            .await?;

        // Stage 3: statistics per metric, novelty and units per variant.
        // Each is a handful of aggregates over the materialized per-unit
        // values; they run concurrently, so both cores stay busy through
        // queries whose plans are short or partly serial.
        self.progress(2);
        let per_metric = futures_util::future::try_join_all(
            self.planned.iter().map(|p| self.metric_data(p, &order, &b)),
        );
        let novelty = async {
            match &self.novelty_cols {
                Some((early, late)) => self.novelty(early, late, &order, &b).await.map(Some),
                None => Ok(None),
            }
        };
        let units = async {
            let mut units: BTreeMap<String, u64> = order.iter().map(|v| (v.clone(), 0)).collect();
            for batch in self.sql(plan::UNITS_PER_VARIANT_SQL).await? {
                let (v, n) = (column_str(&batch, "variant")?, column_i64(&batch, "n")?);
                for (v, n) in v.into_iter().zip(n) {
                    if let Some(v) = v {
                        units.insert(v, n.max(0) as u64);
                    }
                }
            }
            Ok::<_, Error>(units)
        };
        let (per_metric, novelty, units) = tokio::try_join!(per_metric, novelty, units)?;
        let mut inputs = Vec::new();
        let mut caps = Vec::new();
        let mut seg_moments: Vec<Vec<BTreeMap<(String, String), Moments>>> = Vec::new();
        for (p, (data, cap, segs)) in self.planned.iter().zip(per_metric) {
            caps.push(cap);
            seg_moments.push(segs);
            inputs.push(MetricInput {
                name: p.metric.key.clone(),
                role: p.role,
                data,
                segments: Vec::<SegmentInput>::new(),
            });
        }
        let variants: Vec<VariantInput> = self
            .spec
            .variant_order()
            .iter()
            .map(|v| VariantInput {
                name: v.key.clone(),
                weight: v.weight,
                units: units.get(&v.key).copied().unwrap_or(0),
            })
            .collect();
        let k = variants.len() as u64;
        let planned_per_variant = s.planned_units.map(|p| p.div_ceil(k));
        // Information fraction of this look, as strata-stats computes it for the first treatment.
        let fraction = planned_per_variant.map(|p| {
            let n = variants[0].units + variants[1].units;
            (n as f64 / (2 * p) as f64).min(1.0)
        });
        // Earlier looks below this one, strictly increasing: a look at the
        // same fraction saw no new units and spends no new alpha.
        let mut previous: Vec<f64> = Vec::new();
        for &f in previous_fractions {
            if f > 0.0
                && fraction.is_some_and(|now| f < now)
                && previous.last().is_none_or(|&l| f > l)
            {
                previous.push(f);
            }
        }
        let sequential = match s.sequential {
            SequentialMethod::None => None,
            SequentialMethod::GroupSequential => Some(SequentialConfig::GroupSequential {
                spending: Spending::OBrienFleming,
                previous_fractions: previous,
            }),
            SequentialMethod::AlwaysValid => Some(SequentialConfig::AlwaysValid {
                tuning: MixtureTuning::PlannedUnits(s.planned_units.unwrap_or(10_000)),
            }),
        };
        let config = AnalysisConfig {
            alpha: s.alpha,
            srm_alpha: s.srm_alpha,
            correction: crate::spec::correction(s.multiple_testing),
            planned_n_per_variant: planned_per_variant,
            sequential,
            // The flat prior: the summary restates the data, it adds no belief.
            bayesian: s.bayesian.then_some(None),
            min_segment_n: DEFAULT_MIN_SEGMENT_N,
        };
        // The multiplicity family is the secondary metrics only: the primary
        // is pre-registered and guardrails are one-sided safety checks, where
        // an adjustment would only make a harmful change harder to see. So
        // guardrails are analysed in a second call with no correction (and
        // no sequential test, which strata-stats applies to the primary only).
        let (guard_inputs, main_inputs): (Vec<&MetricInput>, Vec<&MetricInput>) =
            inputs.iter().partition(|m| m.role == MetricRole::Guardrail);
        let owned = |v: Vec<&MetricInput>| v.into_iter().cloned().collect::<Vec<_>>();
        let main_report = strata_stats::analyze(&config, &variants, &owned(main_inputs))?;
        let guard_report = strata_stats::analyze(
            &AnalysisConfig {
                correction: strata_stats::multiple::Correction::None,
                sequential: None,
                ..config.clone()
            },
            &variants,
            &owned(guard_inputs),
        )?;
        let report = {
            let (mut main, mut guard) = (
                main_report.metrics.into_iter(),
                guard_report.metrics.into_iter(),
            );
            let metrics = inputs
                .iter()
                .map(|m| {
                    if m.role == MetricRole::Guardrail {
                        guard.next()
                    } else {
                        main.next()
                    }
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    Error::Engine(datafusion::error::DataFusionError::Internal(
                        "strata-stats returned fewer metric reports than metrics".into(),
                    ))
                })?;
            strata_stats::ExperimentReport {
                srm: main_report.srm,
                metrics,
            }
        };

        let mut warnings = Vec::new();
        if multi > 0 {
            warnings.push(results::Warning {
                code: "multiple_exposure_units".into(),
                count: Some(multi),
                message: "units exposed to more than one variant; each is counted in the variant of its first exposure".into(),
            });
        }
        if unknown > 0 {
            warnings.push(results::Warning {
                code: "unknown_variant_units".into(),
                count: Some(unknown),
                message: "units whose variant is not in the spec were left out".into(),
            });
        }
        if opted > 0 && s.analysis == crate::spec::AnalysisMode::PerProtocol {
            warnings.push(results::Warning {
                code: "opted_out_units_excluded".into(),
                count: Some(opted),
                message: "per-protocol analysis left out opted-out units".into(),
            });
        }
        if report.srm.mismatch {
            warnings.push(results::Warning {
                code: "srm".into(),
                count: None,
                message: format!(
                    "sample ratio mismatch (p = {:.3e} < {}): unit counts do not match the configured weights; results are unreliable",
                    report.srm.p_value, s.srm_alpha
                ),
            });
        }

        let metrics: Vec<results::MetricResult> = self
            .planned
            .iter()
            .zip(&inputs)
            .zip(&report.metrics)
            .zip(caps)
            .map(|(((p, input), rep), cap)| self.metric_result(p, input, rep, cap, &order))
            .collect();

        let segments = self.segment_reports(&metrics, &seg_moments, &order, &mut warnings)?;

        if let Some(n) = &novelty {
            for e in n.effects.iter().filter(|e| e.flagged) {
                warnings.push(results::Warning {
                    code: "novelty_effect".into(),
                    count: None,
                    message: format!(
                        "metric `{}`, {}: the effect in units' first {} days is significantly larger than later",
                        n.metric, e.variant, n.window_days
                    ),
                });
            }
        }
        self.progress(STAGES.len());

        let end = as_of.map_or(self.spec.end, |t| t.min(self.spec.end));
        let bot_exclusion = results::BotExclusion {
            enabled: self.bot_detection.is_active(),
            share: order
                .iter()
                .map(|v| {
                    let x = bots.get(v).copied().unwrap_or(0);
                    let exposed = x + units.get(v).copied().unwrap_or(0);
                    let share = if exposed == 0 {
                        0.0
                    } else {
                        x as f64 / exposed as f64
                    };
                    (v.clone(), share)
                })
                .collect(),
            excluded: bots,
        };
        let facts = crate::health::LookFacts {
            srm_alpha: s.srm_alpha,
            multi_exposure_units: multi,
            bot_exclusion_p_value: bot_share_p_value(&units, &bot_exclusion.excluded),
            covariate_p_values: covariate_p_values(&inputs, &order, s.alpha),
            elapsed_days: (end - self.spec.start).num_milliseconds().max(0) as f64 / 86_400_000.0,
            min_duration_days: s.min_duration_days,
            planned_units: s.planned_units,
            sequential: s.sequential != SequentialMethod::None,
            mde: s.mde,
            alpha: s.alpha,
        };
        let mut results = Results {
            experiment: s.key.clone(),
            as_of: rfc3339(end),
            start: rfc3339(self.spec.start),
            analysis: s.analysis.as_str().into(),
            units: units.clone(),
            bot_exclusion: Some(bot_exclusion),
            srm: results::Srm {
                chi2: report.srm.chi_squared,
                df: report.srm.df,
                p_value: report.srm.p_value,
                flagged: report.srm.mismatch,
                observed: units,
                expected: order
                    .iter()
                    .cloned()
                    .zip(report.srm.expected.iter().copied())
                    .collect(),
            },
            metrics,
            segments,
            novelty,
            warnings,
            health: Vec::new(),
            decision: None,
        };
        results.health = crate::health::checks(&results, &facts);
        results.decision = Some(crate::decision::decide(&results, &facts));
        // Answer only from a read the pipeline's merges did not disturb.
        self.exposures.check_unchanged()?;
        self.events.check_unchanged()?;
        if let Some(a) = &self.aliases {
            a.source.check_unchanged()?;
        }
        Ok((results, fraction))
    }
}
