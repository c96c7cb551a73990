//! Runs an analysis like `strata analyze`, for benchmarks:
//! `cargo run --release -p strata-analysis --example analyze -- SPEC METRICS EXPOSURES EVENTS [json|table] [--assume-unique-event-ids] [--unfused-parts]`
//! (`STRATA_MEMORY_LIMIT_MB` sets the query engine's memory limit).

/// The allocator of the `strata` binary, so the figures are those of `strata analyze`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err(
            "usage: analyze SPEC METRICS EXPOSURES EVENTS [json|table] [--assume-unique-event-ids] [--unfused-parts]"
                .into(),
        );
    }
    let request = strata_analysis::Request {
        spec: args[1].clone(),
        metrics: args[2].clone(),
        exposures: args[3].clone(),
        events: args[4].clone(),
        as_of: None,
        looks: None,
        format: if args.get(5).map(String::as_str) == Some("table") {
            strata_analysis::OutputFormat::Table
        } else {
            strata_analysis::OutputFormat::Json
        },
        options: strata_analysis::EngineOptions {
            assume_unique_event_ids: args.iter().any(|a| a == "--assume-unique-event-ids"),
            unfused_parts: args.iter().any(|a| a == "--unfused-parts"),
            progress: true,
            memory_limit: std::env::var("STRATA_MEMORY_LIMIT_MB")
                .ok()
                .map(|m| m.parse::<usize>().map(|m| m << 20))
                .transpose()?,
            ..strata_analysis::EngineOptions::default()
        },
    };
    let t = std::time::Instant::now();
    let out = strata_analysis::run_request(&request)?;
    eprintln!("analysis took {:.2} s", t.elapsed().as_secs_f64());
    print!("{out}");
    Ok(())
}
