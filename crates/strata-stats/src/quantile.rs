//! Quantile metrics (p50/p95/p99 latency guardrails).
//!
//! Quantiles have no small sufficient statistic, so a [`QuantileSample`] keeps
//! the sorted per-unit values; partitions merge by a sorted merge, which is
//! exact and associative.
//!
//! # Point estimate
//! The sample quantile with linear interpolation between order statistics
//! (Hyndman & Fan 1996, definition 7; numpy's default): with `h = (n − 1)q`,
//! `ξ̂_q = x_(⌊h⌋+1) + (h − ⌊h⌋)(x_(⌊h⌋+2) − x_(⌊h⌋+1))` (1-based order statistics).
//!
//! # Interval per variant
//! The distribution-free order-statistic interval (Hahn & Meeker 1991, §5.2;
//! David & Nagaraja 2003, §7.1): for continuous data
//! `P(x_(l) ≤ ξ_q < x_(u)) = P(l ≤ B ≤ u − 1)` with `B ~ Binomial(n, q)`.
//! The ranks are the tightest equal-tailed pair with
//! `P(B ≤ l − 1) ≤ α/2` and `P(B ≥ u) ≤ α/2`, so coverage is at least `1 − α`
//! whatever the distribution. Binomial probabilities use the regularised
//! incomplete beta function, `P(B ≤ k) = I_{1−q}(n − k, k + 1)`.
//!
//! # Interval for the difference
//! Following Price & Bonett (2002, "Distribution-free confidence intervals for
//! difference and ratio of medians", J. Stat. Comput. Simul. 72:119), extended
//! from the median to any quantile, each variant's standard error is read off
//! its order-statistic interval, whose exact coverage `1 − γ` is known:
//!
//! ```text
//! se_v = (x_(u) − x_(l)) / (2·z_{1−γ/2})
//! ```
//!
//! and the difference `ξ̂_t − ξ̂_c` gets the normal interval
//! `± z_{1−α/2}·√(se_t² + se_c²)` with p-value `2Φ̄(|Δ|/se)`. The order-statistic
//! standard error is the McKean & Schrader (1984) estimator of the quantile's
//! sampling variance `q(1−q)/(n f(ξ_q)²)` without estimating the density `f`.

use serde::{Deserialize, Serialize};

use crate::dist::{norm_isf, norm_sf};
use crate::effect::{InsufficientData, Interval};
use crate::error::{check_alpha, Error, Result};

/// Per-unit values of one quantile metric in one variant, kept sorted.
///
/// Serialises as a plain array; deserialising sorts it and rejects NaN and
/// infinities, so a sample read from JSON is as valid as one built here.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<f64>", into = "Vec<f64>")]
pub struct QuantileSample {
    sorted: Vec<f64>,
}

impl TryFrom<Vec<f64>> for QuantileSample {
    type Error = Error;
    fn try_from(values: Vec<f64>) -> Result<Self> {
        Self::from_values(values)
    }
}

impl From<QuantileSample> for Vec<f64> {
    fn from(s: QuantileSample) -> Vec<f64> {
        s.sorted
    }
}

impl QuantileSample {
    /// Builds a sample from per-unit values (any order); rejects NaN and infinities.
    pub fn from_values(mut values: Vec<f64>) -> Result<Self> {
        if let Some(&value) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                field: "values",
                value,
            });
        }
        // Values equal under the total order are identical: an unstable
        // sort gives the same result, quicker.
        values.sort_unstable_by(f64::total_cmp);
        Ok(Self { sorted: values })
    }

    /// Merges another partition (sorted merge).
    pub fn merge(&mut self, other: &Self) {
        let mut out = Vec::with_capacity(self.sorted.len() + other.sorted.len());
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.sorted, &other.sorted);
        while i < a.len() && j < b.len() {
            if a[i] <= b[j] {
                out.push(a[i]);
                i += 1;
            } else {
                out.push(b[j]);
                j += 1;
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        self.sorted = out;
    }

    /// Number of units.
    pub fn n(&self) -> usize {
        self.sorted.len()
    }

    /// The sorted values.
    pub fn values(&self) -> &[f64] {
        &self.sorted
    }

    /// Sample quantile (Hyndman–Fan type 7); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.sorted.len();
        if n == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let h = (n - 1) as f64 * q;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(n - 1);
        Some(self.sorted[lo] + (h - lo as f64) * (self.sorted[hi] - self.sorted[lo]))
    }
}

