//! Scheduled analysis: results nobody has to run.
//!
//! A background job of `strata serve` analyses every running and paused
//! experiment (and a killed one until it is concluded or archived) every
//! `--analysis-interval`, from the pipeline's data, with its stored
//! definition and the metric registry, and publishes the results as the
//! experiment's next look under the system actor `system:analysis`
//! (through [`ResultsService`], so a scheduled look is checked, audited and
//! acted on — health checks, SRM pause — exactly like a published one).
//!
//! * **Fresh data.** Each run first compacts the pipeline's log, so a look
//!   includes every record acknowledged before the run started; late events
//!   are counted whatever their timestamp, since every look reads all the
//!   data there is.
//! * **Each row once.** A run reads the Parquet tree under the store's read
//!   lease, so no merge of small files is half done while it reads.
//! * **One run at a time.** Runs and refresh requests are served by one
//!   task, in order; the next scheduled run is an interval after the end of
//!   the last, so runs never overlap.
//! * **Failures stay local.** An experiment whose analysis fails is
//!   recorded with its error (in the run and in
//!   `GET /api/v1/experiments/{key}/health`) and retried at the next run;
//!   the others are published.
//! * **Sequential looks accumulate by themselves.** A group-sequential
//!   boundary needs the information fractions of the looks before; each
//!   look's document carries them, so the next look reads them from the
//!   latest stored look, and a restart continues the sequence.
//!
//! `POST /api/v1/experiments/{key}/results/refresh` asks for a look of one
//! experiment now; `GET /api/v1/analysis/runs` lists the recent runs. Each
//! scheduled run also looks after the global holdout (module
//! [`holdout`](crate::holdout)): its scheduled rotation, its periods' final
//! looks and, every `--holdout-interval`, a look at the running period
//! (`POST /api/v1/holdout/impact/refresh`: one now).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use strata_analysis::results::Results;
use strata_analysis::spec::AnalysisSpec;
use strata_analysis::{
    analyze_shared, analyze_with_rollup, EngineOptions, MetricRegistry, RollupStore, SharedLook,
};
use strata_server::auth::{Auth, Perm};
use strata_server::model::Status;
use strata_server::mount::Mount;
use strata_server::service::{
    Actor, Alert, AlertService, Publication, PublishTarget, RegistryService, ResultsService,
    ServiceError,
};
use strata_server::{AppError, AppState};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use utoipa::OpenApi;

use crate::leader::Leadership;
use crate::pipeline::Pipeline;

/// How long a refresh request waits for its look before answering `202`.
pub const REFRESH_WAIT: Duration = Duration::from_secs(5);
/// Runs kept for `GET /api/v1/analysis/runs`.
pub const RUNS_KEPT: usize = 100;
/// Refresh requests waiting for the scheduler at most.
const QUEUE: usize = 64;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct AnalysisConfig {
    /// Time from the end of one run to the start of the next.
    pub interval: Duration,
    /// Delay of the first run after the server starts (a restarted server
    /// refreshes soon rather than an interval later).
    pub first_run: Duration,
    /// Memory limit of the query engine in bytes (aggregations spill beyond it).
    pub memory_limit: Option<usize>,
    /// Time between the global holdout's looks: a run takes one when the
    /// running period's latest look is this old (module [`holdout`](crate::holdout)).
    pub holdout_interval: Duration,
    /// Run the analyses on this Apache Ballista cluster instead of in this
    /// process (`strata_analysis::cluster`); the Parquet tree must be at the
    /// same path on every executor.
    pub cluster: Option<strata_analysis::Cluster>,
    /// Where the shared rollup is kept between runs
    /// (`strata_analysis::RollupStore`), so that a run recomputes only the
    /// days of events that changed; `None`: each run makes its shared pass
    /// over all the data anew.
    pub rollup_dir: Option<std::path::PathBuf>,
    /// Time between full recomputations of the kept rollup, each checking
    /// the kept days against it.
    pub full_recompute_interval: Duration,
}

impl AnalysisConfig {
    /// Runs every `interval`, the first one minute after start (or
    /// `interval`, if shorter).
    pub fn every(interval: Duration) -> Self {
        Self {
            interval,
            first_run: interval.min(Duration::from_secs(60)),
            memory_limit: None,
            holdout_interval: Duration::from_secs(86_400),
            cluster: None,
            rollup_dir: None,
            full_recompute_interval: Duration::from_secs(86_400),
        }
    }
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self::every(Duration::from_secs(3600))
    }
}

