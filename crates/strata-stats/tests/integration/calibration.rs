//! Calibration by simulation, with fixed seeds.
//!
//! The default tests are sized to run in about a second at `opt-level = 1`;
//! the `#[ignore]`d `*_large` versions use 25× more replicates
//! (`cargo test -p strata-stats --release -- --ignored`).
//!
//! Normal data are simulated through their sufficient statistics, which is
//! exact: a batch of `m` draws from N(μ, σ²) has mean ~ N(μ, σ²/m) and
//! independent `M2 ~ σ²·χ²_{m−1}`. The CUPED and quantile checks draw raw
//! per-unit values.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{ChiSquared, Distribution, Exp, Normal, StandardNormal};

use strata_stats::cuped::cuped;
use strata_stats::effect::{welch, Sample};
use strata_stats::moments::{CupedStats, MeanStats};
use strata_stats::quantile::{quantile_ci, quantile_difference, QuantileSample};
use strata_stats::sequential::{
    always_valid, group_sequential_boundaries, Look, MixtureTuning, Spending,
};

const ALPHA: f64 = 0.05;
const LOOKS: usize = 20;
const BATCH: u64 = 50;

/// One arm's statistics after a batch of `m` normal draws.
fn batch(rng: &mut StdRng, m: u64, mu: f64, sigma: f64) -> MeanStats {
    let mean = mu + sigma / (m as f64).sqrt() * rng.sample::<f64, _>(StandardNormal);
    let m2 = sigma * sigma * ChiSquared::new((m - 1) as f64).unwrap().sample(rng);
    MeanStats::from_moments(m, mean, m2).unwrap()
}

/// Per-look (control, treatment) samples of one simulated experiment.
fn experiment(rng: &mut StdRng, effect: f64) -> Vec<(Sample, Sample)> {
    let (mut c, mut t) = (MeanStats::new(), MeanStats::new());
    (0..LOOKS)
        .map(|_| {
            c.merge(&batch(rng, BATCH, 10.0, 2.0));
            t.merge(&batch(rng, BATCH, 10.0 + effect, 2.0));
            (
                Sample::from_mean(&c).unwrap(),
                Sample::from_mean(&t).unwrap(),
            )
        })
        .collect()
}

#[derive(Default, Debug)]
struct Rates {
    fixed: usize,
    naive_peeking: usize,
    obf: usize,
    pocock: usize,
    always_valid: usize,
}

fn aa_rates(reps: usize, seed: u64) -> Rates {
    let mut rng = StdRng::seed_from_u64(seed);
    let fractions: Vec<f64> = (1..=LOOKS).map(|k| k as f64 / LOOKS as f64).collect();
    let obf = group_sequential_boundaries(&fractions, ALPHA, Spending::OBrienFleming).unwrap();
    let pocock = group_sequential_boundaries(&fractions, ALPHA, Spending::Pocock).unwrap();
    let planned = MixtureTuning::PlannedUnits(2 * BATCH * LOOKS as u64);
    let mut r = Rates::default();
    for _ in 0..reps {
        let looks = experiment(&mut rng, 0.0);
        let tests: Vec<_> = looks
            .iter()
            .map(|(c, t)| welch(c, t, ALPHA).unwrap().unwrap())
            .collect();
        r.fixed += usize::from(tests[LOOKS - 1].p_value < ALPHA);
        r.naive_peeking += usize::from(tests.iter().any(|w| w.p_value < ALPHA));
        // Boundaries are for normal statistics: compare the normal deviate
        // with the same p-value, as the analysis does.
        let crossed = |b: &[Look]| {
            tests
                .iter()
                .zip(b)
                .any(|(w, l)| w.z_equivalent().abs() >= l.boundary)
        };
        r.obf += usize::from(crossed(&obf));
        r.pocock += usize::from(crossed(&pocock));
        r.always_valid += usize::from(looks.iter().any(|(c, t)| {
            let cs = always_valid(c, t, ALPHA, planned).unwrap().unwrap();
            !cs.ci.contains(0.0)
        }));
    }
    r
}

