//! Guardrail monitoring: an always-valid one-sided test of harm beyond a threshold.
//!
//! A guardrail monitor checks, every few minutes for the whole life of an
//! experiment, whether a treatment is worse than control on a guardrail metric
//! (error rate, latency, conversion) by more than a threshold, and the platform
//! kills the experiment when it is. Such a monitor looks thousands of times, so
//! a fixed-horizon test would kill healthy experiments far more often than its
//! level says. This module gives the decision of one check, valid under
//! continuous monitoring: over the whole life of the experiment, however many
//! checks run and whenever they run, the probability that a comparison whose
//! true harm is at most its threshold is ever declared a breach is at most its
//! `alpha`.
//!
//! # Hypothesis
//! The *harm* is the treatment − control difference in the metric's bad
//! direction ([`Direction`]):
//!
//! * absolute threshold `τ` (units of the metric):
//!   `h = s·(μ_t − μ_c)`,
//! * relative threshold `τ` (fraction of the control mean, 0.05 = 5 % worse):
//!   `h = s·(μ_t/μ_c − 1)`,
//!
//! with `s = +1` when an increase is bad and `s = −1` when a decrease is bad.
//! The test is of `H₀: h ≤ τ` against `H₁: h > τ`; `h = τ` is the least
//! favourable point of the null.
//!
//! # One-sided normal-mixture boundary
//! Let `S_t` be the sum, over `t = n_c + n_t` units, of the centred contrast
//! in units of its per-unit standard deviation, so that under `h = τ` it is,
//! by the central limit theorem, a standard random walk. For every `λ`,
//! `exp(λS_t − λ²t/2)` is then a martingale with initial value 1 (exactly for
//! normal increments, asymptotically otherwise), and so is
//! any mixture of them over `λ`. Robbins (1970) mixes over a normal
//! distribution of `λ`, which gives the crate's two-sided always-valid
//! confidence sequence ([`crate::sequential::always_valid`]). Only large
//! positive `S_t` is evidence of harm, so here the mixing distribution is the
//! *half-normal* `2φ(λ/ρ)/ρ` on `λ ≥ 0`, and completing the square gives the
//! closed form
//!
//! ```text
//! M_t = ∫₀^∞ exp(λS_t − λ²t/2)·(2/ρ)·φ(λ/ρ) dλ
//!     = 2/√(V + 1) · exp(z²·V/(2(V + 1))) · Φ(z·√(V/(V + 1))),
//! z = S_t/√t = (ĥ − h)/se,    V = tρ²
//! ```
//!
//! (the one-sided normal mixture of Howard, Ramdas, McAuliffe & Sekhon 2021,
//! with their `ρ` our `1/ρ²`; `OneSidedNormalMixture` in their `confseq`
//! library, whose reference value a unit test reproduces). `M_t` is
//! non-negative with `M_0 = 1`, so Ville's inequality gives
//! `P(∃t: M_t ≥ 1/α) ≤ α`. `M_t` is strictly increasing in `z` (the
//! derivative of its logarithm is `V z/(V+1) + √(V/(V+1))·φ(w)/Φ(w)` with
//! `w = z√(V/(V+1))`, positive because `φ(w)/Φ(w) > −w`), so `M_t ≥ 1/α` is
//! exactly `z ≥ z*`, where the boundary `z* = z*(V, α) > 0` is the unique
//! root of
//!
//! ```text
//! z²·V/(2(V + 1)) + ln Φ(z·√(V/(V + 1))) = ln(√(V + 1)/(2α)).
//! ```
//!
//! It has no closed form; it is found by safeguarded Newton iteration between
//! two closed-form brackets: since `½ ≤ Φ ≤ 1` for `z ≥ 0`, `z*` lies between
//! the two-sided boundaries at levels `2α` and `α`,
//! `√(2(V+1)/V · ln(√(V+1)/(2α)))` and `√(2(V+1)/V · ln(√(V+1)/α))`. The
//! one-sided test is therefore never looser than the crate's two-sided
//! sequence at the same `α` and, once `z*` is a few units, practically equal
//! to it at `2α`.
//!
//! The always-valid lower confidence bound of the harm is `L_t = ĥ_t − z*·se_t`
//! and `P(∃t: L_t > h) ≤ α` for the true harm `h`. The check reports a
//! **breach** when `L_t > τ`. If `h ≤ τ`, a breach means `L_t > τ ≥ h`, an
//! event of probability at most `α` over the whole life of the experiment.
//!
//! As with the crate's two-sided sequence (Waudby-Smith, Arbour, Sinha,
//! Kennedy & Ramdas 2024), the plug-in standard error makes the guarantee
//! asymptotic: exact for normal data with known variances, and close to exact
//! once the variance estimates have settled. The boundary is very wide while
//! `V` is small (`z* ≈ 9` at a hundredth of the planned units for `α = 0.01`),
//! which protects the earliest, noisiest looks.
//!
//! # Relative thresholds
//! For `h = s·(μ_t/μ_c − 1)` the bound uses Fieller's (1954) construction: for
//! a candidate ratio `r`, the contrast `ȳ_t − r·ȳ_c` has mean `μ_t − r·μ_c`
//! and, exactly, variance `v_t + r²·v_c` (`v = s²/n`): the numerator of the
//! delta-method variance of the ratio, evaluated at `r` instead of at the
//! estimate. Applying
//! the one-sided boundary to the contrast at every `r` and solving
//! `s·(ȳ_t − r·ȳ_c) = z*·√(v_t + r²v_c)` for `r` gives the bound on the ratio
//! in the bad direction,
//!
//! ```text
//! A = ȳ_c² − z*²·v_c,    r_± = (ȳ_t·ȳ_c ± z*·√(ȳ_t²·v_c + A·v_t)) / A,
//! L = r₋ − 1 (increase is bad),    L = 1 − r₊ (decrease is bad),
//! ```
//!
//! so that a breach is exactly `z > z*` for the contrast at the threshold's
//! ratio `r₀ = 1 + s·τ`. The set of ratios not rejected is a half-line only
//! when `ȳ_c > z*·√v_c`, that is when the control mean is distinguishable
//! from zero at the same level; otherwise the check is `insufficient` with
//! [`InsufficientData::ZeroBaseline`]. The plug-in delta method
//! ([`crate::effect::relative_lift`]) is not used for the decision: its
//! standard error vanishes when the treatment has a zero mean and variance (no
//! conversions yet in five units), which would declare a 100 % drop certain,
//! and it is evaluated at the estimate, which is correlated with the
//! direction being tested. The two agree once the samples are large; the
//! result reports the delta-method standard error for display.
//!
//! # Tuning ρ
//! `ρ` sets the sample size at which the boundary is tightest. With
//! [`MixtureTuning::PlannedUnits`] (`t*`, both arms together, the default
//! choice: the experiment's planned size) it is [`optimal_rho`] at level
//! `2α`, `ρ² = (−2 ln 2α + ln(1 − 2 ln 2α))/t*`: where `Φ ≈ 1` the one-sided
//! boundary at `α` is the two-sided one at `2α`, whose width at `t*` that
//! closed form minimises (within 1 % of the numerical optimum of `z*`; unit
//! test). The level is capped at 0.5 for the unusual `α > 0.25`. `ρ` must be
//! fixed before the experiment starts and kept for its whole life: changing it
//! after seeing data voids the guarantee.
//!
//! # Error budget
//! A false kill is a breach of any guardrail in any treatment whose true harm
//! is within its threshold. [`split_alpha`] divides the experiment's budget by
//! Bonferroni over the `guardrails × treatments` comparisons; the union bound
//! then limits the whole-life false-kill probability by the budget, whatever
//! the dependence between the metrics (see [`split_alpha`]).
//!
//! References: Robbins (1970), "Statistical methods related to the law of the
//! iterated logarithm", Ann. Math. Statist. 41:1397; Ville (1939), "Étude
//! critique de la notion de collectif"; Howard, Ramdas, McAuliffe & Sekhon
//! (2021), "Time-uniform, nonparametric, nonasymptotic confidence sequences",
//! Ann. Statist. 49:1055; Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas
//! (2024), "Time-uniform central limit theory and asymptotic confidence
//! sequences", Ann. Statist.; Fieller (1954), "Some problems in interval
//! estimation", JRSS B 16:175.

