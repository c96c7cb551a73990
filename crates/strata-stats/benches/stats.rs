//! Benchmarks of the statistics engine.
//!
//! * `analyze_3x50`: every statistic for 3 variants × 50 metrics (mean,
//!   ratio and CUPED metrics; SRM, Welch, lift, Holm, Bayesian summary) from
//!   sufficient statistics. Target: well under 1 ms.
//! * `gs_boundaries_50`: O'Brien–Fleming group-sequential boundaries for 50
//!   equally spaced looks. Target: well under 10 ms.
//!
//! `peer.py` beside this file times the same computations with scipy and
//! statsmodels.

use criterion::{criterion_main, Criterion};
use std::hint::black_box;
use strata_stats::analysis::{
    analyze, AnalysisConfig, MetricData, MetricInput, MetricRole, VariantInput,
};
use strata_stats::moments::{CupedStats, MeanStats, RatioStats};
use strata_stats::sequential::{group_sequential_boundaries, Spending};

/// 50 metrics over 3 variants: 30 means, 10 ratios, 10 CUPED.
pub fn experiment() -> (Vec<VariantInput>, Vec<MetricInput>) {
    let units = [100_000_u64, 100_150, 99_900];
    let variants = units
        .iter()
        .enumerate()
        .map(|(i, &u)| VariantInput {
            name: format!("v{i}"),
            weight: 1.0,
            units: u,
        })
        .collect();
    let metrics = (0..50)
        .map(|m| {
            let f = m as f64;
            let role = if m == 0 {
                MetricRole::Primary
            } else {
                MetricRole::Secondary
            };
            let data = match m % 5 {
                0..=2 => MetricData::Mean(
                    units
                        .iter()
                        .enumerate()
                        .map(|(v, &n)| {
                            let mean = 10.0 + f + 0.05 * v as f64;
                            MeanStats::from_moments(n, mean, (n - 1) as f64 * (4.0 + f)).unwrap()
                        })
                        .collect(),
                ),
                3 => MetricData::Ratio(
                    units
                        .iter()
                        .enumerate()
                        .map(|(v, &n)| {
                            let nf = (n - 1) as f64;
                            RatioStats::from_moments(
                                n,
                                20.0 + f + 0.1 * v as f64,
                                2.0,
                                nf * 30.0,
                                nf * 1.5,
                                nf * 3.0,
                            )
                            .unwrap()
                        })
                        .collect(),
                ),
                _ => MetricData::Cuped(
                    units
                        .iter()
                        .enumerate()
                        .map(|(v, &n)| {
                            let nf = (n - 1) as f64;
                            CupedStats::from_moments(
                                n,
                                5.0 + 0.02 * v as f64,
                                5.0,
                                nf * 9.0,
                                nf * 8.0,
                                nf * 6.0,
                            )
                            .unwrap()
                        })
                        .collect(),
                ),
            };
            MetricInput {
                segments: vec![],
                name: format!("metric_{m}"),
                role,
                data,
            }
        })
        .collect();
    (variants, metrics)
}

fn bench(c: &mut Criterion) {
    let (variants, metrics) = experiment();
    let config = AnalysisConfig {
        planned_n_per_variant: Some(120_000),
        bayesian: Some(None),
        ..AnalysisConfig::default()
    };
    c.bench_function("analyze_3x50", |b| {
        b.iter(|| {
            analyze(
                black_box(&config),
                black_box(&variants),
                black_box(&metrics),
            )
            .unwrap()
        })
    });
    let fractions: Vec<f64> = (1..=50).map(|k| k as f64 / 50.0).collect();
    c.bench_function("gs_boundaries_50", |b| {
        b.iter(|| {
            group_sequential_boundaries(black_box(&fractions), 0.05, Spending::OBrienFleming)
                .unwrap()
        })
    });
    let five = [0.2, 0.4, 0.6, 0.8, 1.0];
    c.bench_function("gs_boundaries_5", |b| {
        b.iter(|| {
            group_sequential_boundaries(black_box(&five), 0.05, Spending::OBrienFleming).unwrap()
        })
    });
}

// criterion_group! generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
