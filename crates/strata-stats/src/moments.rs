//! Mergeable sufficient statistics.
//!
//! Every statistic in this crate is a function of a few per-variant sums:
//! `n, Σy, Σy²` for means; additionally `Σx, Σx², Σxy` for CUPED; and
//! `Σnum, Σden, Σnum², Σden², Σnum·den` for ratio metrics. Storing those raw
//! sums is numerically unsafe: for revenue-sized values (say 10^6 ± 1 over
//! 10^8 units) `Σy²` is ~10^20 and the variance `Σy²/n − ȳ²` cancels every
//! significant digit. The types here therefore store the equivalent **centred
//! moments** — `n`, the means and the sums of squared (cross-)deviations
//! `M2 = Σ(y − ȳ)²`, `C = Σ(x − x̄)(y − ȳ)` — and expose the raw sums as
//! accessors (`sum`, `sum_sq`, `sum_xy`, …) for interoperability.
//!
//! * **Single values** are added with Welford's update (Welford 1962).
//! * **Slices** use the corrected two-pass algorithm (Chan, Golub & LeVeque
//!   1983): a Neumaier-compensated mean, then `Σ(y − ȳ)²` minus the rounding
//!   correction `(Σ(y − ȳ))²/n`.
//! * **Merging** partitions uses the pairwise update of Chan, Golub & LeVeque
//!   (1979), exact in real arithmetic, so partial statistics computed on
//!   different workers combine in any order and grouping; in floating point
//!   different groupings agree to a few ulps:
//!
//! ```text
//! n = n_a + n_b,  δ = ȳ_b − ȳ_a,  ȳ = ȳ_a + δ·n_b/n,
//! M2 = M2_a + M2_b + δ²·n_a·n_b/n,   C = C_a + C_b + δ_x·δ_y·n_a·n_b/n
//! ```
//!
//! Engines that can only produce raw sums may use `from_sums`, accepting the
//! cancellation risk that comes with them.

use serde::{Deserialize, Serialize};

use crate::error::{finite, Error, Result};

/// Neumaier-compensated sum of a slice.
fn compensated_sum(values: impl Iterator<Item = f64>) -> f64 {
    let mut sum = 0.0_f64;
    let mut comp = 0.0_f64;
    for v in values {
        let t = sum + v;
        if sum.abs() >= v.abs() {
            comp += (sum - t) + v;
        } else {
            comp += (v - t) + sum;
        }
        sum = t;
    }
    sum + comp
}

fn check_all_finite(field: &'static str, values: &[f64]) -> Result<()> {
    match values.iter().find(|v| !v.is_finite()) {
        Some(&value) => Err(Error::NonFinite { field, value }),
        None => Ok(()),
    }
}

fn check_m2(field: &'static str, m2: f64) -> Result<f64> {
    finite(field, m2)?;
    if m2 < 0.0 {
        return Err(Error::OutOfRange {
            field,
            expected: "non-negative",
            value: m2,
        });
    }
    Ok(m2)
}

/// Sufficient statistics of one metric in one variant: `n`, mean and
/// `M2 = Σ(y − ȳ)²`.
///
/// Deserialisation validates like [`MeanStats::from_moments`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "MeanStatsRepr")]
pub struct MeanStats {
    n: u64,
    mean: f64,
    m2: f64,
}

impl MeanStats {
    /// Empty statistics (no units).
    pub fn new() -> Self {
        Self::default()
    }

    /// Statistics of a slice of per-unit values (corrected two-pass algorithm).
    pub fn from_values(values: &[f64]) -> Result<Self> {
        check_all_finite("values", values)?;
        if values.is_empty() {
            return Ok(Self::new());
        }
        let n = values.len() as f64;
        let mean = compensated_sum(values.iter().copied()) / n;
        let (mut ss, mut s) = (0.0, 0.0);
        for &v in values {
            let d = v - mean;
            ss += d * d;
            s += d;
        }
        Ok(Self {
            n: values.len() as u64,
            mean,
            m2: (ss - s * s / n).max(0.0),
        })
    }

