//! Sequential testing: group-sequential boundaries and always-valid inference.
//!
//! Looking at a fixed-horizon test repeatedly and stopping at the first
//! p < α inflates the false-positive rate far above α (20 looks at α = 0.05
//! reject about a quarter of A/A tests). Two remedies are offered, selectable
//! per experiment.
//!
//! # Group sequential (Lan–DeMets alpha spending)
//! The test statistic `Z_k = Δ̂_k/se_k` at information fraction
//! `t_k = n_k/n_planned` (capped at 1) behaves, under H₀, like Brownian motion
//! in information time: `cov(Z_j, Z_k) = √(t_j/t_k)` for `j ≤ k`. Boundaries
//! `±b_k` are chosen so that the probability of first crossing at look `k`
//! equals the alpha "spent" between `t_{k−1}` and `t_k` (Lan & DeMets 1983,
//! Biometrika 70:659). Two-sided symmetric boundaries spend α/2 per side with
//!
//! * O'Brien–Fleming type: `α_side(t) = 2 − 2Φ(z_{1−α/4}/√t)`,
//! * Pocock type: `α_side(t) = (α/2)·ln(1 + (e − 1)·t)`,
//!
//! the convention of R's `ldbounds`, `gsDesign` and `rpact`. Only the looks
//! actually taken enter the computation, so looks need not be planned.
//!
//! The crossing probabilities are exact up to quadrature error, computed by
//! the recursive numerical integration of Armitage, McPherson & Rowe (1969,
//! JRSS A 132:235) as laid out by Jennison & Turnbull (2000, "Group Sequential
//! Methods with Applications to Clinical Trials", ch. 19): the sub-density of
//! `Z_k` on the continuation region,
//!
//! ```text
//! h_1(z) = φ(z),   h_k(z) = ∫_{−b_{k−1}}^{b_{k−1}} h_{k−1}(u) · φ((z − r u)/s)/s du,
//! r = √(t_{k−1}/t_k),   s = √(1 − t_{k−1}/t_k),
//! ```
//!
//! is carried on quadrature nodes: panel edges from Jennison & Turnbull's grid
//! (fine in the centre, logarithmic in the tails), refined so that panels are
//! no wider than the standard deviation `s` of the increment to the next look,
//! with Gauss–Legendre nodes in each panel (Jennison & Turnbull use Simpson's
//! rule; Gauss–Legendre panels reach ~1e−9 accuracy in the boundaries with far
//! fewer nodes, which matters for 50 closely spaced looks). Each `b_k` is the
//! root of
//! `∫ h_{k−1}(u)·[Φ̄((b − ru)/s) + Φ((−b − ru)/s)] du = 2·(α_side(t_k) − α_side(t_{k−1}))`
//! found by safeguarded Newton iteration. Decision at a look: `significant` if
//! `|Z| ≥ b_k`; otherwise `continue`, or `not_significant` once `t = 1`. With
//! a Welch test, `Z` should be the normal deviate with the same p-value
//! ([`crate::effect::WelchTest::z_equivalent`]): the boundaries assume normal
//! statistics, and the t distribution's heavier tails at early looks would
//! otherwise inflate the error rate.
//!
//! # Always valid (normal-mixture confidence sequence)
//! A confidence sequence covers the true effect at every sample size
//! simultaneously with probability ≥ 1 − α, so it may be monitored
//! continuously and stopped at any time. We use the asymptotic confidence
//! sequence of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2024,
//! "Time-uniform central limit theory and asymptotic confidence sequences",
//! Annals of Statistics), the normal-mixture boundary of Robbins (1970) applied
//! to the difference in means. With `t = n_c + n_t` units, `se` the Welch
//! standard error and `σ̂² = t·se²`:
//!
//! ```text
//! Δ̂ ± σ̂ · √( 2(tρ² + 1)/(t²ρ²) · ln(√(tρ² + 1)/α) )
//! ```
//!
//! The tuning parameter ρ sets where the sequence is tightest; by default it
//! is chosen to minimise the width at the planned total sample size `t*`
//! (Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform, nonparametric,
//! nonasymptotic confidence sequences", Annals of Statistics; Waudby-Smith et al.):
//!
//! ```text
//! ρ² = (−2 ln α + ln(1 − 2 ln α)) / t*
//! ```
//!
//! The matching always-valid p-value is the smallest α whose sequence
//! excludes zero, `p = min(1, √(tρ²+1)·exp(−z²·tρ²/(2(tρ²+1))))` with `z = Δ̂/se`.
//! Both remain valid when taken as running intersection / running minimum over
//! looks. Validity is asymptotic (it relies on the CLT, like the t-test).