fn check_aa(reps: usize, seed: u64) {
    let r = aa_rates(reps, seed);
    let n = reps as f64;
    let se = (ALPHA * (1.0 - ALPHA) / n).sqrt();
    let rate = |k: usize| k as f64 / n;
    eprintln!(
        "a/a rejection rates over {reps} replicates: fixed {:.4}, naive peeking {:.4}, o'brien-fleming {:.4}, pocock {:.4}, always valid {:.4}",
        rate(r.fixed),
        rate(r.naive_peeking),
        rate(r.obf),
        rate(r.pocock),
        rate(r.always_valid)
    );
    // (a) The fixed-horizon test rejects at ≈ α.
    assert!(
        (rate(r.fixed) - ALPHA).abs() < 3.5 * se,
        "fixed horizon {r:?}"
    );
    // (b) Peeking 20 times with the fixed test rejects far above α (≈ 0.25).
    assert!(rate(r.naive_peeking) > 3.0 * ALPHA, "naive peeking {r:?}");
    // (c) Both sequential methods keep the false-positive rate at or below α:
    // the group-sequential test is exact (≈ α, allow sampling error), the
    // confidence sequence is conservative.
    assert!(rate(r.obf) < ALPHA + 2.5 * se, "o'brien-fleming {r:?}");
    assert!(rate(r.pocock) < ALPHA + 2.5 * se, "pocock {r:?}");
    assert!(rate(r.always_valid) <= ALPHA, "always valid {r:?}");
}

#[test]
fn aa_false_positive_rates_under_20_peeks() {
    check_aa(4_000, 1);
}

#[test]
#[ignore = "large simulation: run with --release -- --ignored"]
fn aa_false_positive_rates_under_20_peeks_large() {
    check_aa(100_000, 2);
}

fn coverage(reps: usize, seed: u64) -> (f64, f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let effect = 0.3;
    let (mut fixed, mut sequence) = (0, 0);
    for _ in 0..reps {
        let looks = experiment(&mut rng, effect);
        let (c, t) = looks[LOOKS - 1];
        fixed += usize::from(welch(&c, &t, ALPHA).unwrap().unwrap().ci.contains(effect));
        let tuning = MixtureTuning::PlannedUnits(2 * BATCH * LOOKS as u64);
        sequence += usize::from(looks.iter().all(|(c, t)| {
            always_valid(c, t, ALPHA, tuning)
                .unwrap()
                .unwrap()
                .ci
                .contains(effect)
        }));
    }
    (fixed as f64 / reps as f64, sequence as f64 / reps as f64)
}

#[test]
fn confidence_intervals_cover_a_known_effect() {
    let (fixed, sequence) = coverage(4_000, 3);
    eprintln!("coverage over 4000 replicates: fixed {fixed:.4}, always valid (all 20 looks) {sequence:.4}");
    assert!(
        (fixed - 0.95).abs() <= 0.015,
        "fixed-horizon coverage {fixed}"
    );
    // The confidence sequence covers at every one of the 20 looks at once.
    assert!(
        sequence >= 0.95,
        "always-valid simultaneous coverage {sequence}"
    );
}

#[test]
#[ignore = "large simulation: run with --release -- --ignored"]
fn confidence_intervals_cover_a_known_effect_large() {
    let (fixed, sequence) = coverage(100_000, 4);
    assert!(
        (fixed - 0.95).abs() <= 0.003,
        "fixed-horizon coverage {fixed}"
    );
    assert!(
        sequence >= 0.95,
        "always-valid simultaneous coverage {sequence}"
    );
}

#[test]
fn cuped_reduces_variance_by_rho_squared() {
    let mut rng = StdRng::seed_from_u64(5);
    let rho: f64 = 0.6;
    let n = 20_000;
    let arms: Vec<CupedStats> = (0..2)
        .map(|arm| {
            let mut s = CupedStats::new();
            for _ in 0..n {
                let x: f64 = rng.sample(StandardNormal);
                let e: f64 = rng.sample(StandardNormal);
                let y = 5.0 + 0.1 * f64::from(arm) + 3.0 * (rho * x + (1.0 - rho * rho).sqrt() * e);
                s.push(y, 100.0 + 3.0 * x).unwrap();
            }
            s
        })
        .collect();
    let a = cuped(&arms).unwrap();
    let expected = rho * rho;
    // ρ̂² has standard error ≈ 2ρ(1 − ρ²)/√N ≈ 0.004 at N = 40 000.
    let got = a.variance_reduction.unwrap();
    eprintln!("cuped variance reduction {got:.4}, expected {expected:.4}");
    assert!(
        (got - expected).abs() < 0.015,
        "variance reduction {got} vs {expected}"
    );
    for v in &a.variants {
        assert!((v.variance_reduction.unwrap() - expected).abs() < 0.02);
    }
    // θ estimates the regression slope cov(x, y)/var(x) = 3ρ·3/9 = ρ.
    assert!((a.theta - rho).abs() < 0.02, "theta {}", a.theta);
}

