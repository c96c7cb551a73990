//! Numerical stability of the sufficient statistics and no panics on
//! degenerate or hostile input.

use proptest::prelude::*;

use strata_stats::analysis::{
    analyze, AnalysisConfig, MetricData, MetricInput, MetricRole, VariantInput,
};
use strata_stats::effect::{welch, Comparison, Sample};
use strata_stats::moments::{CupedStats, MeanStats, RatioStats};
use strata_stats::power::{sample_size, Baseline, Mde};
use strata_stats::quantile::{quantile_difference, QuantileSample};
use strata_stats::sequential::{
    always_valid, group_sequential_boundaries, MixtureTuning, Spending,
};
use strata_stats::srm::srm_check;
use strata_stats::{Error, InsufficientData};

use crate::prec::{assert_close, EXACT};

/// 10^8 revenue-sized units (10^6 ± 0.5 in cents) built from 100 worker
/// partitions of 10^6 units each, merged in three different orders. The naive
/// `Σy² − (Σy)²/n` cancels 13 of 16 significant digits here (Σy² ≈ 10^20
/// against M2 ≈ 2.5·10^7).
#[test]
fn hundred_million_units_merge_exactly() {
    // Partition p holds 10^6 units: half at 10^6 + 0.5 + p·1e−3, half at 10^6 − 0.5 + p·1e−3.
    let part = |p: u32| {
        let c = 1e6 + f64::from(p) * 1e-3;
        let half = 500_000_u64;
        let hi = MeanStats::from_moments(half, c + 0.5, 0.0).unwrap();
        let lo = MeanStats::from_moments(half, c - 0.5, 0.0).unwrap();
        hi + lo
    };
    let parts: Vec<MeanStats> = (0..100).map(part).collect();
    let forward: MeanStats = parts.iter().copied().sum();
    let backward = parts.iter().rev().fold(MeanStats::new(), |a, b| a + b);
    // Pairwise tree merge, as a distributed reduce would do it.
    let mut level = parts.clone();
    while level.len() > 1 {
        level = level.chunks(2).map(|c| c.iter().copied().sum()).collect();
    }
    let tree = level[0];
    // Exact values: mean = 1e6 + 0.0495; within-partition M2 = 0.25·1e8;
    // between-partition M2 = 1e6·Σ(p·1e−3 − 0.0495)² = 1e6·1e−6·Σ(p − 49.5)².
    let n = 1e8;
    let between: f64 = (0..100).map(|p| (f64::from(p) - 49.5).powi(2)).sum();
    let m2 = 0.25 * n + between;
    for (name, s) in [("forward", forward), ("backward", backward), ("tree", tree)] {
        assert_eq!(s.n(), 100_000_000);
        assert_close(&format!("{name} mean"), s.mean(), 1e6 + 0.0495, EXACT);
        assert_close(&format!("{name} m2"), s.m2(), m2, EXACT);
    }
    let naive_var = (forward.sum_sq() - forward.sum() * forward.sum() / n) / (n - 1.0);
    let exact_var = m2 / (n - 1.0);
    let naive_err = (naive_var - exact_var).abs() / exact_var;
    assert!(
        naive_err > 1e4 * EXACT,
        "naive sums unexpectedly accurate: {naive_err:e}"
    );
}

#[test]
fn welch_is_shift_invariant_at_revenue_scale() {
    // The same data shifted by 10^9 must give the same test.
    let base: Vec<f64> = (0..2000)
        .map(|i| ((i * 7919) % 1000) as f64 / 100.0)
        .collect();
    let treat: Vec<f64> = base.iter().map(|v| v * 1.01 + 0.05).collect();
    let test = |shift: f64| {
        let c: Vec<f64> = base.iter().map(|v| v + shift).collect();
        let t: Vec<f64> = treat.iter().map(|v| v + shift).collect();
        let c = Sample::from_mean(&MeanStats::from_values(&c).unwrap()).unwrap();
        let t = Sample::from_mean(&MeanStats::from_values(&t).unwrap()).unwrap();
        welch(&c, &t, 0.05).unwrap().unwrap()
    };
    let (a, b) = (test(0.0), test(1e9));
    // Representing 10^9 + x costs ~1e−7 absolute per value; the variance must survive.
    assert_close("df", b.df, a.df, 1e-6);
    assert_close("se", b.std_error, a.std_error, 1e-6);
    assert!((b.difference - a.difference).abs() < 1e-6);
}

