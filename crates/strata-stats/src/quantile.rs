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
//! # Values several per unit
//! A sample built per unit ([`QuantileSample::from_units`]: a unit's page
//! loads) whose units have more than one value each takes the rank interval
//! of Deng, Knoblich & Lu (2018) instead, with the delta-method variance of
//! the share of values below the estimate over units: values of one unit
//! move together (a slow device loads every page slowly), and an interval
//! that counted them as independent draws would be too narrow by the design
//! effect (see `clustered_ci`). Its coverage is the nominal `1 − α`.
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
    /// The unit of each value of `sorted` (same order), when values come
    /// several per unit: their interval then accounts for the correlation
    /// within a unit. In memory only; not serialized.
    units: Option<Vec<u32>>,
    /// How many units `units` numbers (0 without units).
    n_units: u32,
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
        Ok(Self {
            sorted: values,
            units: None,
            n_units: 0,
        })
    }

    /// Builds a sample from the values of several units, the values of
    /// unit `i` being the next `sizes[i]` of `values` (a unit's page loads,
    /// say). The interval then treats units, not values, as the
    /// independent draws ([`quantile_ci`]). Rejects NaN and infinities, and
    /// sizes that do not add up to the number of values.
    pub fn from_units(values: Vec<f64>, sizes: &[usize]) -> Result<Self> {
        if let Some(&value) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                field: "values",
                value,
            });
        }
        let total: usize = sizes.iter().sum();
        if total != values.len() || u32::try_from(sizes.len()).is_err() {
            return Err(Error::OutOfRange {
                field: "sizes",
                expected: "sizes adding up to the number of values",
                value: total as f64,
            });
        }
        // Sorted by value in the total order, then by unit: the pairs are
        // made in the order of their units, and a stable radix sort by the
        // value (whose key orders doubles as `f64::total_cmp` does) keeps
        // that order among equal values (millions of values per variant at
        // scale: a comparison sort took a tenth of a 50-experiment run).
        let mut pairs: Vec<(f64, u32)> = Vec::with_capacity(values.len());
        let mut at = 0;
        for (unit, &size) in sizes.iter().enumerate() {
            pairs.extend(values[at..at + size].iter().map(|&v| (v, unit as u32)));
            at += size;
        }
        radsort::sort_by_key(&mut pairs, |p| p.0);
        let (sorted, units) = pairs.into_iter().unzip();
        Ok(Self {
            sorted,
            units: Some(units),
            n_units: sizes.len() as u32,
        })
    }

    /// How many units the values come from, when the sample knows them.
    pub fn units(&self) -> Option<u32> {
        self.units.as_ref().map(|_| self.n_units)
    }

    /// Merges another partition (sorted merge). Its units are other units
    /// than this sample's; merged with a sample that does not know its
    /// units, the result does not either.
    pub fn merge(&mut self, other: &Self) {
        let mut out = Vec::with_capacity(self.sorted.len() + other.sorted.len());
        let mut units = match (&self.units, &other.units) {
            (Some(_), Some(_)) => Some(Vec::with_capacity(out.capacity())),
            _ => None,
        };
        let offset = self.n_units;
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.sorted, &other.sorted);
        let unit_a = |i: usize| self.units.as_ref().map_or(0, |u| u[i]);
        let unit_b = |j: usize| other.units.as_ref().map_or(0, |u| u[j] + offset);
        while i < a.len() || j < b.len() {
            let take_a = j >= b.len() || (i < a.len() && a[i] <= b[j]);
            let (v, unit) = if take_a {
                i += 1;
                (a[i - 1], unit_a(i - 1))
            } else {
                j += 1;
                (b[j - 1], unit_b(j - 1))
            };
            out.push(v);
            if let Some(u) = units.as_mut() {
                u.push(unit);
            }
        }
        self.sorted = out;
        self.n_units = if units.is_some() {
            self.n_units + other.n_units
        } else {
            0
        };
        self.units = units;
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
    if let Some(units) = &sample.units {
        if sample.n_units > 0 && (sample.n_units as usize) < sample.sorted.len() {
            return Ok(clustered_ci(sample, units, q, estimate, alpha));
        }
    }
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

