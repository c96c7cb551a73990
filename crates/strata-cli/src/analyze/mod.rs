//! `strata analyze`: analyse an experiment from exposures and events.
//!
//! The command's part is its options, reading the spec and registry files
//! (or, with `--server`, the experiment's stored definition and the
//! registry from a running server, and publishing the look back to it), the
//! progress spinner and rendering; the analysis itself is
//! `strata_analysis::analyze`.

mod progress;
mod remote;
mod render;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use strata_analysis::{Cluster, DataSource, EngineOptions, Results};

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
    #[arg(
        long,
        value_name = "EXPERIMENT.yaml",
        required_unless_present = "server"
    )]
    spec: Option<String>,
    /// Metric registry (JSON or YAML).
    #[arg(long, value_name = "METRICS.yaml", required_unless_present = "server")]
    metrics: Option<String>,
    /// Exposures: a Parquet, NDJSON or CSV file, a directory (Hive partitions allowed), a glob
    /// or the pipeline's Parquet root (its `kind=exposures` directory is read).
    #[arg(long, value_name = "PATH", required_unless_present_any = ["server", "data"], requires = "events")]
    exposures: Option<String>,
    /// Events: a Parquet, NDJSON or CSV file, a directory (Hive partitions allowed), a glob
    /// or the pipeline's Parquet root (its `kind=events` directory is read).
    #[arg(long, value_name = "PATH", required_unless_present_any = ["server", "data"], requires = "exposures")]
    events: Option<String>,
    /// Aliases (an anonymous id signed in as a user id; columns anonymous_id, user_id, ts):
    /// a Parquet, NDJSON or CSV file, a directory, a glob or the pipeline's Parquet root.
    /// Exposures and events of an anonymous id count for the user id of its earliest alias.
    /// Without it, the pipeline's `kind=aliases` directory is read when --events or
    /// --exposures is the pipeline's Parquet root or one of its `kind=` directories
    /// (and --data's); else there are no aliases.
    #[arg(long, value_name = "PATH")]
    aliases: Option<String>,
    /// The data directory of `strata serve`: exposures, events and aliases are read
    /// from the Parquet it writes under DIR/pipeline/parquet (with `--server`
    /// and neither this nor --exposures/--events: ./strata-data).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["exposures", "events"])]
    data: Option<PathBuf>,
    /// A running server (`http://host:port`): analyse the experiment as it
    /// was pre-registered there, with the server's metric registry, instead
    /// of --spec and --metrics.
    #[arg(long, value_name = "URL", requires = "experiment", conflicts_with_all = ["spec", "metrics"])]
    server: Option<String>,
    /// API token for --server (default: the STRATA_TOKEN environment variable).
    #[arg(long, value_name = "TOKEN", requires = "server")]
    token: Option<String>,
    /// Key of the experiment to analyse, with --server.
    #[arg(long, value_name = "KEY", requires = "server")]
    experiment: Option<String>,
    /// Publish the results to the server as the experiment's next look.
    #[arg(long, requires = "server", conflicts_with = "looks")]
    publish: bool,
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
    /// Run the analysis on an Apache Ballista cluster: its scheduler, `df://host:port`
    /// (`strata ballista-scheduler`; needs a build with `--features ballista`). The
    /// inputs' paths must be readable at the same path by every executor.
    #[arg(long, value_name = "df://HOST:PORT")]
    ballista: Option<String>,
    /// With --ballista: a directory the scheduler and every executor see at this same
    /// path, where the analysis writes the tables it passes between its stages
    /// (default: the system's temporary directory, enough when they share this machine).
    #[arg(long, value_name = "DIR", requires = "ballista")]
    ballista_scratch: Option<PathBuf>,
    /// Partitions each query is split into (default: one per core; with --ballista,
    /// the tasks spread over the executors).
    #[arg(long, value_name = "N")]
    target_partitions: Option<usize>,
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let server = match (&args.server, &args.experiment) {
        (Some(url), Some(key)) => Some(remote::Server::new(url, args.token.clone(), key)?),
        _ => None,
    };
    let (spec, registry) = match (&server, &args.spec, &args.metrics) {
        (Some(server), _, _) => {
            // A look is analysed at one instant: the spec's end for a
            // running experiment is that instant.
            let at = looks
                .as_ref()
                .and_then(|l| l.iter().max().copied())
                .or(as_of)
                .unwrap_or_else(Utc::now);
            runtime.block_on(server.pre_registered(at))?
        }
        (None, Some(spec), Some(metrics)) => {
            // Validated here so that errors in the spec name its file.
            let (spec, registry) = strata_analysis::load(Path::new(spec), Path::new(metrics))?;
            (spec.spec, registry)
        }
        _ => {
            return Err(anyhow!(
                "give --spec and --metrics, or --server and --experiment"
            ))
        }
    };
    let data = match (&args.exposures, &args.events, &args.data) {
        (Some(exposures), Some(events), _) => DataSource {
            exposures: exposures.clone(),
            events: events.clone(),
            aliases: args.aliases.clone(),
        },
        (_, _, dir) => {
            let dir = dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./strata-data"));
            let parquet = dir.join("pipeline").join("parquet");
            if !parquet.is_dir() {
                return Err(anyhow!(
                    "option `data`: {} holds no event pipeline output (expected {}); pass the --data-dir of `strata serve`, or --exposures and --events",
                    dir.display(),
                    parquet.display()
                ));
            }
            DataSource {
                exposures: parquet.join("kind=exposures").display().to_string(),
                events: parquet.join("kind=events").display().to_string(),
                aliases: args.aliases.clone(),
            }
        }
    };
    let spinner = progress::Spinner::on_stderr();
    let options = EngineOptions {
        assume_unique_event_ids: args.assume_unique_event_ids,
        on_progress: spinner.callback(),
        memory_limit: args.memory_limit_mb.map(|m| m << 20),
        unfused_parts: args.unfused_parts,
        target_partitions: args.target_partitions.unwrap_or(0),
        cluster: args.ballista.as_ref().map(|scheduler| Cluster {
            scheduler: scheduler.clone(),
            scratch: args
                .ballista_scratch
                .clone()
                .unwrap_or_else(std::env::temp_dir),
        }),
    };
    // The group-sequential looks of a stored experiment so far.
    let previous = match (&server, &looks) {
        (Some(s), None) => runtime.block_on(s.previous_fractions())?,
        _ => Vec::new(),
    };
    let results = runtime.block_on(async {
        match &looks {
            Some(looks) => {
                strata_analysis::analyze_looks(&spec, &registry, &data, looks, options).await
            }
            // A look of a stored experiment continues its sequence.
            None if server.is_some() => {
                strata_analysis::analyze_after(&spec, &registry, &data, as_of, &previous, options)
                    .await
                    .map(|r| vec![r])
            }
            None => strata_analysis::analyze(&spec, &registry, &data, as_of, options)
                .await
                .map(|r| vec![r]),
        }
    });
    spinner.finish();
    let results = results?;
    if let (true, Some(server), Some(r)) = (args.publish, &server, results.first()) {
        let seq = runtime.block_on(server.publish(r))?;
        eprintln!(
            "published look {seq} of experiment {} (as of {})",
            spec.key, r.as_of
        );
    }
    render(&results, args.format, looks.is_some())
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
            spec: Some(format!("{ex}/experiment.yaml")),
            metrics: Some(format!("{ex}/metrics.yaml")),
            exposures: Some(format!("{ex}/data/exposures")),
            events: Some(format!("{ex}/data/events")),
            aliases: None,
            data: None,
            server: None,
            token: None,
            experiment: None,
            publish: false,
            as_of: None,
            looks: None,
            format,
            assume_unique_event_ids: false,
            memory_limit_mb: None,
            unfused_parts: false,
            ballista: None,
            ballista_scratch: None,
            target_partitions: None,
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