/// Parses an interval such as `30s`, `5m`, `1h` or `1d` (a number and a unit).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not an interval such as 30s, 5m, 1h or 1d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err(format!("{text:?}: the interval must be positive"));
    }
    Ok(Duration::from_secs(secs))
}

/// `t` as RFC 3339 with milliseconds, as the control plane shows times.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A look published by a run.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunLook {
    /// The experiment.
    pub experiment: String,
    /// The look's sequence number.
    pub seq: u64,
}

/// An experiment whose analysis failed in a run.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunFailure {
    /// The experiment.
    pub experiment: String,
    /// What went wrong.
    pub error: String,
}

/// One run of the scheduler.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AnalysisRun {
    /// Its number, increasing from 1 and going on across restarts.
    pub id: u64,
    /// `schedule`, or `refresh` for a run asked for by a request.
    pub trigger: String,
    /// When it started (RFC 3339); the looks are as of this time.
    pub started_at: String,
    /// When it ended; none while it runs.
    pub ended_at: Option<String>,
    /// The experiments it analysed.
    pub experiments: Vec<String>,
    /// The looks it published.
    pub published: Vec<RunLook>,
    /// The experiments whose analysis failed, with why.
    pub failures: Vec<RunFailure>,
    /// What the run did to the kept shared rollup, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollup: Option<RunRollup>,
}

/// A run's refresh of the kept shared rollup (`strata_analysis::Refreshed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRollup {
    /// Days of events the run's looks read.
    pub days: usize,
    /// Days recomputed from the events (the others were kept).
    pub recomputed: usize,
    /// Whether every day was recomputed (`--full-recompute-interval`).
    pub full: bool,
    /// On a full recomputation, the kept days (`YYYY-MM-DD`) that differed
    /// from their recomputation; never expected, logged as errors.
    pub mismatched: Vec<String>,
}

/// The last failed analysis of an experiment.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AnalysisFailure {
    /// The run.
    pub run: u64,
    /// When the run started.
    pub at: String,
    /// What went wrong.
    pub error: String,
}

/// What the scheduler has done: recent runs and the experiments whose last
/// analysis failed.
#[derive(Debug, Default)]
pub struct RunLog {
    next: AtomicU64,
    runs: Mutex<VecDeque<AnalysisRun>>,
    failing: Mutex<HashMap<String, AnalysisFailure>>,
}

impl RunLog {
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records the state of `run` and what it says so far of each
    /// experiment ([`RunLog::apply_outcomes`]).
    fn record(&self, run: &AnalysisRun) {
        self.apply_outcomes(run);
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = runs.iter_mut().find(|r| r.id == run.id) {
            *r = run.clone();
        } else {
            runs.push_front(run.clone());
            runs.truncate(RUNS_KEPT);
        }
    }

    /// Recent runs, the latest first.
    pub fn runs(&self) -> Vec<AnalysisRun> {
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        runs.iter().cloned().collect()
    }

    /// The last failure of `experiment`'s analysis, unless a later run
    /// analysed it successfully.
    pub fn failure(&self, experiment: &str) -> Option<AnalysisFailure> {
        let failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        failing.get(experiment).cloned()
    }

    /// Records what a finished run says of each experiment: a published
    /// look clears its failure, a failed analysis sets it.
    fn apply_outcomes(&self, run: &AnalysisRun) {
        for look in &run.published {
            self.set_failure(&look.experiment, None);
        }
        for f in run.failures.iter().filter(|f| !f.experiment.is_empty()) {
            let failure = AnalysisFailure {
                run: run.id,
                at: run.started_at.clone(),
                error: f.error.clone(),
            };
            self.set_failure(&f.experiment, Some(failure));
        }
    }

    /// Takes up the runs an earlier process stored (any order): the list,
    /// the run numbers (which go on after the last) and each experiment's
    /// last failure among them.
    fn restore(&self, mut stored: Vec<AnalysisRun>) {
        stored.sort_by_key(|r| r.id);
        let last = stored.last().map_or(0, |r| r.id);
        self.next.fetch_max(last, Ordering::Relaxed);
        for r in &stored {
            self.apply_outcomes(r);
        }
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        for r in stored {
            if !runs.iter().any(|x| x.id == r.id) {
                runs.push_back(r);
            }
        }
        runs.make_contiguous()
            .sort_by_key(|r| std::cmp::Reverse(r.id));
        runs.truncate(RUNS_KEPT);
    }

