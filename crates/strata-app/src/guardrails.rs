//! The guardrail monitor: kill a bad experiment within minutes, and never
//! on incomplete data.
//!
//! A background job of `strata serve`. Every `--guardrail-interval`
//! (default 5 minutes; the next cycle starts an interval after the end of
//! the last, so cycles never overlap) it evaluates, for every running
//! experiment, every guardrail definition that applies to it (those it
//! lists, and the organisation-wide ones with `"applies_to": "all"`):
//!
//! 1. **Fresh data, its own fast path.** It reads the pipeline's Parquet
//!    tree directly — no compaction, no hourly analysis — under the
//!    store's read lease. The background compactor makes a record visible
//!    within seconds of its acknowledgement; the pipeline's lag (the age of
//!    the oldest record not yet visible) is measured at the start of the
//!    cycle and is a gate: above 60 s the evaluation is skipped. The data's
//!    cutoff is [`DELIVERY_ALLOWANCE`] (`GuardrailConfig::delivery_allowance`)
//!    before the cycle's start, so the last events of a unit counted have
//!    had time to arrive. The allowance is real time (SDK flush, network,
//!    compaction); under a simulated clock (strata-clock) it spans
//!    `speed` times as much simulated time.
//! 2. **The metric per variant** over each unit's first `window_minutes`
//!    after its first exposure since activation, for units whose window
//!    has elapsed (`strata_analysis::monitor`), and the data's
//!    completeness: exposures and events per variant, each user
//!    partition's freshness. One read serves every running experiment,
//!    and it continues from the units the earlier cycles folded (their
//!    values are final), so a cycle reads the events of the last window
//!    and interval and the exposures since the last cycle, not those of
//!    the experiments' whole lives; every
//!    [`FULL_RECOMPUTE`] a cycle starts over from the experiments' starts,
//!    counting what arrived too late for an earlier cycle.
//! 3. **The decision** ([`strata_server::guardrail::evaluate`]): gates,
//!    then an always-valid one-sided test of every treatment at its share
//!    of the experiment's error budget (`--guardrail-alpha`).
//! 4. **The record**: every evaluation, with its input, through
//!    [`GuardrailService::record`] — replayable, so every kill can be
//!    audited.
//! 5. **The action**, as the system actor `system:guardrails` through
//!    [`ExperimentService`] (so a kill is checked, audited and pushed to
//!    the SDKs' streams like any other): `kill`, `pause` or `alert`; an
//!    experiment that requires approval is never killed or paused unless
//!    the guardrail says `force` — its breach alerts and waits for a person
//!    (`…/guardrails/{guardrail}/confirm | dismiss`).
//!
//! **Ramp plans.** An experiment with a `ramp_plan` is advanced to its
//! next stage (`ramp` as `system:guardrails`, audited with the reason)
//! when its stage's `min_hours` have passed since its last change, every
//! guardrail evaluated at this check found no breach, and its latest
//! analysis look — taken since the stage began — has no failing health
//! check; otherwise it holds, and the cycle says why.
//!
//! Alerts: `guardrail.breach` when a breach episode starts (not at every
//! check while it lasts), `experiment.auto_killed` / `experiment.auto_paused`
//! when the monitor acts, `data.stale` when the pipeline's data turns
//! incomplete (its lag or a user partition behind).
//!
//! **Activation.** The windows and the age gate count from the moment the
//! experiment first became active ([`Activation`]: its version reached the
//! SDK instances) — the first cycle that sees it active, or the start
//! itself when no SDK instance was seen (nothing to wait for) or the
//! activation timeout's end when it timed out. While a later version (a
//! ramp, a resume) is activating, evaluations are skipped (gate
//! `activation`), but the sample is not restarted: the always-valid test
//! is about one growing sample, and restarting it at every ramp would
//! spend the experiment's error budget once per ramp. The moment is stored
//! with each evaluation, so a restarted server continues from it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use strata_analysis::monitor::{
    monitor_incremental, partition_freshness, MonitorData, MonitorSpec, MonitorState,
    WindowedMetric,
};
use strata_analysis::results::Results;
use strata_analysis::spec::parse_time;
use strata_analysis::{DataSource, MetricRegistry};
use strata_model::results::HealthStatus;
use strata_model::{AppliesTo, GuardrailDef, MetricType};
use strata_server::activation::Activation;
use strata_server::auth::{Auth, Perm};
use strata_server::guardrail::{
    evaluate, lag_gate, partitions_gate, Action as GuardrailAction, Evaluation, EvaluationInput,
    Gate, Outcome, PartitionFacts, VariantFacts, FRESHNESS_LOOKBACK_MINUTES,
};
use strata_server::model::{ExperimentRecord, Status};
use strata_server::mount::Mount;
use strata_server::service::guardrails::stored_input;
use strata_server::service::{
    ActParams, Action, Actor, Alert, AlertService, ExperimentService, GuardrailService,
    RegistryService, ResultsService, ServiceError,
};
use strata_server::store::EvaluationRecord;
use strata_server::{AppError, AppState};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa::OpenApi;

use crate::analysis::rfc3339;
use crate::leader::Leadership;
use crate::pipeline::Pipeline;