use serde::{Deserialize, Serialize};

use crate::dist::{norm_pdf, norm_sf};
use crate::effect::{InsufficientData, Sample};
use crate::error::{check_alpha, finite, Error, Result};
use crate::sequential::{check_rho, optimal_rho, MixtureTuning};

/// Cap on the level `2α` at which [`optimal_rho`] tunes a one-sided test.
const MAX_TUNING_LEVEL: f64 = 0.5;

/// Which direction of change in the metric harms users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// An increase is harm (errors, latency).
    IncreaseIsBad,
    /// A decrease is harm (conversion, revenue).
    DecreaseIsBad,
}

impl Direction {
    /// `+1` when an increase is bad, `−1` when a decrease is.
    pub fn sign(self) -> f64 {
        match self {
            Direction::IncreaseIsBad => 1.0,
            Direction::DecreaseIsBad => -1.0,
        }
    }
}

/// How much harm a guardrail tolerates before a breach.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Threshold {
    /// A difference in means, in the metric's units (≥ 0).
    Absolute(f64),
    /// A fraction of the control mean (≥ 0; 0.05 = 5 % worse). Below 1 when a
    /// decrease is bad: a positive metric cannot fall by 100 % or more.
    Relative(f64),
}

impl Threshold {
    /// The threshold's value, in the units of the harm.
    pub fn value(self) -> f64 {
        match self {
            Threshold::Absolute(v) | Threshold::Relative(v) => v,
        }
    }