    fn set_failure(&self, experiment: &str, failure: Option<AnalysisFailure>) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        match failure {
            Some(f) => failing.insert(experiment.to_owned(), f),
            None => failing.remove(experiment),
        };
    }
}

/// What the scheduler's task does next.
enum Step {
    Scheduled,
    Refresh(Refresh),
    Stop,
}

/// The outcome of a refresh, sent back to the waiting request.
type Refreshed = Result<RunLook, String>;

/// A request for a look of one experiment now.
struct Refresh {
    run: u64,
    experiment: String,
    reply: oneshot::Sender<Refreshed>,
}

/// The scheduler: its configuration, the data it reads and what it did.
#[derive(Debug)]
pub struct Scheduler {
    pub(crate) state: AppState,
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) cfg: AnalysisConfig,
    log: Arc<RunLog>,
    /// When the next scheduled run starts, ms since the epoch (0: not yet
    /// known), for whoever shows it.
    next_run: Arc<std::sync::atomic::AtomicI64>,
    /// Whether this node runs the jobs ([`crate::leader`]).
    pub(crate) leadership: Leadership,
}

impl Scheduler {
    /// A scheduler of the experiments in `state` over `pipeline`'s data,
    /// running while `leadership` says this node runs the jobs.
    pub fn new(
        state: AppState,
        pipeline: Arc<Pipeline>,
        cfg: AnalysisConfig,
        leadership: Leadership,
    ) -> Self {
        Self {
            state,
            pipeline,
            cfg,
            log: Arc::new(RunLog::default()),
            next_run: Arc::default(),
            leadership,
        }
    }

    /// The cell holding when the next scheduled run starts (ms since the
    /// epoch; 0 until the schedule starts).
    pub fn next_run(&self) -> Arc<std::sync::atomic::AtomicI64> {
        self.next_run.clone()
    }

