//! `strata analyze`: analyse an experiment from exposures and events.
//!
//! The command's part is its options, reading the spec and registry files,
//! the progress spinner and rendering; the analysis itself is
//! `strata_analysis::analyze`.

mod progress;
mod render;

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use strata_analysis::{DataSource, EngineOptions, Results};

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

/// An RFC 3339 time given to `option`.
fn parse_option_time(option: &str, text: &str) -> Result<DateTime<Utc>> {
    strata_analysis::spec::parse_time(text.trim()).ok_or_else(|| {
        anyhow!(
            "option `{option}`: `{}` is not an RFC 3339 timestamp",
            text.trim()
        )
    })
}

/// Runs the analysis of `args` and renders it: the output of `strata analyze`.
fn output(args: &AnalyzeArgs) -> Result<String> {
    // Checked here as well as by clap so the function stands on its own.
    if args.as_of.is_some() && args.looks.is_some() {
        return Err(anyhow!("option `looks`: give either --as-of or --looks"));
    }
    let as_of = args
        .as_of
        .as_deref()
        .map(|t| parse_option_time("as-of", t))
        .transpose()?;
    let looks = args
        .looks
        .as_deref()
        .map(|l| {
            l.split(',')
                .map(|t| parse_option_time("looks", t))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    // Validated here so that errors in the spec name its file.
    let (spec, registry) = strata_analysis::load(Path::new(&args.spec), Path::new(&args.metrics))?;
    let data = DataSource {
        exposures: args.exposures.clone(),
        events: args.events.clone(),
    };
    let spinner = progress::Spinner::on_stderr();
    let options = EngineOptions {
        assume_unique_event_ids: args.assume_unique_event_ids,
        on_progress: spinner.callback(),
        memory_limit: args.memory_limit_mb.map(|m| m << 20),
        unfused_parts: args.unfused_parts,
        ..EngineOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let results = runtime.block_on(async {
        match &looks {
            Some(looks) => {
                strata_analysis::analyze_looks(&spec.spec, &registry, &data, looks, options).await
            }
            None => strata_analysis::analyze(&spec.spec, &registry, &data, as_of, options)
                .await
                .map(|r| vec![r]),
        }
    });
    spinner.finish();
    render(&results?, args.format, looks.is_some())
}

/// Renders analyses in `format`; `looks` selects the JSON array form.
fn render(results: &[Results], format: Format, looks: bool) -> Result<String> {
    Ok(match format {
        Format::Json => {
            let text = if looks {
                serde_json::to_string_pretty(results)
            } else {
                match results.first() {
                    Some(r) => serde_json::to_string_pretty(r),
                    None => Ok("null".into()),
                }
            };
            text.map_err(|e| anyhow!("option `format`: {e}"))? + "\n"
        }
        Format::Table => results
            .iter()
            .map(render::render_table)
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// Runs `strata analyze`.
pub fn run(args: &AnalyzeArgs) -> Result<()> {
    let out = output(args)?;
    use std::io::Write;
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(format: Format) -> AnalyzeArgs {
        let ex = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/analysis");
        AnalyzeArgs {
            spec: format!("{ex}/experiment.yaml"),
            metrics: format!("{ex}/metrics.yaml"),
            exposures: format!("{ex}/data/exposures"),
            events: format!("{ex}/data/events"),
            as_of: None,
            looks: None,
            format,
            assume_unique_event_ids: false,
            memory_limit_mb: None,
            unfused_parts: false,
        }
    }

    #[test]
    fn table_lays_out_the_example() {
        let table = output(&args(Format::Table)).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with(
            "experiment exp_checkout_v2 (itt), data from 2026-01-01T00:00:00Z to 2026-01-15T00:00:00Z"
        ));
        let header = lines
            .iter()
            .position(|l| l.starts_with("| metric "))
            .unwrap();
        assert!(
            lines[header + 2].starts_with("| conversion    | primary   | treatment |"),
            "{table}"
        );
        assert!(
            lines[header + 6].starts_with("| page_load_p95 | guardrail | treatment |"),
            "{table}"
        );
    }

    #[test]
    fn looks_print_an_array_and_exclude_as_of() {
        let mut a = args(Format::Json);
        a.looks = Some("2026-01-05T00:00:00Z, 2026-01-10T00:00:00Z".into());
        let v: serde_json::Value = serde_json::from_str(&output(&a).unwrap()).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["as_of"], "2026-01-10T00:00:00Z");
        a.as_of = Some("2026-01-10T00:00:00Z".into());
        assert_eq!(
            output(&a).unwrap_err().to_string(),
            "option `looks`: give either --as-of or --looks"
        );
        a.looks = None;
        a.as_of = Some("yesterday".into());
        assert_eq!(
            format!("{:#}", output(&a).unwrap_err()),
            "option `as-of`: `yesterday` is not an RFC 3339 timestamp"
        );
    }
}
