//! Two-sample comparisons: Welch's t-test, relative lift, ratio metrics.
//!
//! # Welch's t-test
//! For a metric with per-unit sample variances `s_c², s_t²` over `n_c, n_t`
//! units, the difference in means `Δ = ȳ_t − ȳ_c` has standard error
//! `se = √(s_t²/n_t + s_c²/n_c)`. The statistic `t = Δ/se` is referred to a
//! Student's t distribution with the Welch–Satterthwaite degrees of freedom
//!
//! ```text
//! ν = se⁴ / [ (s_t²/n_t)²/(n_t − 1) + (s_c²/n_c)²/(n_c − 1) ]
//! ```
//!
//! giving the two-sided p-value `P(|T_ν| > |t|)` and the `(1 − α)` interval
//! `Δ ± t_{1−α/2,ν}·se` (Welch 1947; Satterthwaite 1946). Binomial (0/1)
//! metrics take the same path: their sample variance is `n/(n−1)·p̂(1−p̂)`.
//!
//! # Relative lift
//! `L = ȳ_t/ȳ_c − 1`, with the delta-method variance of a ratio of independent
//! means (Kohavi, Tang & Xu 2020, §18; Deng, Knoblich & Lu 2018)
//!
//! ```text
//! Var(L) ≈ (s_t²/n_t)/ȳ_c² + ȳ_t²·(s_c²/n_c)/ȳ_c⁴
//! ```
//!
//! and the normal interval `L ± z_{1−α/2}·√Var(L)`.
//!
//! # Ratio metrics
//! A ratio metric `R = Σnum/Σden` (revenue per order, clicks per session) has
//! dependent units in its denominator, so the per-unit variance of the
//! numerator is not its variance. The delta method (Deng, Knoblich & Lu 2018,
//! "Applying the delta method in metric analytics", KDD) linearises it into a
//! per-unit variance
//!
//! ```text
//! s_R² = (s_num² − 2R·s_num,den + R²·s_den²) / d̄²,   Var(R̂) ≈ s_R²/n
//! ```
//!
//! after which the Welch test and lift above apply unchanged.

use serde::{Deserialize, Serialize};

use crate::dist::{norm_isf, t_isf, t_sf2};
use crate::error::{check_alpha, finite, Error, Result};
use crate::moments::{MeanStats, RatioStats};

/// The estimate of one variant's metric that a test consumes: number of
/// units, per-unit mean and per-unit sample variance (n − 1 denominator).
///
/// For plain means these are the sample mean and variance; for ratio metrics
/// the ratio and its delta-method linearised variance; for CUPED the adjusted
/// mean and variance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Number of units.
    pub n: u64,
    /// Per-unit mean (or ratio).
    pub mean: f64,
    /// Per-unit sample variance; the variance of `mean` is `variance / n`.
    pub variance: f64,
}

impl Sample {
    /// A sample from explicit values; errors on non-finite or negative input.
    pub fn new(n: u64, mean: f64, variance: f64) -> Result<Self> {
        finite("mean", mean)?;
        finite("variance", variance)?;
        if variance < 0.0 {
            return Err(Error::OutOfRange {
                field: "variance",
                expected: "non-negative",
                value: variance,
            });
        }
        Ok(Self { n, mean, variance })
    }

    /// Sample of a plain mean metric, or `None` with fewer than two units.
    pub fn from_mean(stats: &MeanStats) -> Option<Self> {
        stats.variance().map(|variance| Self {
            n: stats.n(),
            mean: stats.mean(),
            variance,
        })
    }

    /// Sample of a ratio metric with its delta-method variance, or `None`
    /// with fewer than two units or a zero denominator mean.
    pub fn from_ratio(stats: &RatioStats) -> Option<Self> {
        let n = stats.n();
        if n < 2 || stats.mean_den() == 0.0 {
            return None;
        }
        let d = stats.mean_den();
        let r = stats.mean_num() / d;
        let dof = (n - 1) as f64;
        let (vn, vd, cnd) = (
            stats.m2_num() / dof,
            stats.m2_den() / dof,
            stats.c_num_den() / dof,
        );
        let variance = ((vn - 2.0 * r * cnd + r * r * vd) / (d * d)).max(0.0);
        Some(Self {
            n,
            mean: r,
            variance,
        })
    }

    /// Standard error of the mean, `√(variance / n)`.
    pub fn std_error(&self) -> f64 {
        (self.variance / self.n as f64).sqrt()
    }
}