    /// Schedules the next run `after` from now; returns its instant.
    fn schedule(&self, after: Duration) -> tokio::time::Instant {
        let at = Utc::now().timestamp_millis()
            + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2);
        self.next_run
            .store(at, std::sync::atomic::Ordering::Relaxed);
        tokio::time::Instant::now() + after
    }

    /// The query engine's options of every analysis of a run.
    pub(crate) fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            memory_limit: self.cfg.memory_limit,
            cluster: self.cfg.cluster.clone(),
            ..EngineOptions::default()
        }
    }

    /// What the scheduler did.
    pub fn log(&self) -> &Arc<RunLog> {
        &self.log
    }

    /// The experiments a scheduled run analyses: started, and not concluded
    /// or archived.
    async fn due(&self) -> Result<Vec<String>, String> {
        let all = self
            .state
            .store
            .experiments()
            .await
            .map_err(|e| format!("cannot list experiments: {e}"))?;
        Ok(all
            .into_iter()
            .filter(|e| {
                e.started_at.is_some()
                    && matches!(e.status, Status::Running | Status::Paused | Status::Killed)
            })
            .map(|e| e.key)
            .collect())
    }

    /// Runs one analysis of experiment `only` (none: every due experiment)
    /// and publishes the looks. When `stop` turns true the run ends after
    /// the experiment being analysed, so that shutdown waits for one
    /// analysis at most.
    pub async fn run(
        &self,
        id: u64,
        trigger: &'static str,
        only: Option<&str>,
        stop: &watch::Receiver<bool>,
    ) -> AnalysisRun {
        let started = DateTime::<Utc>::from(strata_clock::now());
        let mut run = AnalysisRun {
            id,
            trigger: trigger.to_owned(),
            started_at: rfc3339(started),
            ended_at: None,
            experiments: Vec::new(),
            published: Vec::new(),
            failures: Vec::new(),
            rollup: None,
        };
        self.log.record(&run);
        let fail_all = |run: &mut AnalysisRun, keys: Vec<String>, error: String| {
            for k in keys {
                run.failures.push(RunFailure {
                    experiment: k,
                    error: error.clone(),
                });
            }
        };
        let holdout_only = only == Some(strata_core::HOLDOUT_EXPERIMENT);
        let keys = match only {
            Some(_) if holdout_only => Vec::new(),
            Some(k) => vec![k.to_owned()],
            None => match self.due().await {
                Ok(k) => k,
                Err(e) => {
                    tracing::error!(run = id, error = %e, "analysis run failed");
                    run.failures.push(RunFailure {
                        experiment: String::new(),
                        error: e,
                    });
                    return self.finish(run).await;
                }
            },
        };
        run.experiments = keys.clone();
        self.log.record(&run);
        // Everything acknowledged before the run started goes into Parquet
        // first: a look never misses data the pipeline has accepted.
        if let Err(e) = self.pipeline.store.compact_now().await {
            let error = format!("the pipeline could not compact its log: {e}");
            fail_all(&mut run, keys, error);
            return self.finish(run).await;
        }
        // Held to the end of the run: no merge replaces files under it.
        let _lease = self.pipeline.store.read_lease().await;
        let inputs = match self.inputs().await {
            Ok(i) => i,
            Err(e) => {
                fail_all(&mut run, keys, e);
                return self.finish(run).await;
            }
        };
        // Each experiment's definition and earlier looks; one that cannot
        // be read fails alone.
        let mut prepared = Vec::new();
        for key in keys {
            match self.prepare(&inputs, &key, started).await {
                Ok(p) => prepared.push(p),
                Err(error) => self.failed(&mut run, key, error).await,
            }
        }
        // One pass over the events for all of them.
        let outcomes = self.analyse(&inputs, &prepared, &mut run, stop).await;
        for (p, outcome) in prepared.into_iter().zip(outcomes) {
            let key = p.key.clone();
            let published = match outcome {
                Ok(results) => self.publish(p, results).await,
                Err(e) => Err(e),
            };
            match published {
                Ok(seq) => run.published.push(RunLook {
                    experiment: key,
                    seq,
                }),
                Err(error) => self.failed(&mut run, key, error).await,
            }
            // Progress (and each experiment's failure) is visible while the
            // run goes on.
            self.log.record(&run);
        }
        if (only.is_none() || holdout_only) && !*stop.borrow() {
            self.holdout(&inputs, started, holdout_only, &mut run).await;
        }
        self.finish(run).await
    }

    async fn finish(&self, mut run: AnalysisRun) -> AnalysisRun {
        run.ended_at = Some(rfc3339(strata_clock::now().into()));
        // Stored before it shows as ended, so an ended run outlives a
        // restart.
        self.persist(&run).await;
        self.log.record(&run);
        tracing::info!(
            run = run.id,
            experiments = run.experiments.len(),
            published = run.published.len(),
            failures = run.failures.len(),
            "analysis run done"
        );
        run
    }

    /// Stores `run` so that the list of runs and the experiments' failures
    /// outlive a restart. A store that is down holds the run up for a few
    /// seconds at most (its looks are published already).
    async fn persist(&self, run: &AnalysisRun) {
        let Ok(doc) = serde_json::to_value(run) else {
            return;
        };
        let save = self
            .state
            .store
            .save_analysis_run(run.id, &doc, RUNS_KEPT as u64);
        match tokio::time::timeout(Duration::from_secs(5), save).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(run = run.id, error = %e, "could not store the analysis run")
            }
            Err(_) => tracing::warn!(run = run.id, "storing the analysis run timed out"),
        }
    }

    /// Takes up the runs stored by an earlier process.
    pub async fn restore(&self) {
        match self.state.store.analysis_runs(RUNS_KEPT as u64).await {
            Ok(docs) => {
                let runs = docs
                    .into_iter()
                    .filter_map(|d| serde_json::from_value::<AnalysisRun>(d).ok())
                    .collect();
                self.log.restore(runs);
            }
            Err(e) => tracing::warn!(error = %e, "could not read the stored analysis runs"),
        }
    }

    /// The registry and guardrail definitions, read once per run.
    async fn inputs(&self) -> Result<Inputs, String> {
        let registry = RegistryService::new(self.state.clone());
        let metrics = registry
            .registry()
            .await
            .map_err(|e| format!("cannot read the metric registry: {e}"))?;
        let guardrails = registry
            .guardrail_definitions()
            .await
            .map_err(|e| format!("cannot read the guardrail definitions: {e}"))?;
        // The organisation's limits (`PUT /api/v1/bot-detection`), or the
        // defaults.
        let bots = registry
            .bot_detection()
            .await
            .map_err(|e| format!("cannot read the bot detection limits: {e}"))?;
        Ok(Inputs {
            registry: MetricRegistry::from(metrics).with_bot_detection(bots.limits),
            guardrails,
        })
    }

    /// Records the failure of experiment `key` in `run`, and alerts when
    /// it starts failing (not at every run while it keeps failing).
    async fn failed(&self, run: &mut AnalysisRun, key: String, error: String) {
        tracing::warn!(run = run.id, experiment = %key, error = %error, "analysis failed");
        if self.log.failure(&key).is_none() {
            AlertService::new(self.state.clone())
                .raise(Alert {
                    event: "analysis.failed",
                    experiment: Some(key.clone()),
                    text: format!("the scheduled analysis of {key} failed: {error}"),
                    fields: serde_json::json!({"run": run.id, "error": error}),
                })
                .await;
        }
        run.failures.push(RunFailure {
            experiment: key,
            error,
        });
    }

    /// What experiment `key`'s look as of `as_of` is analysed with: its
    /// pre-registered spec and the information fractions of its earlier
    /// looks.
    async fn prepare(
        &self,
        inputs: &Inputs,
        key: &str,
        as_of: DateTime<Utc>,
    ) -> Result<Prepared, String> {
        let actor = Actor::system("analysis").granting([Perm::ResultsRead, Perm::ResultsWrite]);
        let service = ResultsService::new(self.state.clone());
        let target = service
            .target(&actor, key)
            .await
            .map_err(|e| e.to_string())?;
        let spec = AnalysisSpec::pre_registered(
            &target.experiment().definition(),
            &inputs.registry,
            &inputs.guardrails,
            as_of,
        )
        .map_err(|e| e.to_string())?;
        let previous = match service.read(&actor, key, None).await {
            Ok(latest) => serde_json::from_value::<Results>(latest.results)
                .map(|r| r.sequential_fractions())
                .unwrap_or_default(),
            Err(ServiceError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(format!("cannot read the latest look: {e}")),
        };
        Ok(Prepared {
            key: key.to_owned(),
            target,
            look: SharedLook {
                spec,
                as_of: Some(as_of),
                previous,
            },
        })
    }

    /// Analyses the looks of `prepared` with one shared pass over the
    /// events (`strata_analysis::rollup`); if that pass cannot be made,
    /// each experiment on its own, so that one experiment's bad data
    /// fails that experiment alone.
    async fn analyse(
        &self,
        inputs: &Inputs,
        prepared: &[Prepared],
        run: &mut AnalysisRun,
        stop: &watch::Receiver<bool>,
    ) -> Vec<Result<Results, String>> {
        if prepared.is_empty() {
            return Vec::new();
        }
        let looks: Vec<SharedLook> = prepared.iter().map(|p| p.look.clone()).collect();
        let data = self.pipeline.data_source();
        let shared = match (&self.cfg.rollup_dir, &self.cfg.cluster) {
            (Some(dir), None) => self.kept(dir, &looks, inputs, &data, run).await,
            _ => analyze_shared(&looks, &inputs.registry, &data, self.engine_options()).await,
        };
        match shared {
            Ok(outcomes) => outcomes
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "the shared pass failed; analysing each experiment on its own");
                let mut out = Vec::with_capacity(looks.len());
                for look in looks {
                    if *stop.borrow() {
                        out.push(Err("the analysis stopped with the server".to_owned()));
                        continue;
                    }
                    out.push(
                        look.analyze_alone(&inputs.registry, &data, self.engine_options())
                            .await
                            .map_err(|e| e.to_string()),
                    );
                }
                out
            }
        }
    }

    /// Analyses `looks` from the kept shared rollup under `dir`, brought up
    /// to date first (every day recomputed when the last full
    /// recomputation is `full_recompute_interval` older than the run, and
    /// the kept days checked against it); records what it did in `run`.
    async fn kept(
        &self,
        dir: &std::path::Path,
        looks: &[SharedLook],
        inputs: &Inputs,
        data: &strata_analysis::DataSource,
        run: &mut AnalysisRun,
    ) -> strata_analysis::Result<Vec<strata_analysis::Result<Results>>> {
        let store = RollupStore::new(dir);
        let as_of = looks.iter().filter_map(|l| l.as_of).max();
        let interval = chrono::Duration::from_std(self.cfg.full_recompute_interval)
            .unwrap_or(chrono::Duration::MAX);
        let full = match (store.full_at(), as_of) {
            (Some(last), Some(now)) => now - last >= interval,
            _ => true,
        };
        let specs: Vec<_> = looks.iter().map(|l| (l.spec.clone(), l.as_of)).collect();
        let options = self.engine_options();
        let (rollup, refreshed) = store
            .refresh(&specs, &inputs.registry, data, &options, full)
            .await?;
        if !refreshed.mismatched.is_empty() {
            tracing::error!(
                run = run.id,
                days = ?refreshed.mismatched,
                "the kept rollup differed from its full recomputation on these days; the recomputed rows replace them"
            );
        }
        tracing::info!(
            run = run.id,
            days = refreshed.days,
            recomputed = refreshed.recomputed,
            full = refreshed.full,
            "shared rollup refreshed"
        );
        run.rollup = Some(RunRollup {
            days: refreshed.days,
            recomputed: refreshed.recomputed,
            full: refreshed.full,
            mismatched: refreshed.mismatched,
        });
        Ok(analyze_with_rollup(looks, &inputs.registry, data, options, &rollup).await)
    }

    /// Publishes `results` as the next look of the prepared experiment.
    async fn publish(&self, prepared: Prepared, results: Results) -> Result<u64, String> {
        let service = ResultsService::new(self.state.clone());
        let publication = Publication::of(results).map_err(|e| e.to_string())?;
        let meta = service
            .publish(prepared.target, &publication)
            .await
            .map_err(|e| e.to_string())?;
        Ok(meta.seq)
    }
}

