//! Calibration of the guardrail monitor by simulation, with fixed seeds.
//!
//! Every simulated experiment is checked at [`LOOKS`] looks, [`BATCH`] units
//! per arm arriving between looks, with α = [`ALPHA`] (the default error
//! budget of one guardrail in one treatment) and ρ tuned to the planned
//! [`PLANNED`] units. The metric is normal with control mean [`MU_C`] and
//! standard deviation [`SIGMA`] in both arms; the thresholds are 0.2 absolute
//! or 2 % relative, the same size (a tenth of a standard deviation).
//!
//! Data are simulated through their sufficient statistics, which is exact
//! and cheap: a batch of `m` draws from N(μ, σ²) has mean ~ N(μ, σ²/m) and an
//! independent `M2 ~ σ²·χ²_{m−1}`, merged into the running statistics as the
//! analysis engine merges partitions. The variance is therefore estimated,
//! as in production, not known.
//!
//! Sized to run in a few seconds at `opt-level = 1`; the `#[ignore]`d
//! `*_large` version uses 10× more experiments
//! (`cargo test -p strata-stats --release -- --ignored`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, ChiSquared, Distribution, StandardNormal};

use strata_stats::dist::norm_isf;
use strata_stats::effect::Sample;
use strata_stats::guardrail::{
    guardrail_test, split_alpha, Direction, GuardrailDecision, Threshold,
};
use strata_stats::moments::MeanStats;
use strata_stats::sequential::MixtureTuning;

/// Level of each comparison: the default budget, one guardrail, one treatment.
const ALPHA: f64 = 0.01;
/// Checks per experiment.
const LOOKS: usize = 100;
/// Units per arm added between checks.
const BATCH: u64 = 50;
/// Planned total units (both arms) the mixture is tuned to: the last look.
const PLANNED: u64 = 2 * BATCH * LOOKS as u64;
/// Simulated experiments per scenario.
const REPS: usize = 10_000;
/// Control mean of the normal metric.
const MU_C: f64 = 10.0;
/// Per-unit standard deviation of the normal metric, both arms.
const SIGMA: f64 = 2.0;
/// Absolute threshold: a tenth of a standard deviation.
const ABS_THRESHOLD: f64 = 0.2;
/// Relative threshold of the same size: 2 % of the control mean.
const REL_THRESHOLD: f64 = ABS_THRESHOLD / MU_C;
/// Monte Carlo tolerance on a false-kill rate: three binomial standard errors
/// at α, `3·√(α(1 − α)/reps)`.
fn mc_tolerance(reps: usize) -> f64 {
    3.0 * (ALPHA * (1.0 - ALPHA) / reps as f64).sqrt()
}
/// Required power against a true harm of twice the threshold by the last look.
const MIN_POWER: f64 = 0.90;

/// One arm's statistics after a batch of `m` normal draws.
fn normal_batch(rng: &mut StdRng, m: u64, mu: f64, sigma: f64) -> MeanStats {
    let mean = mu + sigma / (m as f64).sqrt() * rng.sample::<f64, _>(StandardNormal);
    let m2 = sigma * sigma * ChiSquared::new((m - 1) as f64).unwrap().sample(rng);
    MeanStats::from_moments(m, mean, m2).unwrap()
}

/// One arm's statistics after a batch of `m` Bernoulli(p) draws: `k` ones
/// give mean `k/m` and `M2 = k(1 − k/m)`.
fn bernoulli_batch(rng: &mut StdRng, m: u64, p: f64) -> MeanStats {
    let k = Binomial::new(m, p).unwrap().sample(rng) as f64;
    let mf = m as f64;
    MeanStats::from_moments(m, k / mf, k * (1.0 - k / mf)).unwrap()
}

/// The metric's distribution in each arm.
#[derive(Debug, Clone, Copy)]
enum Metric {
    /// Normal with these means and common standard deviation [`SIGMA`].
    Normal { mu_c: f64, mu_t: f64 },
    /// 0/1 with these rates.
    Bernoulli { p_c: f64, p_t: f64 },
}

impl Metric {
    /// The treatment distribution whose harm is exactly `harm` (in the
    /// threshold's units) in `direction`, against a normal control at [`MU_C`].
    fn normal_with_harm(threshold: Threshold, direction: Direction, harm: f64) -> Self {
        let s = direction.sign();
        let mu_t = match threshold {
            Threshold::Absolute(_) => MU_C + s * harm,
            Threshold::Relative(_) => MU_C * (1.0 + s * harm),
        };
        Metric::Normal { mu_c: MU_C, mu_t }
    }

    fn batches(self, rng: &mut StdRng) -> (MeanStats, MeanStats) {
        match self {
            Metric::Normal { mu_c, mu_t } => (
                normal_batch(rng, BATCH, mu_c, SIGMA),
                normal_batch(rng, BATCH, mu_t, SIGMA),
            ),
            Metric::Bernoulli { p_c, p_t } => (
                bernoulli_batch(rng, BATCH, p_c),
                bernoulli_batch(rng, BATCH, p_t),
            ),
        }
    }
}