    /// Statistics from already-centred moments: count, mean and `Σ(y − ȳ)²`.
    pub fn from_moments(n: u64, mean: f64, m2: f64) -> Result<Self> {
        finite("mean", mean)?;
        check_m2("m2", m2)?;
        if n == 0 && (mean != 0.0 || m2 != 0.0) {
            return Err(Error::Invalid {
                field: "n",
                reason: "zero units but non-zero moments",
            });
        }
        Ok(Self { n, mean, m2 })
    }

    /// Statistics from raw sums `Σy` and `Σy²`.
    ///
    /// Raw sums lose precision when the mean is large relative to the
    /// standard deviation; prefer [`MeanStats::from_values`] or merging. A
    /// slightly negative `Σy² − (Σy)²/n` caused by rounding is clamped to 0.
    pub fn from_sums(n: u64, sum: f64, sum_sq: f64) -> Result<Self> {
        finite("sum", sum)?;
        finite("sum_sq", sum_sq)?;
        if n == 0 {
            return Self::from_moments(0, sum, sum_sq);
        }
        let nf = n as f64;
        let mean = sum / nf;
        let m2 = sum_sq - sum * mean;
        if m2 < -1e-9 * sum_sq.abs().max(f64::MIN_POSITIVE) {
            return Err(Error::Invalid {
                field: "sum_sq",
                reason: "smaller than sum squared over n",
            });
        }
        Ok(Self {
            n,
            mean,
            m2: m2.max(0.0),
        })
    }

    /// Adds one unit's value (Welford's update).
    pub fn push(&mut self, value: f64) -> Result<()> {
        finite("value", value)?;
        self.n += 1;
        let d = value - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (value - self.mean);
        Ok(())
    }

    /// Merges another partition into this one (Chan et al. pairwise update).
    pub fn merge(&mut self, other: &Self) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * (nb / n);
        self.m2 += other.m2 + delta * delta * (na * nb / n);
        self.n += other.n;
    }

    /// Number of units.
    pub fn n(&self) -> u64 {
        self.n
    }
    /// Mean ȳ (0 when empty).
    pub fn mean(&self) -> f64 {
        self.mean
    }
    /// Sum of squared deviations `Σ(y − ȳ)²`.
    pub fn m2(&self) -> f64 {
        self.m2
    }
    /// `Σy`.
    pub fn sum(&self) -> f64 {
        self.n as f64 * self.mean
    }
    /// `Σy²`, reconstructed as `M2 + n·ȳ²`.
    pub fn sum_sq(&self) -> f64 {
        self.m2 + self.n as f64 * self.mean * self.mean
    }
    /// Sample variance with the n − 1 denominator; `None` when n < 2.
    pub fn variance(&self) -> Option<f64> {
        (self.n >= 2).then(|| self.m2 / (self.n - 1) as f64)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        finite("mean", self.mean)?;
        check_m2("m2", self.m2)?;
        Ok(())
    }
}

/// Centred bivariate moments shared by [`CupedStats`] and [`RatioStats`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Bivariate {
    n: u64,
    mean_a: f64,
    mean_b: f64,
    m2_a: f64,
    m2_b: f64,
    c_ab: f64,
}

impl Bivariate {
    fn from_values(
        a: &[f64],
        b: &[f64],
        field_a: &'static str,
        field_b: &'static str,
    ) -> Result<Self> {
        if a.len() != b.len() {
            return Err(Error::LengthMismatch {
                field: field_b,
                expected: a.len(),
                actual: b.len(),
            });
        }
        check_all_finite(field_a, a)?;
        check_all_finite(field_b, b)?;
        if a.is_empty() {
            return Ok(Self::default());
        }
        let n = a.len() as f64;
        let mean_a = compensated_sum(a.iter().copied()) / n;
        let mean_b = compensated_sum(b.iter().copied()) / n;
        let (mut saa, mut sbb, mut sab, mut sa, mut sb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&x, &y) in a.iter().zip(b) {
            let (da, db) = (x - mean_a, y - mean_b);
            saa += da * da;
            sbb += db * db;
            sab += da * db;
            sa += da;
            sb += db;
        }
        Ok(Self {
            n: a.len() as u64,
            mean_a,
            mean_b,
            m2_a: (saa - sa * sa / n).max(0.0),
            m2_b: (sbb - sb * sb / n).max(0.0),
            c_ab: sab - sa * sb / n,
        })
    }