/// Cycles kept for `GET /api/v1/guardrail-monitor`.
pub const CYCLES_KEPT: usize = 50;
/// Evaluations that decided nothing are kept this long.
pub const KEEP_QUIET_EVALUATIONS: Duration = Duration::from_secs(30 * 86_400);
/// The data's cutoff trails the start of a cycle by this much: the events
/// of a unit whose window ends just before the cutoff have had this long
/// to be flushed by the SDK, acknowledged and compacted.
pub const DELIVERY_ALLOWANCE: Duration = Duration::from_secs(30);
/// Events up to this long before a unit's first exposure count (clock skew
/// between the SDK's exposure and the event's source), as in the analysis.
const CLOCK_SKEW_SECONDS: f64 = 5.0;
/// Every this long, a cycle drops the folds of earlier cycles and reads
/// every experiment's events from its start: events that arrived after
/// their unit was folded are counted again (see
/// `strata_analysis::monitor::MonitorState`).
pub const FULL_RECOMPUTE: Duration = Duration::from_secs(3600);
/// The memory a cycle's read may hold. Above it the read fails — every
/// experiment's evaluation is skipped (gate `data`) and the cycle says why
/// — rather than the server running out of memory under a load the monitor
/// cannot keep up with.
pub const MONITOR_MEMORY_LIMIT: usize = 2 << 30;

/// How the monitor runs.
#[derive(Debug, Clone)]
pub struct GuardrailConfig {
    /// Time from the end of one cycle to the start of the next.
    pub interval: Duration,
    /// Delay of the first cycle after the server starts.
    pub first_run: Duration,
    /// Each experiment's error budget for kills over its whole life.
    pub budget: f64,
    /// The pipeline's user partitions (for the freshness gate).
    pub partitions: u32,
    /// How far the data's cutoff trails a cycle's start, in real time
    /// (default [`DELIVERY_ALLOWANCE`]).
    pub delivery_allowance: Duration,
}

impl GuardrailConfig {
    /// Cycles every `interval` with the default budget (0.01), the first
    /// one after `interval` or 10 s, whichever is shorter.
    pub fn every(interval: Duration) -> Self {
        Self {
            interval,
            first_run: interval.min(Duration::from_secs(10)),
            budget: 0.01,
            partitions: strata_pipeline::partition::DEFAULT_PARTITIONS,
            delivery_allowance: DELIVERY_ALLOWANCE,
        }
    }
}

impl Default for GuardrailConfig {
    fn default() -> Self {
        Self::every(Duration::from_secs(300))
    }
}

/// One cycle of the monitor.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Cycle {
    /// When it started (RFC 3339).
    pub started_at: String,
    /// The data's cutoff: the delivery allowance before the start.
    pub cutoff: String,
    /// When it ended; none while it runs.
    pub ended_at: Option<String>,
    /// Seconds it took.
    pub seconds: f64,
    /// The pipeline's lag at the start, seconds.
    pub pipeline_lag_seconds: f64,
    /// Of `seconds`, reading the inputs and the partitions' freshness.
    pub freshness_seconds: f64,
    /// Of `seconds`, reading every experiment's data.
    pub data_seconds: f64,
    /// Running experiments with at least one guardrail.
    pub experiments: u64,
    /// Evaluations recorded.
    pub evaluations: u64,
    /// Of them, skipped by a gate.
    pub skipped: u64,
    /// Of them, breaches.
    pub breaches: u64,
    /// Experiments killed or paused.
    pub actions: u64,
    /// What went wrong outside single evaluations (store, freshness).
    pub errors: Vec<String>,
    /// The ramp plans it followed.
    pub ramps: Vec<RampDecision>,
}

/// What one guardrail check of an experiment found.
struct Checked {
    /// Every guardrail evaluated found no breach.
    green: bool,
    /// The monitor killed or paused the experiment.
    acted: bool,
}

/// What the monitor did with an experiment's ramp plan in a cycle.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RampDecision {
    /// The experiment.
    pub experiment: String,
    /// Its current stage (1-based; 0: below the plan's first) …
    pub stage: usize,
    /// … of this many.
    pub stages: usize,
    /// Its ramp_percent before the decision.
    pub percent: f64,
    /// The ramp_percent it advanced to; none: held.
    pub to: Option<f64>,
    /// Why it advanced or held.
    pub reason: String,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    cycles: AtomicU64,
    evaluations: [AtomicU64; 4],
    kills: AtomicU64,
    pauses: AtomicU64,
    last_cycle_micros: AtomicU64,
}

/// The monitor: its configuration, the data it reads and what it did.
#[derive(Debug)]
pub struct Monitor {
    state: AppState,
    pipeline: Arc<Pipeline>,
    cfg: GuardrailConfig,
    /// Per experiment: when it first became active.
    activations: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Whether the last cycle found the data incomplete.
    stale: AtomicBool,
    /// What earlier cycles folded, and when the folds were last rebuilt
    /// from the start; only the running cycle uses them.
    folds: Mutex<(MonitorState, Option<Instant>)>,
    cycles: Mutex<VecDeque<Cycle>>,
    counters: Counters,
    /// Whether this node runs the jobs ([`crate::leader`]).
    leadership: Leadership,
}

