//! Runs an analysis: registers inputs, executes the compiled plan with
//! DataFusion, and hands the per-variant statistics to strata-stats.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use strata_stats::analysis::{
    ComparisonReport, MetricReport, SegmentInput, SequentialConfig, SequentialOutcome,
};
use strata_stats::decision::{simpsons_paradox, SegmentEffect, DEFAULT_MIN_SEGMENT_N};
use strata_stats::effect::{Comparison, WelchTest};
use strata_stats::moments::{CupedStats, MeanStats, RatioStats};
use strata_stats::novelty::novelty_decay;
use strata_stats::quantile::QuantileSample;
use strata_stats::sequential::{MixtureTuning, Spending};
use strata_stats::{AnalysisConfig, MetricData, MetricInput, MetricRole, Sample, VariantInput};

use crate::error::{Error, Result};
use crate::metrics::{Metric, MetricRegistry, MetricType};
use crate::plan::{self, Bounds, Part, Window, NS};
use crate::results::{self, Results};
use crate::source::{self, Source};
use crate::spec::{SequentialMethod, ValidSpec};

/// Where an experiment's data is: paths of the two inputs. A directory
/// that is the pipeline's Parquet root (`kind=exposures/…`,
/// `kind=events/…`) may be given for both: each reads its own `kind=`
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSource {
    /// Exposures: a file, directory or glob.
    pub exposures: String,
    /// Events: a file, directory or glob.
    pub events: String,
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
            .finish()
    }
}

/// The stages of a look, in order, as [`Progress::stage`] names them.
const STAGES: [&str; 3] = [
    "exposures → units",
    "events → per-unit values",
    "per-unit values → statistics",
];

/// A window effect and its Welch test, when one was possible.
type WindowOutcome = (results::WindowEffect, Option<WelchTest>);

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

/// Per (variant[, segment]) centred moments of `y` and `x`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Moments {
    n: u64,
    my: f64,
    vy: f64,
    mx: f64,
    vx: f64,
    cxy: f64,
}

/// At most this many queries for the deduplicating stage 2 when the events
/// are partitioned by unit: each builds the join's hash table anew, and
/// fewer, larger slices hold more in their deduplication aggregate (at
/// 100 M events under the same pool, 4 slices took 55 s and 16 took 49 s).
const SLICE_GROUPS: usize = 16;

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
    /// Values of the events' `part=` directories, when every event file has
    /// one (see [`source::Source::slices`]).
    slices: Vec<String>,
    /// Whether stage 2a uses the fused `strata_parts` aggregate.
    fused: bool,
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

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        Error::Engine(datafusion::error::DataFusionError::Internal(format!(
            "missing column {name}"
        )))
    })
}

fn column_f64(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let col = column(batch, name)?;
    let c = cast(col, &DataType::Float64).map_err(datafusion::error::DataFusionError::from)?;
    let a = c.as_primitive::<Float64Type>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect())
}

fn column_i64(batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let col = column(batch, name)?;
    let c = cast(col, &DataType::Int64).map_err(datafusion::error::DataFusionError::from)?;
    let a = c.as_primitive::<Int64Type>();
    Ok((0..a.len())
        .map(|i| if a.is_valid(i) { a.value(i) } else { 0 })
        .collect())
}

fn column_str(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let col = column(batch, name)?;
    let c = cast(col, &DataType::Utf8).map_err(datafusion::error::DataFusionError::from)?;
    let a = c.as_string::<i32>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect())
}

fn pair(i: &strata_stats::Interval) -> [f64; 2] {
    [i.lower, i.upper]
}