use serde::{Deserialize, Serialize};

use crate::dist::{norm_isf, norm_pdf, norm_sf};
use crate::effect::{InsufficientData, Interval, Sample};
use crate::error::{check_alpha, finite, Error, Result};

/// 1/√(2π).
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Lan–DeMets spending function family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Spending {
    /// O'Brien–Fleming type: very conservative early, close to the fixed test at the end.
    #[default]
    OBrienFleming,
    /// Pocock type: roughly constant nominal level at every look.
    Pocock,
}

impl Spending {
    /// One-sided alpha spent by information fraction `t` for two-sided level `alpha`.
    pub fn alpha_side(self, alpha: f64, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let t = t.min(1.0);
        match self {
            Spending::OBrienFleming => 2.0 * norm_sf(norm_isf(alpha / 4.0) / t.sqrt()),
            Spending::Pocock => 0.5 * alpha * (1.0 + (std::f64::consts::E - 1.0) * t).ln(),
        }
    }
}

/// Information fraction `n_now / n_planned`, capped at 1.
pub fn information_fraction(n_now: u64, n_planned: u64) -> Result<f64> {
    if n_planned == 0 {
        return Err(Error::OutOfRange {
            field: "n_planned",
            expected: "positive",
            value: 0.0,
        });
    }
    Ok((n_now as f64 / n_planned as f64).min(1.0))
}

/// One look of a group-sequential design.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Look {
    /// Information fraction `t_k`.
    pub information_fraction: f64,
    /// Critical value `b_k` for `|Z|` (infinite when no alpha is spendable yet).
    pub boundary: f64,
    /// Two-sided nominal p-value of the boundary, `2Φ̄(b_k)`.
    pub nominal_p: f64,
    /// Cumulative two-sided alpha spent through this look.
    pub alpha_spent: f64,
}

/// Outcome of a sequential look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SequentialDecision {
    /// The boundary was crossed: stop and report the effect.
    Significant,
    /// Not crossed, more data is planned: keep collecting.
    Continue,
    /// Not crossed at the final look (`t = 1`): the test finished without significance.
    NotSignificant,
}

/// The group-sequential test at the current (last) look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSequentialResult {
    /// All looks so far, with their boundaries.
    pub looks: Vec<Look>,
    /// Observed statistic at the current look.
    pub z: f64,
    /// Boundary at the current look.
    pub boundary: f64,
    /// Decision at the current look.
    pub decision: SequentialDecision,
}

/// Grid density parameter of Jennison & Turnbull's grid for widely spaced looks.
const GRID_R: f64 = 4.0;
/// For closely spaced looks the normal increment between them has standard
/// deviation `s` ≪ 1 and the panels must resolve it: the density parameter is
/// raised to `GRID_R_PER_S / s`, making central panels `1.5·s/GRID_R_PER_S` wide.
const GRID_R_PER_S: f64 = 1.0;
/// Gauss–Legendre nodes per panel.
const GAUSS_POINTS: usize = 6;
/// Kernel terms beyond this many standard deviations are below e^−36 ≈ 2e−16
/// of the largest one and are skipped.
const KERNEL_CUTOFF: f64 = 8.5;

/// Gauss–Legendre nodes and weights on [−1, 1] (Newton on P_n; NR §4.6).
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut x = vec![0.0; n];
    let mut w = vec![0.0; n];
    let nf = n as f64;
    for i in 0..n.div_ceil(2) {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (nf + 0.5)).cos();
        let mut pp = 0.0;
        for _ in 0..100 {
            let (mut p1, mut p2) = (1.0, 0.0);
            for j in 0..n {
                let p3 = p2;
                p2 = p1;
                let jf = j as f64;
                p1 = ((2.0 * jf + 1.0) * z * p2 - jf * p3) / (jf + 1.0);
            }
            pp = nf * (z * p1 - p2) / (z * z - 1.0);
            let dz = p1 / pp;
            z -= dz;
            if dz.abs() < 1e-15 {
                break;
            }
        }
        x[i] = -z;
        x[n - 1 - i] = z;
        w[i] = 2.0 / ((1.0 - z * z) * pp * pp);
        w[n - 1 - i] = w[i];
    }
    (x, w)
}