/// What a cycle reads once for all experiments.
struct Shared {
    data: DataSource,
    /// The pipeline has written no file yet (nothing to read, no error).
    empty: bool,
    registry: MetricRegistry,
    defs: Vec<GuardrailDef>,
    cutoff: DateTime<Utc>,
    lag: f64,
    partitions: Vec<PartitionFacts>,
}

fn actor() -> Actor {
    Actor::system("guardrails").granting([
        Perm::Read,
        Perm::ResultsRead,
        Perm::ResultsWrite,
        Perm::ExperimentsKill,
        Perm::ExperimentsWrite,
    ])
}

impl Monitor {
    /// A monitor of `state`'s experiments over `pipeline`'s data.
    pub fn new(
        state: AppState,
        pipeline: Arc<Pipeline>,
        cfg: GuardrailConfig,
        leadership: Leadership,
    ) -> Self {
        Self {
            state,
            pipeline,
            cfg,
            activations: Mutex::new(HashMap::new()),
            stale: AtomicBool::new(false),
            folds: Mutex::new((MonitorState::default(), None)),
            cycles: Mutex::new(VecDeque::new()),
            counters: Counters::default(),
            leadership,
        }
    }

    /// The recent cycles, the latest first.
    pub fn cycles(&self) -> Vec<Cycle> {
        let c = self.cycles.lock().unwrap_or_else(PoisonError::into_inner);
        c.iter().cloned().collect()
    }

    fn keep(&self, cycle: &Cycle) {
        let mut c = self.cycles.lock().unwrap_or_else(PoisonError::into_inner);
        c.push_front(cycle.clone());
        c.truncate(CYCLES_KEPT);
    }

