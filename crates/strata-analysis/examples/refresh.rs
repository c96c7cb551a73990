//! Refreshes the shared, kept rollup of many experiments and analyses each
//! of them from it, as one run of the scheduled analysis does, for the
//! refresh benchmark (`bench/analysis/refresh.sh`):
//! `cargo run --release -p strata-analysis --example refresh -- METRICS EXPOSURES EVENTS STORE AS_OF OUT [--full] [--assume-unique-event-ids] SPEC...`
//!
//! Every SPEC is looked at as of AS_OF (RFC 3339). The rollup is kept in
//! STORE between invocations: a refresh recomputes only the days whose
//! inputs or cut points changed, `--full` every day (and compares the kept
//! ones). The results documents are written to OUT as a JSON array in the
//! order of the specs; timings and what the refresh did go to standard
//! error. `STRATA_MEMORY_LIMIT_MB` sets the query engine's memory limit (0: none).

use std::path::Path;

use strata_analysis::{analyze_with_rollup, DataSource, EngineOptions, RollupStore, SharedLook};

/// The allocator of the `strata` binary, so the figures are those of `strata serve`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: refresh METRICS EXPOSURES EVENTS STORE AS_OF OUT [--full] [--assume-unique-event-ids] SPEC...";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| match args.iter().position(|a| a == name) {
        Some(i) => {
            args.remove(i);
            true
        }
        None => false,
    };
    let full = flag("--full");
    let unique = flag("--assume-unique-event-ids");
    if args.len() < 7 {
        return Err(USAGE.into());
    }
    let metrics = Path::new(&args[0]);
    let as_of = chrono::DateTime::parse_from_rfc3339(&args[4])?.with_timezone(&chrono::Utc);
    let mut looks = Vec::new();
    let mut registry = None;
    for spec in &args[6..] {
        let (spec, r) = strata_analysis::load(Path::new(spec), metrics)?;
        registry.get_or_insert(r);
        looks.push(SharedLook {
            spec,
            as_of: Some(as_of),
            previous: Vec::new(),
        });
    }
    let registry = registry.ok_or(USAGE)?;
    let data = DataSource {
        exposures: args[1].clone(),
        events: args[2].clone(),
        aliases: None,
    };
    let options = EngineOptions {
        assume_unique_event_ids: unique,
        memory_limit: std::env::var("STRATA_MEMORY_LIMIT_MB")
            .ok()
            .map(|m| m.parse::<usize>().map(|m| m << 20))
            .transpose()?
            // 0, as the benchmark scripts spell "no limit", is no limit.
            .filter(|&m| m > 0),
        ..EngineOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let specs: Vec<_> = looks.iter().map(|l| (l.spec.clone(), l.as_of)).collect();
    let t = std::time::Instant::now();
    let (rollup, refreshed) = runtime
        .block_on(RollupStore::new(&args[3]).refresh(&specs, &registry, &data, &options, full))?;
    let t_rollup = t.elapsed().as_secs_f64();
    let results = runtime.block_on(analyze_with_rollup(
        &looks, &registry, &data, options, &rollup,
    ));
    let total = t.elapsed().as_secs_f64();
    let mut docs = Vec::with_capacity(results.len());
    for (look, r) in looks.iter().zip(results) {
        match r {
            Ok(r) => docs.push(serde_json::to_value(&r)?),
            Err(e) => return Err(format!("{}: {e}", look.spec.spec.key).into()),
        }
    }
    std::fs::write(&args[5], serde_json::to_string(&docs)? + "\n")?;
    eprintln!(
        "{} experiments: rollup {:.2} s ({} days, {} recomputed, full {}, mismatched {:?}, {} rows), analyses {:.2} s, total {:.2} s",
        looks.len(),
        t_rollup,
        refreshed.days,
        refreshed.recomputed,
        refreshed.full,
        refreshed.mismatched,
        rollup.rows(),
        total - t_rollup,
        total
    );
    Ok(())
}