    fn push(&mut self, a: f64, b: f64) {
        self.n += 1;
        let n = self.n as f64;
        let da = a - self.mean_a;
        let db = b - self.mean_b;
        self.mean_a += da / n;
        self.mean_b += db / n;
        self.m2_a += da * (a - self.mean_a);
        self.m2_b += db * (b - self.mean_b);
        self.c_ab += da * (b - self.mean_b);
    }

    fn merge(&mut self, o: &Self) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let (na, nb) = (self.n as f64, o.n as f64);
        let n = na + nb;
        let (da, db) = (o.mean_a - self.mean_a, o.mean_b - self.mean_b);
        let w = na * nb / n;
        self.mean_a += da * (nb / n);
        self.mean_b += db * (nb / n);
        self.m2_a += o.m2_a + da * da * w;
        self.m2_b += o.m2_b + db * db * w;
        self.c_ab += o.c_ab + da * db * w;
        self.n += o.n;
    }

    #[allow(clippy::too_many_arguments)]
    fn checked(
        n: u64,
        mean_a: f64,
        mean_b: f64,
        m2_a: f64,
        m2_b: f64,
        c_ab: f64,
        names: [&'static str; 5],
    ) -> Result<Self> {
        finite(names[0], mean_a)?;
        finite(names[1], mean_b)?;
        check_m2(names[2], m2_a)?;
        check_m2(names[3], m2_b)?;
        finite(names[4], c_ab)?;
        // Cauchy–Schwarz, with slack for rounding.
        if c_ab * c_ab > m2_a * m2_b * (1.0 + 1e-9) + f64::MIN_POSITIVE {
            return Err(Error::Invalid {
                field: names[4],
                reason: "exceeds the cauchy-schwarz bound of the variances",
            });
        }
        if n == 0 && (mean_a != 0.0 || mean_b != 0.0 || m2_a != 0.0 || m2_b != 0.0 || c_ab != 0.0) {
            return Err(Error::Invalid {
                field: "n",
                reason: "zero units but non-zero moments",
            });
        }
        Ok(Self {
            n,
            mean_a,
            mean_b,
            m2_a,
            m2_b,
            c_ab,
        })
    }
}

/// Sufficient statistics of a metric `y` with a pre-experiment covariate `x`
/// in one variant, for CUPED.
///
/// Stored as `n`, `ȳ`, `x̄`, `Σ(y − ȳ)²`, `Σ(x − x̄)²` and `Σ(x − x̄)(y − ȳ)`.
///
/// Deserialisation validates like [`CupedStats::from_moments`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "CupedStatsRepr")]
pub struct CupedStats {
    n: u64,
    mean_y: f64,
    mean_x: f64,
    m2_y: f64,
    m2_x: f64,
    c_xy: f64,
}

impl CupedStats {
    fn raw(&self) -> Bivariate {
        Bivariate {
            n: self.n,
            mean_a: self.mean_y,
            mean_b: self.mean_x,
            m2_a: self.m2_y,
            m2_b: self.m2_x,
            c_ab: self.c_xy,
        }
    }
    fn from_raw(b: Bivariate) -> Self {
        Self {
            n: b.n,
            mean_y: b.mean_a,
            mean_x: b.mean_b,
            m2_y: b.m2_a,
            m2_x: b.m2_b,
            c_xy: b.c_ab,
        }
    }

    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Statistics of paired per-unit values `y` (metric) and `x` (covariate).
    pub fn from_values(y: &[f64], x: &[f64]) -> Result<Self> {
        Bivariate::from_values(y, x, "y", "x").map(Self::from_raw)
    }