    /// Runs one cycle over every running experiment. When `stop` turns true
    /// the cycle ends after the experiment being evaluated.
    pub async fn cycle(&self, stop: &watch::Receiver<bool>) -> Cycle {
        let clock = Instant::now();
        let started = DateTime::<Utc>::from(strata_clock::now());
        // Real time on the calendar clock: `speed` times as long simulated.
        let allowance = Duration::try_from_secs_f64(
            self.cfg.delivery_allowance.as_secs_f64() * strata_clock::speed(),
        )
        .unwrap_or(Duration::MAX);
        let cutoff = started - chrono::Duration::from_std(allowance).unwrap_or_default();
        let lag = self
            .pipeline
            .store
            .pressure()
            .compaction_lag
            .map_or(0.0, |d| d.as_secs_f64());
        let mut cycle = Cycle {
            started_at: rfc3339(started),
            cutoff: rfc3339(cutoff),
            pipeline_lag_seconds: lag,
            ..Cycle::default()
        };
        let read = Instant::now();
        let inputs = self.inputs(cutoff, lag).await;
        cycle.freshness_seconds = read.elapsed().as_secs_f64();
        match inputs {
            Ok((experiments, shared)) => {
                self.check_staleness(&shared).await;
                // What each experiment needs, then every experiment's data
                // from one read of the pipeline's tree.
                let mut work = Vec::with_capacity(experiments.len());
                for e in &experiments {
                    let guardrails: Vec<&GuardrailDef> = shared
                        .defs
                        .iter()
                        .filter(|g| g.applies_to == AppliesTo::All || e.guardrails.contains(&g.key))
                        .collect();
                    let activated_at = if guardrails.is_empty() {
                        None
                    } else {
                        self.activated_at(e, shared.cutoff).await
                    };
                    work.push((e, guardrails, activated_at));
                }
                // A guardrail whose metric the monitor cannot compute is
                // skipped on its own (gate `data`), never with the others.
                let specs: Vec<MonitorSpec> = work
                    .iter()
                    .filter_map(|(e, g, at)| {
                        let watchable: Vec<&GuardrailDef> = g
                            .iter()
                            .copied()
                            .filter(|g| unwatchable(g, &shared.registry).is_none())
                            .collect();
                        Some(spec(e, &watchable, (*at)?, shared.cutoff))
                    })
                    .filter(|_| !shared.empty)
                    .collect();
                let read = Instant::now();
                let mut data = self.data(&shared, &specs).await.into_iter();
                cycle.data_seconds = read.elapsed().as_secs_f64();
                for (e, guardrails, activated_at) in work {
                    if *stop.borrow() {
                        break;
                    }
                    let mut green = true;
                    if !guardrails.is_empty() {
                        cycle.experiments += 1;
                        let found = match (activated_at, shared.empty) {
                            (Some(_), false) => data.next(),
                            _ => None,
                        };
                        let checked = self
                            .experiment(e, &guardrails, activated_at, found, &shared, &mut cycle)
                            .await;
                        if checked.acted {
                            continue;
                        }
                        green = checked.green;
                    }
                    if !e.ramp_plan.is_empty() {
                        let decision = self.ramp(e, green, shared.cutoff).await;
                        cycle.ramps.push(decision);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "guardrail cycle failed");
                cycle.errors.push(e);
            }
        }
        let before = DateTime::<Utc>::from(strata_clock::now())
            - chrono::Duration::from_std(KEEP_QUIET_EVALUATIONS).unwrap_or_default();
        if let Err(e) = GuardrailService::new(self.state.clone())
            .prune(before.timestamp_millis())
            .await
        {
            cycle
                .errors
                .push(format!("cannot prune old evaluations: {e}"));
        }
        cycle.seconds = clock.elapsed().as_secs_f64();
        cycle.ended_at = Some(rfc3339(strata_clock::now().into()));
        self.counters.cycles.fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_cycle_micros
            .store(clock.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.keep(&cycle);
        tracing::info!(
            experiments = cycle.experiments,
            evaluations = cycle.evaluations,
            skipped = cycle.skipped,
            breaches = cycle.breaches,
            actions = cycle.actions,
            seconds = cycle.seconds,
            "guardrail cycle done"
        );
        cycle
    }

    /// The running experiments and what every evaluation of the cycle reads.
    async fn inputs(
        &self,
        cutoff: DateTime<Utc>,
        lag: f64,
    ) -> Result<(Vec<ExperimentRecord>, Shared), String> {
        let experiments: Vec<ExperimentRecord> = self
            .state
            .store
            .experiments()
            .await
            .map_err(|e| format!("cannot list experiments: {e}"))?
            .into_iter()
            .filter(|e| e.status == Status::Running)
            .collect();
        let registry = RegistryService::new(self.state.clone());
        let metrics = registry
            .registry()
            .await
            .map_err(|e| format!("cannot read the metric registry: {e}"))?;
        let defs = registry
            .guardrail_definitions()
            .await
            .map_err(|e| format!("cannot read the guardrail definitions: {e}"))?;
        let data = self.pipeline.data_source();
        let since = cutoff - chrono::Duration::minutes(FRESHNESS_LOOKBACK_MINUTES);
        // Both kinds are needed: right after a start the exposures may be
        // compacted before any event is.
        let root = self.pipeline.store.parquet_dir();
        let empty =
            !(has_files(&root.join("kind=exposures")) && has_files(&root.join("kind=events")));
        let partitions = if empty {
            Vec::new()
        } else {
            let _lease = self.pipeline.store.read_lease().await;
            partition_freshness(&data, since, cutoff)
                .await
                .map_err(|e| format!("cannot measure the partitions' freshness: {e}"))?
        };
        let partitions = partitions
            .into_iter()
            .map(|p| PartitionFacts {
                part: p.part,
                events: p.events,
                silent_seconds: p
                    .last_event_at
                    .map_or((FRESHNESS_LOOKBACK_MINUTES * 60) as f64, |t| {
                        (cutoff - t).num_milliseconds().max(0) as f64 / 1000.0
                    }),
            })
            .collect();
        Ok((
            experiments,
            Shared {
                data,
                empty,
                registry: MetricRegistry::from(metrics),
                defs,
                cutoff,
                lag,
                partitions,
            },
        ))
    }

    /// When experiment `e` first became active — the start of its
    /// guardrails' samples and of the age gate (see the module
    /// documentation) — or none while its current version is activating
    /// (after its start, a ramp or a resume).
    async fn activated_at(
        &self,
        e: &ExperimentRecord,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let act = Activation::of(
            e,
            &self.state.instances,
            self.state.settings.activation_timeout,
        );
        if act.state != "active" {
            return None;
        }
        let known = {
            let map = self
                .activations
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            map.get(&e.key).copied()
        };
        if let Some(at) = known {
            return Some(at);
        }
        // A restarted server continues from its stored evaluations.
        let stored = GuardrailService::new(self.state.clone())
            .recent_of_experiment(&e.key, 50)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| stored_input(&r).ok())
            .find_map(|i| i.activated_at.as_deref().and_then(parse_time));
        let since = parse_time(&act.since).unwrap_or(now);
        let at = stored.unwrap_or(if act.instances == 0 {
            since
        } else if act.timed_out {
            since
                + chrono::Duration::from_std(self.state.settings.activation_timeout)
                    .unwrap_or_default()
        } else {
            now
        });
        let mut map = self
            .activations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(e.key.clone(), at);
        Some(at)
    }

    /// Every spec's data, from one read under the store's read lease,
    /// continuing from the earlier cycles' folds (rebuilt from the start
    /// every [`FULL_RECOMPUTE`]); a failed read is every experiment's error.
    async fn data(
        &self,
        shared: &Shared,
        specs: &[MonitorSpec],
    ) -> Vec<Result<MonitorData, String>> {
        if specs.is_empty() {
            return Vec::new();
        }
        let (mut state, mut rebuilt) = {
            let mut f = self.folds.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut *f)
        };
        if rebuilt.is_none_or(|at| at.elapsed() >= FULL_RECOMPUTE) {
            state = MonitorState::default();
            rebuilt = Some(Instant::now());
        }
        let all = {
            let _lease = self.pipeline.store.read_lease().await;
            monitor_incremental(
                &shared.data,
                &shared.registry,
                specs,
                &mut state,
                Some(MONITOR_MEMORY_LIMIT),
            )
            .await
        };
        *self.folds.lock().unwrap_or_else(PoisonError::into_inner) = (state, rebuilt);
        match all {
            Ok(all) => all
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect(),
            Err(e) => vec![Err(e.to_string()); specs.len()],
        }
    }

