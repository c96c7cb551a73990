//! Writes an offline data set of the simulator as the pipeline's Parquet
//! files, for the analysis benchmark (`bench/analysis/run.sh`):
//! `cargo run --release -p strata-sim --example dataset -- DIR UNITS VISITS_PER_UNIT [PARTITIONS [EXPERIMENT [VARIANTS]]]`
//!
//! Defaults: 16 partitions, experiment `exp_bench`, variants
//! `control,treatment_a,treatment_b` (equal weights, the first is the
//! control; every treatment lifts the purchase rate by 2 %), heavy-tailed
//! activity (Pareto α = 1.2, capped at 200), 0.1 % of events sent twice,
//! seed 42.

use std::path::Path;

use strata_sim::behaviour::Effect;
use strata_sim::dataset::{write_parquet, DatasetConfig, Variant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err(
            "usage: dataset DIR UNITS VISITS_PER_UNIT [PARTITIONS [EXPERIMENT [VARIANTS]]]".into(),
        );
    }
    let experiment = args.get(5).map_or("exp_bench", String::as_str);
    let variants = args
        .get(6)
        .map_or("control,treatment_a,treatment_b", String::as_str)
        .split(',')
        .enumerate()
        .map(|(i, key)| Variant {
            key: key.to_owned(),
            weight: 1.0,
            effect: if i == 0 {
                Effect::NONE
            } else {
                Effect {
                    purchase: 1.02,
                    ..Effect::NONE
                }
            },
        })
        .collect();
    let cfg = DatasetConfig {
        experiment: experiment.to_owned(),
        salt: experiment.to_owned(),
        variants,
        units: args[2].parse()?,
        visits_per_unit: args[3].parse()?,
        duplicate_rate: 0.001,
        seed: 42,
        ..DatasetConfig::default()
    };
    let partitions: u32 = args.get(4).map(|p| p.parse()).transpose()?.unwrap_or(16);
    let t = std::time::Instant::now();
    let written = write_parquet(&cfg, Path::new(&args[1]), partitions)?;
    eprintln!(
        "wrote {} exposures and {} events in {:.1} s",
        written.exposures,
        written.events,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