    /// Statistics from centred moments.
    pub fn from_moments(
        n: u64,
        mean_y: f64,
        mean_x: f64,
        m2_y: f64,
        m2_x: f64,
        c_xy: f64,
    ) -> Result<Self> {
        Bivariate::checked(
            n,
            mean_y,
            mean_x,
            m2_y,
            m2_x,
            c_xy,
            ["mean_y", "mean_x", "m2_y", "m2_x", "c_xy"],
        )
        .map(Self::from_raw)
    }

    /// Adds one unit's metric value `y` and covariate `x`.
    pub fn push(&mut self, y: f64, x: f64) -> Result<()> {
        finite("y", y)?;
        finite("x", x)?;
        let mut b = self.raw();
        b.push(y, x);
        *self = Self::from_raw(b);
        Ok(())
    }

    /// Merges another partition into this one.
    pub fn merge(&mut self, other: &Self) {
        let mut b = self.raw();
        b.merge(&other.raw());
        *self = Self::from_raw(b);
    }

    /// Number of units.
    pub fn n(&self) -> u64 {
        self.n
    }
    /// Mean of the metric.
    pub fn mean_y(&self) -> f64 {
        self.mean_y
    }
    /// Mean of the covariate.
    pub fn mean_x(&self) -> f64 {
        self.mean_x
    }
    /// `Σ(y − ȳ)²`.
    pub fn m2_y(&self) -> f64 {
        self.m2_y
    }
    /// `Σ(x − x̄)²`.
    pub fn m2_x(&self) -> f64 {
        self.m2_x
    }
    /// `Σ(x − x̄)(y − ȳ)`.
    pub fn c_xy(&self) -> f64 {
        self.c_xy
    }
    /// `Σy`.
    pub fn sum(&self) -> f64 {
        self.n as f64 * self.mean_y
    }
    /// `Σy²`.
    pub fn sum_sq(&self) -> f64 {
        self.m2_y + self.n as f64 * self.mean_y * self.mean_y
    }
    /// `Σx`.
    pub fn sum_x(&self) -> f64 {
        self.n as f64 * self.mean_x
    }
    /// `Σx²`.
    pub fn sum_x_sq(&self) -> f64 {
        self.m2_x + self.n as f64 * self.mean_x * self.mean_x
    }
    /// `Σxy`.
    pub fn sum_xy(&self) -> f64 {
        self.c_xy + self.n as f64 * self.mean_x * self.mean_y
    }
    /// The metric alone, without the covariate.
    pub fn metric(&self) -> MeanStats {
        MeanStats {
            n: self.n,
            mean: self.mean_y,
            m2: self.m2_y,
        }
    }
    /// The covariate alone.
    pub fn covariate(&self) -> MeanStats {
        MeanStats {
            n: self.n,
            mean: self.mean_x,
            m2: self.m2_x,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        Self::from_moments(
            self.n,
            self.mean_y,
            self.mean_x,
            self.m2_y,
            self.m2_x,
            self.c_xy,
        )
        .map(|_| ())
    }
}

/// Sufficient statistics of a ratio metric `Σnum / Σden` in one variant
/// (for example revenue per order, with per-unit revenue and order counts).
///
/// Stored as `n`, the per-unit means of numerator and denominator, their
/// sums of squared deviations and their sum of cross-deviations.
///
/// Deserialisation validates like [`RatioStats::from_moments`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "RatioStatsRepr")]
pub struct RatioStats {
    n: u64,
    mean_num: f64,
    mean_den: f64,
    m2_num: f64,
    m2_den: f64,
    c_num_den: f64,
}

impl RatioStats {
    fn raw(&self) -> Bivariate {
        Bivariate {
            n: self.n,
            mean_a: self.mean_num,
            mean_b: self.mean_den,
            m2_a: self.m2_num,
            m2_b: self.m2_den,
            c_ab: self.c_num_den,
        }
    }
    fn from_raw(b: Bivariate) -> Self {
        Self {
            n: b.n,
            mean_num: b.mean_a,
            mean_den: b.mean_b,
            m2_num: b.m2_a,
            m2_den: b.m2_b,
            c_num_den: b.c_ab,
        }
    }

    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Statistics of paired per-unit numerators and denominators.
    pub fn from_values(num: &[f64], den: &[f64]) -> Result<Self> {
        Bivariate::from_values(num, den, "num", "den").map(Self::from_raw)
    }