    /// Evaluates every guardrail of one experiment on its data (`found`:
    /// none when it is not active yet or there is no data), records and
    /// acts.
    async fn experiment(
        &self,
        e: &ExperimentRecord,
        guardrails: &[&GuardrailDef],
        activated_at: Option<DateTime<Utc>>,
        found: Option<Result<MonitorData, String>>,
        shared: &Shared,
        cycle: &mut Cycle,
    ) -> Checked {
        let mut checked = Checked {
            green: true,
            acted: false,
        };
        let cutoff = shared.cutoff;
        let definition = e.definition();
        let control = definition
            .control()
            .map(|c| c.key.clone())
            .unwrap_or_default();
        let mut facts: Vec<VariantFacts> = e
            .variants
            .iter()
            .map(|v| VariantFacts {
                key: v.key.clone(),
                weight: f64::from(v.weight),
                exposed: 0,
                events: 0,
                n: 0,
                mean: 0.0,
                variance: 0.0,
            })
            .collect();
        let mut data_error = None;
        let mut stats = None;
        match found {
            Some(Ok(d)) => {
                for f in &mut facts {
                    if let Some(v) = d.variants.iter().find(|v| v.variant == f.key) {
                        f.exposed = v.exposed;
                        f.events = v.events;
                    }
                }
                stats = Some(d.metrics);
            }
            Some(Err(err)) => data_error = Some(err),
            None => {}
        }
        let age_minutes = activated_at.map_or(0.0, |a| {
            (cutoff - a).num_milliseconds().max(0) as f64 / 60_000.0
        });
        for g in guardrails {
            let mut variants = facts.clone();
            if let Some(metrics) = &stats {
                if let Some(m) = metrics
                    .iter()
                    .find(|m| m.metric == g.metric && m.window_minutes == g.window_minutes)
                {
                    for f in &mut variants {
                        // An undefined statistic (a ratio whose denominators
                        // sum to zero) is no usable unit.
                        let v = m.variants.iter().find(|v| v.variant == f.key);
                        if let Some(v) = v.filter(|v| v.mean.is_finite() && v.variance.is_finite())
                        {
                            f.n = v.n;
                            f.mean = v.mean;
                            f.variance = v.variance;
                        }
                    }
                }
            }
            let input = EvaluationInput {
                experiment: e.key.clone(),
                guardrail: (*g).clone(),
                requires_approval: e.requires_approval,
                control: control.clone(),
                budget: self.cfg.budget,
                guardrails: guardrails.len(),
                planned_units: e.planned_units,
                config_version: e.version,
                cutoff: rfc3339(cutoff),
                activated_at: activated_at.map(rfc3339),
                age_minutes,
                pipeline_lag_seconds: shared.lag,
                partitions: shared.partitions.clone(),
                partition_count: self.cfg.partitions,
                variants,
                data_error: unwatchable(g, &shared.registry).or_else(|| data_error.clone()),
            };
            let evaluation = evaluate(&input);
            self.count(&evaluation, cycle);
            checked.green &= evaluation.outcome == Outcome::NoBreach;
            if let Some(true) = self.record_and_act(e, &input, &evaluation).await {
                // Killed or paused: the other guardrails have nothing left
                // to act on until a person resumes it.
                cycle.actions += 1;
                checked.acted = true;
                break;
            }
        }
        checked
    }

    /// Advances experiment `e` along its ramp plan when its stage's time
    /// has passed, its guardrails are `green` (every one evaluated this
    /// cycle found no breach) and its latest look, taken since the stage
    /// began, has no failing health check; otherwise holds, saying why.
    async fn ramp(&self, e: &ExperimentRecord, green: bool, now: DateTime<Utc>) -> RampDecision {
        let plan = &e.ramp_plan;
        // The stage reached (none: ramped by hand below the first one,
        // which then comes next with no time to wait).
        let reached = plan
            .iter()
            .rposition(|s| s.percent <= e.ramp_percent + 1e-9);
        let next_index = reached.map_or(0, |i| i + 1);
        let mut decision = RampDecision {
            experiment: e.key.clone(),
            stage: reached.map_or(0, |i| i + 1),
            stages: plan.len(),
            percent: e.ramp_percent,
            to: None,
            reason: String::new(),
        };
        let Some(next) = plan.get(next_index) else {
            decision.reason = "at the plan's last stage".to_owned();
            return decision;
        };
        // A running experiment's definition is frozen: its last change is
        // the ramp to this stage (or a resume, which restarts the stage).
        let since = parse_time(&e.updated_at).unwrap_or(now);
        let hours = (now - since).num_seconds().max(0) as f64 / 3600.0;
        let need = reached.and_then(|i| plan[i].min_hours).unwrap_or(0.0);
        if hours < need {
            decision.reason = format!("{hours:.2} of the stage's {need} hours have passed");
            return decision;
        }
        if !green {
            decision.reason = "not every guardrail found no breach at this check".to_owned();
            return decision;
        }
        let look = match ResultsService::new(self.state.clone())
            .read(&actor(), &e.key, None)
            .await
        {
            Ok(l) => l,
            Err(ServiceError::NotFound { what, .. }) if what != "experiment" => {
                decision.reason = "no analysis look yet".to_owned();
                return decision;
            }
            Err(err) => {
                decision.reason = format!("cannot read the latest look: {err}");
                return decision;
            }
        };
        if parse_time(&look.meta.as_of).is_none_or(|t| t < since) {
            decision.reason = format!(
                "the latest look (as of {}) is older than the stage",
                look.meta.as_of
            );
            return decision;
        }
        let failing: Vec<String> = serde_json::from_value::<Results>(look.results)
            .map(|r| {
                r.health
                    .iter()
                    .filter(|h| h.status == HealthStatus::Fail)
                    .map(|h| h.check.clone())
                    .collect()
            })
            .unwrap_or_else(|_| vec!["unreadable look".to_owned()]);
        if !failing.is_empty() {
            decision.reason = format!("failing health checks: {}", failing.join(", "));
            return decision;
        }
        let reason = format!(
            "ramp plan stage {} of {}: {}% after {hours:.2} hours at {}%, guardrails and health green",
            next_index + 1,
            plan.len(),
            next.percent,
            e.ramp_percent
        );
        let params = ActParams {
            ramp_percent: Some(next.percent),
            reason: Some(reason.clone()),
            ..ActParams::default()
        };
        match ExperimentService::new(self.state.clone())
            .act(&actor(), &e.key, Action::Ramp, params)
            .await
        {
            Ok(_) => {
                tracing::info!(experiment = %e.key, to = next.percent, "ramp plan advanced");
                decision.to = Some(next.percent);
                decision.reason = reason;
            }
            Err(err) => decision.reason = format!("the ramp failed: {err}"),
        }
        decision
    }