#[test]
fn degenerate_variants_never_panic() {
    let empty = MeanStats::new();
    let one = MeanStats::from_values(&[3.0]).unwrap();
    let constant = MeanStats::from_values(&[2.0; 10]).unwrap();
    let normal = MeanStats::from_values(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    for (c, t) in [
        (empty, normal),
        (one, normal),
        (constant, constant),
        (normal, empty),
    ] {
        let cmp = Comparison::new(
            Sample::from_mean(&c).as_ref(),
            Sample::from_mean(&t).as_ref(),
            0.05,
        )
        .unwrap();
        assert!(cmp.insufficient_data.is_some() && cmp.welch.is_none());
    }
    // Constant but different arms: zero variance is insufficient, not an infinite t.
    let other = MeanStats::from_values(&[5.0; 10]).unwrap();
    let cmp = Comparison::new(
        Sample::from_mean(&constant).as_ref(),
        Sample::from_mean(&other).as_ref(),
        0.05,
    )
    .unwrap();
    assert_eq!(cmp.insufficient_data, Some(InsufficientData::ZeroVariance));

    // Whole-experiment analysis with empty variants and all metric kinds.
    let variants = vec![
        VariantInput {
            name: "c".into(),
            weight: 1.0,
            units: 0,
        },
        VariantInput {
            name: "t".into(),
            weight: 1.0,
            units: 0,
        },
    ];
    let metrics = vec![
        MetricInput {
            segments: vec![],
            name: "m".into(),
            role: MetricRole::Primary,
            data: MetricData::Mean(vec![empty, empty]),
        },
        MetricInput {
            segments: vec![],
            name: "r".into(),
            role: MetricRole::Secondary,
            data: MetricData::Ratio(vec![
                RatioStats::new(),
                RatioStats::from_values(&[1.0, 2.0], &[0.0, 0.0]).unwrap(),
            ]),
        },
        MetricInput {
            segments: vec![],
            name: "c".into(),
            role: MetricRole::Guardrail,
            data: MetricData::Cuped(vec![CupedStats::new(); 2]),
        },
    ];
    let config = AnalysisConfig {
        sequential: Some(strata_stats::analysis::SequentialConfig::AlwaysValid {
            tuning: MixtureTuning::PlannedUnits(1000),
        }),
        bayesian: Some(None),
        ..AnalysisConfig::default()
    };
    let mut metrics = metrics;
    metrics.push(MetricInput {
        segments: vec![],
        name: "p99".into(),
        role: MetricRole::Guardrail,
        data: MetricData::Quantile {
            q: 0.99,
            variants: vec![QuantileSample::default(); 2],
        },
    });
    let report = analyze(&config, &variants, &metrics).unwrap();
    assert!(!report.srm.mismatch);
    for m in &report.metrics {
        assert!(
            m.comparisons[0].comparison.insufficient_data.is_some(),
            "{}",
            m.name
        );
    }

    let q = QuantileSample::from_values(vec![]).unwrap();
    assert!(quantile_difference(&q, &q, 0.5, 0.05).unwrap().is_err());
    let s = Sample::new(1, 0.0, 0.0).unwrap();
    assert!(always_valid(&s, &s, 0.05, MixtureTuning::Rho(0.1))
        .unwrap()
        .is_err());
}

#[test]
fn invalid_input_is_a_typed_error_naming_the_field() {
    let e = MeanStats::from_values(&[1.0, f64::INFINITY]).unwrap_err();
    assert_eq!(
        e,
        Error::NonFinite {
            field: "values",
            value: f64::INFINITY
        }
    );
    assert_eq!(e.to_string(), "values must be finite, got inf");
    let e = srm_check(&[1, 2], &[1.0, -1.0], 0.001).unwrap_err();
    assert_eq!(e.to_string(), "weights must be positive, got -1");
    let e = sample_size(
        Baseline::Rate { rate: 0.1 },
        Mde::Relative(f64::NAN),
        0.05,
        0.8,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("mde must be finite"));
    let e = group_sequential_boundaries(&[0.5, 0.4], 0.05, Spending::Pocock).unwrap_err();
    assert!(e.to_string().contains("information_fractions"));
    assert!(Sample::new(10, 1.0, f64::NAN).is_err());
    assert!(welch(
        &Sample::new(10, 1.0, 1.0).unwrap(),
        &Sample::new(10, 1.0, 1.0).unwrap(),
        f64::NAN
    )
    .is_err());
}

fn finite_value() -> impl Strategy<Value = f64> {
    prop_oneof![-1e6..1e6_f64, 1e8..1e9_f64, Just(0.0)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any split of the data, merged in any order, gives the statistics of the whole.
    #[test]
    fn merge_is_associative(values in prop::collection::vec(finite_value(), 0..60), a in 0usize..60, b in 0usize..60) {
        let n = values.len();
        let (i, j) = (a.min(b).min(n), a.max(b).min(n));
        let whole = MeanStats::from_values(&values).unwrap();
        let p: Vec<MeanStats> = [&values[..i], &values[i..j], &values[j..]]
            .iter()
            .map(|s| MeanStats::from_values(s).unwrap())
            .collect();
        let left = (p[0] + p[1]) + p[2];
        let right = p[0] + (p[1] + p[2]);
        for s in [left, right] {
            prop_assert_eq!(s.n(), whole.n());
            let scale = whole.mean().abs().max(1.0);
            prop_assert!((s.mean() - whole.mean()).abs() <= 1e-12 * scale);
            let m2_scale = whole.m2().max(1e-9 * scale * scale);
            prop_assert!((s.m2() - whole.m2()).abs() <= 1e-8 * m2_scale, "{} vs {}", s.m2(), whole.m2());
        }
    }

    /// Arbitrary (even nonsensical) numbers never panic: they give a result,
    /// an `insufficient_data` marker or an error.
    #[test]
    fn no_panic_on_arbitrary_numbers(
        n in 0u64..5, mean in any::<f64>(), var in any::<f64>(), alpha in any::<f64>(), z in any::<f64>(), t in any::<f64>(),
    ) {
        if let Ok(s) = Sample::new(n, mean, var) {
            let _ = welch(&s, &s, alpha);
            let _ = always_valid(&s, &s, alpha, MixtureTuning::Rho(t));
        }
        let _ = MeanStats::from_moments(n, mean, var);
        let _ = CupedStats::from_moments(n, mean, var, var, mean, z);
        let _ = group_sequential_boundaries(&[t, z], alpha, Spending::OBrienFleming);
        let _ = sample_size(Baseline::Mean { mean, variance: var }, Mde::Relative(z), alpha, t);
        let _ = srm_check(&[n, 3], &[mean, var], alpha);
    }
}