    /// Statistics from centred moments.
    pub fn from_moments(
        n: u64,
        mean_num: f64,
        mean_den: f64,
        m2_num: f64,
        m2_den: f64,
        c_num_den: f64,
    ) -> Result<Self> {
        Bivariate::checked(
            n,
            mean_num,
            mean_den,
            m2_num,
            m2_den,
            c_num_den,
            ["mean_num", "mean_den", "m2_num", "m2_den", "c_num_den"],
        )
        .map(Self::from_raw)
    }

    /// Adds one unit's numerator and denominator.
    pub fn push(&mut self, num: f64, den: f64) -> Result<()> {
        finite("num", num)?;
        finite("den", den)?;
        let mut b = self.raw();
        b.push(num, den);
        *self = Self::from_raw(b);
        Ok(())
    }

    /// Merges another partition into this one.
    pub fn merge(&mut self, other: &Self) {
        let mut b = self.raw();
        b.merge(&other.raw());
        *self = Self::from_raw(b);
    }

    /// Number of units.
    pub fn n(&self) -> u64 {
        self.n
    }
    /// Per-unit mean of the numerator.
    pub fn mean_num(&self) -> f64 {
        self.mean_num
    }
    /// Per-unit mean of the denominator.
    pub fn mean_den(&self) -> f64 {
        self.mean_den
    }
    /// `Σ(num − mean)²`.
    pub fn m2_num(&self) -> f64 {
        self.m2_num
    }
    /// `Σ(den − mean)²`.
    pub fn m2_den(&self) -> f64 {
        self.m2_den
    }
    /// `Σ(num − mean)(den − mean)`.
    pub fn c_num_den(&self) -> f64 {
        self.c_num_den
    }
    /// `Σnum`.
    pub fn sum_num(&self) -> f64 {
        self.n as f64 * self.mean_num
    }
    /// `Σden`.
    pub fn sum_den(&self) -> f64 {
        self.n as f64 * self.mean_den
    }
    /// `Σnum²`.
    pub fn sum_num_sq(&self) -> f64 {
        self.m2_num + self.n as f64 * self.mean_num * self.mean_num
    }
    /// `Σden²`.
    pub fn sum_den_sq(&self) -> f64 {
        self.m2_den + self.n as f64 * self.mean_den * self.mean_den
    }
    /// `Σnum·den`.
    pub fn sum_num_den(&self) -> f64 {
        self.c_num_den + self.n as f64 * self.mean_num * self.mean_den
    }

