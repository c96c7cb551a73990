//! Runs an analysis like `strata analyze`, for benchmarks:
//! `cargo run --release -p strata-analysis --example analyze -- SPEC METRICS EXPOSURES EVENTS [json] [--assume-unique-event-ids] [--unfused-parts]`
//! (`STRATA_MEMORY_LIMIT_MB` sets the query engine's memory limit; 0: none). It
//! prints the results document as `strata analyze` does; the table format is
//! the command's (`strata analyze --format table`).

use std::path::Path;

/// The allocator of the `strata` binary, so the figures are those of `strata analyze`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 || args.get(5).is_some_and(|f| f == "table") {
        return Err(
            "usage: analyze SPEC METRICS EXPOSURES EVENTS [json] [--assume-unique-event-ids] [--unfused-parts]"
                .into(),
        );
    }
    let (spec, registry) = strata_analysis::load(Path::new(&args[1]), Path::new(&args[2]))?;
    let data = strata_analysis::DataSource {
        exposures: args[3].clone(),
        events: args[4].clone(),
        aliases: None,
    };
    let options = strata_analysis::EngineOptions {
        assume_unique_event_ids: args.iter().any(|a| a == "--assume-unique-event-ids"),
        unfused_parts: args.iter().any(|a| a == "--unfused-parts"),
        memory_limit: std::env::var("STRATA_MEMORY_LIMIT_MB")
            .ok()
            .map(|m| m.parse::<usize>().map(|m| m << 20))
            .transpose()?
            // 0, as the benchmark scripts spell "no limit", is no limit.
            .filter(|&m| m > 0),
        ..strata_analysis::EngineOptions::default()
    };
    let t = std::time::Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(strata_analysis::analyze(
        &spec.spec, &registry, &data, None, options,
    ))?;
    let out = serde_json::to_string_pretty(&results)? + "\n";
    eprintln!("analysis took {:.2} s", t.elapsed().as_secs_f64());
    print!("{out}");
    Ok(())
}