/// One experiment of a run, ready to analyse.
struct Prepared {
    key: String,
    target: PublishTarget,
    look: SharedLook,
}

/// What every experiment of a run is analysed with.
pub(crate) struct Inputs {
    pub(crate) registry: MetricRegistry,
    guardrails: Vec<strata_model::GuardrailDef>,
}

/// The scheduler as a part of `strata serve`: its task, the refresh and
/// runs endpoints.
#[derive(Debug)]
pub struct AnalysisMount {
    scheduler: Arc<Scheduler>,
    state: AppState,
    requests: mpsc::Sender<Refresh>,
    queue: Mutex<Option<mpsc::Receiver<Refresh>>>,
}

impl AnalysisMount {
    /// The scheduler of `state`'s experiments over `pipeline`'s data, on
    /// the node `leadership` elects.
    pub fn new(
        state: &AppState,
        pipeline: Arc<Pipeline>,
        cfg: AnalysisConfig,
        leadership: Leadership,
    ) -> Self {
        let (requests, queue) = mpsc::channel(QUEUE);
        Self {
            scheduler: Arc::new(Scheduler::new(state.clone(), pipeline, cfg, leadership)),
            state: state.clone(),
            requests,
            queue: Mutex::new(Some(queue)),
        }
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }
}

/// The answer of a refresh that took longer than [`REFRESH_WAIT`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RefreshPending {
    /// The run that will publish the look (`GET /api/v1/analysis/runs`).
    pub run: u64,
}