impl Analyzer {
    /// Registers the inputs and compiles the metrics of `spec`.
    pub async fn new(
        spec: ValidSpec,
        registry: &MetricRegistry,
        data: &DataSource,
        options: EngineOptions,
    ) -> Result<Self> {
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
        let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
        if let Some(limit) = options.memory_limit {
            use datafusion::execution::memory_pool::{FairSpillPool, GreedyMemoryPool, MemoryPool};
            // Deduplicating slice by slice, one slice's aggregate is the only
            // large consumer at a time: a greedy pool lets it keep the slice
            // in memory, where a fair pool would split the limit among every
            // spillable operator and make it spill (48.8 s against 30.2 s
            // at 100 M events under 4 GiB). Otherwise a fair pool shares the
            // limit so the first aggregate does not starve the others
            // (greedy, peak RSS reached 5.4 GiB under a 4 GiB limit).
            let sliced = !options.assume_unique_event_ids && events.part_values().len() > 1;
            let pool: Arc<dyn MemoryPool> = if sliced {
                Arc::new(GreedyMemoryPool::new(limit))
            } else {
                Arc::new(FairSpillPool::new(limit))
            };
            runtime = runtime.with_memory_pool(pool);
        }
        let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc()?);
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
            let metric = registry.get(key).cloned().ok_or_else(|| {
                Error::invalid("spec", "metrics", format!("unknown metric `{key}`"))
            })?;
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
        let fused = match crate::fused::PartsUdaf::new(&parts, ts_ns(spec.start), novelty_ns(&spec))
        {
            Some(udaf) if !options.unfused_parts => {
                ctx.register_udaf(datafusion::logical_expr::AggregateUDF::from(udaf));
                true
            }
            _ => false,
        };
        let exposures = source::register(&ctx, exposures).await?;
        let events = source::register(&ctx, events).await?;
        let slices = events.slices();
        let ev_sql = source::events_view(&events, &properties, !slices.is_empty())?;
        let ex_sql = source::exposures_view(&exposures, &spec.spec.segments)?;
        ctx.sql(&format!("CREATE VIEW exposures AS {ex_sql}"))
            .await?;
        ctx.sql(&format!("CREATE VIEW events AS {ev_sql}")).await?;
        Ok(Self {
            ctx,
            spec,
            planned,
            parts,
            novelty_cols,
            properties,
            exposures,
            events,
            slices,
            fused,
            options,
        })
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