    pub(crate) fn validate(&self) -> Result<()> {
        Self::from_moments(
            self.n,
            self.mean_num,
            self.mean_den,
            self.m2_num,
            self.m2_den,
            self.c_num_den,
        )
        .map(|_| ())
    }
}

/// Unvalidated wire forms, checked on the way in.
#[derive(Deserialize)]
struct MeanStatsRepr {
    n: u64,
    mean: f64,
    m2: f64,
}

impl TryFrom<MeanStatsRepr> for MeanStats {
    type Error = Error;
    fn try_from(r: MeanStatsRepr) -> Result<Self> {
        Self::from_moments(r.n, r.mean, r.m2)
    }
}

#[derive(Deserialize)]
struct CupedStatsRepr {
    n: u64,
    mean_y: f64,
    mean_x: f64,
    m2_y: f64,
    m2_x: f64,
    c_xy: f64,
}

impl TryFrom<CupedStatsRepr> for CupedStats {
    type Error = Error;
    fn try_from(r: CupedStatsRepr) -> Result<Self> {
        Self::from_moments(r.n, r.mean_y, r.mean_x, r.m2_y, r.m2_x, r.c_xy)
    }
}

#[derive(Deserialize)]
struct RatioStatsRepr {
    n: u64,
    mean_num: f64,
    mean_den: f64,
    m2_num: f64,
    m2_den: f64,
    c_num_den: f64,
}

impl TryFrom<RatioStatsRepr> for RatioStats {
    type Error = Error;
    fn try_from(r: RatioStatsRepr) -> Result<Self> {
        Self::from_moments(r.n, r.mean_num, r.mean_den, r.m2_num, r.m2_den, r.c_num_den)
    }
}

/// `a + b` and `a += b` merge partitions, so per-worker statistics can be
/// summed with `Iterator::fold` or `Iterator::sum`.
macro_rules! impl_merge_ops {
    ($t:ty) => {
        impl std::ops::Add for $t {
            type Output = $t;
            fn add(mut self, other: $t) -> $t {
                self.merge(&other);
                self
            }
        }
        impl std::ops::Add<&$t> for $t {
            type Output = $t;
            fn add(mut self, other: &$t) -> $t {
                self.merge(other);
                self
            }
        }
        impl std::ops::AddAssign<&$t> for $t {
            fn add_assign(&mut self, other: &$t) {
                self.merge(other);
            }
        }
        impl std::iter::Sum for $t {
            fn sum<I: Iterator<Item = $t>>(iter: I) -> $t {
                iter.fold(<$t>::default(), |a, b| a + b)
            }
        }
    };
}

impl_merge_ops!(MeanStats);
impl_merge_ops!(CupedStats);
impl_merge_ops!(RatioStats);

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_variance(values: &[f64]) -> f64 {
        let n = values.len() as f64;
        let s: f64 = values.iter().sum();
        let ss: f64 = values.iter().map(|v| v * v).sum();
        (ss - s * s / n) / (n - 1.0)
    }

    #[test]
    fn welford_slice_and_merge_agree() {
        let v: Vec<f64> = (0..1000)
            .map(|i| ((i * 37) % 101) as f64 * 0.5 - 3.0)
            .collect();
        let a = MeanStats::from_values(&v).unwrap();
        let mut b = MeanStats::new();
        for &x in &v {
            b.push(x).unwrap();
        }
        let c =
            MeanStats::from_values(&v[..300]).unwrap() + MeanStats::from_values(&v[300..]).unwrap();
        for s in [b, c] {
            assert_eq!(s.n(), a.n());
            assert!((s.mean() - a.mean()).abs() < 1e-12);
            assert!((s.m2() - a.m2()).abs() < 1e-9 * a.m2());
        }
    }