    fn validate(self, direction: Direction) -> Result<f64> {
        let v = finite("threshold", self.value())?;
        if !(v >= 0.0) {
            return Err(Error::OutOfRange {
                field: "threshold",
                expected: "non-negative",
                value: v,
            });
        }
        if matches!(self, Threshold::Relative(_))
            && direction == Direction::DecreaseIsBad
            && v >= 1.0
        {
            return Err(Error::OutOfRange {
                field: "threshold",
                expected: "below 1 for a relative decrease",
                value: v,
            });
        }
        Ok(v)
    }
}

/// The decision of one guardrail check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GuardrailDecision {
    /// The always-valid lower bound of the harm exceeds the threshold.
    Breach,
    /// The data do not show harm beyond the threshold (yet).
    NoBreach,
    /// The data cannot support the test; the reason is in `insufficient_data`.
    Insufficient,
}

/// One guardrail check of one treatment against control.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GuardrailResult {
    /// The direction of harm.
    pub direction: Direction,
    /// The threshold tested against.
    pub threshold: Threshold,
    /// The level of this comparison (see [`split_alpha`]).
    pub alpha: f64,
    /// The mixture parameter used.
    pub rho: f64,
    /// Estimated harm in the threshold's units: `s·(ȳ_t − ȳ_c)` or
    /// `s·(ȳ_t/ȳ_c − 1)`. `None` when a variant has no units or, for a
    /// relative threshold, the control mean is not positive.
    pub harm: Option<f64>,
    /// Standard error of the harm: Welch's, or the delta method's for a
    /// relative threshold (for display; the bound uses Fieller's form).
    pub std_error: Option<f64>,
    /// Standardised excess of the harm over the threshold: `(ĥ − τ)/se`, or
    /// `s·(ȳ_t − r₀ȳ_c)/√(v_t + r₀²v_c)` with `r₀ = 1 + s·τ` for a relative
    /// threshold. A breach is `z > boundary`.
    pub z: Option<f64>,
    /// The one-sided mixture boundary `z*` at this sample size.
    pub boundary: Option<f64>,
    /// Always-valid lower confidence bound of the harm (level `1 − α`).
    pub lower_bound: Option<f64>,
    /// The decision.
    pub decision: GuardrailDecision,
    /// Why there is no decision; set exactly when the decision is `insufficient`.
    pub insufficient_data: Option<InsufficientData>,
}

impl GuardrailResult {
    /// Whether the check found a breach.
    pub fn is_breach(&self) -> bool {
        self.decision == GuardrailDecision::Breach
    }
}

/// The per-comparison level: Bonferroni, `budget / (guardrails × treatments)`.
///
/// Each comparison's test keeps its own false-breach probability over the
/// experiment's *whole life* at most its level (Ville's inequality, see the
/// module documentation), however many checks run. A false kill is the union
/// of the comparisons' false breaches, so by the union bound its probability
/// is at most the sum of their levels, `budget`. No independence is needed:
/// guardrails measured on the same units, and treatments sharing a control,
/// are covered as they are. Comparisons whose harm truly exceeds the threshold
/// only add correct kills.
///
/// Errors when `budget` is not in (0, 1) or either count is zero.
pub fn split_alpha(budget: f64, guardrails: usize, treatments: usize) -> Result<f64> {
    check_alpha("budget", budget)?;
    for (field, count) in [("guardrails", guardrails), ("treatments", treatments)] {
        if count == 0 {
            return Err(Error::OutOfRange {
                field,
                expected: "at least 1",
                value: 0.0,
            });
        }
    }
    Ok(budget / (guardrails as f64 * treatments as f64))
}

/// The mixture parameter ρ of a one-sided test at level `alpha`.
///
/// [`MixtureTuning::PlannedUnits`] gives [`optimal_rho`] at level `2α`
/// (capped at 0.5), tightest near the planned size; [`MixtureTuning::Rho`] is
/// used as given and must be positive.
pub fn one_sided_rho(tuning: MixtureTuning, alpha: f64) -> Result<f64> {
    check_alpha("alpha", alpha)?;
    match tuning {
        MixtureTuning::PlannedUnits(n) => optimal_rho(n, (2.0 * alpha).min(MAX_TUNING_LEVEL)),
        MixtureTuning::Rho(r) => check_rho(r),
    }
}

/// The one-sided normal-mixture boundary `z*` after `units` units (both arms
/// together) with mixture parameter `rho` at level `alpha`: the always-valid
/// test rejects when the z-statistic exceeds it.
///
/// Infinite with no units (or when `units·ρ²` underflows): no evidence yet.
pub fn one_sided_boundary(units: u64, rho: f64, alpha: f64) -> Result<f64> {
    check_alpha("alpha", alpha)?;
    let rho = check_rho(rho)?;
    mixture_boundary(units as f64 * rho * rho, alpha)
}

