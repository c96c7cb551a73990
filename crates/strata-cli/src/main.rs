//! `strata`: the command line of the Strata experimentation platform.
//!
//! Subcommands are thin: parsing, file handling and output formatting live
//! here, while the work is done by the library crates.

mod analyze;
mod assign;
mod ballista;
mod demo;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: ingestion allocates a few
/// small strings per record on many threads, and glibc's malloc spent over a
/// third of the server's CPU on it (consolidating and unlinking chunks)
/// under the ingestion benchmark (`docs/performance.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Strata: feature experimentation and A/B testing.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Evaluate a config snapshot for one or many units and print their assignments as JSON.
    Assign(assign::AssignArgs),
    /// Analyse an experiment from exposures and events (Parquet, NDJSON or CSV) and print its results.
    Analyze(analyze::AnalyzeArgs),
    /// Run the control plane: experiment API, versioned config, SDK distribution, OFREP.
    Serve(serve::ServeArgs),
    /// Start a server with simulated users running the demo's scenarios.
    Demo(demo::DemoArgs),
    /// Drive simulated users against a running server (a load generator).
    Simulate(demo::SimulateArgs),
    /// Manage bearer tokens.
    #[command(subcommand)]
    Token(serve::TokenCommand),
    /// Compact everything durable in the event log into Parquet now (the server must be stopped).
    Compact(serve::CompactArgs),
    /// Run an Apache Ballista scheduler for `analyze --ballista` (built with `--features ballista`).
    BallistaScheduler(ballista::SchedulerArgs),
    /// Run an Apache Ballista executor for `analyze --ballista` (built with `--features ballista`).
    BallistaExecutor(ballista::ExecutorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Assign(args) => assign::run(&args),
        Command::Analyze(args) => analyze::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Simulate(args) => demo::simulate(&args),
        Command::Token(cmd) => serve::token(&cmd),
        Command::Compact(args) => serve::compact(&args),
        Command::BallistaScheduler(args) => ballista::scheduler(&args),
        Command::BallistaExecutor(args) => ballista::executor(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `warn` (or as `RUST_LOG` says): the commands that run
/// until stopped and report through logs, `strata demo` and Ballista's
/// scheduler and executor.
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// A reader closing our stdout early (`strata assign … | head`) is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
