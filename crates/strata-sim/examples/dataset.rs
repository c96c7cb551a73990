//! Writes an offline data set of the simulator as the pipeline's Parquet
//! files, for the analysis benchmarks (`bench/analysis/run.sh`,
//! `bench/analysis/refresh.sh`):
//! `cargo run --release -p strata-sim --example dataset -- DIR UNITS VISITS_PER_UNIT [PARTITIONS [EXPERIMENT [VARIANTS]]] [--overlapping N:SHARE] [--by-date] [--hold-back-hours H]`
//!
//! Defaults: 16 partitions, experiment `exp_bench`, variants
//! `control,treatment_a,treatment_b` (equal weights, the first is the
//! control; every treatment lifts the purchase rate by 2 %), heavy-tailed
//! activity (Pareto α = 1.2, capped at 200), 0.1 % of events sent twice,
//! seed 42.
//!
//! `--overlapping N:SHARE` adds N experiments `exp_o01` … with the same
//! variants and no effect, each exposing SHARE of the units;
//! `--by-date` lays the files out as compaction does
//! (`kind=events/date=YYYY-MM-DD/part=NN/`); `--hold-back-hours H` writes
//! the events of the experiment's last H hours under `held-back/` instead.

use std::path::Path;

use strata_sim::behaviour::Effect;
use strata_sim::dataset::{write_layout, DatasetConfig, Layout, Overlapping, Variant};

const USAGE: &str =
    "usage: dataset DIR UNITS VISITS_PER_UNIT [PARTITIONS [EXPERIMENT [VARIANTS]]] \
                     [--overlapping N:SHARE] [--by-date] [--hold-back-hours H]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().collect();
    let mut flag = |name: &str, valued: bool| -> Option<String> {
        let i = args.iter().position(|a| a == name)?;
        let value = if valued {
            (i + 1 < args.len()).then(|| args.remove(i + 1))
        } else {
            Some(String::new())
        };
        args.remove(i);
        value
    };
    let overlapping = flag("--overlapping", true);
    let by_date = flag("--by-date", false).is_some();
    let hold_back: Option<f64> = flag("--hold-back-hours", true)
        .map(|h| h.parse())
        .transpose()?;
    if args.len() < 4 {
        return Err(USAGE.into());
    }
    let experiment = args.get(5).map_or("exp_bench", String::as_str);
    let keys: Vec<&str> = args
        .get(6)
        .map_or("control,treatment_a,treatment_b", String::as_str)
        .split(',')
        .collect();
    let variants = keys
        .iter()
        .enumerate()
        .map(|(i, key)| Variant {
            key: (*key).to_owned(),
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
    let overlapping = match overlapping {
        None => Vec::new(),
        Some(o) => {
            let (n, share) = o.split_once(':').ok_or(USAGE)?;
            Overlapping::many("exp_o", n.parse()?, share.parse()?, &keys)
        }
    };
    let cfg = DatasetConfig {
        experiment: experiment.to_owned(),
        salt: experiment.to_owned(),
        variants,
        units: args[2].parse()?,
        visits_per_unit: args[3].parse()?,
        duplicate_rate: 0.001,
        seed: 42,
        overlapping,
        ..DatasetConfig::default()
    };
    let end = cfg.start_us + cfg.days * 86_400_000_000;
    let layout = Layout {
        partitions: args.get(4).map(|p| p.parse()).transpose()?.unwrap_or(16),
        by_date,
        hold_back_from_us: hold_back.map(|h| end - (h * 3_600_000_000.0) as i64),
    };
    let t = std::time::Instant::now();
    let written = write_layout(&cfg, Path::new(&args[1]), &layout)?;
    eprintln!(
        "wrote {} exposures and {} events in {:.1} s",
        written.exposures,
        written.events,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