/// What the simulations of one scenario found.
#[derive(Debug, Default)]
struct Outcome {
    reps: usize,
    /// Experiments the monitor flagged at some look.
    breached: usize,
    /// Experiments a fixed-horizon one-sided z-test at α flagged at some look.
    naive: usize,
    /// Experiments with an `insufficient` check at the last look.
    insufficient_at_end: usize,
    /// Look (1-based) of each experiment's first breach.
    first_breach: Vec<usize>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.breached as f64 / self.reps as f64
    }
    fn naive_rate(&self) -> f64 {
        self.naive as f64 / self.reps as f64
    }
    /// The look by which a fraction `q` of all experiments had breached.
    fn look_reaching(&self, q: f64) -> Option<usize> {
        let mut looks = self.first_breach.clone();
        looks.sort_unstable();
        let needed = (q * self.reps as f64).ceil() as usize;
        (needed >= 1 && needed <= looks.len()).then(|| looks[needed - 1])
    }
}

/// Monitors `reps` simulated experiments at every look.
fn simulate(
    metric: Metric,
    direction: Direction,
    threshold: Threshold,
    reps: usize,
    seed: u64,
) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let tuning = MixtureTuning::PlannedUnits(PLANNED);
    let naive_critical = norm_isf(ALPHA);
    let mut out = Outcome {
        reps,
        ..Outcome::default()
    };
    for _ in 0..reps {
        let (mut c, mut t) = (MeanStats::new(), MeanStats::new());
        let (mut breached, mut naive) = (false, false);
        for look in 1..=LOOKS {
            let (bc, bt) = metric.batches(&mut rng);
            c.merge(&bc);
            t.merge(&bt);
            let (cs, ts) = (
                Sample::from_mean(&c).unwrap(),
                Sample::from_mean(&t).unwrap(),
            );
            let r = guardrail_test(&cs, &ts, direction, threshold, ALPHA, tuning).unwrap();
            if r.decision == GuardrailDecision::Breach && !breached {
                breached = true;
                out.first_breach.push(look);
            }
            // The naive monitor: the same statistic against the fixed-horizon
            // one-sided critical value z_{1−α}, at every look.
            naive |= r.z.is_some_and(|z| z > naive_critical);
            if look == LOOKS && r.decision == GuardrailDecision::Insufficient {
                out.insufficient_at_end += 1;
            }
        }
        out.breached += usize::from(breached);
        out.naive += usize::from(naive);
    }
    out
}

/// All four direction × threshold-kind combinations.
fn designs() -> [(Direction, Threshold); 4] {
    [
        (Direction::IncreaseIsBad, Threshold::Absolute(ABS_THRESHOLD)),
        (Direction::DecreaseIsBad, Threshold::Absolute(ABS_THRESHOLD)),
        (Direction::IncreaseIsBad, Threshold::Relative(REL_THRESHOLD)),
        (Direction::DecreaseIsBad, Threshold::Relative(REL_THRESHOLD)),
    ]
}

/// False-kill rates with the true harm at the threshold (the least favourable
/// null) and at zero, for the designs whose threshold is `absolute` or not.
fn check_false_kills(absolute: bool, reps: usize, seed: u64) {
    let tol = mc_tolerance(reps);
    for (i, (direction, threshold)) in designs()
        .into_iter()
        .filter(|(_, t)| matches!(t, Threshold::Absolute(_)) == absolute)
        .enumerate()
    {
        for (j, harm) in [threshold.value(), 0.0].into_iter().enumerate() {
            let metric = Metric::normal_with_harm(threshold, direction, harm);
            let o = simulate(
                metric,
                direction,
                threshold,
                reps,
                seed + 10 * i as u64 + j as u64,
            );
            eprintln!(
                "{direction:?} {threshold:?}, true harm {harm}: false kills {}/{reps} = {:.4} \
                 (α = {ALPHA}, tolerance {tol:.4}); naive fixed-horizon test at every look {:.4}",
                o.breached,
                o.rate(),
                o.naive_rate()
            );
            assert_eq!(o.insufficient_at_end, 0);
            assert!(
                o.rate() <= ALPHA + tol,
                "{direction:?} {threshold:?} harm {harm}: false-kill rate {} > α + {tol}",
                o.rate()
            );
            if harm > 0.0 {
                // The simulation can see a broken monitor: the naive one
                // exceeds α by far more than the tolerance.
                assert!(
                    o.naive_rate() > ALPHA + 3.0 * tol,
                    "naive peeking only {}: the simulation lacks power",
                    o.naive_rate()
                );
            }
        }
    }
}