/// What the refresh and runs handlers share.
#[derive(Debug, Clone)]
struct Handle {
    requests: mpsc::Sender<Refresh>,
    log: Arc<RunLog>,
    leadership: Leadership,
}

/// `POST /api/v1/experiments/{key}/results/refresh`: a look now.
#[utoipa::path(post, path = "/api/v1/experiments/{key}/results/refresh", tag = "results",
    params(("key" = String, Path)),
    responses((status = 201, body = RunLook, description = "the look, published"),
        (status = 202, body = RefreshPending, description = "still running"),
        (status = 403), (status = 404), (status = 409, description = "the experiment has not started"),
        (status = 422, description = "the analysis failed"),
        (status = 503, description = "the scheduler is not running")))]
async fn refresh(
    State(state): State<AppState>,
    Extension(handle): Extension<Handle>,
    auth: Auth,
    UrlPath(key): UrlPath<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    // The owning team's experimenters, analysts and admins; started only.
    ResultsService::new(state)
        .target(&auth.actor(), &key)
        .await?;
    handle
        .request(&key, &format!("the analysis of experiment {key:?}"))
        .await
}

impl Handle {
    /// Queues a refresh run of `experiment` (or of the holdout) and waits
    /// up to [`REFRESH_WAIT`] for its look: `201` with it, `202` with the
    /// run when it takes longer, `422` when `what` failed, `503` when the
    /// scheduler is not running or too busy.
    async fn request(
        &self,
        experiment: &str,
        what: &str,
    ) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
        if !self.leadership.is_leader() {
            let leader = self.leadership.leader();
            let leader = if leader.is_empty() {
                "no node holds the jobs lease right now".to_owned()
            } else {
                format!("node {leader} does")
            };
            return Err(AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_jobs_leader",
                format!("this node does not run the scheduled analysis: {leader}; ask again (through the load balancer, another node)"),
            ));
        }
        let run = self.log.next_id();
        let (reply, answer) = oneshot::channel();
        let unavailable = || {
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "analysis_unavailable",
                "the analysis scheduler is not running or has too many requests queued",
            )
        };
        self.requests
            .try_send(Refresh {
                run,
                experiment: experiment.to_owned(),
                reply,
            })
            .map_err(|_| unavailable())?;
        match tokio::time::timeout(REFRESH_WAIT, answer).await {
            Ok(Ok(Ok(look))) => Ok((
                StatusCode::CREATED,
                Json(serde_json::to_value(look).unwrap_or_default()),
            )),
            Ok(Ok(Err(error))) => Err(AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "analysis_failed",
                format!("{what} failed: {error}"),
            )),
            Ok(Err(_)) => Err(unavailable()),
            Err(_) => Ok((
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "run": run })),
            )),
        }
    }
}