#[test]
fn quantile_intervals_cover_under_skewed_data() {
    let mut rng = StdRng::seed_from_u64(6);
    let reps = 1_000;
    let n = 400;
    let exp = Exp::new(1.0 / 100.0).unwrap();
    let noise = Normal::new(0.0, 1.0).unwrap();
    let shift = 15.0;
    let mut per_variant = [0usize; 2];
    let mut diff = [0usize; 2];
    for _ in 0..reps {
        let c: Vec<f64> = (0..n)
            .map(|_| exp.sample(&mut rng) + noise.sample(&mut rng))
            .collect();
        let t: Vec<f64> = (0..n)
            .map(|_| exp.sample(&mut rng) + noise.sample(&mut rng) + shift)
            .collect();
        let (c, t) = (
            QuantileSample::from_values(c).unwrap(),
            QuantileSample::from_values(t).unwrap(),
        );
        for (i, q) in [0.5_f64, 0.95].into_iter().enumerate() {
            // Population quantile of Exp(mean 100) + N(0, 1) ≈ −100·ln(1 − q): the
            // N(0,1) noise moves it by well under the interval width.
            let truth = -100.0 * (1.0 - q).ln();
            let e = quantile_ci(&c, q, ALPHA).unwrap().unwrap();
            per_variant[i] += usize::from(e.ci.contains(truth));
            let d = quantile_difference(&c, &t, q, ALPHA).unwrap().unwrap();
            diff[i] += usize::from(d.ci.contains(shift));
        }
    }
    for i in 0..2 {
        let pv = per_variant[i] as f64 / reps as f64;
        let dc = diff[i] as f64 / reps as f64;
        eprintln!("quantile {i}: per-variant coverage {pv:.3}, difference coverage {dc:.3}");
        // Order-statistic intervals have coverage ≥ 1 − α by construction.
        assert!(pv >= 0.93, "per-variant coverage {pv} (quantile {i})");
        assert!(
            (dc - 0.95).abs() <= 0.025,
            "difference coverage {dc} (quantile {i})"
        );
    }
}

/// Values that come several per unit and move together within a unit (a
/// slow device loads every page slowly): an A/A comparison of a quantile
/// that treats units as the draws keeps its false-positive rate near α,
/// where treating each value as independent would not (the design effect
/// narrows the interval; measured here too, as the reason).
#[test]
fn clustered_quantile_differences_keep_their_level() {
    let mut rng = StdRng::seed_from_u64(17);
    let reps = 400;
    let level = rand_distr::LogNormal::new(0.0, 0.5).unwrap();
    let noise = rand_distr::LogNormal::new(0.0, 0.3).unwrap();
    let draw = |rng: &mut StdRng| {
        let mut values = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..400 {
            let l: f64 = level.sample(rng);
            let m = rng.random_range(1..9usize);
            values.extend((0..m).map(|_| 1000.0 * l * noise.sample(rng)));
            sizes.push(m);
        }
        (values, sizes)
    };
    let (mut clustered, mut naive) = (0usize, 0usize);
    for _ in 0..reps {
        let (cv, cs) = draw(&mut rng);
        let (tv, ts) = draw(&mut rng);
        let d = quantile_difference(
            &QuantileSample::from_units(cv.clone(), &cs).unwrap(),
            &QuantileSample::from_units(tv.clone(), &ts).unwrap(),
            0.95,
            ALPHA,
        )
        .unwrap()
        .unwrap();
        clustered += usize::from(d.p_value < ALPHA);
        let d = quantile_difference(
            &QuantileSample::from_values(cv).unwrap(),
            &QuantileSample::from_values(tv).unwrap(),
            0.95,
            ALPHA,
        )
        .unwrap()
        .unwrap();
        naive += usize::from(d.p_value < ALPHA);
    }
    let (fc, fn_) = (clustered as f64 / reps as f64, naive as f64 / reps as f64);
    eprintln!("p95 A/A false positives: by unit {fc:.3}, by value {fn_:.3}");
    assert!(fc <= 0.08, "false-positive rate by unit {fc}");
    assert!(
        fn_ > 0.10,
        "the correlation is strong enough to matter: {fn_}"
    );
}