/// Why a result could not be computed from the data given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InsufficientData {
    /// A variant has fewer than two units, so no variance can be estimated.
    TooFewUnits,
    /// Both variants have zero variance, so the standard error is zero.
    ZeroVariance,
    /// The control mean (or a ratio's denominator) is zero, so a relative
    /// quantity is undefined.
    ZeroBaseline,
}

/// A two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
}

impl Interval {
    /// Whether the interval contains `x`.
    pub fn contains(&self, x: f64) -> bool {
        self.lower <= x && x <= self.upper
    }
}

/// Welch's two-sample t-test of treatment − control.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WelchTest {
    /// `ȳ_t − ȳ_c`.
    pub difference: f64,
    /// Standard error of the difference.
    pub std_error: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// `difference / std_error`.
    pub t: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// `(1 − α)` interval for the difference.
    pub ci: Interval,
}

impl WelchTest {
    /// The standard normal deviate with the same two-sided p-value as `t`,
    /// `sign(t)·z_{1−p/2}`.
    ///
    /// Sequential boundaries are derived for normal statistics; comparing the
    /// Welch t with them directly would inflate the error rate at early looks,
    /// where the t distribution's tails are heavier.
    pub fn z_equivalent(&self) -> f64 {
        let z = crate::dist::norm_isf(0.5 * self.p_value);
        if self.t < 0.0 {
            -z
        } else {
            z
        }
    }
}

/// Relative lift `ȳ_t/ȳ_c − 1` with a delta-method interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RelativeLift {
    /// Point estimate.
    pub estimate: f64,
    /// Delta-method standard error.
    pub std_error: f64,
    /// `(1 − α)` normal interval.
    pub ci: Interval,
}

/// Welch's t-test of `treatment − control` at level `alpha`.
///
/// Returns `Ok(Err(reason))` when the data cannot support a test (too few
/// units, zero variance in both arms); `Err` only for invalid parameters.
pub fn welch(
    control: &Sample,
    treatment: &Sample,
    alpha: f64,
) -> Result<std::result::Result<WelchTest, InsufficientData>> {
    check_alpha("alpha", alpha)?;
    if control.n < 2 || treatment.n < 2 {
        return Ok(Err(InsufficientData::TooFewUnits));
    }
    let vc = control.variance / control.n as f64;
    let vt = treatment.variance / treatment.n as f64;
    let var = vc + vt;
    if !(var > 0.0) {
        return Ok(Err(InsufficientData::ZeroVariance));
    }
    let se = var.sqrt();
    let df = var * var / (vt * vt / (treatment.n - 1) as f64 + vc * vc / (control.n - 1) as f64);
    let difference = treatment.mean - control.mean;
    let t = difference / se;
    let q = t_isf(alpha / 2.0, df);
    Ok(Ok(WelchTest {
        difference,
        std_error: se,
        df,
        t,
        p_value: t_sf2(t, df),
        ci: Interval {
            lower: difference - q * se,
            upper: difference + q * se,
        },
    }))
}

/// Relative lift of `treatment` over `control` at level `alpha`.
pub fn relative_lift(
    control: &Sample,
    treatment: &Sample,
    alpha: f64,
) -> Result<std::result::Result<RelativeLift, InsufficientData>> {
    check_alpha("alpha", alpha)?;
    if control.n < 1 || treatment.n < 1 {
        return Ok(Err(InsufficientData::TooFewUnits));
    }
    if control.mean == 0.0 {
        return Ok(Err(InsufficientData::ZeroBaseline));
    }
    let vc = control.variance / control.n as f64;
    let vt = treatment.variance / treatment.n as f64;
    let mc = control.mean;
    let mt = treatment.mean;
    let estimate = mt / mc - 1.0;
    let var = vt / (mc * mc) + mt * mt * vc / (mc * mc * mc * mc);
    let se = var.sqrt();
    let z = norm_isf(alpha / 2.0);
    Ok(Ok(RelativeLift {
        estimate,
        std_error: se,
        ci: Interval {
            lower: estimate - z * se,
            upper: estimate + z * se,
        },
    }))
}

/// Per-variant summary for display: units, mean, sample variance, standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    /// Number of units.
    pub n: u64,
    /// Mean (or ratio, or CUPED-adjusted mean).
    pub mean: f64,
    /// Per-unit sample variance (n − 1); `None` with fewer than two units.
    pub variance: Option<f64>,
    /// Standard error of the mean; `None` with fewer than two units.
    pub std_error: Option<f64>,
}