/// Quadrature nodes and weights on (−b, b): panel edges from Jennison &
/// Turnbull's grid (spacing 3/(2r) within ±3, logarithmic beyond, to
/// ±(3 + 4 ln r)), with Gauss–Legendre nodes in each panel. Symmetric about 0.
fn grid(b: f64, r: f64, gl: &(Vec<f64>, Vec<f64>)) -> (Vec<f64>, Vec<f64>) {
    let ri = r.ceil() as usize;
    let r = ri as f64;
    let mut edges: Vec<f64> = Vec::with_capacity(6 * ri + 2);
    let x = (1..6 * ri).map(|i| {
        let fi = i as f64;
        if i < ri {
            -3.0 - 4.0 * (r / fi).ln()
        } else if i <= 5 * ri {
            -3.0 + 3.0 * (fi - r) / (2.0 * r)
        } else {
            3.0 + 4.0 * (r / (6.0 * r - fi)).ln()
        }
    });
    let outer = 3.0 + 4.0 * r.ln();
    if b < outer {
        edges.push(-b);
    }
    edges.extend(x.filter(|&v| v > -b && v < b));
    if b < outer {
        edges.push(b);
    }
    let (gx, gw) = gl;
    let mut z = Vec::with_capacity(edges.len() * gx.len());
    let mut w = Vec::with_capacity(edges.len() * gx.len());
    for pair in edges.windows(2) {
        let (mid, half) = (0.5 * (pair[0] + pair[1]), 0.5 * (pair[1] - pair[0]));
        for (&xi, &wi) in gx.iter().zip(gw) {
            z.push(mid + half * xi);
            w.push(half * wi);
        }
    }
    (z, w)
}

/// Probability of crossing ±b at the next look, from the weighted sub-density.
/// Returns (probability, derivative with respect to b).
fn crossing(b: f64, z: &[f64], wh: &[f64], r: f64, s: f64) -> (f64, f64) {
    let (mut p, mut dp) = (0.0, 0.0);
    for (&u, &c) in z.iter().zip(wh) {
        // Φ̄(a) underflows to 0 beyond a ≈ 38.5; skip the special functions there.
        for a in [(b - r * u) / s, (b + r * u) / s] {
            if a < 38.5 {
                p += c * norm_sf(a);
                dp -= c * norm_pdf(a) / s;
            }
        }
    }
    (p, dp)
}

/// Solves `crossing(b) = target` for b; `upper` bounds the root from above
/// and `start` is the first guess.
fn solve_boundary(
    target: f64,
    upper: f64,
    start: f64,
    z: &[f64],
    wh: &[f64],
    r: f64,
    s: f64,
) -> Result<f64> {
    let ln_target = target.ln();
    let step = |b: f64| {
        let (p, dp) = crossing(b, z, wh, r, s);
        // Newton on ln p, which is nearly linear in b² in the tail.
        let newton = if p > 0.0 && dp < 0.0 {
            b - (p.ln() - ln_target) * p / dp
        } else {
            f64::NAN
        };
        (p > target, newton)
    };
    crate::dist::safeguarded_newton(
        step,
        (0.0, upper),
        start.clamp(0.0, upper),
        "group-sequential boundary search",
    )
}

fn check_fractions(fractions: &[f64]) -> Result<()> {
    if fractions.is_empty() {
        return Err(Error::Invalid {
            field: "information_fractions",
            reason: "no looks given",
        });
    }
    let mut prev = 0.0;
    for &t in fractions {
        finite("information_fractions", t)?;
        if !(t > prev && t <= 1.0) {
            return Err(Error::Invalid {
                field: "information_fractions",
                reason: "must be strictly increasing within (0, 1]",
            });
        }
        prev = t;
    }
    Ok(())
}