    fn count(&self, evaluation: &Evaluation, cycle: &mut Cycle) {
        cycle.evaluations += 1;
        let slot = match evaluation.outcome {
            Outcome::Skipped => {
                cycle.skipped += 1;
                0
            }
            Outcome::Breach => {
                cycle.breaches += 1;
                1
            }
            Outcome::NoBreach => 2,
            Outcome::Insufficient => 3,
        };
        self.counters.evaluations[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Raises `data.stale` when the pipeline's data turns incomplete (its
    /// lag, or a user partition behind), once per episode; the episode
    /// ends at the first cycle with complete data.
    async fn check_staleness(&self, shared: &Shared) {
        let failed: Vec<Gate> = [
            lag_gate(shared.lag),
            partitions_gate(&shared.partitions, self.cfg.partitions),
        ]
        .into_iter()
        .filter(|g| !g.passed)
        .collect();
        if failed.is_empty() {
            self.stale.store(false, Ordering::Relaxed);
            return;
        }
        if self.stale.swap(true, Ordering::Relaxed) {
            return;
        }
        let detail: Vec<String> = failed.iter().map(|g| g.detail.clone()).collect();
        AlertService::new(self.state.clone())
            .raise(Alert {
                event: "data.stale",
                experiment: None,
                text: format!(
                    "guardrail actions are on hold, the pipeline's data is incomplete: {}",
                    detail.join("; ")
                ),
                fields: serde_json::json!({
                    "gates": failed.iter().map(|g| g.gate.clone()).collect::<Vec<_>>(),
                    "detail": detail,
                }),
            })
            .await;
    }

    /// Stores the evaluation and applies its action; returns whether it
    /// killed or paused the experiment (none when recording failed).
    async fn record_and_act(
        &self,
        e: &ExperimentRecord,
        input: &EvaluationInput,
        evaluation: &Evaluation,
    ) -> Option<bool> {
        let service = GuardrailService::new(self.state.clone());
        let key = &e.key;
        let g = &input.guardrail;
        let (rec, continues) = match service.record(&actor(), input, evaluation).await {
            Ok(r) => (r.record, r.continues),
            Err(err) => {
                tracing::error!(experiment = %key, guardrail = %g.key, error = %err, "cannot record a guardrail evaluation");
                return None;
            }
        };
        if evaluation.outcome != Outcome::Breach {
            return Some(false);
        }
        let summary = breach_summary(input, evaluation, &rec);
        if !continues {
            self.alert("guardrail.breach", key, &summary, input, evaluation, &rec)
                .await;
        }
        let (taken, acted) = match evaluation.action {
            GuardrailAction::Kill | GuardrailAction::Pause => {
                let (action, event, done) = if evaluation.action == GuardrailAction::Kill {
                    (Action::Kill, "experiment.auto_killed", "killed")
                } else {
                    (Action::Pause, "experiment.auto_paused", "paused")
                };
                let params = ActParams {
                    reason: Some(summary.clone()),
                    ..ActParams::default()
                };
                match ExperimentService::new(self.state.clone())
                    .act(&actor(), key, action, params)
                    .await
                {
                    Ok(_) => {
                        let counter = if action == Action::Kill {
                            &self.counters.kills
                        } else {
                            &self.counters.pauses
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(experiment = %key, guardrail = %g.key, action = done, "guardrail acted");
                        let text = format!("{key} was {done} by the guardrail monitor: {summary}");
                        self.alert(event, key, &text, input, evaluation, &rec).await;
                        (done.to_owned(), true)
                    }
                    Err(err) => (format!("failed: {err}"), false),
                }
            }
            GuardrailAction::Alert if continues => ("alerted earlier".to_owned(), false),
            GuardrailAction::Alert => ("alerted".to_owned(), false),
            GuardrailAction::AwaitApproval if rec.review.as_deref() == Some("dismissed") => {
                // A person looked at this episode and let it run.
                ("dismissed earlier".to_owned(), false)
            }
            GuardrailAction::AwaitApproval => ("awaiting_approval".to_owned(), false),
            GuardrailAction::None => return Some(false),
        };
        if let Err(err) = service.taken(&rec.id, &taken).await {
            tracing::warn!(experiment = %key, error = %err, "cannot record what a guardrail did");
        }
        Some(acted)
    }

    async fn alert(
        &self,
        event: &'static str,
        key: &str,
        text: &str,
        input: &EvaluationInput,
        evaluation: &Evaluation,
        rec: &EvaluationRecord,
    ) {
        let worst = evaluation.worst();
        let variants: serde_json::Map<String, serde_json::Value> = input
            .variants
            .iter()
            .map(|v| {
                (
                    v.key.clone(),
                    serde_json::json!({"n": v.n, "mean": v.mean, "exposed": v.exposed}),
                )
            })
            .collect();
        AlertService::new(self.state.clone())
            .raise(Alert {
                event,
                experiment: Some(key.to_owned()),
                text: text.to_owned(),
                fields: serde_json::json!({
                    "guardrail": input.guardrail.key,
                    "metric": input.guardrail.metric,
                    "treatment": worst.map(|w| w.treatment.clone()),
                    "harm": worst.and_then(|w| w.test.harm),
                    "lower_bound": worst.and_then(|w| w.test.lower_bound),
                    "threshold": input.guardrail.threshold,
                    "relative": input.guardrail.relative,
                    "window_minutes": input.guardrail.window_minutes,
                    "alpha": evaluation.alpha,
                    "action": evaluation.action.as_str(),
                    "evaluation": rec.id,
                    "variants": variants,
                }),
            })
            .await;
    }

    fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP strata_guardrail_cycles_total Guardrail monitor cycles run."
        );
        let _ = writeln!(out, "# TYPE strata_guardrail_cycles_total counter");
        let _ = writeln!(out, "strata_guardrail_cycles_total {}", get(&c.cycles));
        let _ = writeln!(
            out,
            "# HELP strata_guardrail_evaluations_total Guardrail evaluations by outcome."
        );
        let _ = writeln!(out, "# TYPE strata_guardrail_evaluations_total counter");
        for (i, o) in ["skipped", "breach", "no_breach", "insufficient"]
            .iter()
            .enumerate()
        {
            let _ = writeln!(
                out,
                "strata_guardrail_evaluations_total{{outcome=\"{o}\"}} {}",
                get(&c.evaluations[i])
            );
        }
        let _ = writeln!(
            out,
            "# HELP strata_guardrail_actions_total Experiments the monitor killed or paused."
        );
        let _ = writeln!(out, "# TYPE strata_guardrail_actions_total counter");
        let _ = writeln!(
            out,
            "strata_guardrail_actions_total{{action=\"kill\"}} {}",
            get(&c.kills)
        );
        let _ = writeln!(
            out,
            "strata_guardrail_actions_total{{action=\"pause\"}} {}",
            get(&c.pauses)
        );
        let _ = writeln!(
            out,
            "# HELP strata_guardrail_last_cycle_seconds Duration of the last monitor cycle."
        );
        let _ = writeln!(out, "# TYPE strata_guardrail_last_cycle_seconds gauge");
        let _ = writeln!(
            out,
            "strata_guardrail_last_cycle_seconds {:.6}",
            get(&c.last_cycle_micros) as f64 / 1e6
        );
    }
}

/// Why the monitor cannot compute guardrail `g`'s metric, if it cannot: the
/// metric is missing from the registry, or is a quantile (the sequential
/// test compares means of per-unit values). The server refuses both when a
/// guardrail is defined or its metric changed; this keeps one such
/// definition (stored before, or edited in the database) from taking the
/// experiment's other guardrails down with it.
fn unwatchable(g: &GuardrailDef, registry: &MetricRegistry) -> Option<String> {
    match registry.get(&g.metric) {
        None => Some(format!("metric `{}` is not in the registry", g.metric)),
        Some(m) if m.kind == MetricType::Quantile => Some(format!(
            "quantile metric `{}` cannot be watched: the monitor's test compares means of per-unit values",
            g.metric
        )),
        Some(_) => None,
    }
}

/// What the monitor reads for experiment `e` and its `guardrails`: units
/// first exposed since `start` (its first activation), data before `cutoff`.
fn spec(
    e: &ExperimentRecord,
    guardrails: &[&GuardrailDef],
    start: DateTime<Utc>,
    cutoff: DateTime<Utc>,
) -> MonitorSpec {
    MonitorSpec {
        experiment: e.key.clone(),
        variants: e.variants.iter().map(|v| v.key.clone()).collect(),
        start,
        cutoff,
        metrics: guardrails
            .iter()
            .map(|g| WindowedMetric {
                metric: g.metric.clone(),
                window_minutes: g.window_minutes,
            })
            .collect(),
        clock_skew_seconds: CLOCK_SKEW_SECONDS,
    }
}

/// Whether `dir` holds any file (at any depth): the pipeline has
/// compacted something. Stops at the first one.
fn has_files(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| match e.file_type() {
        Ok(t) if t.is_dir() => has_files(&e.path()),
        Ok(t) => t.is_file() && e.path().extension().is_some_and(|x| x == "parquet"),
        Err(_) => false,
    })
}