impl From<&Sample> for VariantSummary {
    fn from(s: &Sample) -> Self {
        Self {
            n: s.n,
            mean: s.mean,
            variance: Some(s.variance),
            std_error: Some(s.std_error()),
        }
    }
}

/// Treatment versus control on one metric: the Welch test and relative lift,
/// or the reason they could not be computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Welch's test; `None` when `insufficient_data` is set.
    pub welch: Option<WelchTest>,
    /// Relative lift; `None` when undefined (for example a zero control mean).
    pub lift: Option<RelativeLift>,
    /// Set when the data cannot support the test.
    pub insufficient_data: Option<InsufficientData>,
}

impl Comparison {
    /// Compares two samples (either may be missing when it has too few units).
    pub fn new(control: Option<&Sample>, treatment: Option<&Sample>, alpha: f64) -> Result<Self> {
        check_alpha("alpha", alpha)?;
        let (Some(c), Some(t)) = (control, treatment) else {
            return Ok(Self {
                welch: None,
                lift: None,
                insufficient_data: Some(InsufficientData::TooFewUnits),
            });
        };
        let welch = welch(c, t, alpha)?;
        let lift = relative_lift(c, t, alpha)?;
        Ok(Self {
            welch: welch.ok(),
            lift: lift.ok().filter(|_| welch.is_ok()),
            insufficient_data: welch.err(),
        })
    }

    /// The p-value, when a test was possible.
    pub fn p_value(&self) -> Option<f64> {
        self.welch.map(|w| w.p_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64, mean: f64, variance: f64) -> Sample {
        Sample::new(n, mean, variance).unwrap()
    }

    #[test]
    fn equal_groups_have_pooled_df_and_unit_t() {
        // Equal n and variance: ν = 2(n − 1).
        let w = welch(&s(50, 1.0, 4.0), &s(50, 1.4, 4.0), 0.05)
            .unwrap()
            .unwrap();
        assert!((w.df - 98.0).abs() < 1e-9);
        assert!((w.std_error - (8.0_f64 / 50.0).sqrt()).abs() < 1e-15);
        assert!(w.ci.contains(w.difference));
        assert!(w.ci.lower < 0.0 && w.p_value > 0.05);
        // Heavier tails: the normal deviate with the same p-value is smaller.
        assert!(w.z_equivalent() < w.t && w.z_equivalent() > 0.0);
        let big = welch(&s(100_000, 1.0, 4.0), &s(100_000, 0.97, 4.0), 0.05)
            .unwrap()
            .unwrap();
        assert!((big.z_equivalent() - big.t).abs() < 1e-4);
    }

    #[test]
    fn degenerate_data_is_marked_not_panicking() {
        assert_eq!(
            welch(&s(1, 1.0, 0.0), &s(10, 1.0, 1.0), 0.05).unwrap(),
            Err(InsufficientData::TooFewUnits)
        );
        assert_eq!(
            welch(&s(5, 1.0, 0.0), &s(10, 2.0, 0.0), 0.05).unwrap(),
            Err(InsufficientData::ZeroVariance)
        );
        assert_eq!(
            relative_lift(&s(5, 0.0, 1.0), &s(5, 1.0, 1.0), 0.05).unwrap(),
            Err(InsufficientData::ZeroBaseline)
        );
        assert!(welch(&s(5, 1.0, 1.0), &s(5, 1.0, 1.0), 1.5).is_err());
        assert!(Sample::new(3, f64::NAN, 1.0).is_err());
        let c = Comparison::new(None, Some(&s(5, 1.0, 1.0)), 0.05).unwrap();
        assert_eq!(c.insufficient_data, Some(InsufficientData::TooFewUnits));
        // One arm with zero variance is still testable.
        let w = welch(&s(5, 1.0, 0.0), &s(10, 2.0, 1.0), 0.05)
            .unwrap()
            .unwrap();
        assert!((w.df - 9.0).abs() < 1e-12);
    }

    #[test]
    fn ratio_with_constant_denominator_is_a_mean() {
        let num = [1.0, 4.0, 2.0, 8.0, 5.0];
        let den = [2.0; 5];
        let r = Sample::from_ratio(&RatioStats::from_values(&num, &den).unwrap()).unwrap();
        let m = Sample::from_mean(&MeanStats::from_values(&num).unwrap()).unwrap();
        assert!((r.mean - m.mean / 2.0).abs() < 1e-15);
        assert!((r.variance - m.variance / 4.0).abs() < 1e-13);
        assert!(
            Sample::from_ratio(&RatioStats::from_values(&[1.0, 2.0], &[0.0, 0.0]).unwrap())
                .is_none()
        );
    }
}
