//! Strata's analysis engine.
//!
//! `strata-analysis` joins who was exposed to which variant with what those
//! units did, and turns it into per-variant metrics and effects. Inputs are
//! exposures and events as Parquet, NDJSON or CSV (a file, a directory with
//! Hive-style partitions, or a glob); metrics are defined in a registry
//! document ([`metrics`]) and an experiment is described by an analysis spec
//! ([`spec`]). The data model is in `docs/data-model.md`, the output in
//! `docs/results-schema.md`.
//!
//! The entry points are [`analyze`] and [`analyze_looks`]: a typed spec (read
//! from a file with [`AnalysisSpec::from_path`], or built by any other means),
//! the metric registry and a [`DataSource`] in, a [`Results`] document out.
//! Rendering it for people, and showing progress, is the caller's business
//! ([`EngineOptions::on_progress`] reports the stages).
//!
//! The guardrail monitor's data — per-variant statistics of guardrail
//! metrics over each unit's window after its first exposure, and how fresh
//! each user partition's events are — comes from [`monitor`]; the global
//! holdout's look (the holdout against everyone else, and its
//! contamination check) from [`holdout`].
//!
//! # Architecture invariants
//! * **SQL plans, not a home-made query engine.** Every reduction of events
//!   — first exposures, windows, deduplication, per-unit values, per-variant
//!   moments — is a SQL statement compiled by [`plan`] and executed by Apache
//!   DataFusion. The same statements can run on a distributed engine
//!   (Ballista) or a warehouse; Rust code only reads back a handful of rows
//!   of sufficient statistics (and, for quantile metrics, the metric's event
//!   values).
//! * **All inference comes from `strata-stats`.** This crate computes no
//!   p-value, interval or correction of its own (the novelty decay test is
//!   `strata_stats::novelty`).
//! * **Bounded memory.** Events are streamed through DataFusion's join and
//!   aggregation; what is held in memory is per unit (one row per exposed
//!   unit), never per event.
//! * **Typed, located errors.** Bad inputs give an [`Error`] naming the file,
//!   line/column or field; the library never panics on data.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod cluster;
pub mod decision;
pub mod engine;
pub mod error;
mod fused;
pub mod health;
pub mod holdout;
pub mod metrics;
pub mod monitor;
pub mod plan;
pub mod results;
pub mod rollup;
pub mod source;
pub mod spec;

use std::path::Path;

pub use cluster::Cluster;
pub use engine::{Analyzer, DataSource, EngineOptions, Progress, ProgressFn};
pub use error::{Error, Result};
pub use metrics::MetricRegistry;
pub use results::Results;
pub use rollup::{analyze_shared, analyze_with_rollup, Rollup, RollupStore, SharedLook};
pub use spec::{AnalysisSpec, ValidSpec};

use chrono::{DateTime, Utc};

/// Loads and validates a spec and a metric registry; errors in the spec
/// name its file.
pub fn load(spec_path: &Path, metrics_path: &Path) -> Result<(ValidSpec, MetricRegistry)> {
    let registry = MetricRegistry::from_path(metrics_path)?;
    let spec = AnalysisSpec::from_path(spec_path)?
        .validate(&spec_path.display().to_string(), &registry)?;
    Ok((spec, registry))
}

/// Analyses the experiment `spec` on `data` as of `as_of` (default: the
/// spec's end).
///
/// The spec is validated against `registry` first; its errors name the
/// document `spec` (validate it with [`AnalysisSpec::validate`] beforehand
/// to have them name a file).
pub async fn analyze(
    spec: &AnalysisSpec,
    registry: &MetricRegistry,
    data: &DataSource,
    as_of: Option<DateTime<Utc>>,
    options: EngineOptions,
) -> Result<Results> {
    let spec = spec.clone().validate("spec", registry)?;
    Analyzer::new(spec, registry, data, options)
        .await?
        .run(as_of)
        .await
}

/// Analyses the experiment `spec` on `data` as of `as_of` as the look after
/// looks at information fractions `previous` ([`Analyzer::run_after`]):
/// how a look of a stored experiment continues its group-sequential
/// sequence. Validation as in [`analyze`].
pub async fn analyze_after(
    spec: &AnalysisSpec,
    registry: &MetricRegistry,
    data: &DataSource,
    as_of: Option<DateTime<Utc>>,
    previous: &[f64],
    options: EngineOptions,
) -> Result<Results> {
    let spec = spec.clone().validate("spec", registry)?;
    Analyzer::new(spec, registry, data, options)
        .await?
        .run_after(as_of, previous)
        .await
}

/// Analyses the experiment `spec` on `data` at each of `looks` (increasing
/// times); the group-sequential boundary at each look uses the information
/// fractions of the looks before it. Validation as in [`analyze`].
pub async fn analyze_looks(
    spec: &AnalysisSpec,
    registry: &MetricRegistry,
    data: &DataSource,
    looks: &[DateTime<Utc>],
    options: EngineOptions,
) -> Result<Vec<Results>> {
    let spec = spec.clone().validate("spec", registry)?;
    Analyzer::new(spec, registry, data, options)
        .await?
        .run_looks(looks)
        .await
}