    fn bounds(&self, as_of: Option<DateTime<Utc>>) -> Bounds {
        let s = &self.spec;
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
        }
    }

    async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let run = async { self.ctx.sql(sql).await?.collect().await };
        match run.await {
            Ok(b) => Ok(b),
            Err(e) => {
                for src in [&self.exposures, &self.events] {
                    if let Some(diag) = source::diagnose_timestamps(&self.ctx, src).await {
                        return Err(diag);
                    }
                }
                Err(e.into())
            }
        }
    }

    async fn materialize(&self, name: &str, sql: &str) -> Result<()> {
        self.materialize_union(name, &[sql.to_string()]).await
    }

    /// Runs each query and registers the union of their rows as `name`.
    async fn materialize_union(&self, name: &str, sqls: &[String]) -> Result<()> {
        let mut schema = None;
        let mut batches = Vec::new();
        for sql in sqls {
            let df = self.ctx.sql(sql).await?;
            schema.get_or_insert_with(|| Arc::new(df.schema().as_arrow().clone()));
            match df.collect().await {
                Ok(b) => batches.extend(b),
                Err(e) => {
                    for src in [&self.exposures, &self.events] {
                        if let Some(diag) = source::diagnose_timestamps(&self.ctx, src).await {
                            return Err(diag);
                        }
                    }
                    return Err(e.into());
                }
            }
        }
        let schema = schema.ok_or_else(|| Error::invalid("plan", name, "no query"))?;
        // The fused aggregate's struct column becomes one column per part.
        let schema = crate::fused::flatten(&RecordBatch::new_empty(schema))?.schema();
        let batches = batches
            .iter()
            .map(crate::fused::flatten)
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let table = MemTable::try_new(schema, vec![batches])?;
        self.ctx.deregister_table(name)?;
        self.ctx.register_table(name, Arc::new(table))?;
        Ok(())
    }

    /// Stage 2a: per-unit sums of the parts into `unit_parts`.
    ///
    /// When deduplicating events partitioned by unit (`part=` directories,
    /// as the pipeline writes them), each slice is aggregated on its own:
    /// the deduplication aggregate then holds one slice's events instead of
    /// all of them, so it stays in memory instead of spilling. A unit whose
    /// events straddle slices could have a duplicate counted once per slice,
    /// so the union of the slices' rows is kept only when no unit has rows
    /// from two slices; otherwise the stage is redone in one query. With
    /// unique ids there is no such aggregate to shrink and one query is
    /// quicker (the join's hash table is built once).
    async fn unit_parts(&self, b: &Bounds, dedup: bool) -> Result<()> {
        if self.parts.is_empty() {
            return Ok(());
        }
        self.materialize("unit_keys", "SELECT unit_id, uidx, lo, first_ts FROM units")
            .await?;
        let whole = plan::unit_parts_sql(&self.parts, &self.properties, b, dedup, None, self.fused);
        if !dedup || self.slices.len() < 2 {
            return self.materialize("unit_parts", &whole).await;
        }
        let per_group = self.slices.len().div_ceil(SLICE_GROUPS);
        let groups: Vec<&[String]> = self.slices.chunks(per_group).collect();
        let per_slice: Vec<String> = plan::slice_conditions(&groups)
            .iter()
            .map(|c| {
                plan::unit_parts_sql(&self.parts, &self.properties, b, dedup, Some(c), self.fused)
            })
            .collect();
        self.materialize_union("unit_parts", &per_slice).await?;
        let straddling = self.sql(plan::STRADDLING_UNITS_SQL).await?;
        let n = match straddling.first() {
            Some(batch) => column_i64(batch, "n")?.first().copied().unwrap_or(0),
            None => 0,
        };
        if n > 0 {
            return self.materialize("unit_parts", &whole).await;
        }
        Ok(())
    }

    /// Fails with [`Error::NoExposures`] or [`Error::UnknownVariants`] when
    /// the experiment key or variant keys of the spec do not match the data
    /// (the rule is in `docs/data-model.md`, "Semantics").
    ///
    /// Runs after stage 1 (`units_all` registered): when every variant of
    /// `order` has units in this look there is nothing to check; otherwise
    /// the names are checked against all of the exposures, not only those
    /// before the look, so that an early look with no units yet is not an
    /// error.
    async fn check_names(&self, order: &[String]) -> Result<()> {
        let mut seen = BTreeSet::new();
        for batch in self.sql("SELECT DISTINCT variant FROM units_all").await? {
            seen.extend(column_str(&batch, "variant")?.into_iter().flatten());
        }
        if order.iter().all(|v| seen.contains(v)) {
            return Ok(());
        }
        let key = &self.spec.spec.key;
        let names = |batches: Vec<RecordBatch>, col: &str| -> Result<Vec<String>> {
            let mut out = Vec::new();
            for batch in batches {
                out.extend(column_str(&batch, col)?.into_iter().flatten());
            }
            Ok(out)
        };
        let v = plan::variant_column(self.spec.spec.analysis);
        let present = names(
            self.sql(&format!(
                "SELECT DISTINCT {v} AS name FROM exposures WHERE experiment = {key}                  AND {v} IS NOT NULL ORDER BY name",
                key = source::literal(key)
            ))
            .await?,
            "name",
        )?;
        if present.is_empty() {
            let experiments = names(
                self.sql(&format!(
                    "SELECT DISTINCT experiment AS name FROM exposures                      WHERE experiment IS NOT NULL ORDER BY name LIMIT {}",
                    crate::error::LISTED + 1
                ))
                .await?,
                "name",
            )?;
            return Err(Error::NoExposures {
                experiment: key.clone(),
                path: self.exposures.path.clone(),
                experiments,
            });
        }
        let missing: Vec<String> = order
            .iter()
            .filter(|v| !present.contains(v))
            .cloned()
            .collect();
        let unknown = present.iter().any(|p| !order.contains(p));
        if missing.len() == order.len() || (!missing.is_empty() && unknown) {
            return Err(Error::UnknownVariants {
                experiment: key.clone(),
                missing,
                present,
            });
        }
        Ok(())
    }

    /// Analyses the experiment as of `as_of` (default: its end).
    pub async fn run(&self, as_of: Option<DateTime<Utc>>) -> Result<Results> {
        self.run_look(as_of, &[]).await.map(|(r, _)| r)
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
        self.materialize("units_all", &plan::units_sql(&s.key, s.analysis, nseg, &b))
            .await?;
        // Only per-protocol analysis drops opted-out units, so only it reads
        // the events' flag (when the events have one at all).
        if s.analysis == crate::spec::AnalysisMode::PerProtocol
            && self.events.column("opted_out").is_some()
        {
            self.materialize("units_all", &plan::units_opted_out_by_events_sql(nseg, &b))
                .await?;
        }
        let diagnose = format!(
            "SELECT SUM(CASE WHEN multi_variant THEN 1 ELSE 0 END) AS multi, \
             SUM(CASE WHEN variant NOT IN ({known}) THEN 1 ELSE 0 END) AS unknown, \
             SUM(CASE WHEN opted_out THEN 1 ELSE 0 END) AS opted, \
             SUM(CASE WHEN ambiguous THEN 1 ELSE 0 END) AS ambiguous FROM units_all"
        );
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
        let opt_filter = match s.analysis {
            crate::spec::AnalysisMode::Itt => "",
            crate::spec::AnalysisMode::PerProtocol => " AND NOT opted_out",
        };
        self.materialize(
            "units",
            &format!(
                "SELECT *, CAST(ROW_NUMBER() OVER () AS BIGINT) AS uidx, \
                 CASE WHEN first_ts - {skew} > {start} THEN first_ts - {skew} ELSE {start} END AS lo \
                 FROM units_all WHERE variant IN ({known}){opt_filter}",
                skew = b.skew,
                start = b.start
            ),
        )
        .await?;

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
            for batch in self
                .sql("SELECT variant, COUNT(*) AS n FROM units GROUP BY variant")
                .await?
            {
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
        let previous: Vec<f64> = previous_fractions
            .iter()
            .copied()
            .filter(|&f| fraction.is_some_and(|now| f < now))
            .collect();
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
            bayesian: None,
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

        // Segments and Simpson's paradox.
        let mut segments = BTreeMap::new();
        for (si, seg) in s.segments.iter().enumerate() {
            let mut sr = results::SegmentReport {
                values: BTreeMap::new(),
                simpson: BTreeMap::new(),
            };
            for ((p, m), moments) in self.planned.iter().zip(&metrics).zip(&seg_moments) {
                let Some(cells) = moments.get(si) else {
                    continue;
                };
                let est = |mo: &Moments| -> Option<f64> {
                    if mo.n == 0 {
                        return None;
                    }
                    if p.metric.kind == MetricType::Ratio {
                        (mo.mx != 0.0).then(|| mo.my / mo.mx)
                    } else {
                        Some(mo.my)
                    }
                };
                let mut values_by_seg: BTreeMap<String, BTreeMap<String, Moments>> =
                    BTreeMap::new();
                for ((variant, value), mo) in cells {
                    values_by_seg
                        .entry(value.clone())
                        .or_default()
                        .insert(variant.clone(), *mo);
                    sr.values
                        .entry(value.clone())
                        .or_default()
                        .entry(p.metric.key.clone())
                        .or_default()
                        .insert(
                            variant.clone(),
                            results::SegmentCell {
                                n: mo.n,
                                mean: est(mo),
                            },
                        );
                }
                let mut checks = BTreeMap::new();
                for e in &m.effects {
                    let Some(aggregate) = e.delta else { continue };
                    let segs: Vec<SegmentEffect> = values_by_seg
                        .values()
                        .filter_map(|by_v| {
                            let c = by_v.get(&order[0])?;
                            let t = by_v.get(&e.variant)?;
                            Some(SegmentEffect {
                                effect: est(t)? - est(c)?,
                                n: c.n + t.n,
                            })
                        })
                        .collect();
                    let check = simpsons_paradox(aggregate, &segs, DEFAULT_MIN_SEGMENT_N)?;
                    if check.flagged {
                        warnings.push(results::Warning {
                            code: "simpsons_paradox".into(),
                            count: None,
                            message: format!(
                                "metric `{}`, {} vs {}: most `{seg}` segments have the opposite sign of the overall effect",
                                p.metric.key, e.variant, e.control
                            ),
                        });
                    }
                    checks.insert(
                        e.variant.clone(),
                        results::Simpson {
                            eligible_segments: check.eligible_segments,
                            opposite_segments: check.opposite_segments,
                            flagged: check.flagged,
                        },
                    );
                }
                sr.simpson.insert(p.metric.key.clone(), checks);
            }
            segments.insert(seg.clone(), sr);
        }

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
        let results = Results {
            experiment: s.key.clone(),
            as_of: rfc3339(end),
            start: rfc3339(self.spec.start),
            analysis: s.analysis.as_str().into(),
            units: units.clone(),
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
        };
        Ok((results, fraction))
    }

    /// Statistics of one metric, its winsorizing caps and per-segment moments.
    async fn metric_data(
        &self,
        p: &Planned,
        order: &[String],
        b: &Bounds,
    ) -> Result<(
        MetricData,
        Option<Vec<f64>>,
        Vec<BTreeMap<(String, String), Moments>>,
    )> {
        let kind = p.metric.kind;
        if kind == MetricType::Quantile {
            let q = p.metric.quantile.unwrap_or(0.5);
            let mut values: Vec<Vec<f64>> = vec![Vec::new(); order.len()];
            let slot = |variant: &str| order.iter().position(|o| o == variant);
            // One value per matching event (millions at scale): read the
            // Arrow columns in place rather than allocating a string per row.
            if let Some(&c) = p.cols.first() {
                // Gathered per unit in stage 2a.
                for batch in self
                    .sql(&format!("SELECT variant, p{c} AS v FROM unit_values"))
                    .await?
                {
                    let v = cast(column(&batch, "variant")?, &DataType::Utf8)
                        .map_err(datafusion::error::DataFusionError::from)?;
                    let (v, lists) = (v.as_string::<i32>(), column(&batch, "v")?.as_list::<i32>());
                    let (offsets, x) = (
                        lists.value_offsets(),
                        lists.values().as_primitive::<Float64Type>(),
                    );
                    for i in 0..batch.num_rows() {
                        if v.is_null(i) || lists.is_null(i) {
                            continue;
                        }
                        let Some(slot) = slot(v.value(i)) else {
                            continue;
                        };
                        let range = offsets[i] as usize..offsets[i + 1] as usize;
                        let out = &mut values[slot];
                        match x.nulls() {
                            None => out.extend_from_slice(&x.values()[range]),
                            Some(n) => {
                                out.extend(range.filter(|&j| n.is_valid(j)).map(|j| x.value(j)))
                            }
                        }
                    }
                }
            } else {
                let sql = plan::quantile_values_sql(
                    &p.metric,
                    &self.properties,
                    b,
                    !self.options.assume_unique_event_ids,
                );
                for batch in self.sql(&sql).await? {
                    let (v, x) = (
                        cast(column(&batch, "variant")?, &DataType::Utf8)
                            .map_err(datafusion::error::DataFusionError::from)?,
                        cast(column(&batch, "value")?, &DataType::Float64)
                            .map_err(datafusion::error::DataFusionError::from)?,
                    );
                    let (v, x) = (v.as_string::<i32>(), x.as_primitive::<Float64Type>());
                    for i in 0..batch.num_rows() {
                        if !v.is_null(i) && !x.is_null(i) {
                            if let Some(slot) = slot(v.value(i)) {
                                values[slot].push(x.value(i));
                            }
                        }
                    }
                }
            }
            // Millions of values per variant: the variants sort in parallel.
            let sorts: Vec<_> = values
                .into_iter()
                .map(|v| tokio::task::spawn_blocking(move || QuantileSample::from_values(v)))
                .collect();
            let mut variants = Vec::with_capacity(sorts.len());
            for s in sorts {
                let sample = s.await.map_err(|e| {
                    Error::Engine(datafusion::error::DataFusionError::External(Box::new(e)))
                })??;
                variants.push(sample);
            }
            return Ok((MetricData::Quantile { q, variants }, None, Vec::new()));
        }
        let e = plan::unit_expr(kind, &p.cols, p.cuped_col);
        let where_ = e
            .filter
            .as_ref()
            .map(|f| format!(" WHERE {f}"))
            .unwrap_or_default();
        let (mut y, mut x) = (e.y.clone(), e.x.clone());
        let mut caps = None;
        if let Some(w) = p.metric.winsorize {
            let mut exprs = vec![y.clone()];
            if kind == MetricType::Ratio {
                exprs.extend(x.clone());
            }
            let mut c = Vec::new();
            for ex in &exprs {
                let batches = self
                    .sql(&format!(
                        "SELECT percentile_cont({w:?}) WITHIN GROUP (ORDER BY v) AS cap FROM (SELECT {ex} AS v FROM unit_values{where_})"
                    ))
                    .await?;
                let cap = batches
                    .first()
                    .map(|b| column_f64(b, "cap"))
                    .transpose()?
                    .and_then(|v| v.first().copied().flatten());
                c.push(cap.unwrap_or(f64::INFINITY));
            }
            let capped = |ex: &str, cap: f64| {
                if cap.is_finite() {
                    format!("CASE WHEN {ex} > {cap:?} THEN {cap:?} ELSE {ex} END")
                } else {
                    ex.to_string()
                }
            };
            y = capped(&y, c[0]);
            if kind == MetricType::Ratio {
                x = x.map(|x| capped(&x, c[1]));
            }
            caps = Some(c.into_iter().filter(|c| c.is_finite()).collect());
        }
        let x_sql = x.clone().unwrap_or_else(|| "0.0".into());
        let moments = |group: &str| {
            format!(
                "SELECT variant{group_sel}, COUNT(*) AS n, AVG(y) AS my, VAR_POP(y) AS vy, AVG(x) AS mx, \
                 VAR_POP(x) AS vx, COVAR_POP(x, y) AS cxy FROM (SELECT variant{group_sel}, {y} AS y, {x_sql} AS x \
                 FROM unit_values{where_}) GROUP BY variant{group_sel}",
                group_sel = if group.is_empty() { String::new() } else { format!(", {group}") },
            )
        };
        let read = |batches: Vec<RecordBatch>,
                    group: Option<&str>|
         -> Result<BTreeMap<(String, String), Moments>> {
            let mut out = BTreeMap::new();
            for batch in batches {
                let v = column_str(&batch, "variant")?;
                let g = match group {
                    Some(gc) => column_str(&batch, gc)?,
                    None => vec![None; batch.num_rows()],
                };
                let n = column_i64(&batch, "n")?;
                let cols = ["my", "vy", "mx", "vx", "cxy"]
                    .iter()
                    .map(|c| column_f64(&batch, c))
                    .collect::<Result<Vec<_>>>()?;
                for i in 0..batch.num_rows() {
                    let Some(variant) = v[i].clone() else {
                        continue;
                    };
                    let get = |j: usize| cols[j][i].unwrap_or(0.0);
                    out.insert(
                        (variant, g[i].clone().unwrap_or_else(|| "(null)".into())),
                        Moments {
                            n: n[i].max(0) as u64,
                            my: get(0),
                            vy: get(1).max(0.0),
                            mx: get(2),
                            vx: get(3).max(0.0),
                            cxy: get(4),
                        },
                    );
                }
            }
            Ok(out)
        };
        let all = read(self.sql(&moments("")).await?, None)?;
        let mut segs = Vec::new();
        for i in 0..self.spec.spec.segments.len() {
            let col = format!("seg_{i}");
            segs.push(read(self.sql(&moments(&col)).await?, Some(&col))?);
        }
        let m = |v: &String| -> Moments {
            all.iter()
                .find(|((variant, _), _)| variant == v)
                .map(|(_, m)| *m)
                .unwrap_or_default()
        };
        let data = if kind == MetricType::Ratio {
            MetricData::Ratio(
                order
                    .iter()
                    .map(|v| {
                        let o = m(v);
                        let nf = o.n as f64;
                        RatioStats::from_moments(o.n, o.my, o.mx, o.vy * nf, o.vx * nf, o.cxy * nf)
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )
        } else if p.cuped_col.is_some() {
            MetricData::Cuped(
                order
                    .iter()
                    .map(|v| {
                        let o = m(v);
                        let nf = o.n as f64;
                        CupedStats::from_moments(o.n, o.my, o.mx, o.vy * nf, o.vx * nf, o.cxy * nf)
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )
        } else {
            MetricData::Mean(
                order
                    .iter()
                    .map(|v| {
                        let o = m(v);
                        MeanStats::from_moments(o.n, o.my, o.vy * o.n as f64)
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            )
        };
        Ok((data, caps, segs))
    }

    fn metric_result(
        &self,
        p: &Planned,
        input: &MetricInput,
        rep: &MetricReport,
        caps: Option<Vec<f64>>,
        order: &[String],
    ) -> results::MetricResult {
        let alpha = self.spec.spec.alpha;
        let mut variants = BTreeMap::new();
        for (i, name) in order.iter().enumerate() {
            let vr = match &input.data {
                MetricData::Mean(v) => results::VariantResult {
                    n: v[i].n(),
                    mean: (v[i].n() > 0).then(|| v[i].mean()),
                    variance: v[i].variance(),
                    cuped_mean: None,
                    value: None,
                    ci: None,
                },
                MetricData::Cuped(v) => {
                    let raw = v[i].metric();
                    results::VariantResult {
                        n: raw.n(),
                        mean: (raw.n() > 0).then(|| raw.mean()),
                        variance: raw.variance(),
                        cuped_mean: rep.variants[i].as_ref().map(|s| s.mean),
                        value: None,
                        ci: None,
                    }
                }
                MetricData::Ratio(v) => results::VariantResult {
                    n: v[i].n(),
                    mean: (v[i].n() > 0 && v[i].mean_den() != 0.0)
                        .then(|| v[i].mean_num() / v[i].mean_den()),
                    variance: rep.variants[i].as_ref().and_then(|s| s.variance),
                    cuped_mean: None,
                    value: None,
                    ci: None,
                },
                MetricData::Quantile { q, variants } => {
                    let est = rep.quantiles.as_ref().and_then(|qs| qs[i].as_ref());
                    results::VariantResult {
                        n: variants[i].n() as u64,
                        mean: None,
                        variance: None,
                        cuped_mean: None,
                        value: variants[i].quantile(*q),
                        ci: est.map(|e| pair(&e.ci)),
                    }
                }
                _ => results::VariantResult {
                    n: 0,
                    mean: None,
                    variance: None,
                    cuped_mean: None,
                    value: None,
                    ci: None,
                },
            };
            variants.insert(name.clone(), vr);
        }
        let effects = rep
            .comparisons
            .iter()
            .enumerate()
            .map(|(ci, c)| self.effect(p, input, rep, c, ci + 1, order, alpha))
            .collect();
        results::MetricResult {
            metric: p.metric.key.clone(),
            role: match p.role {
                MetricRole::Primary => "primary",
                MetricRole::Secondary => "secondary",
                MetricRole::Guardrail => "guardrail",
            }
            .into(),
            kind: p.metric.kind.as_str().into(),
            direction: match p.metric.direction() {
                crate::metrics::Direction::IncreaseIsGood => "increase_is_good",
                crate::metrics::Direction::IncreaseIsBad => "increase_is_bad",
            }
            .into(),
            quantile: p.metric.quantile,
            winsorize_caps: caps,
            variants,
            effects,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn effect(
        &self,
        p: &Planned,
        input: &MetricInput,
        rep: &MetricReport,
        c: &ComparisonReport,
        ti: usize,
        order: &[String],
        alpha: f64,
    ) -> results::Effect {
        let json_name = |v: &serde_json::Value| v.as_str().map(str::to_string).unwrap_or_default();
        let (delta, ci, relative, relative_ci) = match (&c.comparison.welch, &c.quantile) {
            (Some(w), _) => (
                Some(w.difference),
                Some(pair(&w.ci)),
                c.comparison.lift.map(|l| l.estimate),
                c.comparison.lift.map(|l| pair(&l.ci)),
            ),
            (None, Some(q)) => (
                Some(q.difference),
                Some(pair(&q.ci)),
                (q.control.estimate != 0.0).then(|| q.difference / q.control.estimate),
                None,
            ),
            _ => (None, None, None, None),
        };
        let unadjusted = match &input.data {
            MetricData::Cuped(v) => {
                let (cs, ts) = (v[0].metric(), v[ti].metric());
                Comparison::new(
                    Sample::from_mean(&cs).as_ref(),
                    Sample::from_mean(&ts).as_ref(),
                    alpha,
                )
                .ok()
                .map(|u| results::Unadjusted {
                    delta: u.welch.map(|w| w.difference),
                    ci: u.welch.map(|w| pair(&w.ci)),
                    p_value: u.p_value(),
                })
            }
            _ => None,
        };
        let sequential = c.sequential.as_ref().map(|s| match s {
            SequentialOutcome::GroupSequential(g) => results::Sequential {
                method: "group_sequential".into(),
                information_fraction: g.looks.last().map(|l| l.information_fraction),
                z: Some(g.z),
                boundary: Some(g.boundary),
                ci: None,
                p_value: None,
                decision: json_name(&serde_json::to_value(g.decision).unwrap_or_default()),
            },
            SequentialOutcome::AlwaysValid(cs) => results::Sequential {
                method: "always_valid".into(),
                information_fraction: None,
                z: None,
                boundary: None,
                ci: Some(pair(&cs.ci)),
                p_value: Some(cs.p_value),
                decision: json_name(&serde_json::to_value(cs.decision).unwrap_or_default()),
            },
            _ => results::Sequential {
                method: match self.spec.spec.sequential {
                    SequentialMethod::AlwaysValid => "always_valid",
                    _ => "group_sequential",
                }
                .into(),
                information_fraction: None,
                z: None,
                boundary: None,
                ci: None,
                p_value: None,
                decision: "insufficient_data".into(),
            },
        });
        let p_value = c.p_value();
        let significant = match (&sequential, p.role) {
            (Some(s), MetricRole::Primary) => s.decision == "significant",
            (None, MetricRole::Primary) | (_, MetricRole::Guardrail) => {
                p_value.is_some_and(|p| p < alpha)
            }
            _ => c.adjusted_p_value.is_some_and(|p| p < alpha),
        };
        // Only secondary metrics are adjusted for multiplicity.
        let adjusted_p_value = match p.role {
            MetricRole::Secondary => c.adjusted_p_value,
            _ => None,
        };
        results::Effect {
            variant: order[ti].clone(),
            control: order[0].clone(),
            delta,
            ci,
            relative,
            relative_ci,
            p_value,
            adjusted_p_value,
            significant,
            tier: json_name(&serde_json::to_value(c.tier).unwrap_or_default()),
            cuped: rep.cuped.map(|cu| results::CupedInfo {
                theta: cu.theta,
                variance_reduction: cu.variance_reduction,
            }),
            unadjusted,
            sequential,
            insufficient_data: c
                .comparison
                .insufficient_data
                .map(|r| json_name(&serde_json::to_value(r).unwrap_or_default())),
            warnings: c
                .warnings
                .iter()
                .map(|w| json_name(&serde_json::to_value(w).unwrap_or_default()))
                .collect(),
        }
    }

    async fn novelty(
        &self,
        early: &[usize],
        late: &[usize],
        order: &[String],
        b: &Bounds,
    ) -> Result<results::Novelty> {
        let p = &self.planned[0];
        let alpha = self.spec.spec.alpha;
        let stats = |cols: &[usize], late_only: bool| {
            let e = plan::unit_expr(p.metric.kind, cols, None);
            let mut conds: Vec<String> = e.filter.into_iter().collect();
            if late_only {
                conds.push(format!("first_ts + {} < {}", b.novelty, b.end));
            }
            let where_ = if conds.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conds.join(" AND "))
            };
            format!(
                "SELECT variant, COUNT(*) AS n, AVG(y) AS my, VAR_POP(y) AS vy FROM \
                 (SELECT variant, {} AS y FROM unit_values{where_}) GROUP BY variant",
                e.y
            )
        };
        let mut per_window = Vec::new();
        for (cols, late_only) in [(early, false), (late, true)] {
            let mut by_variant: BTreeMap<String, MeanStats> = BTreeMap::new();
            for batch in self.sql(&stats(cols, late_only)).await? {
                let v = column_str(&batch, "variant")?;
                let n = column_i64(&batch, "n")?;
                let my = column_f64(&batch, "my")?;
                let vy = column_f64(&batch, "vy")?;
                for i in 0..batch.num_rows() {
                    if let Some(name) = v[i].clone() {
                        let n = n[i].max(0) as u64;
                        by_variant.insert(
                            name,
                            MeanStats::from_moments(
                                n,
                                my[i].unwrap_or(0.0),
                                vy[i].unwrap_or(0.0).max(0.0) * n as f64,
                            )?,
                        );
                    }
                }
            }
            per_window.push(by_variant);
        }
        let mut effects = Vec::new();
        for treatment in order.iter().skip(1) {
            let window = |w: &BTreeMap<String, MeanStats>| -> Result<WindowOutcome> {
                let c = w.get(&order[0]).cloned().unwrap_or_default();
                let t = w.get(treatment).cloned().unwrap_or_default();
                let cmp = Comparison::new(
                    Sample::from_mean(&c).as_ref(),
                    Sample::from_mean(&t).as_ref(),
                    alpha,
                )?;
                Ok((
                    results::WindowEffect {
                        n: [c.n(), t.n()],
                        delta: cmp.welch.map(|w| w.difference),
                        ci: cmp.welch.map(|w| pair(&w.ci)),
                        p_value: cmp.p_value(),
                    },
                    cmp.welch,
                ))
            };
            let (early_e, ew) = window(&per_window[0])?;
            let (late_e, lw) = window(&per_window[1])?;
            let decay = match (ew, lw) {
                (Some(e), Some(l)) => novelty_decay(&e, &l, alpha)?,
                _ => None,
            };
            effects.push(results::NoveltyEffect {
                variant: treatment.clone(),
                early: early_e,
                late: late_e,
                decay_p_value: decay.map(|d| d.p_value),
                flagged: decay.is_some_and(|d| d.flagged),
            });
        }
        Ok(results::Novelty {
            metric: p.metric.key.clone(),
            window_days: self.spec.spec.novelty_days,
            effects,
        })
    }
}