#[test]
fn absolute_threshold_false_kill_rate_is_at_most_alpha_over_100_looks() {
    check_false_kills(true, REPS, 100);
}

#[test]
fn relative_threshold_false_kill_rate_is_at_most_alpha_over_100_looks() {
    check_false_kills(false, REPS, 200);
}

#[test]
#[ignore = "large simulation: run with --release -- --ignored"]
fn false_kill_rates_over_100_looks_large() {
    check_false_kills(true, 10 * REPS, 300);
    check_false_kills(false, 10 * REPS, 400);
}

#[test]
fn twice_the_threshold_is_detected_in_90_percent_within_100_looks() {
    for (i, (direction, threshold)) in designs().into_iter().enumerate() {
        let harm = 2.0 * threshold.value();
        let metric = Metric::normal_with_harm(threshold, direction, harm);
        let o = simulate(metric, direction, threshold, REPS, 500 + i as u64);
        let (median, p90) = (o.look_reaching(0.5), o.look_reaching(MIN_POWER));
        eprintln!(
            "{direction:?} {threshold:?}, true harm {harm}: detected {:.4} by look {LOOKS} \
             ({PLANNED} units); half by look {median:?}, 90 % by look {p90:?}",
            o.rate()
        );
        assert!(
            o.rate() >= MIN_POWER,
            "{direction:?} {threshold:?}: power {} < {MIN_POWER}",
            o.rate()
        );
    }
}

/// An error-rate guardrail on 0/1 data: 2 % errors in control, threshold
/// +0.5 points absolute or +25 % relative, true harm exactly at the threshold.
/// Early looks have a handful of errors per arm (often `insufficient`), and
/// the mean of rare events is skewed towards harm; the monitor must stay
/// within its budget all the same.
#[test]
fn error_rate_guardrail_on_binary_data_stays_within_alpha() {
    let tol = mc_tolerance(REPS);
    let p_c = 0.02;
    for (k, (threshold, p_t)) in [
        (Threshold::Absolute(0.005), 0.025),
        (Threshold::Relative(0.25), 0.025),
    ]
    .into_iter()
    .enumerate()
    {
        let metric = Metric::Bernoulli { p_c, p_t };
        let o = simulate(
            metric,
            Direction::IncreaseIsBad,
            threshold,
            REPS,
            600 + k as u64,
        );
        eprintln!(
            "error rate {p_c} → {p_t}, {threshold:?}: false kills {:.4} (tolerance {tol:.4}); naive {:.4}",
            o.rate(),
            o.naive_rate()
        );
        assert!(o.rate() <= ALPHA + tol, "{threshold:?}: {}", o.rate());
    }
}

#[test]
fn budget_split_keeps_the_experiment_false_kill_rate_within_the_budget() {
    // Two guardrails in one treatment share a 2 % budget: +0.2 absolute on
    // the normal metric and +25 % relative on an independent 10 % error rate,
    // both with the true harm at the threshold. A breach of either kills.
    let budget = 0.02;
    let alpha = split_alpha(budget, 2, 1).unwrap();
    assert_eq!(alpha, 0.01);
    let reps = REPS;
    let mut rng = StdRng::seed_from_u64(700);
    let tuning = MixtureTuning::PlannedUnits(PLANNED);
    let normal = Metric::normal_with_harm(
        Threshold::Absolute(ABS_THRESHOLD),
        Direction::IncreaseIsBad,
        ABS_THRESHOLD,
    );
    let errors = Metric::Bernoulli {
        p_c: 0.1,
        p_t: 0.1 * (1.0 + 0.25),
    };
    let guards = [
        (normal, Threshold::Absolute(ABS_THRESHOLD)),
        (errors, Threshold::Relative(0.25)),
    ];
    let mut kills = 0;
    for _ in 0..reps {
        let mut stats = [(MeanStats::new(), MeanStats::new()); 2];
        let mut killed = false;
        for _ in 0..LOOKS {
            for ((metric, threshold), (c, t)) in guards.iter().zip(stats.iter_mut()) {
                let (bc, bt) = metric.batches(&mut rng);
                c.merge(&bc);
                t.merge(&bt);
                let r = guardrail_test(
                    &Sample::from_mean(c).unwrap(),
                    &Sample::from_mean(t).unwrap(),
                    Direction::IncreaseIsBad,
                    *threshold,
                    alpha,
                    tuning,
                )
                .unwrap();
                killed |= r.is_breach();
            }
            if killed {
                break;
            }
        }
        kills += usize::from(killed);
    }
    let rate = kills as f64 / reps as f64;
    let tol = 3.0 * (budget * (1.0 - budget) / reps as f64).sqrt();
    eprintln!("two guardrails at α = {alpha} each: experiment false-kill rate {rate:.4} (budget {budget}, tolerance {tol:.4})");
    assert!(
        rate <= budget + tol,
        "false-kill rate {rate} > {budget} + {tol}"
    );
}
