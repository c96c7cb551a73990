//! `strata analyze`: analyse an experiment from exposures and events.
//!
//! Thin: the work (loading, planning, running, rendering) is in
//! `strata-analysis`.

use anyhow::Result;
use clap::{Args, ValueEnum};

/// Output format.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    /// The results document (`docs/results-schema.md`).
    #[default]
    Json,
    /// A table for a terminal.
    Table,
}

/// Arguments of `strata analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Experiment analysis spec (JSON or YAML).
    #[arg(long, value_name = "EXPERIMENT.yaml")]
    spec: String,
    /// Metric registry (JSON or YAML).
    #[arg(long, value_name = "METRICS.yaml")]
    metrics: String,
    /// Exposures: a Parquet, NDJSON or CSV file, a directory (Hive partitions allowed) or a glob.
    #[arg(long, value_name = "PATH")]
    exposures: String,
    /// Events: a Parquet, NDJSON or CSV file, a directory (Hive partitions allowed) or a glob.
    #[arg(long, value_name = "PATH")]
    events: String,
    /// Analyse the data as of this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", conflicts_with = "looks")]
    as_of: Option<String>,
    /// Analyse a sequence of looks (comma-separated RFC 3339 times); prints a JSON array.
    #[arg(long, value_name = "T1,T2,...")]
    looks: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Skip deduplication by event_id (only when the pipeline guarantees unique ids).
    #[arg(long)]
    assume_unique_event_ids: bool,
    /// Memory limit of the query engine in MiB; larger aggregations spill to disk.
    #[arg(long, value_name = "MIB")]
    memory_limit_mb: Option<usize>,
    /// Compute per-unit values with one SQL FILTER aggregate per metric part (the
    /// portable form) instead of the fused aggregate: the same results, slower.
    #[arg(long)]
    unfused_parts: bool,
}

/// Runs `strata analyze`.
pub fn run(args: &AnalyzeArgs) -> Result<()> {
    let request = strata_analysis::Request {
        spec: args.spec.clone(),
        metrics: args.metrics.clone(),
        exposures: args.exposures.clone(),
        events: args.events.clone(),
        as_of: args.as_of.clone(),
        looks: args.looks.clone(),
        format: match args.format {
            Format::Json => strata_analysis::OutputFormat::Json,
            Format::Table => strata_analysis::OutputFormat::Table,
        },
        options: strata_analysis::EngineOptions {
            assume_unique_event_ids: args.assume_unique_event_ids,
            progress: true,
            memory_limit: args.memory_limit_mb.map(|m| m << 20),
            unfused_parts: args.unfused_parts,
            ..strata_analysis::EngineOptions::default()
        },
    };
    let out = strata_analysis::run_request(&request)?;
    use std::io::Write;
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}