/// Regularised incomplete beta function `I_x(a, b)` for a, b > 0.
fn beta_inc_reg(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front =
        libm::lgamma(a + b) - libm::lgamma(a) - libm::lgamma(b) + a * x.ln() + b * (-x).ln_1p();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * crate::dist::beta_cf(a, b, x) / a
    } else {
        1.0 - front * crate::dist::beta_cf(b, a, 1.0 - x) / b
    }
}

/// `P(B ≤ k)` for `B ~ Binomial(n, q)`.
fn binom_cdf(k: i64, n: u64, q: f64) -> f64 {
    if k < 0 {
        return 0.0;
    }
    if k as u64 >= n {
        return 1.0;
    }
    let k = k as f64;
    beta_inc_reg(n as f64 - k, k + 1.0, 1.0 - q)
}

/// A quantile of one variant with its distribution-free interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantileEstimate {
    /// The probability level q (0.5 for the median).
    pub q: f64,
    /// Number of units.
    pub n: u64,
    /// Sample quantile (type 7).
    pub estimate: f64,
    /// Order-statistic interval `[x_(l), x_(u)]`.
    pub ci: Interval,
    /// 1-based ranks `(l, u)` of the interval's order statistics.
    pub ranks: (u64, u64),
    /// Exact coverage `P(l ≤ B ≤ u − 1)` of the interval for continuous data.
    pub coverage: f64,
    /// Standard error read off the interval, `(x_(u) − x_(l)) / (2 z_{(1+coverage)/2})`.
    pub std_error: f64,
}

/// The quantile `q` of `sample` with a `(1 − α)` distribution-free interval.
pub fn quantile_ci(
    sample: &QuantileSample,
    q: f64,
    alpha: f64,
) -> Result<std::result::Result<QuantileEstimate, InsufficientData>> {
    check_alpha("alpha", alpha)?;
    if !(q > 0.0 && q < 1.0) {
        return Err(Error::OutOfRange {
            field: "q",
            expected: "in (0, 1)",
            value: q,
        });
    }
    let n = sample.n() as u64;
    let Some(estimate) = sample.quantile(q) else {
        return Ok(Err(InsufficientData::TooFewUnits));
    };
    let nf = n as f64;
    let half = alpha / 2.0;
    // Start from the normal approximation, then step to the exact ranks.
    let z = norm_isf(half);
    let sd = (nf * q * (1.0 - q)).sqrt();
    // l: largest l with P(B ≤ l − 1) ≤ α/2.
    let mut l = ((nf * q - z * sd).floor() as i64).max(0);
    while l > 0 && binom_cdf(l - 1, n, q) > half {
        l -= 1;
    }
    while binom_cdf(l, n, q) <= half {
        l += 1;
    }
    // u: smallest u with P(B ≥ u) ≤ α/2, i.e. P(B ≤ u − 1) ≥ 1 − α/2.
    let mut u = ((nf * q + z * sd).ceil() as i64 + 1).min(n as i64 + 1);
    while u > 1 && 1.0 - binom_cdf(u - 2, n, q) <= half {
        u -= 1;
    }
    while 1.0 - binom_cdf(u - 1, n, q) > half {
        u += 1;
    }
    if l < 1 || u as u64 > n {
        return Ok(Err(InsufficientData::TooFewUnits));
    }
    let coverage = binom_cdf(u - 1, n, q) - binom_cdf(l - 1, n, q);
    let x = sample.values();
    let (lo, hi) = (x[l as usize - 1], x[u as usize - 1]);
    let std_error = (hi - lo) / (2.0 * norm_isf((1.0 - coverage) / 2.0));
    Ok(Ok(QuantileEstimate {
        q,
        n,
        estimate,
        ci: Interval {
            lower: lo,
            upper: hi,
        },
        ranks: (l as u64, u as u64),
        coverage,
        std_error,
    }))
}