/// Two-sided symmetric boundaries for looks at the given information fractions.
pub fn group_sequential_boundaries(
    fractions: &[f64],
    alpha: f64,
    spending: Spending,
) -> Result<Vec<Look>> {
    check_alpha("alpha", alpha)?;
    check_fractions(fractions)?;
    let mut looks = Vec::with_capacity(fractions.len());
    // Weighted sub-density w_i·h(z_i) on the previous look's grid.
    let mut z_prev: Vec<f64> = Vec::new();
    let mut wh_prev: Vec<f64> = Vec::new();
    let mut t_prev = 0.0;
    let mut spent_prev = 0.0;
    let increment_sd = |k: usize| {
        if k == 0 {
            1.0
        } else if k < fractions.len() {
            (1.0 - fractions[k - 1] / fractions[k]).sqrt()
        } else {
            f64::INFINITY
        }
    };
    let gl = gauss_legendre(GAUSS_POINTS);
    for (k, &t) in fractions.iter().enumerate() {
        let spent = spending.alpha_side(alpha, t);
        let target = 2.0 * (spent - spent_prev);
        let b = if looks.is_empty() {
            if spent > 0.0 {
                norm_isf(spent)
            } else {
                f64::INFINITY
            }
        } else {
            let ratio = t_prev / t;
            let (r, s) = (ratio.sqrt(), (1.0 - ratio).sqrt());
            // Ignoring earlier looks gives an upper bound for the boundary.
            let unrestricted = norm_isf(0.5 * target);
            if !(target > 0.0) || !unrestricted.is_finite() {
                f64::INFINITY
            } else {
                // Boundaries change smoothly from look to look: start from the previous one.
                let start = looks.last().map_or(unrestricted, |l: &Look| l.boundary);
                solve_boundary(target, unrestricted, start, &z_prev, &wh_prev, r, s)?
            }
        };
        looks.push(Look {
            information_fraction: t,
            boundary: b,
            nominal_p: 2.0 * norm_sf(b),
            alpha_spent: 2.0 * spent,
        });
        // Carry the sub-density of Z_k on (−b, b) to the next look.
        let s_min = increment_sd(k).min(increment_sd(k + 1)).min(1.0);
        let (z, w) = grid(b, GRID_R.max(GRID_R_PER_S / s_min), &gl);
        let mut wh = vec![0.0; z.len()];
        if z_prev.is_empty() {
            for ((o, &zi), &wi) in wh.iter_mut().zip(&z).zip(&w) {
                *o = wi * norm_pdf(zi);
            }
        } else {
            let ratio = t_prev / t;
            let (r, s) = (ratio.sqrt(), (1.0 - ratio).sqrt());
            let m = z.len();
            // The density and the nodes are symmetric: compute the upper half and mirror.
            // Nodes are sorted, so the kernel's support is a contiguous range.
            let ru: Vec<f64> = z_prev.iter().map(|u| r * u).collect();
            let inv_s = 1.0 / s;
            let reach = KERNEL_CUTOFF * s;
            for j in m / 2..m {
                let zj = z[j];
                let lo = ru.partition_point(|&x| x < zj - reach);
                let hi = ru.partition_point(|&x| x <= zj + reach);
                let mut acc = 0.0;
                for (&x, &c) in ru[lo..hi].iter().zip(&wh_prev[lo..hi]) {
                    let a = (zj - x) * inv_s;
                    acc += c * (-0.5 * a * a).exp();
                }
                let h = acc * FRAC_1_SQRT_2PI * inv_s;
                wh[j] = w[j] * h;
                wh[m - 1 - j] = w[m - 1 - j] * h;
            }
        }
        z_prev = z;
        wh_prev = wh;
        t_prev = t;
        spent_prev = spent;
    }
    Ok(looks)
}

/// The group-sequential decision at the current look, the last of `fractions`.
///
/// The test finishes at `t = 1`.
pub fn group_sequential_test(
    fractions: &[f64],
    z: f64,
    alpha: f64,
    spending: Spending,
) -> Result<GroupSequentialResult> {
    finite("z", z)?;
    let looks = group_sequential_boundaries(fractions, alpha, spending)?;
    let last = looks[looks.len() - 1];
    let decision = if z.abs() >= last.boundary {
        SequentialDecision::Significant
    } else if last.information_fraction >= 1.0 {
        SequentialDecision::NotSignificant
    } else {
        SequentialDecision::Continue
    };
    Ok(GroupSequentialResult {
        boundary: last.boundary,
        looks,
        z,
        decision,
    })
}