/// One sentence naming the guardrail, the delta, the bound and the window.
fn breach_summary(
    input: &EvaluationInput,
    evaluation: &Evaluation,
    rec: &EvaluationRecord,
) -> String {
    let g = &input.guardrail;
    let unit = if g.relative { " (relative)" } else { "" };
    match evaluation.worst() {
        Some(w) => format!(
            "guardrail {} breached: {} is worse than control on {} by {:.4}{unit}, always-valid lower bound {:.4} > threshold {} over {}-minute windows (evaluation {})",
            g.key,
            w.treatment,
            g.metric,
            w.test.harm.unwrap_or(f64::NAN),
            w.test.lower_bound.unwrap_or(f64::NAN),
            g.threshold,
            g.window_minutes,
            rec.id
        ),
        None => format!("guardrail {} breached (evaluation {})", g.key, rec.id),
    }
}

/// The monitor as a part of `strata serve`: its task, its cycles endpoint
/// and its metrics.
#[derive(Debug)]
pub struct GuardrailMount {
    monitor: Arc<Monitor>,
    state: AppState,
}

impl GuardrailMount {
    /// The monitor of `state`'s experiments over `pipeline`'s data, on the
    /// node `leadership` elects.
    pub fn new(
        state: &AppState,
        pipeline: Arc<Pipeline>,
        cfg: GuardrailConfig,
        leadership: Leadership,
    ) -> Self {
        Self {
            monitor: Arc::new(Monitor::new(state.clone(), pipeline, cfg, leadership)),
            state: state.clone(),
        }
    }