    #[test]
    fn revenue_sized_values_keep_their_variance() {
        // 10^6 units around 10^9 (cents) with variance 1: Σy² ≈ 10^24, so the
        // naive formula loses every digit of the variance.
        let v: Vec<f64> = (0..1_000_000)
            .map(|i| 1e9 + if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let exact = 1_000_000.0 / 999_999.0;
        let s = MeanStats::from_values(&v).unwrap();
        assert!((s.variance().unwrap() - exact).abs() < 1e-9);
        let mut w = MeanStats::new();
        for &x in &v {
            w.push(x).unwrap();
        }
        assert!((w.variance().unwrap() - exact).abs() < 1e-6);
        assert!(
            (naive_variance(&v) - exact).abs() > 0.1,
            "the naive formula should fail here"
        );
    }

    #[test]
    fn merging_2_pow_27_units_stays_exact() {
        // A block of 1024 values around 10^6 merged with itself 17 times is
        // 2^27 ≈ 1.3·10^8 units with the same mean and (n−1)-scaled variance.
        let block: Vec<f64> = (0..1024)
            .map(|i| 1e6 + ((i % 7) as f64 - 3.0) * 0.01)
            .collect();
        let b = MeanStats::from_values(&block).unwrap();
        let mut s = b;
        for _ in 0..17 {
            s = s + s;
        }
        assert_eq!(s.n(), 1 << 27);
        let pop_var = b.m2() / 1024.0;
        let expect = pop_var * s.n() as f64 / (s.n() - 1) as f64;
        assert!((s.mean() - b.mean()).abs() < 1e-9);
        assert!((s.variance().unwrap() - expect).abs() < 1e-9 * expect);
        // The raw sums, rebuilt from them, cannot recover the variance.
        let naive = MeanStats::from_sums(s.n(), s.sum(), s.sum_sq());
        let bad = naive.map(|m| (m.variance().unwrap_or(0.0) - expect).abs() > 1e-3 * expect);
        assert!(bad.unwrap_or(true));
    }

    #[test]
    fn bivariate_merge_matches_slice() {
        let y: Vec<f64> = (0..500)
            .map(|i| (i as f64 * 0.7).sin() * 10.0 + 1e6)
            .collect();
        let x: Vec<f64> = (0..500)
            .map(|i| (i as f64 * 0.7).sin() * 4.0 + (i % 3) as f64 + 1e6)
            .collect();
        let whole = CupedStats::from_values(&y, &x).unwrap();
        let parts = CupedStats::from_values(&y[..123], &x[..123]).unwrap()
            + CupedStats::from_values(&y[123..], &x[123..]).unwrap();
        let mut pushed = CupedStats::new();
        for (&a, &b) in y.iter().zip(&x) {
            pushed.push(a, b).unwrap();
        }
        for s in [parts, pushed] {
            assert!((s.c_xy() - whole.c_xy()).abs() < 1e-8 * whole.c_xy().abs());
            assert!((s.m2_x() - whole.m2_x()).abs() < 1e-8 * whole.m2_x());
            assert!((s.mean_y() - whole.mean_y()).abs() < 1e-9);
        }
        let r = RatioStats::from_values(&y, &x).unwrap();
        assert!(
            (r.sum_num_den() - y.iter().zip(&x).map(|(a, b)| a * b).sum::<f64>()).abs()
                < 1e-12 * r.sum_num_den()
        );
    }

    #[test]
    fn json_round_trip_validates() {
        let s = MeanStats::from_values(&[1.0, 2.0, 4.0]).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<MeanStats>(&json).unwrap(), s);
        assert!(serde_json::from_str::<MeanStats>(r#"{"n":3,"mean":1.0,"m2":-1.0}"#).is_err());
        let r = RatioStats::from_values(&[1.0, 3.0], &[2.0, 2.5]).unwrap();
        assert_eq!(
            serde_json::from_str::<RatioStats>(&serde_json::to_string(&r).unwrap()).unwrap(),
            r
        );
        let bad = r#"{"n":10,"mean_y":0,"mean_x":0,"m2_y":1,"m2_x":1,"c_xy":5}"#;
        assert!(serde_json::from_str::<CupedStats>(bad).is_err());
    }

    #[test]
    fn rejects_non_finite_and_inconsistent_input() {
        assert!(matches!(
            MeanStats::from_values(&[1.0, f64::NAN]),
            Err(Error::NonFinite { .. })
        ));
        assert!(MeanStats::new().push(f64::INFINITY).is_err());
        assert!(MeanStats::from_moments(3, 1.0, -1.0).is_err());
        assert!(MeanStats::from_sums(2, 10.0, 1.0).is_err());
        assert!(CupedStats::from_values(&[1.0], &[]).is_err());
        assert!(CupedStats::from_moments(10, 0.0, 0.0, 1.0, 1.0, 2.0).is_err());
        let e = MeanStats::from_values(&[]).unwrap();
        assert_eq!(e.variance(), None);
        assert_eq!(e.n(), 0);
    }
}