/// How the always-valid mixture parameter ρ is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum MixtureTuning {
    /// Tightest at this planned total number of units (both arms together).
    PlannedUnits(u64),
    /// An explicit ρ > 0.
    Rho(f64),
}

/// ρ minimising the confidence-sequence width at `planned_units` total units.
pub fn optimal_rho(planned_units: u64, alpha: f64) -> Result<f64> {
    check_alpha("alpha", alpha)?;
    if planned_units == 0 {
        return Err(Error::OutOfRange {
            field: "planned_units",
            expected: "positive",
            value: 0.0,
        });
    }
    let l = -2.0 * alpha.ln();
    Ok(((l + (1.0 + l).ln()) / planned_units as f64).sqrt())
}

/// An always-valid confidence sequence for treatment − control at one look.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceSequence {
    /// `ȳ_t − ȳ_c`.
    pub difference: f64,
    /// Welch standard error of the difference.
    pub std_error: f64,
    /// The mixture parameter used.
    pub rho: f64,
    /// The `(1 − α)` confidence-sequence interval at this look.
    pub ci: Interval,
    /// Always-valid p-value at this look.
    pub p_value: f64,
    /// `significant` when the interval excludes zero, else `continue`.
    pub decision: SequentialDecision,
}

/// The always-valid confidence sequence at the current data.
pub fn always_valid(
    control: &Sample,
    treatment: &Sample,
    alpha: f64,
    tuning: MixtureTuning,
) -> Result<std::result::Result<ConfidenceSequence, InsufficientData>> {
    check_alpha("alpha", alpha)?;
    let rho = match tuning {
        MixtureTuning::PlannedUnits(n) => optimal_rho(n, alpha)?,
        MixtureTuning::Rho(r) => check_rho(r)?,
    };
    if control.n < 2 || treatment.n < 2 {
        return Ok(Err(InsufficientData::TooFewUnits));
    }
    let var = control.variance / control.n as f64 + treatment.variance / treatment.n as f64;
    if !(var > 0.0) {
        return Ok(Err(InsufficientData::ZeroVariance));
    }
    always_valid_normal(
        treatment.mean - control.mean,
        var.sqrt(),
        control.n + treatment.n,
        alpha,
        MixtureTuning::Rho(rho),
    )
}

/// The always-valid confidence sequence of any asymptotically normal
/// difference (a difference of means, of quantiles) with standard error `se`
/// estimated from `total_units` units of both arms together.
pub fn always_valid_normal(
    difference: f64,
    se: f64,
    total_units: u64,
    alpha: f64,
    tuning: MixtureTuning,
) -> Result<std::result::Result<ConfidenceSequence, InsufficientData>> {
    check_alpha("alpha", alpha)?;
    finite("difference", difference)?;
    let rho = match tuning {
        MixtureTuning::PlannedUnits(n) => optimal_rho(n, alpha)?,
        MixtureTuning::Rho(r) => check_rho(r)?,
    };
    if total_units < 4 {
        return Ok(Err(InsufficientData::TooFewUnits));
    }
    if !(se > 0.0 && se.is_finite()) {
        return Ok(Err(InsufficientData::ZeroVariance));
    }
    let t = total_units as f64;
    let tr2 = t * rho * rho;
    let half = se * (2.0 * (tr2 + 1.0) / tr2 * (0.5 * (tr2 + 1.0).ln() - alpha.ln())).sqrt();
    let z = difference / se;
    let p_value = ((tr2 + 1.0).sqrt() * (-z * z * tr2 / (2.0 * (tr2 + 1.0))).exp()).min(1.0);
    let ci = Interval {
        lower: difference - half,
        upper: difference + half,
    };
    Ok(Ok(ConfidenceSequence {
        difference,
        std_error: se,
        rho,
        ci,
        p_value,
        decision: if ci.contains(0.0) {
            SequentialDecision::Continue
        } else {
            SequentialDecision::Significant
        },
    }))
}