/// How often an A/A experiment shows a metric of each role significant at
/// some look, analysed by [`analyze`] as the scheduled looks do: one primary,
/// three secondary and one guardrail metric, `WHOLE_LOOKS` looks.
#[derive(Default, Debug)]
struct RoleRates {
    primary: usize,
    secondary: usize,
    guardrail: usize,
}

const WHOLE_LOOKS: usize = 10;

fn whole_experiment_aa(reps: usize, seed: u64, method: Option<&str>) -> RoleRates {
    use strata_stats::analysis::{
        analyze, AnalysisConfig, MetricData, MetricInput, MetricRole, SequentialConfig,
        VariantInput,
    };
    let roles = [
        MetricRole::Primary,
        MetricRole::Secondary,
        MetricRole::Secondary,
        MetricRole::Secondary,
        MetricRole::Guardrail,
    ];
    let planned = BATCH * WHOLE_LOOKS as u64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut r = RoleRates::default();
    for _ in 0..reps {
        let mut arms = vec![[MeanStats::new(), MeanStats::new()]; roles.len()];
        let mut seen = [false; 3];
        for look in 0..WHOLE_LOOKS {
            for arm in &mut arms {
                arm[0].merge(&batch(&mut rng, BATCH, 10.0, 2.0));
                arm[1].merge(&batch(&mut rng, BATCH, 10.0, 2.0));
            }
            let config = AnalysisConfig {
                alpha: ALPHA,
                planned_n_per_variant: Some(planned),
                sequential: method.map(|m| match m {
                    "group_sequential" => SequentialConfig::GroupSequential {
                        spending: Spending::OBrienFleming,
                        previous_fractions: (1..=look)
                            .map(|k| k as f64 / WHOLE_LOOKS as f64)
                            .collect(),
                    },
                    _ => SequentialConfig::AlwaysValid {
                        tuning: MixtureTuning::PlannedUnits(2 * planned),
                    },
                }),
                ..AnalysisConfig::default()
            };
            let units = arms[0][0].n();
            let variants: Vec<VariantInput> = ["control", "treatment"]
                .iter()
                .map(|name| VariantInput {
                    name: (*name).into(),
                    weight: 1.0,
                    units,
                })
                .collect();
            let metrics: Vec<MetricInput> = roles
                .iter()
                .zip(&arms)
                .enumerate()
                .map(|(i, (role, arm))| MetricInput {
                    name: format!("m{i}"),
                    role: *role,
                    data: MetricData::Mean(arm.to_vec()),
                    segments: vec![],
                })
                .collect();
            let report = analyze(&config, &variants, &metrics).unwrap();
            for (m, role) in report.metrics.iter().zip(roles) {
                let slot = match role {
                    MetricRole::Primary => 0,
                    MetricRole::Secondary => 1,
                    MetricRole::Guardrail => 2,
                };
                seen[slot] |= m.comparisons[0].significant;
            }
        }
        r.primary += usize::from(seen[0]);
        r.secondary += usize::from(seen[1]);
        r.guardrail += usize::from(seen[2]);
    }
    r
}

/// Every metric of a sequentially analysed experiment keeps its error rate
/// over all looks — secondary metrics as a family, the guardrail metric and
/// the primary each at α — where reading fixed-horizon p-values at every
/// look does not.
#[test]
fn aa_every_metric_keeps_its_level_over_repeated_looks() {
    let reps = 600;
    let n = reps as f64;
    let se = (ALPHA * (1.0 - ALPHA) / n).sqrt();
    let rate = |k: usize| k as f64 / n;
    let fixed = whole_experiment_aa(reps, 11, None);
    let gs = whole_experiment_aa(reps, 12, Some("group_sequential"));
    let av = whole_experiment_aa(reps, 13, Some("always_valid"));
    eprintln!("a/a, any look of {WHOLE_LOOKS}: fixed {fixed:?}, group-sequential {gs:?}, always valid {av:?} (of {reps})");
    for r in [&gs, &av] {
        for k in [r.primary, r.secondary, r.guardrail] {
            assert!(rate(k) < ALPHA + 2.5 * se, "{r:?}");
        }
    }
    // Fixed-horizon p-values read at every look cross α far more often.
    assert!(rate(fixed.guardrail) > 2.5 * ALPHA, "{fixed:?}");
    assert!(rate(fixed.secondary) > 1.5 * ALPHA, "{fixed:?}");
}
