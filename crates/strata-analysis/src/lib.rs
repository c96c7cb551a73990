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

pub mod engine;
pub mod error;
mod fused;
pub mod generate;
pub mod metrics;
pub mod plan;
pub mod render;
pub mod results;
pub mod source;
pub mod spec;

use std::path::Path;

pub use engine::{Analyzer, EngineOptions, Inputs};
pub use error::{Error, Result};
pub use metrics::MetricRegistry;
pub use results::Results;
pub use spec::{AnalysisSpec, ValidSpec};

use chrono::{DateTime, Utc};

/// Output format of [`run_request`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// Pretty-printed JSON (one document; an array for `looks`).
    #[default]
    Json,
    /// A table for a terminal.
    Table,
}

/// Everything `strata analyze` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Analysis spec (JSON or YAML).
    pub spec: String,
    /// Metric registry (JSON or YAML).
    pub metrics: String,
    /// Exposures path.
    pub exposures: String,
    /// Events path.
    pub events: String,
    /// `--as-of` (RFC 3339).
    pub as_of: Option<String>,
    /// `--looks` (comma-separated RFC 3339 times).
    pub looks: Option<String>,
    /// Output format.
    pub format: OutputFormat,
    /// Engine options.
    pub options: EngineOptions,
}

fn parse_option_time(option: &'static str, text: &str) -> Result<DateTime<Utc>> {
    spec::parse_time(text.trim()).ok_or_else(|| Error::Option {
        option,
        reason: format!("`{}` is not an RFC 3339 timestamp", text.trim()),
    })
}

/// Loads and validates a spec and a metric registry.
pub fn load(spec_path: &Path, metrics_path: &Path) -> Result<(ValidSpec, MetricRegistry)> {
    let registry = MetricRegistry::from_path(metrics_path)?;
    let spec = AnalysisSpec::from_path(spec_path)?
        .validate(&spec_path.display().to_string(), &registry)?;
    Ok((spec, registry))
}

/// Runs a request and returns the analyses (one, or one per look).
pub async fn run(req: &Request) -> Result<Vec<Results>> {
    if req.as_of.is_some() && req.looks.is_some() {
        return Err(Error::Option {
            option: "looks",
            reason: "give either --as-of or --looks".into(),
        });
    }
    let as_of = req
        .as_of
        .as_deref()
        .map(|t| parse_option_time("as-of", t))
        .transpose()?;
    let looks = req
        .looks
        .as_deref()
        .map(|l| {
            l.split(',')
                .map(|t| parse_option_time("looks", t))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    let (spec, registry) = load(Path::new(&req.spec), Path::new(&req.metrics))?;
    let inputs = Inputs {
        exposures: req.exposures.clone(),
        events: req.events.clone(),
    };
    let analyzer = Analyzer::new(spec, &registry, &inputs, req.options.clone()).await?;
    match looks {
        Some(looks) => analyzer.run_looks(&looks).await,
        None => Ok(vec![analyzer.run(as_of).await?]),
    }
}

/// Renders analyses in the requested format; `looks` selects the array form.
pub fn render(results: &[Results], format: OutputFormat, looks: bool) -> Result<String> {
    Ok(match format {
        OutputFormat::Json => {
            let text = if looks {
                serde_json::to_string_pretty(results)
            } else {
                match results.first() {
                    Some(r) => serde_json::to_string_pretty(r),
                    None => Ok("null".into()),
                }
            };
            text.map_err(|e| Error::Option {
                option: "format",
                reason: e.to_string(),
            })? + "\n"
        }
        OutputFormat::Table => results
            .iter()
            .map(render::render_table)
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// Runs a request on a fresh multi-threaded runtime and renders it: the whole
/// of `strata analyze`.
pub fn run_request(req: &Request) -> Result<String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    let results = runtime.block_on(run(req))?;
    render(&results, req.format, req.looks.is_some())
}
