//! Writes a generated data set as Parquet, for benchmarks:
//! `cargo run --release -p strata-analysis --example generate -- DIR UNITS EVENTS_PER_UNIT [FILES [EXPERIMENT [VARIANTS]]]`
//!
//! Defaults: 8 files, experiment `exp_bench`, variants `control,treatment_a,treatment_b`
//! (equal weights, the first is the control).

use std::path::Path;

use strata_analysis::testkit::{write_parquet, GenConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: generate DIR UNITS EVENTS_PER_UNIT [FILES]".into());
    }
    let cfg = GenConfig {
        units: args[2].parse()?,
        events_per_unit: args[3].parse()?,
        variants: args
            .get(6)
            .map_or("control,treatment_a,treatment_b", String::as_str)
            .split(',')
            .map(|v| (v.to_string(), 1.0))
            .collect(),
        effect: 0.02,
        seed: 42,
        duplicate_rate: 0.001,
        ..GenConfig::default()
    };
    let files: u64 = args.get(4).map(|f| f.parse()).transpose()?.unwrap_or(8);
    let t = std::time::Instant::now();
    let (x, e) = write_parquet(
        &cfg,
        args.get(5).map_or("exp_bench", String::as_str),
        Path::new(&args[1]),
        files,
    )?;
    eprintln!(
        "wrote {x} exposures and {e} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