/// Difference of a quantile between treatment and control.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantileDifference {
    /// Control's quantile.
    pub control: QuantileEstimate,
    /// Treatment's quantile.
    pub treatment: QuantileEstimate,
    /// `ξ̂_t − ξ̂_c`.
    pub difference: f64,
    /// `√(se_t² + se_c²)`.
    pub std_error: f64,
    /// `(1 − α)` interval for the difference.
    pub ci: Interval,
    /// Two-sided p-value of no difference.
    pub p_value: f64,
}

/// Treatment − control difference of quantile `q` (Price–Bonett interval).
pub fn quantile_difference(
    control: &QuantileSample,
    treatment: &QuantileSample,
    q: f64,
    alpha: f64,
) -> Result<std::result::Result<QuantileDifference, InsufficientData>> {
    let c = match quantile_ci(control, q, alpha)? {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let t = match quantile_ci(treatment, q, alpha)? {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    let difference = t.estimate - c.estimate;
    let std_error = (t.std_error * t.std_error + c.std_error * c.std_error).sqrt();
    if !(std_error > 0.0) {
        return Ok(Err(InsufficientData::ZeroVariance));
    }
    let z = norm_isf(alpha / 2.0);
    Ok(Ok(QuantileDifference {
        control: c,
        treatment: t,
        difference,
        std_error,
        ci: Interval {
            lower: difference - z * std_error,
            upper: difference + z * std_error,
        },
        p_value: 2.0 * norm_sf((difference / std_error).abs()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type7_quantiles() {
        let s = QuantileSample::from_values(vec![4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.quantile(0.5), Some(2.5));
        assert_eq!(s.quantile(0.0), Some(1.0));
        assert_eq!(s.quantile(1.0), Some(4.0));
        assert!((s.quantile(0.9).unwrap() - 3.7).abs() < 1e-15);
        assert_eq!(QuantileSample::default().quantile(0.5), None);
    }

    #[test]
    fn binomial_cdf_small_case() {
        // Bin(4, 0.5): P(B ≤ 1) = 5/16.
        assert!((binom_cdf(1, 4, 0.5) - 5.0 / 16.0).abs() < 1e-14);
        assert!((binom_cdf(2, 10, 0.3) - 0.382_782_786_4).abs() < 1e-12);
    }

    #[test]
    fn median_ranks_match_the_classic_table() {
        // n = 20, 95 %: the median interval is [x_(6), x_(15)] with coverage 0.9586.
        let s = QuantileSample::from_values((1..=20).map(f64::from).collect()).unwrap();
        let e = quantile_ci(&s, 0.5, 0.05).unwrap().unwrap();
        assert_eq!(e.ranks, (6, 15));
        assert!((e.coverage - 0.958_610_5).abs() < 1e-6);
    }

    #[test]
    fn too_few_units_for_a_tail_quantile() {
        let s = QuantileSample::from_values((1..=10).map(f64::from).collect()).unwrap();
        assert_eq!(
            quantile_ci(&s, 0.99, 0.05).unwrap(),
            Err(InsufficientData::TooFewUnits)
        );
        assert!(QuantileSample::from_values(vec![1.0, f64::NAN]).is_err());
        assert!(quantile_ci(&s, 1.0, 0.05).is_err());
    }

    #[test]
    fn json_round_trip_sorts_and_validates() {
        let s: QuantileSample = serde_json::from_str("[3.0, 1.0, 2.0]").unwrap();
        assert_eq!(s.values(), &[1.0, 2.0, 3.0]);
        assert_eq!(serde_json::to_string(&s).unwrap(), "[1.0,2.0,3.0]");
        assert!(serde_json::from_str::<QuantileSample>("[1.0, null]").is_err());
    }

    #[test]
    fn merge_is_sorted_concatenation() {
        let mut a = QuantileSample::from_values(vec![3.0, 1.0]).unwrap();
        a.merge(&QuantileSample::from_values(vec![2.0, 0.0, 5.0]).unwrap());
        assert_eq!(a.values(), &[0.0, 1.0, 2.0, 3.0, 5.0]);
    }
}