/// `z*(V, α)`, the root of `ln M(z) = ln(1/α)` with `M` the half-normal
/// mixture martingale written in `z` and `V = tρ²`.
fn mixture_boundary(v: f64, alpha: f64) -> Result<f64> {
    if !(v > 0.0) {
        return Ok(f64::INFINITY);
    }
    let a = v / (v + 1.0);
    let sa = a.sqrt();
    let half_ln = 0.5 * v.ln_1p();
    // f(z) = ln M(z) − ln(1/α); increasing in z.
    let offset = std::f64::consts::LN_2 - half_ln + alpha.ln();
    let f = |z: f64| {
        let w = sa * z;
        let upper = norm_sf(w);
        let value = 0.5 * a * z * z + (-upper).ln_1p() + offset;
        let slope = a * z + sa * norm_pdf(w) / (1.0 - upper);
        (value, slope)
    };
    // Brackets: the two-sided boundaries at 2α (where Φ = 1 would put the
    // root) and at α (where Φ = ½ would).
    let two_sided = |level: f64| (2.0 / a * (half_ln - level.ln())).max(0.0).sqrt();
    let (lo, hi) = (two_sided(2.0 * alpha), two_sided(alpha));
    if !hi.is_finite() {
        return Ok(f64::INFINITY);
    }
    let step = |z: f64| {
        let (value, slope) = f(z);
        (value < 0.0, z - value / slope)
    };
    crate::dist::safeguarded_newton(step, (lo, hi), lo, "guardrail boundary search")
}

fn check_sample(mean: &'static str, variance: &'static str, s: &Sample) -> Result<()> {
    finite(mean, s.mean)?;
    finite(variance, s.variance)?;
    if s.variance < 0.0 {
        return Err(Error::OutOfRange {
            field: variance,
            expected: "non-negative",
            value: s.variance,
        });
    }
    Ok(())
}

/// The statistics of a check that had enough data.
struct Evaluated {
    std_error: f64,
    z: f64,
    boundary: f64,
    lower_bound: f64,
}

/// One check of a guardrail: is `treatment` worse than `control` by more than
/// `threshold` in `direction`, with always-valid error probability `alpha`?
///
/// `control` and `treatment` are the current cumulative statistics of the
/// metric (`n`, mean, sample variance; [`Sample::from_mean`] or
/// [`Sample::from_ratio`]). Call it at every check with the same `alpha` and
/// `tuning` for the whole experiment; `alpha` is this comparison's share of
/// the error budget ([`split_alpha`]). Kill on the first
/// [`GuardrailDecision::Breach`].
///
/// Returns `insufficient` (not an error) when a variant has fewer than two
/// units, both variances are zero, or, for a relative threshold, the control
/// mean is not distinguishable from zero (`ȳ_c ≤ z*·√(s_c²/n_c)`). Errors on
/// invalid parameters: `alpha` outside (0, 1), a negative or non-finite
/// threshold, a relative decrease threshold of 1 or more, a non-positive ρ,
/// non-finite statistics.
pub fn guardrail_test(
    control: &Sample,
    treatment: &Sample,
    direction: Direction,
    threshold: Threshold,
    alpha: f64,
    tuning: MixtureTuning,
) -> Result<GuardrailResult> {
    check_alpha("alpha", alpha)?;
    let tau = threshold.validate(direction)?;
    check_sample("control mean", "control variance", control)?;
    check_sample("treatment mean", "treatment variance", treatment)?;
    let rho = one_sided_rho(tuning, alpha)?;
    let s = direction.sign();
    let relative = matches!(threshold, Threshold::Relative(_));
    let (mc, mt) = (control.mean, treatment.mean);
    let harm = if control.n == 0 || treatment.n == 0 || (relative && !(mc > 0.0)) {
        None
    } else if relative {
        Some(s * (mt / mc - 1.0))
    } else {
        Some(s * (mt - mc))
    };
    let evaluated = evaluate(control, treatment, s, relative, tau, alpha, rho)?;
    let (std_error, z, boundary, lower_bound, decision, insufficient_data) = match evaluated {
        Ok(e) => (
            Some(e.std_error),
            Some(e.z),
            Some(e.boundary),
            Some(e.lower_bound),
            if e.lower_bound > tau {
                GuardrailDecision::Breach
            } else {
                GuardrailDecision::NoBreach
            },
            None,
        ),
        Err(reason) => (
            None,
            None,
            None,
            None,
            GuardrailDecision::Insufficient,
            Some(reason),
        ),
    };
    Ok(GuardrailResult {
        direction,
        threshold,
        alpha,
        rho,
        harm,
        std_error,
        z,
        boundary,
        lower_bound,
        decision,
        insufficient_data,
    })
}