    /// The monitor.
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.monitor
    }
}

/// The monitor's recent cycles.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Cycles {
    /// The latest first (at most [`CYCLES_KEPT`]).
    pub items: Vec<Cycle>,
}

/// `GET /api/v1/guardrail-monitor`: the monitor's recent cycles.
#[utoipa::path(get, path = "/api/v1/guardrail-monitor", tag = "guardrails",
    responses((status = 200, body = Cycles), (status = 403)))]
async fn cycles(
    State(state): State<AppState>,
    Extension(monitor): Extension<Arc<Monitor>>,
    auth: Auth,
) -> Result<Json<Cycles>, AppError> {
    auth.require(&state, Perm::Read).await?;
    Ok(Json(Cycles {
        items: monitor.cycles(),
    }))
}

#[derive(OpenApi)]
#[openapi(paths(cycles), components(schemas(Cycle, Cycles, RampDecision)))]
struct MonitorDoc;

impl Mount for GuardrailMount {
    fn name(&self) -> &'static str {
        "guardrails"
    }

    fn routes(&self) -> Router {
        Router::new()
            .route("/api/v1/guardrail-monitor", get(cycles))
            .layer(Extension(self.monitor.clone()))
            .with_state(self.state.clone())
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        Some(MonitorDoc::openapi())
    }

    fn render_metrics(&self, out: &mut String) {
        self.monitor.render_metrics(out);
    }

    fn spawn(&self, mut shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let monitor = self.monitor.clone();
        vec![tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + monitor.cfg.first_run;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                if monitor.leadership.is_leader() {
                    monitor.cycle(&shutdown).await;
                    next = tokio::time::Instant::now() + monitor.cfg.interval;
                } else {
                    // Another node runs the jobs: wait for the lease.
                    next = tokio::time::Instant::now()
                        + monitor.cfg.interval.min(crate::leader::RENEW);
                }
            }
        })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guardrail_on_a_quantile_or_a_missing_metric_is_unwatchable_alone() {
        let registry: MetricRegistry = serde_json::from_value(serde_json::json!({"metrics": [
            {"key": "load_ms", "type": "mean", "filter": {"type": "page_load"}},
            {"key": "load_p95", "type": "quantile", "quantile": 0.95, "filter": {"type": "page_load"}}
        ]}))
        .unwrap();
        let guard = |metric: &str| -> GuardrailDef {
            serde_json::from_value(
                serde_json::json!({"key": format!("g_{metric}"), "metric": metric,
                "threshold": 1, "direction": "increase_is_bad", "window_minutes": 15,
                "auto_action": "kill"}),
            )
            .unwrap()
        };
        assert_eq!(unwatchable(&guard("load_ms"), &registry), None);
        let p95 = unwatchable(&guard("load_p95"), &registry).unwrap();
        assert!(p95.contains("quantile metric `load_p95`"), "{p95}");
        let gone = unwatchable(&guard("nope"), &registry).unwrap();
        assert!(gone.contains("`nope` is not in the registry"), "{gone}");
    }
}