/// [`quantile_ci`] of a sample whose units have several values each: the
/// rank interval of Deng, Knoblich & Lu (2018, "Applying the delta method
/// in metric analytics", KDD, §4.2). The share of values at or below the
/// estimate is a ratio of per-unit sums, `p̂ = Σ a_i / Σ m_i` (`a_i` of unit
/// i's `m_i` values at or below it); its delta-method variance over the `k`
/// units is `σ² = Σ (a_i − p̂ m_i)² / (k (k − 1) m̄²)`; the interval is
/// `[x_(L), x_(U)]` with `L = ⌊N (q − z σ)⌋` and `U = ⌈N (q + z σ)⌉` (`N`
/// values). With one value per unit `σ² ≈ q (1 − q)/N`, the binomial
/// interval's normal form; values of one unit that move together widen it
/// by the design effect, which treating them as independent would hide.
fn clustered_ci(
    sample: &QuantileSample,
    units: &[u32],
    q: f64,
    estimate: f64,
    alpha: f64,
) -> std::result::Result<QuantileEstimate, InsufficientData> {
    let x = sample.values();
    let n = x.len();
    let k = sample.n_units as usize;
    if k < 2 {
        return Err(InsufficientData::TooFewUnits);
    }
    let mut below = vec![0u32; k];
    let mut count = vec![0u32; k];
    for (v, &u) in x.iter().zip(units) {
        count[u as usize] += 1;
        if *v <= estimate {
            below[u as usize] += 1;
        }
    }
    let (sum_a, sum_m) = (below.iter().map(|&a| f64::from(a)).sum::<f64>(), n as f64);
    let p = sum_a / sum_m;
    let m_bar = sum_m / k as f64;
    let ss: f64 = below
        .iter()
        .zip(&count)
        .map(|(&a, &m)| {
            let r = f64::from(a) - p * f64::from(m);
            r * r
        })
        .sum();
    let sigma = (ss / (k as f64 * (k as f64 - 1.0)) / (m_bar * m_bar)).sqrt();
    let z = norm_isf(alpha / 2.0);
    let nf = n as f64;
    let l = (nf * (q - z * sigma)).floor();
    let u = (nf * (q + z * sigma)).ceil();
    if l < 1.0 || u > nf {
        return Err(InsufficientData::TooFewUnits);
    }
    let (l, u) = (l as usize, u as usize);
    let (lo, hi) = (x[l - 1], x[u - 1]);
    Ok(QuantileEstimate {
        q,
        n: n as u64,
        estimate,
        ci: Interval {
            lower: lo,
            upper: hi,
        },
        ranks: (l as u64, u as u64),
        coverage: 1.0 - alpha,
        std_error: (hi - lo) / (2.0 * z),
    })
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
    fn samples_by_unit_keep_each_value_with_its_unit() {
        let s = QuantileSample::from_units(vec![5.0, 1.0, 3.0, 2.0], &[2, 1, 1]).unwrap();
        assert_eq!(s.values(), &[1.0, 2.0, 3.0, 5.0]);
        assert_eq!(s.units, Some(vec![0, 2, 1, 0]));
        assert_eq!(s.units(), Some(3));
        assert!(QuantileSample::from_units(vec![1.0, 2.0], &[1]).is_err());
        assert!(QuantileSample::from_units(vec![f64::INFINITY], &[1]).is_err());
        let mut a = s.clone();
        a.merge(&QuantileSample::from_units(vec![4.0], &[1]).unwrap());
        assert_eq!(a.values(), &[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(
            (a.units.clone(), a.units()),
            (Some(vec![0, 2, 1, 3, 0]), Some(4))
        );
        a.merge(&QuantileSample::from_values(vec![0.0]).unwrap());
        assert_eq!((a.values().len(), a.units()), (6, None));
    }

    #[test]
    fn one_value_per_unit_keeps_the_exact_binomial_interval() {
        let values: Vec<f64> = (1..=200).map(f64::from).collect();
        let by_value = QuantileSample::from_values(values.clone()).unwrap();
        let by_unit = QuantileSample::from_units(values, &[1; 200]).unwrap();
        assert_eq!(
            quantile_ci(&by_value, 0.9, 0.05).unwrap(),
            quantile_ci(&by_unit, 0.9, 0.05).unwrap()
        );
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

    proptest::proptest! {
        /// Any two finite values of two units are ordered as
        /// `f64::total_cmp` orders them (so `-0.0` before `0.0`) and come
        /// back bit for bit.
        #[test]
        fn values_are_ordered_as_total_cmp(
            a in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
            b in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
        ) {
            let s = QuantileSample::from_units(vec![a, b], &[1, 1]).unwrap();
            let (lo, hi) = if a.total_cmp(&b).is_gt() { (b, a) } else { (a, b) };
            proptest::prop_assert_eq!(
                s.values().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                vec![lo.to_bits(), hi.to_bits()]
            );
        }

        /// A sample of several units' values is sorted by value in the
        /// total order and, among equal values, by unit, as a comparison
        /// sort of the pairs orders them (values drawn from a few, so that
        /// many are equal; both zeros among them).
        #[test]
        fn units_values_are_sorted_by_value_then_unit(
            units in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(vec![-0.0, 0.0, 1.5, -2.25, 1e300, 3.0, 1.5e-300]),
                    0..6,
                ),
                1..40,
            )
        ) {
            let sizes: Vec<usize> = units.iter().map(Vec::len).collect();
            let values: Vec<f64> = units.concat();
            let mut expected: Vec<(f64, u32)> = units
                .iter()
                .enumerate()
                .flat_map(|(u, v)| v.iter().map(move |&x| (x, u as u32)))
                .collect();
            expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let s = QuantileSample::from_units(values, &sizes).unwrap();
            let got: Vec<(u64, u32)> = s
                .values()
                .iter()
                .map(|v| v.to_bits())
                .zip(s.units.clone().unwrap())
                .collect();
            let expected: Vec<(u64, u32)> = expected.iter().map(|(v, u)| (v.to_bits(), *u)).collect();
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn values_at_the_edges_are_in_order() {
        let v = [
            f64::MIN,
            -1.0,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            1.0,
            f64::MAX,
        ];
        let reversed: Vec<f64> = v.iter().rev().copied().collect();
        let sizes = vec![1; v.len()];
        let s = QuantileSample::from_units(reversed, &sizes).unwrap();
        assert_eq!(
            s.values().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        let s = QuantileSample::from_units(vec![0.0, -0.0, 2.0, -3.0], &[2, 2]).unwrap();
        assert_eq!(
            s.values().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            [-3.0f64, -0.0, 0.0, 2.0]
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        );
        assert_eq!(s.units, Some(vec![1, 0, 0, 1]));
    }
}