/// `POST /api/v1/holdout/impact/refresh` (admin): a look at the holdout's
/// running period now (and any final look due), as a refresh run.
#[utoipa::path(post, path = "/api/v1/holdout/impact/refresh", tag = "holdout",
    responses((status = 201, body = RunLook, description = "the look, published (seq: the period)"),
        (status = 202, body = RefreshPending, description = "still running"),
        (status = 403), (status = 422, description = "the look failed"),
        (status = 503, description = "the scheduler is not running, or this node does not run the jobs")))]
async fn refresh_holdout(
    State(state): State<AppState>,
    Extension(handle): Extension<Handle>,
    auth: Auth,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    auth.require(&state, Perm::HoldoutWrite).await?;
    handle
        .request(
            strata_core::HOLDOUT_EXPERIMENT,
            "the look at the global holdout",
        )
        .await
}

/// The recent runs of the scheduler.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnalysisRuns {
    /// The latest first (at most [`RUNS_KEPT`]).
    pub items: Vec<AnalysisRun>,
}

/// `GET /api/v1/analysis/runs`: the scheduler's recent runs.
#[utoipa::path(get, path = "/api/v1/analysis/runs", tag = "results",
    responses((status = 200, body = AnalysisRuns), (status = 403)))]
async fn runs(
    State(state): State<AppState>,
    Extension(handle): Extension<Handle>,
    auth: Auth,
) -> Result<Json<AnalysisRuns>, AppError> {
    auth.require(&state, Perm::Read).await?;
    Ok(Json(AnalysisRuns {
        items: handle.log.runs(),
    }))
}

/// The health of an experiment: its latest look's checks and decision, and
/// the last failure of its scheduled analysis.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExperimentHealth {
    /// The experiment.
    pub experiment: String,
    /// The latest look's number; none before the first look.
    pub seq: Option<u64>,
    /// The latest look's `as_of`.
    pub as_of: Option<String>,
    /// Its health checks (`docs/results-schema.md`).
    #[schema(value_type = Vec<Object>)]
    pub health: Vec<strata_model::results::HealthCheck>,
    /// Its decision.
    #[schema(value_type = Option<Object>)]
    pub decision: Option<strata_model::results::Decision>,
    /// The last scheduled analysis of the experiment, when it failed (a
    /// later success clears it).
    pub analysis_error: Option<AnalysisFailure>,
}

/// `GET /api/v1/experiments/{key}/health`: is the experiment's data to be trusted?
#[utoipa::path(get, path = "/api/v1/experiments/{key}/health", tag = "results",
    params(("key" = String, Path)),
    responses((status = 200, body = ExperimentHealth), (status = 403), (status = 404)))]