fn evaluate(
    control: &Sample,
    treatment: &Sample,
    s: f64,
    relative: bool,
    tau: f64,
    alpha: f64,
    rho: f64,
) -> Result<std::result::Result<Evaluated, InsufficientData>> {
    if control.n < 2 || treatment.n < 2 {
        return Ok(Err(InsufficientData::TooFewUnits));
    }
    let vc = control.variance / control.n as f64;
    let vt = treatment.variance / treatment.n as f64;
    if !(vc + vt > 0.0) {
        return Ok(Err(InsufficientData::ZeroVariance));
    }
    let units = control.n.saturating_add(treatment.n);
    let boundary = one_sided_boundary(units, rho, alpha)?;
    let (mc, mt) = (control.mean, treatment.mean);
    if !relative {
        let harm = s * (mt - mc);
        let se = (vc + vt).sqrt();
        return Ok(Ok(Evaluated {
            std_error: se,
            z: (harm - tau) / se,
            boundary,
            lower_bound: harm - boundary * se,
        }));
    }
    // Fieller: the ratios r not rejected satisfy s·(ȳ_t − r·ȳ_c) < z*·√(v_t + r²v_c).
    let a_coef = mc * mc - boundary * boundary * vc;
    if !(mc > 0.0 && a_coef > 0.0) {
        return Ok(Err(InsufficientData::ZeroBaseline));
    }
    let r0 = 1.0 + s * tau;
    let z = s * (mt - r0 * mc) / (vt + r0 * r0 * vc).sqrt();
    let half = boundary * (mt * mt * vc + a_coef * vt).sqrt();
    let lower_bound = if s > 0.0 {
        (mt * mc - half) / a_coef - 1.0
    } else {
        1.0 - (mt * mc + half) / a_coef
    };
    let std_error = (vt / (mc * mc) + mt * mt * vc / (mc * mc * mc * mc)).sqrt();
    Ok(Ok(Evaluated {
        std_error,
        z,
        boundary,
        lower_bound,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequential::always_valid;

    fn s(n: u64, mean: f64, variance: f64) -> Sample {
        Sample::new(n, mean, variance).unwrap()
    }

    const INC: Direction = Direction::IncreaseIsBad;
    const DEC: Direction = Direction::DecreaseIsBad;

    fn check(
        c: &Sample,
        t: &Sample,
        d: Direction,
        thr: Threshold,
        alpha: f64,
        planned: u64,
    ) -> GuardrailResult {
        guardrail_test(c, t, d, thr, alpha, MixtureTuning::PlannedUnits(planned)).unwrap()
    }

    /// The half-normal mixture `∫₀^∞ exp(λS − λ²t/2)·(2/ρ)φ(λ/ρ) dλ` by
    /// composite Simpson's rule over ±12 standard deviations of its Gaussian
    /// integrand.
    fn mixture_by_quadrature(s_sum: f64, t: f64, rho: f64) -> f64 {
        let precision = t + 1.0 / (rho * rho);
        let (mean, sd) = (s_sum / precision, precision.sqrt().recip());
        let (lo, hi) = ((mean - 12.0 * sd).max(0.0), mean + 12.0 * sd);
        let steps = 20_000;
        let h = (hi - lo) / steps as f64;
        let g = |l: f64| {
            (l * s_sum - 0.5 * l * l * precision).exp() * 2.0 / rho * crate::dist::norm_pdf(0.0)
        };
        let mut acc = g(lo) + g(hi);
        for i in 1..steps {
            acc += g(lo + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        acc * h / 3.0
    }

    #[test]
    fn boundary_is_where_the_half_normal_mixture_reaches_one_over_alpha() {
        for (t, rho, alpha) in [
            (1_000_u64, 0.1, 0.01),
            (20, 0.05, 0.05),
            (100_000, 0.01, 0.001),
            (400, 0.3, 0.2),
        ] {
            let z = one_sided_boundary(t, rho, alpha).unwrap();
            let tf = t as f64;
            let m = mixture_by_quadrature(z * tf.sqrt(), tf, rho);
            assert!(
                (m * alpha - 1.0).abs() < 1e-8,
                "t={t}: M={m}, 1/α={}",
                1.0 / alpha
            );
        }
    }

    #[test]
    fn boundary_matches_the_confseq_reference() {
        // confseq's test/uniform_boundaries_unittest.cpp (values from its R
        // reference implementation): the one-sided normal-mixture bound on the
        // sum S at intrinsic time v = 100, α = 0.05, tuned for v_opt = 100 at
        // α_opt = 0.05, is 27.66071. Unit variance: S = z·√t with t = 100.
        let rho = one_sided_rho(MixtureTuning::PlannedUnits(100), 0.05).unwrap();
        let bound = one_sided_boundary(100, rho, 0.05).unwrap() * 10.0;
        assert!((bound - 27.66071).abs() < 1e-5, "{bound}");
    }

    #[test]
    fn boundary_lies_between_the_two_sided_ones_at_two_alpha_and_alpha() {
        let c = s(5_000, 10.0, 4.0);
        let t = s(5_000, 10.0, 4.0);
        for alpha in [0.001, 0.01, 0.05] {
            let rho = 0.02;
            let tuning = MixtureTuning::Rho(rho);
            let one = guardrail_test(&c, &t, INC, Threshold::Absolute(0.0), alpha, tuning).unwrap();
            let two = |level: f64| {
                always_valid(&c, &t, level, tuning)
                    .unwrap()
                    .unwrap()
                    .ci
                    .lower
            };
            let lower = one.lower_bound.unwrap();
            assert!(two(alpha) < lower && lower < two(2.0 * alpha), "{alpha}");
            // Φ ≈ 1 at these boundaries: almost the two-sided one at 2α.
            if alpha <= 0.01 {
                assert!((lower - two(2.0 * alpha)).abs() < 1e-3 * lower.abs());
            }
        }
        // Monotone: more data, tighter boundary (below the optimum's size it
        // falls steeply); no data, no boundary.
        let b = |n: u64| one_sided_boundary(n, 0.03, 0.01).unwrap();
        assert!(b(10) > b(100) && b(100) > b(1_000) && b(1_000) > b(10_000));
        assert_eq!(b(0), f64::INFINITY);
        assert_eq!(one_sided_boundary(10, 1e-200, 0.01).unwrap(), f64::INFINITY);
    }

    #[test]
    fn tuning_at_two_alpha_is_close_to_the_tightest_boundary_at_the_planned_size() {
        for alpha in [0.001, 0.01, 0.05] {
            let planned = 20_000_u64;
            let rho = one_sided_rho(MixtureTuning::PlannedUnits(planned), alpha).unwrap();
            let at = |r: f64| one_sided_boundary(planned, r, alpha).unwrap();
            let best = (1..400)
                .map(|i| at(rho * (0.2 + 0.01 * f64::from(i))))
                .fold(f64::INFINITY, f64::min);
            assert!(at(rho) <= best * 1.01, "{alpha}: {} vs {best}", at(rho));
        }
        assert!(one_sided_rho(MixtureTuning::PlannedUnits(0), 0.01).is_err());
        assert!(one_sided_rho(MixtureTuning::Rho(0.0), 0.01).is_err());
        assert!(one_sided_rho(MixtureTuning::Rho(f64::NAN), 0.01).is_err());
        assert_eq!(one_sided_rho(MixtureTuning::Rho(0.2), 0.01).unwrap(), 0.2);
        // α above 0.25 tunes at the capped level instead of failing.
        assert!(one_sided_rho(MixtureTuning::PlannedUnits(100), 0.6).is_ok());
    }

    #[test]
    fn absolute_threshold_by_hand() {
        // se = √(4/10 000 + 4/10 000) = 0.028 28; harm = 0.2.
        let c = s(10_000, 10.0, 4.0);
        let t = s(10_000, 10.2, 4.0);
        let r = check(&c, &t, INC, Threshold::Absolute(0.05), 0.01, 20_000);
        let se = (8.0_f64 / 10_000.0).sqrt();
        let b = r.boundary.unwrap();
        assert!((r.harm.unwrap() - 0.2).abs() < 1e-12);
        assert!((r.std_error.unwrap() - se).abs() < 1e-15);
        assert!((r.lower_bound.unwrap() - (0.2 - b * se)).abs() < 1e-12);
        assert!((r.z.unwrap() - 0.15 / se).abs() < 1e-9);
        // At the planned size with α = 0.01 the boundary is about 3.35.
        assert!(b > 3.3 && b < 3.4, "{b}");
        assert_eq!(r.decision, GuardrailDecision::Breach);
        assert!(r.is_breach() && r.insufficient_data.is_none());
        // A threshold above the lower bound: no breach.
        let r = check(&c, &t, INC, Threshold::Absolute(0.15), 0.01, 20_000);
        assert_eq!(r.decision, GuardrailDecision::NoBreach);
        assert!(r.z.unwrap() < r.boundary.unwrap());
    }

    #[test]
    fn an_improvement_never_breaches_and_directions_mirror() {
        let c = s(50_000, 10.0, 4.0);
        let better_for_inc = s(50_000, 9.0, 4.0);
        let better_for_dec = s(50_000, 11.0, 4.0);
        for thr in [Threshold::Absolute(0.0), Threshold::Relative(0.0)] {
            let r = check(&c, &better_for_inc, INC, thr, 0.2, 1_000);
            assert_eq!(r.decision, GuardrailDecision::NoBreach, "{thr:?}");
            assert!(r.harm.unwrap() < 0.0);
            let r = check(&c, &better_for_dec, DEC, thr, 0.2, 1_000);
            assert_eq!(r.decision, GuardrailDecision::NoBreach, "{thr:?}");
            assert!(r.harm.unwrap() < 0.0);
            // The same changes are breaches in the other direction.
            assert!(check(&c, &better_for_inc, DEC, thr, 0.2, 1_000).is_breach());
            assert!(check(&c, &better_for_dec, INC, thr, 0.2, 1_000).is_breach());
        }
        // Absolute: mirroring the data mirrors the result exactly.
        let (c, t) = (s(300, 2.0, 1.5), s(280, 2.3, 1.7));
        let (mc, mt) = (s(300, -2.0, 1.5), s(280, -2.3, 1.7));
        let thr = Threshold::Absolute(0.1);
        let a = check(&c, &t, INC, thr, 0.05, 1_000);
        let b = check(&mc, &mt, DEC, thr, 0.05, 1_000);
        assert_eq!(a.harm, b.harm);
        assert_eq!(a.lower_bound, b.lower_bound);
        assert_eq!(a.z, b.z);
    }

    #[test]
    fn relative_bound_is_the_fieller_root_and_matches_the_delta_method_when_large() {
        let c = s(200_000, 10.0, 9.0);
        for (d, mt) in [(INC, 10.3), (DEC, 9.7)] {
            let t = s(200_000, mt, 9.0);
            let thr = Threshold::Relative(0.01);
            let r = check(&c, &t, d, thr, 0.01, 400_000);
            let (b, lower) = (r.boundary.unwrap(), r.lower_bound.unwrap());
            assert!((r.harm.unwrap() - 0.03).abs() < 1e-12);
            // The contrast at the bound's ratio sits exactly on the boundary.
            let ratio = 1.0 + d.sign() * lower;
            let (vc, vt) = (9.0 / 200_000.0, 9.0 / 200_000.0);
            let z = d.sign() * (mt - ratio * 10.0) / (vt + ratio * ratio * vc).sqrt();
            assert!((z - b).abs() < 1e-9, "{d:?}: {z} vs {b}");
            // Large samples: the delta method's harm − z*·se is within 0.5 % of it.
            let delta = r.harm.unwrap() - b * r.std_error.unwrap();
            assert!(
                (delta - lower).abs() < 5e-3 * lower.abs(),
                "{delta} vs {lower}"
            );
            assert!(r.is_breach() && r.z.unwrap() > b);
            // Decision and z agree at a threshold just either side of the bound.
            for (tau, breach) in [(lower * 0.999, true), (lower * 1.001, false)] {
                let r = check(&c, &t, d, Threshold::Relative(tau), 0.01, 400_000);
                assert_eq!(r.is_breach(), breach, "{d:?} {tau}");
                assert_eq!(r.z.unwrap() > r.boundary.unwrap(), breach);
            }
        }
    }

    #[test]
    fn insufficient_data_is_an_outcome_not_an_error() {
        let thr = Threshold::Absolute(0.1);
        let r = check(&s(1, 1.0, 0.0), &s(10, 1.0, 1.0), INC, thr, 0.01, 1_000);
        assert_eq!(r.decision, GuardrailDecision::Insufficient);
        assert_eq!(r.insufficient_data, Some(InsufficientData::TooFewUnits));
        assert!(r.lower_bound.is_none() && r.z.is_none() && r.boundary.is_none());
        assert_eq!(r.harm, Some(0.0));
        let r = check(&s(0, 0.0, 0.0), &s(10, 1.0, 1.0), INC, thr, 0.01, 1_000);
        assert_eq!(r.insufficient_data, Some(InsufficientData::TooFewUnits));
        assert_eq!(r.harm, None);
        let r = check(&s(5, 1.0, 0.0), &s(5, 3.0, 0.0), INC, thr, 0.01, 1_000);
        assert_eq!(r.insufficient_data, Some(InsufficientData::ZeroVariance));
        // One arm with zero variance is testable.
        let r = check(&s(500, 1.0, 0.0), &s(500, 3.0, 1.0), INC, thr, 0.01, 1_000);
        assert_eq!(r.decision, GuardrailDecision::Breach);
        // Relative: zero, negative or indistinguishable-from-zero control mean.
        let rel = Threshold::Relative(0.05);
        for (mc, d) in [
            (0.0, INC),
            (0.0, DEC),
            (-2.0, INC),
            (0.01, INC),
            (0.01, DEC),
        ] {
            let r = check(
                &s(1_000, mc, 1.0),
                &s(1_000, 1.0, 1.0),
                d,
                rel,
                0.01,
                10_000,
            );
            assert_eq!(
                r.insufficient_data,
                Some(InsufficientData::ZeroBaseline),
                "{mc}"
            );
            assert_eq!(r.decision, GuardrailDecision::Insufficient);
        }
        // A clearly positive control mean with the same spread is testable.
        let r = check(
            &s(1_000, 1.0, 1.0),
            &s(1_000, 1.5, 1.0),
            INC,
            rel,
            0.01,
            10_000,
        );
        assert_eq!(r.decision, GuardrailDecision::Breach);
        // Both variances zero with a relative threshold.
        let r = check(&s(5, 1.0, 0.0), &s(5, 3.0, 0.0), INC, rel, 0.01, 1_000);
        assert_eq!(r.insufficient_data, Some(InsufficientData::ZeroVariance));
    }

    #[test]
    fn no_conversions_in_a_few_units_is_not_a_certain_drop() {
        // Control 2/5 converted, treatment 0/5: the plug-in delta method's
        // standard error is 0 here and would call a 100 % drop certain.
        let c = s(5, 0.4, 0.3);
        let t = s(5, 0.0, 0.0);
        let lift = crate::effect::relative_lift(&c, &t, 0.01).unwrap().unwrap();
        assert_eq!(lift.std_error, 0.0);
        let r = check(&c, &t, DEC, Threshold::Relative(0.05), 0.01, 10_000);
        assert_eq!(r.decision, GuardrailDecision::Insufficient);
        let r = check(&c, &t, DEC, Threshold::Absolute(0.01), 0.01, 10_000);
        assert_eq!(r.decision, GuardrailDecision::NoBreach);
        // With 5 000 units per arm the same rates are a breach either way.
        let (c, t) = (s(5_000, 0.4, 0.24), s(5_000, 0.0, 0.0));
        assert!(check(&c, &t, DEC, Threshold::Relative(0.05), 0.01, 10_000).is_breach());
        assert!(check(&c, &t, DEC, Threshold::Absolute(0.01), 0.01, 10_000).is_breach());
    }

    #[test]
    fn invalid_parameters_are_errors() {
        let (c, t) = (s(100, 1.0, 1.0), s(100, 1.1, 1.0));
        let tuning = MixtureTuning::PlannedUnits(1_000);
        let run = |d, thr, alpha| guardrail_test(&c, &t, d, thr, alpha, tuning);
        assert!(run(INC, Threshold::Absolute(-0.1), 0.01).is_err());
        assert!(run(INC, Threshold::Relative(f64::NAN), 0.01).is_err());
        assert!(run(INC, Threshold::Absolute(f64::INFINITY), 0.01).is_err());
        assert!(run(DEC, Threshold::Relative(1.0), 0.01).is_err());
        assert!(run(INC, Threshold::Relative(1.5), 0.01).is_ok());
        assert!(run(INC, Threshold::Absolute(0.1), 0.0).is_err());
        assert!(run(INC, Threshold::Absolute(0.1), 1.0).is_err());
        let bad = Sample {
            n: 10,
            mean: f64::NAN,
            variance: 1.0,
        };
        let e = guardrail_test(&bad, &t, INC, Threshold::Absolute(0.1), 0.01, tuning);
        assert!(e.unwrap_err().to_string().contains("control mean"));
        let bad = Sample {
            n: 10,
            mean: 1.0,
            variance: -1.0,
        };
        assert!(guardrail_test(&c, &bad, INC, Threshold::Absolute(0.1), 0.01, tuning).is_err());
        let e = guardrail_test(
            &c,
            &t,
            INC,
            Threshold::Absolute(0.1),
            0.01,
            MixtureTuning::Rho(-1.0),
        );
        assert!(e.is_err());
        assert!(one_sided_boundary(10, 0.0, 0.01).is_err());
        assert!(one_sided_boundary(10, 0.1, 0.0).is_err());
    }

    #[test]
    fn split_alpha_is_bonferroni_over_comparisons() {
        assert!((split_alpha(0.01, 4, 2).unwrap() - 0.00125).abs() < 1e-18);
        assert_eq!(split_alpha(0.01, 1, 1).unwrap(), 0.01);
        for (budget, g, t) in [
            (0.0, 1, 1),
            (1.0, 1, 1),
            (-0.1, 1, 1),
            (f64::NAN, 1, 1),
            (0.01, 0, 1),
            (0.01, 1, 0),
        ] {
            assert!(split_alpha(budget, g, t).is_err(), "{budget} {g} {t}");
        }
        let e = split_alpha(0.01, 0, 3).unwrap_err();
        assert_eq!(e.to_string(), "guardrails must be at least 1, got 0");
    }

    #[test]
    fn serialises_in_snake_case() {
        let r = check(
            &s(1_000, 1.0, 1.0),
            &s(1_000, 1.5, 1.0),
            DEC,
            Threshold::Relative(0.05),
            0.01,
            10_000,
        );
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["decision"], "no_breach");
        assert_eq!(json["direction"], "decrease_is_bad");
        assert_eq!(json["threshold"]["kind"], "relative");
        assert_eq!(json["threshold"]["value"], 0.05);
        assert!(json["insufficient_data"].is_null());
        let back: GuardrailResult = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        let r = check(
            &s(1, 1.0, 0.0),
            &s(1, 1.0, 0.0),
            INC,
            Threshold::Absolute(0.0),
            0.01,
            10,
        );
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["decision"], "insufficient");
        assert_eq!(json["insufficient_data"], "too_few_units");
    }
}