/// `rho`, a mixture parameter given by hand, if it is finite and positive.
pub(crate) fn check_rho(rho: f64) -> Result<f64> {
    finite("rho", rho)?;
    if rho > 0.0 {
        Ok(rho)
    } else {
        Err(Error::OutOfRange {
            field: "rho",
            expected: "positive",
            value: rho,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_final_look_is_the_fixed_test() {
        for s in [Spending::OBrienFleming, Spending::Pocock] {
            let l = group_sequential_boundaries(&[1.0], 0.05, s).unwrap();
            assert!((l[0].boundary - 1.959_963_984_540_054).abs() < 1e-12);
        }
    }

    #[test]
    fn spending_functions_end_at_half_alpha() {
        assert!((Spending::OBrienFleming.alpha_side(0.05, 1.0) - 0.025).abs() < 1e-15);
        assert!((Spending::Pocock.alpha_side(0.05, 1.0) - 0.025).abs() < 1e-15);
        assert_eq!(Spending::Pocock.alpha_side(0.05, 0.0), 0.0);
    }

    #[test]
    fn rejects_bad_fractions() {
        assert!(group_sequential_boundaries(&[], 0.05, Spending::Pocock).is_err());
        assert!(group_sequential_boundaries(&[0.5, 0.5], 0.05, Spending::Pocock).is_err());
        assert!(group_sequential_boundaries(&[0.5, 1.2], 0.05, Spending::Pocock).is_err());
        assert!(group_sequential_boundaries(&[f64::NAN], 0.05, Spending::Pocock).is_err());
        assert!(information_fraction(5, 0).is_err());
        assert_eq!(information_fraction(15, 10).unwrap(), 1.0);
    }

    #[test]
    fn tiny_first_look_gets_an_infinite_or_huge_boundary() {
        let l =
            group_sequential_boundaries(&[1e-4, 0.5, 1.0], 0.05, Spending::OBrienFleming).unwrap();
        assert!(l[0].boundary > 30.0);
        assert!(l.iter().all(|k| !k.boundary.is_nan()));
        assert!(l[2].boundary > 1.96 && l[2].boundary < 2.1);
    }

    #[test]
    fn decision_logic() {
        let f = [0.5, 1.0];
        assert_eq!(
            group_sequential_test(&f[..1], 3.5, 0.05, Spending::OBrienFleming)
                .unwrap()
                .decision,
            SequentialDecision::Significant
        );
        assert_eq!(
            group_sequential_test(&f[..1], 2.5, 0.05, Spending::OBrienFleming)
                .unwrap()
                .decision,
            SequentialDecision::Continue
        );
        assert_eq!(
            group_sequential_test(&f, 1.0, 0.05, Spending::OBrienFleming)
                .unwrap()
                .decision,
            SequentialDecision::NotSignificant
        );
    }

    #[test]
    fn always_valid_p_value_is_where_the_sequence_touches_zero() {
        let c = Sample::new(4_000, 10.0, 4.0).unwrap();
        let t = Sample::new(4_100, 10.2, 4.4).unwrap();
        let tuning = MixtureTuning::PlannedUnits(20_000);
        let rho = optimal_rho(20_000, 0.05).unwrap();
        let cs = always_valid(&c, &t, 0.05, tuning).unwrap().unwrap();
        assert!(cs.p_value < 0.05 && cs.decision == SequentialDecision::Significant);
        // At level α = p (same ρ), the interval's lower end is exactly zero.
        let at_p = always_valid(&c, &t, cs.p_value, MixtureTuning::Rho(rho))
            .unwrap()
            .unwrap();
        assert!(at_p.ci.lower.abs() < 1e-12, "{}", at_p.ci.lower);
        // Wider than the fixed-horizon interval at the same data.
        let fixed = crate::effect::welch(&c, &t, 0.05).unwrap().unwrap();
        assert!(cs.ci.upper - cs.ci.lower > fixed.ci.upper - fixed.ci.lower);
    }

    #[test]
    fn optimal_rho_minimises_width_at_planned_size() {
        let alpha = 0.05;
        let n = 10_000_u64;
        let width = |rho: f64| {
            let c = Sample::new(n / 2, 0.0, 1.0).unwrap();
            always_valid(&c, &c, alpha, MixtureTuning::Rho(rho))
                .unwrap()
                .unwrap()
                .ci
                .upper
        };
        let best = optimal_rho(n, alpha).unwrap();
        let w = width(best);
        // The closed form is an approximation to the optimum: within 0.5 %.
        let grid_min = (1..400)
            .map(|i| width(best * (0.2 + 0.01 * i as f64)))
            .fold(f64::INFINITY, f64::min);
        assert!(w <= grid_min * 1.005, "{w} vs {grid_min}");
    }
}