async fn health(
    State(state): State<AppState>,
    Extension(handle): Extension<Handle>,
    auth: Auth,
    UrlPath(key): UrlPath<String>,
) -> Result<Json<ExperimentHealth>, AppError> {
    let mut out = ExperimentHealth {
        experiment: key.clone(),
        seq: None,
        as_of: None,
        health: Vec::new(),
        decision: None,
        analysis_error: handle.log.failure(&key),
    };
    match ResultsService::new(state)
        .read(&auth.actor(), &key, None)
        .await
    {
        Ok(latest) => {
            out.seq = Some(latest.meta.seq);
            out.as_of = Some(latest.meta.as_of.clone());
            // A document published before health checks existed has none.
            if let Ok(r) = serde_json::from_value::<Results>(latest.results) {
                out.health = r.health;
                out.decision = r.decision;
            }
        }
        // The experiment exists (and may be read) but has no look yet.
        Err(ServiceError::NotFound { what, .. }) if what != "experiment" => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Json(out))
}

#[derive(OpenApi)]
#[openapi(
    paths(refresh, runs, health, refresh_holdout),
    components(schemas(
        RunLook,
        RunFailure,
        AnalysisRun,
        AnalysisRuns,
        RefreshPending,
        AnalysisFailure,
        ExperimentHealth
    ))
)]
struct AnalysisDoc;

impl Mount for AnalysisMount {
    fn name(&self) -> &'static str {
        "analysis"
    }

    fn routes(&self) -> Router {
        let handle = Handle {
            requests: self.requests.clone(),
            log: self.scheduler.log.clone(),
            leadership: self.scheduler.leadership.clone(),
        };
        Router::new()
            .route("/api/v1/experiments/{key}/results/refresh", post(refresh))
            .route("/api/v1/analysis/runs", get(runs))
            .route("/api/v1/experiments/{key}/health", get(health))
            .route("/api/v1/holdout/impact/refresh", post(refresh_holdout))
            .layer(Extension(handle))
            .with_state(self.state.clone())
    }

    fn openapi(&self) -> Option<utoipa::openapi::OpenApi> {
        Some(AnalysisDoc::openapi())
    }

    fn spawn(&self, mut shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let Some(mut queue) = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return Vec::new();
        };
        let scheduler = self.scheduler.clone();
        vec![tokio::spawn(async move {
            let mut term = 0;
            if scheduler.leadership.is_leader() {
                // Alone on its store: take up the stored runs at once.
                term = scheduler.leadership.term();
                scheduler.restore().await;
            }
            let mut next = scheduler.schedule(scheduler.cfg.first_run);
            loop {
                // One task serves both the schedule and refreshes, so no
                // two runs ever overlap; the next scheduled run is an
                // interval after the end of the last.
                let step = tokio::select! {
                    () = tokio::time::sleep_until(next) => Step::Scheduled,
                    Some(r) = queue.recv() => Step::Refresh(r),
                    _ = shutdown.wait_for(|s| *s) => Step::Stop,
                };
                // A node that does not run the jobs waits for the lease
                // (checked as often as it is renewed); a node that became
                // the leader takes up the runs stored before it runs.
                let leads = scheduler.leadership.is_leader();
                if leads && scheduler.leadership.term() != term {
                    term = scheduler.leadership.term();
                    scheduler.restore().await;
                }
                match step {
                    Step::Scheduled if !leads => {
                        next = scheduler.schedule(scheduler.cfg.interval.min(crate::leader::RENEW));
                    }
                    Step::Refresh(r) if !leads => {
                        let _ = r
                            .reply
                            .send(Err("this node no longer runs the jobs".to_owned()));
                    }
                    Step::Scheduled => {
                        let id = scheduler.log.next_id();
                        scheduler.run(id, "schedule", None, &shutdown).await;
                        next = scheduler.schedule(scheduler.cfg.interval);
                    }
                    Step::Refresh(r) => {
                        let run = scheduler
                            .run(r.run, "refresh", Some(&r.experiment), &shutdown)
                            .await;
                        let answer = match (run.published.first(), run.failures.first()) {
                            (Some(look), _) => Ok(look.clone()),
                            (None, Some(f)) => Err(f.error.clone()),
                            (None, None) => Err("the server is stopping".to_owned()),
                        };
                        // The requester may have stopped waiting.
                        let _ = r.reply.send(answer);
                    }
                    Step::Stop => return,
                }
            }
        })]
    }
}
